"""foresight-lite: a runnable miniature of *Internalizing the Future* (arXiv 2606.27483).

An LLM agent learns to imagine before it acts: before each action it writes a world-model
span (an imagined rollout, keywords it expects to see, what is still missing, and a
confidence that it will succeed) and then a policy span (thinking and the action).

Data flows one way: envs -> teacher -> traces -> corpora -> stages -> evaluate -> plots.
"""

import importlib.util
import os

__version__ = "0.1.0"


def _import_unsloth_first() -> None:
    """On a CUDA machine with Unsloth installed, import it before transformers, TRL and peft.

    Unsloth patches those libraries as it is imported and misses any already loaded, so it must
    come first. Elsewhere (no GPU, or no Unsloth) nothing happens and torch is not even imported.
    FORESIGHT_NO_UNSLOTH=1 keeps plain transformers + peft on a GPU.
    """
    if os.environ.get("FORESIGHT_NO_UNSLOTH") == "1" or importlib.util.find_spec("unsloth") is None:
        return
    import torch

    if torch.cuda.is_available():
        import unsloth  # noqa: F401


_import_unsloth_first()
