import pytest

from foresight_lite.envs import make_env
from foresight_lite.envs.base import rng_for
from foresight_lite.teacher import make_teacher
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
