"""Drill: `kill -9` a tiny run at moments drawn from a seed — during set-up, after a drawn step, and while an async
checkpoint write is in flight — and rerun the same command each time. The losses of every step equal those of an
uninterrupted run bit for bit, every restart resumes from the newest complete checkpoint, and the write that was cut
short is removed, never read."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from .test_run import REPO, _losses

STEPS, EVERY = 24, 3
TINY = ["--config.model.vocab_size=512", "--config.model.hidden_size=32", "--config.model.intermediate_size=64",
        "--config.model.num_layers=2", "--config.model.num_heads=4", "--config.model.num_kv_heads=2",
        "--config.model.head_dim=16", "--config.data.vocab_size=512", "--config.seq_len=32",
        "--config.global_batch=8", "--config.log_every=1", "--config.eval.every=0", "--config.samples.num=0",
        f"--config.steps={STEPS}", f"--config.checkpoint.every={EVERY}", "--config.checkpoint.async_save=True",
        "--config.checkpoint.keep=2"]  # fmt: skip
CACHE = os.path.join(REPO, ".cache", "jax_compilation")


def _start(workdir, log):
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "qwen3jax.run", "--config=experiments/pretrain_s1.py", f"--workdir={workdir}", *TINY],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _complete_steps(workdir):
    ckpts = workdir / "checkpoints"
    return sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) if ckpts.is_dir() else []


def _unfinished(workdir):
    ckpts = workdir / "checkpoints"
    return sorted(p for p in ckpts.iterdir() if ".orbax-checkpoint-tmp" in p.name) if ckpts.is_dir() else []


def _logged_steps(workdir):
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().split("\n")[:-1] if line.strip()]


def _wait_until(condition, process, what, timeout=600):
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended (status {process.returncode}) before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


@pytest.mark.slow
def test_kill_9_at_drawn_moments_then_rerun_equals_an_uninterrupted_run(tmp_path):
    rng = random.Random(13)
    straight = tmp_path / "straight"
    with open(tmp_path / "straight.log", "w") as log:
        assert _start(straight, log).wait(timeout=900) == 0, (tmp_path / "straight.log").read_text()[-3000:]

    run = tmp_path / "run"
    # The write kill waits for a complete checkpoint to resume from; the drawn step lies beyond where that resumes.
    kills = [("set-up", rng.uniform(0.5, 4.0)), ("checkpoint write", None), ("after step", rng.randint(15, 19))]
    unfinished_at_kill, complete_at_kill, logs = [], [], []
    for moment, value in [*kills, ("none", None)]:
        logs.append(tmp_path / f"attempt{len(logs)}.log")
        with open(logs[-1], "w") as log:
            process = _start(run, log)
            if moment == "none":  # the last rerun goes to the end
                assert process.wait(timeout=900) == 0, logs[-1].read_text()[-3000:]
                break
            if moment == "set-up":
                time.sleep(value)
            elif moment == "after step":
                _wait_until(lambda: value in _logged_steps(run), process, f"step {value}")
            else:  # while orbax writes a later step into its temporary directory than the complete one(s)
                _wait_until(lambda: _complete_steps(run) and _unfinished(run), process, "an async checkpoint write")
            process.send_signal(signal.SIGKILL)
            process.wait()
        unfinished_at_kill.append(_unfinished(run))
        complete_at_kill.append(_complete_steps(run))
    assert unfinished_at_kill[1], "the kill during a checkpoint write left no unfinished write (the race was lost)"
    assert complete_at_kill[1] and complete_at_kill[2], "both later restarts must resume from a checkpoint"

    for i, log in enumerate(logs[1:]):  # each rerun resumed from the newest complete checkpoint the kill left
        out = log.read_text()
        resumed = re.search(r"resumed from (\S+)", out)
        if complete_at_kill[i]:
            assert resumed and resumed.group(1) == str(run / "checkpoints" / str(complete_at_kill[i][-1])), out[-3000:]
        for path in unfinished_at_kill[i]:
            assert f"removed an unfinished checkpoint write: {path}" in out
    assert not _unfinished(run)
    assert sorted(_losses(run)) == list(range(1, STEPS + 1))
    assert _losses(run) == _losses(straight)  # bit for bit
