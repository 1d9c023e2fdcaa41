"""foresight-lite: a runnable miniature of *Internalizing the Future* (arXiv 2606.27483).

An LLM agent learns to imagine before it acts: before each action it writes a world-model
span (an imagined rollout, keywords it expects to see, what is still missing, and a
confidence that it will succeed) and then a policy span (thinking and the action).

Data flows one way: envs -> teacher -> traces -> corpora -> stages -> evaluate -> plots.
"""

__version__ = "0.1.0"
