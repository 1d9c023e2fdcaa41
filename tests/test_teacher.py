import pytest

from foresight_lite.envs import make_env
from foresight_lite.envs.base import rng_for
from foresight_lite.envs.search import RELATIONS
from foresight_lite.teacher import make_teacher, relation_phrase
from foresight_lite.traces import rollout


def success_rate(world, noise, n=150):
    env = make_env(world, split="train")
    teacher = make_teacher(world, noise=noise)
    wins = 0
    for i in range(n):
        rollout(env, teacher, env.tasks[i], rng_for("test", i))
        wins += env.success
    return wins / n


@pytest.mark.parametrize("world", ["search", "math"])
def test_default_success_is_in_band(world):
    assert 0.4 <= success_rate(world, 0.3) <= 0.85


@pytest.mark.parametrize("world", ["search", "math"])
def test_noise_lowers_success(world):
    assert success_rate(world, 0.0) > success_rate(world, 0.6) + 0.1


def test_noise_free_search_teacher_follows_the_chain():
    env = make_env("search", split="train")
    teacher = make_teacher("search", noise=0.0)
    task = next(t for t in env.tasks if t.hops == 2 and t.plan["popularity"] < 0.05)
    steps = rollout(env, teacher, task, rng_for("x"))
    queries = [s["action"]["arguments"]["query"] for s in steps if "tool" in s["action"]]
    assert queries == task.plan["chain"][:2] and env.success


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown world"):
        make_teacher("chess")
    with pytest.raises(ValueError, match="noise"):
        make_teacher("search", noise=2)


def test_math_teacher_quotes_each_clause_in_order():
    # a small student cannot count the operations ahead ("Step 1 of 3" for five); quoting the
    # next clause of the question lets it find each step by reading on, and stop at the question
    env = make_env("math", split="train")
    teacher = make_teacher("math", noise=0.0)
    for task in env.tasks[:30]:
        plan = task.plan
        assert len(plan["clauses"]) == len(plan["ops"])
        assert all(clause in task.question for clause in plan["clauses"] + [plan["ask"]])
        steps = rollout(env, teacher, task, rng_for("quote", task.task_id))
        quoted = [s["think"].split('"')[1] for s in steps]
        assert quoted == plan["clauses"] + [plan["ask"]] and env.success


def test_search_teacher_states_the_plan_then_each_finished_hop():
    env = make_env("search", split="train")
    teacher = make_teacher("search", noise=0.0)
    task = next(t for t in env.tasks if t.hops == 2 and t.plan["popularity"] < 0.05)
    steps = rollout(env, teacher, task, rng_for("plan"))
    first, second = steps[0]["think"], steps[1]["think"]
    start, bridge = task.plan["chain"][:2]
    rel1, rel2 = task.plan["path"]
    bridge_kind = {"person": "that person", "org": "that organisation", "city": "that city"}[RELATIONS[rel1][1]]
    # the second hop is named in the first turn, "that <kind>" standing where the bridge goes
    assert first == (f"I need {relation_phrase(rel1, start)}, then {relation_phrase(rel2, bridge_kind)}. "
                     f"I will search for {start}.")
    # each later turn says which hop it finished, then what is next or that nothing is left
    assert second == (f"Found: {relation_phrase(rel1, start)} is {bridge}. "
                      f"Next: {relation_phrase(rel2, bridge)}. I will search for {bridge}.")
    assert steps[2]["think"] == (f"Found: {relation_phrase(rel2, bridge)} is {task.answer}. "
                                 f"No hops are left; the answer is {task.answer}.")
    assert len(steps) == 3 and env.success
