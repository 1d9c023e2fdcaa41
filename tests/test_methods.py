"""The methods table, the shared stage tree, `run` and `reproduce --smoke` end to end.

Most tests swap the stage functions for fakes that save an untrained tiny model (the
orchestration in a second); the end-to-end test trains every stage for real, in smoke size.
"""

import gzip
import json
from pathlib import Path

import pytest

import foresight_lite.stages as stages
from foresight_lite.cli import main
from foresight_lite.methods import (METHODS, get_method, method_dir, run_root, stage_nodes,
                                    train_method, unique_stages)
from foresight_lite.stages.common import is_complete, write_json
from foresight_lite.teacher import TEACHER_VERSION


@pytest.fixture
def rl_module(monkeypatch):
    """Stage 3's module; whatever a test assigns to its train_rl is undone afterwards."""
    import foresight_lite.stages.rl as module

    monkeypatch.setattr(module, "train_rl", module.train_rl)
    return module


@pytest.fixture(scope="module")
def untrained_tiny():
    from foresight_lite.models import load_model

    return load_model("tiny")


@pytest.fixture
def fake_stages(monkeypatch, rl_module, untrained_tiny):
    """Stage functions that save an untrained tiny model with the files of a finished stage, and
    log their calls: the orchestration in a second instead of minutes."""
    from foresight_lite.stages.common import save_model

    calls = []

    def fake(stage):
        def train(run_dir, *, corpus=None, method=None, init=None, preset, seed, worlds, smoke, n_traces=None):
            calls.append((stage, Path(run_dir), corpus or method, init))
            out = Path(run_dir) / stage
            out.mkdir(parents=True, exist_ok=True)
            save_model(*untrained_tiny, out / "model")
            settings = {"stage": stage, "preset": preset, "seed": seed, "worlds": list(worlds), "smoke": smoke,
                        "init": init or "base", **({"method": method} if method else
                                                   {"corpus": corpus, "n_traces": n_traces,
                                                    "teacher_version": TEACHER_VERSION,
                                                    "epochs": 2 if stage == "sft" else 1})}
            write_json(out / "stage.json", settings)
            write_json(out / "complete.json", {"stage": stage, "seconds": 1.0})
            return out
        return train

    monkeypatch.setattr(stages, "train_midtraining", fake("mt"))
    monkeypatch.setattr(stages, "train_sft", fake("sft"))
    rl_module.train_rl = fake("rl")
    return calls


def test_methods_table_holds_the_papers_rows():
    recipes = {name: m.recipe for name, m in METHODS.items()}
    assert recipes["sft_rl"] == (("mt", "standard_mt"), ("sft", "sft"), ("rl", "rl"))
    assert recipes["fe_sft_rl"] == (("mt", "standard_mt"), ("sft", "fe_sft"), ("rl", "rl"))
    assert recipes["state_sft_rl"] == (("mt", "standard_mt"), ("sft", "state_sft"), ("rl", "rl"))
    assert recipes["wm_fe_sft_rl"] == (("mt", "wm_amt"), ("sft", "fe_sft"), ("rl", "rl"))
    assert recipes["full"] == (("mt", "wm_amt"), ("sft", "fe_sft"), ("rl", "fc_rl"))
    for name in ("sft", "fe_sft", "state_sft", "wm_fe_sft"):  # the SFT-stage-only rows
        assert METHODS[name].final_stage == "sft" and METHODS[f"{name}_rl"].recipe[:2] == recipes[name]
    assert [METHODS[n].layout for n in ("sft", "fe_sft", "state_sft", "full")] == ["plain", "full", "state", "full"]
    with pytest.raises(ValueError, match="Unknown method 'ful'; choose one of"):
        get_method("ful")


