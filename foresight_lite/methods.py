"""The paper's methods as stage recipes, and one folder tree in which they share their stages.

What: `METHODS` lists every row of the comparison as a recipe of up to three stages:

| method         | row of the paper's table        | stage 1 (mt)  | stage 2 (sft) | stage 3 (rl) |
|----------------|---------------------------------|---------------|---------------|--------------|
| `sft`          | SFT                             | standard_mt   | sft           | -            |
| `fe_sft`       | FE-SFT                          | standard_mt   | fe_sft        | -            |
| `state_sft`    | State-SFT                       | standard_mt   | state_sft     | -            |
| `wm_fe_sft`    | WM-AMT + FE-SFT                 | wm_amt        | fe_sft        | -            |
| `sft_rl`       | SFT&RL                          | standard_mt   | sft           | rl           |
| `fe_sft_rl`    | FE-SFT&RL                       | standard_mt   | fe_sft        | rl           |
| `state_sft_rl` | State-SFT&RL                    | standard_mt   | state_sft     | rl           |
| `wm_fe_sft_rl` | WM-AMT + FE-SFT + plain RL      | wm_amt        | fe_sft        | rl           |
| `full`         | WM-AMT + FE-SFT + FC-RL (ours)  | wm_amt        | fe_sft        | fc_rl        |

`train_method(name, ...)` trains whatever the method still lacks; `run_method` also evaluates it.

Why one tree: methods that begin alike must not train their common stages twice (nine rows
need two stage-1 models, four stage-2 models and five stage-3 models per seed, not 23). A stage
is a folder named by its own recipe step inside the folder of the step before it, so two
recipes with the same prefix resolve to the same folders:

    runs/<preset>-s<seed>[-<worlds>][-smoke]/      one tree per preset, seed (and world set)
      mt-standard_mt/
        mt/                    stage 1 (model/, stage.json, metrics.jsonl, complete.json)
        sft-fe_sft/
          sft/                 stage 2, started from ../mt/model
          eval/sft/            the fe_sft row's evaluation (evaluate_run's layout)
          rl-rl/
            rl/                stage 3, started from ../sft/model
            eval/rl/           the fe_sft_rl row's evaluation
      mt-wm_amt/
        mt/
        sft-fe_sft/
          sft/  eval/sft/      wm_fe_sft
          rl-rl/               wm_fe_sft_rl
          rl-fc_rl/            full

Each recipe step folder is a `run_dir` for the stage functions (`train_midtraining(node)`
writes `node/mt`), and every later stage gets `init=` its parent's model, so the stage code
needs no knowledge of the tree. A finished stage is reused only if its stage.json agrees with
the request (corpus, preset, seed, worlds, trajectories, smoke); otherwise one sentence says
which setting differs. Seed and worlds are in the tree's name because every stage depends on
them; `--smoke` trees are kept apart so a 3-step model is never mistaken for a real one.

How: `python -m foresight_lite run --method full --preset tiny --smoke` (seconds per stage),
`python -m foresight_lite run --method full` (the CPU default, smollm2-135m).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .envs import WORLDS
from .stages.common import is_complete
from .stages.midtrain import recipe
from .stages.sft import LAYOUT_OF
from .teacher import TEACHER_VERSION

DEFAULT_N_TRACES = 400  # teacher trajectories per world for stages 1-2 (as `train`)
SMOKE_N_TRACES = 8
EVAL_N = 200  # held-out tasks per world and split (the floor)
SMOKE_EVAL_N = 3
SMOKE_MAX_NEW_TOKENS = 48  # a smoke model writes noise up to the limit; keep its turns short


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # as the paper's tables name the row
    mt: str  # stage-1 corpus: standard_mt or wm_amt
    sft: str  # stage-2 corpus: sft, fe_sft or state_sft
    rl: str | None  # stage-3 method of train_rl ("rl" or "fc_rl"), None for an SFT-stage-only row
    description: str

    @property
    def layout(self) -> str:
        """The step format the method's model writes (plain, state or full)."""
        return LAYOUT_OF[self.sft]

    @property
    def recipe(self) -> tuple[tuple[str, str], ...]:
        """((stage, variant), ...) in training order."""
        steps = (("mt", self.mt), ("sft", self.sft), ("rl", self.rl))
        return tuple((stage, variant) for stage, variant in steps if variant)

    @property
    def final_stage(self) -> str:
        return self.recipe[-1][0]


METHODS = {m.name: m for m in [
    Method("sft", "SFT", "standard_mt", "sft", None,
           "standard mid-training, then plain SFT (think and act); no foresight"),
    Method("fe_sft", "FE-SFT", "standard_mt", "fe_sft", None,
           "standard mid-training, then FE-SFT: the foresight format added in post-training only"),
    Method("state_sft", "State-SFT", "standard_mt", "state_sft", None,
           "standard mid-training, then SFT on rollout and keywords, no analysis or confidence"),
    Method("wm_fe_sft", "WM-AMT + FE-SFT", "wm_amt", "fe_sft", None,
           "world-model mid-training, then FE-SFT: the capability first, then the format"),
    Method("sft_rl", "SFT&RL", "standard_mt", "sft", "rl",
           "the SFT row, then RL on task success"),
    Method("fe_sft_rl", "FE-SFT&RL", "standard_mt", "fe_sft", "rl",
           "the FE-SFT row, then RL on task success"),
    Method("state_sft_rl", "State-SFT&RL", "standard_mt", "state_sft", "rl",
           "the State-SFT row, then RL on task success"),
    Method("wm_fe_sft_rl", "WM-AMT + FE-SFT + RL", "wm_amt", "fe_sft", "rl",
           "the WM-AMT + FE-SFT row, then plain RL (no foresight rewards)"),
    Method("full", "WM-AMT + FE-SFT + FC-RL", "wm_amt", "fe_sft", "fc_rl",
           "the paper's method: WM-AMT + FE-SFT, then foresight-conditioned RL (grounding and "
           "calibration rewards for the world-model span)"),
]}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; choose one of: {', '.join(METHODS)}.")
    return METHODS[name]


