import json
import subprocess
import sys

import pytest

from foresight_lite.cli import main


def test_traces_end_to_end(tmp_path, capsys):
    assert main(["traces", "--env", "math", "--n", "20", "--seed", "1", "--out", str(tmp_path), "--quiet"]) == 0
    lines = (tmp_path / "traces.jsonl").read_text().splitlines()
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert len(lines) == 20 and meta["n"] == 20 and 0 <= meta["teacher_success"] <= 1
    assert "wrote 20 traces" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["traces", "--env", "chess", "--out", "x"], "invalid choice: 'chess'"),
    (["traces", "--n", "0", "--out", "x"], "expected a number of at least 1"),
    (["traces", "--noise", "1.5", "--out", "x"], "between 0 and 1"),
    (["traces"], "the following arguments are required: --out"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_bad_arguments_get_one_clear_sentence(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "foresight_lite", "traces", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "Monte Carlo" in out and "--env" in out


def test_every_help_page_renders_cleanly():
    """argparse formats % only in arguments' help; a %% in a description shows up doubled."""
    from foresight_lite.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    pages = [parser.format_help()] + [sub.format_help() for sub in subparsers.choices.values()]
    assert len(pages) > 5
    for page in pages:
        assert "%%" not in page and "%(" not in page


def test_epochs_is_refused_for_the_rl_stage(tmp_path, capsys):
    argv = ["train", "--stage", "rl", "--run", "x", "--runs-dir", str(tmp_path), "--epochs", "2"]
    assert main(argv) == 1
    assert "--epochs applies to stages mt and sft" in capsys.readouterr().err


def test_training_seed_is_refused_outside_the_rl_stage(tmp_path, capsys):
    argv = ["train", "--stage", "sft", "--run", "x", "--runs-dir", str(tmp_path), "--training-seed", "1"]
    assert main(argv) == 1
    assert "--training-seed applies to stage rl only" in capsys.readouterr().err