def test_identical_prefixes_share_folders(tmp_path):
    root = run_root(tmp_path, preset="tiny", seed=1)
    assert root == tmp_path / "tiny-s1"
    assert run_root(tmp_path, preset="tiny", seed=1, worlds=("math",), smoke=True) == tmp_path / "tiny-s1-math-smoke"
    assert method_dir("full", root) == root / "mt-wm_amt" / "sft-fe_sft" / "rl-fc_rl"
    assert method_dir("wm_fe_sft", root) == root / "mt-wm_amt" / "sft-fe_sft"
    sft_rl, sft = stage_nodes("sft_rl", root), stage_nodes("sft", root)
    assert sft_rl[:2] == sft  # the SFT row is the prefix of SFT&RL: the same folders
    assert stage_nodes("full", root)[:2] == stage_nodes("wm_fe_sft_rl", root)[:2]
    assert stage_nodes("full", root)[2] != stage_nodes("wm_fe_sft_rl", root)[2]
    every = unique_stages(METHODS, root)
    assert [p.name for p in every].count("mt") == 2 and [p.name for p in every].count("sft") == 4
    assert [p.name for p in every].count("rl") == 5 and len(every) == 11  # not 9 x 3 = 27 (or 22)


def test_train_method_trains_each_shared_stage_once(tmp_path, fake_stages):
    for name in METHODS:
        train_method(name, runs_dir=tmp_path, preset="tiny", seed=0, smoke=True)
    assert sorted(c[0] for c in fake_stages).count("mt") == 2
    assert [c[0] for c in fake_stages].count("sft") == 4 and [c[0] for c in fake_stages].count("rl") == 5
    root = tmp_path / "tiny-s0-smoke"
    full_rl = next(c for c in fake_stages if c[2] == "fc_rl")
    assert full_rl[1] == root / "mt-wm_amt" / "sft-fe_sft" / "rl-fc_rl"
    assert full_rl[3] == str(root / "mt-wm_amt" / "sft-fe_sft" / "sft" / "model")  # started from its parent
    fe_sft = next(c for c in fake_stages if c[0] == "sft" and c[1].parent.name == "mt-standard_mt"
                  and c[2] == "fe_sft")
    assert fe_sft[3] == str(root / "mt-standard_mt" / "mt" / "model")
    fake_stages.clear()
    assert train_method("full", runs_dir=tmp_path, preset="tiny", seed=0, smoke=True) == full_rl[1]
    assert fake_stages == []  # everything reused
    train_method("full", runs_dir=tmp_path, preset="tiny", seed=1, smoke=True)
    assert len(fake_stages) == 3  # another seed is another tree


def test_reuse_refuses_a_stage_trained_differently(tmp_path, fake_stages):
    train_method("sft", runs_dir=tmp_path, preset="tiny", smoke=True, n_traces=8)
    with pytest.raises(ValueError, match="was trained with n_traces=8, not 5; pass another --runs-dir"):
        train_method("fe_sft", runs_dir=tmp_path, preset="tiny", smoke=True, n_traces=5)


def test_reuse_refuses_a_stage_from_another_teachers_trajectories(tmp_path, fake_stages):
    # the teacher's words changed between sessions; an old stage 1 must not be reused silently
    train_method("sft", runs_dir=tmp_path, preset="tiny", smoke=True)
    settings_file = tmp_path / "tiny-s0-smoke" / "mt-standard_mt" / "mt" / "stage.json"
    settings = json.loads(settings_file.read_text())
    del settings["teacher_version"]  # as written before stages recorded it
    settings_file.write_text(json.dumps(settings))
    with pytest.raises(ValueError, match=f"was trained with teacher_version=None, not {TEACHER_VERSION}"):
        train_method("sft", runs_dir=tmp_path, preset="tiny", smoke=True)


def test_reuse_refuses_a_stage_2_trained_for_one_pass(tmp_path, fake_stages):
    # stage 2 took one pass until the recipe became two; an old one-pass stage must not pass for it
    train_method("sft", runs_dir=tmp_path, preset="tiny", smoke=True)
    settings_file = tmp_path / "tiny-s0-smoke" / "mt-standard_mt" / "sft-sft" / "sft" / "stage.json"
    settings_file.write_text(json.dumps({**json.loads(settings_file.read_text()), "epochs": 1}))
    train_method("fe_sft", runs_dir=tmp_path, preset="tiny", smoke=True)  # a sibling stage: unaffected
    with pytest.raises(ValueError, match="was trained with epochs=1, not 2"):
        train_method("sft", runs_dir=tmp_path, preset="tiny", smoke=True)


