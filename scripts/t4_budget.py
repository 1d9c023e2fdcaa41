"""Memory and minutes per stage on a 15 GB T4 for the GPU presets: an estimate, not a measurement.

What: for `qwen-0.5b-t4` and `qwen-1.5b-t4` and each stage (mt = WM-AMT as continued pre-training
with embeddings, sft = FE-SFT, rl = FC-RL with GRPO) this prints the arithmetic behind
docs/t4_budget.md: parameters counted from the published Qwen2.5 configs, LoRA and optimizer
bytes, activations per token, and minutes from FLOPs at 25-35% of the T4's fp16 peak.
Token counts come from our own corpora (`stage_traces` -> `corpora.wm_amt` / `corpora.fe_sft`),
tokenised with SmolLM2's tokenizer as a stand-in for Qwen's (no Hub here), batched exactly as
the recipe samples them (stage 1 grouped by length, stage 2 in random order).
Why: issue 6 asks for a budget per stage derived from parameter and token counts, stated as an
estimate until someone measures it on a GPU.
Run: `python scripts/t4_budget.py` (add `--n-traces 2000` for a larger run; about 30 s on 2 CPU
cores); `--markdown` prints the tables of docs/t4_budget.md.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from transformers.trainer_pt_utils import LengthGroupedSampler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from foresight_lite import corpora, models  # noqa: E402
from foresight_lite.stages.midtrain import stage_traces  # noqa: E402

# Published configs of the Hub checkpoints the presets load (config.json of Qwen/Qwen2.5-*-Instruct)
QWEN = {
    "qwen-0.5b-t4": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen-1.5b-t4": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
}
T4_PEAK_FLOPS = 65e12  # fp16 tensor cores
MFU = (0.25, 0.35)  # a realistic share of that peak for training
T4_BANDWIDTH = 320e9  # bytes/s of HBM: the floor of one decoding step is reading every weight once
DECODE_STEP_OVERHEAD = 0.025  # s per decoding step for eager `generate` on a 24-28 layer model (assumed)
T4_MEMORY_GB = 15.0
CUDA_OVERHEAD_GB = 1.0  # CUDA context, allocator fragmentation, workspace (assumed)
GB = 1e9


def qwen_counts(preset: str) -> dict:
    """Exact parameter counts of the Qwen2.5 architecture, built on the meta device (no weights)."""
    config = Qwen2Config(**QWEN[preset])
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())  # a tied matrix is counted once
    d, v, layers = config.hidden_size, config.vocab_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (d // config.num_attention_heads)
    ff = config.intermediate_size
    p = models.PRESETS[preset]
    shapes = {"q_proj": (d, d), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (d, d),
              "gate_proj": (d, ff), "up_proj": (d, ff), "down_proj": (ff, d)}
    lora = layers * sum(p.lora_r * (i + o) for name, (i, o) in shapes.items() if name in p.lora_target_modules)
    return dict(total=total, embedding=v * d, body=total - v * d, lm_head=v * d, lora=lora,
                d=d, kv=kv, ff=ff, layers=layers, vocab=v)


def episode_tokens(tokenizer, *, n_traces: int, seed: int) -> dict:
    """Per-example token counts of the stage-1 (wm_amt, standard_mt) and stage-2 (fe_sft, sft) corpora."""
    traces = stage_traces(worlds=("search", "math"), n_traces=n_traces, seed=seed)
    mt = [len(tokenizer(t).input_ids) for t in corpora.wm_amt(traces, seed=seed)["text"]]
    plain_mt = [len(tokenizer(t).input_ids) for t in corpora.standard_mt(traces)["text"]]
    chats = {}
    for name in ("fe_sft", "sft"):
        lengths, trained, turns = [], [], []
        for row in corpora.BUILDERS[name](traces):
            out = tokenizer.apply_chat_template(row["messages"], tools=json.loads(row["tools"]), return_dict=True,
                                                return_assistant_tokens_mask=True)
            lengths.append(len(out["input_ids"]))
            trained.append(sum(out["assistant_masks"]))
            turns.append([len(tokenizer(m["content"] or "").input_ids) + 30 * bool(m.get("tool_calls"))
                          for m in row["messages"] if m["role"] == "assistant"])  # ~30 tokens of tool-call JSON
        chats[name] = (lengths, trained, turns)
    return dict(mt=mt, standard_mt=plain_mt, sft=chats["fe_sft"][0], sft_trained=chats["fe_sft"][1],
                sft_turns=chats["fe_sft"][2], plain_sft=chats["sft"][0], plain_sft_trained=chats["sft"][1],
                traces=len(traces))


def padded(lengths: list[int], batch: int, *, max_length: int, grouped: bool, seed: int = 0) -> tuple[int, int]:
    """(tokens processed with padding to the batch's longest, number of batches), as TRL batches them
    grouped by length or in random order."""
    lengths = [min(n, max_length) for n in lengths]
    generator = torch.Generator().manual_seed(seed)
    order = (list(LengthGroupedSampler(batch, lengths=lengths, generator=generator)) if grouped
             else torch.randperm(len(lengths), generator=generator).tolist())
    batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    return sum(max(lengths[i] for i in b) * len(b) for b in batches), len(batches)


def activation_bytes_per_token(c: dict) -> float:
    """fp16 activations kept per token under gradient checkpointing: each layer's input, plus
    one layer's internals while it is recomputed (q, k, v, attention out, norms: 5d + 2kv;
    MLP gate, up, act, product: 4ff; fp32 RMSNorm copies: 8d bytes)."""
    return 2 * c["d"] * c["layers"] + 2 * (5 * c["d"] + 2 * c["kv"] + 4 * c["ff"]) + 8 * c["d"]


def minutes(flops: float) -> tuple[float, float]:
    return tuple(flops / (T4_PEAK_FLOPS * m) / 60 for m in reversed(MFU))  # (fast, slow)


def training_stage(c: dict, lengths: list[int], *, settings: dict, head_share: float, cpt: bool) -> dict:
    batch, accumulation, max_length = (settings["per_device_train_batch_size"],
                                       settings["gradient_accumulation_steps"], settings["max_length"])
    # as the recipe samples them: stage 1 (cpt) grouped by length, stage 2 in random order
    processed, micro = padded(lengths, batch, max_length=max_length, grouped=cpt)
    mean_len = processed / max(1, len(lengths))
    # forward per token: 2 FLOP per body weight, the attention scores (2 * layers * context * d),
    # and the lm_head on the tokens that carry loss (TRL's chunked NLL skips the others)
    forward = 2 * c["body"] + 2 * c["layers"] * mean_len * c["d"] + 2 * c["lm_head"] * head_share
    # LoRA: backward through activations (~1 forward) and the checkpoint recompute (1 forward);
    # frozen weights need no weight gradients, except a trained embedding / lm_head (2 * V * d)
    per_token = 3 * forward + (2 * c["lm_head"] if cpt else 0)
    flops = processed * per_token
    weights = 2 * c["total"]
    lora = 16 * c["lora"]  # fp32 weight + gradient + two Adam moments
    embeddings = 16 * c["embedding"] if cpt else 0  # peft keeps a trained fp32 copy beside the frozen one
    longest = min(max(lengths), max_length)
    activations = activation_bytes_per_token(c) * batch * longest
    # TRL's chunked NLL: one chunk of 256 tokens of fp32 logits at a time (logits, softmax, gradient)
    chunk_logits = 3 * 4 * 256 * c["vocab"]
    peak = weights + lora + embeddings + activations + chunk_logits + CUDA_OVERHEAD_GB * GB
    return dict(examples=len(lengths), tokens=sum(min(n, max_length) for n in lengths), processed=processed,
                updates=math.ceil(micro / accumulation), batch=f"{batch} x {accumulation}", longest=longest,
                flops=flops, minutes=minutes(flops), weights=weights, lora=lora, embeddings=embeddings,
                activations=activations, peak=peak)


def decode_steps(turns: list[list[int]], episodes: int, *, seed: int = 0, rounds: int = 200) -> float:
    """Mean decoding steps of a round of `episodes` played together: turns run in lock-step, so each
    turn takes as many steps as the longest answer among the episodes still playing."""
    rng = random.Random(seed)
    steps = []
    for _ in range(rounds):
        group = [turns[rng.randrange(len(turns))] for _ in range(episodes)]
        steps.append(sum(max(g[t] if t < len(g) else 0 for g in group) for t in range(max(map(len, group)))))
    return sum(steps) / len(steps)


def decode_seconds(c: dict, steps: float) -> float:
    step_floor = 2 * c["total"] / T4_BANDWIDTH  # every fp16 weight read once per step
    return steps * max(step_floor, DECODE_STEP_OVERHEAD)


def grpo_stage(c: dict, data: dict, *, settings: dict, updates: int, seed: int = 0) -> dict:
    """One GRPO update = generate `num_generations` episodes per task, then train on them once."""
    generations, batch = settings["num_generations"], settings["per_device_train_batch_size"]
    episodes = batch * settings["gradient_accumulation_steps"]
    cap = settings["max_completion_length"]
    # FE-SFT episodes stand in for the policy's rollouts (same format, same worlds)
    lengths = data["sft"]
    steps = decode_steps(data["sft_turns"], episodes, seed=seed)
    step_floor = 2 * c["total"] / T4_BANDWIDTH
    generate_s = decode_seconds(c, steps)
    mean_len = min(sum(lengths) / len(lengths), cap + 150)
    completion = sum(data["sft_trained"]) / len(data["sft_trained"])
    forward = 2 * c["body"] + 2 * c["layers"] * mean_len * c["d"]
    # TRL's GRPO (without Liger) computes full logits over the completion: lm_head on those tokens
    flops = episodes * (3 * forward * mean_len + 3 * 2 * c["lm_head"] * completion)
    train_s = sum(flops / (T4_PEAK_FLOPS * m) for m in MFU) / 2
    weights, lora = 2 * c["total"], 16 * c["lora"]
    longest = cap + 150  # completion cap plus the system prompt and question
    activations = activation_bytes_per_token(c) * batch * longest
    # fp16 logits of a micro-batch, their gradient, and one fp32 row of log-softmax at a time
    logits = batch * cap * c["vocab"] * (2 + 2) + cap * c["vocab"] * 4
    kv_cache = 2 * c["layers"] * c["kv"] * 2 * episodes * longest  # k and v, fp16, for the whole round
    peak = weights + lora + max(activations + logits, kv_cache) + CUDA_OVERHEAD_GB * GB
    per_update = generate_s + train_s
    return dict(episodes=episodes, generations=generations, decode_steps=steps, step_floor=step_floor,
                generate_s=generate_s, train_s=train_s, per_update=per_update, updates=updates,
                minutes=(per_update * updates / 60,) * 2, weights=weights, lora=lora, activations=activations,
                logits=logits, kv_cache=kv_cache, peak=peak, batch=f"{batch} x {settings['gradient_accumulation_steps']}",
                mean_len=mean_len)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-traces", type=int, default=400, help="teacher trajectories per world (default 400)")
    parser.add_argument("--rl-updates", type=int, default=100, help="GRPO updates to budget (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true", help="print the tables only")
    args = parser.parse_args(argv)

    _, tokenizer = models.load_model("smollm2-135m")  # SmolLM2's tokenizer stands in for Qwen's
    data = episode_tokens(tokenizer, n_traces=args.n_traces, seed=args.seed)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    print(f"corpora from {args.n_traces} trajectories per world ({data['traces']} in all), SmolLM2 tokens:")
    print(f"  mt (wm_amt): {len(data['mt'])} texts, {sum(data['mt']):,} tokens, mean {mean(data['mt']):.0f}, "
          f"max {max(data['mt'])}")
    print(f"  sft (fe_sft): {len(data['sft'])} episodes, {sum(data['sft']):,} tokens, mean {mean(data['sft']):.0f}, "
          f"max {max(data['sft'])}; trained (assistant) share {sum(data['sft_trained']) / sum(data['sft']):.1%}")
    rows = []
    for preset in QWEN:
        c = qwen_counts(preset)
        settings = models.PRESETS[preset].stage_settings
        mt = training_stage(c, data["mt"], settings=settings["mt"], head_share=1.0, cpt=True)
        sft = training_stage(c, data["sft"], settings=settings["sft"],
                             head_share=sum(data["sft_trained"]) / sum(data["sft"]), cpt=False)
        rl = grpo_stage(c, data, settings=settings["rl"], updates=args.rl_updates, seed=args.seed)
        rows.append((preset, c, mt, sft, rl))
        if args.markdown:
            continue
        print(f"\n{preset}: {c['total'] / 1e6:.1f}M parameters ({c['embedding'] / 1e6:.1f}M in the tied "
              f"embedding / lm_head, {c['body'] / 1e6:.1f}M in the layers), LoRA r={models.PRESETS[preset].lora_r}: "
              f"{c['lora'] / 1e6:.2f}M; activations {activation_bytes_per_token(c) / 1e3:.0f} kB per token")
        for name, s in (("mt", mt), ("sft", sft)):
            print(f"  {name}: {s['examples']} x ≤{s['longest']} tokens, batch {s['batch']}, {s['updates']} updates, "
                  f"{s['processed']:,} tokens with padding ({s['processed'] / s['tokens'] - 1:.0%} padding), "
                  f"{s['flops']:.2e} FLOP -> {s['minutes'][0]:.1f}-{s['minutes'][1]:.1f} min; memory "
                  f"{s['weights'] / GB:.2f} weights + {s['lora'] / GB:.2f} LoRA + {s['embeddings'] / GB:.2f} "
                  f"embeddings + {s['activations'] / GB:.2f} activations + {CUDA_OVERHEAD_GB} overhead "
                  f"= {s['peak'] / GB:.1f} GB of {T4_MEMORY_GB}")
        print(f"  rl: {rl['episodes']} episodes per update ({rl['generations']} per task), ~{rl['decode_steps']:.0f} "
              f"decoding steps x max({rl['step_floor'] * 1e3:.1f} ms bandwidth floor, "
              f"{DECODE_STEP_OVERHEAD * 1e3:.0f} ms overhead) = {rl['generate_s']:.0f} s generating + "
              f"{rl['train_s']:.1f} s training per update -> {rl['minutes'][0]:.0f} min for {rl['updates']} updates; "
              f"memory {rl['weights'] / GB:.2f} weights + {rl['lora'] / GB:.2f} LoRA + {rl['activations'] / GB:.2f} "
              f"activations + {rl['logits'] / GB:.2f} logits (KV cache {rl['kv_cache'] / GB:.2f} while generating) "
              f"+ {CUDA_OVERHEAD_GB} overhead = {rl['peak'] / GB:.1f} GB")
    # The notebooks at their full (non-smoke) parameters: 02 trains both mid-training arms; 03
    # trains three SFT arms (sft, fe_sft, fe_sft; its mid-training comes from 02) and plays
    # 3 arms x 2 worlds x 2 splits x 100 held-out episodes, 32 at a time (greedy, run_episodes).
    print("\nnotebooks at full size (training and evaluation only; installs and the model download not included):")
    for preset, c, mt, sft, rl in rows:
        settings = models.PRESETS[preset].stage_settings
        plain_mt = training_stage(c, data["standard_mt"], settings=settings["mt"], head_share=1.0, cpt=True)
        plain_sft = training_stage(c, data["plain_sft"], settings=settings["sft"],
                                   head_share=sum(data["plain_sft_trained"]) / sum(data["plain_sft"]), cpt=False)
        nb02 = [a + b for a, b in zip(mt["minutes"], plain_mt["minutes"])]
        batches = 3 * 2 * 2 * math.ceil(100 / 32)
        evaluation = batches * decode_seconds(c, decode_steps(data["sft_turns"], 32, seed=args.seed)) / 60
        nb03 = [2 * a + b + evaluation for a, b in zip(sft["minutes"], plain_sft["minutes"])]
        print(f"  {preset}: 02 {nb02[0]:.1f}-{nb02[1]:.1f} min; 03 {nb03[0]:.0f}-{nb03[1]:.0f} min "
              f"(of which {evaluation:.0f} min playing {batches} batches of 32 episodes)")
    print("\n| preset | stage | batch | updates | tokens (padded) | peak memory | minutes |")
    print("|---|---|---|---|---|---|---|")
    for preset, c, mt, sft, rl in rows:
        for name, s in (("mt (WM-AMT, CPT)", mt), ("sft (FE-SFT)", sft)):
            print(f"| {preset} | {name} | {s['batch']} | {s['updates']} | {s['processed']:,} | "
                  f"{s['peak'] / GB:.1f} GB | {s['minutes'][0]:.1f}-{s['minutes'][1]:.1f} |")
        print(f"| {preset} | rl (FC-RL, GRPO) | {rl['batch']} | {rl['updates']} | "
              f"{rl['episodes'] * rl['mean_len'] * rl['updates']:,.0f} | {rl['peak'] / GB:.1f} GB | "
              f"~{rl['minutes'][0]:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
