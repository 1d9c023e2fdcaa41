"""Stages 1-2 in seconds-long smoke configurations on the tiny preset: outputs, resume, refusals."""

import json
import platform
import shutil
from pathlib import Path

import pytest
import torch
from trl import SFTTrainer

from foresight_lite import corpora
from foresight_lite.cli import main
from foresight_lite.models import add_lora, load_model
from foresight_lite.stages import StageMissing, train_midtraining, train_sft
from foresight_lite.stages.midtrain import default_config, stage_traces

TINY = dict(preset="tiny", n_traces=6, smoke=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "wm"
    train_midtraining(run_dir, corpus="wm_amt", **TINY)
    train_sft(run_dir, corpus="fe_sft", **TINY)
    return run_dir


def record_updates(monkeypatch) -> dict:
    """Replace training with a record: updates[run][step] = the texts that update trained on, for
    the run named by updates["run"]."""
    updates = {}

    def training_step(self, model, inputs, num_items_in_batch=None):
        texts = self.processing_class.batch_decode(inputs["input_ids"], skip_special_tokens=True)
        updates.setdefault(updates["run"], {}).setdefault(self.state.global_step, []).extend(texts)
        return torch.tensor(0.0)

    monkeypatch.setattr(SFTTrainer, "training_step", training_step)
    return updates


def crash_after_checkpoint(stage_folder: Path) -> None:
    """Leave a finished stage as a crash after its last checkpoint would: no model, no marker."""
    shutil.rmtree(stage_folder / "model")
    (stage_folder / "complete.json").unlink()


def test_stage_outputs(run):
    for stage in ("mt", "sft"):
        folder = run / stage
        settings = json.loads((folder / "stage.json").read_text())
        done = json.loads((folder / "complete.json").read_text())
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert settings["stage"] == stage and settings["sft_config"]["max_steps"] == 3
        assert done["global_step"] == 3 and done["train_loss"] > 0
        assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
        assert all(0 < r["rss_gb"] <= r["peak_rss_gb"] < 100 for r in rows)  # memory, read back per log
        assert (folder / "model" / "config.json").exists()
    assert json.loads((run / "sft" / "stage.json").read_text())["init"] == str(run / "mt" / "model")
    assert json.loads((run / "sft" / "stage.json").read_text())["layout"] == "full"


def test_saved_model_reloads_and_generates(run):
    model, tokenizer = load_model("tiny", path=run / "sft" / "model")
    assert model.config.use_cache
    ids = tokenizer("<think>", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] > ids.shape[1]


def test_each_saved_stage_holds_its_trained_weights(run):
    """The LoRA update is merged into what is saved: base, stage 1 and stage 2 all differ."""
    import torch

    name = "model.layers.0.self_attn.q_proj.weight"  # a LoRA target of the tiny preset
    weights = [dict(m.named_parameters())[name].detach() for m, _ in
               (load_model("tiny"), load_model("tiny", path=run / "mt" / "model"),
                load_model("tiny", path=run / "sft" / "model"))]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])


def test_finished_stage_is_not_retrained(run):
    before = (run / "mt" / "complete.json").read_text()
    train_midtraining(run, corpus="wm_amt", **TINY)
    assert (run / "mt" / "complete.json").read_text() == before


