"""Stage 3, RL: TRL's `GRPOTrainer` on real multi-turn episodes, plain (`rl`) or foresight-conditioned (`fc_rl`).

What: each task of the rl split is played `num_generations` times in its world. TRL runs the
episodes (`environment_factory`): the model writes a step, TRL parses its Hermes tool call,
calls the world's tool (`SearchTools.search`, `CalculatorTools.calculator`), appends the
observation as a tool turn (masked out of the loss) and lets the model continue, until a turn
without a tool call (our `<answer>...</answer>`) or the turn cap. `rewards.py` scores the episodes.
Generation is TRL's except that a round keeps its KV cache from turn to turn and reads it with
the grouped attention (`SpanCreditGRPOTrainer._generate_single_turn`), as evaluation does.
Arms:
  rl      outcome reward only: R_E = success + 0.1 * format, one advantage for every token.
  fc_rl   FC-RL, the paper's span-level credit (`SpanCreditGRPOTrainer`): world-model-span tokens
          of turn t get the group-normalised R_WM,t = R_calib,t + R_ground,t; policy tokens get
          A_E + w * A_S (A_E: group-normalised R_E; A_S: group-normalised mean confidence;
          w = 0.2 search, 0.1 math). `span_credit=False` is the ablation that sums all four
          rewards into one episode reward instead.
Why: supervised foresight teaches the format; RL on the student's own episodes is what can make
its confidences track its real success and its keywords come true.
How: `python -m foresight_lite train --stage rl --method fc_rl --run wm` (starts from runs/wm/sft;
`--init PATH` for another stage-2 output, `--init base` for the preset's weights; `--preset tiny
--smoke` runs in seconds). Writes runs/<run>/rl/ like every stage and resumes after an interruption.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
from datasets import concatenate_datasets
from trl import GRPOConfig, GRPOTrainer
from trl.models.utils import unwrap_model_for_generation

from .. import corpora, rewards
from ..envs import MAX_TURNS, Action, Env, make_env
from ..envs.base import Task
from ..envs.math import CALCULATOR_TOOL
from ..envs.search import SEARCH_TOOL
from ..format import parse_step
from ..evaluate import TurnCache, generate_ids
from ..models import add_lora, backend_name, load_model, merged_lora, stage_settings
from .common import (MetricsLog, is_complete, require_stage, stage_dir, train_with_resume, with_overrides,
                     write_json)

METHODS = ("rl", "fc_rl")
POLICY_CONFIDENCE_WEIGHT = {"search": 0.2, "math": 0.1}  # w in A_E + w * A_S, the paper's values


# ---------------------------------------------------------------------------------------------
# The worlds as TRL environments: one instance per rollout, its public methods are the tools.
# ---------------------------------------------------------------------------------------------
class WorldTools:
    """Wraps one of our `Env`s for TRL's `environment_factory`; `reset` receives the dataset row."""

    def __init__(self, base: Env):
        self._env = copy.copy(base)  # shares the world and its index; the episode state is per copy

    def reset(self, task: str, **_) -> None:
        self._env.reset(Task.from_dict(json.loads(task)))
        return None  # the prompt already holds the question

    def _call(self, tool: str, **arguments) -> str:
        return self._env.step(Action.call(tool, **arguments)).text


class SearchTools(WorldTools):
    def search(self, query: str) -> str:
        return self._call("search", query=query)


class CalculatorTools(WorldTools):
    def calculator(self, expression: str) -> str:
        return self._call("calculator", expression=expression)


def _docstring(schema: dict) -> str:
    """A Google-style docstring that transformers turns back into exactly `schema`, so the tool list
    TRL renders is the one stages 1-2 and evaluation render (the prompts match token for token)."""
    f = schema["function"]
    args = "\n".join(f"    {name}: {p['description']}" for name, p in f["parameters"]["properties"].items())
    return f"{f['description']}\n\nArgs:\n{args}\n"


SearchTools.search.__doc__ = _docstring(SEARCH_TOOL)
CalculatorTools.calculator.__doc__ = _docstring(CALCULATOR_TOOL)
TOOL_CLASSES = {"search": SearchTools, "math": CalculatorTools}


def environment_factories(worlds: tuple[str, ...], *, seed: int) -> dict:
    """TRL `environment_factory` mapping: world name -> a callable making one episode's tools."""
    bases = {w: make_env(w, seed=seed, split="rl") for w in worlds}
    return {w: (lambda w=w: TOOL_CLASSES[w](bases[w])) for w in worlds}


