"""What every stage shares: its folder, resuming, the metrics log, and saving the model.

    runs/<run>/<stage>/
      stage.json      the exact configuration (our arguments and TRL's full config)
      metrics.jsonl   one line per logging step: loss, learning rate, tokens/s, ...
      checkpoints/    TRL's checkpoints; an interrupted stage resumes from the last one
      model/          the trained model (LoRA merged in) and tokenizer, via save_pretrained
      complete.json   written last: wall time, tokens/s, final loss; its presence means done

A stage whose `complete.json` exists is not retrained (pass `force=True` to redo it). A GPU that
runs out of memory during training stops the stage with one sentence naming the flags to lower.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from ..models import is_embedding_parameter
from ..traces import atomic_write, read_jsonl

STAGES = ("mt", "sft", "rl")


class StageMissing(FileNotFoundError):
    """An input stage has not been trained; the message names the command that trains it."""


def with_overrides(recipe: dict, overrides: dict) -> dict:
    """`recipe` updated by `overrides`. A micro-batch size given without accumulation steps keeps
    the update's sequences (accumulation grows or shrinks to match): it trades memory against
    speed and leaves the training as it was, so a stage can even resume at another size."""
    batch = overrides.get("per_device_train_batch_size")
    if batch is not None and "gradient_accumulation_steps" not in overrides:
        update = recipe["per_device_train_batch_size"] * recipe["gradient_accumulation_steps"]
        if update % batch:
            divisors = ", ".join(str(d) for d in range(1, update + 1) if update % d == 0)
            raise ValueError(f"A batch size of {batch} does not divide the {update} sequences of one update; "
                             f"use one of {divisors}.")
        overrides = {**overrides, "gradient_accumulation_steps": update // batch}
    return {**recipe, **overrides}


def stage_dir(run_dir: str | Path, stage: str) -> Path:
    return Path(run_dir) / stage


def model_dir(run_dir: str | Path, stage: str) -> Path:
    return stage_dir(run_dir, stage) / "model"


def is_complete(directory: Path) -> bool:
    return (directory / "complete.json").exists()


def require_stage(path: str | Path, *, hint: str) -> Path:
    """The model folder of a finished stage at `path` (a stage folder or its model/ folder)."""
    path = Path(path)
    stage = path.parent if path.name == "model" else path
    if not is_complete(stage):
        raise StageMissing(f"No finished stage at {stage}; {hint}")
    return stage / "model"


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_metrics(stage: str | Path) -> list[dict]:
    """The rows `MetricsLog` wrote to a stage folder's metrics.jsonl; [] before the first log."""
    path = Path(stage) / "metrics.jsonl"
    return read_jsonl(path) if path.exists() else []


def logged_seconds(rows: list[dict]) -> float:
    """The training seconds the last of these metrics rows counted (0 for none; logs written before
    the field existed count 0)."""
    return max((r["seconds"] for r in rows if "seconds" in r), default=0.0)


class MetricsLog(TrainerCallback):
    """Appends every Trainer log to metrics.jsonl, with tokens/s since the previous log, the
    training seconds so far (counted on across resumes) and the process's memory (resident now and
    peak so far, GB), so a run's speed and memory growth can be read back."""

    def __init__(self, path: Path):
        self.path, self.last, self.carried, self.offset = path, None, None, 0.0
        self.begin, self.seconds_before = time.perf_counter(), 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin = time.perf_counter()
        # the counts logged up to the checkpoint (train_with_resume has cut the log back to it)
        rows = read_jsonl(self.path) if state.global_step > 0 and self.path.exists() else []
        self.carried = max([r["num_tokens"] for r in rows if r.get("num_tokens") is not None], default=None)
        self.seconds_before = logged_seconds(rows)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:  # under `accelerate launch`, one process writes
            return
        logs = dict(logs or {})
        if logs.get("num_tokens") is not None:
            if self.carried is not None:  # the first count after a resume
                # SFTTrainer's counter is not checkpointed and restarts at 0 (GRPO's is, and goes
                # on): when it restarted, count on from the checkpoint's total
                self.offset = self.carried if logs["num_tokens"] < self.carried else 0.0
                self.carried = None
            logs["num_tokens"] += self.offset
        now, tokens = time.perf_counter(), logs.get("num_tokens")
        row = {"step": state.global_step, "epoch": state.epoch, **logs,
               "seconds": self.seconds_before + now - self.begin}
        if tokens is not None and self.last is not None and tokens > self.last[1]:
            row["tokens_per_second"] = (tokens - self.last[1]) / (now - self.last[0])
        if tokens is not None:
            self.last = (now, tokens)
        row.update(memory_gb())
        with open(self.path, "a") as f:
            f.write(json.dumps(row, default=float) + "\n")


