"""Why a plain agent answers search questions "from memory": its first word, and its training order.

    python scripts/memory_habit.py first-word runs/s1-std-plain runs/s1-wm-plain runs/s2-plain
    python scripts/memory_habit.py order --init runs/s1-standard_mt/mt --seed 1 --sampling group_by_length

What: the teacher answers from memory on popular facts (at most half the time, for the most
popular), and 7-9% of the clean search episodes that stage 2 trains on begin `I remember this
one; no search needed.` Some plain-SFT models then do it on half the held-out tasks.
`first-word` reads, for each of a finished stage-2 run's first --n held-out search tasks, the
probability its model gives " remember" after `<think>I` (the word where a memory answer and
a search part), beside the teacher's own rate on that task (half the entity's popularity).
`order` replays stage 2's sampler (8 episodes per update; the recipe's random order, or
`--sampling group_by_length`, the recipe's before session 28) without training and prints which
updates held memory episodes: they are the shortest episodes, so length grouping packs them
into a few updates, where random order spreads them.
Why: docs/experiments.md, section 3 (the seed-1 plain-SFT pairs).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

MEMORY = "I remember this one"


def first_word(runs: list[str], *, n: int, preset: str) -> None:
    import torch

    from foresight_lite.envs import make_env
    from foresight_lite.models import load_model

    print("| run | tasks | mean p(remember) | above 0.5 | between 0.3 and 0.7 | teacher's mean rate |"
          " correlation with popularity |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        seed = json.loads((Path(run) / "sft" / "stage.json").read_text())["seed"]
        model, tokenizer = load_model(preset, path=Path(run) / "sft" / "model")
        model.eval()
        env = make_env("search", seed=seed, split="eval")
        word = tokenizer(" remember", add_special_tokens=False).input_ids
        p, popularity = [], []
        for task in env.tasks[:n]:
            messages = [{"role": "system", "content": env.system_prompt}, {"role": "user", "content": task.question}]
            text = tokenizer.apply_chat_template(messages, tools=env.tools, add_generation_prompt=True,
                                                 tokenize=False) + "<think>I"
            ids = tokenizer(text, add_special_tokens=False).input_ids
            with torch.no_grad():  # the whole word, token by token (one token on SmolLM2)
                logits = model(torch.tensor([ids + word[:-1]])).logits[0, len(ids) - 1:].float()
            p.append(logits.log_softmax(-1)[range(len(word)), word].sum().exp().item())
            popularity.append(task.plan.get("popularity", 0.0))
        try:
            corr = statistics.correlation(p, popularity)
        except statistics.StatisticsError:  # a constant column (e.g. one task)
            corr = float("nan")
        print(f"| {run} | {len(p)} | {statistics.mean(p):.3f} | {sum(x > 0.5 for x in p)} | "
              f"{sum(0.3 < x < 0.7 for x in p)} | {0.5 * statistics.mean(popularity):.3f} | {corr:.2f} |", flush=True)
        del model


def order(*, init: str, seed: int, preset: str, n_traces: int, sampling: str | None = None) -> list[int]:
    """Memory episodes per update of stage 2's plain SFT as the recipe would train it (nothing trained);
    `sampling` replaces the recipe's `train_sampling_strategy`."""
    import tempfile

    import torch
    from trl import SFTTrainer

    from foresight_lite.stages.sft import train_sft

    seen = {}  # update (0-based) -> memory episodes in its micro-batches

    def training_step(self, model, inputs, num_items_in_batch=None):
        step = self.state.global_step
        seen[step] = seen.get(step, 0) + sum(MEMORY in t for t in self.processing_class.batch_decode(inputs["input_ids"]))
        return torch.tensor(0.0)

    original, SFTTrainer.training_step = SFTTrainer.training_step, training_step
    try:
        with tempfile.TemporaryDirectory() as folder:
            train_sft(folder, corpus="sft", init=init, preset=preset, seed=seed, n_traces=n_traces, save_strategy="no",
                      **({"train_sampling_strategy": sampling} if sampling else {}))
    finally:
        SFTTrainer.training_step = original
    per_update = [seen[step] for step in sorted(seen)]
    print(f"{len(per_update)} updates, {sum(per_update)} memory episodes (over all epochs), in updates "
          + ", ".join(f"{i + 1} ({k})" for i, k in enumerate(per_update) if k))
    return per_update


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    probe = sub.add_parser("first-word", help="p(' remember') at a memory answer's first word, per run")
    probe.add_argument("runs", nargs="+", help="runs with a finished sft stage, e.g. runs/s1-std-plain")
    probe.add_argument("--n", type=int, default=200, help="held-out search tasks per run (default: 200)")
    replay = sub.add_parser("order", help="which updates of stage 2 hold the memory episodes")
    replay.add_argument("--init", default="base", help="the stage-1 folder stage 2 starts from, or base")
    replay.add_argument("--seed", type=int, default=0, help="world, traces and training seed (default: 0)")
    replay.add_argument("--n-traces", type=int, default=400, help="teacher trajectories per world (default: 400)")
    replay.add_argument("--sampling", choices=("random", "group_by_length"),
                        help="the episode order to replay (default: the recipe's, random)")
    for p in (probe, replay):
        p.add_argument("--preset", default="smollm2-135m", help="the models' preset (default: smollm2-135m)")
    args = parser.parse_args(argv)
    if args.command == "first-word":
        first_word(args.runs, n=args.n, preset=args.preset)
    else:
        order(init=args.init, seed=args.seed, preset=args.preset, n_traces=args.n_traces, sampling=args.sampling)


if __name__ == "__main__":
    main()
