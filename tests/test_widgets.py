"""widgets: a trace renders as escaped HTML beside what happened; the browser filters by outcome."""

import copy

import pytest

from foresight_lite.traces import generate_traces
from foresight_lite.widgets import trace_browser, trace_html


@pytest.fixture(scope="module")
def traces():
    return generate_traces("search", n=6, seed=0, progress=False)


def test_trace_html_shows_every_step_and_escapes_text(traces):
    trace = copy.deepcopy(traces[0])
    trace["task"]["question"] = "Who is <script>alert(1)</script>?"
    page = trace_html(trace)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("<b>imagined:</b>") == len(trace["steps"])
    assert ("succeeded" if trace["success"] else "failed") in page
    assert f"q = {trace['steps'][0]['z']['q']:.2f}" in page


def test_trace_browser_filters_by_outcome(traces):
    failed = [t for t in traces if not t["success"]]
    assert 0 < len(failed) < len(traces)  # both outcomes, so the filter has something to do
    box = trace_browser(traces)
    outcome, index, _ = box.children
    assert index.max == len(traces) - 1
    outcome.value = "failed"
    assert index.max == max(0, len(failed) - 1)
    outcome.value = "succeeded"
    assert index.max == len(traces) - len(failed) - 1
