import json

import pytest
from hypothesis import given, settings, strategies as st

from foresight_lite.envs import Action
from foresight_lite.format import LAYOUTS, parse_step, render_step

FULL = dict(imaginary="search Pozan Zokesshi -> find [ORG1] -> answer [ORG1]",
            keywords=["Ardent Works", "Velmora"], analysis="Missing: the employer.", confidence=72,
            think="I need the employer first.")


def test_round_trip_full_tool_call():
    text = render_step(action=Action.call("search", query="Pozan Zokesshi"), **FULL)
    step = parse_step(text)
    assert step.format_ok, step.defects
    assert step.imaginary == FULL["imaginary"] and step.keywords == FULL["keywords"]
    assert step.analysis == FULL["analysis"] and step.confidence == 72 and step.q == 0.72
    assert step.think == FULL["think"]
    assert step.action == Action.call("search", query="Pozan Zokesshi")
    start, end = step.world_model_span
    assert text[start:end].startswith("<imaginary>") and text[start:end].endswith("</confidence>")


def test_round_trip_answer_and_layouts():
    text = render_step(think="Done.", action=Action.final("Velmora"), layout="plain")
    step = parse_step(text, layout="plain")
    assert step.format_ok and step.action == Action.final("Velmora") and step.confidence is None
    text = render_step(think="t", action=Action.final("x"), imaginary="i", keywords=["k"], layout="state")
    assert parse_step(text, layout="state").format_ok
    assert "missing <confidence>" in parse_step(text, layout="full").defects


def test_arguments_as_json_string():
    text = '<think>t</think><tool_call>\n{"name": "search", "arguments": "{\\"query\\": \\"A B\\"}"}\n</tool_call>'
    assert parse_step(text, layout="plain").action == Action.call("search", query="A B")


@pytest.mark.parametrize("text,defect", [
    ("<think>hi</think>", "no action (neither <tool_call> nor <answer>)"),
    ("<imaginary>a</imaginary><imaginary>b</imaginary><think>t</think><answer>x</answer>", "duplicate <imaginary>"),
    ("<confidence>high</confidence>", "confidence unparsable: 'high'"),
    ("<confidence>140</confidence>", "confidence out of range: 140"),
    ("<confidence>-5</confidence>", "confidence out of range: -5"),
    ("<imaginary>plan</imaginary><think>I will sea", "truncated inside <think>"),
    ("<think>t</think><tool_call>{not json}</tool_call>", "tool call is not JSON with a name and arguments"),
    ("<think>t</think><imaginary>late</imaginary><answer>x</answer>", "tags out of order"),
    ("", "missing <imaginary>"),
])
def test_defects_are_reported(text, defect):
    assert defect in parse_step(text).defects


def test_out_of_range_confidence_is_clamped():
    assert parse_step("<confidence>140</confidence>").confidence == 100
    assert parse_step("<confidence>72%</confidence>").confidence == 72


def test_not_text():
    assert parse_step(None).defects == ["not text (NoneType)"]


_tag_free = st.text(st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), max_size=40)
_clean = _tag_free.map(str.strip).filter(lambda s: s)
_keyword = st.text(st.characters(blacklist_characters="<>,;\n", blacklist_categories=("Cs",)),
                   min_size=1, max_size=15).map(str.strip).filter(lambda s: s)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_parse_never_raises(text):
    step = parse_step(text)
    assert isinstance(step.defects, list)
    assert step.confidence is None or 0 <= step.confidence <= 100


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<imaginary>", "</imaginary>", "<keyword>", "</keyword>",
                                 "<confidence>", "</confidence>", "<think>", "</think>", "<tool_call>",
                                 "</tool_call>", "<answer>", "</answer>", "{", "}", '"name"', "99", "140", "-5",
                                 "high", "%", "x", "\n"]),
                max_size=30))
def test_parse_never_raises_on_tag_soup(parts):
    text = "".join(parts)
    step = parse_step(text)
    assert step.confidence is None or 0 <= step.confidence <= 100
    assert all(0 <= start < end <= len(text) and text.startswith(f"<{tag}>", start)
               for tag, (start, end) in step.spans.items())
    if step.format_ok:
        assert step.action is not None and step.confidence is not None
    if "<answer>" not in text and "<tool_call>" not in text:
        # a defect says why: no action, or a span cut off before one could follow
        assert step.action is None and any(d.startswith(("no action", "truncated")) for d in step.defects)
    if "<imaginary>" not in text:
        assert "missing <imaginary>" in step.defects


@settings(max_examples=200, deadline=None)
@given(imaginary=_clean, keywords=st.lists(_keyword, max_size=4), analysis=_clean,
       confidence=st.integers(0, 100), think=_clean, query=st.text(max_size=30),
       layout=st.sampled_from(sorted(LAYOUTS)), answer=st.booleans())
def test_render_parse_round_trip(imaginary, keywords, analysis, confidence, think, query, layout, answer):
    action = Action.final(query.strip() or "x") if answer else Action.call("search", query=query)
    if answer and ("<" in action.answer or ">" in action.answer):
        action = Action.final("x")
    text = render_step(think=think, action=action, imaginary=imaginary, keywords=keywords,
                       analysis=analysis, confidence=confidence, layout=layout)
    step = parse_step(text, layout=layout)
    assert step.format_ok, step.defects
    assert step.think == think and step.action == action
    if layout != "plain":
        assert step.imaginary == imaginary and step.keywords == keywords
    if layout == "full":
        assert step.analysis == analysis and step.confidence == confidence
    json.dumps(step.keywords)
