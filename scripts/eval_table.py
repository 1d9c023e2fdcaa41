"""Print the figures docs/experiments.md quotes for evaluated runs, one markdown row per world.

    python scripts/eval_table.py runs/v8 runs/v8-plus1 --stage sft
    python scripts/eval_table.py runs/v10-rl --stage rl --split eval
    python scripts/eval_table.py runs/s1-none runs/s1-plain --paired   # two arms, task by task
    python scripts/eval_table.py runs/v11-std runs/v13-fc_rl:rl --paired   # before and after RL (sft, then rl)

What: reads the episodes `evaluate` stored (runs/<run>/eval/<stage>/<world>-<split>.jsonl) and
prints success, success by difficulty (hops for search, operations for math), on search how many
failures answered with fewer searches than the question has hops, format adherence, the stated
confidence (mean, share of steps at 100, AUROC over every step and the first step, ECE) and the
share of predicted keywords that came true.
Why: the README's headline table sets several runs side by side, and the split by difficulty
is where the runs differ (search's wall is the 2-hop question); this puts each figure one
command away instead of in a one-off script. Metrics come from `evaluate.summarize`, so they
match summary.json. `--paired` compares two runs on the same tasks instead: how many tasks only
one of them solved, and the exact McNemar p-value (`evaluate.compare_paired`), so a difference
of a few tasks of 30 is read as what it is. A run written `RUN:STAGE` is read at that stage
instead of `--stage`'s, so one table or pair can hold a model before and after a stage.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from foresight_lite.evaluate import compare_paired, stored_episodes, summarize  # noqa: E402
from foresight_lite.probes import confidence_pairs  # noqa: E402

COLUMNS = ("run", "stage", "world", "split", "success", "by difficulty", "answered early", "format",
           "confidence mean", "at 100", "AUROC all / first", "ECE", "keywords true")


def by_difficulty(episodes: list[dict]) -> str:
    """Solved over played per hop count (search) or operation count (math): '1: 13/13, 2: 7/17'."""
    counts = collections.defaultdict(lambda: [0, 0])
    for e in episodes:
        counts[e["hops"]][0] += bool(e["success"])
        counts[e["hops"]][1] += 1
    return ", ".join(f"{k}: {a}/{b}" for k, (a, b) in sorted(counts.items()))


def answered_early(episodes: list[dict]) -> str:
    """Search: of the failed episodes, how many answered after fewer searches than the question
    has hops (before they could have read the answer): '14 of 15 failed'."""
    failed = [e for e in episodes if not e["success"]]
    early = [e for e in failed if e.get("final_answer") is not None and e["hops"] > sum(
        1 for s in e["steps"] if (s.get("action") or {}).get("tool") == "search")]
    return f"{len(early)} of {len(failed)} failed" if failed else "-"


def _fmt(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_row(episodes: list[dict], **labels) -> dict:
    """One row of the table for one run, stage, world and split."""
    m = summarize(episodes)
    q, _ = confidence_pairs(episodes)  # every stated confidence, in [0, 1]
    solved = sum(bool(e["success"]) for e in episodes)
    return {**labels,
            "success": f"{solved}/{len(episodes)} ({100 * solved / len(episodes):.0f}%)",
            "by difficulty": by_difficulty(episodes),
            "answered early": answered_early(episodes) if labels.get("world") == "search" else "-",
            "format": _fmt(m["format_adherence"]),
            "confidence mean": _fmt(100 * sum(q) / len(q), 1) if q else "-",
            "at 100": _fmt(sum(c == 1 for c in q) / len(q)) if q else "-",
            "AUROC all / first": f"{_fmt(m['auroc_all'])} / {_fmt(m['auroc_first'])}",
            "ECE": _fmt(m["ece_all"]),
            "keywords true": "-" if m["grounding"] is None else f"{100 * m['grounding']:.1f}%"}


def run_and_stage(arg, stage: str) -> tuple[Path, str]:
    """`runs/A:rl` -> (runs/A, "rl"); a run without a stage of its own takes `stage`."""
    run, sep, own = str(arg).rpartition(":")
    return (Path(run), own) if sep and own in ("mt", "sft", "rl") else (Path(arg), stage)


def collect(run_dirs, *, stage: str, split: str, worlds=("search", "math")) -> list[dict]:
    """Rows for every stored evaluation among `run_dirs`; a missing file is skipped, not an error."""
    rows = []
    for arg in run_dirs:
        run, run_stage = run_and_stage(arg, stage)
        for world in worlds:
            episodes = stored_episodes(run, run_stage, world, split)
            if episodes:
                rows.append(table_row(episodes, run=run.name, stage=run_stage, world=world, split=split))
    return rows


PAIRED_COLUMNS = ("world", "split", "tasks", "A solved", "B solved", "only A", "only B", "McNemar exact p")


def paired_rows(run_a, run_b, *, stage: str, split: str, worlds=("search", "math")) -> list[dict]:
    """Per world: the two runs' outcomes on the same tasks, and McNemar's exact test."""
    rows = []
    for world in worlds:
        a, b = (stored_episodes(*run_and_stage(r, stage), world, split) for r in (run_a, run_b))
        if not a or not b:
            continue
        try:
            r = compare_paired(a, b)
        except ValueError as err:
            raise ValueError(f"{world}-{split}: {err}") from None
        rows.append({"world": world, "split": split, "tasks": r["tasks"], "A solved": r["a"], "B solved": r["b"],
                     "only A": r["a_only"], "only B": r["b_only"], "McNemar exact p": f"{r['p_value']:.3g}"})
    return rows


def markdown(rows: list[dict], columns=COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories (runs/<run>); runs/<run>:rl reads that run at "
                                                "stage rl whatever --stage says")
    parser.add_argument("--stage", default="sft", help="which evaluated stage: mt, sft or rl (default sft)")
    parser.add_argument("--split", default="eval", help="eval or ood (default eval)")
    parser.add_argument("--paired", action="store_true",
                        help="two runs (A B) on the same tasks: tasks only one solved, McNemar's exact p")
    args = parser.parse_args(argv)
    if args.paired:
        if len(args.runs) != 2:
            parser.error(f"--paired compares exactly two runs, got {len(args.runs)}")
        try:
            rows = paired_rows(*args.runs, stage=args.stage, split=args.split)
        except ValueError as err:
            parser.error(str(err))
        if not rows:
            parser.error(f"no world has a stored evaluation of stage {args.stage!r} on split {args.split!r} in "
                         f"both runs")
        a, b = (run_and_stage(arg, args.stage) for arg in args.runs)
        print(", ".join(f"{key} = {run.name}" + (f" ({stage})" if stage != args.stage else "")
                        for key, (run, stage) in (("A", a), ("B", b))))
        print(markdown(rows, PAIRED_COLUMNS))
        return 0
    rows = collect(args.runs, stage=args.stage, split=args.split)
    if not rows:
        parser.error(f"no stored evaluation of stage {args.stage!r} on split {args.split!r} in these runs; "
                     f"run `python -m foresight_lite evaluate RUN --stage {args.stage}` first")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
