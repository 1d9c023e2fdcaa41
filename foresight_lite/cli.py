"""Command line: `python -m foresight_lite <command> --help`.

traces    roll the noisy teacher out and annotate every step with z_t (the data of every stage)
train     train one stage of a run: mt (mid-training), sft or rl (GRPO), into runs/<run>/<stage>/
evaluate  play held-out tasks with a run's latest model and score it
run       train one method of the paper's table end to end (reusing finished stages), then evaluate it
reproduce every method x seeds: train, evaluate, write results/ (tables, episodes, an HTML report)
status    every run's stages (done, or how far an unfinished one got) and its evaluations
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

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


def cmd_train(args: argparse.Namespace) -> int:
    from .stages import train_midtraining, train_rl, train_sft

    run_dir = Path(args.runs_dir) / args.run
    if args.stage == "rl" and args.epochs is not None:
        raise ValueError("--epochs applies to stages mt and sft; stage rl counts updates with --max-steps.")
    if args.stage != "rl" and args.training_seed is not None:
        raise ValueError("--training-seed applies to stage rl only; stages mt and sft take --seed.")
    overrides = {k: v for k, v in (("max_steps", args.max_steps), ("num_train_epochs", args.epochs),
                                   ("learning_rate", args.learning_rate),
                                   ("per_device_train_batch_size", args.batch_size)) if v is not None}
    if args.max_length is not None:  # GRPO caps the episode (completion), SFT the whole sequence
        overrides["max_completion_length" if args.stage == "rl" else "max_length"] = args.max_length
    common = dict(preset=args.preset, worlds=tuple(args.worlds), seed=args.seed, smoke=args.smoke,
                  force=args.force, **overrides)
    if args.stage == "rl":
        out = train_rl(run_dir, method=args.method or "fc_rl", init=args.init, training_seed=args.training_seed,
                       **common)
    elif args.method:
        raise ValueError("--method applies to --stage rl only; stages mt and sft take --corpus.")
    elif args.stage == "mt":
        out = train_midtraining(run_dir, corpus=args.corpus or "wm_amt", n_traces=args.n_traces, **common)
    else:
        out = train_sft(run_dir, corpus=args.corpus or "fe_sft", init=args.init, n_traces=args.n_traces, **common)
    summary = json.loads((out / "complete.json").read_text())
    print(f"{args.stage} done: {out}/model | {summary['global_step']} steps, loss {summary['train_loss']:.3f}, "
          f"{summary['seconds']:.0f} s" + (f", {summary['tokens_per_second']:.0f} tokens/s"
                                           if summary.get("tokens_per_second") else ""))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_run

    table = evaluate_run(args.run_dir, stage=args.stage, worlds=args.worlds, splits=args.splits, n=args.n,
                         batch_size=args.batch_size, seed=args.seed, samples=args.samples,
                         temperature=args.temperature)
    for row in table:
        print("  ".join(f"{k}={_fmt(v)}" for k, v in row.items()))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .methods import get_method, method_dir, run_method, run_root

    method = get_method(args.method)
    preset = args.preset or ("tiny" if args.smoke else "smollm2-135m")
    start = time.perf_counter()
    rows = run_method(args.method, runs_dir=args.runs_dir, preset=preset, seed=args.seed, worlds=args.worlds,
                      smoke=args.smoke, n_traces=args.n_traces, splits=args.splits,
                      n=args.n, samples=args.samples, temperature=args.temperature, batch_size=args.batch_size)
    root = run_root(args.runs_dir, preset=preset, seed=args.seed, worlds=args.worlds, smoke=args.smoke)
    print(f"{method.label} ({args.method}): {method_dir(args.method, root)} in {time.perf_counter() - start:.0f} s")
    for row in rows:
        print("  ".join(f"{k}={_fmt(row[k])}" for k in ("world", "split", "episodes", "success", "format_adherence",
                                                         "grounding", "brier_all", "auroc_all", "tokens_per_episode")))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import reproduce

    summary = reproduce(args.out, runs_dir=args.runs_dir, preset=args.preset, seeds=args.seeds,
                        methods=args.methods, worlds=args.worlds, splits=args.splits, n=args.n,
                        samples=args.samples, temperature=args.temperature, smoke=args.smoke,
                        n_traces=args.n_traces, batch_size=args.batch_size,
                        command="python -m foresight_lite " + " ".join(sys.argv[1:]))
    meta = summary["meta"]
    print(f"wrote {args.out}/table.md, summary.json, episodes.jsonl.gz ({meta['episodes']} episodes) and "
          f"report.html in {meta['wall_seconds'] / 60:.1f} min")
    print(Path(args.out, "table.md").read_text())
    return 0


def run_folders(paths) -> list[Path]:
    """The run folders (those holding a stage folder) at or below `paths`; links are not followed,
    so a stage linked into a reproduce tree is listed once, where it lives."""
    import os

    from .stages import STAGES

    found = set()
    for path in paths:
        for folder, subfolders, _ in os.walk(path):
            stages = [Path(folder, s) for s in STAGES if s in subfolders and not Path(folder, s).is_symlink()]
            if any((stage / f).exists() for stage in stages for f in ("stage.json", "metrics.jsonl")):
                found.add(Path(folder))
    return sorted(found)


def status_rows(paths) -> list[dict]:
    """One row per stage folder of every run at or below `paths`."""
    from .stages import STAGES
    from .stages.common import stage_status

    rows = []
    for run in run_folders(paths):
        for stage in STAGES:
            status = stage_status(run / stage)
            if status["state"] == "missing":
                continue
            evaluations = []
            for record in sorted((run / "eval" / stage).glob("*.json")):
                row = json.loads(record.read_text()).get("row", {})
                if row.get("episodes"):
                    evaluations.append(f"{record.stem} {round(row['success'] * row['episodes'])}/{row['episodes']}")
            rows.append({"run": str(run), "stage": stage, **status, "evaluations": evaluations})
    return rows


def cmd_status(args: argparse.Namespace) -> int:
    paths = args.runs or [args.runs_dir]
    missing = [p for p in paths if not Path(p).is_dir()]
    if missing:
        raise FileNotFoundError(f"No folder {missing[0]}; name run folders (e.g. runs/wm) or the folder that "
                                "holds them.")
    rows = status_rows(paths)
    if not rows:
        print(f"No trained or started stages under {', '.join(map(str, paths))}; start one with "
              "python -m foresight_lite train --stage mt --run NAME.")
        return 0
    print("| run | stage | state | updates | training time | evaluated (solved/played) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        state = r["state"]
        if r["idle_minutes"] is not None:
            state += f", last log {r['idle_minutes']:.0f} min ago"
        if r["state"] == "done":
            updates = str(r["updates"] if r["updates"] is not None else "?")
        else:  # what the same train command resumes from
            updates = f"{r['updates']} of {r['of'] or '?'} (checkpoint)" if r["updates"] else "no checkpoint yet"
        minutes = "-" if r["seconds"] is None else f"{r['seconds'] / 60:.1f} min"
        print(f"| {r['run']} | {r['stage']} | {state} | {updates} | {minutes} | {', '.join(r['evaluations']) or '-'} |")
    return 0


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated whole numbers, e.g. 0,1,2; got {text!r}")
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed, e.g. 0,1,2")
    return seeds


def _names(text: str, *, choices, what: str, listing: str) -> list[str]:
    """A comma-separated list of names, each one of `choices` (argparse type helper)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or any(n not in choices for n in names):
        raise argparse.ArgumentTypeError(f"{what} must be a comma-separated list of {listing}")
    return names