def rl_dataset(worlds: tuple[str, ...], *, seed: int, n_prompts: int | None = None):
    """The rl-split task prompts of every world, with the `environment` column TRL routes on."""
    parts = [corpora.rl_prompts(w, seed=seed, n=n_prompts) for w in worlds]
    parts = [p.add_column("environment", list(p["world"])) for p in parts]
    return concatenate_datasets(parts).remove_columns(["tools"])


# ---------------------------------------------------------------------------------------------
# Span-level credit: which completion token belongs to which turn and span, and what it earns.
# ---------------------------------------------------------------------------------------------
def token_labels(tokenizer, ids: list[int], model_mask: list[int], *, layout: str = "full") -> list:
    """Per completion token: None for observation or padding tokens (mask 0), else (turn, in_world_model).

    The model's turns are the runs of mask 1 (TRL's completion_mask * tool_mask). Each run is
    decoded, `parse_step` finds its world-model span as a character range, and a token belongs
    to the span when its characters overlap it. Everything else in the turn (think, action,
    end-of-turn) is the policy span.
    """
    labels, runs, start = [None] * len(ids), [], None
    for j, m in enumerate(list(model_mask[:len(ids)]) + [0]):
        if m and start is None:
            start = j
        elif not m and start is not None:
            runs.append((start, j))
            start = None
    for turn, (a, b) in enumerate(runs):
        piece = ids[a:b]
        span = parse_step(tokenizer.decode(piece, skip_special_tokens=False), layout=layout).world_model_span
        begin = 0
        for j in range(len(piece)):
            # characters up to and including token j; max() keeps it monotone through split UTF-8
            end = max(begin, len(tokenizer.decode(piece[:j + 1], skip_special_tokens=False)))
            labels[a + j] = (turn, span is not None and begin < span[1] and end > span[0])
            begin = end
    return labels


def group_normalize(values: list[float], group_size: int, eps: float = 1e-4) -> list[float]:
    """(x - group mean) / (group std + eps) over consecutive groups, as TRL normalises rewards."""
    out = []
    for g in range(0, len(values), group_size):
        x = torch.tensor(values[g:g + group_size], dtype=torch.float64)
        std = x.std() if x.numel() > 1 else torch.zeros(())
        out += ((x - x.mean()) / (std + eps)).tolist()
    return out


def group_normalize_spans(span_rewards: list[list[float]], group_size: int, eps: float = 1e-4) -> list[list[float]]:
    """Normalise every span's R_WM against all spans of its group (all turns of the G episodes)."""
    out = []
    for g in range(0, len(span_rewards), group_size):
        group = span_rewards[g:g + group_size]
        flat = torch.tensor([r for rows in group for r in rows], dtype=torch.float64)
        mean = flat.mean() if flat.numel() else torch.zeros(())
        std = flat.std() if flat.numel() > 1 else torch.zeros(())
        out += [((torch.tensor(rows, dtype=torch.float64) - mean) / (std + eps)).tolist() for rows in group]
    return out


def span_advantages(labels: list[list], *, episode_advantages: list[float], confidence_advantages: list[float],
                    world_model_advantages: list[list[float]], policy_weights: list[float],
                    length: int) -> torch.Tensor:
    """The (B, T) advantage of every completion token.

    World-model tokens of turn t: world_model_advantages[row][t]. Policy tokens:
    episode_advantages[row] + policy_weights[row] * confidence_advantages[row]. Masked tokens: 0.
    """
    adv = torch.zeros(len(labels), length)
    for i, row in enumerate(labels):
        policy = episode_advantages[i] + policy_weights[i] * confidence_advantages[i]
        for j, label in enumerate(row[:length]):
            if label is None:
                continue
            turn, in_world_model = label
            spans = world_model_advantages[i]
            adv[i, j] = spans[turn] if in_world_model and turn < len(spans) else policy
    return adv


class SpanCreditGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` with the paper's span-level credit assignment (FC-RL) and episode scoring.

    It changes two things, both after TRL has done its own work:
      `_calculate_rewards` scores each episode once (`rewards.score_completion`), hands the scores
      to the reward functions (an `episode` column) and logs the reward components;
      `_generate_and_score_completions` replaces TRL's one-advantage-per-episode (which, with
      reward funcs success + format, is exactly A_E) by a (B, T) tensor from `span_advantages`.
    TRL's loss accepts (B, T) advantages as they are; tool-observation tokens stay masked by
    TRL's tool_mask. With `span_credit=False` the advantages are TRL's own (the ablation and the
    plain `rl` arm), and the components are still logged. Single process only (no gather of scores).
    """

    def __init__(self, *args, span_credit: bool = True, layout: str = "full",
                 policy_confidence_weight: dict[str, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.span_credit, self.layout = span_credit, layout
        self.policy_confidence_weight = dict(policy_confidence_weight or POLICY_CONFIDENCE_WEIGHT)
        self._episodes: list[rewards.EpisodeScore] = []
        self._turn_cache: TurnCache | None = None  # set for each round of episodes by `_generate`

    def _own_generation(self) -> bool:
        """Whether rounds of episodes run through `_generate_single_turn`'s own path below."""
        return not (self.use_vllm or self.use_transformers_continuous_batching or backend_name() == "unsloth")

    def _generate(self, prompts):
        started = time.perf_counter()
        self._turn_cache = TurnCache()  # one per round of episodes
        # fold the LoRA update into the weights once per round, not at each of its ~6 turns: TRL's
        # round only generates and calls tools (no forward pass that needs the adapters)
        with merged_lora(self.model) if self._own_generation() else nullcontext():
            out = super()._generate(prompts)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["time/generate"].append(time.perf_counter() - started)
        self._metrics[mode]["generate/turns_from_cache"].append(self._turn_cache.reuses)
        self._turn_cache = None  # its KV cache would otherwise stay in memory through the loss pass
        return out

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        """TRL's transformers path, but each round keeps its KV cache from turn to turn, as evaluation
        does: TRL's next prompt is the last prompt + the reply + the tool turn, so only the tool turn
        is prefilled, not the whole history (`evaluate.generate_ids`), and through the LoRA update
        folded into the weights (`models.merged_lora`). vLLM, images and Unsloth's
        patched generation (as in evaluation, not tried with a reused cache) go to TRL's own."""
        if not self._own_generation() or multimodal_fields or (images is not None and any(images)):
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        cache = self._turn_cache or TurnCache()  # outside `_generate`: nothing to reuse
        with (unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                          gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                                          generation_kwargs=self.generation_kwargs) as model,
              self._dist.summon_full_params(self.model_wrapped, recurse=False),  # generate_ids is no_grad
              merged_lora(model)):  # a no-op inside `_generate`, which has merged already
            replies = generate_ids(model, prompt_ids, pad_id=self._tokenizer.pad_token_id, stop_ids=self.eos_token_ids,
                                   turn_cache=cache, rows=cache.match(prompt_ids),
                                   generation_config=self.generation_config)
        return replies, None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._episodes = [rewards.score_completion(p, c, gold=x["answer"], world=x.get("world", "search"),
                                                   layout=self.layout)
                          for p, c, x in zip(prompts, completions, inputs)]
        for x, episode in zip(inputs, self._episodes):
            x["episode"] = episode
        self._log_components(self._episodes)
        return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    def _log_components(self, episodes):
        metrics = self._metrics["train" if self.model.training else "eval"]
        n = max(1, len(episodes))
        turns = [t for e in episodes for t in e.turns]
        stated = [e.confidence for e in episodes if e.confidence is not None]
        metrics["reward/success"].append(sum(e.success for e in episodes) / n)
        metrics["reward/calib"].append(sum(e.calib for e in episodes) / n)
        metrics["reward/ground"].append(sum(e.ground for e in episodes) / n)
        metrics["reward/format"].append(sum(e.format for e in episodes) / n)
        if stated:  # no entry rather than NaN when no episode stated a confidence
            metrics["confidence"].append(sum(stated) / len(stated))
        metrics["confidence_reported"].append(len(stated) / n)
        metrics["keywords_per_turn"].append(sum(len(t.keywords) for t in turns) / max(1, len(turns)))
        metrics["turns_per_episode"].append(len(turns) / n)

    def _generate_and_score_completions(self, inputs):
        started = time.perf_counter()
        output = super()._generate_and_score_completions(inputs)
        if self.span_credit:
            output["advantages"] = self._span_credit(output, inputs)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["time/rollout_and_score"].append(time.perf_counter() - started)
        return output

    def _span_credit(self, output, inputs) -> torch.Tensor:
        group = self.num_generations if self.model.training else self.num_generations_eval
        ids, mask = output["completion_ids"], output["completion_mask"]
        if "tool_mask" in output:
            mask = mask * output["tool_mask"]
        labels = [token_labels(self.processing_class, row.tolist(), m.tolist(), layout=self.layout)
                  for row, m in zip(ids, mask)]
        episodes = self._episodes
        span_rewards, mismatched = [], 0
        for row, episode in zip(labels, episodes):
            turns_in_tokens = {label[0] for label in row if label is not None}
            if len(turns_in_tokens) != len(episode.turns):  # tokens and messages disagree: no span credit
                mismatched += 1
                span_rewards.append([])
                continue
            span_rewards.append([t.world_model_reward for t in episode.turns])
        world_model = group_normalize_spans(span_rewards, group)
        confidence = group_normalize([e.confidence if e.confidence is not None else 0.0 for e in episodes], group)
        weights = [self.policy_confidence_weight.get(x.get("world", "search"), 0.0) for x in inputs]
        adv = span_advantages(labels, episode_advantages=output["advantages"].tolist(),
                              confidence_advantages=confidence, world_model_advantages=world_model,
                              policy_weights=weights, length=ids.shape[1])
        metrics = self._metrics["train" if self.model.training else "eval"]
        in_wm = sum(1 for row in labels for label in row if label is not None and label[1])
        model_tokens = sum(1 for row in labels for label in row if label is not None)
        metrics["span_credit/world_model_token_share"].append(in_wm / max(1, model_tokens))
        metrics["span_credit/mismatched_episodes"].append(mismatched / max(1, len(labels)))
        return adv.to(output["advantages"].device)


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------
def default_config(output_dir: Path, *, preset: str, smoke: bool, seed: int, **overrides) -> GRPOConfig:
    """The CPU recipe: 8 updates of 8 episodes (both worlds on 2 cores with AVX-512 BF16: 9.2
    minutes, peak 3.5 GB; fp32 machines take 2-3 times as long; docs/experiments.md, section 4)."""
    base = dict(
        output_dir=str(output_dir), seed=seed, data_seed=seed, report_to="none",
        # 4 episodes per task (the GRPO group), 2 tasks per update: 8 episodes generated together,
        # trained one at a time. The logits of an episode over a 49k vocabulary dominate memory:
        # from the same model and seed (identical first update), micro-batches of 2 peaked at
        # 7.7 GB and took 11.0 min, micro-batches of 1 peaked at 3.4 GB and took 7.9 min (no
        # padding; its later updates also sampled shorter episodes). The dapo loss normalises by
        # the tokens of all 8, so the objective is the same
        num_generations=4, per_device_train_batch_size=1, gradient_accumulation_steps=8,
        # each update trains on freshly generated episodes once (num_iterations=1): TRL then skips
        # the old-logprob pass; beta=0 skips the reference model (no KL), as recent GRPO recipes do
        num_iterations=1, beta=0.0, loss_type="dapo", scale_rewards="group",
        # Generation is the cost (about 65% of an update on 2 cores; one decode step of a batch of 8
        # takes ~45 ms in bf16 with the KV cache). So few updates that a LoRA-sized rate (SFT uses 1e-3)
        # is held constant
        max_steps=8, learning_rate=1e-4, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        # sampling at temperature 1 so a group's episodes differ; caps: 192 new tokens per turn (a full
        # foresight step is ~150), 1024 tokens per episode including observations, and MAX_TURNS - 1
        # tool rounds: at most MAX_TURNS turns with the answer, the limit evaluation plays by
        temperature=1.0, top_p=1.0, top_k=0, generation_kwargs={"max_new_tokens": 192},
        max_completion_length=1024, max_tool_calling_iterations=MAX_TURNS - 1,
        # every update: one takes 0.5-2 minutes on a CPU with fast bf16, its checkpoint under a second
        logging_steps=1, save_strategy="steps", save_steps=1, save_total_limit=1,
        # CPU: bf16 autocast costs more than it saves; the weights themselves are bf16 (preset)
        bf16=False, fp16=False, gradient_checkpointing=False, dataloader_num_workers=0,
        dataloader_pin_memory=False, log_completions=False, disable_tqdm=False,
    )
    base.update(stage_settings(preset, "rl"))  # e.g. a T4's batch sizes and mixed precision
    if smoke:
        base.update(num_generations=2, per_device_train_batch_size=4, gradient_accumulation_steps=1, max_steps=2,
                    generation_kwargs={"max_new_tokens": 24}, max_completion_length=96,
                    max_tool_calling_iterations=2)
    return GRPOConfig(**with_overrides(base, overrides))


def resolve_init(run_dir: str | Path, init: str | None) -> tuple[str | None, str]:
    """(model folder stage 3 starts from or None for the preset's weights, the layout it writes)."""
    if init == "base":
        return None, "full"
    if init is None:
        hint = (f"train stage 2 first (python -m foresight_lite train --stage sft --run {Path(run_dir).name} "
                "--corpus fe_sft), or pass --init PATH to start from another stage's output.")
        model = require_stage(stage_dir(run_dir, "sft"), hint=hint)
    else:
        model = require_stage(init, hint="pass the folder of a finished stage, e.g. runs/NAME/sft.")
    settings = model.parent / "stage.json"
    layout = json.loads(settings.read_text()).get("layout", "full") if settings.exists() else "full"
    return str(model), layout


def train_rl(run_dir: str | Path, *, method: str = "fc_rl", preset: str = "smollm2-135m", init: str | None = None,
             worlds: tuple[str, ...] = ("search", "math"), seed: int = 0, smoke: bool = False, force: bool = False,
             config: GRPOConfig | None = None, span_credit: bool = True, n_prompts: int | None = None,
             training_seed: int | None = None, **overrides) -> Path:
    """Train stage 3 into `run_dir/rl`; returns that folder. `config` (TRL's GRPOConfig) replaces the recipe.

    method="fc_rl" rewards success, format, calibration and grounding, with span-level credit
    unless span_credit=False (then the four rewards are summed per episode). method="rl" rewards
    success and format only. n_prompts caps the tasks per world (default: the whole rl split).
    `seed` picks the world and its tasks; `training_seed` (default: `seed`) the task order and the
    sampled episodes, so RL can be repeated from one model on one world.
    """
    if method not in METHODS:
        raise ValueError(f"RL method must be one of {', '.join(METHODS)}, not {method!r}.")
    out = stage_dir(run_dir, "rl")
    if is_complete(out) and not force:
        return out
    start_from, layout = resolve_init(run_dir, init)
    if method == "fc_rl" and layout != "full":
        raise ValueError(f"FC-RL needs a model that writes the world-model span, but {start_from} was trained on "
                         f"the {layout!r} layout; start from an fe_sft stage or use --method rl.")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    span_credit = span_credit and method == "fc_rl"
    components = ("success", "format") if method == "rl" or span_credit else ("success", "format", "calib", "ground")
    reward_funcs, reward_weights = rewards.reward_functions(components)
    training_seed = seed if training_seed is None else training_seed
    args = config or default_config(out / "checkpoints", preset=preset, smoke=smoke, seed=training_seed,
                                    reward_weights=reward_weights, **overrides)
    if args.reward_weights is None:  # a caller's GRPOConfig without weights gets ours, not TRL's all-ones
        args.reward_weights = reward_weights
    if len(args.reward_weights) != len(reward_funcs):
        raise ValueError(f"reward_weights must have {len(reward_funcs)} entries, one per {', '.join(components)}.")
    dataset = rl_dataset(worlds, seed=seed, n_prompts=n_prompts if n_prompts is not None else (4 if smoke else None))
    model, tokenizer = load_model(preset, path=start_from, for_training=True)
    model = add_lora(model, preset, seed=args.seed)
    with warnings.catch_warnings():  # environment_factory is marked experimental; the TRL version is pinned
        warnings.filterwarnings("ignore", message=".*'environment_factory', which is an experimental feature")
        trainer = SpanCreditGRPOTrainer(
            model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset, processing_class=tokenizer,
            environment_factory=environment_factories(worlds, seed=seed),
            callbacks=[MetricsLog(out / "metrics.jsonl")], span_credit=span_credit, layout=layout)
    settings = {"stage": "rl", "method": method, "span_credit": span_credit, "reward_components": list(components),
                "layout": layout, "preset": preset, "init": start_from or "base", "worlds": list(worlds),
                "seed": seed, "training_seed": args.seed, "smoke": smoke, "tasks": len(dataset),
                "dtype": str(model.dtype).removeprefix("torch."),
                "policy_confidence_weight": trainer.policy_confidence_weight, "grpo_config": args.to_dict()}
    write_json(out / "stage.json", settings)
    train_with_resume(trainer, out, config=settings, started=started)
    return out
