"""The rewards of stage 3 (FC-RL), as plain functions, and the TRL reward functions built on them.

What, per episode (I = 1 if the episode succeeded, else 0), per world-model span t:
  success_reward      I: the final <answer> matches the gold answer (the world's own check).
  calibration_reward  R_calib = I - (q_t - I)^2, a Brier-style score of the span's confidence
                      q_t = <confidence> / 100, in [-1, 1]. A missing or unreadable confidence
                      scores MISSING_CONFIDENCE_PENALTY = -1, the worst any stated q can earn, so
                      leaving it out never pays; out-of-range values are clamped to [0, 1].
  grounding_reward    R_ground = share of the span's keywords that turn up in an observation
                      *after* that turn, or are the gold answer. Never the agent's own later
                      actions (it could simply make them come true), and never words it has
                      already seen (the question, earlier observations): naming the entity of
                      the question is not a prediction. No keywords score 0, like wrong ones.
  format_reward       share of the episode's turns that parse without a defect (format.parse_step).
The world-model span is credited with R_WM = R_calib + R_ground; the episode with
R_E = success + FORMAT_WEIGHT * format (see stages/rl.py for how each reaches its tokens).

Why: the paper's FC-RL rewards the *capability* behind the foresight format: confidences that
track the student's real success and predictions that come true, not merely the tags.
How: `calibration_reward(0.8, True)` -> 0.96; `score_episode(...)` scores a whole episode;
`reward_functions(...)` gives TRL `GRPOTrainer` reward functions
`(prompts, completions, **kwargs) -> list[float]`. Tests: `pytest tests/test_rewards.py`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .envs.base import Action, Env, normalize_answer
from .envs.math import MathEnv
from .format import ParsedStep, parse_step, tool_call_text

MISSING_CONFIDENCE_PENALTY = -1.0
FORMAT_WEIGHT = 0.1  # the format term only breaks ties: success must dominate the episode reward
CORRECTNESS = {"search": Env.is_correct, "math": MathEnv.is_correct}


def success_reward(answer: str | None, gold: str, *, world: str = "search") -> float:
    """1.0 if `answer` is right by the world's own check (numeric for math), else 0.0."""
    check = CORRECTNESS.get(world, Env.is_correct)
    return 1.0 if answer is not None and check(answer, gold) else 0.0


def calibration_reward(q, success) -> float:
    """R_calib = I - (q - I)^2 with q in [0, 1]; None, NaN or non-numbers score -1."""
    try:
        q = float(q)
    except (TypeError, ValueError):
        return MISSING_CONFIDENCE_PENALTY
    if math.isnan(q):
        return MISSING_CONFIDENCE_PENALTY
    q, i = min(1.0, max(0.0, q)), 1.0 if success else 0.0
    return i - (q - i) ** 2


def keyword_grounded(keyword: str, later_observations: list[str], gold: str, *, known: str = "") -> bool:
    """Does `keyword` turn up in a later observation, or is it the gold answer? Keywords already
    in `known` (what the agent has seen so far) are not predictions and never count."""
    key = normalize_answer(keyword)
    if not key:
        return False
    pattern = re.compile(rf"(?<!\w){re.escape(key)}(?!\w)")
    if known and pattern.search(normalize_answer(known)):
        return False
    if key == normalize_answer(gold):
        return True
    return any(pattern.search(normalize_answer(obs or "")) for obs in later_observations)


def grounding_reward(keywords: list[str], later_observations: list[str], gold_answer: str, *,
                     known: str = "") -> float:
    """Share of `keywords` grounded in `later_observations` or the gold answer (0.0 if none given)."""
    keywords = [k for k in keywords or [] if isinstance(k, str)]
    if not keywords:
        return 0.0
    hits = sum(keyword_grounded(k, later_observations, gold_answer, known=known) for k in keywords)
    return hits / len(keywords)


def format_reward(steps: list[ParsedStep]) -> float:
    """Share of turns that parse without a defect; an episode with no turn scores 0."""
    return sum(s.format_ok for s in steps) / len(steps) if steps else 0.0


@dataclass
class TurnScore:
    """One assistant turn: what it predicted and what that earned."""

    text: str
    confidence: float | None  # 0-100 as written (clamped), None if missing
    keywords: list[str]
    grounded: list[str]
    calib: float
    ground: float
    has_world_model: bool
    defects: list[str]
    observation: str | None  # what the turn's tool call returned

    @property
    def world_model_reward(self) -> float:
        """R_WM = R_calib + R_ground."""
        return self.calib + self.ground


@dataclass
class EpisodeScore:
    """A scored episode; `turns` in order, `success` is I."""

    world: str
    success: bool
    answer: str | None
    turns: list[TurnScore] = field(default_factory=list)

    @property
    def format(self) -> float:
        return sum(not t.defects for t in self.turns) / len(self.turns) if self.turns else 0.0

    @property
    def calib(self) -> float:
        """Mean R_calib over the turns (the missing-confidence penalty for an empty episode)."""
        return _mean([t.calib for t in self.turns], MISSING_CONFIDENCE_PENALTY)

    @property
    def ground(self) -> float:
        return _mean([t.ground for t in self.turns], 0.0)

    @property
    def confidence(self) -> float | None:
        """Mean stated confidence in [0, 1] over the turns that state one."""
        stated = [t.confidence / 100 for t in self.turns if t.confidence is not None]
        return sum(stated) / len(stated) if stated else None

    @property
    def episode_reward(self) -> float:
        """R_E = success + FORMAT_WEIGHT * format."""
        return float(self.success) + FORMAT_WEIGHT * self.format


def _mean(values: list[float], empty: float) -> float:
    return sum(values) / len(values) if values else empty


