"""Scripted, noisy teacher policies: the source of every training trajectory.

What: `make_teacher(world, noise=...)` returns a policy whose `act(env, rng)` reads the episode
so far (`env.task`, `env.history`) and returns the next action with a one-line rationale.
Why: the paper mid-trains on cheap machine-made agent trajectories. A perfect teacher would
make every confidence 100; this one makes realistic mistakes, so outcomes vary by state and a
success estimate has something to track:
  search: answers from memory (right for popular entities, guesses for the rest), searches with
          a bad query, answers with the bridge entity before the last hop, reads the wrong fact;
  math:   slips an operator or a digit, does a step in its head (often wrongly), stops early.
Every decision is a function of the visible state and `rng`, so a rollout can be continued from
any prefix: that is how traces estimate q (Monte Carlo success from s_t).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .envs.base import Action, Env
from .envs.calculator import calculate

DEFAULT_NOISE = 0.3
# Bumped whenever the teacher's actions or words change. Stages 1-2 record it in stage.json, and
# `run` / `reproduce` refuse to reuse a stage trained on another version's trajectories.
TEACHER_VERSION = 5
MAX_SEARCHES = 5  # the teacher gives up and answers after this many searches


@dataclass(frozen=True)
class TeacherStep:
    action: Action
    think: str
    slip: str | None = None  # which mistake, if any, the teacher made on purpose


def make_teacher(world: str, *, noise: float = DEFAULT_NOISE):
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be between 0 and 1, got {noise}.")
    if world == "search":
        return SearchTeacher(noise=noise)
    if world == "math":
        return MathTeacher(noise=noise)
    raise ValueError(f"Unknown world {world!r}; choose one of: search, math.")


def resolve_chain(env: Env) -> tuple[list[str], dict]:
    """Follow the task's relation path through the facts seen so far (search world).

    Returns the resolved prefix of the chain (start entity first) and the known facts.
    """
    known = {(s, r): v for _, obs in env.history for s, r, v in obs.facts}
    chain = [env.task.plan["start"]]
    for rel in env.task.plan["path"]:
        if (chain[-1], rel) not in known:
            break
        chain.append(known[(chain[-1], rel)])
    return chain, known


def relation_phrase(rel: str, subject: str) -> str:
    from .envs.search import RELATIONS

    return RELATIONS[rel][2].format(subject)


def plan_phrase(path: list[str], start: str) -> str:
    """The whole hop plan, e.g. "the organisation X works for, then the founder of that organisation".

    Said in the first turn, so at the next hop a small student copies the relation from its own
    earlier words instead of re-reading the question's phrasing.
    """
    from .envs.search import RELATIONS

    parts, subject = [], start
    for rel in path:
        parts.append(relation_phrase(rel, subject))
        subject = {"person": "that person", "org": "that organisation", "city": "that city"}.get(RELATIONS[rel][1], "")
    return ", then ".join(parts)


def found_phrase(path: list[str], chain: list[str], value: str) -> str:
    """What the last resolved hop gave, e.g. "Found: the organisation X works for is Zonde Institute."

    Every turn after a useful search opens with it, so the choice between searching on ("Next:")
    and answering ("No hops are left") comes after the student has written which hop it just
    finished, and it can look that hop up in the plan it stated in its first turn.
    """
    return f"Found: {relation_phrase(path[len(chain) - 2], chain[-2])} is {value}."


class SearchTeacher:
    """Search the frontier entity until the chain is resolved, then answer; with mistakes."""

    def __init__(self, *, noise: float = DEFAULT_NOISE, memory: float = 0.5):
        self.noise, self.memory = noise, memory

    def act(self, env: Env, rng: random.Random) -> TeacherStep:
        task, world = env.task, env.world
        path, gold_chain = task.plan["path"], task.plan["chain"]
        chain, _ = resolve_chain(env)
        n_searches = sum(not a.is_answer for a, _ in env.history)
        if not env.history:
            # popular facts were seen often in training: the teacher may answer from memory
            if rng.random() < self.memory * task.plan["popularity"]:
                p_right = 0.9 if task.hops == 1 else 0.5
                if rng.random() < p_right:
                    return TeacherStep(Action.final(task.answer), "I remember this one; no search needed.")
                return TeacherStep(Action.final(self._wrong_value(world, path, task.answer, rng)),
                                   "I think I remember this one; no search needed.", slip="memory")
            if rng.random() < self.noise * 0.1:
                return TeacherStep(Action.final(self._wrong_value(world, path, task.answer, rng)),
                                   "This looks familiar; I will answer straight away.", slip="guess")
        if len(chain) == len(path) + 1:
            value, slip = chain[-1], None
            if rng.random() < self.noise * 0.3:
                value, slip = self._wrong_value(world, path, chain[-1], rng), "misread"
            return TeacherStep(Action.final(value),
                               f"{found_phrase(path, chain, value)} No hops are left; the answer is {value}.", slip)
        if n_searches >= MAX_SEARCHES:
            return TeacherStep(Action.final(chain[-1]), "I could not find more; I will answer with what I have.",
                               slip="gave_up")
        if len(chain) > 1 and rng.random() < self.noise * 0.8:
            return TeacherStep(Action.final(chain[-1]), f"{chain[-1]} must be the answer.", slip="early")
        if env.history and not env.history[-1][1].facts or self._missed(env, chain):
            # the last search did not find what was needed: an impatient teacher often guesses
            if rng.random() < self.noise * 1.2:
                wrong = self._wrong_value(world, path, task.answer, rng)
                return TeacherStep(Action.final(wrong), "The search did not help; I will guess.", slip="guess")
        frontier, rel = chain[-1], path[len(chain) - 1]
        query, slip = frontier, None
        if rng.random() < self.noise * 0.4:
            query, slip = self._bad_query(world, frontier, gold_chain, rng), "bad_query"
        if len(chain) > 1:  # a hop is resolved: say so, then name the next one (copied from the plan)
            think = f"{found_phrase(path, chain, frontier)} Next: {relation_phrase(rel, frontier)}."
        else:
            think = f"I need {plan_phrase(path, frontier)}."
        return TeacherStep(Action.call("search", query=query), f"{think} I will search for {query}.", slip)

    @staticmethod
    def _missed(env: Env, chain: list[str]) -> bool:
        """True when the last search returned passages but none about the entity searched for."""
        if not env.history or env.history[-1][0].is_answer:
            return False
        return not any(s == chain[-1] for s, _, _ in env.history[-1][1].facts) and len(chain) == 1

    @staticmethod
    def _bad_query(world, frontier: str, gold_chain: list[str], rng: random.Random) -> str:
        kind = world.entities[frontier].kind
        choice = rng.random()
        if choice < 0.4 and " " in frontier:
            return frontier.split()[0]  # a shared first name or a bare word: ambiguous
        if choice < 0.7:
            others = [n for n in world.names if world.entities[n].kind == kind
                      and world.entities[n].seen and n not in gold_chain]
            return rng.choice(others)  # the wrong entity
        return {"person": "person born works", "org": "organisation founded headquartered",
                "city": "city region river"}[kind]

    @staticmethod
    def _wrong_value(world, path: list[str], right: str, rng: random.Random) -> str:
        """A plausible wrong answer of the right type: another value the same relation takes."""
        rel = path[-1]
        pool = sorted({e.fact(rel) for e in world.entities.values() if e.seen and e.fact(rel)} - {right})
        return rng.choice(pool)


class MathTeacher:
    """One calculator call per operation, reading each result back; with mistakes."""

    def __init__(self, *, noise: float = DEFAULT_NOISE):
        self.noise = noise

    def act(self, env: Env, rng: random.Random) -> TeacherStep:
        plan = env.task.plan
        ops = plan["ops"]
        results = [obs.text for a, obs in env.history if not a.is_answer and not obs.error]
        done = len(results)
        current = results[-1] if results else str(plan["start"])
        if done >= len(ops):
            return TeacherStep(Action.final(current),
                               f'Next: "{plan["ask"]}" No steps are left; the result is {current}.')
        if done and rng.random() < self.noise * 0.12:
            return TeacherStep(Action.final(current), f"The answer is {current}.", slip="early")
        if rng.random() < self.noise * 0.15:
            guess = self._mental(current, ops[done:], rng)
            return TeacherStep(Action.final(guess), "The rest is easy to do in my head.", slip="mental")
        op, operand = ops[done]
        slip = None
        if rng.random() < self.noise * 0.12:
            op, operand, slip = self._slip(op, operand, rng)
        expression = f"{current} {op} {operand}"
        return TeacherStep(Action.call("calculator", expression=expression),
                           f'Next: "{plan["clauses"][done]}" So {expression}.', slip)

    @staticmethod
    def _slip(op: str, operand: int, rng: random.Random) -> tuple[str, int, str]:
        if rng.random() < 0.5:
            return {"+": "-", "-": "+", "*": "+", "/": "*"}[op], operand, "wrong_operator"
        return op, operand + rng.choice([-2, -1, 1, 2, 10]) if operand > 2 else operand + 1, "wrong_number"

    @staticmethod
    def _mental(current: str, ops: list, rng: random.Random) -> str:
        value = current
        for op, operand in ops:
            value = calculate(f"{value} {op} {operand}")
        if value.startswith("Error") or rng.random() < 0.7:  # mental arithmetic usually slips
            try:
                return str(int(float(value)) + rng.choice([-10, -2, -1, 1, 2, 10]))
            except ValueError:
                return current
        return value
