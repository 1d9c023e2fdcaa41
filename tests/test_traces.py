import json
import re

import pytest

from foresight_lite.envs import Action
from foresight_lite.metrics import auroc
from foresight_lite.rewards import grounding_reward
from foresight_lite.traces import MAX_KEYWORDS, generate_traces, read_traces, write_traces


@pytest.fixture(scope="module", params=["search", "math"])
def traces(request):
    return generate_traces(request.param, n=150, seed=0, progress=False)


def test_same_seed_same_bytes(tmp_path):
    a = generate_traces("search", n=30, seed=1, progress=False)
    b = generate_traces("search", n=30, seed=1, progress=False)
    write_traces(a, tmp_path / "a", meta={}), write_traces(b, tmp_path / "b", meta={})
    assert (tmp_path / "a/traces.jsonl").read_bytes() == (tmp_path / "b/traces.jsonl").read_bytes()
    assert read_traces(tmp_path / "a") == json.loads(json.dumps(a))
    assert generate_traces("search", n=30, seed=2, progress=False) != a


def test_read_missing_traces_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m foresight_lite traces"):
        read_traces(tmp_path / "nothing")


def test_every_step_has_foresight(traces):
    for t in traces:
        for s in t["steps"]:
            z = s["z"]
            assert 0 <= z["q"] <= 1 and z["imaginary"] and z["analysis"]
            assert len(z["keywords"]) <= MAX_KEYWORDS


def _grounded_share(trace, i):
    """Share of step i's keywords that come true later (the metric's definition), or None."""
    steps, task = trace["steps"], trace["task"]
    observations = [s["observation"] or "" for s in steps]
    known = " ".join([task["question"]] + observations[:i])
    keywords = steps[i]["z"]["keywords"]
    return grounding_reward(keywords, observations[i:], task["answer"], known=known) if keywords else None


def test_keywords_are_imagined_not_copied_from_the_future(traces):
    """Keywords are the teacher's expectations: right only some of the time, so a student cannot
    learn that its own first keyword is the final answer; an answer step names its answer."""
    shares = [_grounded_share(t, i) for t in traces for i, s in enumerate(t["steps"])
              if not Action.from_dict(s["action"]).is_answer]
    shares = [x for x in shares if x is not None]
    assert 0.05 < sum(shares) / len(shares) < 0.6
    clean = [t for t in traces if t["success"] and len(t["steps"]) > 1 and t["steps"][0]["z"]["keywords"]]
    first_is_answer = [t["steps"][0]["z"]["keywords"][-1] == t["task"]["answer"] for t in clean]
    assert sum(first_is_answer) < 0.5 * len(clean)
    for t in traces:
        for s in t["steps"]:
            if Action.from_dict(s["action"]).is_answer:
                assert s["z"]["keywords"] == [s["action"]["answer"]]


def test_search_keywords_come_from_memory_of_popular_facts():
    """Facts about popular entities are imagined right more often than facts about rare ones."""
    traces = generate_traces("search", n=300, seed=0, progress=False)
    by_popularity = {True: [], False: []}
    for t in traces:
        share = _grounded_share(t, 0)
        if share is not None and len(t["steps"]) > 1:
            by_popularity[t["task"]["plan"]["popularity"] > 0.3].append(share)
    popular, rare = (sum(v) / len(v) for v in (by_popularity[True], by_popularity[False]))
    assert popular > rare + 0.2


def test_roadmap_hides_future_values(traces):
    """Values first seen after s_t appear in the roadmap only as placeholders."""
    for t in traces:
        for i, s in enumerate(t["steps"]):
            seen = " ".join([t["task"]["question"]] + [x["observation"] or "" for x in t["steps"][:i]])
            for k in s["z"]["keywords"]:
                if k not in seen:
                    assert not re.search(rf"(?<![\w.\[]){re.escape(k)}(?![\w\]])", s["z"]["imaginary"]), (k, s["z"])


def test_answer_q_is_accuracy_in_that_state_not_the_outcome(traces):
    """A lucky or unlucky answer does not set its own q: q is the teacher's answer accuracy there."""
    last_q = {ok: [t["steps"][-1]["z"]["q"] for t in traces if t["success"] == ok] for ok in (True, False)}
    assert sum(last_q[True]) / len(last_q[True]) > sum(last_q[False]) / len(last_q[False]) + 0.3
    assert any(0 < q < 1 for q in last_q[True] + last_q[False])


def test_q_predicts_outcomes(traces):
    pairs = [(s["z"]["q"], t["success"]) for t in traces for s in t["steps"]]
    assert auroc([p[0] for p in pairs], [p[1] for p in pairs]) > 0.75


def test_math_foresight_spells_out_only_the_next_computation():
    """No list of remaining operations to copy: the roadmap names the next computation, then
    "..." when more follow; the analysis says what is done; one imagined keyword per tool step."""
    for t in generate_traces("math", n=60, seed=0, progress=False):
        for s in t["steps"]:
            z = s["z"]
            assert z["imaginary"].count("compute") <= 1 and "Still to apply" not in z["analysis"]
            assert z["analysis"].startswith("Done ")
            assert len(z["keywords"]) <= 1
        if sum(not Action.from_dict(s["action"]).is_answer for s in t["steps"]) > 1:
            assert "-> ... ->" in t["steps"][0]["z"]["imaginary"]
