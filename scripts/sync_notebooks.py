"""Keep every notebook's Colab badge and install cell canonical, and strip outputs.

Run after editing a notebook: `python scripts/sync_notebooks.py`. The tests check that every
notebook carries the current cells (`python scripts/sync_notebooks.py --check` exits 1 if not).
The install cell installs foresight-lite on Colab and does nothing anywhere else (locally,
`./install.sh` has already done it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

REPO = "foresight-lite/foresight-lite"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
INSTALL_TAG = "install"
INSTALL_CELL = f"""\
# Setup. On Colab: install foresight-lite (and, on a GPU runtime, Unsloth).
# Anywhere else this cell does nothing: ./install.sh has set up .venv.
import sys

if "google.colab" in sys.modules:
    !pip install -q "foresight-lite @ git+https://github.com/{REPO}"
    import torch

    if torch.cuda.is_available():
        !pip install -q unsloth"""


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
