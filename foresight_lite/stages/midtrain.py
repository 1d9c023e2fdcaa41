"""Stage 1, mid-training: continued pre-training on agent trajectories, with or without z_t.

What: `SFTTrainer` with the full next-token loss on plain-text trajectories. Two arms on the
same trajectories from the same model: `standard_mt` (the "standard mid-training" baseline) and
`wm_amt` (WM-AMT: a foresight block z_t, its roadmap built from the trajectory's real future, inserted
between s_t and a_t at sampled steps).
Why: the paper's claim is that predicting the real future during mid-training builds the
*capability* that later format-only SFT cannot. Both arms also learn the world itself: the
documents its searches return and the calculator's results.
How: `python -m foresight_lite train --stage mt --run wm --corpus wm_amt`
(`--preset tiny --smoke` runs in seconds). LoRA on all linear layers; GPU presets also train
embed_tokens and lm_head at a 10x smaller learning rate (continued pre-training as in Unsloth's
CPT recipe), through Unsloth when it is installed.
"""

from __future__ import annotations

import time
from pathlib import Path

from trl import SFTConfig, SFTTrainer

from .. import corpora
from ..models import add_lora, get_preset, load_model, stage_settings
from ..teacher import TEACHER_VERSION
from ..traces import generate_traces
from .common import (MetricsLog, embedding_optimizer, is_complete, stage_dir, train_with_resume, with_overrides,
                     write_json)

MT_CORPORA = ("standard_mt", "wm_amt")
SFT_EPOCHS = 2


def recipe(output_dir: Path, *, preset: str, smoke: bool, seed: int, stage: str = "mt", **overrides) -> dict:
    """The shared recipe of stages 1 and 2 as SFTConfig keyword arguments (every arm of a stage trains
    with it).

    Layered: the CPU recipe below, then the preset's changes for `stage` (GPU presets: batch,
    length, precision; see models.T4_STAGES), then smoke mode, then `overrides`.
    """
    stage_two = stage == "sft"
    base = dict(
        output_dir=str(output_dir), seed=seed, data_seed=seed, report_to="none",
        # 8 episodes per update; the loss is normalised by the tokens of all 8, so micro-batches of
        # 1 and 2 make the same update (tests check the sums and the episodes).
        # Stage 2: random order, one episode at a time. Grouped by length, an update held episodes
        # of one kind (memory answers are the shortest, 2-hop searches the longest), and at seed 1
        # plain SFT solved 62 of 200 search tasks against 200 in random order, FE-SFT 138 / 135
        # (search / math) against 162 / 163 (docs/experiments.md, section 3). Unsorted, a
        # micro-batch of 2 pads its shorter episode (262 against 297 tokens/s, peak 6.2 GB).
        # Stage 1: two at a time, grouped by length (one short episode alone is too little work for
        # 2 cores: 9.8 against 7.9 min on search; its results were all measured so). Batches of 4
        # peaked at 8.6 GB.
        per_device_train_batch_size=1 if stage_two else 2,
        gradient_accumulation_steps=8 if stage_two else 4,
        train_sampling_strategy="random" if stage_two else "group_by_length",
        # stage 2 takes two passes: on smollm2-135m one pass of plain SFT solved 40% / 43% of held-out
        # search / math tasks and two 63% / 93% (docs/experiments.md); stage 1 takes one
        num_train_epochs=SFT_EPOCHS if stage_two else 1,
        learning_rate=1e-3, lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=0.0,
        # 1536: the longest FE-SFT math episodes run to ~1,300 SmolLM2 tokens; at 1024 a fifth of
        # them lost their last turns, which the plain-SFT arm (max ~880) never does
        max_length=1536, logging_steps=5, save_total_limit=1,
        # a checkpoint (LoRA + optimizer, ~80 MB on smollm2) takes ~0.4 s; every 10 updates, an
        # interruption costs at most ~10 minutes of CPU work (fp32: ~30-60 s per update)
        save_strategy="steps", save_steps=10,
        # CPU: bf16 autocast costs more than it saves here; the weights themselves are bf16 where the
        # CPU computes bf16 fast, fp32 elsewhere (models.preset_dtype)
        bf16=False, fp16=False, gradient_checkpointing=False, dataloader_num_workers=0, dataloader_pin_memory=False,
        disable_tqdm=False,
    )
    base.update(stage_settings(preset, stage))
    if smoke:
        base.update(per_device_train_batch_size=2, gradient_accumulation_steps=1, max_steps=3, max_length=1024,
                    logging_steps=1, save_steps=2)
    return with_overrides(base, overrides)


def default_config(output_dir: Path, *, preset: str, smoke: bool, seed: int, stage: str = "mt",
                   **overrides) -> SFTConfig:
    """`recipe(...)` as an SFTConfig."""
    return SFTConfig(**recipe(output_dir, preset=preset, smoke=smoke, seed=seed, stage=stage, **overrides))


def stage_traces(*, worlds: tuple[str, ...], n_traces: int, seed: int) -> list[dict]:
    """The teacher trajectories both stages train on (deterministic: regenerated, not stored)."""
    return [t for w in worlds for t in generate_traces(w, n=n_traces, seed=seed, progress=False)]


def train_midtraining(run_dir: str | Path, *, corpus: str = "wm_amt", preset: str = "smollm2-135m",
                      worlds: tuple[str, ...] = ("search", "math"), n_traces: int = 400, seed: int = 0,
                      smoke: bool = False, force: bool = False, config: SFTConfig | None = None,
                      **overrides) -> Path:
    """Train stage 1 into `run_dir/mt`; returns that folder. `config` replaces the recipe whole."""
    if corpus not in MT_CORPORA:
        raise ValueError(f"Mid-training corpus must be one of {', '.join(MT_CORPORA)}, not {corpus!r}.")
    out = stage_dir(run_dir, "mt")
    if is_complete(out) and not force:
        return out
    args = config or default_config(out / "checkpoints", preset=preset, smoke=smoke, seed=seed, **overrides)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    traces = stage_traces(worlds=worlds, n_traces=n_traces, seed=seed)
    dataset = corpora.BUILDERS[corpus](traces) if corpus == "standard_mt" else corpora.wm_amt(traces, seed=seed)
    dataset = dataset.select_columns(["text"])
    model, tokenizer = load_model(preset, for_training=True)
    p = get_preset(preset)
    model = add_lora(model, preset, seed=args.seed, train_embeddings=p.mt_train_embeddings)
    # continued pre-training: embeddings learn at a smaller rate (None: TRL builds its own optimizer)
    optimizer = embedding_optimizer(model, args, ratio=p.embedding_lr_ratio) if p.mt_train_embeddings else None
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[MetricsLog(out / "metrics.jsonl")], optimizers=(optimizer, None))
    settings = {"stage": "mt", "corpus": corpus, "preset": preset, "worlds": list(worlds), "n_traces": n_traces,
                "seed": seed, "smoke": smoke, "teacher_version": TEACHER_VERSION, "examples": len(dataset),
                "epochs": args.num_train_epochs, "dtype": str(model.dtype).removeprefix("torch."),
                "sft_config": args.to_dict(), "train_embeddings": p.mt_train_embeddings,
                "embedding_learning_rate": args.learning_rate * p.embedding_lr_ratio if p.mt_train_embeddings else None}
    write_json(out / "stage.json", settings)
    train_with_resume(trainer, out, config=settings, started=started)
    return out
