"""The foresight grammar: render one agent step, and parse a model's step back, tolerantly.

What: a step is a world-model span then a policy span, as in the paper:

    <imaginary>search "Pozan Zokesshi" -> learn [ORG1] -> search [ORG1] -> answer [CITY1]</imaginary>
    <keyword>Ardent Works, Velmora</keyword>
    <analysis>Missing: the organisation Pozan Zokesshi works for, then its city.</analysis>
    <confidence>72</confidence>
    <think>I need the employer first.</think>
    <tool_call>
    {"name": "search", "arguments": {"query": "Pozan Zokesshi"}}
    </tool_call>

The action is a tool call in the ChatML/Hermes format our chat template renders, or a final
`<answer>...</answer>`. Three layouts share the grammar: "full" (FE-SFT, the paper's format),
"state" (rollout and keywords, no analysis or confidence: the State-SFT baseline) and "plain"
(think and act: the SFT baseline).
Why: every later stage reads model output through `parse_step`, so it never raises; it returns
what it could read plus a list of defects (missing or duplicate tags, unparsable or
out-of-range confidence, truncation, a broken tool call) that metrics count and rewards penalise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .envs.base import Action

WORLD_MODEL_TAGS = ("imaginary", "keyword", "analysis", "confidence")
LAYOUTS = {
    "full": ("imaginary", "keyword", "analysis", "confidence", "think"),
    "state": ("imaginary", "keyword", "think"),
    "plain": ("think",),
}
ALL_TAGS = ("imaginary", "keyword", "analysis", "confidence", "think", "answer", "tool_call")


def tool_call_text(action: Action) -> str:
    """The action as our chat template writes it: a Hermes tool call, or an answer tag."""
    if action.is_answer:
        return f"<answer>{action.answer}</answer>"
    payload = json.dumps({"name": action.tool, "arguments": action.arguments}, ensure_ascii=False)
    return f"<tool_call>\n{payload}\n</tool_call>"


def render_spans(*, think: str, imaginary: str | None = None, keywords: list[str] | None = None,
                 analysis: str | None = None, confidence: float | None = None,
                 layout: str = "full") -> str:
    """The world-model span (as the layout asks) and the think span, without the action."""
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}.")
    values = {"imaginary": imaginary, "keyword": ", ".join(keywords or []), "analysis": analysis,
              "confidence": None if confidence is None else str(int(round(confidence))),
              "think": think}
    parts = []
    for tag in LAYOUTS[layout]:
        if values[tag] is None:
            raise ValueError(f"layout {layout!r} needs a value for <{tag}>")
        parts.append(f"<{tag}>{values[tag]}</{tag}>")
    return "\n".join(parts)


def render_step(*, think: str, action: Action, imaginary: str | None = None,
                keywords: list[str] | None = None, analysis: str | None = None,
                confidence: float | None = None, layout: str = "full") -> str:
    """One whole assistant step: spans, then the action. `confidence` is 0-100."""
    spans = render_spans(think=think, imaginary=imaginary, keywords=keywords, analysis=analysis,
                         confidence=confidence, layout=layout)
    return f"{spans}\n{tool_call_text(action)}"


@dataclass
class ParsedStep:
    """What `parse_step` could read. Missing parts are None; `defects` says what was wrong."""

    imaginary: str | None = None
    keywords: list[str] = field(default_factory=list)
    analysis: str | None = None
    confidence: float | None = None  # 0-100, clamped when out of range
    think: str | None = None
    action: Action | None = None
    defects: list[str] = field(default_factory=list)
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # tag -> (start, end) in text

    @property
    def format_ok(self) -> bool:
        return not self.defects

    @property
    def q(self) -> float | None:
        """The confidence as a probability in [0, 1]."""
        return None if self.confidence is None else self.confidence / 100.0

    @property
    def world_model_span(self) -> tuple[int, int] | None:
        """Character range covering the world-model tags (for span-level credit in RL)."""
        found = [self.spans[t] for t in WORLD_MODEL_TAGS if t in self.spans]
        return (min(s for s, _ in found), max(e for _, e in found)) if found else None


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def parse_step(text: str, layout: str = "full") -> ParsedStep:
    """Read one assistant step. Never raises: every problem becomes an entry in `defects`."""
    step = ParsedStep()
    if not isinstance(text, str):
        step.defects.append(f"not text ({type(text).__name__})")
        return step
    expected = LAYOUTS.get(layout, LAYOUTS["full"])
    for tag in ALL_TAGS:
        opens = [m.start() for m in re.finditer(f"<{tag}>", text)]
        if not opens:
            if tag in expected:
                step.defects.append(f"missing <{tag}>")
            continue
        if len(opens) > 1:
            step.defects.append(f"duplicate <{tag}>")
        start = opens[0]
        close = text.find(f"</{tag}>", start)
        if close < 0:
            step.defects.append(f"truncated inside <{tag}>")
            end, inner = len(text), text[start + len(tag) + 2:]
        else:
            end, inner = close + len(tag) + 3, text[start + len(tag) + 2:close]
        step.spans[tag] = (start, end)
        _read(step, tag, inner.strip(), complete=close >= 0)
    if step.action is None and not any(d.startswith(("truncated", "tool call")) for d in step.defects):
        step.defects.append("no action (neither <tool_call> nor <answer>)")
    order = [t for t in expected if t in step.spans]
    if order != sorted(order, key=lambda t: step.spans[t][0]):
        step.defects.append("tags out of order")
    return step


def _read(step: ParsedStep, tag: str, inner: str, complete: bool) -> None:
    if tag == "keyword":
        step.keywords = [k.strip() for k in re.split(r"[,;\n]", inner) if k.strip()]
    elif tag == "confidence":
        match = _NUMBER.search(inner)
        if match is None:
            step.defects.append(f"confidence unparsable: {inner[:20]!r}")
            return
        value = float(match.group())
        if not 0 <= value <= 100:
            step.defects.append(f"confidence out of range: {match.group()}")
            value = min(100.0, max(0.0, value))
        step.confidence = value
    elif tag == "answer" and complete and step.action is None:
        step.action = Action.final(inner)
    elif tag == "tool_call" and complete and step.action is None:
        step.action = _read_tool_call(step, inner)
    elif tag in ("imaginary", "analysis", "think"):
        setattr(step, tag, inner)


def _read_tool_call(step: ParsedStep, inner: str) -> Action | None:
    try:
        payload = json.loads(inner)
        if isinstance(payload.get("arguments"), str):  # some templates write arguments as a string
            payload["arguments"] = json.loads(payload["arguments"])
        name, arguments = payload["name"], payload.get("arguments") or {}
        if not isinstance(name, str) or not isinstance(arguments, dict):
            raise TypeError
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        step.defects.append("tool call is not JSON with a name and arguments")
        return None
    return Action(tool=name, arguments=arguments)
