"""The benchmark script on the tiny preset: batched evaluation (figures and speed-up) and the RL section."""

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
    assert re.search(r"KV cache, 30 layers, 8 x 700 tokens, growing\s*: \d+\.\d ms per decoding step", out)
    assert re.search(r"generate tiny decoding step,   1 x 300 tokens: \d+\.\d ms \(\d+\.\d\d ms per row\)", out)
    assert re.search(r"generate tiny decoding step,   4 x 300 tokens: ", out)
    assert re.search(r"one row's step in a batch of 4: \d+\.\dx cheaper than alone", out)
    assert re.search(r"generate tiny batch   1: 4 episodes .* episodes/s", out)
    assert re.search(r"generate tiny batch   4: 4 episodes .* episodes/s", out)
    assert re.search(r"batched speed-up: \d+\.\dx", out)


@pytest.mark.slow
def test_rl_benchmark_on_tiny_smoke():
    out = subprocess.run([sys.executable, str(ROOT / "scripts/benchmark.py"), "rl", "--preset", "tiny", "--smoke"],
                         capture_output=True, text=True, check=True).stdout
    assert re.search(r"rl      tiny fc_rl: \d+ s in all, 2 steps, 8 episodes, \d+\.\d+ episodes/s, \d+% of step time "
                     r"generating \(\d+\.\d completion tokens/s", out), out
    assert re.search(r"success per step \[[\d., ]+\], calibration reward per step \[[-\d., ]+\]", out), out


@pytest.mark.slow
def test_method_benchmark_on_tiny_smoke():
    out = subprocess.run([sys.executable, str(ROOT / "scripts/benchmark.py"), "method", "--preset", "tiny", "--smoke"],
                         capture_output=True, text=True, check=True).stdout
    found = re.search(r"reproduce --methods full --seeds 0 --worlds search --preset tiny --smoke: training "
                      r"(\d+\.\d) min, evaluation (\d+\.\d) min; (\d+\.\d) min wall time for this call; "
                      r"stages trained in float32", out)
    assert found, out
    train, evaluate, wall = map(float, found.groups())
    assert train + evaluate <= wall + 0.1  # the stages' own clocks run inside the call's
    assert "under 35 minutes" in out
