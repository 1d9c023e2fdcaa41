"""Stage 2, SFT: chat episodes with an assistant-only loss, in one of three formats.

What: `SFTTrainer` on TRL conversational data (`messages` + `tools`), `assistant_only_loss=True`
so system, user and tool turns (the observations) carry no loss. Arms: `sft` (think and act),
`fe_sft` (FE-SFT: the full world-model span before each action, the paper's format) and
`state_sft` (rollout and keywords, no analysis or confidence). Each arm can start from either
mid-trained model, or from the preset's own weights, and all use one recipe, so differences
between arms are not differences of training.
Why: the paper's format-capability gap: FE-SFT on a standard model teaches the format of
foresight; whether the foresight is grounded and calibrated depends on what came before.
How: `python -m foresight_lite train --stage sft --run wm --corpus fe_sft` (starts from
runs/wm/mt; `--init PATH` for another stage's output, `--init base` for the preset's weights).
"""

from __future__ import annotations

import time
from pathlib import Path

from trl import SFTConfig, SFTTrainer

from .. import corpora
from ..models import add_lora, load_model
from ..teacher import TEACHER_VERSION
from .common import MetricsLog, is_complete, require_stage, stage_dir, train_with_resume, write_json
from .midtrain import default_config, stage_traces

SFT_CORPORA = ("sft", "fe_sft", "state_sft")
LAYOUT_OF = {"sft": "plain", "fe_sft": "full", "state_sft": "state"}


def resolve_init(run_dir: str | Path, init: str | None) -> str | None:
    """The model folder stage 2 starts from: this run's mt (default), another folder, or None (base)."""
    if init == "base":
        return None
    if init is None:
        hint = (f"train stage 1 first (python -m foresight_lite train --stage mt --run {Path(run_dir).name}), "
                "or pass --init base to start from the preset's own weights.")
        return str(require_stage(stage_dir(run_dir, "mt"), hint=hint))
    return str(require_stage(init, hint="pass the folder of a finished stage, e.g. runs/NAME/mt."))


def train_sft(run_dir: str | Path, *, corpus: str = "fe_sft", preset: str = "smollm2-135m", init: str | None = None,
              worlds: tuple[str, ...] = ("search", "math"), n_traces: int = 400, seed: int = 0,
              smoke: bool = False, force: bool = False, config: SFTConfig | None = None, **overrides) -> Path:
    """Train stage 2 into `run_dir/sft`; returns that folder. `config` replaces the recipe whole."""
    if corpus not in SFT_CORPORA:
        raise ValueError(f"SFT corpus must be one of {', '.join(SFT_CORPORA)}, not {corpus!r}.")
    out = stage_dir(run_dir, "sft")
    if is_complete(out) and not force:
        return out
    start_from = resolve_init(run_dir, init)
    args = config or default_config(out / "checkpoints", preset=preset, smoke=smoke, seed=seed, stage="sft",
                                    assistant_only_loss=True, **overrides)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # the same teacher trajectories as stage 1 (same seed), rendered as chat episodes
    traces = stage_traces(worlds=worlds, n_traces=n_traces, seed=seed)
    dataset = corpora.BUILDERS[corpus](traces).select_columns(["messages", "tools"])
    model, tokenizer = load_model(preset, path=start_from, for_training=True)
    model = add_lora(model, preset, seed=args.seed)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[MetricsLog(out / "metrics.jsonl")])
    settings = {"stage": "sft", "corpus": corpus, "layout": LAYOUT_OF[corpus], "preset": preset,
                "init": start_from or "base", "worlds": list(worlds), "n_traces": n_traces, "seed": seed,
                "teacher_version": TEACHER_VERSION,
                "smoke": smoke, "examples": len(dataset), "epochs": args.num_train_epochs,
                "dtype": str(model.dtype).removeprefix("torch."),
                "sft_config": args.to_dict()}
    write_json(out / "stage.json", settings)
    train_with_resume(trainer, out, config=settings, started=started)
    return out

