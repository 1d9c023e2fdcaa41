"""The one-command reproduction: every method x seeds, trained once per shared stage, scored, reported.

What: `reproduce(out="results")` trains each method of `foresight_lite.methods` for every seed
(stages shared between methods are trained once: see the folder tree in methods.py), plays the
held-out eval and ood tasks of both worlds (200 per world and split by default), and writes

    results/
      table.md            methods x metrics, one table per world and split: mean ± Student-t
                          95% half-width over seeds (the min-max range is in summary.json)
      summary.json        settings, machine, wall times, per-seed rows and the aggregated rows
      episodes.jsonl.gz   every episode (gzip-compressed JSON lines), with method and seed added
      report.html         self-contained (plotly inlined): success and calibration bars with
                          error bars, reliability diagrams per method, the format-capability gap

Why: the paper's claim is a comparison; one command that retrains nothing it already has makes
it checkable, and the report shows it the way a learner reads it.
How: `python -m foresight_lite reproduce` (smollm2-135m, seeds 0,1,2), or `--smoke` (the
`tiny` preset, a few tasks: checks the mechanics in minutes; its numbers mean nothing).
Interrupted? Run the same command again: finished stages and finished evaluations are skipped.
"""

from __future__ import annotations

import gzip
import html
import json
import os
import platform
import time
from pathlib import Path

from tqdm.auto import tqdm

from .envs import WORLDS
from .evaluate import episodes_path, record_path
from .methods import (EVAL_N, METHODS, SMOKE_EVAL_N, get_method, method_dir, run_method, run_root,
                      unique_stages)
from .metrics import confidence_interval
from .stages.common import stage_status
from .teacher import TEACHER_VERSION
from .traces import read_jsonl

SPLITS = ("eval", "ood")
METRICS = ("success", "mean_at_k", "pass_at_k", "format_adherence", "episodes_well_formed", "grounding",
           "keywords_per_step", "confidence_reported", "brier_all", "ece_all", "auroc_all", "brier_first",
           "ece_first", "auroc_first", "tokens_per_episode", "turns_per_episode")
# (metric, column title, as a percentage?) of the markdown table
TABLE_COLUMNS = (("success", "success %", True), ("pass_at_k", "pass@k %", True),
                 ("format_adherence", "format %", True), ("grounding", "grounding %", True),
                 ("brier_all", "Brier", False), ("ece_all", "ECE", False), ("auroc_all", "AUROC", False),
                 ("tokens_per_episode", "tokens/episode", False))


