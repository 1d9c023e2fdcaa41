"""scripts/memory_habit.py on the tiny preset: the sampler replay and the first-word probe."""

import importlib.util
import json
from pathlib import Path

from foresight_lite import corpora
from foresight_lite.stages import train_sft
from foresight_lite.stages.midtrain import stage_traces

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("memory_habit", ROOT / "scripts" / "memory_habit.py")
memory_habit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory_habit)


def test_order_finds_every_memory_episode_and_length_grouping_packs_them(capsys):
    episodes = corpora.BUILDERS["sft"](stage_traces(worlds=("search", "math"), n_traces=100, seed=0))
    memory = sum(memory_habit.MEMORY in json.dumps(m) for m in episodes["messages"])
    assert memory > 1
    replays = {}
    for sampling in ("random", "group_by_length"):
        replays[sampling] = per_update = memory_habit.order(init="base", seed=0, preset="tiny", n_traces=100,
                                                           sampling=sampling)
        assert sum(per_update) == 2 * memory  # two epochs, each episode once per epoch
        assert len(per_update) == 2 * -(-len(episodes) // 8)  # 8 episodes per update, each epoch
        assert f"{len(per_update)} updates, {2 * memory} memory episodes" in capsys.readouterr().out
    # the shortest episodes: grouped by length they share updates, in random order they spread out
    held = {sampling: sum(k > 0 for k in per_update) for sampling, per_update in replays.items()}
    assert held["group_by_length"] < held["random"]
    assert memory_habit.order(init="base", seed=0, preset="tiny", n_traces=100) == replays["random"]  # the recipe's


def test_first_word_reads_a_probability_per_task(tmp_path, capsys):
    run = tmp_path / "plain"
    train_sft(run, corpus="sft", init="base", preset="tiny", n_traces=6, smoke=True)
    memory_habit.main(["first-word", str(run), "--n", "3", "--preset", "tiny"])
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {run}")][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "3" and 0 <= float(cells[2]) <= 1 and 0 <= int(cells[3]) <= 3
