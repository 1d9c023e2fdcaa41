"""scripts/eval_table.py: rows from stored evaluations, by difficulty, and its command line."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("eval_table", ROOT / "scripts" / "eval_table.py")
eval_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(eval_table)


def _episode(i, hops, success, confidences, keywords=(), grounded=()):
    steps = [{"confidence": c, "format_ok": True, "keywords": list(keywords), "grounded": list(grounded)}
             for c in confidences]
    return {"task_id": f"t{i}", "hops": hops, "success": success, "generated_tokens": 10, "steps": steps}


EPISODES = [_episode(0, 1, True, [90, 100], keywords=["a", "b"], grounded=["a"]),
            _episode(1, 2, False, [100]),
            _episode(2, 2, True, [80]),
            _episode(3, 1, True, [None])]


def test_by_difficulty_counts_solved_over_played_per_hop_count():
    assert eval_table.by_difficulty(EPISODES) == "1: 2/2, 2: 1/2"


def test_row_reports_success_confidence_and_grounding():
    row = eval_table.table_row(EPISODES, run="r", stage="sft", world="search", split="eval")
    assert row["success"] == "3/4 (75%)"
    assert row["confidence mean"] == "92.5"  # the missing confidence is left out, not read as 0
    assert row["at 100"] == "0.50"
    assert row["keywords true"] == "50.0%"  # "a" came true on both steps, "b" on neither
    # the one failure stated 100: above the successes' 90 and 80, tied with their other 100
    assert row["AUROC all / first"] == "0.17 / 0.00"


def test_answered_early_counts_failures_with_fewer_searches_than_hops():
    search = {"action": {"tool": "search", "arguments": {"query": "x"}}}
    answer = {"action": {"answer": "y"}}
    episodes = [{"hops": 2, "success": False, "final_answer": "y", "steps": [search, answer]},  # early
                {"hops": 2, "success": False, "final_answer": "y", "steps": [search, search, answer]},
                {"hops": 1, "success": False, "final_answer": None, "steps": [search]},  # no answer
                {"hops": 2, "success": True, "final_answer": "z", "steps": [answer]}]  # solved: not counted
    assert eval_table.answered_early(episodes) == "1 of 3 failed"
    assert eval_table.answered_early(episodes[3:]) == "-"
    row = eval_table.table_row(EPISODES[:1], run="r", stage="sft", world="math", split="eval")
    assert row["answered early"] == "-"


def test_a_plain_run_without_confidences_prints_dashes():
    plain = [_episode(0, 1, True, [None]), _episode(1, 2, False, [None])]
    row = eval_table.table_row(plain, run="r", stage="sft", world="search", split="eval")
    assert row["confidence mean"] == row["at 100"] == row["ECE"] == row["keywords true"] == "-"


def test_command_line_reads_stored_episodes_and_skips_missing_worlds(tmp_path, capsys):
    folder = tmp_path / "run" / "eval" / "sft"
    folder.mkdir(parents=True)
    (folder / "search-eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EPISODES))
    assert eval_table.main([str(tmp_path / "run"), "--stage", "sft"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "| run | sft | search | eval | 3/4 (75%) | 1: 2/2, 2: 1/2 | 0 of 1 failed |" in lines[2]


def test_command_line_without_stored_evaluations_says_what_to_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        eval_table.main([str(tmp_path), "--stage", "rl"])
    assert "foresight_lite evaluate RUN --stage rl" in capsys.readouterr().err


def _store(run_dir, episodes, world="search", stage="sft"):
    folder = run_dir / "eval" / stage
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{world}-eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))


def test_paired_comparison_matches_tasks_and_counts_the_discordant_ones(tmp_path, capsys):
    # A solves t0, t2, t3; B, in another order, t1 and t3: only A 2, only B 1
    _store(tmp_path / "a", EPISODES)
    _store(tmp_path / "b", [_episode(3, 1, True, [None]), _episode(2, 2, False, [None]),
                            _episode(1, 2, True, [None]), _episode(0, 1, False, [None])])
    assert eval_table.main([str(tmp_path / "a"), str(tmp_path / "b"), "--paired"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "A = a, B = b"
    assert out[3] == "| search | eval | 4 | 3 | 2 | 2 | 1 | 1 |"  # 2 against 1 is no evidence: p = 1


def test_paired_comparison_refuses_runs_that_played_different_tasks(tmp_path, capsys):
    _store(tmp_path / "a", EPISODES)
    _store(tmp_path / "b", EPISODES[:3])
    with pytest.raises(SystemExit):
        eval_table.main([str(tmp_path / "a"), str(tmp_path / "b"), "--paired"])
    assert "played different tasks (3 of 4 and 3 in common)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_table.main([str(tmp_path / "a"), "--paired"])
    assert "exactly two runs" in capsys.readouterr().err


def test_a_run_written_with_a_stage_is_read_at_that_stage(tmp_path, capsys):
    # the same run before (sft) and after (rl) a stage, in one table and as a pair
    _store(tmp_path / "a", EPISODES)
    _store(tmp_path / "a", [dict(e, success=not e["success"]) for e in EPISODES], stage="rl")
    assert eval_table.run_and_stage(tmp_path / "a", "sft") == (tmp_path / "a", "sft")
    assert eval_table.run_and_stage(f"{tmp_path / 'a'}:rl", "sft") == (tmp_path / "a", "rl")
    assert eval_table.main([f"{tmp_path / 'a'}:rl", str(tmp_path / "a"), "--stage", "sft"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "| a | rl | search | eval | 1/4 (25%) |" in lines[2] and "| a | sft | search | eval | 3/4 (75%) |" in lines[3]
    assert eval_table.main([str(tmp_path / "a"), f"{tmp_path / 'a'}:rl", "--paired"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "A = a, B = a (rl)" and out[3].startswith("| search | eval | 4 | 3 | 1 | 3 | 1 |")
