"""Stage 3 (RL / FC-RL on TRL's GRPOTrainer): span-level credit on a hand-built batch, the tools TRL
calls, seconds-long smoke runs of both arms on the tiny preset, resume, and refusals."""

import json
import shutil
from contextlib import contextmanager

import pytest
from peft.tuners.lora import Linear as LoraLinear
from transformers import AttentionInterface
from trl import GRPOConfig

from foresight_lite.cli import main
from foresight_lite.envs import make_env
from foresight_lite.evaluate import TurnCache, generate_ids
from foresight_lite.models import load_model, merged_lora
from foresight_lite.stages import rl as rl_stage
from foresight_lite.stages.common import StageMissing
from foresight_lite.stages.rl import (SearchTools, SpanCreditGRPOTrainer, default_config, environment_factories,
                                      group_normalize, group_normalize_spans, rl_dataset, span_advantages,
                                      token_labels, train_rl)

TINY = dict(preset="tiny", init="base", smoke=True)
WM = ("<imaginary>search [PERSON1] -> answer [CITY1]</imaginary>\n<keyword>Velmora</keyword>\n"
      "<analysis>Missing: the city.</analysis>\n<confidence>{q}</confidence>")
CALL = '\n<think>Look it up.</think>\n<tool_call>\n{"name": "search", "arguments": {"query": "Pozan"}}\n</tool_call>'


@pytest.fixture(scope="module")
def tokenizer():
    return load_model("tiny")[1]


def test_every_token_gets_the_advantage_of_its_span(tokenizer):
    end = "<|im_end|>"
    tool = "\n<|im_start|>user\n<tool_response>\nPozan lives in Velmora.\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    # (text, expected advantage, model token?) pieces; tokenised piece by piece so the truth is known
    episode_adv, confidence_adv, weights = [0.5, -0.5], [1.0, -1.0], [0.2, 0.1]
    policy = [episode_adv[i] + weights[i] * confidence_adv[i] for i in range(2)]  # 0.7, -0.6
    rows = [
        [(WM.format(q=60), 2.0, 1), (CALL + end, policy[0], 1), (tool, 0.0, 0),
         (WM.format(q=90), -3.0, 1), ("\n<think>Done.</think>\n<answer>Velmora</answer>" + end, policy[0], 1)],
        [("<think>No foresight here.</think>\n<answer>Tarsk</answer>" + end, policy[1], 1)],  # no world-model span
    ]
    ids, masks, expected = [], [], []
    for pieces in rows:
        row_ids, row_mask, row_expected = [], [], []
        for text, adv, model in pieces:
            piece = tokenizer(text, add_special_tokens=False).input_ids
            row_ids += piece
            row_mask += [model] * len(piece)
            row_expected += [adv] * len(piece)
        ids.append(row_ids), masks.append(row_mask), expected.append(row_expected)
    length = max(map(len, ids))
    for i in range(2):  # right padding, masked like TRL's completion_mask
        pad = length - len(ids[i])
        ids[i] += [tokenizer.pad_token_id] * pad
        masks[i] += [0] * pad
        expected[i] += [0.0] * pad
    labels = [token_labels(tokenizer, row, mask) for row, mask in zip(ids, masks)]
    assert {label[0] for label in labels[0] if label} == {0, 1} and {label[0] for label in labels[1] if label} == {0}
    adv = span_advantages(labels, episode_advantages=episode_adv, confidence_advantages=confidence_adv,
                          world_model_advantages=[[2.0, -3.0], []], policy_weights=weights, length=length)
    assert adv.shape == (2, length)
    assert adv.tolist() == [pytest.approx(row) for row in expected]


def test_group_normalisation():
    assert group_normalize([1.0, 0.0, 3.0, 3.0], 2) == pytest.approx([0.7071, -0.7071, 0.0, 0.0], abs=1e-3)
    # spans are pooled over the whole group (all turns of all its episodes), rows keep their shape
    out = group_normalize_spans([[1.0, 0.0], [], [5.0], [5.0]], 2)
    assert out[0] == pytest.approx([0.7071, -0.7071], abs=1e-3) and out[1] == [] and out[2:] == [[0.0], [0.0]]


