"""Does a trained model state the two-hop plan in its first turn? Prints counts; asserts nothing.

    python scripts/hop_probe.py runs/v3-plain/sft/model            # smollm2-135m, 20 + 20 questions
    python scripts/hop_probe.py MODEL --n 20 --n-traces 400 --seed 0

Trained-on: 2-hop questions of the clean teacher demonstrations stage 2 imitated (the first
`--n-traces` traces per world, as `train` samples them). Held-out: the 2-hop questions among
the first tasks of the search world's eval split. Greedy first turns; a plan counts when it
names more than one hop (`foresight_lite.probes.states_multi_hop_plan`). Few plans on both
means underfitting; many on trained-on and few on held-out, not generalising.
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a finished stage's model folder, e.g. runs/NAME/sft/model")
    parser.add_argument("--preset", default="smollm2-135m", help="the model's preset (default: smollm2-135m)")
    parser.add_argument("--n", type=int, default=20, help="questions of each kind (default: 20)")
    parser.add_argument("--n-traces", type=int, default=400, help="trajectories stage 2 trained on (default: 400)")
    parser.add_argument("--seed", type=int, default=0, help="world and trace seed (default: 0)")
    args = parser.parse_args()

    from foresight_lite.corpora import is_demonstration
    from foresight_lite.envs import make_env
    from foresight_lite.models import load_model
    from foresight_lite.probes import first_turn_plans, states_multi_hop_plan
    from foresight_lite.stages.midtrain import stage_traces

    model, tokenizer = load_model(args.preset, path=args.model)
    traces = stage_traces(worlds=("search",), n_traces=args.n_traces, seed=args.seed)  # what stage 2 imitated
    trained = list(dict.fromkeys(t["task"]["question"] for t in traces
                                 if is_demonstration(t) and t["task"]["hops"] == 2
                                 and len(t["steps"]) > 1))[:args.n]  # searched, not recalled
    held_out = [t.question for t in make_env("search", seed=args.seed, split="eval").tasks if t.hops == 2][:args.n]
    for name, questions in (("trained-on", trained), ("held-out", held_out)):
        plans = first_turn_plans(model, tokenizer, questions, seed=args.seed)
        stated = sum(states_multi_hop_plan(p) for p in plans)
        print(f"{name:10}  two-hop plan stated in {stated} of {len(questions)} first turns")


if __name__ == "__main__":
    main()
