"""Real-data adapters (HotpotQA, GSM8K) on small fixtures in the real schemas, offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

from foresight_lite.envs import Action
from foresight_lite.envs.calculator import evaluate
from foresight_lite.envs.real import (DataUnavailable, GSM8KEnv, HotpotQAEnv, calculator_calls, gsm8k_answer,
                                      gsm8k_tasks, hotpotqa_tasks, load_gsm8k, load_hotpotqa, make_real_env)

FIXTURES = Path(__file__).parent / "fixtures"
HOTPOT = FIXTURES / "hotpotqa_distractor.jsonl"
GSM8K = FIXTURES / "gsm8k.jsonl"
REAL_GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"


def same_number(a: str, b: str) -> bool:
    return evaluate(a) == evaluate(b)


# ---------------------------------------------------------------- HotpotQA

def test_hotpotqa_loads_in_the_hub_schema():
    ds = load_hotpotqa(path=HOTPOT)
    assert len(ds) == 3
    assert {"id", "question", "answer", "type", "level", "supporting_facts", "context"} <= set(ds.features)
    assert all(len(row["context"]["title"]) == 10 for row in ds)
    assert len(load_hotpotqa(path=HOTPOT, n=2)) == 2
    task = hotpotqa_tasks(ds, "validation")[1]
    assert task.answer == "Chief of Protocol" and task.hops == 2
    assert task.plan["supporting_titles"] == ["Kiss and Tell (1945 film)", "Shirley Temple"]
    assert task.plan["supporting_facts"][2] == ["Shirley Temple", 1]
    assert len(task.plan["context"]) == 10 and json.loads(json.dumps(task.to_dict()))["plan"] == task.plan


def test_hotpotqa_official_schema_gives_the_same_tasks(tmp_path):
    official = []  # the official files are one JSON array of rows with `_id` and lists of pairs
    for r in map(json.loads, HOTPOT.read_text().splitlines()):
        facts, context = r["supporting_facts"], r["context"]
        official.append({"_id": r["id"], "answer": r["answer"], "question": r["question"],
                         "type": r["type"], "level": r["level"],
                         "supporting_facts": [list(p) for p in zip(facts["title"], facts["sent_id"])],
                         "context": [list(p) for p in zip(context["title"], context["sentences"])]})
    (tmp_path / "dev.json").write_text(json.dumps(official))
    mine, hub = (hotpotqa_tasks(load_hotpotqa(path=p), "dev") for p in (tmp_path / "dev.json", HOTPOT))
    assert [(t, t.plan) for t in mine] == [(t, t.plan) for t in hub]


def test_hotpotqa_search_finds_the_supporting_paragraphs():
    env = make_real_env("hotpotqa", path=HOTPOT)
    assert isinstance(env, HotpotQAEnv) and env.split == "validation"
    assert [t["function"]["name"] for t in env.tools] == ["search"]
    for task in env.tasks:
        assert env.reset(task) == task.question
        gold = set(task.plan["supporting_titles"])
        obs = env.step(Action.call("search", query=task.question))
        assert len(obs.facts) == 2 and gold & set(obs.facts), (task.question, obs.facts)
        for title in gold:  # searching a supporting title brings its paragraph into the top 2
            obs = env.step(Action.call("search", query=title))
            assert title in obs.facts and f"] {title}: " in obs.text
    obs = env.step(Action.call("search", query="Shirley Temple"))  # still on the last task: its own paragraphs only
    assert obs.text.startswith("No passages match") and not obs.facts


def test_hotpotqa_episode_and_exact_match():
    env = make_real_env("hotpotqa", path=HOTPOT)
    env.reset(1)
    obs = env.step(Action.call("search", query="Kiss and Tell 1945 film Corliss Archer"))
    assert obs.text.startswith("[1] Kiss and Tell (1945 film): Kiss and Tell is a 1945 American comedy film")
    obs = env.step(Action.call("search", query="Shirley Temple"))
    assert "Chief of Protocol" in obs.text.split("\n")[0]
    env.step(Action.final("the Chief of Protocol."))
    assert env.done and env.success
    env.reset(0)
    assert env.step(Action.call("search", query="  ")).error
    assert env.step(Action.call("search", query="the of and")).text.startswith("No passages")
    env.step(Action.final("no"))
    assert env.done and not env.success
    assert HotpotQAEnv.is_correct("Greenwich Village, New York City.", "Greenwich Village, New York City")
    assert not HotpotQAEnv.is_correct("Greenwich Village", "Greenwich Village, New York City")
    assert not HotpotQAEnv.is_correct(None, "yes")


# ---------------------------------------------------------------- GSM8K

def test_gsm8k_answers_and_annotations_parse():
    assert gsm8k_answer("So 3 + 4 = <<3+4=7>>7.\n#### 1,860,000") == "1860000"
    assert gsm8k_answer("#### -3") == "-3"
    with pytest.raises(ValueError, match="####"):
        gsm8k_answer("The answer is 7.")
    assert calculator_calls("a <<48/2=24>>24 b <<2*.25=0.50>>0.50") == [("48/2", "24"), ("2*.25", "0.50")]
    tasks = gsm8k_tasks(load_gsm8k(path=GSM8K), "test")
    assert [t.answer for t in tasks] == ["252", "5240", "9", "1860000", "8"]
    assert [t.hops for t in tasks] == [3, 3, 2, 1, 0]
    assert tasks[2].plan["calls"] == [["12/8", "1.5"], ["6*1.5", "9"]]


def test_gsm8k_episode_reproduces_the_annotations():
    env = make_real_env("gsm8k", path=GSM8K)
    assert isinstance(env, GSM8KEnv) and env.split == "test"
    assert [t["function"]["name"] for t in env.tools] == ["calculator"]
    for task in env.tasks:
        env.reset(task)
        for expression, result in task.plan["calls"]:
            obs = env.step(Action.call("calculator", expression=expression))
            assert not obs.error and same_number(obs.text, result), (expression, obs.text, result)
        env.step(Action.final(f"{int(task.answer):,}"))  # "5,240" matches 5240
        assert env.success
    env.reset(1)
    env.step(Action.final("$5,240 in total"))
    assert env.success
    assert not GSM8KEnv.is_correct("5241", "5240") and not GSM8KEnv.is_correct("many", "5240")


def test_local_copies_in_other_formats(tmp_path):
    ds = load_gsm8k(path=GSM8K)
    ds.to_parquet(str(tmp_path / "test.parquet"))
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "saved"))
    for path in (tmp_path / "test.parquet", tmp_path / "saved"):
        assert load_gsm8k(path=path)["answer"] == ds["answer"]
    with pytest.raises(FileNotFoundError):
        load_gsm8k(path=tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="Unknown real world"):
        make_real_env("squad", path=GSM8K)


# ---------------------------------------------------------------- without the Hub

HUB_FAILURES = [OfflineModeIsEnabled("offline"), ConnectionError("no network"),
                LocalEntryNotFoundError("not cached"), datasets.exceptions.DatasetNotFoundError("gone")]


@pytest.mark.parametrize("error", HUB_FAILURES)
@pytest.mark.parametrize("load", [load_hotpotqa, load_gsm8k])
def test_hub_failure_becomes_a_clear_error(monkeypatch, load, error):
    def unreachable(*args, **kwargs):
        raise error

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DataUnavailable, match=r"is not reachable offline .*pass path= a local copy") as info:
        load()
    assert isinstance(info.value, RuntimeError) and info.value.__cause__ is error


def test_offline_hub_raises_data_unavailable(tmp_path):
    """The real `load_dataset` with HF_HUB_OFFLINE=1 and an empty cache: no network, no hang."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "HF_DATASETS_CACHE": str(tmp_path / "ds")}
    code = "from foresight_lite.envs.real import load_gsm8k; load_gsm8k()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and last.startswith("foresight_lite.envs.real.DataUnavailable: openai/gsm8k"), last
    assert "pass path= a local copy" in last


# ---------------------------------------------------------------- the real GSM8K test set, when present

@pytest.mark.skipif(not REAL_GSM8K.exists(), reason=f"real GSM8K test set not found at {REAL_GSM8K}")
def test_real_gsm8k_annotations_are_reproduced_by_the_calculator():
    env = make_real_env("gsm8k", path=REAL_GSM8K)  # every '####' answer parses, or this raises
    assert len(env.tasks) == 1319
    calls = [c for t in env.tasks for c in t.plan["calls"]]
    failures = []
    for expression, result in calls:
        env.reset(0)
        out = env.step(Action.call("calculator", expression=expression)).text
        try:
            if same_number(out, result):
                continue
        except ValueError:
            pass
        failures.append((expression, result, out))
    share = 1 - len(failures) / len(calls)
    assert len(calls) > 4000 and share >= 0.99, (f"{share:.2%} of {len(calls)}", failures[:20])