def test_tools_render_exactly_as_in_stages_1_and_2(tokenizer):
    factories = environment_factories(("search", "math"), seed=0)
    dataset = rl_dataset(("search", "math"), seed=0, n_prompts=2)
    assert dataset["environment"] == ["search", "search", "math", "math"]
    for row in dataset:
        env = make_env(row["world"], seed=0, split="rl")
        tools = factories[row["world"]]()
        methods = [getattr(tools, t["function"]["name"]) for t in env.tools]
        ours = tokenizer.apply_chat_template(row["prompt"], tools=env.tools, add_generation_prompt=True, tokenize=False)
        trl = tokenizer.apply_chat_template(row["prompt"], tools=methods, add_generation_prompt=True, tokenize=False)
        assert ours == trl
    search = factories["search"]()
    assert isinstance(search, SearchTools) and search.reset(task=dataset[0]["task"]) is None
    name = json.loads(dataset[0]["task"])["question"].split(" of ")[-1].rstrip("?")
    assert search.search(query=name).startswith("[1] ")  # a real BM25 passage, not an error or "no match"
    calculator = factories["math"]()
    calculator.reset(task=dataset[2]["task"])
    assert calculator.calculator(expression="6 * 7") == "42"


def scripted_turns(monkeypatch):
    """Replace generation by a scripted agent: search or calculate once, then answer (right on even
    calls, wrong on odd ones, with confidences that differ), so every mechanism sees real turns."""
    tasks = rl_dataset(("search", "math"), seed=0, n_prompts=4)
    answers = {row["prompt"][-1]["content"]: row["answer"] for row in tasks}
    calls = {"n": 0}
    folded = []  # per turn: were the adapters off (their update folded into the weights)?

    def generate(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        folded.append(all(m.disable_adapters for m in self.model.modules() if isinstance(m, LoraLinear)))
        out = []
        for ids in prompt_ids:
            text = self.processing_class.decode(ids)
            question = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
            n, calls["n"] = calls["n"], calls["n"] + 1
            if "<tool_response>" not in text:
                tool = ('"calculator", "arguments": {"expression": "2 + 3"}' if "calculator" in text
                        else f'"search", "arguments": {{"query": "{question}"}}')
                call = f"<tool_call>\n{{\"name\": {tool}}}\n</tool_call>"
                step = WM.format(q=30 + 20 * (n % 3)) + f"\n<think>Go.</think>\n{call}"
            else:
                guess = answers[question] if n % 2 == 0 else "nothing"
                step = WM.format(q=80 - 30 * (n % 2)) + f"\n<think>Done.</think>\n<answer>{guess}</answer>"
            out.append(self.processing_class(step + "<|im_end|>", add_special_tokens=False).input_ids)
        return out, None

    monkeypatch.setattr(SpanCreditGRPOTrainer, "_generate_single_turn", generate)
    return folded


def test_fc_rl_runs_whole_multi_turn_episodes_with_span_credit(tmp_path, monkeypatch):
    folded = scripted_turns(monkeypatch)
    merges = []

    @contextmanager
    def counted(model):  # counts the merges
        merges.append(model)
        with merged_lora(model):
            yield

    monkeypatch.setattr(rl_stage, "merged_lora", counted)
    seen = []
    original = SpanCreditGRPOTrainer._span_credit

    def spy(self, output, inputs):
        adv = original(self, output, inputs)
        seen.append((adv, output["tool_mask"], self._episodes))
        return adv

    monkeypatch.setattr(SpanCreditGRPOTrainer, "_span_credit", spy)
    # TRL's own GRPOConfig passes through whole (here without reward weights: ours are filled in)
    config = GRPOConfig(output_dir=str(tmp_path / "ckpt"), num_generations=2, per_device_train_batch_size=4,
                        max_steps=2, max_completion_length=1500, max_tool_calling_iterations=2,
                        generation_kwargs={"max_new_tokens": 400}, logging_steps=1, save_strategy="no",
                        report_to="none", learning_rate=1e-5, bf16=False,
                        dataloader_pin_memory=False)
    out = train_rl(tmp_path / "run", method="fc_rl", config=config, **TINY)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["turns_per_episode"] == 2 and r["tools/call_frequency"] == 1 and r["reward/format"] == 1
        assert 0 < r["span_credit/world_model_token_share"] < 1 and r["span_credit/mismatched_episodes"] == 0
        assert r["keywords_per_turn"] == 1 and 0 < r["confidence"] < 1 and -1 <= r["reward/calib"] <= 1
    adv, tool_mask, episodes = seen[0]
    assert all(len(e.turns) == 2 and e.turns[0].observation for e in episodes)
    # every turn generated through the merged LoRA update, folded once per round of episodes
    assert len(folded) == 2 * len(merges) == 2 * len(seen) and all(folded)
    assert {e.success for e in episodes} == {True, False}
    assert (adv[tool_mask == 0] == 0).all()  # observation tokens carry no credit (and TRL masks them)
    assert all(len(set(row[m == 1].tolist())) >= 2 for row, m in zip(adv, tool_mask))  # spans differ
    settings = json.loads((out / "stage.json").read_text())
    assert settings["span_credit"] and settings["reward_components"] == ["success", "format"]
    assert settings["grpo_config"]["output_dir"] == str(tmp_path / "ckpt")
    assert settings["grpo_config"]["reward_weights"] == [1.0, 0.1] and config.learning_rate == 1e-5


@pytest.mark.parametrize("method", ["rl", "fc_rl"])
def test_smoke_run_of_each_arm(tmp_path, method, monkeypatch):
    calls = {"sdpa": 0, "grouped_sdpa": 0}
    for name in calls:  # count which attention runs: grouped for TRL's generation, sdpa for the loss
        def counted(*args, _name=name, _attend=AttentionInterface._global_mapping[name], **kwargs):
            calls[_name] += 1
            return _attend(*args, **kwargs)
        monkeypatch.setitem(AttentionInterface._global_mapping, name, counted)
    folded = []  # per generated turn: were the adapters off (their update folded into the weights)?

    def spy(model, *args, **kwargs):
        folded.append(all(m.disable_adapters for m in model.modules() if isinstance(m, LoraLinear)))
        return generate_ids(model, *args, **kwargs)

    monkeypatch.setattr(rl_stage, "generate_ids", spy)
    out = train_rl(tmp_path / method, method=method, **TINY)
    assert calls["grouped_sdpa"] > 0 and calls["sdpa"] > 0
    assert folded and all(folded)
    settings = json.loads((out / "stage.json").read_text())
    done = json.loads((out / "complete.json").read_text())
    assert settings["method"] == method and settings["span_credit"] == (method == "fc_rl")
    assert settings["grpo_config"]["max_steps"] == 2 and settings["layout"] == "full"
    assert done["global_step"] == 2 and (out / "model" / "config.json").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "loss" in r]
    assert [r["step"] for r in logged] == [1, 2]
    for key in ("reward/success", "reward/calib", "reward/ground", "reward/format", "time/generate",
                "generate/turns_from_cache"):
        assert all(key in r for r in logged), key
    before = (out / "complete.json").read_text()
    train_rl(tmp_path / method, method=method, **TINY)  # finished: not retrained
    assert (out / "complete.json").read_text() == before


