import json
import re

import pytest

from foresight_lite.metrics import auroc
from foresight_lite.traces import generate_traces, read_traces, write_traces


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
            assert len(z["keywords"]) <= 4


def test_keywords_come_from_the_real_future(traces):
    """Each keyword turns up in a later observation or is the gold answer of a success."""
    for t in traces:
        for i, s in enumerate(t["steps"]):
            later = " ".join(x["observation"] or "" for x in t["steps"][i:])
            for k in s["z"]["keywords"]:
                assert k in later or (t["success"] and k == t["task"]["answer"])


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
