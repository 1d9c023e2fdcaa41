"""scripts/math_errors.py: the first deviation from a task's gold operations, and the script end to end."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from foresight_lite.envs import make_env

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("math_errors", ROOT / "scripts" / "math_errors.py")
math_errors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(math_errors)
OPS = [["*", 4], ["/", 3], ["+", 86]]


def test_first_deviation_kinds():
    kind = math_errors.first_deviation
    assert kind(["39 * 4", "156 * 3"], OPS) == "wrong operator, right number"
    assert kind(["39 * 4", "156 - 7"], OPS) == "wrong operator and number"
    assert kind(["39 * 4", "156 / 2"], OPS) == "right operator, wrong number"
    assert kind(["39 * 4", "156 + 86"], OPS) == "lost its place (repeated or skipped a clause)"
    assert kind(["39 * 4", "156 * 4"], OPS) == "lost its place (repeated or skipped a clause)"
    assert kind(["39 * 4", "156 / 3"], OPS) == "answered before the last clause"
    assert kind(["39 * 4", "156 / 3", "52 + 86"], OPS) == "right operations, wrong answer"
    assert kind(["39 * 4", "156 / 3", "52 + 86", "138 * 2"], OPS) == "went on after the last clause"
    assert kind(["(39 * 4) / 3"], OPS) == "an expression that is not one operation"


def calc(expression, observation, keywords=()):
    return {"action": {"tool": "calculator", "arguments": {"expression": expression}},
            "observation": observation, "keywords": list(keywords)}


def test_stale_total_tells_own_prediction_from_other_numbers():
    assert math_errors.stale_total([calc("389 - 30", "359", ["271"]), calc("359 * 4", "1436")]) is None
    assert math_errors.stale_total([calc("389 - 30", "359", ["271"]), calc("271 - 4", "267")]) == "own keyword"
    assert math_errors.stale_total([calc("389 - 30", "359", ["271"]), calc("300 * 4", "1200")]) == "other"
    # an unparsable observation or expression is skipped, never an exception
    assert math_errors.stale_total([calc("389 - 30", "error"), calc("7 * 4", "28")]) is None
    assert math_errors.stale_total([calc("(1 + 2) * 3", "9"), {"action": {"answer": "9"}}]) is None


def test_script_reads_stored_episodes(tmp_path):
    env = make_env("math", seed=0, split="eval")
    env.reset(0)
    start, (op, b) = env.task.plan["start"], env.task.plan["ops"][0]
    wrong = {"*": "/", "/": "*", "+": "-", "-": "+"}[op]
    steps = [{"action": {"tool": "calculator", "arguments": {"expression": f"{start} {wrong} {b}"}}},
             {"action": {"answer": "1"}}]
    rows = [{"task_id": "math-0-eval-00000", "split": "eval", "success": False, "steps": steps},
            {"task_id": "math-0-eval-00001", "split": "eval", "success": True, "steps": []}]
    path = tmp_path / "math-eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = subprocess.run([sys.executable, str(ROOT / "scripts/math_errors.py"), str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert "1 of 2 solved" in out and "1  wrong operator, right number" in out
    assert "other than the last result: 0" in out
