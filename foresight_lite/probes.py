"""Probes and views for notebooks 02-03: what a model has learned, read without generating.

What: `observation_nll(model, tokenizer, traces)` teacher-forces held-out trajectories written
in the mid-training text format (`corpora.trajectory_text`) and scores the model's prediction of
every tool observation (what a search returned, what the calculator said): mean negative
log-likelihood per token and top-1 accuracy, over all observation tokens, over the *values* in
them (capitalised names and numbers), and over the *new* values (ones the text before the
observation has not shown, so they cannot be copied from the question or the query).
Why: mid-training is next-token prediction on trajectories, so a model that learned the world
should find the real observations less surprising. A lower NLL on new values after
mid-training means the model learned what searches return; it is the stage-1 capability that
format-only SFT (stage 2, assistant-only loss) never trains, because observations carry no loss.
How: `observation_nll(model, tok, generate_traces("search", n=100, seed=0, split="rl"))`; use
the world seed of training and the rl split, whose tasks stages 1-2 never saw.
The HTML and plotly helpers (`trajectory_html`, `token_nll_html`, `loss_mask_html`,
`loss_curves`) draw what the notebooks show; `cached_episodes` keeps evaluation re-runs cheap.
`first_turn_plans` (used by `scripts/hop_probe.py`) generates: does a student state the hop plan?
`loss_token_shares` counts which span each of an SFT corpus's loss tokens falls in.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import torch

from .corpora import trajectory_text
from .stages.common import read_metrics
from .traces import atomic_write, read_jsonl

_OBSERVATION = re.compile(r"<tool_response>\n(.*?)\n</tool_response>", re.S)
# Values: runs of capitalised words (entity names) and numbers; not the passage ranks "[1]".
_VALUE = re.compile(r"(?<![\w\[])(?:[A-Z][a-z]+(?:[ -][A-Z][a-z]+)*|-?\d+(?:\.\d+)?)(?![\w\]])")
KINDS = ("observation", "value", "new_value")


def observation_spans(text: str) -> list[tuple[int, int]]:
    """Character ranges of the observation contents (inside each <tool_response> block)."""
    return [m.span(1) for m in _OBSERVATION.finditer(text)]


def value_spans(text: str, start: int, end: int) -> list[tuple[int, int, bool]]:
    """(start, end, new) of every name or number in text[start:end]; `new` if no earlier text has
    it (the question, the queries, earlier observations or earlier in the same observation)."""
    out = []
    for m in _VALUE.finditer(text[start:end]):
        a, b = start + m.start(), start + m.end()
        seen = re.search(rf"(?<!\w){re.escape(m.group())}(?!\w)", text[:a]) is not None
        out.append((a, b, not seen))
    return out


def _overlaps(s: int, e: int, spans) -> bool:
    return any(s < b and e > a for a, b, *_ in spans)


@torch.no_grad()
def token_scores(model, tokenizer, texts: list[str], *, batch_size: int = 4,
                 max_length: int = 1024) -> list[list[dict]]:
    """Per text, per predicted token: its characters, NLL (nats) and whether top-1 was right.

    Token i is scored from the model's distribution after tokens < i (teacher forcing); the first
    token of each text has no prediction and is left out. Texts are cut at `max_length` tokens.
    """
    model.eval()
    device = model.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    for b in range(0, len(texts), batch_size):
        chunk = texts[b:b + batch_size]
        enc = [tokenizer(t, return_offsets_mapping=True, truncation=True, max_length=max_length)
               for t in chunk]
        width = max(len(e["input_ids"]) for e in enc)
        ids = torch.full((len(enc), width), pad, dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, :len(e["input_ids"])] = torch.tensor(e["input_ids"])
            mask[i, :len(e["input_ids"])] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        for i, e in enumerate(enc):
            n = len(e["input_ids"])
            row = logits[i, :n - 1].float()
            target = ids[i, 1:n].to(row.device)
            nll = torch.nn.functional.cross_entropy(row, target, reduction="none")
            top1 = row.argmax(-1) == target
            out.append([{"start": s, "end": t, "nll": float(x), "top1": bool(c)}
                        for (s, t), x, c in zip(e["offset_mapping"][1:n], nll.tolist(), top1.tolist())])
        del logits
    return out


def classify_tokens(text: str, scores: list[dict]) -> list[dict]:
    """Tag each scored token with the kinds it belongs to: observation, value, new_value."""
    observations = observation_spans(text)
    values = [v for a, b in observations for v in value_spans(text, a, b)]
    new_values = [v for v in values if v[2]]
    for s in scores:
        a, b = s["start"], s["end"]
        s["kinds"] = [k for k, spans in zip(KINDS, (observations, values, new_values))
                      if b > a and _overlaps(a, b, spans)]
    return scores


def observation_nll(model, tokenizer, traces: list[dict], *, n: int | None = None,
                    batch_size: int = 4, max_length: int = 1024) -> dict:
    """How well `model` predicts the real observations of `traces` (plain mid-training text).

    Returns per kind (observation, value, new_value): `<kind>_nll` (mean nats per token),
    `<kind>_acc` (top-1 accuracy) and `<kind>_tokens` (how many tokens were scored).
    """
    traces = traces if n is None else traces[:n]
    texts = [trajectory_text(t) for t in traces]
    totals = {k: [0.0, 0, 0] for k in KINDS}  # nll sum, top-1 hits, tokens
    for text, scores in zip(texts, token_scores(model, tokenizer, texts, batch_size=batch_size,
                                                max_length=max_length)):
        for s in classify_tokens(text, scores):
            for k in s["kinds"]:
                totals[k][0] += s["nll"]
                totals[k][1] += s["top1"]
                totals[k][2] += 1
    result = {"traces": len(texts)}
    for k, (nll, hits, count) in totals.items():
        result[f"{k}_nll"] = nll / count if count else None
        result[f"{k}_acc"] = hits / count if count else None
        result[f"{k}_tokens"] = count
    return result


# ---------------------------------------------------------------------------------------------
# Views


_TAG_COLORS = {"imaginary": "#e8f0fe", "keyword": "#e6f4ea", "analysis": "#fef7e0",
               "confidence": "#fce8e6", "tool_response": "#f1f3f4"}
_PRE = ("white-space:pre-wrap;word-break:break-word;font-family:monospace;font-size:12px;"
        "line-height:1.35;margin:0")


def trajectory_html(text: str) -> str:
    """Mid-training text as HTML; foresight spans and observations get background colours."""
    tags = "|".join(_TAG_COLORS)
    parts, last = [], 0
    for m in re.finditer(rf"<({tags})>.*?</\1>", text, re.S):
        parts.append(html.escape(text[last:m.start()]))
        color = _TAG_COLORS[m.group(1)]
        parts.append(f'<span style="background:{color}">{html.escape(m.group())}</span>')
        last = m.end()
    parts.append(html.escape(text[last:]))
    return f'<pre style="{_PRE}">{"".join(parts)}</pre>'


def side_by_side_html(panels: dict[str, str], *, render=trajectory_html) -> str:
    """Texts in columns under their titles (each drawn by `render`)."""
    cols = "".join(f'<td style="vertical-align:top;width:{100 // max(len(panels), 1)}%;'
                   f'padding:4px"><b>{html.escape(title)}</b>{render(body)}</td>'
                   for title, body in panels.items())
    return f'<table style="width:100%;table-layout:fixed"><tr>{cols}</tr></table>'


def token_nll_html(text: str, scores: list[dict], *, max_nll: float = 8.0,
                   title: str = "") -> str:
    """The text with each observation token shaded by its NLL (white = expected, red = surprise).

    Hover a token to read its NLL; value tokens (names, numbers) are underlined."""
    scores = [s for s in scores if "observation" in s.get("kinds", ())]
    parts, last = [], 0
    for s in scores:
        if s["start"] < last:
            continue
        if s["start"] > last:
            parts.append(f'<span style="color:#777">{html.escape(text[last:s["start"]])}</span>')
        share = min(s["nll"] / max_nll, 1.0)
        red = f"rgba(214,39,40,{share:.2f})"
        line = "underline" if "value" in s["kinds"] else "none"
        parts.append(f'<span title="NLL {s["nll"]:.2f}" style="background:{red};'
                     f'text-decoration:{line}">{html.escape(text[s["start"]:s["end"]])}</span>')
        last = s["end"]
    parts.append(f'<span style="color:#777">{html.escape(text[last:])}</span>')
    head = f"<b>{html.escape(title)}</b>" if title else ""
    return f'{head}<pre style="{_PRE}">{"".join(parts)}</pre>'


def loss_mask_html(tokenizer, messages: list[dict], tools=None) -> str:
    """A chat episode as the SFT trainer sees it: tokens that carry loss in green, the rest grey.

    Uses the chat template's generation markers (TRL `assistant_only_loss=True`), so system,
    user and tool turns (the observations) are grey: SFT never trains the model to predict them.
    """
    tools = json.loads(tools) if isinstance(tools, str) else tools
    enc = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    parts, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or mask[i] != mask[start]:
            piece = html.escape(tokenizer.decode(ids[start:i]))
            style = "background:#e6f4ea;color:#137333" if mask[start] else "color:#888"
            parts.append(f'<span style="{style}">{piece}</span>')
            start = i
    share = sum(mask) / max(len(mask), 1)
    head = f"<b>{share:.0%} of {len(ids)} tokens carry loss (green)</b>"
    return f'{head}<pre style="{_PRE}">{"".join(parts)}</pre>'


def assistant_turn_text(message: dict) -> str:
    """One assistant message of a chat episode as the model writes it: spans, then the call."""
    calls = [c.get("function", c) for c in message.get("tool_calls") or []]
    text = message.get("content") or ""
    for call in calls:
        arguments = call["arguments"]
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        text += f'\n<tool_call>\n{{"name": "{call["name"]}", "arguments": {arguments}}}\n</tool_call>'
    return text.strip()


_FORESIGHT_SPAN = re.compile(r"<(imaginary|keyword|analysis|confidence)>.*?</\1>", re.S)


def loss_token_shares(tokenizer, episodes) -> dict:
    """Where an SFT corpus's loss tokens go: counts of assistant tokens in each foresight span
    (imaginary, keyword, analysis, confidence) and in the policy (think and tool call), and the
    policy's `policy_share` of all of them.

    Why: SFT averages its loss over every assistant token, so the spans FE-SFT adds take a share
    of each update that plain SFT spends on the policy alone. Counted on `assistant_turn_text`
    (the turn-ending token is left out); `episodes` is a corpus such as `corpora.fe_sft(traces)`.
    """
    counts = dict.fromkeys(("imaginary", "keyword", "analysis", "confidence", "policy"), 0)
    for episode in episodes:
        for message in episode["messages"]:
            if message["role"] != "assistant":
                continue
            text = assistant_turn_text(message)
            spans = [(m.start(), m.end(), m.group(1)) for m in _FORESIGHT_SPAN.finditer(text)]
            offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            for start, _ in offsets:
                counts[next((kind for a, b, kind in spans if a <= start < b), "policy")] += 1
    total = sum(counts.values())
    return {**counts, "total": total, "policy_share": counts["policy"] / total if total else None}


def loss_curves(runs: dict[str, str | Path], *, metric: str = "loss", title: str = "Training loss"):
    """One line per run: `metric` against the step, from each stage folder's metrics.jsonl."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, stage in runs.items():
        rows = [r for r in read_metrics(stage) if metric in r]
        fig.add_trace(go.Scatter(x=[r["step"] for r in rows], y=[r[metric] for r in rows],
                                 mode="lines+markers", name=name))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title=metric, width=700, height=400)
    return fig