def test_interrupted_rl_stage_resumes(tmp_path):
    run_dir = tmp_path / "r"
    train_rl(run_dir, method="rl", max_steps=1, **TINY)
    shutil.rmtree(run_dir / "rl" / "model")  # a crash after the checkpoint
    (run_dir / "rl" / "complete.json").unlink()
    assert (run_dir / "rl" / "checkpoints" / "checkpoint-1").exists()
    train_rl(run_dir, method="rl", max_steps=2, **TINY)
    done = json.loads((run_dir / "rl" / "complete.json").read_text())
    assert done["resumed_from"].endswith("checkpoint-1") and done["global_step"] == 2
    rows = [json.loads(line) for line in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]


def test_refusals(tmp_path):
    with pytest.raises(StageMissing, match="train stage 2 first"):
        train_rl(tmp_path / "empty", preset="tiny", smoke=True)
    with pytest.raises(StageMissing, match="No finished stage"):
        train_rl(tmp_path / "empty", preset="tiny", smoke=True, init=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="RL method must be one of"):
        train_rl(tmp_path / "empty", method="ppo", **{k: v for k, v in TINY.items()})
    plain = tmp_path / "plain" / "sft"  # a finished stage 2 that learnt the plain layout
    plain.mkdir(parents=True)
    (plain / "complete.json").write_text("{}")
    (plain / "stage.json").write_text(json.dumps({"layout": "plain"}))
    with pytest.raises(ValueError, match="FC-RL needs a model that writes the world-model span"):
        train_rl(tmp_path / "plain", method="fc_rl", preset="tiny", smoke=True)


