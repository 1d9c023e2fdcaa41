"""The agent runner: a model plays real episodes in a world, many at once, and is scored.

What: `run_episodes(model, tokenizer, world=..., split=...)` plays held-out tasks with batched
generation through the model's chat template: each turn the model writes a step, `parse_step`
reads it, the tool call goes to the real world and its observation comes back as a tool turn.
`summarize(episodes)` turns the records into the metrics the paper reports: success (and, with
`samples=k` episodes per task at a temperature above 0, mean@k and pass@k), format adherence,
keyword grounding, Brier / ECE / AUROC of the confidence, tokens per episode.
Each batch keeps its KV cache from turn to turn (`TurnCache`), so a turn prefills only the
reply's end, the observation and the next header, not the whole history again; the cache grows
in place (`models.GrowingCache`) instead of being copied at every decoding step.
Why: every stage is judged by what the model does in the world, not by its loss.
How: `python -m foresight_lite evaluate RUN_DIR` (see cli.py), or from Python as above.

Grounding counts a predicted keyword only if it turns up in a *later observation* or is the gold
answer, never in the agent's own later actions, which it could simply make come true, and never
when the agent had already read it (the answer it copies from a passage predicts nothing): the
same definition as the RL reward's.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .envs import MAX_TURNS, make_env
from .envs.base import stable_hash
from .format import parse_step
from .metrics import auroc, brier, ece, mcnemar, mean_at_k, pass_at_k
from .models import GrowingCache, backend_name, grouped_attention
from .rewards import score_record  # one definition of grounding, shared with the RL reward
from .traces import atomic_write, read_jsonl

MAX_NEW_TOKENS = 320  # a full foresight step is about 150 tokens; longer output is a runaway
# for k samples per task; Chen et al. (2021) found 0.8 best for pass@k at large k
SAMPLE_TEMPERATURE = 0.8


def run_episodes(model, tokenizer, *, world: str, split: str = "eval", seed: int = 0, n: int | None = None,
                 layout: str = "full", batch_size: int = 32, max_new_tokens: int = MAX_NEW_TOKENS,
                 max_turns: int = MAX_TURNS, temperature: float = 0.0, progress: bool = True,
                 sample_seed: int = 0, samples: int = 1) -> list[dict]:
    """Play `n` tasks of `split` (all by default), each `samples` times; one record per episode.

    The samples of all tasks share the batches (a batch may hold several samples of one task);
    with `temperature` > 0 each batch and turn draws from its own seeded stream."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}.")
    if samples > 1 and temperature <= 0:
        raise ValueError(f"{samples} samples per task of a greedy decoder are identical; "
                         f"pass a temperature above 0 (e.g. {SAMPLE_TEMPERATURE}).")
    base = make_env(world, seed=seed, split=split)
    tasks = base.tasks if n is None else base.tasks[:n]
    jobs = [(task, j) for task in tasks for j in range(samples)]
    model.eval()
    model.config.use_cache = True  # saved training checkpoints may carry use_cache=False
    episodes = []
    bar = tqdm(total=len(jobs), desc=f"{world}/{split}", disable=not progress)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        envs = [copy.copy(base) for _ in chunk]
        records = [_new_record(env, task, layout) for env, (task, _) in zip(envs, chunk)]
        for record, (_, j) in zip(records, chunk):
            record["sample"] = j
        # Unsloth's patched generate keeps its own cache; the reuse is measured on transformers only
        reuse = TurnCache() if backend_name() != "unsloth" else None
        for turn in range(max_turns + 1):
            active = [i for i, env in enumerate(envs) if not env.done and not records[i]["ended"]]
            if not active:
                break
            texts, n_tokens = _generate(model, tokenizer, [records[i]["messages"] for i in active],
                                        tools=base.tools, max_new_tokens=max_new_tokens,
                                        temperature=temperature, seed=(sample_seed, start, turn),
                                        turn_cache=reuse, rows=active)
            for i, text, k in zip(active, texts, n_tokens):
                _advance(envs[i], records[i], text, k, layout, truncated=k >= max_new_tokens)
        for env, record in zip(envs, records):
            episodes.append(_finish(env, record))
        bar.update(len(chunk))
    bar.close()
    return episodes


