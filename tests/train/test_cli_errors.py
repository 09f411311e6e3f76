"""What a user gets wrong on the command line ends in one line on stderr, never a traceback: a mistyped config key
(also through the sweep), an experiment that does not exist, a run directory that cannot be one, Ctrl-C during
set-up (exit 130)."""

import os
import signal
import subprocess
import sys

import pytest

from .test_run import REPO


def _cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def _one_error_line(result) -> str:
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize(
    ("module", "override", "expected"),
    [
        ("qwen3jax.run", "--config.optim.peak_lrr=1",
         "error: unknown config key 'peak_lrr' in --config.optim.peak_lrr=1: did you mean \"peak_lr\"?"),
        ("qwen3jax.sweep", "--config.mesh.fdsp=2",
         "error: unknown config key 'fdsp' in --config.mesh.fdsp=2: did you mean \"fsdp\"?"),
    ],
)  # fmt: skip
def test_a_mistyped_config_key_is_one_line_with_the_nearest_key(tmp_path, module, override, expected):
    result = _cli(module, "--config=experiments/pretrain_s1.py", override, f"--workdir={tmp_path}")
    assert result.returncode == 1 and _one_error_line(result) == expected
    assert not any(tmp_path.iterdir())


def test_an_experiment_that_does_not_exist_lists_those_that_do():
    result = _cli("qwen3jax.run", "--config=experiments/nope.py", "--config.steps=3")
    assert result.returncode == 1
    line = _one_error_line(result)
    listed = line.removeprefix("error: no experiment file experiments/nope.py; the experiments in experiments are ")
    names, _, advice = listed.partition(" (")
    files = os.listdir(os.path.join(REPO, "experiments"))
    experiments = sorted(f.removesuffix(".py") for f in files if f.endswith(".py") and not f.startswith("_"))
    assert "pretrain_s1" in experiments and names.split(", ") == experiments
    assert advice == "make run EXP=NAME, or --config=experiments/NAME.py)"


def test_a_run_directory_below_a_file_is_a_set_up_error_in_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    result = _cli("qwen3jax.run", "--config=experiments/pretrain_s1.py", f"--workdir={tmp_path / 'file' / 'run'}")
    assert result.returncode == 1
    assert _one_error_line(result) == (
        f"error: the run directory {tmp_path / 'file' / 'run'} lies below the file {tmp_path / 'file'}; pass another "
        f"--workdir (WORKDIR=...)"
    )


def test_ctrl_c_during_set_up_exits_130_with_one_line(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "qwen3jax.run", "--config=experiments/pretrain_s1.py", f"--workdir={tmp_path}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout.readline().startswith("experiment pretrain_s1")  # main() runs: the run is being set up
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-3000:]
    assert [line for line in stderr.splitlines() if line.strip()] == [
        "error: interrupted by Ctrl-C (SIGINT); rerun the same command to resume from the newest checkpoint, if any"
    ]


def test_a_ctrl_c_during_set_up_that_a_library_swallows_still_ends_the_run(monkeypatch):
    """The KeyboardInterrupt lands in whatever code runs (in CI once inside library code that swallowed it, and the
    run trained on): the set-up handler remembers it, and the loop's handler refuses to take over."""
    from qwen3jax import interrupt
    from qwen3jax.train import loop

    monkeypatch.setattr(interrupt, "_received", False)
    previous = signal.getsignal(signal.SIGINT)
    try:
        interrupt.catch_during_set_up()
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass  # a library's `except BaseException: pass`
        with pytest.raises(KeyboardInterrupt):
            loop._StopFlag()
    finally:
        signal.signal(signal.SIGINT, previous)