def test_interrupted_stage_resumes(tmp_path):
    run_dir = tmp_path / "r"
    train_midtraining(run_dir, corpus="standard_mt", max_steps=2, **TINY)
    crash_after_checkpoint(run_dir / "mt")
    assert (run_dir / "mt" / "checkpoints" / "checkpoint-2").exists()
    log = run_dir / "mt" / "metrics.jsonl"  # as if the first attempt had taken 1000 s longer
    log.write_text("".join(json.dumps({**json.loads(line), "seconds": json.loads(line)["seconds"] + 1000}) + "\n"
                           for line in log.read_text().splitlines()))
    train_midtraining(run_dir, corpus="standard_mt", max_steps=3, **TINY)
    done = json.loads((run_dir / "mt" / "complete.json").read_text())
    assert done["resumed_from"].endswith("checkpoint-2") and done["global_step"] == 3
    rows = [json.loads(line) for line in (run_dir / "mt" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]  # no step logged twice
    tokens = [r["num_tokens"] for r in rows if "num_tokens" in r]
    assert tokens == sorted(tokens) and tokens[2] > tokens[1]  # counted on across the resume
    assert done["tokens"] == tokens[-1]
    # time and loss cover the whole stage, not only the steps after the checkpoint
    seconds = [r["seconds"] for r in rows]
    assert seconds == sorted(seconds) and seconds[0] > 1000 and done["seconds"] >= seconds[-1]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert done["train_loss"] == pytest.approx(sum(losses) / 3)
    # the speed counts timed intervals only: neither the 1000 s nor the gap across the resume
    assert done["tokens_per_second"] > 10 * done["tokens"] / done["seconds"]


def test_a_batch_size_alone_keeps_the_update_and_a_stage_resumes_at_another(tmp_path, monkeypatch):
    """--batch-size N sets the micro-batch; accumulation follows, so an update keeps its sequences
    and a stage stopped at one size goes on with the same updates at another (the advice a GPU out
    of memory gives; `test_micro_batches_of_one_make_the_update_of_one_batch` checks the sums)."""
    from foresight_lite.stages.midtrain import recipe
    from foresight_lite.stages.rl import default_config as rl_config

    sizes = lambda r: (r["per_device_train_batch_size"], r["gradient_accumulation_steps"])  # noqa: E731
    assert sizes(recipe(tmp_path, preset="smollm2-135m", smoke=False, seed=0, per_device_train_batch_size=1)) == (1, 8)
    assert sizes(recipe(tmp_path, preset="smollm2-135m", smoke=False, seed=0, per_device_train_batch_size=4,
                        gradient_accumulation_steps=4)) == (4, 4)  # both given: taken as they are
    rl = rl_config(tmp_path, preset="smollm2-135m", smoke=False, seed=0, per_device_train_batch_size=2)
    assert (rl.per_device_train_batch_size, rl.gradient_accumulation_steps, rl.generation_batch_size) == (2, 4, 8)
    with pytest.raises(ValueError, match="A batch size of 3 does not divide the 8 sequences of one update; "
                                         "use one of 1, 2, 4, 8"):
        recipe(tmp_path, preset="smollm2-135m", smoke=False, seed=0, per_device_train_batch_size=3)

    updates = record_updates(monkeypatch)
    smoke = dict(TINY, n_traces=20, max_steps=4)  # smoke: micro-batches of 2, no accumulation
    updates["run"] = "whole"
    train_midtraining(tmp_path / "whole", corpus="standard_mt", **smoke)
    updates["run"] = "resumed"
    run_dir = tmp_path / "resumed"
    train_midtraining(run_dir, corpus="standard_mt", **{**smoke, "max_steps": 2})
    crash_after_checkpoint(run_dir / "mt")
    out = train_midtraining(run_dir, corpus="standard_mt", per_device_train_batch_size=1, **smoke)
    assert json.loads((out / "stage.json").read_text())["sft_config"]["gradient_accumulation_steps"] == 2
    assert len(updates["whole"]) == 4 and all(len(v) == 2 for v in updates["whole"].values())
    assert {k: sorted(v) for k, v in updates["whole"].items()} == {k: sorted(v) for k, v in updates["resumed"].items()}


def test_status_lists_done_and_unfinished_stages_and_their_evaluations(run, tmp_path, capsys):
    from foresight_lite.cli import status_rows

    stopped = tmp_path / "runs" / "stopped"
    train_midtraining(stopped, corpus="standard_mt", max_steps=2, **TINY)
    crash_after_checkpoint(stopped / "mt")  # stopped after its checkpoint at update 2
    (stopped / "mt-link").symlink_to(run / "mt", target_is_directory=True)  # links are not listed twice
    (run / "eval" / "sft").mkdir(parents=True, exist_ok=True)
    (run / "eval" / "sft" / "search-eval.json").write_text(json.dumps({"row": {"success": 0.5, "episodes": 4}}))
    rows = {(r["run"], r["stage"]): r for r in status_rows([run, tmp_path / "runs"])}
    assert {k: (r["state"], r["updates"]) for k, r in rows.items()} == {
        (str(stopped), "mt"): ("unfinished", 2), (str(run), "mt"): ("done", 3), (str(run), "sft"): ("done", 3)}
    unfinished = rows[str(stopped), "mt"]
    assert unfinished["of"] == 2 and unfinished["seconds"] > 0 and 0 <= unfinished["idle_minutes"] < 5
    assert rows[str(run), "sft"]["evaluations"] == ["search-eval 2/4"]
    assert main(["status", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "| unfinished, last log " in out and " min ago | 2 of 2 (checkpoint) |" in out
    log = stopped / "mt" / "metrics.jsonl"  # an earlier attempt's rows, logged before seconds were counted
    log.write_text(json.dumps({"step": 0, "loss": 1.0}) + "\n" + log.read_text())
    assert status_rows([stopped])[0]["seconds"] is None
    shutil.rmtree(stopped / "mt" / "checkpoints")  # stopped before its first checkpoint
    assert main(["status", str(stopped)]) == 0
    out = capsys.readouterr().out
    assert "| unfinished, last log " in out and " min ago | no checkpoint yet |" in out
    assert main(["status", str(tmp_path / "nothing")]) == 1
    assert "No folder" in capsys.readouterr().err
    shutil.rmtree(run / "eval")  # the fixture's run is shared


def test_stage_stopped_before_its_first_checkpoint_starts_a_fresh_log(tmp_path):
    run_dir = tmp_path / "r"
    train_midtraining(run_dir, corpus="standard_mt", max_steps=2, **TINY)
    # killed before the first checkpoint: only the log was written
    for name in ("model", "checkpoints"):
        shutil.rmtree(run_dir / "mt" / name)
    (run_dir / "mt" / "complete.json").unlink()
    train_midtraining(run_dir, corpus="standard_mt", max_steps=2, **TINY)
    rows = [json.loads(line) for line in (run_dir / "mt" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]  # the abandoned attempt's rows are gone


def test_sft_refuses_without_its_input_stage(tmp_path):
    with pytest.raises(StageMissing, match="train stage 1 first"):
        train_sft(tmp_path / "empty", corpus="fe_sft", **TINY)
    with pytest.raises(StageMissing, match="No finished stage"):
        train_sft(tmp_path / "empty", corpus="fe_sft", init=str(tmp_path / "nowhere"), **TINY)


def test_bad_corpus():
    with pytest.raises(ValueError, match="Mid-training corpus must be one of"):
        train_midtraining("unused", corpus="fe_sft", **TINY)
    with pytest.raises(ValueError, match="SFT corpus must be one of"):
        train_sft("unused", corpus="wm_amt", **TINY)


def test_cli_train_and_evaluate(tmp_path, capsys):
    args = ["--runs-dir", str(tmp_path), "--run", "plain", "--preset", "tiny", "--smoke", "--n-traces", "6"]
    assert main(["train", "--stage", "sft", *args]) == 1
    assert "train stage 1 first" in capsys.readouterr().err
    assert main(["train", "--stage", "sft", "--init", "base", "--corpus", "sft", *args]) == 0
    assert "sft done" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "plain"), "--n", "2", "--batch-size", "2", "--worlds", "math",
                 "--splits", "eval"]) == 0
    summary = json.loads((tmp_path / "plain" / "eval" / "sft" / "summary.json").read_text())
    assert summary["layout"] == "plain" and summary["rows"][0]["episodes"] == 2
    assert len((tmp_path / "plain" / "eval" / "sft" / "math-eval.jsonl").read_text().splitlines()) == 2


def test_cli_refuses_gpu_preset_and_missing_runs(tmp_path, capsys):
    assert main(["train", "--stage", "sft", "--run", "g", "--runs-dir", str(tmp_path), "--preset",
                 "qwen-0.5b-t4", "--init", "base"]) == 1
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "none")]) == 1
    assert "No finished stage" in capsys.readouterr().err


