"""The episode interface every world shares.

What: a `Task` (a question with its gold answer and the structure a scripted teacher may
read), an `Action` (a tool call or a final answer) and `Env`, a gym-like episode:
`reset(task) -> question`, `step(action) -> Observation`, `done`, `success`.
Why: the teacher, the trace generator, RL rollouts and evaluation all drive episodes the
same way, whatever the world.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import string
from dataclasses import asdict, dataclass, field
from typing import Any

SPLITS = ("train", "rl", "eval", "ood")
MAX_TURNS = 8  # tool calls per episode before the world ends it as a failure


@dataclass(frozen=True)
class Task:
    """One question. `plan` is the structure the scripted teacher reads (never shown to a model)."""

    task_id: str
    world: str
    split: str
    question: str
    answer: str
    hops: int  # search: relations to follow; math: operations to perform
    plan: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        return cls(**d)


@dataclass(frozen=True)
class Action:
    """A tool call (`tool`, `arguments`) or, when `tool` is None, a final `answer`."""

    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    answer: str | None = None

    @classmethod
    def call(cls, tool: str, **arguments: Any) -> "Action":
        return cls(tool=tool, arguments=arguments)

    @classmethod
    def final(cls, answer: str) -> "Action":
        return cls(answer=str(answer))

    @property
    def is_answer(self) -> bool:
        return self.tool is None

    def to_dict(self) -> dict:
        if self.is_answer:
            return {"answer": self.answer}
        return {"tool": self.tool, "arguments": dict(self.arguments)}

    @classmethod
    def from_dict(cls, d: dict) -> "Action":
        if "answer" in d:
            return cls.final(d["answer"])
        return cls(tool=d["tool"], arguments=dict(d.get("arguments", {})))

    def __str__(self) -> str:
        if self.is_answer:
            return f"answer({self.answer!r})"
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        return f"{self.tool}({args})"


@dataclass(frozen=True)
class Observation:
    """What a tool returned. `facts` are the structured facts behind the text (teacher-only)."""

    text: str
    facts: tuple = ()
    error: bool = False


def tool_schema(name: str, description: str, **params: str) -> dict:
    """An OpenAI-style function schema, the shape chat templates and TRL render."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {p: {"type": "string", "description": d} for p, d in params.items()},
                "required": list(params),
            },
        },
    }


class Env:
    """A world plus one episode at a time. Subclasses set `name`, `tools`, `tasks` and `_tool`."""

    name: str = "base"
    tools: list[dict] = []
    system_prompt: str = ""

    def __init__(self, *, seed: int, split: str, tasks: list[Task]):
        self.seed, self.split, self.tasks = seed, split, tasks
        self.task: Task | None = None
        self.history: list[tuple[Action, Observation]] = []
        self.done, self.success, self.final_answer = False, False, None

    def reset(self, task: Task | int = 0) -> str:
        """Start an episode on `task` (a Task or an index into `self.tasks`); returns the question."""
        self.task = self.tasks[task] if isinstance(task, int) else task
        self.history, self.done, self.success, self.final_answer = [], False, False, None
        return self.task.question

    def step(self, action: Action) -> Observation:
        """Apply one action. Tool calls return an observation; an answer ends the episode."""
        if self.task is None:
            raise RuntimeError("call reset(task) before step(action)")
        if self.done:
            return Observation("The episode is over.", error=True)
        if action.is_answer:
            self.done, self.final_answer = True, action.answer
            self.success = self.is_correct(action.answer, self.task.answer)
            obs = Observation("Answer received.")
        elif action.tool not in {t["function"]["name"] for t in self.tools}:
            names = ", ".join(t["function"]["name"] for t in self.tools)
            obs = Observation(f"Error: unknown tool {action.tool!r}; available tools: {names}.", error=True)
        else:
            obs = self._tool(action.tool, action.arguments)
        self.history.append((action, obs))
        if not self.done and sum(not a.is_answer for a, _ in self.history) >= MAX_TURNS:
            self.done = True  # out of turns: a failure
        return obs

    def replay(self, task: Task, actions: list[Action]) -> "Env":
        """Rebuild the state reached by `actions` (worlds are deterministic)."""
        self.reset(task)
        for a in actions:
            self.step(a)
        return self

    def _tool(self, name: str, arguments: dict) -> Observation:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def is_correct(prediction: str | None, gold: str) -> bool:
        return prediction is not None and normalize_answer(prediction) == normalize_answer(gold)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation: lower case, drop punctuation, articles and extra spaces."""
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def stable_hash(*parts: Any) -> int:
    """A hash that is the same in every process (Python's `hash` of a str is salted)."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def rng_for(*parts: Any) -> random.Random:
    """An independent, reproducible random stream for one (seed, task, step, ...) key."""
    return random.Random(stable_hash(*parts))