def _new_record(env, task, layout):
    return {"task_id": task.task_id, "world": env.name, "split": env.split, "hops": task.hops,
            "question": env.reset(task), "answer": task.answer, "layout": layout,
            "messages": [{"role": "system", "content": env.system_prompt},
                         {"role": "user", "content": task.question}],
            "steps": [], "generated_tokens": 0, "ended": None}


class TurnCache:
    """The KV cache of one batch of conversations, kept from turn to turn.

    A turn's prompt is the last turn's prompt, the reply, the observation and the next header, so
    its key-value cache need not be recomputed: only the new tokens are prefilled, and a long
    episode no longer re-reads its whole history every turn. Reuse is exact in tokens: a row
    reuses the cache only when the tokens of its new prompt begin with every token it has already
    seen; otherwise the batch is prefilled anew (`refills` counts those turns). Padding inside a
    row (replies of unequal length, new segments of unequal length) is masked, and position ids
    follow the mask, as in one fresh prefill."""

    def __init__(self):
        self.rows, self.seen, self.sequences, self.mask, self.past = [], {}, None, None, None
        self.reuses = self.refills = 0

    def segments(self, rows, prompt_ids):
        """Each row's tokens the cache has not seen, or None when some row cannot reuse it."""
        if self.past is None or any(r not in self.seen for r in rows):
            return None
        new = []
        for r, ids in zip(rows, prompt_ids):
            seen = self.seen[r]
            if ids[:len(seen)] != seen:
                self.refills += 1
                return None
            new.append(ids[len(seen):])
        self.reuses += 1
        return new

    def match(self, prompt_ids) -> list[int]:
        """Keys for prompts that come without them (TRL's tool loop passes only token lists): each
        prompt takes a cached row whose seen tokens begin it; if one has none, the keys 0..n-1,
        which `segments` then rejects or accepts by the same exact check."""
        free, keys = list(self.rows), []
        for ids in prompt_ids:
            row = next((r for r in free if ids[:len(self.seen[r])] == self.seen[r]), None)
            if row is None:
                return list(range(len(prompt_ids)))
            free.remove(row)
            keys.append(row)
        return keys


def _left_pad(id_lists, pad_id):
    width = max(len(ids) for ids in id_lists)
    ids = torch.tensor([[pad_id] * (width - len(x)) + x for x in id_lists], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in id_lists], dtype=torch.long)
    return ids, mask


def _generate(model, tokenizer, conversations, *, tools, max_new_tokens, temperature, seed, prefixes=None,
              turn_cache: TurnCache | None = None, rows=None):
    """One assistant turn per conversation; `prefixes` (optional) force the start of each turn and
    are part of the returned text, not of the token counts. With `turn_cache` (and `rows`, each
    conversation's stable id within the batch) the next call prefills only what is new."""
    prefixes = prefixes or [""] * len(conversations)
    prompts = [tokenizer.apply_chat_template(c, tools=tools, add_generation_prompt=True, tokenize=False) + prefix
               for c, prefix in zip(conversations, prefixes)]
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    kwargs = dict(do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=eos_id)
    if temperature > 0:
        torch.manual_seed(stable_hash(*seed) % 2**31)
        kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
    replies = generate_ids(model, prompt_ids, pad_id=tokenizer.pad_token_id, stop_ids=(eos_id, tokenizer.pad_token_id),
                           turn_cache=turn_cache, rows=rows, **kwargs)
    texts = [(prefix + tokenizer.decode(ids, skip_special_tokens=True)).strip() for ids, prefix in zip(replies, prefixes)]
    return texts, [len(ids) for ids in replies]


