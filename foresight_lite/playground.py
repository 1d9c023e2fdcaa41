"""The what-if playground: edit an agent's plan, see what it imagines next and what the world does.

What: `what_if(model, tokenizer, world=..., task_index=..., plan=...)` plays one held-out task.
The first assistant turn is forced to begin with `plan` (by default nothing: the model's own
step), and the model writes the rest of it (the keywords, the gap analysis, the confidence, the
thought and the action) and every later turn, against the real world. `what_if_html` sets the
imagined side (rollout, keywords, confidence) beside what the world really returned (each
observation, the final answer against the gold one); `what_if_playground` wraps it in ipywidgets.
`own_plan(text)` cuts a step to its plan: the text up to the end of its imagined rollout
(`<imaginary>...</imaginary>`), or of its `<think>` span in the plain layout.
Why: a confidence is a prediction about the future. Editing the plan (search for someone else,
answer at once, imagine a different chain) and watching the stated confidence move (or not),
beside what really happens, shows whether the model's foresight tracks anything.
How: in notebook 05, or `what_if(*load_model("tiny"), world="search", task_index=0)`.
With `samples` > 1 the same plan is continued several times at a temperature, so a stated
confidence can be held against the success rate of the plan it was stated for.
"""

from __future__ import annotations

import copy
import html

from .envs import MAX_TURNS, make_env
from .evaluate import MAX_NEW_TOKENS, SAMPLE_TEMPERATURE, _advance, _finish, _generate, _new_record


def own_plan(text: str) -> str:
    """The plan part of a step: up to the end of `</imaginary>`, else of `</think>`, else all of it."""
    for tag in ("</imaginary>", "</think>"):
        end = text.find(tag)
        if end >= 0:
            return text[:end + len(tag)]
    return text


def what_if(model, tokenizer, *, world: str, split: str = "eval", seed: int = 0, task_index: int = 0,
            plan: str | None = None, layout: str = "full", samples: int = 1,
            temperature: float = SAMPLE_TEMPERATURE, max_new_tokens: int = MAX_NEW_TOKENS,
            max_turns: int = MAX_TURNS, sample_seed: int = 0) -> list[dict]:
    """Play task `task_index` with the first turn forced to start with `plan`; one record per sample.

    Greedy for one sample; `samples` > 1 continue the same plan at `temperature` (seeded)."""
    base = make_env(world, seed=seed, split=split)
    if not 0 <= task_index < len(base.tasks):
        raise ValueError(f"task_index must be between 0 and {len(base.tasks) - 1} for {world}/{split}.")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}.")
    task = base.tasks[task_index]
    envs = [copy.copy(base) for _ in range(samples)]
    records = [_new_record(env, task, layout) for env in envs]
    model.eval()
    model.config.use_cache = True
    for turn in range(max_turns + 1):
        active = [i for i, env in enumerate(envs) if not env.done and not records[i]["ended"]]
        if not active:
            break
        forced = (plan or "") if turn == 0 else ""
        texts, n_tokens = _generate(model, tokenizer, [records[i]["messages"] for i in active], tools=base.tools,
                                    max_new_tokens=max_new_tokens, temperature=temperature if samples > 1 else 0.0,
                                    seed=("what-if", sample_seed, turn), prefixes=[forced] * len(active))
        for i, text, k in zip(active, texts, n_tokens):
            _advance(envs[i], records[i], text, k, layout, truncated=k >= max_new_tokens)
    out = [_finish(env, record) for env, record in zip(envs, records)]
    for record in out:
        record["plan"] = plan
    return out


_CELL = "border:1px solid #ddd;padding:6px;vertical-align:top;text-align:left"


def _esc(text) -> str:
    return html.escape(str(text)).replace("\n", "<br>")


