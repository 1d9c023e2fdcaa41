"""Notebook views: a trace as an HTML table (z_t beside what really happened) and a browser.

`trace_html(trace)` renders one trajectory: for every step, the foresight block z_t on the
left and the real action and observation on the right. `trace_browser(traces)` wraps it in
ipywidgets controls (world outcome filter, slider) for exploring a whole file of traces.
"""

from __future__ import annotations

import html

_CELL = "border:1px solid #ddd;padding:6px;vertical-align:top;text-align:left"


def _esc(text) -> str:
    return html.escape(str(text)).replace("\n", "<br>")


def trace_html(trace: dict) -> str:
    task = trace["task"]
    verdict = "succeeded" if trace["success"] else "failed"
    color = "#2ca02c" if trace["success"] else "#d62728"
    rows = []
    for t, step in enumerate(trace["steps"]):
        z, action = step["z"], step["action"]
        did = (f"answer: <b>{_esc(action['answer'])}</b>" if "answer" in action else
               f"{_esc(action['tool'])}({_esc(next(iter(action['arguments'].values()), ''))})")
        obs = _esc(step["observation"]) if step["observation"] is not None else ""
        slip = f"<br><i>teacher mistake: {_esc(step['slip'])}</i>" if step.get("slip") else ""
        rows.append(
            f"<tr><td style='{_CELL}'>{t}</td>"
            f"<td style='{_CELL}'><b>imagined:</b> {_esc(z['imaginary'])}<br><b>keywords:</b> "
            f"{_esc(', '.join(z['keywords']) or '(none)')}<br><b>analysis:</b> {_esc(z['analysis'])}"
            f"<br><b>q = {z['q']:.2f}</b></td>"
            f"<td style='{_CELL}'><b>thought:</b> {_esc(step['think'])}<br><b>did:</b> {did}{slip}"
            f"<br><span style='color:#555;font-size:90%'>{obs}</span></td></tr>")
    return (f"<p><b>{_esc(task['question'])}</b> gold: <code>{_esc(task['answer'])}</code> · "
            f"{task['hops']} hop(s) · final answer <code>{_esc(trace['final_answer'])}</code> "
            f"<span style='color:{color}'><b>{verdict}</b></span></p>"
            f"<table style='border-collapse:collapse;font-size:90%'><tr><th style='{_CELL}'>t</th>"
            f"<th style='{_CELL}'>z_t: the teacher's foresight</th>"
            f"<th style='{_CELL}'>what really happened</th></tr>{''.join(rows)}</table>")


def trace_browser(traces: list[dict]):
    """An ipywidgets browser: pick an outcome filter and a trace index."""
    import ipywidgets as w
    from IPython.display import HTML, display

    outcome = w.ToggleButtons(options=["all", "succeeded", "failed"], description="outcome")
    index = w.IntSlider(min=0, max=max(0, len(traces) - 1), description="trace")
    out = w.Output()

    def chosen():
        keep = {"all": None, "succeeded": True, "failed": False}[outcome.value]
        return [t for t in traces if keep is None or t["success"] == keep]

    def render(*_):
        pool = chosen()
        index.max = max(0, len(pool) - 1)
        out.clear_output(wait=True)
        with out:
            display(HTML(trace_html(pool[min(index.value, index.max)]) if pool else "<i>no traces</i>"))

    outcome.observe(render, names="value")
    index.observe(render, names="value")
    render()
    return w.VBox([outcome, index, out])