@torch.no_grad()
def generate_ids(model, prompt_ids: list[list[int]], *, pad_id: int, stop_ids, turn_cache: TurnCache | None = None,
                 rows=None, **generate_kwargs) -> list[list[int]]:
    """Each prompt's generated tokens, up to and with the first of `stop_ids`: one batched
    `model.generate` (with `generate_kwargs`) under the grouped attention, into a `GrowingCache`.
    With `turn_cache` (and `rows`, each prompt's key in it) only the tokens the cache has not seen
    are prefilled. Shared by evaluation and by RL's rollouts (`stages.rl`)."""
    rows = list(range(len(prompt_ids))) if rows is None else list(rows)
    new = turn_cache.segments(rows, prompt_ids) if turn_cache is not None else None
    if new is None:  # a fresh prefill of every prompt, left-padded so generation continues on the right
        input_ids, mask = _left_pad(prompt_ids, pad_id)
        past = GrowingCache() if backend_name() != "unsloth" else None  # Unsloth's generate keeps its own
        seen_before, fed = [[] for _ in rows], prompt_ids
    else:
        keep = torch.tensor([turn_cache.rows.index(r) for r in rows])
        past = turn_cache.past
        past.batch_select_indices(keep.to(model.device))
        new_ids, new_mask = _left_pad(new, pad_id)
        input_ids = torch.cat([turn_cache.sequences[keep], new_ids], dim=1)
        mask = torch.cat([turn_cache.mask[keep], new_mask], dim=1)
        seen_before, fed = [turn_cache.seen[r] for r in rows], new
    with grouped_attention(model):
        out = model.generate(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                             past_key_values=past, return_dict_in_generate=True, **generate_kwargs)
    generated = out.sequences[:, input_ids.shape[1]:].cpu()
    replies = []
    for row in generated:
        ids = row.tolist()
        stop = [j for j, t in enumerate(ids) if t in stop_ids]
        replies.append(ids[:stop[0] + 1] if stop else ids)
    if turn_cache is not None:
        lengths = [len(ids) for ids in replies]
        gen_mask = torch.tensor([[1] * n + [0] * (generated.shape[1] - n) for n in lengths], dtype=torch.long)
        turn_cache.rows, turn_cache.past = rows, out.past_key_values
        turn_cache.sequences, turn_cache.mask = out.sequences.cpu(), torch.cat([mask, gen_mask], dim=1)
        turn_cache.seen = {r: before + f + ids for r, before, f, ids in zip(rows, seen_before, fed, replies)}
    return replies


def _advance(env, record, text, n_tokens, layout, truncated):
    step = parse_step(text, layout=layout)
    defects = list(step.defects) + (["hit the token limit"] if truncated else [])
    record["generated_tokens"] += n_tokens
    entry = {"text": text, "defects": defects, "format_ok": not defects, "confidence": step.confidence,
             "keywords": step.keywords, "imaginary": step.imaginary, "action": None, "observation": None}
    record["steps"].append(entry)
    record["messages"].append({"role": "assistant", "content": text})
    if step.action is None:
        record["ended"] = "no action"
        return
    entry["action"] = step.action.to_dict()
    obs = env.step(step.action)
    if not step.action.is_answer:
        entry["observation"] = obs.text
        record["messages"].append({"role": "tool", "name": step.action.tool, "content": obs.text})


def _finish(env, record) -> dict:
    record = dict(record)
    record["success"] = bool(env.success)
    record["final_answer"] = env.final_answer
    record["ended"] = record["ended"] or ("answered" if env.final_answer is not None else "out of turns")
    mark_grounded(record)
    record.pop("messages")
    return record


def mark_grounded(record: dict) -> dict:
    """Set each step's `grounded`: its keywords that a later observation or the gold answer bears
    out and that the agent had not already read (in the question or an earlier observation), as
    the RL reward's `score_record` finds them."""
    for step, turn in zip(record["steps"], score_record(record).turns):
        step["grounded"] = turn.grounded
    return record