def test_cli_reproduce_passes_every_option_on(tmp_path, fake_stages):
    # --n-traces was once parsed and then dropped, so stages trained on the default 400
    out = tmp_path / "r"
    assert main(["reproduce", "--smoke", "--methods", "sft", "--n-traces", "5", "--seeds", "3", "--worlds", "math",
                 "--splits", "eval", "--n", "1", "--out", str(out), "--runs-dir", str(tmp_path)]) == 0
    root = tmp_path / "tiny-s3-math-smoke" / "mt-standard_mt"
    for stage in (root / "mt", root / "sft-sft" / "sft"):
        settings = json.loads((stage / "stage.json").read_text())
        assert (settings["n_traces"], settings["seed"], settings["worlds"]) == (5, 3, ["math"])
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["world"], r["split"], r["episodes"]) for r in summary["rows"]] == [("math", "eval", 1)]


@pytest.mark.slow
def test_reproduce_smoke_end_to_end_and_resume(tmp_path, rl_module, monkeypatch, capsys):
    out, runs = tmp_path / "results", tmp_path / "runs"
    # one seed keeps this under a few minutes; aggregation over seeds is tested on its own below
    args = ["reproduce", "--smoke", "--seeds", "0", "--out", str(out), "--runs-dir", str(runs)]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    agg = summary["aggregate"]
    assert len(agg) == len(summary["rows"]) == 9 * 2 * 2  # methods x worlds x splits
    assert summary["meta"]["mechanics_only"] and summary["meta"]["train_seconds"] > 0
    with gzip.open(out / "episodes.jsonl.gz", "rt") as f:
        episodes = [json.loads(line) for line in f]
    assert len(episodes) == summary["meta"]["episodes"] == 9 * 2 * 2 * 3  # methods x cells x tasks
    assert {e["method"] for e in episodes} == set(METHODS) and {e["seed"] for e in episodes} == {0}
    table = (out / "table.md").read_text()
    assert table.count("## ") == 4 and all(f"(`{name}`)" in table for name in METHODS)
    assert "mechanics only" in table and f"teacher version {TEACHER_VERSION}; " in table
    assert summary["meta"]["stage_dtypes"] == ["float32"] and "stages trained in float32" in table
    report = (out / "report.html").read_text()
    assert "plotly.js v" in report and "<script src=" not in report  # the library inlined, nothing fetched
    assert "format-capability gap" in report and "Reliability per method" in report
    # one model per shared stage: 2 mid-trained, 4 fine-tuned, 5 RL per seed
    assert len(list(runs.glob("tiny-s0-smoke/*/mt/complete.json"))) == 2
    assert len(list(runs.glob("tiny-s0-smoke/*/*/sft/complete.json"))) == 4
    assert len(list(runs.glob("tiny-s0-smoke/*/*/*/rl/complete.json"))) == 5

    # resume: nothing is trained or played again, and the results are the same
    def refuse(*a, **k):
        raise AssertionError("a finished stage or evaluation was redone")

    monkeypatch.setattr(stages, "train_midtraining", refuse)
    monkeypatch.setattr(stages, "train_sft", refuse)
    monkeypatch.setattr("foresight_lite.evaluate.run_episodes", refuse)
    rl_module.train_rl = refuse
    assert main(args) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["rows"] == summary["rows"]


def _row(method, seed, world, success, auroc=None):
    return {"method": method, "label": METHODS[method].label, "seed": seed, "world": world, "split": "eval",
            "episodes": 10, "k": 1, "success": success, "format_adherence": 1.0, "grounding": 0.5,
            "auroc_all": auroc, "tokens_per_episode": 100.0}


