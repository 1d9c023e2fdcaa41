"""The worlds the agent acts in: `make_env(name, seed=..., split=...)` and the calculator tool.

Both worlds share one episode interface (`base.Env`): `reset(task) -> question`,
`step(Action) -> Observation`, then `done` and `success`; `env.tools` holds the tool schemas a
chat template renders. Splits: train, rl, eval (in distribution), ood.
"""

from .base import MAX_TURNS, SPLITS, Action, Env, Observation, Task, normalize_answer
from .calculator import calculate

WORLDS = ("search", "math")


def make_env(name: str, *, seed: int = 0, split: str = "train") -> Env:
    """A fresh episode runner over the tasks of one world and split."""
    if name not in WORLDS:
        raise ValueError(f"Unknown world {name!r}; choose one of: {', '.join(WORLDS)}.")
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose one of: {', '.join(SPLITS)}.")
    if name == "search":
        from .search import make_search_env

        return make_search_env(seed=seed, split=split)
    from .math import make_math_env

    return make_math_env(seed=seed, split=split)


__all__ = ["make_env", "calculate", "Action", "Env", "Observation", "Task", "normalize_answer",
           "WORLDS", "SPLITS", "MAX_TURNS"]