def test_cli_train_rl_and_evaluate(tmp_path, capsys):
    args = ["--runs-dir", str(tmp_path), "--run", "x", "--preset", "tiny", "--smoke"]
    assert main(["train", "--stage", "rl", *args]) == 1
    assert "train stage 2 first" in capsys.readouterr().err
    assert main(["train", "--stage", "rl", "--method", "rl", "--init", "base", "--max-steps", "1",
                 "--training-seed", "3", *args]) == 0
    assert "rl done" in capsys.readouterr().out
    settings = json.loads((tmp_path / "x" / "rl" / "stage.json").read_text())
    assert settings["method"] == "rl"
    # the world stays seed 0 (evaluation reads it); only sampling and task order take the training seed
    assert settings["seed"] == 0 and settings["training_seed"] == 3
    assert settings["grpo_config"]["seed"] == settings["grpo_config"]["data_seed"] == 3
    assert main(["evaluate", str(tmp_path / "x"), "--stage", "rl", "--n", "1", "--batch-size", "1",
                 "--worlds", "math", "--splits", "eval"]) == 0
    assert json.loads((tmp_path / "x" / "eval" / "rl" / "summary.json").read_text())["rows"][0]["episodes"] == 1


def _record(confidences, keywords, success, question="Where was Pozan Zokesshi born?"):
    steps = [{"text": f"<keyword>{', '.join(k)}</keyword><confidence>{c}</confidence>", "confidence": c,
              "keywords": k, "imaginary": "x", "observation": "Pozan Zokesshi was born in Velmora.",
              "format_ok": True, "grounded": []} for c, k in zip(confidences, keywords)]
    return {"question": question, "answer": "Velmora", "world": "search", "layout": "full", "success": success,
            "steps": steps, "generated_tokens": 10, "final_answer": None}


def test_hacking_check_flags_constant_confidence_and_emptier_keywords():
    from foresight_lite.rl_report import hacking_check, hacking_flags

    before = [_record([80, 70], [["Velmora"], ["Tarsk"]], True), _record([20, 30], [["Quenbrook"], ["x"]], False),
              _record([75], [["Velmora"]], True), _record([35], [["Mars"]], False)]
    after = [_record([50, 50], [[], []], True), _record([50, 50], [["Pozan Zokesshi"], []], False),
             _record([50], [[]], True), _record([50], [[]], False)]
    rows = hacking_check({"before": before, "after": after})
    assert rows[0]["auroc_all"] == 1.0 and rows[1]["auroc_all"] == 0.5
    assert rows[1]["confidence_std"] == 0 and rows[1]["confidence_mode_share"] == 1
    assert rows[1]["keywords_already_seen"] == 1.0 and rows[0]["keywords_already_seen"] == 0.0
    assert rows[1]["steps_without_keywords"] == pytest.approx(5 / 6)
    flags = " ".join(hacking_flags(rows))
    assert "collapsed" in flags and "fell from" in flags and "already seen" in flags
    assert hacking_flags(hacking_check({"before": before, "again": before})) == []