def summarize(episodes: list[dict]) -> dict:
    """The metrics of one batch of episodes (one model, world and split)."""
    if not episodes:
        return {"episodes": 0}
    steps = [s for e in episodes for s in e["steps"]]
    first = [(e["steps"][0]["confidence"], e["success"]) for e in episodes
             if e["steps"] and e["steps"][0]["confidence"] is not None]
    every = [(s["confidence"], e["success"]) for e in episodes for s in e["steps"] if s["confidence"] is not None]
    keywords = [(len(s["grounded"]), len(s["keywords"])) for s in steps]
    by_task = {}
    for i, e in enumerate(episodes):  # records without a task id count as tasks of their own
        by_task.setdefault(e.get("task_id", i), []).append(e["success"])
    out = {
        "episodes": len(episodes),
        "success": _mean([e["success"] for e in episodes]),
        # k samples per task (k = 1 for greedy evaluation, where both equal the success rate)
        "k": min(len(v) for v in by_task.values()),
        "mean_at_k": mean_at_k(by_task.values()),
        "pass_at_k": pass_at_k(by_task.values()),
        "format_adherence": _mean([s["format_ok"] for s in steps]),
        "episodes_well_formed": _mean([all(s["format_ok"] for s in e["steps"]) for e in episodes]),
        "keywords_per_step": _mean([k[1] for k in keywords]),
        "grounding": (sum(k[0] for k in keywords) / sum(k[1] for k in keywords)) if any(k[1] for k in keywords) else None,
        "confidence_reported": _mean([s["confidence"] is not None for s in steps]),
        "tokens_per_episode": _mean([e["generated_tokens"] for e in episodes]),
        "turns_per_episode": _mean([len(e["steps"]) for e in episodes]),
    }
    for name, pairs in (("first", first), ("all", every)):
        q = [p[0] / 100 for p in pairs]
        y = [p[1] for p in pairs]
        out[f"brier_{name}"] = brier(q, y) if pairs else None
        out[f"ece_{name}"] = ece(q, y) if pairs else None
        out[f"auroc_{name}"] = auroc(q, y) if pairs else None
    return out


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def compare_paired(episodes_a: list[dict], episodes_b: list[dict]) -> dict | None:
    """Two models' episodes on the same tasks, paired by task (and sample): `metrics.mcnemar` of
    their successes. Raises ValueError when they did not play the same tasks."""
    a, b = ({(e["task_id"], e.get("sample", 0)): e["success"] for e in eps} for eps in (episodes_a, episodes_b))
    if a.keys() != b.keys():
        raise ValueError(f"the two runs played different tasks ({len(a.keys() & b.keys())} of {len(a)} and "
                         f"{len(b)} in common); pair runs of one seed, evaluated with the same --n.")
    keys = sorted(a)
    return mcnemar([a[k] for k in keys], [b[k] for k in keys])



def stage_layout(stage_folder) -> str:
    """The step layout a stage's model writes: its own (SFT stages record it), else that of the
    run's sft stage beside it, else that of the stage it started from (`init`), else "full"."""
    folder = Path(stage_folder)
    for _ in range(4):  # mt -> sft -> rl: a chain of at most three stages
        path = folder / "stage.json"
        if not path.exists():
            break
        settings = json.loads(path.read_text())
        sibling = folder.parent / "sft" / "stage.json"
        if settings.get("layout"):
            return settings["layout"]
        if folder.name != "sft" and sibling.exists():
            return json.loads(sibling.read_text()).get("layout", "full")
        init = settings.get("init")
        if not init or init == "base":
            break
        folder = Path(init).parent if Path(init).name == "model" else Path(init)
    return "full"


def episodes_path(run_dir, stage: str, world: str, split: str) -> Path:
    """Where `evaluate_run` stores one world and split's episodes (JSON lines)."""
    return Path(run_dir) / "eval" / stage / f"{world}-{split}.jsonl"


def record_path(run_dir, stage: str, world: str, split: str) -> Path:
    """Where `evaluate_run` stores one world and split's record: its settings, seconds and metrics row,
    written last, so it marks the evaluation done."""
    return episodes_path(run_dir, stage, world, split).with_suffix(".json")


