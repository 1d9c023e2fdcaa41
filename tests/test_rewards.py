"""The FC-RL rewards: calibration, grounding, format and success, edge cases included, and the
TRL reward functions built on them."""

import math

import pytest

from foresight_lite.format import parse_step
from foresight_lite.rewards import (MISSING_CONFIDENCE_PENALTY, calib, calibration_reward, format_ok, format_reward,
                                    ground, grounding_reward, reward_functions, score_completion, score_episode,
                                    score_record, success, success_reward, turns_from_messages)

STEP = ("<imaginary>search Pozan Zokesshi -> find [ORG1] -> answer [CITY1]</imaginary>\n"
        "<keyword>{keywords}</keyword>\n<analysis>Missing: the employer.</analysis>\n"
        "<confidence>{q}</confidence>\n<think>Look the person up.</think>\n")
CALL = '<tool_call>\n{"name": "search", "arguments": {"query": "Pozan Zokesshi"}}\n</tool_call>'
OBS = "Pozan Zokesshi is a pilot who works for Ardent Works."
QUESTION = "In which city is the organisation that Pozan Zokesshi works for headquartered?"


def turn(keywords="Ardent Works, Velmora", q="70", action=CALL):
    return STEP.format(keywords=keywords, q=q) + action


@pytest.mark.parametrize("q, won, expected", [
    (0.0, False, 0.0), (0.0, True, 0.0),     # q = 0: right when failing, worst when succeeding
    (1.0, True, 1.0), (1.0, False, -1.0),    # q = 100: best when succeeding, worst when failing
    (0.8, True, 1 - 0.04), (0.3, False, -0.09),
    (1.7, True, 1.0), (-0.5, False, 0.0),    # out of range: clamped to [0, 1]
])
def test_calibration_reward(q, won, expected):
    assert calibration_reward(q, won) == pytest.approx(expected)


@pytest.mark.parametrize("missing", [None, float("nan"), "high", object()])
def test_missing_confidence_gets_the_worst_score(missing):
    assert calibration_reward(missing, True) == MISSING_CONFIDENCE_PENALTY == -1.0
    # never better than any stated confidence, whatever the outcome
    assert all(calibration_reward(q / 10, won) >= -1.0 for q in range(11) for won in (True, False))


def test_grounding_reward():
    later = ["Ardent Works is headquartered in Velmora."]
    assert grounding_reward(["Ardent Works", "Velmora"], later, "Velmora") == 1.0
    assert grounding_reward(["Ardent Works", "Mars"], later, "x") == 0.5
    assert grounding_reward(["Tarsk"], [], "Tarsk") == 1.0  # the gold answer counts
    assert grounding_reward([], later, "Velmora") == 0.0  # no keywords: like wrong ones
    assert grounding_reward(["Ardent"], ["Ardentia"], "x") == 0.0  # whole words only
    # already seen (the question, an earlier observation) is not a prediction
    assert grounding_reward(["Pozan Zokesshi", "Velmora"], later + [OBS], "x", known=QUESTION) == 0.5


def test_keyword_only_in_the_agents_own_action_does_not_count():
    texts = [turn(keywords="Velmora", action=CALL.replace("Pozan Zokesshi", "Velmora")),
             turn(keywords="Velmora", action="<answer>Tarsk</answer>")]
    episode = score_episode(texts, ["Nothing about that.", None], gold="Tarsk", question=QUESTION)
    assert [t.ground for t in episode.turns] == [0.0, 0.0]


def test_keywords_are_checked_against_observations_after_their_turn():
    texts = [turn(keywords="Ardent Works"), turn(keywords="Ardent Works", action="<answer>Velmora</answer>")]
    episode = score_episode(texts, [OBS, None], gold="Velmora", question=QUESTION)
    assert [t.ground for t in episode.turns] == [1.0, 0.0]  # turn 2 had already seen it
    assert episode.success and episode.answer == "Velmora"


