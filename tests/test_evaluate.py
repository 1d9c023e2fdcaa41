import pytest

from foresight_lite.envs import make_env
from foresight_lite.evaluate import _advance, _finish, _new_record, keyword_grounded, run_episodes, summarize
from foresight_lite.format import render_step
from foresight_lite.envs import Action


def test_keyword_grounded():
    obs = ["[1] Pozan Zokesshi: works for Ardent Works.", "The Velmora river"]
    assert keyword_grounded("ardent works", obs, "x")
    assert keyword_grounded("The Velmora", obs, "x")
    assert keyword_grounded("1931", [], "1931")  # the gold answer counts
    assert not keyword_grounded("Ardent", ["Ardentia"], "x")  # whole words only
    assert not keyword_grounded("", obs, "x") and not keyword_grounded("Mars", obs, "x")


def _play(env, task, texts):
    record = _new_record(env, task, "full")
    for text in texts:
        if env.done or record["ended"]:
            break
        _advance(env, record, text, 10, "full", truncated=False)
    return _finish(env, record)


def test_records_and_grounding_from_a_scripted_episode():
    env = make_env("search", split="eval")
    task = next(t for t in env.tasks if t.hops == 2)
    bridge, answer = task.plan["chain"][1], task.answer
    step1 = render_step(think="look", action=Action.call("search", query=task.plan["start"]),
                        imaginary="search", keywords=[bridge, "Nowhere Land"], analysis="a", confidence=80)
    step2 = render_step(think="look", action=Action.call("search", query=bridge),
                        imaginary="search", keywords=[answer], analysis="a", confidence=90)
    step3 = render_step(think="done", action=Action.final(answer), imaginary="answer", keywords=[answer],
                        analysis="a", confidence=95)
    episode = _play(env, task, [step1, step2, step3])
    assert episode["success"] and episode["ended"] == "answered" and len(episode["steps"]) == 3
    assert episode["steps"][0]["grounded"] == [bridge]  # its own query is no evidence; a made-up name neither
    assert episode["steps"][2]["grounded"] == [answer]  # the gold answer
    bad = _play(make_env("search", split="eval"), task, ["<think>I will sea"])
    assert bad["ended"] == "no action" and not bad["success"] and not bad["steps"][0]["format_ok"]
    s = summarize([episode, bad])
    assert s["success"] == 0.5 and s["format_adherence"] == 3 / 4 and s["grounding"] == 3 / 4
    assert s["auroc_first"] is None  # the malformed episode reported no confidence: one class left


def test_summarize_calibration():
    def ep(conf, ok):
        return {"success": ok, "generated_tokens": 5, "steps": [
            {"format_ok": True, "confidence": conf, "keywords": [], "grounded": []}]}
    s = summarize([ep(90, True), ep(10, False), ep(60, True), ep(40, False)])
    assert s["auroc_first"] == 1.0 and s["brier_first"] == pytest.approx((0.01 + 0.01 + 0.16 + 0.16) / 4)
    assert summarize([]) == {"episodes": 0}


def test_run_episodes_with_an_untrained_model_counts_defects_and_never_crashes():
    from foresight_lite.models import load_model

    model, tokenizer = load_model("tiny")
    episodes = run_episodes(model, tokenizer, world="math", split="eval", n=3, batch_size=2,
                            max_new_tokens=16, progress=False)
    assert len(episodes) == 3 and not any(e["success"] for e in episodes)
    assert all(e["steps"] and e["steps"][0]["defects"] for e in episodes)
    assert summarize(episodes)["format_adherence"] == 0