def run_root(runs_dir: str | Path = "runs", *, preset: str, seed: int, worlds=WORLDS, smoke: bool = False) -> Path:
    """The tree of one preset, seed and world set: runs/<preset>-s<seed>[-<worlds>][-smoke]."""
    name = f"{preset}-s{seed}"
    if tuple(worlds) != WORLDS:
        name += "-" + "+".join(worlds)
    return Path(runs_dir) / (name + ("-smoke" if smoke else ""))


def stage_nodes(method: str, root: str | Path) -> list[tuple[str, str, Path]]:
    """[(stage, variant, node)] in training order; the stage itself lives in node/stage."""
    node, out = Path(root), []
    for stage, variant in get_method(method).recipe:
        node = node / f"{stage}-{variant}"
        out.append((stage, variant, node))
    return out


def method_dir(method: str, root: str | Path) -> Path:
    """The folder whose `<final stage>/` holds the method's model and `eval/` its evaluation."""
    return stage_nodes(method, root)[-1][2]


def unique_stages(methods, root: str | Path) -> list[Path]:
    """The distinct stage folders `methods` need, in an order that trains parents first."""
    seen: dict[Path, None] = {}
    for name in methods:
        for stage, _, node in stage_nodes(name, root):
            seen.setdefault(node / stage)
    return sorted(seen, key=lambda p: len(p.parts))


def _check_reuse(folder: Path, expected: dict) -> None:
    """A finished stage may serve this request only if it was trained with the same settings."""
    settings = json.loads((folder / "stage.json").read_text())
    for key, want in expected.items():
        if settings.get(key) != want:  # a key the stage did not record cannot vouch for it either
            raise ValueError(f"{folder} was trained with {key}={settings.get(key)!r}, not {want!r}; pass another "
                             f"--runs-dir, or delete that folder to retrain it.")


def train_method(name: str, *, runs_dir: str | Path = "runs", preset: str = "smollm2-135m", seed: int = 0,
                 worlds=WORLDS, smoke: bool = False, n_traces: int | None = None) -> Path:
    """Train every stage `name` still lacks, reusing finished ones; returns the method's folder."""
    method = get_method(name)
    worlds = tuple(worlds)
    n_traces = n_traces or (SMOKE_N_TRACES if smoke else DEFAULT_N_TRACES)
    root = run_root(runs_dir, preset=preset, seed=seed, worlds=worlds, smoke=smoke)
    common = dict(preset=preset, seed=seed, worlds=worlds, smoke=smoke)
    parent = None
    for stage, variant, node in stage_nodes(name, root):
        folder = node / stage
        key = "method" if stage == "rl" else "corpus"
        expected = {key: variant, "preset": preset, "seed": seed, "worlds": list(worlds), "smoke": smoke}
        if stage != "rl":
            epochs = recipe(Path("."), preset=preset, smoke=smoke, seed=seed, stage=stage)["num_train_epochs"]
            expected.update(n_traces=n_traces, teacher_version=TEACHER_VERSION, epochs=epochs)
        if is_complete(folder):
            _check_reuse(folder, expected)
        elif stage == "mt":
            from .stages import train_midtraining

            train_midtraining(node, corpus=variant, n_traces=n_traces, **common)
        elif stage == "sft":
            from .stages import train_sft

            train_sft(node, corpus=variant, init=str(parent / "model"), n_traces=n_traces, **common)
        else:
            from .stages.rl import train_rl

            train_rl(node, method=variant, init=str(parent / "model"), **common)
        parent = folder
    return method_dir(name, root)


def run_method(name: str, *, runs_dir: str | Path = "runs", preset: str = "smollm2-135m", seed: int = 0,
               worlds=WORLDS, smoke: bool = False, n_traces: int | None = None, splits=("eval", "ood"),
               n: int | None = None, samples: int = 1, temperature: float | None = None, batch_size: int = 32,
               max_new_tokens: int | None = None, progress: bool = True) -> list[dict]:
    """Train `name` end to end (reusing finished stages), then evaluate it; one row per world and split.

    `n` tasks per world and split (default EVAL_N, SMOKE_EVAL_N when smoke). Evaluations already
    done with the same model and settings are read back (see evaluate_run)."""
    from .evaluate import MAX_NEW_TOKENS, evaluate_run

    method = get_method(name)
    n = n or (SMOKE_EVAL_N if smoke else EVAL_N)
    max_new_tokens = max_new_tokens or (SMOKE_MAX_NEW_TOKENS if smoke else MAX_NEW_TOKENS)
    node = train_method(name, runs_dir=runs_dir, preset=preset, seed=seed, worlds=worlds, smoke=smoke,
                        n_traces=n_traces)
    rows = evaluate_run(node, stage=method.final_stage, layout=method.layout, worlds=tuple(worlds),
                        splits=tuple(splits), n=n, seed=seed, samples=samples, temperature=temperature,
                        batch_size=batch_size, max_new_tokens=max_new_tokens,
                        progress=progress)
    return [{"method": name, "label": method.label, "seed": seed, **row} for row in rows]