def stored_episodes(run_dir, stage: str, world: str, split: str) -> list[dict]:
    """The episodes `evaluate_run` stored for one world and split of a run; [] if it has none."""
    path = episodes_path(run_dir, stage, world, split)
    return read_jsonl(path) if path.exists() else []


def evaluate_run(run_dir, *, stage: str | None = None, worlds=("search", "math"), splits=("eval", "ood"),
                 n: int | None = None, batch_size: int = 32, seed: int | None = None,
                 max_new_tokens: int = MAX_NEW_TOKENS, progress: bool = True, samples: int = 1,
                 temperature: float | None = None, layout: str | None = None, force: bool = False) -> list[dict]:
    """Score the latest finished stage of `run_dir` (or `stage`); writes RUN_DIR/eval/STAGE/.

    Per world and split: WORLD-SPLIT.jsonl (one line per episode) and WORLD-SPLIT.json (the
    settings, the wall time and the summary row), then summary.json for the whole call. A world
    and split already scored with the same model and settings is read back, not played again
    (`force=True` replays it), so an interrupted evaluation resumes. `temperature` defaults to
    greedy for one sample per task and to SAMPLE_TEMPERATURE for more."""
    from .models import load_model
    from .stages.common import STAGES, StageMissing, is_complete, write_json

    run_dir = Path(run_dir)
    bad = [s for s in splits if s not in ("eval", "ood")]
    if bad:
        raise ValueError(f"Evaluation splits are eval and ood, not {', '.join(bad)}.")
    finished = [s for s in reversed(STAGES) if is_complete(run_dir / s)]
    if stage is None and not finished:
        raise StageMissing(f"No finished stage in {run_dir}; train one first, e.g. "
                           f"python -m foresight_lite train --stage mt --run {run_dir.name}.")
    stage = stage or finished[0]
    if stage not in finished:
        raise StageMissing(f"Stage {stage!r} of {run_dir} has not finished; train it with "
                           f"python -m foresight_lite train --stage {stage} --run {run_dir.name}.")
    settings = json.loads((run_dir / stage / "stage.json").read_text())
    layout = layout or stage_layout(run_dir / stage)
    seed = settings.get("seed", 0) if seed is None else seed
    if temperature is None:
        temperature = 0.0 if samples == 1 else SAMPLE_TEMPERATURE
    # what makes two evaluations the same; the model is named by its stage's completion record,
    # which a retraining rewrites
    key = {"model": stable_hash((run_dir / stage / "complete.json").read_text()), "stage": stage,
           "layout": layout, "seed": seed, "n": n, "samples": samples, "temperature": temperature,
           "max_new_tokens": max_new_tokens}
    out_dir = run_dir / "eval" / stage
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded, rows = None, []
    for world in worlds:
        for split in splits:
            record = record_path(run_dir, stage, world, split)
            if not force and record.exists() and episodes_path(run_dir, stage, world, split).exists():
                previous = json.loads(record.read_text())
                if previous.get("settings") == key:
                    rows.append(previous["row"])
                    continue
            if loaded is None:  # only when something must be played
                loaded = load_model(settings["preset"], path=run_dir / stage / "model")
            started = time.perf_counter()
            episodes = run_episodes(*loaded, world=world, split=split, seed=seed, n=n, layout=layout,
                                    batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress,
                                    samples=samples, temperature=temperature)
            seconds = time.perf_counter() - started
            atomic_write(episodes_path(run_dir, stage, world, split),
                         "".join(json.dumps(e, sort_keys=True) + "\n" for e in episodes))
            row = {"stage": stage, "world": world, "split": split, **summarize(episodes)}
            write_json(record, {"settings": key, "seconds": seconds, "row": row})  # last: marks the cell done
            rows.append(row)
    write_json(out_dir / "summary.json", {"run": str(run_dir), "stage": stage, "layout": layout, "rows": rows})
    return rows
