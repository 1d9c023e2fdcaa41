"""One `datasets.Dataset` builder per training stage, all from the same annotated traces.

| builder        | stage              | columns                          | what it teaches                 |
|----------------|--------------------|----------------------------------|---------------------------------|
| `standard_mt`  | 1, baseline arm    | text                             | the world and its trajectories  |
| `wm_amt`       | 1, WM-AMT          | text (z_t inserted at sampled t) | the same, plus foresight z_t    |
| `sft`          | 2, baseline        | messages, tools                  | think and act                   |
| `fe_sft`       | 2, FE-SFT          | messages, tools                  | the full foresight format       |
| `state_sft`    | 2, State-SFT       | messages, tools                  | rollout + keywords, no q        |
| `rl_prompts`   | 3, FC-RL / RL      | prompt, answer, task, ...        | task prompts for GRPO           |
| `eval_tasks`   | evaluation         | prompt, answer, task, ...        | held-out (eval) and OOD tasks   |

Mid-training text uses the same tags our chat template writes (`<tool_call>`, `<tool_response>`),
so what stage 1 teaches is in the shape stage 2 asks for. Chat columns follow TRL's
conversational format; tool-call arguments and tool schemas are JSON strings so that both
worlds fit one Arrow schema. Training corpora come from train-split traces, `rl_prompts` from
the rl split and `eval_tasks` from eval / ood: disjoint by construction (see envs).
"""

from __future__ import annotations

import json

from datasets import Dataset

from .envs import Action, make_env
from .envs.base import rng_for
from .format import render_spans, tool_call_text

WM_AMT_INSERT_PROB = 0.5  # share of steps that get a z_t block, as the paper samples steps


def _env_meta(world: str, seed: int):
    env = make_env(world, seed=seed, split="train")
    return env.system_prompt, env.tools


def trajectory_text(trace: dict, *, insert_prob: float = 0.0, seed: int = 0) -> str:
    """A trajectory as plain text; with `insert_prob` > 0, z_t blocks before sampled actions."""
    lines = [f"Question: {trace['task']['question']}"]
    rng = rng_for("wm-amt", trace["trace_id"], seed)
    for step in trace["steps"]:
        if insert_prob > 0 and rng.random() < insert_prob:
            lines.append(render_spans(think=step["think"], **_z_kwargs(step["z"]), layout="full"))
        else:
            lines.append(f"<think>{step['think']}</think>")
        lines.append(tool_call_text(Action.from_dict(step["action"])))
        if step["observation"] is not None:
            lines.append(f"<tool_response>\n{step['observation']}\n</tool_response>")
    return "\n".join(lines)


def _z_kwargs(z: dict) -> dict:
    return {"imaginary": z["imaginary"], "keywords": z["keywords"], "analysis": z["analysis"],
            "confidence": 100 * z["q"]}


def standard_mt(traces: list[dict]) -> Dataset:
    """Stage 1 baseline: every trajectory as plain text, no foresight."""
    return Dataset.from_dict({"text": [trajectory_text(t) for t in traces],
                              "trace_id": [t["trace_id"] for t in traces]})


def wm_amt(traces: list[dict], *, insert_prob: float = WM_AMT_INSERT_PROB, seed: int = 0) -> Dataset:
    """Stage 1, WM-AMT: the same trajectories with z_t inserted between s_t and a_t at sampled steps."""
    return Dataset.from_dict({
        "text": [trajectory_text(t, insert_prob=insert_prob, seed=seed) for t in traces],
        "trace_id": [t["trace_id"] for t in traces]})


