"""Multi-process runs on one machine: the tiny S1 as 2 processes x 4 CPU devices (jax.distributed, collectives over
gloo) trains on the same batches and gets the same losses and evals as 1 process x 8 devices, and its checkpoint
resumes on 1 process to the same losses again. SIGTERM to one process, then to both, mid-run: both checkpoint the
same step and exit 143, and the resumed 2-process run continues bit for bit."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from .test_run import REPO, _losses

STEPS, EVERY = 12, 3
TINY = ["--config=experiments/pretrain_s1.py:tiny", "--config.model.vocab_size=512", "--config.model.hidden_size=32",
        "--config.model.intermediate_size=64", "--config.model.num_layers=2", "--config.model.num_heads=4",
        "--config.model.num_kv_heads=2", "--config.model.head_dim=16", "--config.data.vocab_size=512",
        "--config.seq_len=32", "--config.global_batch=8", "--config.log_every=1", f"--config.eval.every={EVERY}",
        "--config.eval.batches=3", "--config.samples.num=0", f"--config.steps={STEPS}",
        f"--config.checkpoint.every={EVERY}", "--config.checkpoint.keep=2", "--config.batch_source.data_shards=2"]  # fmt: skip


def _start(workdir, devices, name, *args):
    """A `qwen3jax.run` process on `devices` CPU devices, its output in <workdir>.<name>.log."""
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"), JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0",
               JAX_COMPILATION_CACHE_DIR=os.path.join(REPO, ".cache", "jax_compilation"))  # fmt: skip
    with open(f"{workdir}.{name}.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "qwen3jax.run", *TINY, f"--workdir={workdir}", *args],
                                   cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    process.log = f"{workdir}.{name}.log"
    return process


def _two_processes(workdir, name):
    """The run as 2 processes x 4 CPU devices, joined over loopback."""
    coordinator = f"--coordinator_address=127.0.0.1:{_free_port()}"
    return [_start(workdir, 4, f"{name}{i}", coordinator, "--num_processes=2", f"--process_id={i}") for i in range(2)]


def _finish(*processes, status=0):
    try:
        for process in processes:
            assert process.wait(timeout=600) == status, open(process.log).read()[-3000:]
    finally:  # a process that failed leaves the others waiting in a collective
        for process in processes:
            if process.poll() is None:
                process.kill()


def _evals(workdir):
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    return {r["step"]: r["eval/loss"] for r in rows if "eval/loss" in r}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """An uninterrupted 2-process run (read only: tests copy it before changing it)."""
    workdir = tmp_path_factory.mktemp("two_processes") / "run"
    _finish(*_two_processes(workdir, "process"))
    return workdir


@pytest.mark.slow
def test_two_processes_train_like_one_and_their_checkpoint_resumes_on_one(tmp_path, two_process_run):
    single, multi = tmp_path / "single", tmp_path / "multi"
    shutil.copytree(two_process_run, multi)
    _finish(_start(single, 8, "single"))

    expected = _losses(single)
    assert sorted(expected) == list(range(1, STEPS + 1))
    assert _losses(multi) == pytest.approx(expected, abs=1e-5)
    assert sorted(_evals(single)) == list(range(0, STEPS + 1, EVERY))
    assert _evals(multi) == pytest.approx(_evals(single), abs=1e-5)
    # Each process saved its own shard's position.
    saved = sorted(p.name for p in (multi / "checkpoints" / str(STEPS - EVERY) / "data").glob("process_*"))
    assert saved == ["process_0-of-2.json", "process_1-of-2.json"]

    # Resume the 2-process run on 1 process from the checkpoint before the last: the same batches (both shards'
    # positions), the same losses.
    shutil.rmtree(multi / "checkpoints" / str(STEPS))
    _finish(_start(multi, 8, "resumed"))
    assert _losses(multi) == pytest.approx(expected, abs=1e-5)
    assert f"resumed from {multi / 'checkpoints' / str(STEPS - EVERY)}" in (multi / "run.log").read_text()


def _signal_after(workdir, step, processes, targets):
    """SIGTERM to `targets` (indices into `processes`) once process 0 has logged `step`."""
    deadline = time.time() + 300
    while not ((workdir / "metrics.jsonl").exists() and max(_losses(workdir), default=-1) >= step):
        assert all(p.poll() is None for p in processes), "a process ended before the signal"
        assert time.time() < deadline, f"timed out waiting for step {step}"
        time.sleep(0.002)
    for i in targets:
        processes[i].send_signal(signal.SIGTERM)


def _checkpoints(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.slow
def test_sigterm_to_one_or_both_processes_stops_both_at_one_checkpoint_and_the_resume_is_bit_identical(
    tmp_path, two_process_run
):
    run = tmp_path / "run"
    stopped_at = []
    # A preemption notice reaching one host only (process 1, which writes no logs), then every host at once.
    for attempt, targets in enumerate([[1], [0, 1]]):
        processes = _two_processes(run, f"attempt{attempt}")
        _signal_after(run, stopped_at[-1] + 2 if stopped_at else 2, processes, targets)
        _finish(*processes, status=128 + signal.SIGTERM)  # both stop; neither says the run is complete
        step = _checkpoints(run)[-1]
        assert step < STEPS and step not in stopped_at and max(_losses(run)) == step
        # Both processes saved their shard's position in the checkpoint of the step they stopped at.
        saved = sorted(p.name for p in (run / "checkpoints" / str(step) / "data").glob("process_*"))
        assert saved == ["process_0-of-2.json", "process_1-of-2.json"]
        stopper = "SIGTERM" if 0 in targets else "another process"
        assert f"stopped by {stopper} at step {step}" in (run / "run.log").read_text()
        stopped_at.append(step)
    _finish(*_two_processes(run, "resumed"))
    assert sorted(_losses(run)) == list(range(1, STEPS + 1))
    assert _losses(run) == _losses(two_process_run) and _evals(run) == _evals(two_process_run)  # bit for bit