class TrimHeap(TrainerCallback):
    """After every micro-batch, hand the C heap's free pages back to the OS (glibc's malloc_trim).

    Why: on CPU, each batch's activations have new sizes; glibc serves them from its heap and keeps
    what they free there, fragmented, so a stage's resident memory only grows (FE-SFT: 4 to 9 GB
    over a run). Trimming after every update held a two-epoch FE-SFT run at 6.5 GB instead of 9.4
    for 1% more time; stage 2 in random order mixes lengths within an update, and there trimming
    after every micro-batch too kept 20 FE-SFT updates at 3.7 GB instead of 5.2, for 5% more time
    (docs/experiments.md, section 5). A no-op where libc has no malloc_trim (macOS, musl).
    """

    def __init__(self):
        try:
            self.trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
        except (OSError, AttributeError, TypeError):
            self.trim = None

    def on_substep_end(self, args, state, control, **kwargs):  # each micro-batch but an update's last
        if self.trim is not None:
            self.trim(0)

    on_step_end = on_substep_end  # the last one, with the update


def memory_gb() -> dict:
    """Resident and peak memory of this process in GB ({} where the OS does not say)."""
    try:
        import resource

        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return {"rss_gb": pages * os.sysconf("SC_PAGE_SIZE") / 1e9,
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}  # KiB on Linux
    except (OSError, ImportError, ValueError, IndexError):
        return {}


def last_checkpoint(directory: Path) -> str | None:
    checkpoints = sorted(directory.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(checkpoints[-1]) if checkpoints else None


def _has_untimed_rows(rows: list[dict]) -> bool:
    """Rows of an attempt logged before the log counted seconds: the stage's whole time is unknown."""
    return any("seconds" not in row for row in rows)


def stage_status(directory: str | Path) -> dict:
    """Where one stage folder stands. `state`: done, unfinished (running, or stopped: the same
    `train` command resumes it from `updates`, its last checkpoint; 0 before the first) or
    missing. With the updates planned, the training seconds logged and the minutes since the
    last log (a running stage logs every few minutes)."""
    directory = Path(directory)
    if is_complete(directory):
        done = json.loads((directory / "complete.json").read_text())
        # a resumed stage recorded only the attempts whose log counted seconds
        known = not done.get("resumed_from") or not _has_untimed_rows(read_metrics(directory))
        return {"state": "done", "updates": done.get("global_step"), "of": done.get("global_step"),
                "seconds": done.get("seconds") if known else None, "idle_minutes": None}
    log = directory / "metrics.jsonl"
    if not log.exists() and not (directory / "stage.json").exists():
        return {"state": "missing", "updates": 0, "of": None, "seconds": None, "idle_minutes": None}
    checkpoint = last_checkpoint(directory / "checkpoints")
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text()) if checkpoint else {}
    rows = read_metrics(directory)
    return {"state": "unfinished", "updates": state.get("global_step", 0), "of": state.get("max_steps"),
            "seconds": logged_seconds(rows) if rows and not _has_untimed_rows(rows) else None,
            "idle_minutes": (time.time() - log.stat().st_mtime) / 60 if log.exists() else None}