def score_episode(turn_texts: list[str], observations: list[str | None], *, gold: str, question: str = "",
                  world: str = "search", layout: str = "full") -> EpisodeScore:
    """Score an episode from its assistant turns and what each turn's tool call returned.

    `observations[t]` is the observation after turn t (None for the final answer). The answer is
    the last turn's <answer>; span t's keywords are checked against observations t, t+1, ...
    and must be new relative to the question and observations before turn t.
    """
    steps = [parse_step(text, layout=layout) for text in turn_texts]
    last = steps[-1].action if steps else None
    answer = last.answer if last is not None and last.is_answer else None
    success = bool(success_reward(answer, gold, world=world))
    observations = list(observations) + [None] * (len(steps) - len(observations))
    episode = EpisodeScore(world=world, success=success, answer=answer)
    for t, (text, step) in enumerate(zip(turn_texts, steps)):
        later = [o for o in observations[t:] if o]
        known = " ".join([question] + [o for o in observations[:t] if o])
        grounded = [k for k in step.keywords if keyword_grounded(k, later, gold, known=known)]
        episode.turns.append(TurnScore(
            text=text, confidence=step.confidence, keywords=step.keywords, grounded=grounded,
            calib=calibration_reward(step.q, success),
            ground=len(grounded) / len(step.keywords) if step.keywords else 0.0,
            has_world_model=step.world_model_span is not None, defects=list(step.defects),
            observation=observations[t]))
    return episode


def turns_from_messages(completion: list[dict]) -> tuple[list[str], list[str | None]]:
    """The assistant turns (content plus its tool calls, as the template writes them) and the
    observation after each, from a TRL multi-turn completion (assistant and tool messages)."""
    texts, observations = [], []
    for message in completion or []:
        role = message.get("role")
        if role == "assistant":
            text = message.get("content") or ""
            for call in message.get("tool_calls") or []:
                function = call.get("function", call) if isinstance(call, dict) else {}
                arguments = function.get("arguments")
                action = Action(tool=str(function.get("name")),
                                arguments=arguments if isinstance(arguments, dict) else {"raw": arguments})
                text = f"{text}\n{tool_call_text(action)}" if text else tool_call_text(action)
            texts.append(text)
            observations.append(None)
        elif role == "tool" and observations:
            content = message.get("content")
            content = content if isinstance(content, str) else str(content)
            observations[-1] = content if observations[-1] is None else f"{observations[-1]}\n{content}"
    return texts, observations


def question_of(prompt) -> str:
    """The task question: the last user message of a conversational prompt (or the text itself)."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content") for m in prompt or [] if m.get("role") == "user"]
    return users[-1] if users and isinstance(users[-1], str) else ""


def score_completion(prompt, completion, *, gold: str, world: str = "search", layout: str = "full") -> EpisodeScore:
    """`score_episode` for one TRL prompt and multi-turn completion."""
    texts, observations = turns_from_messages(completion)
    return score_episode(texts, observations, gold=gold, question=question_of(prompt), world=world, layout=layout)


def score_record(record: dict, *, layout: str | None = None) -> EpisodeScore:
    """`score_episode` for an episode record of `evaluate.run_episodes` (before/after comparisons)."""
    texts = [s["text"] for s in record["steps"]]
    observations = [s.get("observation") for s in record["steps"]]
    return score_episode(texts, observations, gold=record["answer"], question=record["question"],
                         world=record["world"], layout=layout or record.get("layout", "full"))


# TRL reward functions: each scores the batch's episodes (or reuses the scores the trainer put in the
# `episode` column) and returns one float per completion. Their names become TRL's metric names.
def _episodes(prompts, completions, kwargs) -> list[EpisodeScore]:
    if kwargs.get("episode") is not None:
        return kwargs["episode"]
    n = len(completions)
    worlds = kwargs.get("world") or ["search"] * n
    layout = kwargs.get("layout") or "full"
    return [score_completion(p, c, gold=g, world=w, layout=layout)
            for p, c, g, w in zip(prompts, completions, kwargs["answer"], worlds)]


def success(prompts, completions, **kwargs) -> list[float]:
    """TRL reward: I, the episode's success (needs the dataset's `answer` column)."""
    return [float(e.success) for e in _episodes(prompts, completions, kwargs)]


def calib(prompts, completions, **kwargs) -> list[float]:
    """TRL reward: R_calib averaged over the episode's world-model spans."""
    return [e.calib for e in _episodes(prompts, completions, kwargs)]


def ground(prompts, completions, **kwargs) -> list[float]:
    """TRL reward: R_ground averaged over the episode's world-model spans."""
    return [e.ground for e in _episodes(prompts, completions, kwargs)]


def format_ok(prompts, completions, **kwargs) -> list[float]:
    """TRL reward: share of the episode's turns that parse without a defect."""
    return [e.format for e in _episodes(prompts, completions, kwargs)]


REWARD_FUNCS = {"success": success, "format": format_ok, "calib": calib, "ground": ground}


def reward_functions(components: tuple[str, ...]) -> tuple[list, list[float]]:
    """TRL `reward_funcs` and `reward_weights` for the named components (success is weighted 1,
    format FORMAT_WEIGHT, calib and ground 1)."""
    bad = [c for c in components if c not in REWARD_FUNCS]
    if bad:
        raise ValueError(f"Unknown reward component {bad[0]!r}; choose from {', '.join(REWARD_FUNCS)}.")
    weights = {"success": 1.0, "format": FORMAT_WEIGHT, "calib": 1.0, "ground": 1.0}
    return [REWARD_FUNCS[c] for c in components], [weights[c] for c in components]