def test_aggregate_and_table_over_seeds():
    from foresight_lite.reproduce import aggregate, markdown_table, report_html

    rows = [_row("full", s, "math", v, a) for s, v, a in ((0, 0.2, 0.6), (1, 0.4, None), (2, 0.6, 0.8))]
    rows.append(_row("sft", 0, "math", 0.5))
    agg = {r["method"]: r for r in aggregate(rows)}
    full = agg["full"]
    assert full["seeds"] == 3 and full["episodes"] == 30
    assert full["success"] == pytest.approx(0.4) and full["success_ci"] == pytest.approx(4.303 * 0.2 / 3 ** 0.5)
    assert (full["success_min"], full["success_max"]) == (0.2, 0.6)
    assert full["auroc_all"] == pytest.approx(0.7)
    assert full["auroc_all_ci"] == pytest.approx(12.706 * 0.1414213 / 2 ** 0.5)  # two seeds: t(1 df)
    assert agg["sft"]["success_ci"] is None and agg["sft"]["auroc_all"] is None  # one seed; never stated
    meta = {"preset": "smollm2-135m", "seeds": [0, 1, 2], "command": "python -m foresight_lite reproduce",
            "machine": {"summary": "a CPU"}, "wall_seconds": 60, "train_seconds": 120, "eval_seconds": 30,
            "tasks_per_world_and_split": 200}
    table = markdown_table({"meta": meta, "aggregate": list(agg.values())})
    full_row = ("| WM-AMT + FE-SFT + FC-RL (`full`) | 40.0 ± 49.7 | 100.0 ± 0.0 | 50.0 ± 0.0 | - | - "
                "| 0.700 ± 1.271 |")
    assert full_row in table
    assert "| SFT (`sft`) | 50.0 | 100.0 | 50.0 | - |" in table and "## math · eval" in table
    assert "mechanics only" not in table and "pass@k" not in table  # greedy: no pass@k column
    page = report_html({"meta": meta, "aggregate": list(agg.values())})
    assert page.startswith("<!doctype html>") and "<table>" in page and "40.0 ± 49.7" in page


