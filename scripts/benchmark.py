"""Speed figures for foresight-lite on this machine. Prints numbers; asserts nothing.

    python scripts/benchmark.py                 # all sections (train and generate take minutes)
    python scripts/benchmark.py traces          # one section
    python scripts/benchmark.py generate --preset tiny --episodes 8   # seconds: the mechanics

traces:   1,000 annotated search trajectories with Monte Carlo q (target: under 60 s on 2 cores),
          the same for math, and the cost of the raw BM25 search (uncached queries).
peak:     the machine's measured matmul throughput (fp32, bf16), the yardstick for training.
train:    FE-SFT training of smollm2-135m with the recipe and with one choice changed at a time:
          tokens/s, model FLOP/s as a share of the matmul peak of the weights' dtype (bf16, or fp32
          on a CPU without fast bf16), peak memory (a subprocess each).
generate: one attention layer's decoding step, transformers' sdpa against the grouped one; one
          step's KV-cache writes, transformers' concatenating cache against the growing one; the
          model's whole decoding step at batch 1 and at --episodes rows (what batching can buy at
          most: at batch 1 a step reads every weight for one token); then batched against
          one-episode-at-a-time evaluation (`run_episodes`, greedy) on the same held-out search
          tasks: episodes/s and generated tokens/s each way, and the speed-up (target: at least 5x).
          `--model` a trained stage's model folder, `--preset` its preset.
rl:       stage 3 (FC-RL) with the default recipe, from --model (a finished stage folder, e.g.
          runs/wm/sft; default: the preset's own weights): wall time, episodes/s, share of the
          time spent generating (tool calls included), peak memory (a subprocess).
          `python scripts/benchmark.py rl --preset tiny --smoke` checks the section in seconds.
method:   one method end to end, as `reproduce --methods full --seeds 0 --worlds search` runs it: all
          three stages and the evaluation (200 tasks of each held-out split), one world, one seed:
          training and evaluation minutes (target: under 35), in runs/benchmark-method-<preset>/,
          so an interrupted run resumes where it stopped. Hours in fp32; `--preset tiny --smoke`
          checks the section in a minute (in a temporary folder).
smoke:    `reproduce --smoke` on tiny (every method, three seeds, a fresh runs folder): wall time
          (target: under 5 minutes).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path


def bench_traces() -> None:
    from foresight_lite.envs import Action, make_env
    from foresight_lite.traces import DEFAULT_K, generate_traces

    for world in ("search", "math"):
        start = time.perf_counter()
        traces = generate_traces(world, n=1000, seed=0, progress=False)
        seconds = time.perf_counter() - start
        steps = sum(len(t["steps"]) for t in traces)
        print(f"traces  {world:6}  1000 trajectories, {steps} steps, K={DEFAULT_K}: {seconds:6.2f} s "
              f"({1000 / seconds:,.0f} trajectories/s)")
    env = make_env("search", seed=0, split="train")
    env.reset(0)
    names = env.world.names
    start = time.perf_counter()
    for name in names:
        env.index.search.__wrapped__(env.index, name)  # bypass the cache: the real BM25 cost
    per_query = (time.perf_counter() - start) / len(names)
    print(f"search  bm25s retrieval, uncached: {1000 * per_query:.2f} ms/query over {len(names)} queries")
    start = time.perf_counter()
    for name in names:
        env.reset(0)
        env.step(Action.call("search", query=name))
    print(f"search  reset + step, cached queries: {1e6 * (time.perf_counter() - start) / len(names):.0f} µs")


def matmul_peak() -> dict:
    """Best GFLOP/s of model-shaped and square matmuls, per dtype, on all threads."""
    import torch

    from foresight_lite.models import cpu_bf16_fast

    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        best = 0.0
        # emulated bf16 (no AVX-512 BF16 or AMX) is ~50x slower: one small shape says enough
        shapes = ((4096, 576, 1536), (4096, 1536, 576), (2048, 2048, 2048))
        if dtype == torch.bfloat16 and not cpu_bf16_fast():
            shapes = ((256, 576, 576),)
        for m, k, n in shapes:
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            a @ b
            start, reps = time.perf_counter(), 10
            for _ in range(reps):
                a @ b
            best = max(best, 2 * m * k * n * reps / (time.perf_counter() - start) / 1e9)
        out[str(dtype).split(".")[-1]] = best
    return out


def bench_peak() -> None:
    for dtype, gflops in matmul_peak().items():
        print(f"peak    matmul {dtype}: {gflops:.0f} GFLOP/s")


# one choice changed at a time against the recipe (see foresight_lite/stages/midtrain.py)
TRAIN_VARIANTS = {
    "recipe": {},
    "lora on all 30 layers": {"lora_first_layer": 0},
    "fp32 weights": {"dtype": "float32"},
    "batch 8, no accumulation": {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1},
    "micro-batches of 2 (x 4)": {"per_device_train_batch_size": 2},
    "grouped by length (the recipe before session 28)": {"train_sampling_strategy": "group_by_length"},
    # compiles again for new sequence lengths: the wall time (5 steps) shows that cost
    "torch.compile": {"torch_compile": True},
}
_TRAIN_CHILD = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
import foresight_lite.models as models
from foresight_lite.stages import train_sft
variant = json.loads(sys.argv[1])
preset = models.PRESETS["smollm2-135m"]
for key in ("lora_first_layer", "dtype"):
    if key in variant:
        preset = models.PRESETS["smollm2-135m"] = type(preset)(**{**preset.__dict__, key: variant.pop(key)})
started = time.perf_counter()
out = train_sft(Path(tempfile.mkdtemp()) / "b", corpus="fe_sft", preset="smollm2-135m", init="base",
                n_traces=60, max_steps=5, logging_steps=1, save_steps=1000, **variant)
rows = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "tokens_per_second" in r]
speeds = [r["tokens_per_second"] for r in rows][1:]  # skip warm-up
# which episodes 5 updates draw depends on the order (longer ones likely fill the 2 cores better)
per_update = (rows[-1]["num_tokens"] - rows[0]["num_tokens"]) / (rows[-1]["step"] - rows[0]["step"])
print(json.dumps({"tokens_per_second": sum(speeds) / len(speeds), "first_layer": preset.lora_first_layer,
                  "tokens_per_update": per_update,
                  "dtype": models.preset_dtype(preset),
                  "wall_seconds": time.perf_counter() - started,
                  "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


def training_flops_per_token(first_layer: int) -> float:
    """Model FLOPs per trained token under LoRA (attention scores left out): the forward pass is
    2 x params; the backward pass computes activation gradients (2 x params) only from the top down
    to the lowest LoRA layer, and no gradients for the frozen weights themselves."""
    from transformers import AutoConfig

    from foresight_lite.models import smollm2_dir

    c = AutoConfig.from_pretrained(smollm2_dir())
    kv = c.hidden_size // c.num_attention_heads * c.num_key_value_heads
    per_layer = c.hidden_size * (2 * c.hidden_size + 2 * kv) + 3 * c.hidden_size * c.intermediate_size
    head = c.hidden_size * c.vocab_size
    forward = 2 * (c.num_hidden_layers * per_layer + head)
    backward = 2 * ((c.num_hidden_layers - first_layer) * per_layer + head)
    return forward + backward


def bench_train() -> None:
    import json
    import subprocess
    import sys

    peaks = matmul_peak()
    print("train   matmul peak measured in this run: "
          + ", ".join(f"{dtype} {gflops:.0f} GFLOP/s" for dtype, gflops in peaks.items())
          + " (each variant is set against its own weights' dtype)")
    for name, variant in TRAIN_VARIANTS.items():
        result = subprocess.run([sys.executable, "-c", _TRAIN_CHILD, json.dumps(variant)],
                                capture_output=True, text=True)
        if result.returncode:
            print(f"train   {name}: failed\n{result.stderr[-800:]}")
            continue
        r = json.loads(result.stdout.strip().splitlines()[-1])
        gflops = r["tokens_per_second"] * training_flops_per_token(r["first_layer"]) / 1e9
        print(f"train   {name:28} {r['tokens_per_second']:6.0f} tokens/s  {gflops:5.0f} GFLOP/s "
              f"({gflops / peaks[r['dtype']]:4.0%} of the {r['dtype']} peak)  peak memory {r['peak_gb']:.1f} GB  "
              f"5 steps in {r['wall_seconds']:.0f} s, {r['tokens_per_update']:,.0f} tokens per timed update")


def bench_attention(batch: int = 30, context: int = 1500) -> None:
    """One decoding step of one SmolLM2-shaped attention layer (9 query heads, 3 key-value heads,
    head size 64) under a padding mask: transformers' sdpa against the grouped one generation uses."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from foresight_lite.models import grouped_sdpa

    class Layer(torch.nn.Module):
        num_key_value_groups, is_causal = 3, True

    mask = torch.ones(batch, 1, 1, context, dtype=torch.bool)
    mask[::2, :, :, :context // 10] = False  # left padding in every other row
    for dtype in (torch.float32, torch.bfloat16):
        query = torch.randn(batch, 9, 1, 64, dtype=dtype)
        key, value = torch.randn(batch, 3, context, 64, dtype=dtype), torch.randn(batch, 3, context, 64, dtype=dtype)
        for name, attend in (("transformers sdpa", sdpa_attention_forward), ("grouped sdpa", grouped_sdpa)):
            attend(Layer(), query, key, value, mask)
            start = time.perf_counter()
            for _ in range(10):
                attend(Layer(), query, key, value, mask)
            print(f"generate attention, one layer, {batch} x {context} tokens, {str(dtype)[6:]:8} {name:17}: "
                  f"{(time.perf_counter() - start) * 100:.1f} ms per decoding step")


def bench_cache(batch: int = 8, context: int = 700, layers: int = 30) -> None:
    """One decoding step's KV-cache writes for SmolLM2's 30 layers (3 key-value heads, head size 64):
    transformers' DynamicLayer, which concatenates the whole cache, against the GrowingLayer
    generation uses, which writes into spare room."""
    import torch
    from transformers.cache_utils import DynamicLayer

    from foresight_lite.models import GrowingLayer

    for name, kind in (("transformers dynamic", DynamicLayer), ("growing", GrowingLayer)):
        cache = [kind() for _ in range(layers)]
        for layer in cache:
            layer.update(torch.randn(batch, 3, context, 64), torch.randn(batch, 3, context, 64))
        token = torch.randn(batch, 3, 1, 64)
        start = time.perf_counter()
        for _ in range(10):
            for layer in cache:
                layer.update(token, token)
        print(f"generate KV cache, {layers} layers, {batch} x {context} tokens, {name:20}: "
              f"{(time.perf_counter() - start) * 100:.1f} ms per decoding step")


def bench_step(model, *, preset: str, batches=(1, 32), context: int = 300, steps: int = 16) -> dict:
    """The model's decoding step (body and head, into a GrowingCache, grouped attention) at each batch
    size, after `context` prompt tokens: ms per step and per row."""
    import torch

    from foresight_lite.models import GrowingCache, grouped_attention

    per_row = {}
    with torch.no_grad(), grouped_attention(model):
        for batch in batches:
            ids = torch.randint(0, model.config.vocab_size, (batch, context), generator=torch.Generator().manual_seed(0))
            past = GrowingCache()
            token = model(input_ids=ids, past_key_values=past, use_cache=True).logits[:, -1:].argmax(-1)
            start = time.perf_counter()
            for _ in range(steps):
                token = model(input_ids=token, past_key_values=past, use_cache=True).logits[:, -1:].argmax(-1)
            ms = (time.perf_counter() - start) * 1000 / steps
            per_row[batch] = ms / batch
            print(f"generate {preset} decoding step, {batch:3} x {context} tokens: {ms:.1f} ms "
                  f"({per_row[batch]:.2f} ms per row)")
    return per_row


def bench_generate(model_path: str | None = None, *, preset: str = "smollm2-135m", episodes: int = 16,
                   max_new_tokens: int = 160) -> dict:
    """Episodes per second with all `episodes` in one batch against one episode at a time."""
    from foresight_lite.evaluate import run_episodes
    from foresight_lite.models import load_model

    bench_attention()
    bench_cache()

    model, tokenizer = load_model(preset, path=model_path)
    model.eval()
    step = bench_step(model, preset=preset, batches=(1, episodes))
    print(f"generate {preset} decoding, one row's step in a batch of {episodes}: "
          f"{step[1] / step[episodes]:.1f}x cheaper than alone")
    run_episodes(model, tokenizer, world="search", split="eval", n=2, batch_size=2, max_new_tokens=8,
                 progress=False)  # warm-up: first-call allocations are not part of either figure
    rates = {}
    for batch in (1, episodes):
        start = time.perf_counter()
        played = run_episodes(model, tokenizer, world="search", split="eval", n=episodes, batch_size=batch,
                              max_new_tokens=max_new_tokens, progress=False)
        seconds = time.perf_counter() - start
        tokens = sum(e["generated_tokens"] for e in played)
        turns = sum(len(e["steps"]) for e in played)
        rates[batch] = len(played) / seconds
        print(f"generate {preset} batch {batch:3}: {len(played)} episodes ({turns} turns, {tokens} tokens) in "
              f"{seconds:.1f} s = {rates[batch]:.2f} episodes/s, {tokens / seconds:.0f} tokens/s")
    speedup = rates[episodes] / rates[1]
    print(f"generate {preset} batched speed-up: {speedup:.1f}x (target: at least 5x)")
    return {"episodes_per_second": rates, "speedup": speedup}


_RL_CHILD = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
from foresight_lite.stages import train_rl
preset, init, smoke, method = json.loads(sys.argv[1])
start = time.perf_counter()
out = train_rl(Path(tempfile.mkdtemp()) / "b", method=method, preset=preset, init=init or "base", smoke=smoke,
               save_steps=1000)
seconds = time.perf_counter() - start
settings = json.loads((out / "stage.json").read_text())["grpo_config"]
rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"step_time"' in l]
steps = len(rows)
per_step = settings["per_device_train_batch_size"] * settings["gradient_accumulation_steps"]
episodes = steps * per_step
train_seconds = sum(r["step_time"] for r in rows)
generate_seconds = sum(r.get("time/generate", 0.0) for r in rows)
print(json.dumps({"seconds": seconds, "steps": steps, "episodes": episodes, "train_seconds": train_seconds,
                  "episodes_per_second": episodes / train_seconds,
                  "generate_share": generate_seconds / train_seconds,
                  "generated_tokens_per_second": sum(r["completions/mean_length"] * per_step for r in rows)
                  / max(generate_seconds, 1e-9),
                  "tokens_per_episode": sum(r["completions/mean_length"] for r in rows) / steps,
                  "success": [r["reward/success"] for r in rows], "calib": [r["reward/calib"] for r in rows],
                  "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


def bench_rl(model_path: str | None = None, preset: str = "smollm2-135m", smoke: bool = False) -> None:
    import json
    import subprocess
    import sys

    for method in ("fc_rl",):
        result = subprocess.run([sys.executable, "-c", _RL_CHILD, json.dumps([preset, model_path, smoke, method])],
                                capture_output=True, text=True)
        if result.returncode:
            print(f"rl      {method}: failed\n{result.stderr[-800:]}")
            continue
        r = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"rl      {preset} {method}: {r['seconds']:.0f} s in all, {r['steps']} steps, {r['episodes']} episodes, "
              f"{r['episodes_per_second']:.3f} episodes/s, {r['generate_share']:.0%} of step time generating "
              f"({r['generated_tokens_per_second']:.1f} completion tokens/s, observations included), "
              f"{r['tokens_per_episode']:.0f} completion tokens/episode, peak memory {r['peak_gb']:.1f} GB")
        print(f"rl      success per step {[round(x, 2) for x in r['success']]}, "
              f"calibration reward per step {[round(x, 2) for x in r['calib']]}")


def bench_reproduce(*argv: str, folder: str | None = None) -> dict:
    """Wall time of one `reproduce` call (a subprocess) and the compute its summary records: the
    stages' and evaluations' own clocks, which count on across resumes. `folder` keeps the runs
    (a rerun resumes); without it, a fresh temporary one."""
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(folder or tmp)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "foresight_lite", "reproduce", *argv, "--runs-dir", str(folder / "runs"),
                        "--out", str(folder / "results")], check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        meta = json.loads((folder / "results" / "summary.json").read_text())["meta"]
    print(f"reproduce {' '.join(argv)}: training {meta['train_seconds'] / 60:.1f} min, evaluation "
          f"{meta['eval_seconds'] / 60:.1f} min; {seconds / 60:.1f} min wall time for this call; stages trained "
          f"in {', '.join(meta['stage_dtypes'])}")
    return {"seconds": seconds, "train_seconds": meta["train_seconds"], "eval_seconds": meta["eval_seconds"]}


def bench_method(preset: str = "smollm2-135m", smoke: bool = False) -> None:
    argv = ["--methods", "full", "--seeds", "0", "--worlds", "search", "--preset", preset] + ["--smoke"] * smoke
    # a real run takes hours: keep it where an interrupted benchmark resumes (smoke: thrown away)
    bench_reproduce(*argv, folder=None if smoke else f"runs/benchmark-method-{preset}")
    print("method  target: one method end to end (one world, one seed) in under 35 minutes of training and "
          "evaluation")


def bench_smoke() -> None:
    bench_reproduce("--smoke")
    print("smoke   target: reproduce --smoke on tiny in under 5 minutes")


SECTIONS = {"traces": bench_traces, "peak": bench_peak, "train": bench_train, "generate": bench_generate,
            "rl": bench_rl, "method": bench_method, "smoke": bench_smoke}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", help=f"any of: {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--model", help="generate: a trained model folder (default: the preset's base model); "
                                        "rl: a finished stage folder to start from (default: the preset's weights)")
    parser.add_argument("--preset", default="smollm2-135m",
                        help="generate, rl, method: the model preset (default: smollm2-135m)")
    parser.add_argument("--episodes", type=int, default=16, help="generate: episodes, and the batch size (default: 16)")
    parser.add_argument("--max-new-tokens", type=int, default=160, help="generate: per turn (default: 160)")
    parser.add_argument("--smoke", action="store_true", help="rl, method: the smoke recipe (seconds to a minute)")
    args = parser.parse_args()
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for name in args.sections or SECTIONS:
        if name == "generate":
            bench_generate(args.model, preset=args.preset, episodes=args.episodes, max_new_tokens=args.max_new_tokens)
        elif name == "rl":
            SECTIONS[name](args.model, preset=args.preset, smoke=args.smoke)
        elif name == "method":
            bench_method(args.preset, smoke=args.smoke)
        else:
            SECTIONS[name]()


if __name__ == "__main__":
    main()