def test_continued_pretraining_trains_tied_embeddings_at_a_smaller_rate(tmp_path, monkeypatch):
    """GPU presets mid-train embed_tokens/lm_head too (Unsloth's CPT recipe); checked here on a tiny twin."""
    import dataclasses

    import torch

    from foresight_lite import models

    monkeypatch.setitem(models.PRESETS, "tiny", dataclasses.replace(models.PRESETS["tiny"], mt_train_embeddings=True))
    seen = {}
    original = __import__("foresight_lite.stages.midtrain", fromlist=["x"]).embedding_optimizer

    def spy(model, args, *, ratio):
        seen["optimizer"] = original(model, args, ratio=ratio)
        return seen["optimizer"]

    monkeypatch.setattr("foresight_lite.stages.midtrain.embedding_optimizer", spy)
    train_midtraining(tmp_path / "cpt", corpus="wm_amt", max_steps=2, **TINY)
    settings = json.loads((tmp_path / "cpt" / "mt" / "stage.json").read_text())
    lr = settings["sft_config"]["learning_rate"]
    assert settings["train_embeddings"] and settings["embedding_learning_rate"] == pytest.approx(lr * 0.1)
    groups = seen["optimizer"].param_groups
    assert [g["initial_lr"] for g in groups] == pytest.approx([lr, lr * 0.1])
    assert len(groups[1]["params"]) == 1  # embed_tokens and lm_head are one tied matrix
    base, _ = load_model("tiny")
    trained, _ = load_model("tiny", path=tmp_path / "cpt" / "mt" / "model")
    embed = trained.get_input_embeddings().weight
    assert not torch.equal(embed, base.get_input_embeddings().weight)  # the embeddings did train
    assert trained.get_output_embeddings().weight.data_ptr() == embed.data_ptr()  # and are still tied


