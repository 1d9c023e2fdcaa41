"""The batched-evaluation benchmark runs on the tiny preset and prints both figures and the speed-up."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_generate_benchmark_on_tiny():
    out = subprocess.run([sys.executable, str(ROOT / "scripts/benchmark.py"), "generate", "--preset", "tiny",
                          "--episodes", "4", "--max-new-tokens", "8"], capture_output=True, text=True, check=True).stdout
    assert re.search(r"transformers sdpa\s*: \d+\.\d ms per decoding step", out)
    assert re.search(r"grouped sdpa\s*: \d+\.\d ms per decoding step", out)
    assert re.search(r"generate tiny batch   1: 4 episodes .* episodes/s", out)
    assert re.search(r"generate tiny batch   4: 4 episodes .* episodes/s", out)
    assert re.search(r"batched speed-up: \d+\.\dx", out)