def test_score_episode_success_calibration_and_format():
    texts = [turn(q="80"), turn(keywords="Velmora", q="90", action="<answer>Velmora</answer>")]
    won = score_episode(texts, [OBS, None], gold="velmora", question=QUESTION)
    assert won.success and won.format == 1.0
    assert [t.calib for t in won.turns] == pytest.approx([1 - 0.2 ** 2, 1 - 0.1 ** 2])
    assert won.confidence == pytest.approx(0.85)
    assert won.episode_reward == pytest.approx(1.1)
    lost = score_episode(texts[:1] + [turn(q="abc", action="<answer>Quenbrook</answer>")], [OBS, None],
                         gold="Velmora", question=QUESTION)
    assert not lost.success and lost.turns[1].calib == -1.0 and lost.format == 0.5
    assert lost.turns[1].confidence is None and lost.confidence == pytest.approx(0.8)


def test_math_success_is_numeric_and_an_episode_without_answer_fails():
    assert success_reward("1,200 cookies", "1200", world="math") == 1.0
    assert success_reward("1,200 cookies", "1200", world="search") == 0.0
    assert success_reward(None, "1200", world="math") == 0.0
    unfinished = score_episode([turn()], [OBS], gold="Velmora", question=QUESTION)
    assert not unfinished.success and unfinished.answer is None


def test_malformed_output_is_scored_never_raised():
    for texts in ([], [""], ["<confidence>"], ["<keyword>a, b"], [None], ["<tool_call>{not json</tool_call>"]):
        episode = score_episode(texts, [], gold="x")
        assert not episode.success and episode.format == 0.0 and episode.calib == -1.0
    assert format_reward([parse_step(turn()), parse_step("junk")]) == 0.5 and format_reward([]) == 0.0


def test_trl_reward_functions_on_multi_turn_messages():
    prompt = [{"role": "system", "content": "sys"}, {"role": "user", "content": QUESTION}]
    call = {"type": "function", "function": {"name": "search", "arguments": {"query": "Pozan Zokesshi"}}}
    completion = [{"role": "assistant", "content": STEP.format(keywords="Ardent Works", q="60").strip(),
                   "tool_calls": [call]},
                  {"role": "tool", "name": "search", "content": OBS},
                  {"role": "assistant", "content": turn(keywords="Velmora", q="40", action="<answer>Velmora</answer>")}]
    texts, observations = turns_from_messages(completion)
    assert texts[0].endswith(CALL) and observations == [OBS, None]
    kwargs = dict(answer=["Velmora", "Quenbrook"], world=["search", "search"])
    prompts, completions = [prompt, prompt], [completion, completion]
    assert success(prompts, completions, **kwargs) == [1.0, 0.0]
    assert format_ok(prompts, completions, **kwargs) == [1.0, 1.0]
    assert ground(prompts, completions, **kwargs) == [pytest.approx(1.0), pytest.approx(0.5)]
    assert calib(prompts, completions, **kwargs)[1] == pytest.approx(-(0.6 ** 2 + 0.4 ** 2) / 2)
    scored = score_completion(prompt, completion, gold="Velmora")
    assert success(prompts[:1], completions[:1], episode=[scored], answer=["ignored"]) == [1.0]
    funcs, weights = reward_functions(("success", "format"))
    assert [f.__name__ for f in funcs] == ["success", "format_ok"] and weights == [1.0, 0.1]
    with pytest.raises(ValueError, match="Unknown reward component"):
        reward_functions(("speed",))


def test_score_record_reads_evaluation_records():
    record = {"question": QUESTION, "answer": "Velmora", "world": "search", "layout": "full",
              "steps": [{"text": turn(), "observation": OBS},
                        {"text": turn(keywords="Velmora", action="<answer>Velmora</answer>"), "observation": None}]}
    episode = score_record(record)
    assert episode.success and len(episode.turns) == 2 and not math.isnan(episode.calib)