def confidence_pairs(episodes: list[dict], *, steps: str = "all") -> tuple[list[float], list[bool]]:
    """(confidence in [0, 1], episode success) for every step that stated a confidence.

    `steps="first"` keeps only each episode's first step (the prediction made before any search).
    """
    conf, ok = [], []
    for e in episodes:
        chosen = e["steps"][:1] if steps == "first" else e["steps"]
        for s in chosen:
            if s.get("confidence") is not None:
                conf.append(s["confidence"] / 100)
                ok.append(bool(e["success"]))
    return conf, ok


def cached_episodes(path: str | Path, play) -> list[dict]:
    """Episodes stored at `path` (JSON lines), or `play()`'s, written there first (atomically)."""
    path = Path(path)
    if path.exists():
        return read_jsonl(path)
    episodes = play()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in episodes))
    return episodes


def perplexity(nll: float | None) -> float | None:
    """exp(NLL): the number of equally likely tokens the model was choosing between."""
    return None if nll is None else math.exp(nll)


def states_multi_hop_plan(think: str) -> bool:
    """Whether a first search turn names more than one hop ("I need A, then B. I will search ...")."""
    return ", then " in think.split("I will search")[0]


def first_turn_plans(model, tokenizer, questions: list[str], *, seed: int = 0, max_new_tokens: int = 48) -> list[str]:
    """The first assistant turn the model writes, greedily, for each search-world question.

    Diagnoses 2-hop failures: a student that follows the hop plan it states (the search teacher's
    `Next:` turns) fails when it never states it. Compare questions it trained on (underfitting)
    with held-out ones (not generalising): `scripts/hop_probe.py` does both.
    """
    from .envs import make_env
    from .evaluate import _generate

    env = make_env("search", seed=seed, split="train")
    conversations = [[{"role": "system", "content": env.system_prompt}, {"role": "user", "content": q}]
                     for q in questions]
    texts, _ = _generate(model, tokenizer, conversations, tools=env.tools, max_new_tokens=max_new_tokens,
                         temperature=0.0, seed=(seed,))
    return texts
