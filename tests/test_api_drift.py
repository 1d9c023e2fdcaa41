"""API drift: every keyword argument our code passes to TRL, peft, transformers and Unsloth still
exists in the installed versions.

The keywords are collected, not listed by hand, so the test follows the code:
* an AST scan of foresight_lite/ finds every call to the names in CALLEES and its keywords,
  including those gathered in a local `kwargs = dict(...)` (plus `kwargs[...] = ...` and
  `kwargs.update(...)`) and passed on as `**kwargs`;
* the training recipe itself (`stages.midtrain.recipe`, every preset and stage, smoke or not)
  and every `train` override the CLI can pass are checked against SFTConfig's fields;
* the GPU presets' "rl" settings and the GRPOConfig fields stage 3 is expected to set are
  checked against GRPOConfig.
A name counts as accepted if it is a dataclass field, an explicit parameter, or, for functions
that take **kwargs, a key their source reads with kwargs.pop/get (transformers' from_pretrained).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import re
from collections import defaultdict
from pathlib import Path

import pytest
import torch

import foresight_lite
from foresight_lite import models

PACKAGE = Path(foresight_lite.__file__).parent
# the callee as written in our source -> where it lives (module, dotted attribute)
CALLEES = {
    "SFTConfig": ("trl", "SFTConfig"),
    "SFTTrainer": ("trl", "SFTTrainer"),
    "GRPOConfig": ("trl", "GRPOConfig"),
    "GRPOTrainer": ("trl", "GRPOTrainer"),
    "LoraConfig": ("peft", "LoraConfig"),
    "get_peft_model": ("peft", "get_peft_model"),
    "PeftModel.from_pretrained": ("peft", "PeftModel.from_pretrained"),
    "AutoModelForCausalLM.from_pretrained": ("transformers", "AutoModelForCausalLM.from_pretrained"),
    "AutoTokenizer.from_pretrained": ("transformers", "AutoTokenizer.from_pretrained"),
    "FastLanguageModel.from_pretrained": ("unsloth", "FastLanguageModel.from_pretrained"),
    "FastLanguageModel.get_peft_model": ("unsloth", "FastLanguageModel.get_peft_model"),
}
# GRPOConfig fields stage 3 (FC-RL) is expected to set, beyond what the presets already name
LIKELY_GRPO_FIELDS = {"num_generations", "max_completion_length", "beta", "temperature", "loss_type",
                      "scale_rewards", "mask_truncated_completions", "max_tool_calling_iterations",
                      "generation_batch_size", "steps_per_generation", "reward_weights", "log_completions"}


# ---------------------------------------------------------------- collecting keywords from our source

def _callee(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return f"{func.value.id}.{func.attr}"
    return None


def _dict_keys_by_name(function: ast.AST) -> dict[str, set[str]]:
    """Keys put into local dicts: `x = dict(a=...)`, `x = {"a": ...}`, `x["a"] = ...`, `x.update(a=...)`."""
    keys = defaultdict(set)
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
            if isinstance(target, ast.Name) and isinstance(value, ast.Call) and _callee(value) == "dict":
                keys[target.id] |= {k.arg for k in value.keywords if k.arg}
            elif isinstance(target, ast.Name) and isinstance(value, ast.Dict):
                keys[target.id] |= {k.value for k in value.keys if isinstance(k, ast.Constant)}
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AugAssign) else []
        for target in targets:
            if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                    and isinstance(target.slice, ast.Constant)):
                keys[target.value.id].add(target.slice.value)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update"
                and isinstance(node.func.value, ast.Name)):
            keys[node.func.value.id] |= {k.arg for k in node.keywords if k.arg}
    return keys


def scan_calls() -> dict[str, dict[str, set[str]]]:
    """callee -> {keyword -> {file:line, ...}} over every module of the package."""
    found = defaultdict(lambda: defaultdict(set))
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] + [tree]
        for scope in scopes:
            local = _dict_keys_by_name(scope)
            for node in ast.walk(scope):
                if not isinstance(node, ast.Call) or _callee(node) not in CALLEES:
                    continue
                where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                found[_callee(node)]  # noqa: B018  (record the call even when it passes no keyword)
                for keyword in node.keywords:
                    names = {keyword.arg} if keyword.arg else (
                        local.get(keyword.value.id, set()) if isinstance(keyword.value, ast.Name) else set())
                    for name in names:
                        found[_callee(node)][name].add(where)
    return found


CALLS = scan_calls()


# ---------------------------------------------------------------- what the installed versions accept

def _resolve(module: str, dotted: str):
    obj = importlib.import_module(module)
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _read_from_kwargs(function) -> set[str]:
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return set()
    return set(re.findall(r"kwargs\.(?:pop|get)\(\s*[\"']([A-Za-z_]\w*)[\"']", source))


def accepted(target) -> set[str]:
    """Keyword names `target` (a dataclass, a class or a function) accepts."""
    if dataclasses.is_dataclass(target):
        return {f.name for f in dataclasses.fields(target)}
    function = target.__init__ if inspect.isclass(target) else target
    parameters = inspect.signature(function).parameters
    names = {n for n, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    if any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
        names |= _read_from_kwargs(function)
        owner = getattr(function, "__self__", None)  # an Auto class forwards **kwargs to the model class
        if owner is not None and owner.__name__.startswith("AutoModel"):
            from transformers import PreTrainedModel

            names |= _read_from_kwargs(PreTrainedModel.from_pretrained)
    return names


def importable(module: str) -> tuple[bool, str]:
    if importlib.util.find_spec(module) is None:
        return False, f"{module} is not installed"
    try:
        importlib.import_module(module)
    except Exception as err:  # Unsloth raises NotImplementedError without a GPU
        return False, f"{module} does not import here ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
    return True, ""


def assert_accepted(callee: str, names, module: str, dotted: str):
    ok, reason = importable(module)
    if not ok:
        pytest.skip(reason)
    missing = sorted(set(names) - accepted(_resolve(module, dotted)))
    where = {n: sorted(CALLS.get(callee, {}).get(n, [])) for n in missing}
    assert not missing, f"{module} {dotted} no longer accepts {missing} (passed at {where})"


# ---------------------------------------------------------------- the tests

def test_the_scan_finds_our_calls():
    """A guard against a scan that silently finds nothing (e.g. after a rename of the callee)."""
    for callee in ("SFTTrainer", "LoraConfig", "get_peft_model", "AutoModelForCausalLM.from_pretrained",
                   "FastLanguageModel.from_pretrained", "FastLanguageModel.get_peft_model"):
        assert callee in CALLS, f"no call to {callee} found in {PACKAGE}"
    assert {"r", "lora_alpha", "target_modules", "layers_to_transform", "modules_to_save",
            "ensure_weight_tying"} <= set(CALLS["LoraConfig"])  # gathered through **kwargs
    assert {"dtype", "device_map", "gguf_file"} <= set(CALLS["AutoModelForCausalLM.from_pretrained"])


@pytest.mark.parametrize("callee", sorted(CALLS), ids=str)
def test_scanned_keywords_exist(callee):
    module, dotted = CALLEES[callee]
    assert_accepted(callee, CALLS[callee], module, dotted)


def _pretend_gpu(monkeypatch, *, unsloth: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    monkeypatch.setattr(models, "backend_name", lambda: "unsloth" if unsloth else "transformers+peft")


@pytest.mark.parametrize("unsloth", [False, True], ids=["peft", "unsloth"])
def test_recipe_fields_exist_in_sftconfig(monkeypatch, tmp_path, unsloth):
    from foresight_lite.stages.midtrain import recipe

    _pretend_gpu(monkeypatch, unsloth=unsloth)  # GPU presets add their T4 settings only on a GPU
    names = set()
    for preset in models.PRESETS:
        for stage in ("mt", "sft"):
            for smoke in (False, True):
                names |= set(recipe(tmp_path, preset=preset, smoke=smoke, seed=0, stage=stage))
    assert {"per_device_train_batch_size", "max_length", "fp16"} <= names
    assert unsloth or "gradient_checkpointing_kwargs" in names  # Unsloth checkpoints its own way
    assert_accepted("SFTConfig", names, "trl", "SFTConfig")


def test_cli_train_overrides_exist_in_sftconfig(monkeypatch, tmp_path):
    """Every --flag of `train` that becomes an SFTConfig override names a real field."""
    from foresight_lite import cli, stages

    own = set(inspect.signature(stages.train_midtraining).parameters)  # the rest goes to SFTConfig
    seen = {}

    def capture(run_dir, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("captured")

    monkeypatch.setattr(stages, "train_midtraining", capture)
    cli.main(["train", "--stage", "mt", "--run", "x", "--runs-dir", str(tmp_path), "--preset", "tiny",
              "--max-steps", "1", "--epochs", "2", "--learning-rate", "1e-4", "--batch-size", "1",
              "--max-length", "64"])
    overrides = set(seen) - own
    assert {"max_steps", "num_train_epochs", "learning_rate", "per_device_train_batch_size",
            "max_length"} <= overrides
    assert_accepted("SFTConfig", overrides, "trl", "SFTConfig")


def test_rl_settings_exist_in_grpoconfig(monkeypatch):
    _pretend_gpu(monkeypatch, unsloth=False)
    names = set(LIKELY_GRPO_FIELDS)
    for preset in models.PRESETS:
        names |= set(models.stage_settings(preset, "rl"))
    assert "num_generations" in names and "gradient_checkpointing" in names
    assert_accepted("GRPOConfig", names, "trl", "GRPOConfig")


def test_unsloth_keywords_exist_when_unsloth_imports():
    """Unsloth's loader and LoRA wrapper, checked only where Unsloth imports (a CUDA machine)."""
    ok, reason = importable("unsloth")
    if not ok:
        pytest.skip(reason)
    for callee in ("FastLanguageModel.from_pretrained", "FastLanguageModel.get_peft_model"):
        assert_accepted(callee, CALLS[callee], *CALLEES[callee])


def test_the_checker_catches_a_renamed_keyword():
    """The check itself can fail: a keyword TRL or transformers dropped is reported."""
    from trl import SFTConfig

    assert "max_seq_length" not in accepted(SFTConfig)  # renamed to max_length in TRL 0.20
    assert "dtype" in accepted(_resolve("transformers", "AutoModelForCausalLM.from_pretrained"))
    assert "no_such_option" not in accepted(_resolve("transformers", "AutoModelForCausalLM.from_pretrained"))
