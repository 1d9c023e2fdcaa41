"""scripts/world_probe.py end to end on the tiny preset: one row per model, world and split."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("world_probe", ROOT / "scripts" / "world_probe.py")
world_probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(world_probe)


def test_probe_scores_the_base_model_on_each_world_and_split(capsys):
    world_probe.main(["--preset", "tiny", "--n", "2", "--worlds", "search", "math", "--splits", "rl"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| base")]
    assert [r.split(" | ")[1:3] for r in rows] == [["search", "rl"], ["math", "rl"]]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        nll = float(cells[3])
        assert 0 < nll < 20  # an untrained few-million-parameter model: near log(vocabulary)
        assert int(cells[-1]) > 0  # observation tokens were found and scored