def chat_episode(trace: dict, *, layout: str, system_prompt: str) -> list[dict]:
    """A trace as TRL conversational messages; assistant turns carry the spans of `layout`."""
    messages = [{"role": "system", "content": system_prompt},
                {"role": "user", "content": trace["task"]["question"]}]
    for step in trace["steps"]:
        action = Action.from_dict(step["action"])
        z = _z_kwargs(step["z"]) if layout != "plain" else {}
        spans = render_spans(think=step["think"], layout=layout, **z)
        if action.is_answer:
            messages.append({"role": "assistant", "content": f"{spans}\n{tool_call_text(action)}"})
            continue
        call = {"type": "function", "function": {"name": action.tool,
                                                 "arguments": json.dumps(action.arguments, ensure_ascii=False)}}
        messages.append({"role": "assistant", "content": spans, "tool_calls": [call]})
        messages.append({"role": "tool", "name": action.tool, "content": step["observation"]})
    return messages


def is_demonstration(trace: dict) -> bool:
    """A trajectory SFT may imitate: it succeeded, and without any of the teacher's deliberate slips.

    A bad query the teacher happened to recover from is still a bad query, and SFT imitates every
    token of a kept episode. Of 400 traces per world (seed 0) this keeps 249 of the 290 successful
    search traces and 261 of the 277 successful math traces. Mid-training keeps every trajectory:
    there the mistakes and their outcomes are part of the world to be learned.
    """
    return bool(trace["success"]) and not any(s.get("slip") for s in trace["steps"])


def _chat_dataset(traces: list[dict], *, layout: str, successful_only: bool) -> Dataset:
    kept = [t for t in traces if is_demonstration(t) or not successful_only]
    rows = {"messages": [], "tools": [], "trace_id": [], "world": []}
    meta = {}
    for t in kept:
        key = (t["world"], t["seed"])
        if key not in meta:
            meta[key] = _env_meta(*key)
        system_prompt, tools = meta[key]
        rows["messages"].append(chat_episode(t, layout=layout, system_prompt=system_prompt))
        rows["tools"].append(json.dumps(tools))
        rows["trace_id"].append(t["trace_id"])
        rows["world"].append(t["world"])
    return Dataset.from_dict(rows)


def sft(traces: list[dict], *, successful_only: bool = True) -> Dataset:
    """Stage 2 baseline: chat episodes that think and act, no foresight."""
    return _chat_dataset(traces, layout="plain", successful_only=successful_only)


def fe_sft(traces: list[dict], *, successful_only: bool = True) -> Dataset:
    """Stage 2, FE-SFT: every assistant turn carries the full world-model span, then think and act."""
    return _chat_dataset(traces, layout="full", successful_only=successful_only)


def state_sft(traces: list[dict], *, successful_only: bool = True) -> Dataset:
    """Stage 2, State-SFT baseline: rollout and keywords, without analysis or confidence."""
    return _chat_dataset(traces, layout="state", successful_only=successful_only)


def _task_rows(world: str, seed: int, split: str, n: int | None) -> Dataset:
    env = make_env(world, seed=seed, split=split)
    tasks = env.tasks if n is None else env.tasks[:n]
    return Dataset.from_dict({
        "prompt": [[{"role": "system", "content": env.system_prompt},
                    {"role": "user", "content": t.question}] for t in tasks],
        "answer": [t.answer for t in tasks],
        "task_id": [t.task_id for t in tasks],
        "hops": [t.hops for t in tasks],
        "world": [world] * len(tasks),
        "split": [split] * len(tasks),
        "task": [json.dumps(t.to_dict(), sort_keys=True) for t in tasks],
        "tools": [json.dumps(env.tools)] * len(tasks),
    })


def rl_prompts(world: str, *, seed: int = 0, n: int | None = None) -> Dataset:
    """Stage 3 task prompts from the rl split (never trained on in stages 1-2)."""
    return _task_rows(world, seed, "rl", n)


def eval_tasks(world: str, *, seed: int = 0, split: str = "eval", n: int | None = None) -> Dataset:
    """Held-out tasks: `split="eval"` (new compositions, in distribution) or `split="ood"`."""
    if split not in ("eval", "ood"):
        raise ValueError(f"eval_tasks takes split='eval' or 'ood', not {split!r}.")
    return _task_rows(world, seed, split, n)


BUILDERS = {"standard_mt": standard_mt, "wm_amt": wm_amt, "sft": sft, "fe_sft": fe_sft,
            "state_sft": state_sft}