def test_cli_run_trains_then_evaluates(tmp_path, fake_stages, capsys):
    args = ["run", "--method", "full", "--smoke", "--runs-dir", str(tmp_path), "--worlds", "math", "--splits", "eval",
            "--n", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    node = tmp_path / "tiny-s0-math-smoke" / "mt-wm_amt" / "sft-fe_sft" / "rl-fc_rl"
    assert f"WM-AMT + FE-SFT + FC-RL (full): {node}" in out and "world=math  split=eval  episodes=2" in out
    assert len((node / "eval" / "rl" / "math-eval.jsonl").read_text().splitlines()) == 2
    assert [c[0] for c in fake_stages] == ["mt", "sft", "rl"]
    assert main(args[:2] + ["wm_fe_sft_rl"] + args[3:]) == 0  # shares stages 1-2 with full
    assert [c[0] for c in fake_stages] == ["mt", "sft", "rl", "rl"]
    with pytest.raises(SystemExit):
        main(["run", "--method", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_table_with_k_samples_shows_mean_and_pass_at_k():
    from foresight_lite.reproduce import aggregate, markdown_table

    row = {**_row("full", 0, "search", 0.25), "k": 4, "mean_at_k": 0.25, "pass_at_k": 0.75}
    meta = {"preset": "tiny", "mechanics_only": True, "seeds": [0], "command": "c", "machine": {"summary": "m"},
            "wall_seconds": 1, "train_seconds": 1, "eval_seconds": 1, "tasks_per_world_and_split": 3}
    table = markdown_table({"meta": meta, "aggregate": aggregate([row])})
    assert "| method | mean@4 % | pass@4 % |" in table and "| 25.0 | 75.0 |" in table
    assert "4 samples per task (success = mean@4, pass@4)" in table and "mechanics only" in table


@pytest.mark.slow
def test_reproduce_reuses_stages_trained_with_train_when_linked_into_its_tree(tmp_path):
    """Stages trained one by one with `train` serve `reproduce` once linked where its tree expects
    them: nothing is retrained, and their stored evaluation is read back."""
    from foresight_lite.evaluate import evaluate_run
    from foresight_lite.methods import SMOKE_MAX_NEW_TOKENS

    runs, tree = tmp_path / "runs", tmp_path / "tree"
    common = ["--preset", "tiny", "--smoke", "--n-traces", "8", "--runs-dir", str(runs)]
    main(["train", "--stage", "mt", "--run", "std", "--corpus", "standard_mt", *common])
    main(["train", "--stage", "sft", "--run", "std-plain", "--corpus", "sft", "--init", str(runs / "std" / "mt"),
          *common])
    # as `evaluate` would, at the smoke run's reply length (a real run's is the default of both)
    evaluate_run(runs / "std-plain", stage="sft", splits=("eval",), n=2, max_new_tokens=SMOKE_MAX_NEW_TOKENS)
    # stage 1 as a stage first trained before whole stages were timed and resumed after: the rows of
    # its first attempt lack seconds, so its record covers the last attempt only
    log = runs / "std" / "mt" / "metrics.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) >= 2
    log.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "seconds"}) + "\n" for row in rows[:-1])
                   + json.dumps(rows[-1]) + "\n")
    record = json.loads((runs / "std" / "mt" / "complete.json").read_text())
    (runs / "std" / "mt" / "complete.json").write_text(json.dumps({**record, "resumed_from": "checkpoint-2"}))
    node = tree / "tiny-s0-smoke" / "mt-standard_mt"
    node.mkdir(parents=True)
    (node / "mt").symlink_to(runs / "std" / "mt")
    (node / "sft-sft").symlink_to(runs / "std-plain")
    done = [(runs / r / s / "complete.json").read_text() for r, s in (("std", "mt"), ("std-plain", "sft"))]
    played = [(runs / "std-plain" / "eval" / "sft" / f"{w}-eval.json").read_text() for w in ("search", "math")]
    assert main(["reproduce", "--smoke", "--methods", "sft", "--seeds", "0", "--splits", "eval", "--n", "2",
                 "--runs-dir", str(tree), "--out", str(tmp_path / "results")]) == 0
    assert [p.name for p in tree.iterdir()] == ["tiny-s0-smoke"]  # no other tree was trained
    assert sorted(p.name for p in node.iterdir()) == ["mt", "sft-sft"]
    assert [(runs / r / s / "complete.json").read_text() for r, s in (("std", "mt"), ("std-plain", "sft"))] == done
    # a replay would rewrite each cell's record with its new wall time
    assert [(runs / "std-plain" / "eval" / "sft" / f"{w}-eval.json").read_text() for w in ("search", "math")] == played
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert {(r["method"], r["world"], r["split"]) for r in summary["rows"]} == {("sft", w, "eval")
                                                                              for w in ("search", "math")}
    sft_seconds = json.loads(done[1])["seconds"]
    assert summary["meta"]["train_seconds"] == pytest.approx(sft_seconds)  # stage 1 left out, and said so
    assert "(1 stage not counted: resumed after an interruption" in (tmp_path / "results" / "table.md").read_text()


@pytest.mark.parametrize("name, methods", [("reference_results", {"sft", "fe_sft", "wm_fe_sft"}),
                                           ("reference_results_search", {"wm_fe_sft", "wm_fe_sft_rl", "full"})])
def test_committed_reference_results_are_found_from_root_and_notebooks_and_draw(name, methods, monkeypatch):
    from foresight_lite.reproduce import figures, find_reference_results, load_results, read_episodes

    root = Path(__file__).resolve().parent.parent
    for where in (root, root / "notebooks"):
        monkeypatch.chdir(where)
        folder = find_reference_results(name)
        assert folder is not None and folder.resolve() == root / "data" / name
    summary = load_results(folder)
    assert {r["method"] for r in summary["aggregate"]} == methods and not summary["meta"]["mechanics_only"]
    assert f"--out data/{name}`" in (folder / "table.md").read_text()  # the header names the command that wrote it
    assert {"success-eval", "calibration-eval", "gap-eval", "reliability-eval"} <= set(
        figures(summary, read_episodes(folder)))
    assert find_reference_results("no_such_results") is None
