"""Probes: observation spans and values, teacher-forced token scores, and the notebook views."""

import json
import math

import pytest
import torch

from foresight_lite import corpora, probes
from foresight_lite.models import load_model
from foresight_lite.probes import first_turn_plans, states_multi_hop_plan
from foresight_lite.traces import generate_traces

TEXT = """Question: Where was Pozan Zokesshi born?
<think>search</think>
<tool_call>
{"name": "search", "arguments": {"query": "Pozan Zokesshi"}}
</tool_call>
<tool_response>
[1] Pozan Zokesshi: Pozan Zokesshi is a pilot born in 1957 in Vashos. Vashos lies on the Tarsk.
</tool_response>
<answer>Vashos</answer>"""


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


@pytest.fixture(scope="module")
def traces():
    return generate_traces("search", n=3, seed=0, split="rl", progress=False)


def test_observation_and_value_spans():
    (a, b), = probes.observation_spans(TEXT)
    assert TEXT[a:b].startswith("[1] Pozan") and TEXT[a:b].endswith("the Tarsk.")
    values = [(TEXT[s:e], new) for s, e, new in probes.value_spans(TEXT, a, b)]
    # the rank "[1]" is no value; names already in the question or earlier are not new
    assert values == [("Pozan Zokesshi", False), ("Pozan Zokesshi", False), ("1957", True),
                      ("Vashos", True), ("Vashos", False), ("Tarsk", True)]


def test_token_scores_match_the_model_loss_and_ignore_padding(tiny):
    model, tok = tiny
    texts = [TEXT, "Question: What is 3 * 4?\n<tool_response>\n12\n</tool_response>", TEXT[:80]]
    batched = probes.token_scores(model, tok, texts, batch_size=3)
    single = [probes.token_scores(model, tok, [t], batch_size=1)[0] for t in texts]
    for b, s, text in zip(batched, single, texts):
        assert len(b) == len(tok(text).input_ids) - 1
        assert [x["nll"] for x in b] == pytest.approx([x["nll"] for x in s], abs=1e-4)
    ids = torch.tensor([tok(TEXT).input_ids])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    assert sum(x["nll"] for x in batched[0]) / len(batched[0]) == pytest.approx(loss, rel=1e-4)


def test_classify_tokens_kinds_nest(tiny):
    model, tok = tiny
    scores = probes.classify_tokens(TEXT, probes.token_scores(model, tok, [TEXT])[0])
    kinds = {k: [TEXT[s["start"]:s["end"]] for s in scores if k in s["kinds"]] for k in probes.KINDS}
    assert set(kinds["new_value"]) <= set(kinds["value"]) <= set(kinds["observation"])
    assert "".join(kinds["new_value"]).replace(" ", "") == "1957VashosTarsk"
    assert not any("Question" in piece for piece in kinds["observation"])


def test_observation_nll_summary(tiny, traces):
    model, tok = tiny
    out = probes.observation_nll(model, tok, traces, n=2)
    assert out["traces"] == 2
    assert out["observation_tokens"] >= out["value_tokens"] >= out["new_value_tokens"] > 0
    for k in probes.KINDS:
        assert 0 < out[f"{k}_nll"] < 20 and 0 <= out[f"{k}_acc"] <= 1
    # an untrained model is close to uniform over its vocabulary
    assert abs(out["observation_nll"] - math.log(len(tok))) < 2
    assert probes.observation_nll(model, tok, traces, n=2) == out  # deterministic


def test_views(tiny, traces):
    model, tok = tiny
    text = corpora.trajectory_text(traces[0], insert_prob=1.0)
    page = probes.trajectory_html(text)
    assert "&lt;imaginary&gt;" in page and "<imaginary>" not in page and "#e8f0fe" in page
    both = probes.side_by_side_html({"a": "x < y", "b": "z"})
    assert both.count("<td") == 2 and "x &lt; y" in both
    plain = corpora.trajectory_text(traces[0])
    scores = probes.classify_tokens(plain, probes.token_scores(model, tok, [plain])[0])
    heat = probes.token_nll_html(plain, scores, title="base")
    assert "NLL" in heat and "base" in heat and "Question" in heat