def _methods(text: str) -> list[str]:
    from .methods import METHODS

    return _names(text, choices=METHODS, what="methods", listing=", ".join(METHODS))


def _splits(text: str) -> list[str]:
    return _names(text, choices=("eval", "ood"), what="splits", listing="eval and ood")


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _worlds(text: str) -> list[str]:
    from .envs import WORLDS

    return _names(text, choices=WORLDS, what="worlds", listing=", ".join(WORLDS))


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
                    "with z_t: a roadmap of the trajectory's real future with placeholders, the keywords the "
                    "teacher expects to see (its memory or mental arithmetic, sometimes wrong), a gap "
                    "analysis, and q, the Monte Carlo success rate of "
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

    from .models import PRESETS

    p = sub.add_parser(
        "train", help="train one stage (mt, sft or rl) of a run",
        description="Train one stage into RUNS_DIR/RUN/STAGE/ (model, stage.json, metrics.jsonl, complete.json). "
                    "mt: mid-training with the full next-token loss on standard_mt or wm_amt text. sft: SFT with "
                    "an assistant-only loss on sft, fe_sft or state_sft chat episodes, starting from the run's mt "
                    "stage (or --init). rl: GRPO on real multi-turn episodes of the rl split, starting from the "
                    "run's sft stage (or --init); --method rl rewards the outcome (success, a small format term), fc_rl (FC-RL) also the "
                    "calibration and grounding of the world-model span, with span-level credit. A finished stage "
                    "is not retrained (--force redoes it); an interrupted one "
                    "resumes from its last checkpoint.",
        epilog="example: python -m foresight_lite train --stage mt --run wm --corpus wm_amt && "
               "python -m foresight_lite train --stage sft --run wm --corpus fe_sft && "
               "python -m foresight_lite train --stage rl --run wm --method fc_rl")
    p.add_argument("--stage", choices=("mt", "sft", "rl"), required=True, help="which stage to train")
    p.add_argument("--run", required=True, help="run name: outputs go to RUNS_DIR/RUN/STAGE/")
    p.add_argument("--corpus", choices=("standard_mt", "wm_amt", "sft", "fe_sft", "state_sft"),
                   help="training data (default: wm_amt for mt, fe_sft for sft)")
    p.add_argument("--method", choices=("rl", "fc_rl"),
                   help="rl only: rl (outcome reward: success and format) or fc_rl (FC-RL: also calibration and "
                        "grounding, span-level credit) (default: fc_rl)")
    p.add_argument("--preset", choices=list(PRESETS), default="smollm2-135m",
                   help="model preset (default: smollm2-135m; tiny for a seconds-long check of the mechanics)")
    p.add_argument("--init", help="sft and rl: a finished stage folder to start from, or 'base' for the preset's "
                                  "own weights (default: this run's mt stage for sft, its sft stage for rl)")
    p.add_argument("--worlds", type=_worlds, default=["search", "math"], help="comma-separated (default: search,math)")
    p.add_argument("--n-traces", type=_positive, default=400,
                   help="mt and sft: teacher trajectories per world (default: 400)")
    p.add_argument("--seed", type=int, default=0, help="seed of the world, the traces and training (default: 0)")
    p.add_argument("--training-seed", type=int,
                   help="rl only: seed of the task order and the sampled episodes, to repeat RL from one model "
                        "on the same world (default: --seed)")
    p.add_argument("--max-steps", type=_positive,
                   help="stop after this many optimizer steps (stage rl: default 8 updates, 2 with --smoke)")
    p.add_argument("--epochs", type=_positive, help="mt and sft: passes over the trajectories (default: 1 for mt; "
                                                    "2 for sft, 1 on the GPU presets)")
    p.add_argument("--learning-rate", type=float, help="override the recipe's learning rate")
    p.add_argument("--batch-size", type=_positive,
                   help="sequences per forward pass (default: the recipe's); accumulation follows, so an update "
                        "keeps its sequences (8 on the CPU presets) and trains the same: smaller saves memory; "
                        "it must divide them")
    p.add_argument("--max-length", type=_positive, help="override the recipe's longest sequence in tokens "
                                                        "(longer episodes are cut)")
    p.add_argument("--runs-dir", default="runs", help="where runs live (default: runs)")
    p.add_argument("--smoke", action="store_true", help="a few tiny steps (3 for mt/sft, 2 for rl): checks the "
                                                         "mechanics in seconds")
    p.add_argument("--force", action="store_true", help="retrain even if the stage is finished")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate", help="score a run's model on held-out tasks",
        description="Play held-out tasks (eval: new compositions; ood: unseen entities, longer chains) with the "
                    "latest finished stage of RUN_DIR (or --stage), batched and greedy, and write per-episode "
                    "records and a summary to RUN_DIR/eval/STAGE/.",
        epilog="example: python -m foresight_lite evaluate runs/wm --n 200")
    p.add_argument("run_dir", help="a run folder, e.g. runs/wm")
    p.add_argument("--stage", choices=("mt", "sft", "rl"), help="which stage's model (default: the latest finished)")
    p.add_argument("--worlds", type=_worlds, default=["search", "math"], help="comma-separated (default: search,math)")
    p.add_argument("--splits", type=lambda t: [s for s in t.split(",") if s], default=["eval", "ood"],
                   help="comma-separated, of eval and ood (default: eval,ood)")
    p.add_argument("--n", type=_positive, help="tasks per world and split (default: all)")
    p.add_argument("--batch-size", type=_positive, default=32, help="episodes generated together (default: 32)")
    p.add_argument("--seed", type=int, help="world seed (default: the run's)")
    _sampling_arguments(p)
    p.set_defaults(func=cmd_evaluate)

    from .methods import METHODS

    table = "; ".join(f"{name}: {m.label}" for name, m in METHODS.items())
    p = sub.add_parser(
        "run", help="train one method end to end, then evaluate it",
        description="Train every stage of one method of the paper's table that is not trained yet, then play "
                    "held-out tasks with its final model. Stages shared between methods live in one folder tree, "
                    "RUNS_DIR/<preset>-s<seed>[-<worlds>][-smoke]/mt-<corpus>/sft-<corpus>/rl-<method>/ "
                    "(<worlds> only when not both), so a method that begins like one already trained reuses "
                    "those stages. Methods: " + table + ".",
        epilog="example: python -m foresight_lite run --method full --preset tiny --smoke")
    p.add_argument("--method", choices=list(METHODS), required=True, help="which row of the table")
    p.add_argument("--seed", type=int, default=0, help="seed of the world, the traces and training (default: 0)")
    _shared_run_arguments(p, n_help="tasks per world and split (default: 200; 3 with --smoke)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "reproduce", help="every method x seeds: train, evaluate, write the results table and report",
        description="Train and evaluate every method (or --methods) for every seed, training each shared stage "
                    "once, then write OUT/table.md (mean ± Student-t 95% half-width over seeds), "
                    "OUT/summary.json, OUT/episodes.jsonl.gz (every episode) and OUT/report.html (self-contained "
                    "plotly figures). Run it again after an interruption: finished stages and evaluations are "
                    "skipped.",
        epilog="example: python -m foresight_lite reproduce --smoke --out /tmp/results")
    p.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="comma-separated (default: 0,1,2)")
    p.add_argument("--methods", type=_methods, help="comma-separated subset of the methods (default: all)")
    p.add_argument("--out", default="results", help="where the results go (default: results)")
    _shared_run_arguments(p, n_help="tasks per world and split (default: 200; 3 with --smoke)")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser(
        "status", help="every run's stages (done, or how far an unfinished one got) and its evaluations",
        description="List every stage folder of the runs named (or of every run below --runs-dir): done, or "
                    "unfinished with its last checkpoint (the same train command resumes from there) and the "
                    "minutes since its last log, the training time, and the evaluations stored for it.",
        epilog="example: python -m foresight_lite status   # or: status runs/wm runs/std")
    p.add_argument("runs", nargs="*", help="run folders, or folders holding them (default: --runs-dir)")
    p.add_argument("--runs-dir", default="runs", help="where runs live (default: runs)")
    p.set_defaults(func=cmd_status)
    return parser


