"""Views and checks of stage 3 (FC-RL) for notebook 04: reward curves, span credit, reward hacking.

What: `reward_curves` plots the per-step reward components a stage logged; `credit_html` colours
one episode's tokens by the advantage span-level credit gives them; `episode_text` writes an
evaluation record as a transcript; `hacking_check` / `hacking_flags` compare held-out episodes
before and after RL for the signs of a gamed reward (confidences collapsed to a constant,
keywords emptier, copied or repeated).
Why: a reward that goes up is not yet a capability; these are the numbers that tell them apart.
How: see notebooks/04_fc_rl.ipynb; tests in tests/test_rl.py.
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path

import numpy as np

from .envs.base import normalize_answer
from .evaluate import summarize
from .rewards import keyword_grounded
from .stages.common import read_metrics

COMPONENTS = {"reward/success": "success", "reward/calib": "R_calib", "reward/ground": "R_ground",
              "reward/format": "format", "confidence": "mean confidence"}


def reward_curves(stages: dict[str, str | Path], *, title: str = "Reward components during RL"):
    """One panel per reward component, one line per stage folder, against the training step."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    fig = make_subplots(rows=1, cols=len(COMPONENTS), subplot_titles=list(COMPONENTS.values()))
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    for k, (name, stage) in enumerate(stages.items()):
        rows = read_metrics(stage)
        for col, key in enumerate(COMPONENTS, start=1):
            points = [(r["step"], r[key]) for r in rows if key in r and "loss" in r]
            fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                     name=name, legendgroup=name, showlegend=col == 1,
                                     line=dict(color=colours[k % len(colours)])), row=1, col=col)
    fig.update_layout(title=title, height=330, width=1100)
    fig.update_xaxes(title_text="step")
    return fig


def credit_html(tokenizer, ids: list[int], labels: list, advantages: list[float]) -> str:
    """The tokens of one completion, world-model spans boxed, shaded by advantage (green +, red -);
    grey tokens (observations) carry no loss."""
    scale = max([abs(a) for a, lab in zip(advantages, labels) if lab is not None] + [1e-6])
    runs = []  # consecutive tokens of one span and one advantage share one <span>
    for token, label, adv in zip(ids, labels, advantages):
        key = (label, round(adv, 6))
        if runs and runs[-1][0] == key:
            runs[-1][1].append(token)
        else:
            runs.append((key, [token]))
    parts = []
    for (label, adv), tokens in runs:
        text = html.escape(tokenizer.decode(tokens, skip_special_tokens=False))
        if label is None:
            style = "color:#999"
        else:
            alpha = 0.15 + 0.6 * abs(adv) / scale
            rgb = "44,160,44" if adv >= 0 else "214,39,40"
            style = f"background:rgba({rgb},{alpha:.2f})" + (";border-bottom:2px solid #1f77b4" if label[1] else "")
        parts.append(f'<span style="{style}" title="{adv:+.3f}">{text}</span>')
    legend = ("<div style='font-size:0.85em;margin-bottom:4px'>underlined: world-model span · "
              "green/red: positive/negative advantage (hover for the value) · grey: observation, no loss</div>")
    return f"{legend}<pre style='white-space:pre-wrap;font-size:0.8em'>{''.join(parts)}</pre>"


def episode_text(record: dict) -> str:
    """An evaluation record (evaluate.run_episodes) as a transcript in the mid-training text format."""
    lines = [f"Question: {record['question']}"]
    for step in record["steps"]:
        lines.append(step["text"])
        if step.get("observation") is not None:
            lines.append(f"<tool_response>\n{step['observation']}\n</tool_response>")
    verdict = "succeeded" if record["success"] else "failed"
    lines.append(f"[{verdict}: answered {record.get('final_answer')!r}, gold {record['answer']!r}]")
    return "\n".join(lines)


def hacking_check(episodes: dict[str, list[dict]]) -> list[dict]:
    """Per model (name -> its held-out evaluation records), the numbers that expose a gamed reward.

    Calibration: success, AUROC / ECE / Brier of every stated confidence against the outcome,
    and the confidences' spread (std, share of the most common value): a reward met by a constant
    confidence shows as AUROC ~0.5 with a collapsed spread. Keywords: per step, share of steps
    with none, share already seen (copied from the question or earlier observations, so not a
    prediction), share distinct across all steps (generic keywords repeat), and grounding (new
    information only, as both the evaluation and the RL reward count it).
    """
    rows = []
    for name, records in episodes.items():
        summary = summarize(records)
        stated = [s["confidence"] / 100 for e in records for s in e["steps"] if s["confidence"] is not None]
        keywords, copied, empty, steps_with_span = [], 0, 0, 0
        for e in records:
            seen = e["question"]
            for s in e["steps"]:
                if s.get("imaginary") is not None or s["keywords"]:
                    steps_with_span += 1
                    empty += not s["keywords"]
                for k in s["keywords"]:
                    keywords.append(normalize_answer(k))
                    copied += keyword_grounded(k, [seen], "")  # in what it had already read
                seen += " " + (s.get("observation") or "")
        mode_share = Counter(stated).most_common(1)[0][1] / len(stated) if stated else None
        rows.append({
            "model": name, "episodes": len(records), "success": summary.get("success"),
            "auroc_all": summary.get("auroc_all"), "ece_all": summary.get("ece_all"),
            "brier_all": summary.get("brier_all"),
            "confidence_mean": float(np.mean(stated)) if stated else None,
            "confidence_std": float(np.std(stated)) if stated else None,
            "confidence_mode_share": mode_share,
            "keywords_per_step": summary.get("keywords_per_step"),
            "steps_without_keywords": empty / steps_with_span if steps_with_span else None,
            "keywords_already_seen": copied / len(keywords) if keywords else None,
            "keywords_distinct": len(set(keywords)) / len(keywords) if keywords else None,
            "grounding": summary.get("grounding"),
        })
    return rows