def save_model(model, tokenizer, directory: Path) -> None:
    """Merge LoRA into the weights and save, atomically (a temp folder, then a rename)."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.config.use_cache = True
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)


def embedding_optimizer(model, args, *, ratio: float) -> torch.optim.AdamW:
    """AdamW in which embedding parameters learn at `ratio` x `args.learning_rate`, the rest at the full rate.

    Unsloth's continued pre-training recipe trains embed_tokens and lm_head at a 2-10x smaller rate
    than the LoRA adapters; TRL's scheduler then scales both groups by the same factor each step.
    """
    groups = {False: [], True: []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups[is_embedding_parameter(name)].append(param)
    if not groups[True]:
        raise ValueError("No trainable embedding parameters; wrap the model with add_lora(..., train_embeddings=True).")
    return torch.optim.AdamW([{"params": groups[False], "lr": args.learning_rate},
                              {"params": groups[True], "lr": args.learning_rate * ratio}],
                             lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                             weight_decay=args.weight_decay)


def out_of_memory_message(args, stage: str) -> str:
    """One sentence: the GPU ran out of memory at these settings, and which flags to lower."""
    # SFT caps whole sequences (max_length), GRPO the completions (max_completion_length)
    batch = args.per_device_train_batch_size
    length = getattr(args, "max_length", None) or getattr(args, "max_completion_length", None)
    shape = f"batches of {batch}" + (f" x {length} tokens" if length else "")
    shorter = f" such as --max-length {length // 2}" if length else ""
    return (f"The GPU ran out of memory in stage {stage} with {shape}; rerun the same command with "
            f"--batch-size {max(1, batch // 2)} (it resumes from the last checkpoint), a smaller --max-length"
            f"{shorter}, or a smaller --preset.")


def train_with_resume(trainer, directory: Path, *, config: dict, started: float) -> dict:
    """Run `trainer` (resuming from its last checkpoint), save the model, mark the stage done."""
    trainer.add_callback(TrimHeap())
    resume = last_checkpoint(Path(trainer.args.output_dir))
    seconds_before = 0.0  # training time of the attempts before this one, up to the checkpoint
    if (directory / "metrics.jsonl").exists() and trainer.is_world_process_zero():
        # drop rows logged after the checkpoint; with none (stopped before the first), every row
        step = int(resume.rsplit("-", 1)[-1]) if resume else 0
        kept = [row for row in read_metrics(directory) if row["step"] <= step]
        atomic_write(directory / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in kept))
        seconds_before = logged_seconds(kept)
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    except torch.cuda.OutOfMemoryError as err:
        raise RuntimeError(out_of_memory_message(trainer.args, config["stage"])) from err
    if trainer.is_world_process_zero():  # several processes (accelerate launch): the first one saves
        save_model(trainer.model, trainer.processing_class, directory / "model")
        rows = read_metrics(directory)
        # tokens over seconds of the timed log intervals (a mean of their rates would weigh a
        # slow interval, say one beside another job, as much as a long fast one)
        counted = [r for r in rows if "num_tokens" in r]
        intervals = [(b["num_tokens"] - a["num_tokens"], b["seconds"] - a["seconds"])
                     for a, b in zip(counted, counted[1:]) if "tokens_per_second" in b]
        losses = [r["loss"] for r in rows if "loss" in r]
        # over the whole stage: after a resume, the Trainer's training_loss and runtime cover only
        # the steps since the checkpoint (and its loss is divided by all of them)
        summary = {"stage": config["stage"], "seconds": seconds_before + time.perf_counter() - started,
                   "resumed_from": resume, "global_step": trainer.state.global_step,
                   "train_loss": sum(losses) / len(losses) if losses else result.training_loss,
                   "tokens": trainer.state.num_input_tokens_seen or max((r.get("num_tokens", 0) for r in rows),
                                                                        default=0),
                   "tokens_per_second": (sum(t for t, _ in intervals) / sum(s for _, s in intervals)
                                         if intervals else None)}
        write_json(directory / "complete.json", summary)
    trainer.accelerator.wait_for_everyone()
    return json.loads((directory / "complete.json").read_text())
