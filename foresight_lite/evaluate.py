"""The agent runner: a model plays real episodes in a world, many at once, and is scored.

What: `run_episodes(model, tokenizer, world=..., split=...)` plays held-out tasks with batched
generation through the model's chat template: each turn the model writes a step, `parse_step`
reads it, the tool call goes to the real world and its observation comes back as a tool turn.
`summarize(episodes)` turns the records into the metrics the paper reports: success, format
adherence, keyword grounding, Brier / ECE / AUROC of the confidence, tokens per episode.
Why: every stage is judged by what the model does in the world, not by its loss.
How: `python -m foresight_lite evaluate RUN_DIR` (see cli.py), or from Python as above.

Grounding counts a predicted keyword only if it turns up in a *later observation* or is the gold
answer, never in the agent's own later actions, which it could simply make come true.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .envs import MAX_TURNS, make_env
from .envs.base import stable_hash
from .format import parse_step
from .metrics import auroc, brier, ece
from .rewards import keyword_grounded  # one definition of grounding, shared with the RL reward

MAX_NEW_TOKENS = 320  # a full foresight step is about 150 tokens; longer output is a runaway


def run_episodes(model, tokenizer, *, world: str, split: str = "eval", seed: int = 0, n: int | None = None,
                 layout: str = "full", batch_size: int = 32, max_new_tokens: int = MAX_NEW_TOKENS,
                 max_turns: int = MAX_TURNS, temperature: float = 0.0, progress: bool = True,
                 sample_seed: int = 0) -> list[dict]:
    """Play `n` tasks of `split` (all by default); one record per episode."""
    base = make_env(world, seed=seed, split=split)
    tasks = base.tasks if n is None else base.tasks[:n]
    model.eval()
    model.config.use_cache = True  # saved training checkpoints may carry use_cache=False
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"  # restored below
    episodes = []
    bar = tqdm(total=len(tasks), desc=f"{world}/{split}", disable=not progress)
    for start in range(0, len(tasks), batch_size):
        chunk = tasks[start:start + batch_size]
        envs = [copy.copy(base) for _ in chunk]
        records = [_new_record(env, task, layout) for env, task in zip(envs, chunk)]
        for turn in range(max_turns + 1):
            active = [i for i, env in enumerate(envs) if not env.done and not records[i]["ended"]]
            if not active:
                break
            texts, n_tokens = _generate(model, tokenizer, [records[i]["messages"] for i in active],
                                        tools=base.tools, max_new_tokens=max_new_tokens,
                                        temperature=temperature, seed=(sample_seed, start, turn))
            for i, text, k in zip(active, texts, n_tokens):
                _advance(envs[i], records[i], text, k, layout, truncated=k >= max_new_tokens)
        for env, record in zip(envs, records):
            episodes.append(_finish(env, record))
        bar.update(len(chunk))
    bar.close()
    tokenizer.padding_side = padding_side
    return episodes


def _new_record(env, task, layout):
    return {"task_id": task.task_id, "world": env.name, "split": env.split, "hops": task.hops,
            "question": env.reset(task), "answer": task.answer, "layout": layout,
            "messages": [{"role": "system", "content": env.system_prompt},
                         {"role": "user", "content": task.question}],
            "steps": [], "generated_tokens": 0, "ended": None}


@torch.no_grad()
def _generate(model, tokenizer, conversations, *, tools, max_new_tokens, temperature, seed):
    prompts = [tokenizer.apply_chat_template(c, tools=tools, add_generation_prompt=True, tokenize=False)
               for c in conversations]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    kwargs = dict(do_sample=temperature > 0, max_new_tokens=max_new_tokens,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"))
    if temperature > 0:
        torch.manual_seed(stable_hash(*seed) % 2**31)
        kwargs.update(temperature=temperature, top_p=1.0, top_k=0)
    out = model.generate(**batch, **kwargs)
    new = out[:, batch["input_ids"].shape[1]:]
    texts, lengths = [], []
    for row in new:
        ids = row.tolist()
        stop = [j for j, t in enumerate(ids) if t in (kwargs["eos_token_id"], tokenizer.pad_token_id)]
        ids = ids[:stop[0] + 1] if stop else ids
        lengths.append(len(ids))
        texts.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    return texts, lengths


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
    for i, step in enumerate(record["steps"]):
        later = [s["observation"] or "" for s in record["steps"][i:]]
        step["grounded"] = [k for k in step["keywords"] if keyword_grounded(k, later, record["answer"])]
    record.pop("messages")
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
    out = {
        "episodes": len(episodes),
        "success": _mean([e["success"] for e in episodes]),
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



def evaluate_run(run_dir, *, stage: str | None = None, worlds=("search", "math"), splits=("eval", "ood"),
                 n: int | None = None, batch_size: int = 32, seed: int | None = None,
                 max_new_tokens: int = MAX_NEW_TOKENS, progress: bool = True) -> list[dict]:
    """Score the latest finished stage of `run_dir` (or `stage`); writes RUN_DIR/eval/STAGE/."""
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
    sft_settings = run_dir / "sft" / "stage.json"
    layout = settings.get("layout") or (json.loads(sft_settings.read_text())["layout"] if sft_settings.exists() else "full")
    seed = settings["seed"] if seed is None else seed
    model, tokenizer = load_model(settings["preset"], path=run_dir / stage / "model")
    out_dir = run_dir / "eval" / stage
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for world in worlds:
        for split in splits:
            episodes = run_episodes(model, tokenizer, world=world, split=split, seed=seed, n=n, layout=layout,
                                    batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress)
            lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in episodes)
            tmp = out_dir / f".{world}-{split}.jsonl.tmp"
            tmp.write_text(lines)
            tmp.replace(out_dir / f"{world}-{split}.jsonl")
            rows.append({"stage": stage, "world": world, "split": split, **summarize(episodes)})
    write_json(out_dir / "summary.json", {"run": str(run_dir), "stage": stage, "layout": layout, "rows": rows})
    return rows