def hacking_flags(rows: list[dict], *, reference: int = 0) -> list[str]:
    """Plain sentences for every sign of a gamed reward, each model against rows[reference]."""
    flags, ref = [], rows[reference]

    def dropped(row, key, share):
        return ref.get(key) and row.get(key) is not None and row[key] < (1 - share) * ref[key]

    for row in rows[:reference] + rows[reference + 1:]:
        name = row["model"]
        if row.get("confidence_std") is not None and row["confidence_std"] < 0.05:
            flags.append(f"{name}: confidences collapsed to nearly one value (std {row['confidence_std']:.3f}).")
        if (row.get("auroc_all") is not None and row["auroc_all"] <= 0.55
                and (row.get("ece_all") or 1) < (ref.get("ece_all") or 0)):
            flags.append(f"{name}: ECE improved but AUROC is {row['auroc_all']:.2f}: the confidence matches the "
                         "average success without telling successes from failures.")
        if dropped(row, "keywords_per_step", 0.3):
            flags.append(f"{name}: keywords per step fell from {ref['keywords_per_step']:.2f} to "
                         f"{row['keywords_per_step']:.2f} (emptier predictions).")
        if (row.get("keywords_already_seen") or 0) > (ref.get("keywords_already_seen") or 0) + 0.1:
            flags.append(f"{name}: {row['keywords_already_seen']:.0%} of keywords were already seen (copied, "
                         "not predicted).")
        if dropped(row, "keywords_distinct", 0.3):
            flags.append(f"{name}: keywords became repetitive ({row['keywords_distinct']:.0%} distinct).")
    return flags


OBSERVATION_TURN = "\n<|im_start|>user\n<tool_response>\n{}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"


def episode_tokens(tokenizer, turn_texts: list[str], observations: list[str | None]) -> tuple[list[int], list[int]]:
    """An episode's completion as TRL's multi-turn rollout holds it: token ids and the mask of the
    model's own tokens (1) against observation tokens (0)."""
    ids, mask = [], []
    for text, obs in zip(turn_texts, list(observations) + [None] * len(turn_texts)):
        piece = tokenizer(text + "<|im_end|>", add_special_tokens=False).input_ids
        ids, mask = ids + piece, mask + [1] * len(piece)
        if obs is not None:
            piece = tokenizer(OBSERVATION_TURN.format(obs), add_special_tokens=False).input_ids
            ids, mask = ids + piece, mask + [0] * len(piece)
    return ids, mask


def worked_example(*, seed: int = 0) -> dict:
    """A GRPO group of four hand-written episodes on one real 2-hop search task (real observations):
    a careful success, an over-confident guess, a careful plan that answers wrong, and a success
    that leaves out its confidence."""
    from .envs import Action, make_env
    from .format import render_step

    env = make_env("search", seed=seed, split="rl")
    task = next(t for t in env.tasks if t.hops == 2)
    start, bridge, gold = task.plan["chain"]

    def play(steps):  # steps: (keywords, confidence, action); returns turn texts and observations
        env.reset(task)
        texts, observations = [], []
        for keywords, confidence, action in steps:
            text = render_step(think="Next step.", action=action, imaginary="search [ENTITY] -> answer [X]",
                               keywords=keywords, analysis="What is still missing.", confidence=confidence or 0)
            if confidence is None:  # the span without its <confidence> tag
                text = "\n".join(line for line in text.splitlines() if not line.startswith("<confidence>"))
            texts.append(text)
            obs = env.step(action)
            observations.append(None if action.is_answer else obs.text)
        return texts, observations

    search = lambda q: Action.call("search", query=q)  # noqa: E731
    plans = {
        "careful success": [([bridge], 60, search(start)), ([gold], 75, search(bridge)),
                            ([gold], 90, Action.final(gold))],
        "over-confident guess": [([start], 90, Action.final("Velmora"))],
        "careful, wrong answer": [([bridge], 60, search(start)), (["mining"], 70, search(bridge)),
                                  (["mining"], 70, Action.final("mining"))],
        "success, no confidence": [([bridge], None, search(start)), ([gold], None, search(bridge)),
                                   ([gold], None, Action.final(gold))],
    }
    return {"question": task.question, "gold": gold, "episodes": {name: play(p) for name, p in plans.items()}}
