import pytest

from foresight_lite.playground import own_plan, what_if, what_if_html


def test_own_plan_cuts_at_the_imagined_rollout():
    step = "<imaginary>search X -> answer</imaginary>\n<keyword>Y</keyword>\n<confidence>70</confidence>"
    assert own_plan(step) == "<imaginary>search X -> answer</imaginary>"
    assert own_plan("<think>look it up</think>\n<tool_call>...") == "<think>look it up</think>"
    assert own_plan("gibberish") == "gibberish"


@pytest.fixture(scope="module")
def tiny():
    from foresight_lite.models import load_model

    return load_model("tiny")


def test_forced_plan_is_played_against_the_world(tiny):
    plan = "<imaginary>answer at once</imaginary>"
    [episode] = what_if(*tiny, world="math", task_index=1, plan=plan, max_new_tokens=8)
    first = episode["steps"][0]
    assert first["text"].startswith(plan) and first["imaginary"] == "answer at once"
    assert "missing <imaginary>" not in first["defects"] and episode["plan"] == plan
    assert episode["task_id"].endswith("00001")
    page = what_if_html([episode])
    assert "forced plan" in page and "answer at once" in page and "what the world returned" in page


def test_replays_and_bad_task(tiny):
    episodes = what_if(*tiny, world="search", samples=2, max_new_tokens=8)
    assert len(episodes) == 2 and "2 continuations of this plan" in what_if_html(episodes)
    with pytest.raises(ValueError, match="task_index must be between 0 and"):
        what_if(*tiny, world="math", task_index=10_000)
