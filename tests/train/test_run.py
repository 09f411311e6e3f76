"""The run loop end to end: preemption + resume is bit-identical, stages chain, bad configs fail early."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from qwen3jax.train.loop import RunStopped, Trainer

from .helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _losses(workdir):
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def _signal_when_logged(workdir, step):
    """Send ourselves SIGTERM (as a pod preemption would) once `step` shows up in metrics.jsonl."""

    def watch():
        path = workdir / "metrics.jsonl"
        while not (path.exists() and step in _losses(workdir)):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_preempted_and_resumed_run_matches_uninterrupted(tmp_path):
    config = tiny_config(steps=8)
    Trainer(config, tmp_path / "straight").run()
    interrupted = tmp_path / "interrupted"
    watcher = _signal_when_logged(interrupted, 3)
    Trainer(config, interrupted).run()
    watcher.join(timeout=5)
    stopped_at = max(_losses(interrupted))
    assert stopped_at < 8, "the run was expected to stop early"
    Trainer(config, interrupted).run()  # the same command again: resumes from the checkpoint
    assert _losses(interrupted) == _losses(tmp_path / "straight")  # bit-identical, data order included
    assert (interrupted / "curves.png").stat().st_size > 0


def test_stages_chain_from_previous_run_directories(tmp_path, monkeypatch):
    """S1 -> S2 -> S3 with their own configs (tiny sizes), each initialised from the previous run directory."""
    from experiments import pretrain_s2, pretrain_s3

    monkeypatch.chdir(tmp_path)
    s1 = tiny_config(steps=2)
    Trainer(s1, "runs/pretrain_s1").run()
    for module, steps in [(pretrain_s2, 2), (pretrain_s3, 2)]:
        c = module.get_config("tiny")
        c.model.update({k: s1.model[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                                                  "num_heads", "num_kv_heads", "head_dim")})  # fmt: skip
        c.data.vocab_size = 512
        c.seq_len, c.global_batch, c.steps, c.samples.num, c.eval.batches = c.seq_len // 8, 8, steps, 0, 1
        out = Trainer(c, f"runs/{c.name}").run()
        assert out["eval/loss"] > 0
    log = json.loads((tmp_path / "runs/pretrain_s3/config.json").read_text())
    assert log["model"]["rope_theta"] == 1e6 and log["init_from"] == "runs/pretrain_s2"


def test_init_from_missing_run_is_a_clear_error(tmp_path):
    config = tiny_config(init_from=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        Trainer(config, tmp_path / "run").run()


def test_run_directory_with_other_config_is_not_touched(tmp_path):
    Trainer(tiny_config(steps=1), tmp_path / "run").run()
    before = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(RunStopped, match="different config"):
        Trainer(tiny_config(steps=1, **{"optim.peak_lr": 1.0}), tmp_path / "run")
    assert (tmp_path / "run" / "config.json").read_text() == before


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "qwen3jax.run", "--config=experiments/pretrain_s1.py", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_mistyped_config_key_names_the_nearest_valid_key(tmp_path):
    result = _run_cli("--config.optim.peak_lrr=1e-3", f"--workdir={tmp_path}")
    assert result.returncode != 0
    assert "peak_lrr" in result.stderr and 'Did you mean "peak_lr"' in result.stderr
    assert not (tmp_path / "config.json").exists()


def test_mesh_that_does_not_fit_the_devices_is_rejected(tmp_path):
    result = _run_cli("--config.mesh.data=3", f"--workdir={tmp_path}")
    assert result.returncode == 1
    assert "needs 3 devices but" in result.stderr and "available" in result.stderr