def test_out_of_memory_becomes_one_sentence(tmp_path):
    import types

    import torch

    from foresight_lite.stages.common import train_with_resume

    class OutOfMemoryTrainer:
        args = types.SimpleNamespace(output_dir=str(tmp_path), per_device_train_batch_size=4, max_length=2048)

        def add_callback(self, callback):
            pass

        def train(self, resume_from_checkpoint=None):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.16 GiB")

    with pytest.raises(RuntimeError) as info:
        train_with_resume(OutOfMemoryTrainer(), tmp_path, config={"stage": "sft"}, started=0.0)
    message = str(info.value)
    assert message.startswith("The GPU ran out of memory in stage sft with batches of 4 x 2048 tokens;")
    assert "--batch-size 2 " in message and "--max-length 1024" in message
    assert message.endswith(".") and ". " not in message  # one sentence
    assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)
    assert not (tmp_path / "complete.json").exists()


DDP_SCRIPT = """
import json, os, sys
from pathlib import Path
from foresight_lite.stages import train_midtraining
run = Path(sys.argv[1])
done = train_midtraining(run, corpus="standard_mt", preset="tiny", n_traces=6, smoke=True, use_cpu=True)
step = json.loads((done / "complete.json").read_text())["global_step"]
(run.parent / f"rank-{os.environ['RANK']}.json").write_text(json.dumps(step))  # stdout lines interleave
"""


@pytest.mark.slow
def test_two_processes_write_the_stage_folder_once(tmp_path):
    """`accelerate launch` / torchrun start one process per device; only the first writes the stage."""
    import os
    import subprocess
    import sys

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, str(script), str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    # both processes finished and read the same summary
    assert [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)] == [3, 3]
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in done.stderr  # really data-parallel (gloo)
    rows = [json.loads(line) for line in (tmp_path / "run" / "mt" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]  # logged once, not once per process
    assert (tmp_path / "run" / "mt" / "model" / "config.json").exists()
    assert not list((tmp_path / "run" / "mt").glob(".*.tmp")) and not (tmp_path / "run" / "mt" / "model.tmp").exists()


def _unsloth_gpu() -> bool:
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("unsloth") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _unsloth_gpu(), reason="needs a CUDA GPU with Unsloth installed; Unsloth's loader does not "
                                               "run on a CPU (docs/t4_budget.md)")
def test_gpu_preset_trains_stage_2_through_unsloth(tmp_path):
    """The Colab path end to end on a real GPU: Unsloth loader, LoRA, three FE-SFT steps, reload."""
    from foresight_lite import models

    assert models.backend_name() == "unsloth"
    out = train_sft(tmp_path / "gpu", corpus="fe_sft", preset="qwen-0.5b-t4", init="base", n_traces=6, smoke=True)
    done = json.loads((out / "complete.json").read_text())
    assert done["global_step"] == 3 and done["train_loss"] > 0
    model, tokenizer = load_model("qwen-0.5b-t4", path=out / "model")
    ids = tokenizer("<think>", return_tensors="pt").input_ids.to(model.device)
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] > ids.shape[1]


def test_heap_is_trimmed_after_every_micro_batch(tmp_path, monkeypatch):
    from foresight_lite.stages import common

    trim = common.TrimHeap()
    if platform.libc_ver()[0] == "glibc":  # Linux: malloc_trim exists and runs
        assert trim.trim is not None
    trim.on_step_end(None, None, None)  # the real call runs
    calls = []
    monkeypatch.setattr(common.TrimHeap, "__init__", lambda self: setattr(self, "trim", calls.append))
    train_midtraining(tmp_path / "r", corpus="standard_mt", gradient_accumulation_steps=2, **TINY)
    assert calls == [0] * 6  # malloc_trim(0), release everything free: 3 updates x 2 micro-batches


