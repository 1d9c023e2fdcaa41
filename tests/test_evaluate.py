import pytest

from foresight_lite.envs import make_env
from foresight_lite.evaluate import _advance, _finish, _new_record, compare_paired, run_episodes, summarize
from foresight_lite.rewards import keyword_grounded
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
    assert episode["steps"][1]["grounded"] == [answer]  # the next passage shows it
    assert episode["steps"][2]["grounded"] == []  # read in a passage already: no prediction
    bad = _play(make_env("search", split="eval"), task, ["<think>I will sea"])
    assert bad["ended"] == "no action" and not bad["success"] and not bad["steps"][0]["format_ok"]
    s = summarize([episode, bad])
    assert s["success"] == 0.5 and s["format_adherence"] == 3 / 4 and s["grounding"] == 2 / 4
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


def test_summarize_k_samples_per_task():
    def ep(task, ok):
        return {"task_id": task, "success": ok, "generated_tokens": 1, "steps": []}
    s = summarize([ep("a", True), ep("a", False), ep("b", False), ep("b", False)])
    assert s["k"] == 2 and s["mean_at_k"] == 0.25 and s["success"] == 0.25
    assert s["pass_at_k"] == 0.5  # task a: one of its two samples succeeded; task b: none
    greedy = summarize([ep("a", True), ep("b", False)])
    assert greedy["k"] == 1 and greedy["pass_at_k"] == greedy["mean_at_k"] == greedy["success"] == 0.5


def test_compare_paired_pairs_episodes_by_task_and_sample():
    def ep(task, ok, sample=0):
        return {"task_id": task, "sample": sample, "success": ok}
    a = [ep("t1", True), ep("t2", True), ep("t3", False), ep("t3", True, sample=1)]
    b = [ep("t3", True, sample=1), ep("t3", True), ep("t2", False), ep("t1", True)]  # another order
    assert compare_paired(a, b) == {"tasks": 4, "a": 3, "b": 3, "a_only": 1, "b_only": 1, "p_value": 1.0}
    with pytest.raises(ValueError, match=r"played different tasks \(3 of 4 and 3 in common\)"):
        compare_paired(a, b[:3])


@pytest.fixture(scope="module")
def tiny():
    from foresight_lite.models import load_model

    return load_model("tiny")


def test_k_samples_share_batches_and_are_seeded(tiny):
    model, tokenizer = tiny
    batches = []
    generate = model.generate

    def counting(**kwargs):
        batches.append(kwargs["input_ids"].shape[0])
        return generate(**kwargs)

    model.generate = counting
    try:
        kwargs = dict(world="math", split="eval", n=2, samples=3, temperature=1.0, batch_size=6,
                      max_new_tokens=8, progress=False)
        first = run_episodes(model, tokenizer, **kwargs)
        again = run_episodes(model, tokenizer, **kwargs)
        other = run_episodes(model, tokenizer, **kwargs, sample_seed=1)
    finally:
        del model.generate
    assert batches[0] == 6  # two tasks x three samples in one generate call
    assert [e["sample"] for e in first] == [0, 1, 2, 0, 1, 2]
    assert len({e["task_id"] for e in first}) == 2
    texts = [e["steps"][0]["text"] for e in first]
    assert texts == [e["steps"][0]["text"] for e in again]  # same seed, same samples
    assert texts != [e["steps"][0]["text"] for e in other]
    assert len(set(texts[:3])) > 1  # the samples of one task differ
    assert summarize(first)["k"] == 3
    with pytest.raises(ValueError, match="pass a temperature above 0"):
        run_episodes(model, tokenizer, world="math", n=1, samples=2, progress=False)


def test_forced_prefix_starts_the_turn(tiny):
    from foresight_lite.evaluate import _generate

    model, tokenizer = tiny
    conversation = [{"role": "user", "content": "2 + 2?"}]
    texts, lengths = _generate(model, tokenizer, [conversation, conversation], tools=[], max_new_tokens=4,
                               temperature=0.0, seed=(0,), prefixes=["<imaginary>add", ""])
    assert texts[0].startswith("<imaginary>add") and not texts[1].startswith("<imaginary>add")
    assert lengths[0] <= 4  # the forced text is not counted as generated


def _saved_stage(folder, tiny, **settings):
    from foresight_lite.stages.common import save_model, write_json

    folder.mkdir(parents=True)
    save_model(*tiny, folder / "model")
    write_json(folder / "stage.json", {"preset": "tiny", "seed": 0, **settings})
    write_json(folder / "complete.json", {"seconds": 1.0})


