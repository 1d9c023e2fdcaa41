"""Where failed math episodes first leave the gold operations. Prints counts; asserts nothing.

    python scripts/math_errors.py runs/v8/eval/sft/math-eval.jsonl [MORE.jsonl ...]

Reads the episodes `evaluate` stored and replays each failed task's gold plan (the math world's
operations, clause by clause). The first calculator call that differs is classified: a wrong
operator for the clause, a lost place (the call belongs to the clause before or after), or a
wrong number; a failure with every call right either answered before the last clause or
computed right and answered wrong. Separately it counts failures where a call's first number was
not the calculator's last result, and how many of those used the model's own predicted keyword
from the step before instead: imagination leaking into the state it acts on.
"""

from __future__ import annotations

import argparse
import collections
import json
import re

EXPRESSION = re.compile(r"^\s*(-?[\d.]+)\s*([-+*/])\s*(-?[\d.]+)\s*$")


def first_deviation(calls: list[str], ops: list[list]) -> str:
    """The kind of the first calculator call that differs from the gold operations `ops`."""
    gold = [(op, float(b)) for op, b in ops]
    for k, expression in enumerate(calls):
        match = EXPRESSION.match(expression)
        if not match:
            return "an expression that is not one operation"
        call = (match.group(2), float(match.group(3)))
        if k >= len(gold):
            return "went on after the last clause"
        if call == gold[k]:
            continue
        if call in gold[max(0, k - 1):k] + gold[k + 1:k + 2]:
            return "lost its place (repeated or skipped a clause)"
        if call[1] == gold[k][1]:
            return "wrong operator, right number"
        return "wrong operator and number" if call[0] != gold[k][0] else "right operator, wrong number"
    return "answered before the last clause" if len(calls) < len(gold) else "right operations, wrong answer"


def stale_total(steps: list[dict]) -> str | None:
    """Whether a calculator call started from a number other than the previous call's result:
    "own keyword" when that number is what the model predicted one step before, "other" otherwise."""
    previous = None
    for step in steps:
        action = step.get("action") or {}
        if action.get("tool") != "calculator":
            continue
        match = EXPRESSION.match(action.get("arguments", {}).get("expression", ""))
        if match and previous is not None and _number(previous.get("observation")) is not None \
                and float(match.group(1)) != _number(previous.get("observation")):
            predicted = {_number(k) for k in previous.get("keywords") or []}
            return "own keyword" if float(match.group(1)) in predicted else "other"
        previous = step
    return None


def _number(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("episodes", nargs="+", help="math-<split>.jsonl files written by evaluate")
    parser.add_argument("--seed", type=int, default=0, help="the world seed the episodes were played in (default: 0)")
    args = parser.parse_args()

    from foresight_lite.envs import make_env

    for path in args.episodes:
        rows = [json.loads(line) for line in open(path)]
        envs, kinds, stale = {}, collections.Counter(), collections.Counter()
        for row in rows:
            if row["success"]:
                continue
            split = row["split"]
            env = envs.setdefault(split, make_env("math", seed=args.seed, split=split))
            env.reset(int(row["task_id"].rsplit("-", 1)[1]))
            calls = [step["action"]["arguments"].get("expression", "") for step in row["steps"]
                     if step["action"] and step["action"].get("tool") == "calculator"]
            kinds[first_deviation(calls, env.task.plan["ops"])] += 1
            stale[stale_total(row["steps"])] += 1
        print(f"{path}: {sum(r['success'] for r in rows)} of {len(rows)} solved; first deviation of each failure:")
        for kind, n in kinds.most_common():
            print(f"  {n:3d}  {kind}")
        print(f"  failures where a call started from a number other than the last result: "
              f"{stale['own keyword'] + stale['other']} ({stale['own keyword']} of them the model's "
              f"own predicted keyword)")


if __name__ == "__main__":
    main()