def what_if_html(episodes: list[dict]) -> str:
    """The first episode turn by turn (imagined | what the world returned), and, for several
    samples, the stated first confidence against the plan's real success rate."""
    e = episodes[0]
    rows = []
    for t, step in enumerate(e["steps"]):
        grounded = set(step.get("grounded", []))
        keywords = ", ".join(f"<b style='color:#2ca02c'>{_esc(k)} ✓</b>" if k in grounded else _esc(k)
                             for k in step["keywords"]) or "<i>(none)</i>"
        confidence = "<i>(none)</i>" if step["confidence"] is None else f"<b>{step['confidence']:.0f}</b> / 100"
        action = step["action"]
        did = ("<i>no readable action</i>" if action is None else
               f"answer: <b>{_esc(action['answer'])}</b>" if "answer" in action else
               f"{_esc(action['tool'])}({_esc(', '.join(map(str, action['arguments'].values())))})")
        seen = _esc(step["observation"]) if step["observation"] is not None else ""
        defects = f"<br><span style='color:#d62728'>defects: {_esc('; '.join(step['defects']))}</span>" \
            if step["defects"] else ""
        rows.append(f"<tr><td style='{_CELL}'>{t}</td>"
                    f"<td style='{_CELL}'><b>imagined:</b> {_esc(step['imaginary'] or '(none)')}<br>"
                    f"<b>keywords:</b> {keywords}<br><b>confidence:</b> {confidence}{defects}</td>"
                    f"<td style='{_CELL}'><b>did:</b> {did}<br><span style='color:#555'>{seen}</span></td></tr>")
    verdict = ("<span style='color:#2ca02c'><b>succeeded</b></span>" if e["success"] else
               "<span style='color:#d62728'><b>failed</b></span>")
    head = (f"<p><b>{_esc(e['question'])}</b> · gold <code>{_esc(e['answer'])}</code> · final answer "
            f"<code>{_esc(e['final_answer'])}</code> {verdict} ({_esc(e['ended'])})</p>")
    if e.get("plan"):
        head += f"<p>forced plan: <code>{_esc(e['plan'])}</code></p>"
    if len(episodes) > 1:
        firsts = [x["steps"][0]["confidence"] for x in episodes if x["steps"]]
        stated = [c for c in firsts if c is not None]
        rate = sum(x["success"] for x in episodes) / len(episodes)
        mean = f"{sum(stated) / len(stated):.0f} / 100" if stated else "none"
        head += (f"<p>{len(episodes)} continuations of this plan: stated first confidence {mean} (mean), "
                 f"real success <b>{rate:.0%}</b>. The first one is shown.</p>")
    return (head + f"<table style='border-collapse:collapse;font-size:90%'><tr><th style='{_CELL}'>turn</th>"
            f"<th style='{_CELL}'>what the model imagined</th><th style='{_CELL}'>what the world returned</th>"
            f"</tr>{''.join(rows)}</table>")


def what_if_playground(model, tokenizer, *, layout: str = "full", seed: int = 0, max_new_tokens: int = MAX_NEW_TOKENS,
                       worlds=("search", "math")):
    """ipywidgets: pick a world, split and task, edit the plan, replay; the model's own plan is the default."""
    import ipywidgets as w
    from IPython.display import HTML, display

    world = w.Dropdown(options=list(worlds), description="world")
    split = w.Dropdown(options=["eval", "ood"], description="split")
    index = w.BoundedIntText(value=0, min=0, max=10_000, description="task")
    samples = w.IntSlider(value=1, min=1, max=8, description="replays")
    plan = w.Textarea(layout=w.Layout(width="95%", height="90px"), description="plan")
    own = w.Button(description="the model's own plan")
    go = w.Button(description="imagine and act", button_style="primary")
    out = w.Output()

    def play(forced):
        out.clear_output(wait=True)
        with out:
            try:
                episodes = what_if(model, tokenizer, world=world.value, split=split.value, seed=seed,
                                   task_index=index.value, plan=forced, layout=layout, samples=samples.value,
                                   max_new_tokens=max_new_tokens)
            except ValueError as err:
                print(err)
                return
            display(HTML(what_if_html(episodes)))
            return episodes

    def from_model(*_):
        episodes = play(None)
        if episodes and episodes[0]["steps"]:
            plan.value = own_plan(episodes[0]["steps"][0]["text"])

    own.on_click(from_model)
    go.on_click(lambda *_: play(plan.value or None))
    from_model()
    return w.VBox([w.HBox([world, split, index]), samples, plan, w.HBox([own, go]), out])
