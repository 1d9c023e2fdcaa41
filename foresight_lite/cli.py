"""Command line: `python -m foresight_lite <command> --help`.

traces   roll the noisy teacher out and annotate every step with z_t (stage-0 data)
"""

from __future__ import annotations

import argparse
import sys
import time

from . import __version__


def summarize_traces(traces: list[dict]) -> dict:
    """Teacher success and how well q (Monte Carlo, per step) ranks the real outcomes."""
    from .metrics import auroc, brier, ece

    steps = [(s["z"]["q"], t["success"]) for t in traces for s in t["steps"]]
    first = [(t["steps"][0]["z"]["q"], t["success"]) for t in traces]
    out = {"n_traces": len(traces), "n_steps": len(steps),
           "teacher_success": round(sum(t["success"] for t in traces) / max(1, len(traces)), 4)}
    for name, pairs in (("all_steps", steps), ("first_step", first)):
        q, y = [p[0] for p in pairs], [p[1] for p in pairs]
        for metric, fn in (("auroc", auroc), ("brier", brier), ("ece", ece)):
            value = fn(q, y) if pairs else None
            out[f"q_{metric}_{name}"] = None if value is None else round(value, 4)
    return out


def cmd_traces(args: argparse.Namespace) -> int:
    from .traces import generate_traces, write_traces

    start = time.perf_counter()
    traces = generate_traces(args.env, n=args.n, seed=args.seed, split=args.split, k=args.k,
                             noise=args.noise, progress=not args.quiet)
    summary = summarize_traces(traces)
    meta = {"env": args.env, "n": args.n, "seed": args.seed, "split": args.split, "k": args.k,
            "noise": args.noise, "version": __version__, **summary}
    path = write_traces(traces, args.out, meta=meta)
    print(f"wrote {len(traces)} traces to {path} in {time.perf_counter() - start:.1f} s")
    print(f"teacher success {summary['teacher_success']:.1%}; q vs outcome: "
          f"AUROC {summary['q_auroc_all_steps']} (all steps), {summary['q_auroc_first_step']} (first step); "
          f"Brier {summary['q_brier_all_steps']}")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .envs import SPLITS, WORLDS
    from .teacher import DEFAULT_NOISE
    from .traces import DEFAULT_K

    parser = argparse.ArgumentParser(
        prog="python -m foresight_lite",
        description="foresight-lite: train an agent to imagine before it acts "
                    "(a miniature of 'Internalizing the Future', arXiv 2606.27483).")
    parser.add_argument("--version", action="version", version=f"foresight-lite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "traces", help="generate annotated teacher trajectories",
        description="Roll the scripted, noisy teacher out on training tasks and annotate every step "
                    "with z_t built from the trajectory's real future: a placeholder roadmap, keywords "
                    "that really turn up later, a gap analysis, and q, the Monte Carlo success rate of "
                    "the teacher's plan from that state. Writes OUT/traces.jsonl and OUT/meta.json; the "
                    "same arguments give byte-identical files.",
        epilog="example: python -m foresight_lite traces --env search --n 200 --seed 0 --out runs/traces/search")
    p.add_argument("--env", choices=WORLDS, default="search", help="which world (default: search)")
    p.add_argument("--n", type=_positive, default=200, help="number of trajectories (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="world and sampling seed (default: 0)")
    p.add_argument("--split", choices=SPLITS, default="train", help="task split to draw from (default: train)")
    p.add_argument("--k", type=_positive, default=DEFAULT_K,
                   help=f"Monte Carlo continuations per step for q (default: {DEFAULT_K})")
    p.add_argument("--noise", type=_probability, default=DEFAULT_NOISE,
                   help=f"teacher noise level, 0 to 1 (default: {DEFAULT_NOISE})")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_traces)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