def test_loss_mask_html_greys_out_observations(tiny, traces):
    _, tok = tiny
    row = corpora.fe_sft(traces)[0]
    page = probes.loss_mask_html(tok, row["messages"], row["tools"])
    green = page.split('color:#137333">')[1:]
    assert green and all("tool_response" not in g.split("</span>")[0] for g in green)
    assert "&lt;imaginary&gt;" in green[0].split("</span>")[0]
    assistant = [m for m in row["messages"] if m["role"] == "assistant"]
    turn = probes.assistant_turn_text(assistant[0])
    assert turn.startswith("<imaginary>") and ("<tool_call>" in turn or "<answer>" in turn)
    call = {"role": "assistant", "content": "<think>t</think>", "tool_calls": [
        {"type": "function", "function": {"name": "search", "arguments": '{"query": "Vashos"}'}}]}
    assert probes.assistant_turn_text(call) == ('<think>t</think>\n<tool_call>\n'
                                                '{"name": "search", "arguments": {"query": "Vashos"}}\n</tool_call>')


def test_loss_token_shares_count_each_span_and_the_policy(tiny, traces):
    _, tok = tiny
    turn = {"role": "assistant", "content": "<keyword>Vashos</keyword>\n<think>search</think>",
            "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": {"query": "Pozan"}}}]}
    shares = probes.loss_token_shares(tok, [{"messages": [{"role": "user", "content": "Q?"}, turn]}])
    keyword_tokens = len(tok("<keyword>Vashos</keyword>", add_special_tokens=False)["input_ids"])
    assert shares["keyword"] == keyword_tokens and shares["imaginary"] == shares["analysis"] == 0
    assert shares["total"] == len(tok(probes.assistant_turn_text(turn), add_special_tokens=False)["input_ids"])
    assert shares["policy_share"] == shares["policy"] / shares["total"]

    plain = probes.loss_token_shares(tok, corpora.sft(traces))
    fe = probes.loss_token_shares(tok, corpora.fe_sft(traces))
    assert plain["total"] > 0 and plain["policy_share"] == 1.0
    assert all(fe[span] > 0 for span in ("imaginary", "keyword", "analysis", "confidence"))
    assert 0 < fe["policy_share"] < 1 and fe["total"] > plain["total"]
    assert probes.loss_token_shares(tok, [])["policy_share"] is None


def test_metrics_curves_pairs_and_cache(tmp_path):
    stage = tmp_path / "mt"
    stage.mkdir()
    rows = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}, {"step": 2, "train_loss": 2.7}]
    (stage / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fig = probes.loss_curves({"arm": stage})
    assert list(fig.data[0].y) == [3.0, 2.5]
    episodes = [{"success": True, "steps": [{"confidence": 80}, {"confidence": None}]},
                {"success": False, "steps": [{"confidence": 30}, {"confidence": 10}]}]
    assert probes.confidence_pairs(episodes) == ([0.8, 0.3, 0.1], [True, False, False])
    assert probes.confidence_pairs(episodes, steps="first") == ([0.8, 0.3], [True, False])
    calls = []
    path = tmp_path / "eps" / "search-eval.jsonl"
    first = probes.cached_episodes(path, lambda: calls.append(1) or episodes)
    again = probes.cached_episodes(path, lambda: calls.append(1) or [])
    assert first == again == episodes and calls == [1]
    assert probes.perplexity(0.0) == 1.0 and probes.perplexity(None) is None


def test_states_multi_hop_plan_reads_only_the_plan():
    assert states_multi_hop_plan("I need the organisation X works for, then the founder of that organisation. "
                                 "I will search for X.")
    assert not states_multi_hop_plan("I need the founder of Zonde Institute. I will search for Zonde Institute.")
    # a ", then" after the plan (in a query, say) is not a plan
    assert not states_multi_hop_plan("I need the founder of Z. I will search for Z, then answer.")


def test_first_turn_plans_one_greedy_turn_per_question(tiny):
    model, tok = tiny
    questions = ["Who founded the organisation that X works for?", "Where was Y born?"]
    plans = first_turn_plans(model, tok, questions, max_new_tokens=6)
    assert len(plans) == 2 and all(isinstance(p, str) for p in plans)
    # each row is its own question's turn (batched with left padding, in order), not the prompt
    assert plans == [first_turn_plans(model, tok, [q], max_new_tokens=6)[0] for q in questions]
    assert not any(q in p for q, p in zip(questions, plans))
