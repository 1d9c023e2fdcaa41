"""The math world: multi-step arithmetic word problems solved with a sandboxed calculator.

What: seeded word problems from varied story templates, 2 to 5 operations in distribution and
6 to 7 out of distribution, every intermediate a positive whole number; one tool,
`calculator(expression)`; success is an exact numeric match.
Why: the paper's math agent writes code-tool calls; here the future is the chain of
intermediate results, so a predicted keyword (a number) can be checked against what the
calculator really returned.
How: `make_env("math", seed=0, split="eval")`, then `env.reset(0)` and
`env.step(Action.call("calculator", expression="12 * 7"))`.
Splits are assigned by a stable hash of the problem's arithmetic, so no problem is in two splits.
"""

from __future__ import annotations

from .base import Env, Observation, Task, rng_for, stable_hash, tool_schema
from .calculator import calculate, evaluate

CALCULATOR_TOOL = tool_schema(
    "calculator",
    "Evaluate an arithmetic expression exactly (numbers, + - * / // % ** and parentheses).",
    expression="the arithmetic to evaluate, e.g. '84 - 15'",
)
SYSTEM_PROMPT = (
    "You solve arithmetic word problems. Use the calculator tool for every operation; "
    "when you know the result, reply with <answer>...</answer> holding just the number."
)
SPLIT_SIZES = {"train": 3000, "rl": 600, "eval": 300, "ood": 300}
SPLIT_SHARES = {"train": 0.70, "rl": 0.15, "eval": 0.15}  # hash buckets of 2-5 step problems
OPS_RANGE = {"train": (2, 5), "rl": (2, 5), "eval": (2, 5), "ood": (6, 7)}

# (subject, pronoun, unit, container) stories; the operations are phrased for each
STORIES = [
    ("Mira", "she", "apples", "crates"), ("Tomas", "he", "coins", "jars"),
    ("the bakery", "it", "cookies", "trays"), ("the library", "it", "books", "shelves"),
    ("Ada", "she", "stamps", "albums"), ("the farm", "it", "eggs", "cartons"),
    ("Kofi", "he", "marbles", "bags"), ("the club", "it", "tickets", "booklets"),
    ("Lena", "she", "beads", "boxes"), ("the workshop", "it", "bolts", "bins"),
]
START = ["{S} has {a} {unit}.", "{S} starts the week with {a} {unit}.",
         "At first, {S} owns {a} {unit}."]
START_PRODUCT = ["{S} has {a} {container} with {b} {unit} in each.",
                 "{S} fills {a} {container}, each holding {b} {unit}."]
PHRASES = {
    "+": ["Then {p} gets {b} more {unit}.", "Later, {b} more {unit} arrive.",
          "A friend adds {b} {unit}."],
    "-": ["Then {p} gives away {b} {unit}.", "Next, {b} {unit} are sold.",
          "Sadly, {b} {unit} are lost."],
    "*": ["Then the number of {unit} is multiplied by {b}.", "Next, the stock of {unit} grows {b}-fold.",
          "Every one of the {unit} is traded for {b} new ones."],
    "/": ["Then the {unit} are split evenly into {b} groups and only one group is kept.",
          "Next, {p} shares them equally among {b} people, keeping one share.",
          "Then a storm spoils most of them; only 1/{b} of the {unit} is saved."],
}
QUESTION = ["How many {unit} are there now?", "How many {unit} does {S} have in the end?",
            "How many {unit} are left at the end?"]


def make_math_env(*, seed: int = 0, split: str = "train") -> "MathEnv":
    return MathEnv(seed=seed, split=split, tasks=math_tasks(seed, split))


class MathEnv(Env):
    name = "math"
    tools = [CALCULATOR_TOOL]
    system_prompt = SYSTEM_PROMPT

    def _tool(self, name: str, arguments: dict) -> Observation:
        text = calculate(arguments.get("expression", ""))
        return Observation(text, error=text.startswith("Error"))

    @staticmethod
    def is_correct(prediction: str | None, gold: str) -> bool:
        """Exact numeric match ("1,200", "1200.0" and "1200 cookies" all match 1200)."""
        if prediction is None:
            return False
        words = str(prediction).replace(",", "").split()
        for word in words[:3]:
            try:
                return evaluate(word.strip(".$")) == evaluate(gold)
            except ValueError:
                continue
        return False


def split_of(key: tuple, seed: int) -> str:
    u = stable_hash("math-split", seed, key) / 2**64
    return "train" if u < 0.70 else "rl" if u < 0.85 else "eval"


def math_tasks(seed: int, split: str, n: int | None = None) -> list[Task]:
    """The first `n` problems of a split (default SPLIT_SIZES[split]), in a fixed order."""
    n = SPLIT_SIZES[split] if n is None else n
    lo, hi = OPS_RANGE[split]
    tasks, keys, i = [], set(), 0
    while len(tasks) < n:
        rng = rng_for("math-task", seed, split == "ood", i)
        i += 1
        problem = _problem(rng, rng.randint(lo, hi))
        key = (problem["start"], tuple(map(tuple, problem["ops"])))
        if key in keys or (split != "ood" and split_of(key, seed) != split):
            continue
        keys.add(key)
        tasks.append(Task(
            task_id=f"math-{seed}-{split}-{len(tasks):05d}", world="math", split=split,
            question=problem["question"], answer=str(problem["values"][-1]),
            hops=len(problem["ops"]), plan=problem))
    return tasks


def _problem(rng, n_ops: int) -> dict:
    """A word problem with `n_ops` operations whose intermediates stay positive whole numbers."""
    subject, pronoun, unit, container = rng.choice(STORIES)
    fill = dict(S=subject, p=pronoun, unit=unit, container=container)
    ops, sentences = [], []
    if rng.random() < 0.5:  # the first operation hides in the opening sentence
        a, b = rng.randint(3, 40), rng.randint(3, 25)
        sentences.append(rng.choice(START_PRODUCT).format(a=a, b=b, **fill))
        start, ops = a, [["*", b]]
    else:
        start = rng.randint(20, 400)
        sentences.append(rng.choice(START).format(a=start, **fill))
    value = start * ops[0][1] if ops else start
    values = [value] if ops else []
    while len(ops) < n_ops:
        op, b = _next_op(rng, value)
        value = {"+": value + b, "-": value - b, "*": value * b, "/": value // b}[op]
        ops.append([op, b])
        values.append(value)
        sentences.append(rng.choice(PHRASES[op]).format(b=b, **fill))
    sentences.append(rng.choice(QUESTION).format(**fill))
    sentences = [s[0].upper() + s[1:] for s in sentences]
    # clauses[i] is the sentence that states ops[i] (the opening one may hold the first product);
    # the teacher quotes it, so a student finds each step by reading on, not by counting ahead
    clauses = sentences[:-1] if len(sentences) - 1 == len(ops) else sentences[1:-1]
    return {"start": start, "ops": ops, "values": values, "question": " ".join(sentences),
            "clauses": clauses, "ask": sentences[-1]}


def _next_op(rng, value: int) -> tuple[str, int]:
    divisors = [d for d in range(2, 13) if value % d == 0 and value // d >= 2]
    choices = ["+", "-"] + (["*"] if value < 5000 else []) + (["/"] * 2 if divisors else [])
    op = rng.choice(choices)
    if op == "+":
        return op, rng.randint(5, 250)
    if op == "-":
        return (op, rng.randint(1, value - 1)) if value > 2 else ("+", rng.randint(5, 250))
    if op == "*":
        return op, rng.randint(2, 9)
    return op, rng.choice(divisors)
