import collections

import pytest

from foresight_lite.envs import MAX_TURNS, Action, make_env, normalize_answer
from foresight_lite.envs.search import MAX_QUERY_CHARS, SPLIT_SHARES, all_questions, build_world, split_of


def test_unknown_world_and_split():
    with pytest.raises(ValueError, match="Unknown world 'chess'; choose one of: search, math."):
        make_env("chess")
    with pytest.raises(ValueError, match="Unknown split"):
        make_env("search", split="test")


def test_normalize_answer():
    assert normalize_answer("The  Velmora!") == "velmora"
    assert normalize_answer("an Apple, a day") == "apple day"


def test_search_episode():
    env = make_env("search", seed=0, split="train")
    task = next(t for t in env.tasks if t.hops == 2)
    assert env.reset(task) == task.question
    obs = env.step(Action.call("search", query=task.plan["start"]))
    assert obs.text.startswith("[1] " + task.plan["start"] + ":")
    assert task.plan["chain"][1] in obs.text  # the bridge entity is in the first passage
    obs = env.step(Action.call("search", query=task.plan["chain"][1]))
    assert task.answer in obs.text
    env.step(Action.final(f"the {task.answer.upper()}."))
    assert env.done and env.success


def test_search_bad_input_gives_clear_observations():
    env = make_env("search", seed=0, split="train")
    env.reset(0)
    assert env.step(Action.call("search", query="")).text.startswith("Error: empty query")
    assert env.step(Action.call("search", query="   ")).error
    assert "too long" in env.step(Action.call("search", query="x" * (MAX_QUERY_CHARS + 1))).text
    assert env.step(Action.call("search", query="the of and")).text.startswith("No passages match")
    assert "unknown tool 'browse'" in env.step(Action.call("browse", url="x")).text
    assert env.step(Action.call("search")).error  # missing argument


def test_turn_cap_ends_episode_as_failure():
    env = make_env("search", seed=0, split="train")
    env.reset(0)
    for _ in range(MAX_TURNS):
        env.step(Action.call("search", query="nothing"))
    assert env.done and not env.success
    assert env.step(Action.final(env.task.answer)).text == "The episode is over."


def test_splits_are_disjoint_and_large_enough():
    keys = {}
    for split in ("train", "rl", "eval", "ood"):
        env = make_env("search", seed=0, split=split)
        keys[split] = {(t.plan["start"], tuple(t.plan["path"])) for t in env.tasks}
        assert len(env.tasks) == len(keys[split])
    for a in keys:
        for b in keys:
            if a < b:
                assert not keys[a] & keys[b], (a, b)
    assert len(keys["eval"]) >= 200 and len(keys["ood"]) >= 200
    world = build_world(0)
    ood_people = {n for n, e in world.entities.items() if not e.seen}
    for split in ("train", "rl", "eval"):  # unseen entities never appear outside ood
        for t in make_env("search", seed=0, split=split).tasks:
            assert not set(t.plan["chain"]) & ood_people
    assert {t.hops for t in make_env("search", split="ood").tasks} == {1, 2, 3}


def test_ood_entities_are_only_indexed_for_ood():
    world = build_world(0)
    person = next(n for n, e in world.entities.items() if not e.seen)
    train, ood = make_env("search", split="train"), make_env("search", split="ood")
    train.reset(0), ood.reset(0)
    assert person not in train.step(Action.call("search", query=person)).text
    assert ood.step(Action.call("search", query=person)).text.startswith(f"[1] {person}:")


def test_questions_split_in_the_stated_shares():
    world = build_world(0)
    questions = all_questions(world)
    counts = collections.Counter(split_of(name, path, 0) for name, path in questions)
    for split, share in SPLIT_SHARES.items():
        assert abs(counts[split] / len(questions) - share) < 0.05, (split, counts)
    assert split_of(*questions[0], 0) == split_of(*questions[0], 0)  # a stable hash, not a draw


def test_worlds_are_deterministic():
    a = make_env("search", seed=3, split="eval").tasks
    b = make_env("search", seed=3, split="eval").tasks
    assert a == b and a != make_env("search", seed=4, split="eval").tasks
    assert make_env("math", seed=1, split="rl").tasks == make_env("math", seed=1, split="rl").tasks


def test_popularity_varies():
    world = build_world(0)
    pops = sorted(e.popularity for e in world.entities.values() if e.seen and e.kind == "person")
    assert pops[-1] == 1.0 and pops[0] < 0.05


def test_math_episode_and_answers():
    env = make_env("math", seed=0, split="eval")
    task = env.tasks[0]
    env.reset(task)
    value = str(task.plan["start"])
    for op, b in task.plan["ops"]:
        value = env.step(Action.call("calculator", expression=f"{value} {op} {b}")).text
    assert value == task.answer
    env.step(Action.final(f"{task.answer} items"))
    assert env.success
    assert env.is_correct("1,200", "1200") and env.is_correct("1200.0", "1200")
    assert not env.is_correct("twelve", "12") and not env.is_correct(None, "12")


def test_math_problems_are_well_formed():
    for split, (lo, hi) in (("eval", (2, 5)), ("ood", (6, 7))):
        tasks = make_env("math", split=split).tasks
        assert len(tasks) >= 200
        for t in tasks:
            assert lo <= t.hops <= hi and t.question.endswith("?")
            assert all(v > 0 and float(v).is_integer() for v in t.plan["values"])
    train = {t.question for t in make_env("math", split="train").tasks}
    for split in ("rl", "eval", "ood"):
        assert not train & {t.question for t in make_env("math", split=split).tasks}


def test_math_bad_expression():
    env = make_env("math")
    env.reset(0)
    assert env.step(Action.call("calculator", expression="import os")).text.startswith("Error:")