def test_episode_tokens_match_what_the_labeller_reads(tokenizer):
    from foresight_lite.rl_report import credit_html, episode_tokens, worked_example

    example = worked_example()
    texts, observations = example["episodes"]["careful success"]
    ids, mask = episode_tokens(tokenizer, texts, observations)
    labels = token_labels(tokenizer, ids, mask)
    assert [label is not None for label in labels] == [bool(m) for m in mask]
    assert max(label[0] for label in labels if label) == len(texts) - 1
    assert any(label[1] for label in labels if label) and not all(label[1] for label in labels if label)
    page = credit_html(tokenizer, ids, labels, [1.0 if m else 0.0 for m in mask])
    assert "border-bottom" in page and example["gold"] in page


def test_rollout_turns_reuse_the_kv_cache_and_generate_what_trl_generates(tmp_path):
    """Greedy, so both paths must agree token for token: a second turn built as TRL's tool loop
    builds it (prompt + reply + tool turn) prefills only the tool turn, and writes what TRL's own
    fresh generation writes; a batch whose histories changed is prefilled afresh."""
    from trl import GRPOTrainer

    from foresight_lite import rewards
    model, tokenizer = load_model("tiny")
    reward_funcs, weights = rewards.reward_functions(("success", "format"))
    config = GRPOConfig(output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=2,
                        max_completion_length=64, generation_kwargs={"max_new_tokens": 12, "do_sample": False},
                        report_to="none", bf16=False, dataloader_pin_memory=False, reward_weights=weights)
    trainer = SpanCreditGRPOTrainer(model=model, reward_funcs=reward_funcs, args=config, processing_class=tokenizer,
                                    train_dataset=rl_dataset(("search",), seed=0, n_prompts=2))
    env = make_env("search", split="rl")
    first = [tokenizer.apply_chat_template([{"role": "user", "content": t.question}], add_generation_prompt=True)
             for t in env.tasks[:3]]
    first = [ids if isinstance(ids, list) else ids["input_ids"] for ids in first]
    trainer._turn_cache = TurnCache()
    replies, _ = trainer._generate_single_turn(first, None, {}, 1)
    assert replies == GRPOTrainer._generate_single_turn(trainer, first, None, {}, 1)[0]
    tool_turn = tokenizer("\n<|im_start|>tool\n[1] Pozan was born in Velmora.<|im_end|>\n<|im_start|>assistant\n",
                          add_special_tokens=False).input_ids
    second = [first[i] + replies[i] + tool_turn for i in (2, 0)]  # one episode ended; the order is TRL's
    again, _ = trainer._generate_single_turn(second, None, {}, 1)
    assert trainer._turn_cache.reuses == 1 and trainer._turn_cache.refills == 0
    assert again == GRPOTrainer._generate_single_turn(trainer, second, None, {}, 1)[0]
    trainer._generate_single_turn([first[0] + tool_turn], None, {}, 1)  # not a continuation
    assert trainer._turn_cache.reuses == 1


def test_cpu_recipe_generates_two_groups_and_trains_one_episode_at_a_time(tmp_path):
    config = default_config(tmp_path, preset="smollm2-135m", smoke=False, seed=0)
    # one episode per micro-batch keeps GRPO's logits small (3.4 GB peak against 7.7 GB for 2)
    assert config.per_device_train_batch_size == 1 and config.loss_type == "dapo"
    assert config.generation_batch_size == 8 and config.generation_batch_size // config.num_generations == 2