def test_micro_batches_of_one_make_the_update_of_one_batch(tmp_path):
    """The loss is normalised by the tokens of the whole update, so the recipe's micro-batch size
    (1 x 8 or 2 x 4 episodes) trades memory against speed without changing the update (plain SGD:
    weight change = -lr x gradient, so the two gradients are compared directly)."""
    recipe = default_config(tmp_path, preset="smollm2-135m", smoke=False, seed=0, stage="sft")
    assert recipe.per_device_train_batch_size * recipe.gradient_accumulation_steps == 8
    dataset = corpora.BUILDERS["sft"](stage_traces(worlds=("search",), n_traces=6, seed=0))
    dataset = dataset.select_columns(["messages", "tools"]).select(range(2))
    updates = []
    for batch, accumulation in ((1, 2), (2, 1)):
        torch.manual_seed(0)
        model, tokenizer = load_model("tiny", for_training=True)
        model = add_lora(model, "tiny")
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        args = default_config(tmp_path / f"b{batch}", preset="tiny", smoke=False, seed=0, stage="sft",
                              assistant_only_loss=True, per_device_train_batch_size=batch,
                              gradient_accumulation_steps=accumulation, max_steps=1, optim="sgd",
                              learning_rate=1.0, lr_scheduler_type="constant", warmup_steps=0,
                              save_strategy="no", disable_tqdm=True)
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        trainer.train()
        updates.append({n: p.detach() - before[n] for n, p in model.named_parameters() if n in before})
    # per-micro-batch means would weight the two episodes' tokens differently
    trained_tokens = [sum(label != -100 for label in labels) for labels in trainer.train_dataset["labels"]]
    assert trained_tokens[0] != trained_tokens[1]
    moved = [n for n in updates[0] if updates[0][n].abs().max() > 0]
    assert moved
    for n in moved:
        torch.testing.assert_close(updates[0][n], updates[1][n], rtol=1e-3, atol=1e-6)


def test_a_stage_trains_the_same_weights_whatever_torch_drew_before(tmp_path):
    """torch seeds its global generator afresh in every process (two fresh processes started
    from different LoRA adapters); a stage draws its adapters from its own seed."""
    weights = []
    for k in (1, 2):
        torch.manual_seed(k)  # stands in for another process's random start
        out = train_midtraining(tmp_path / f"r{k}", corpus="standard_mt", **TINY)
        model = load_model("tiny", path=out / "model")[0]
        weights.append({n: p.detach() for n, p in model.named_parameters()})
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])
    name = "model.layers.0.self_attn.q_proj.weight"  # a LoRA target: trained, so not trivially equal
    assert not torch.equal(weights[0][name], load_model("tiny")[0].get_parameter(name))


def test_micro_batch_size_leaves_each_update_holding_the_same_episodes(tmp_path, monkeypatch):
    """Stage 2's random order comes from the seed and the epoch alone, so the micro-batch size
    changes memory and speed, never which episodes an update trains on, and a stage stopped at one
    size resumes with the same updates at another (stage 1's grouped order: the batch-size test)."""
    updates = record_updates(monkeypatch)
    stage = dict(corpus="fe_sft", init="base", preset="tiny", n_traces=40, max_steps=4, save_steps=2)
    for key, micro in (("2x4", 2), ("1x8", 1)):
        updates["run"] = key
        train_sft(tmp_path / key, per_device_train_batch_size=micro, **stage)
    updates["run"] = "resumed"
    train_sft(tmp_path / "resumed", per_device_train_batch_size=2, **{**stage, "max_steps": 2})
    crash_after_checkpoint(tmp_path / "resumed" / "sft")
    train_sft(tmp_path / "resumed", per_device_train_batch_size=1, **stage)
    assert len(updates["2x4"]) == 4 and all(len(v) == 8 for v in updates["2x4"].values())
    by_update = {key: {k: sorted(v) for k, v in updates[key].items()} for key in ("2x4", "1x8", "resumed")}
    assert by_update["2x4"] == by_update["1x8"] == by_update["resumed"]