def _sampling_arguments(p: argparse.ArgumentParser) -> None:
    from .evaluate import SAMPLE_TEMPERATURE

    p.add_argument("--samples", type=_positive, default=1,
                   help="episodes per task, for mean@k and pass@k (default: 1, greedy)")
    p.add_argument("--temperature", type=float,
                   help=f"sampling temperature (default: 0, greedy, for one sample; {SAMPLE_TEMPERATURE} for more)")


def _shared_run_arguments(p: argparse.ArgumentParser, *, n_help: str) -> None:
    from .models import PRESETS

    p.add_argument("--preset", choices=list(PRESETS),
                   help="model preset (default: smollm2-135m; tiny with --smoke)")
    p.add_argument("--worlds", type=_worlds, default=["search", "math"], help="comma-separated (default: search,math)")
    p.add_argument("--splits", type=_splits, default=["eval", "ood"], help="comma-separated (default: eval,ood)")
    p.add_argument("--n", type=_positive, help=n_help)
    p.add_argument("--n-traces", type=_positive, help="teacher trajectories per world for stages 1-2 "
                                                      "(default: 400; 8 with --smoke)")
    _sampling_arguments(p)
    p.add_argument("--batch-size", type=_positive, default=32, help="episodes generated together (default: 32)")
    p.add_argument("--runs-dir", default="runs", help="where the stage tree lives (default: runs)")
    p.add_argument("--smoke", action="store_true",
                   help="3 training steps per stage and a few short episodes: checks the mechanics in minutes")


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
