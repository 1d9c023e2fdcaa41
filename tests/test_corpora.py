import json
import re

import pytest

from foresight_lite import corpora
from foresight_lite.format import parse_step
from foresight_lite.traces import generate_traces


@pytest.fixture(scope="module")
def traces():
    return generate_traces("search", n=40, seed=0, progress=False) + \
        generate_traces("math", n=40, seed=0, progress=False)


def test_mid_training_text(traces):
    plain, wm = corpora.standard_mt(traces), corpora.wm_amt(traces, insert_prob=0.5)
    assert len(plain) == len(wm) == len(traces)
    assert all("<imaginary>" not in t for t in plain["text"])
    n_steps = sum(len(t["steps"]) for t in traces)
    n_blocks = sum(t.count("<imaginary>") for t in wm["text"])
    assert 0.3 * n_steps < n_blocks < 0.7 * n_steps  # z_t at sampled steps
    assert sum(t.count("<imaginary>") for t in corpora.wm_amt(traces, insert_prob=1.0)["text"]) == n_steps
    # same trajectories: removing the z_t blocks gives the standard text back
    for a, b in zip(plain["text"], corpora.wm_amt(traces, insert_prob=1.0)["text"]):
        assert re.sub(r"<imaginary>.*?</confidence>\n", "", b, flags=re.S) == a
    assert corpora.wm_amt(traces)["text"] == corpora.wm_amt(traces)["text"]  # deterministic


@pytest.mark.parametrize("name,layout", [("sft", "plain"), ("fe_sft", "full"), ("state_sft", "state")])
def test_chat_corpora(traces, name, layout):
    ds = corpora.BUILDERS[name](traces)
    assert len(ds) == sum(corpora.is_demonstration(t) for t in traces)
    assert set(ds.column_names) >= {"messages", "tools"}
    for row in ds:
        msgs = row["messages"]
        assert [m["role"] for m in msgs[:2]] == ["system", "user"]
        assert msgs[-1]["role"] == "assistant" and "<answer>" in msgs[-1]["content"]
        assert json.loads(row["tools"])[0]["type"] == "function"
        for m in msgs:
            if m["role"] == "assistant":
                text = m["content"]
                if m.get("tool_calls"):
                    call = m["tool_calls"][0]["function"]
                    text += "\n<tool_call>\n" + json.dumps({"name": call["name"],
                                                            "arguments": json.loads(call["arguments"])}) + "\n</tool_call>"
                assert parse_step(text, layout=layout).format_ok, text
    assert len(corpora.BUILDERS[name](traces, successful_only=False)) == len(traces)


def test_sft_imitates_only_clean_successes(traces):
    kept = set(corpora.sft(traces)["trace_id"])
    slipped = {t["trace_id"] for t in traces if t["success"] and any(s["slip"] for s in t["steps"])}
    failed = {t["trace_id"] for t in traces if not t["success"]}
    assert slipped and failed  # the fixture has both kinds, so the check below can fail
    assert not kept & (slipped | failed)
    assert len(kept) == sum(t["success"] for t in traces) - len(slipped)


@pytest.mark.parametrize("world", ["search", "math"])
def test_training_and_evaluation_tasks_are_disjoint(world, traces):
    train_ids = {t["task"]["task_id"] for t in traces if t["world"] == world}
    train_q = {t["task"]["question"] for t in traces if t["world"] == world}
    rl = corpora.rl_prompts(world)
    ev, ood = corpora.eval_tasks(world, split="eval"), corpora.eval_tasks(world, split="ood")
    assert len(ev) >= 200 and len(ood) >= 200
    for ds in (rl, ev, ood):
        assert not train_ids & set(ds["task_id"])
        assert not train_q & {p[1]["content"] for p in ds["prompt"]}
    assert not set(rl["task_id"]) & set(ev["task_id"])
    with pytest.raises(ValueError, match="split='eval' or 'ood'"):
        corpora.eval_tasks(world, split="train")
