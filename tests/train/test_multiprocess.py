"""Multi-process runs on one machine: the tiny S1 as 2 processes x 4 CPU devices (jax.distributed, collectives over
gloo) trains on the same batches and gets the same losses and evals as 1 process x 8 devices, and its checkpoint
resumes on 1 process to the same losses again."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from .test_run import REPO, _losses

STEPS, EVERY = 6, 3
TINY = ["--config=experiments/pretrain_s1.py:tiny", "--config.model.vocab_size=512", "--config.model.hidden_size=32",
        "--config.model.intermediate_size=64", "--config.model.num_layers=2", "--config.model.num_heads=4",
        "--config.model.num_kv_heads=2", "--config.model.head_dim=16", "--config.data.vocab_size=512",
        "--config.seq_len=32", "--config.global_batch=8", "--config.log_every=1", f"--config.eval.every={EVERY}",
        "--config.eval.batches=3", "--config.samples.num=0", f"--config.steps={STEPS}",
        f"--config.checkpoint.every={EVERY}", "--config.checkpoint.keep=2",
        "--config.batch_source.data_shards=2"]  # fmt: skip


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


def _finish(*processes):
    try:
        for process in processes:
            assert process.wait(timeout=600) == 0, open(process.log).read()[-3000:]
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


@pytest.mark.slow
def test_two_processes_train_like_one_and_their_checkpoint_resumes_on_one(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    coordinator = f"--coordinator_address=127.0.0.1:{_free_port()}"
    _finish(*[_start(multi, 4, f"process{i}", coordinator, "--num_processes=2", f"--process_id={i}") for i in range(2)])
    _finish(_start(single, 8, "single"))

    expected = _losses(single)
    assert sorted(expected) == list(range(1, STEPS + 1))
    assert _losses(multi) == pytest.approx(expected, abs=1e-5)
    assert sorted(_evals(single)) == [0, 3, 6] and _evals(multi) == pytest.approx(_evals(single), abs=1e-5)
    # Each process saved its own shard's position.
    saved = sorted(p.name for p in (multi / "checkpoints" / "3" / "data").glob("process_*"))
    assert saved == ["process_0-of-2.json", "process_1-of-2.json"]

    # Resume the 2-process run on 1 process from step 3: the same batches (both shards' positions), the same losses.
    shutil.rmtree(multi / "checkpoints" / str(STEPS))
    _finish(_start(multi, 8, "resumed"))
    assert _losses(multi) == pytest.approx(expected, abs=1e-5)
    assert "resumed from" in (multi / "run.log").read_text()