def reproduce(out: str | Path = "results", *, runs_dir: str | Path = "runs", preset: str | None = None,
              seeds=(0, 1, 2), methods=None, worlds=WORLDS, splits=SPLITS, n: int | None = None,
              samples: int = 1, temperature: float | None = None, smoke: bool = False,
              n_traces: int | None = None, batch_size: int = 32, max_new_tokens: int | None = None,
              progress: bool = True, command: str | None = None) -> dict:
    """Train and evaluate `methods` (all by default) for every seed, then write `out`; returns summary.json."""
    preset = preset or ("tiny" if smoke else "smollm2-135m")
    methods = list(methods or METHODS)
    for name in methods:
        get_method(name)
    if not seeds:
        raise ValueError("Give at least one seed, e.g. --seeds 0,1,2.")
    n = n or (SMOKE_EVAL_N if smoke else EVAL_N)
    started, rows = time.perf_counter(), []
    bar = tqdm(total=len(seeds) * len(methods), desc="reproduce", unit="method", disable=not progress)
    for seed in seeds:
        for name in methods:
            bar.set_postfix_str(f"{name}, seed {seed}")
            rows += run_method(name, runs_dir=runs_dir, preset=preset, seed=seed, worlds=worlds, smoke=smoke,
                               n_traces=n_traces, splits=splits, n=n, samples=samples, temperature=temperature,
                               batch_size=batch_size, max_new_tokens=max_new_tokens, progress=False)
            bar.update()
    bar.close()
    roots = [run_root(runs_dir, preset=preset, seed=s, worlds=worlds, smoke=smoke) for s in seeds]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_episodes = _write_episodes(out / "episodes.jsonl.gz", methods=methods, seeds=seeds, roots=roots,
                                 worlds=worlds, splits=splits)
    meta = {
        "command": command or f"reproduce(out={str(out)!r}, preset={preset!r}, seeds={list(seeds)}, smoke={smoke})",
        "preset": preset, "mechanics_only": preset == "tiny", "smoke": smoke, "seeds": list(seeds),
        "methods": methods, "worlds": list(worlds), "splits": list(splits), "tasks_per_world_and_split": n,
        "samples_per_task": samples, "episodes": n_episodes, "machine": machine(),
        "teacher_version": TEACHER_VERSION,  # stages were trained on this teacher's trajectories
        "wall_seconds": time.perf_counter() - started,  # this call only: a resumed run is shorter
        **_compute_seconds(methods=methods, roots=roots, worlds=worlds, splits=splits),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    summary = {"meta": meta, "rows": rows, "aggregate": aggregate(rows)}
    _write_text(out / "summary.json", json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n")
    _write_text(out / "table.md", markdown_table(summary))
    _write_text(out / "report.html", report_html(summary, episodes=read_episodes(out / "episodes.jsonl.gz")))
    return summary


def aggregate(rows: list[dict]) -> list[dict]:
    """One row per method, world and split: each metric's mean over seeds, `METRIC_ci` (Student-t
    95% half-width, None for one seed), `METRIC_min` and `METRIC_max`; `seeds` counts the seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["world"], r["split"]), []).append(r)
    out = []
    for (method, world, split), group in groups.items():
        row = {"method": method, "label": group[0]["label"], "world": world, "split": split,
               "seeds": len(group), "k": group[0].get("k"), "episodes": sum(g.get("episodes", 0) for g in group)}
        for metric in METRICS:
            ci = confidence_interval([g.get(metric) for g in group])
            row[metric] = ci and ci["mean"]
            row[f"{metric}_ci"] = ci and ci["half_width"]
            row[f"{metric}_min"] = ci and ci["min"]
            row[f"{metric}_max"] = ci and ci["max"]
        out.append(row)
    return out


def _cell(row: dict, metric: str, percent: bool) -> str:
    value, half = row.get(metric), row.get(f"{metric}_ci")
    if value is None:
        return "-"
    scale, digits = (100, 1) if percent else (1, 0 if metric == "tokens_per_episode" else 3)
    text = f"{value * scale:.{digits}f}"
    return text + (f" ± {half * scale:.{digits}f}" if half is not None else "")


def markdown_table(summary: dict) -> str:
    """The comparison as markdown: one table per world and split, one row per method."""
    meta, rows = summary["meta"], summary["aggregate"]
    k = max((r.get("k") or 1 for r in rows), default=1)
    columns = [c for c in TABLE_COLUMNS if c[0] != "pass_at_k" or k > 1]
    seeds = ", ".join(map(str, meta["seeds"]))
    lines = [f"# foresight-lite reproduction ({meta['preset']})", ""]
    if meta.get("mechanics_only"):
        lines += ["**The `tiny` preset checks the mechanics only: these numbers mean nothing about the paper.**", ""]
    lines += [f"Command: `{meta['command']}`  ",
              f"Machine: {meta['machine']['summary']}"
              + (f"; stages trained in {', '.join(meta['stage_dtypes'])}" if meta.get("stage_dtypes") else "")
              + "  ",
              f"Wall time of this call: {meta['wall_seconds'] / 60:.1f} min; compute in the results "
              f"(training + evaluation, all stages and cells): {meta['train_seconds'] / 60:.1f} + "
              f"{meta['eval_seconds'] / 60:.1f} min"
              + (f" ({meta['stages_untimed']} stage{'s' * (meta['stages_untimed'] > 1)} not counted: resumed "
                 "after an interruption, its time was not recorded)" if meta.get("stages_untimed") else "") + "  ",
              f"Seeds {seeds}; {meta['tasks_per_world_and_split']} tasks per world and split; "
              + (f"teacher version {meta['teacher_version']}; " if "teacher_version" in meta else "")
              + (f"{k} samples per task (success = mean@{k}, pass@{k})" if k > 1 else "greedy decoding"), "",
              "Cells: mean over seeds ± Student-t 95% half-width (no ± with one seed). Brier, ECE and AUROC "
              "compare every stated confidence with its episode's outcome (ECE: 10 equal-width bins); "
              "grounding is the share of predicted keywords found in a later observation or the gold answer. "
              "`-`: undefined (no confidence or keywords stated, or a single outcome class).", ""]
    for world in dict.fromkeys(r["world"] for r in rows):
        for split in dict.fromkeys(r["split"] for r in rows):
            cells = [r for r in rows if r["world"] == world and r["split"] == split]
            if not cells:
                continue
            titles = [t.replace("success", f"mean@{k}").replace("pass@k", f"pass@{k}") if k > 1 else t
                      for _, t, _ in columns]
            lines += [f"## {world} · {split}", "", "| method | " + " | ".join(titles) + " |",
                      "|---|" + "---:|" * len(columns)]
            for r in cells:
                metric_cells = [_cell(r, m, pct) for m, _, pct in columns]
                lines.append(f"| {r['label']} (`{r['method']}`) | " + " | ".join(metric_cells) + " |")
            lines.append("")
    return "\n".join(lines)


def confidence_pairs_by_method(episodes: list[dict], *, split: str = "eval") -> dict:
    """{method label: (confidences in [0, 1], outcomes)} over every step of `split`, all seeds and worlds."""
    pairs: dict[str, tuple[list, list]] = {}
    for e in episodes:
        if e["split"] != split:
            continue
        conf, ok = pairs.setdefault(e.get("label", e["method"]), ([], []))
        for step in e["steps"]:
            if step.get("confidence") is not None:
                conf.append(step["confidence"] / 100)
                ok.append(bool(e["success"]))
    return pairs


def figures(summary: dict, episodes: list[dict] | None = None) -> dict:
    """The report's plotly figures by name (reliability only when episodes are given)."""
    from . import plots

    rows = summary["aggregate"]
    splits = list(dict.fromkeys(r["split"] for r in rows))
    figs = {}
    for split in splits:
        figs[f"success-{split}"] = plots.method_bars(rows, metric="success", split=split)
    if any((r.get("k") or 1) > 1 for r in rows):
        for split in splits:
            figs[f"pass_at_k-{split}"] = plots.method_bars(rows, metric="pass_at_k", split=split)
    for split in splits:
        figs[f"calibration-{split}"] = plots.calibration_bars(rows, split=split)
        figs[f"gap-{split}"] = plots.format_capability_gap(rows, split=split)
    if episodes is not None:
        for split in splits:
            figs[f"reliability-{split}"] = plots.reliability_grid(
                confidence_pairs_by_method(episodes, split=split),
                title=f"Reliability per method, {split} split (every step, all seeds and worlds)")
    figs["tokens-eval"] = plots.method_bars(rows, metric="tokens_per_episode", split=splits[0])
    return figs


def report_html(summary: dict, *, episodes: list[dict] | None = None) -> str:
    """A self-contained HTML page: the tables and every figure, with plotly.js inlined once."""
    meta = summary["meta"]
    parts, first = [], True
    for name, fig in figures(summary, episodes).items():
        parts.append(f"<h3>{html.escape(name)}</h3>" + fig.to_html(full_html=False, include_plotlyjs=first))
        first = False
    table = _markdown_to_html(markdown_table(summary))
    warning = ("<p style='color:#b00'><b>tiny preset: mechanics only, the numbers mean nothing.</b></p>"
               if meta.get("mechanics_only") else "")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>foresight-lite reproduction</title>"
            f"<style>body{{font-family:sans-serif;max-width:1400px;margin:auto}}table{{border-collapse:collapse}}"
            f"td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}"
            f"</style></head><body>{warning}{table}{''.join(parts)}</body></html>\n")


def _markdown_to_html(text: str) -> str:
    """The small markdown subset markdown_table writes: headings, paragraphs and tables."""
    out, in_table = [], False
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-:"):
                continue
            tag = "th" if not in_table else "td"
            out.append(("<table>" if not in_table else "") + "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells)
                       + "</tr>")
            in_table = True
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            escaped = html.escape(line.rstrip(" "))
            escaped = escaped.replace("**", "")
            out.append(f"<p>{_code(escaped)}</p>")
    if in_table:
        out.append("</table>")
    return "\n".join(out)


def _code(text: str) -> str:
    pieces = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def machine() -> dict:
    import torch
    import transformers
    import trl

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": trl.__version__}
    info["summary"] = (f"{cpu}, {info['cores']} cores" + (f", {gpu}" if gpu else ", no GPU")
                       + f"; torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")
    return info


def _compute_seconds(*, methods, roots, worlds, splits) -> dict:
    """Training and evaluation seconds recorded by every stage and cell the results use (each once), and
    the dtypes those stages trained in."""
    train = evaluate = 0.0
    unknown = 0  # stages resumed before their log counted seconds: only the last attempt was timed
    dtypes = set()  # fp32 where the CPU has no fast bf16: 2-3x slower, and it rounds differently
    for root in roots:
        for folder in unique_stages(methods, root):
            status = stage_status(folder)
            if (folder / "stage.json").exists():
                dtypes.add(json.loads((folder / "stage.json").read_text()).get("dtype") or "unknown")
            if status["state"] == "done":
                train += status["seconds"] or 0.0
                unknown += status["seconds"] is None
        for name in methods:
            stage = get_method(name).final_stage
            for world in worlds:
                for split in splits:
                    cell = record_path(method_dir(name, root), stage, world, split)
                    if cell.exists():
                        evaluate += json.loads(cell.read_text()).get("seconds", 0.0)
    return {"train_seconds": train, "eval_seconds": evaluate, "stages_untimed": unknown,
            "stage_dtypes": sorted(dtypes)}


def _write_episodes(path: Path, *, methods, seeds, roots, worlds, splits) -> int:
    tmp, count = path.with_name(f".{path.name}.tmp"), 0
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        for seed, root in zip(seeds, roots):
            for name in methods:
                stage = get_method(name).final_stage
                for world in worlds:
                    for split in splits:
                        for episode in read_jsonl(episodes_path(method_dir(name, root), stage, world, split)):
                            episode.update(method=name, label=METHODS[name].label, seed=seed)
                            f.write(json.dumps(episode, sort_keys=True) + "\n")
                            count += 1
    os.replace(tmp, path)
    return count


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_episodes(path: str | Path) -> list[dict]:
    """The episodes of a results folder (episodes.jsonl.gz, or a folder holding it)."""
    path = Path(path)
    path = path / "episodes.jsonl.gz" if path.is_dir() else path
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_results(path: str | Path) -> dict:
    """summary.json of a results folder."""
    path = Path(path)
    file = path / "summary.json" if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"No results at {path}; run python -m foresight_lite reproduce --out {path}.")
    return json.loads(file.read_text())


def find_reference_results(name: str = "reference_results") -> Path | None:
    """Committed results, data/<name>/, from the repo root or notebooks/: `reference_results` (the
    SFT-stage rows, both worlds) or `reference_results_search` (the full method and its neighbours,
    search only, 200 tasks)."""
    for folder in (Path("data") / name, Path("../data") / name):
        if (folder / "summary.json").exists():
            return folder
    return None
