"""Teacher rollouts annotated with z_t, a foresight block for every step.

What: `generate_traces(world, n=..., seed=...)` rolls the noisy teacher out on training tasks
and, for every step t, builds z_t from what really happened after s_t and what the teacher
expected:
  imaginary  the rest of the trajectory as a roadmap, future entities or numbers replaced by
             placeholders ([ORG1], [CITY1], [N1], ...): the *shape* of the future, not its facts
             (math: the next computation, then "..." for any further ones, then the answer);
  keywords   the values the teacher *expects* to see on the answer path, not yet visible at s_t:
             its memory of each fact (right with the chance of the fact's subject's popularity,
             else a plausible wrong value of the same relation) or its mental arithmetic of the
             next calculator result (right 3 times in 5); at an answer step, the value it answers.
             They are imagined, not copied from the real future: a demonstration whose first
             keyword were always the final answer teaches the student to answer its own keyword
             instead of reading the passage (measured with teacher version 3: 24 of 26 FE-SFT
             failures). Here the passage wins whenever the two disagree;
  analysis   what is known at s_t and (search) which hops are still missing; math names no
             remaining operations, the question's next clause does (teacher version 4's list
             of them was copied by FE-SFT students instead of reading the clause);
  q          a textual Q-value: the Monte Carlo success rate of taking this trajectory's own
             action a_t in s_t and then continuing with the teacher (K fresh continuations);
             for an answer, the teacher's accuracy when it answers in s_t (K re-sampled answers).
q conditions on a_t because z_t announces the plan that a_t starts (the roadmap), so the
confidence is about that plan: a guess or an early answer gets the q it deserves, and an answer
recalled from memory gets the teacher's recall accuracy, not its lucky outcome. It describes
the *teacher* policy, the behaviour policy that wrote these trajectories and that SFT imitates,
because no student exists yet when the data are made; a student that acts differently is
calibrated to itself later, by FC-RL's calibration reward.
How: `python -m foresight_lite traces --env search --n 200 --seed 0 --out runs/traces`.
Deterministic: each trajectory and each Monte Carlo continuation has its own seeded stream.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from .envs import Action, Env, make_env
from .envs.base import rng_for
from .envs.calculator import calculate
from .teacher import DEFAULT_NOISE, SearchTeacher, make_teacher, relation_phrase, resolve_chain

DEFAULT_K = 8
MAX_KEYWORDS = 3
MENTAL_ARITHMETIC_RIGHT = 0.6  # chance the teacher imagines one calculator result right


def generate_traces(world: str, *, n: int, seed: int = 0, split: str = "train", k: int = DEFAULT_K,
                    noise: float = DEFAULT_NOISE, progress: bool = True) -> list[dict]:
    """`n` annotated teacher trajectories on tasks of `split`, sampled by popularity."""
    env = make_env(world, seed=seed, split=split)
    teacher = make_teacher(world, noise=noise)
    tasks = sample_tasks(env, n=n, seed=seed)
    return [annotate(env, teacher, task, seed=seed, index=i, k=k, noise=noise)
            for i, task in enumerate(tqdm(tasks, desc=f"{world} traces", disable=not progress))]


def sample_tasks(env: Env, *, n: int, seed: int) -> list:
    """Tasks drawn with replacement; in the search world popular entities come up more often,
    so their facts are common in mid-training data and tail facts rare."""
    weights = [0.15 + t.plan.get("popularity", 1.0) for t in env.tasks]
    return rng_for("sample-tasks", env.name, seed).choices(env.tasks, weights=weights, k=n)


def rollout(env: Env, teacher, task, rng, prefix: list[Action] = ()) -> list[dict]:
    """Continue the teacher from the state `prefix` reaches; returns the steps it took."""
    env.replay(task, list(prefix))
    steps = []
    while not env.done:
        move = teacher.act(env, rng)
        obs = env.step(move.action)
        steps.append({"action": move.action.to_dict(), "think": move.think, "slip": move.slip,
                      "observation": None if move.action.is_answer else obs.text})
    return steps


def mc_success(env: Env, teacher, task, prefix: list[Action], *, k: int, key: tuple) -> float:
    """q for the last action of `prefix`, from `k` seeded samples of the teacher.

    A tool call: the share of teacher continuations after it that succeed.
    An answer: the teacher's accuracy when it answers in that state (up to `k` answers
    re-sampled there), not the realised outcome, which would make every kept answer 100.
    """
    if prefix and prefix[-1].is_answer:
        env.replay(task, list(prefix[:-1]))
        verdicts = []
        for j in range(4 * k):
            action = teacher.act(env, rng_for("mc", *key, j)).action
            if action.is_answer:
                verdicts.append(env.is_correct(action.answer, task.answer))
                if len(verdicts) == k:
                    break
        if verdicts:
            return sum(verdicts) / len(verdicts)
        return float(env.is_correct(prefix[-1].answer, task.answer))
    wins = 0
    for j in range(k):
        rollout(env, teacher, task, rng_for("mc", *key, j), prefix)
        wins += env.success
    return wins / k


def annotate(env: Env, teacher, task, *, seed: int, index: int, k: int = DEFAULT_K,
             noise: float = DEFAULT_NOISE) -> dict:
    """One trajectory with z_t for each of its steps."""
    steps = rollout(env, teacher, task, rng_for("trace", env.name, seed, index))
    success, final = env.success, env.final_answer
    actions = [Action.from_dict(s["action"]) for s in steps]
    for t, step in enumerate(steps):
        env.replay(task, actions[:t])
        step["z"] = foresight(env, steps[t:], rng_for("imagine", env.name, seed, index))
        step["z"]["q"] = mc_success(env, teacher, task, actions[:t + 1], k=k, key=(env.name, seed, index, t))
    return {"trace_id": f"{env.name}-{seed}-{env.split}-{index:06d}", "world": env.name, "seed": seed,
            "noise": noise, "k": k, "task": task.to_dict(), "steps": steps,
            "final_answer": final, "success": success}


def foresight(env: Env, future: list[dict], rng) -> dict:
    """z_t (without q) for the state `env` is in, from the `future` steps that really followed;
    `rng` draws what the teacher imagines (one stream per trajectory)."""
    task = env.task
    state_text = " ".join([task.question] + [obs.text for _, obs in env.history])
    if env.name == "search":
        targets = task.plan["chain"][1:]  # bridge entities and the answer
        analysis = _search_analysis(env)
    else:
        targets = [str(v) for v in task.plan["values"]]
        analysis = _math_analysis(env)
    targets = list(dict.fromkeys(targets))  # a value can repeat along a math chain
    masker = _Masker(state_text, env)
    roadmap = []
    for step in future:
        action = Action.from_dict(step["action"])
        if action.is_answer:
            roadmap.append(f"answer {masker(action.answer)}")
        elif env.name == "math" and roadmap:
            # only the next computation is spelled out: a full list of operations, read off the
            # question in one go, was a plan the student then followed even where the clause it
            # quoted said otherwise (teacher version 4: 10 of 19 FE-SFT math failures)
            if roadmap[-1] != "...":
                roadmap.append("...")
        elif env.name == "math":
            expression, result = action.arguments.get("expression", ""), step["observation"]
            shown = masker(result) if not result.startswith("Error") else "error"
            roadmap.append(f"compute {masker.expression(expression)} = {shown}")
        else:
            revealed = [v for v in targets if _mentions(step["observation"], v) and not _mentions(state_text, v)]
            roadmap.append(f"search {masker(action.arguments.get('query', ''))}")
            roadmap.append("find " + ", ".join(masker(v) for v in revealed) if revealed else "find nothing new")
        state_text += " " + (step["observation"] or "")
    first = Action.from_dict(future[0]["action"])
    if first.is_answer:
        keywords = [first.answer]
    else:
        imagine = _imagine_search if env.name == "search" else _imagine_math
        keywords = [v for v in imagine(env, rng) if not _mentions(masker.state_text, v)]
    return {"imaginary": " -> ".join(roadmap), "keywords": list(dict.fromkeys(keywords))[:MAX_KEYWORDS],
            "analysis": analysis}


def _imagine_search(env: Env, rng) -> list[str]:
    """The rest of the chain as the teacher remembers it: each fact right with the chance of its
    subject's popularity (popular facts are common in the data), else another value of the same
    relation. A wrong bridge is followed on, so one slip can make the rest wrong too."""
    world, path = env.world, env.task.plan["path"]
    chain, _ = resolve_chain(env)
    subject, imagined = chain[-1], []
    for rel in path[len(chain) - 1:]:
        entity = world.entities.get(subject)
        right = entity.fact(rel) if entity else None
        if right is not None and rng.random() < entity.popularity:
            value = right
        else:
            value = SearchTeacher._wrong_value(world, [rel], right, rng)
        imagined.append(value)
        subject = value
    return imagined


def _imagine_math(env: Env, rng) -> list[str]:
    """The next calculator result as the teacher works it out in its head, from the last total it
    has seen. Only the next one: later totals would need every remaining operation read off the
    question at once, a plan the student could then copy instead of reading each clause."""
    plan = env.task.plan
    results = [obs.text for a, obs in env.history if not a.is_answer and not obs.error]
    if len(results) >= len(plan["ops"]):
        return []
    op, operand = plan["ops"][len(results)]
    value = calculate(f"{results[-1] if results else plan['start']} {op} {operand}")
    if value.startswith("Error"):
        return []
    return [value if rng.random() < MENTAL_ARITHMETIC_RIGHT else _off_by(value, rng)]


def _off_by(value: str, rng) -> str:
    number = float(value)
    slipped = number + rng.choice([-10, -2, -1, 1, 2, 10]) if number == int(number) else round(number * 1.1, 2)
    return str(int(slipped)) if slipped == int(slipped) else str(slipped)


def _mentions(text: str | None, value: str) -> bool:
    return bool(text) and re.search(rf"(?<![\w.]){re.escape(value)}(?![\w]|\.\d)", text) is not None


class _Masker:
    """Replaces values not yet visible at s_t with typed placeholders, numbered in order."""

    def __init__(self, state_text: str, env: Env):
        self.state_text, self.env, self.names = state_text, env, {}

    def __call__(self, value: str) -> str:
        value = str(value)
        if _mentions(self.state_text, value):
            return value
        if value not in self.names:
            kind = self._kind(value)
            n = sum(1 for v in self.names.values() if v.startswith(f"[{kind}"))
            self.names[value] = f"[{kind}{n + 1}]"
        return self.names[value]

    def expression(self, expr: str) -> str:
        return re.sub(r"\d+(?:\.\d+)?", lambda m: self(m.group()), expr)

    def _kind(self, value: str) -> str:
        if self.env.name == "math" or value.isdigit():
            return "N" if self.env.name == "math" else "YEAR"
        entity = self.env.world.entities.get(value)
        return entity.kind.upper() if entity else "VALUE"


def _search_analysis(env: Env) -> str:
    chain, _ = resolve_chain(env)
    path = env.task.plan["path"]
    known = [f"{relation_phrase(r, chain[i])} is {chain[i + 1]}" for i, r in enumerate(path[:len(chain) - 1])]
    head = ("Known: " + "; ".join(known) + ". ") if known else "Nothing found yet. "
    if len(chain) == len(path) + 1:
        return head + "Nothing is missing: the answer is in the passages."
    missing = [relation_phrase(path[len(chain) - 1], chain[-1])]
    missing += [f"then {relation_phrase(r, 'it')}" for r in path[len(chain):]]
    return head + "Missing: " + ", ".join(missing) + "."


def _math_analysis(env: Env) -> str:
    """What is known; what is missing is whatever the question's next clause says (the policy
    span quotes it). No list of the remaining operations: the student copied its own."""
    results = [obs.text for a, obs in env.history if not a.is_answer and not obs.error]
    current = results[-1] if results else str(env.task.plan["start"])
    done = f"{len(results)} operation" + ("" if len(results) == 1 else "s")
    return f"Done {done}; the running total is {current}."


def write_traces(traces: list[dict], out_dir: str | Path, *, meta: dict) -> Path:
    """traces.jsonl and meta.json, each written atomically (a temp file, then a rename)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(t, sort_keys=True, ensure_ascii=False) + "\n" for t in traces)
    atomic_write(out / "traces.jsonl", lines)
    atomic_write(out / "meta.json", json.dumps(meta, sort_keys=True, indent=2) + "\n")
    return out / "traces.jsonl"


def read_traces(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "traces.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"No traces at {path}; make them with `python -m foresight_lite traces --out {path.parent}`.")
    return read_jsonl(path)


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines file (traces, episodes, metrics), blank lines skipped."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