def test_layout_follows_the_stage_a_model_started_from(tmp_path, tiny):
    from foresight_lite.evaluate import stage_layout

    _saved_stage(tmp_path / "a" / "sft", tiny, stage="sft", layout="state")
    _saved_stage(tmp_path / "a" / "b" / "rl", tiny, stage="rl", init=str(tmp_path / "a" / "sft" / "model"))
    assert stage_layout(tmp_path / "a" / "b" / "rl") == "state"  # rl -> init -> sft's layout
    _saved_stage(tmp_path / "c" / "mt", tiny, stage="mt")
    assert stage_layout(tmp_path / "c" / "mt") == "full"


def test_finished_evaluations_are_read_back_not_replayed(tmp_path, tiny, monkeypatch):
    import json

    import foresight_lite.evaluate as evaluate

    _saved_stage(tmp_path / "run" / "sft", tiny, stage="sft", layout="plain")
    kwargs = dict(worlds=("math",), splits=("eval",), batch_size=2, max_new_tokens=4, progress=False)
    first = evaluate.evaluate_run(tmp_path / "run", n=1, **kwargs)
    cell = json.loads((tmp_path / "run" / "eval" / "sft" / "math-eval.json").read_text())
    assert cell["settings"]["layout"] == "plain" and cell["seconds"] > 0 and cell["row"] == first[0]
    stored = evaluate.stored_episodes(tmp_path / "run", "sft", "math", "eval")
    assert len(stored) == 1 and stored[0]["world"] == "math"
    assert evaluate.stored_episodes(tmp_path / "run", "sft", "search", "eval") == []
    played = []
    monkeypatch.setattr(evaluate, "run_episodes", lambda *a, **k: played.append(k["n"]) or [])
    assert evaluate.evaluate_run(tmp_path / "run", n=1, **kwargs) == first and played == []
    evaluate.evaluate_run(tmp_path / "run", n=2, **kwargs)  # other settings: played again
    evaluate.evaluate_run(tmp_path / "run", n=1, force=True, **kwargs)
    assert played == [2, 1]


def test_turn_cache_matches_unnumbered_prompts_to_the_rows_they_continue():
    from foresight_lite.evaluate import TurnCache

    cache = TurnCache()
    assert cache.match([[1, 2], [3]]) == [0, 1]  # nothing cached yet: fresh keys
    cache.rows, cache.seen, cache.past = [0, 1, 2], {0: [1, 2], 1: [1, 2], 2: [5, 6]}, object()
    # a row that left, the rest in another order; two rows with the same history each take one
    assert cache.match([[5, 6, 7], [1, 2, 9], [1, 2, 8]]) == [2, 0, 1]
    assert cache.segments([2, 0, 1], [[5, 6, 7], [1, 2, 9], [1, 2, 8]]) == [[7], [9], [8]]
    # a prompt that continues no row: keys 0..n-1, which the exact check then refuses
    keys = cache.match([[1, 2, 3], [4]])
    assert keys == [0, 1] and cache.segments(keys, [[1, 2, 3], [4]]) is None and cache.refills == 1


def test_turn_cache_prefills_only_the_new_tokens_and_changes_none(tiny):
    """A turn that reuses the last turn's KV cache writes exactly what a fresh prefill writes, also
    after a conversation left the batch and with replies of unequal length."""
    from foresight_lite.evaluate import TurnCache, _generate

    model, tokenizer = tiny
    env = make_env("search", split="eval")
    conversations = [[{"role": "system", "content": env.system_prompt}, {"role": "user", "content": task.question}]
                     for task in env.tasks[:3]]
    # the untrained model's replies start with a space, which `strip` drops, so its text would not
    # give back its tokens; a forced start keeps them
    cache, kwargs = TurnCache(), dict(tools=env.tools, temperature=0.0, seed=(0,))
    for max_new_tokens in (9, 5):  # two turns of history, the second shorter
        texts, _ = _generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens, turn_cache=cache,
                             rows=range(len(conversations)), prefixes=["Plan:"] * 3, **kwargs)
        for conversation, text in zip(conversations, texts):
            conversation += [{"role": "assistant", "content": text},
                             {"role": "tool", "name": "search", "content": "[1] Zed Arnow: born 1931."}]
    rows = [0, 2]  # conversation 1 has ended
    reused, _ = _generate(model, tokenizer, [conversations[r] for r in rows], max_new_tokens=12, turn_cache=cache,
                          rows=rows, **kwargs)
    fresh, _ = _generate(model, tokenizer, [conversations[r] for r in rows], max_new_tokens=12, **kwargs)
    assert (cache.reuses, cache.refills) == (2, 0)
    assert reused == fresh
    # a history that no longer matches what the cache saw is prefilled anew, not misread
    conversations[0][-1]["content"] = "[1] something else"
    again, _ = _generate(model, tokenizer, [conversations[0]], max_new_tokens=12, turn_cache=cache, rows=[0], **kwargs)
    assert cache.refills == 1
    assert again == _generate(model, tokenizer, [conversations[0]], max_new_tokens=12, **kwargs)[0]
