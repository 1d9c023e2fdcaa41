"""Does stage 1 teach the world? How surprising real observations are, before and after. Prints a table.

    python scripts/world_probe.py runs/v9-wm/mt/model                  # base vs that model, 48 per world and split
    python scripts/world_probe.py runs/A/mt/model runs/B/mt/model --n 48 --worlds search

What: notebook 02's probe (`foresight_lite.probes.observation_nll`) as a command. It writes
held-out teacher trajectories as plain text and scores, by teacher forcing, only the world's
replies: every observation token, the names and numbers in them (value), and the values the
text has not shown before (new value: these can only be known, not copied).
Why: issue 3 asks that mid-training measurably teach the world; the base model is the
"before". The rl split asks about training entities (learnable); ood about unseen entities,
a control whose new-value NLL should barely move in the search world.
"""

from __future__ import annotations

import argparse


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", help="finished stages' model folders, e.g. runs/NAME/mt/model; "
                                                  "the preset's base model is always scored first")
    parser.add_argument("--preset", default="smollm2-135m", help="the models' preset (default: smollm2-135m)")
    parser.add_argument("--n", type=int, default=48, help="held-out trajectories per world and split (default: 48)")
    parser.add_argument("--seed", type=int, default=0, help="world and trace seed (default: 0)")
    parser.add_argument("--worlds", nargs="+", default=["search", "math"], choices=["search", "math"])
    parser.add_argument("--splits", nargs="+", default=["rl", "ood"], choices=["rl", "eval", "ood"])
    args = parser.parse_args(argv)

    from foresight_lite.models import load_model
    from foresight_lite.probes import observation_nll
    from foresight_lite.traces import generate_traces

    traces = {(w, s): generate_traces(w, n=args.n, seed=args.seed, split=s, progress=False)
              for w in args.worlds for s in args.splits}
    kinds = ("observation", "value", "new_value")
    print("| model | world | split | " + " | ".join(f"{k} NLL" for k in kinds)
          + " | new value top-1 | tokens scored |")
    print("|" + "---|" * (len(kinds) + 5))
    for path in [None, *args.models]:
        model, tokenizer = load_model(args.preset, path=path)
        for (world, split), ts in traces.items():
            r = observation_nll(model, tokenizer, ts)
            cells = ["-" if r[f"{k}_nll"] is None else f"{r[f'{k}_nll']:.3f}" for k in kinds]
            top1 = "-" if r["new_value_acc"] is None else f"{r['new_value_acc']:.2f}"
            print(f"| {path or 'base'} | {world} | {split} | " + " | ".join(cells)
                  + f" | {top1} | {r['observation_tokens']} |", flush=True)
        del model


if __name__ == "__main__":
    main()
