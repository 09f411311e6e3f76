"""The run loop end to end: preemption + resume is bit-identical, stages chain, bad configs fail early."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from qwen3jax.train.checkpoint import Checkpointer
from qwen3jax.train.loop import RunStopped, Trainer

from .helpers import TINY_MODEL, tiny_config

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


def _eval_steps(workdir):
    return sorted(json.loads(line)["step"] for line in open(workdir / "metrics.jsonl") if "eval/loss" in line)


def test_preempted_and_resumed_run_matches_uninterrupted(tmp_path):
    config = tiny_config(steps=8, **{"eval.every": 1})  # an eval is due at whatever step the stop comes
    Trainer(config, tmp_path / "straight").run()
    interrupted = tmp_path / "interrupted"
    watcher = _signal_when_logged(interrupted, 3)
    trainer = Trainer(config, interrupted)
    trainer.run()
    watcher.join(timeout=5)
    stopped_at = max(_losses(interrupted))
    assert stopped_at < 8 and trainer.stop_signal == "SIGTERM", "the run was expected to stop early"
    Trainer(config, interrupted).run()  # the same command again: resumes from the checkpoint
    assert _losses(interrupted) == _losses(tmp_path / "straight")  # bit-identical, data order included
    assert _eval_steps(interrupted) == _eval_steps(tmp_path / "straight") == list(range(9))  # none lost to the stop
    assert _eval_losses(interrupted) == _eval_losses(tmp_path / "straight")
    final = _checkpoint_params(interrupted / "checkpoints" / "8")
    straight_final = _checkpoint_params(tmp_path / "straight" / "checkpoints" / "8")
    assert final.keys() == straight_final.keys()
    for name, value in straight_final.items():
        np.testing.assert_array_equal(final[name], value, err_msg=name)
    assert (interrupted / "curves.png").stat().st_size > 0


def test_cli_exits_with_the_signal_status_after_a_preemption_checkpoint(tmp_path):
    """A stopped run is not a finished one: `make run EXP=s1 && make run EXP=s2` must not go on to S2."""
    process = subprocess.Popen(
        [sys.executable, "-m", "qwen3jax.run", "--config=experiments/pretrain_s1.py", f"--workdir={tmp_path}",
         "--config.steps=100000", "--config.log_every=1", "--config.samples.num=0", "--config.eval.every=0"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 240
    while not ((tmp_path / "metrics.jsonl").exists() and _losses(tmp_path)) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert any((tmp_path / "checkpoints").iterdir())


@pytest.mark.parametrize("during", ["checkpoint_wait", "samples"])
def test_a_signal_while_the_run_finishes_is_not_swallowed(tmp_path, monkeypatch, during):
    """The run completes, but the exit status (run.py: 128 + signal) must still say that a signal came."""
    trainer = Trainer(tiny_config(steps=2, **{"samples.num": 1}), tmp_path)
    if during == "samples":
        monkeypatch.setattr(trainer, "write_samples", lambda state: os.kill(os.getpid(), signal.SIGTERM))
    else:
        wait, sent = Checkpointer.wait, []

        def wait_then_signal(self):
            wait(self)
            if not sent:  # once: the last step's save waits too, and a second signal restores the default handler
                sent.append(True)
                os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(Checkpointer, "wait", wait_then_signal)
    trainer.run()
    assert trainer.stop_signal == "SIGTERM"
    assert max(_losses(tmp_path)) == 2 and (tmp_path / "checkpoints" / "2").is_dir()  # complete all the same


def _poison(trainer):
    """Make every step non-finite: a NaN in the final norm's weight."""
    init_state = trainer.init_state

    def poisoned():
        state = init_state()
        norm = state.params["norm"]
        return state.replace(params={**state.params, "norm": {"weight": norm["weight"].at[0].set(float("nan"))}})

    trainer.init_state = poisoned
    return trainer


def test_non_finite_steps_stop_the_run_between_log_steps_and_do_not_move_the_schedule(tmp_path):
    # Checked every step (one step late, so the device never waits): 2 in a row stop it although logs come every 5.
    trainer = _poison(Trainer(tiny_config(steps=12, log_every=5, **{"optim.max_nonfinite_steps": 2}), tmp_path / "a"))
    with pytest.raises(RunStopped, match=r"^2 steps in a row had a non-finite"):
        trainer.run()
    # Skipped steps apply no update, so the schedule stays put and the logged rate is the one of update 0.
    trainer = _poison(Trainer(tiny_config(steps=3, **{"optim.max_nonfinite_steps": 10}), tmp_path / "b"))
    trainer.run()
    rows = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert [r["train/skipped"] for r in rows] == [1, 1, 1]
    assert [r["train/lr"] for r in rows] == [float(trainer.schedule(0))] * 3 != [float(trainer.schedule(2))] * 3


def test_a_fresh_start_drops_an_abandoned_attempts_metrics_and_a_complete_run_reports_its_results(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "train/loss": 99.0}) + "\n" for s in (1, 2, 3)))
    first = Trainer(tiny_config(steps=2), run).run()
    assert sorted(_losses(run)) == [1, 2] and 99.0 not in _losses(run).values()
    again = Trainer(tiny_config(steps=2), run).run()  # already complete: the logged results, nothing trained
    assert again["train/loss"] == first["train/loss"] == _losses(run)[2]


def test_init_from_an_unfinished_run_says_so(tmp_path, capsys):
    Trainer(tiny_config(steps=2), tmp_path / "s1").run()
    snapshot = json.loads((tmp_path / "s1" / "config.json").read_text())
    (tmp_path / "s1" / "config.json").write_text(json.dumps(snapshot | {"steps": 5}))  # as if stopped at 2 of 5
    Trainer(tiny_config(steps=1, init_from=str(tmp_path / "s1")), tmp_path / "s2").run()
    out = capsys.readouterr().out
    assert f"initialised weights from {tmp_path / 's1' / 'checkpoints' / '2'}" in out
    assert "stopped at step 2 of its 5 steps" in out


def _eval_losses(workdir):
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    return {r["step"]: r["eval/loss"] for r in rows if "eval/loss" in r}


def _by_name(tree):
    """Leaves by "a/b/0/c" path (a restored checkpoint names list indices as strings, a state as ints)."""
    return {jax.tree_util.keystr(path, simple=True, separator="/"): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(tree))}  # fmt: skip


def _checkpoint_params(step_dir):
    with ocp.StandardCheckpointer() as checkpointer:
        return _by_name(checkpointer.restore(step_dir / "params"))


def test_init_from_starts_from_the_source_checkpoints_parameters_and_eval(tmp_path):
    """The next stage starts where the previous one ended: its weights are the source checkpoint's, bit for bit, so
    its step-0 eval (same eval data) is the source's final eval."""
    fast = {"eval.every": 2, "optim.warmup_steps": 1, "optim.peak_lr": 3e-2}  # S1's eval moves in two steps
    Trainer(tiny_config(steps=2, **fast), tmp_path / "s1").run()
    s2 = Trainer(tiny_config(steps=1, init_from=str(tmp_path / "s1"), **{"eval.every": 1}), tmp_path / "s2")
    evaluate, at_start = s2.evaluate, {}

    def evaluate_and_keep_the_starting_weights(state, step, writer):
        if step == 0:
            at_start.update(_by_name(state.params))
        return evaluate(state, step, writer)

    s2.evaluate = evaluate_and_keep_the_starting_weights
    s2.run()
    source = _checkpoint_params(tmp_path / "s1" / "checkpoints" / "2")
    assert at_start.keys() == source.keys()
    for name, value in source.items():
        np.testing.assert_array_equal(at_start[name], value, err_msg=name)
    assert _eval_losses(tmp_path / "s2")[0] == _eval_losses(tmp_path / "s1")[2]
    # Not trivially equal: S1's final eval is not its (fresh weights') starting one.
    assert abs(_eval_losses(tmp_path / "s1")[2] - _eval_losses(tmp_path / "s1")[0]) > 0.01


def test_init_from_another_models_checkpoint_names_the_parameters(tmp_path):
    Trainer(tiny_config(steps=1), tmp_path / "s1").run()
    wider = tiny_config(steps=1, init_from=str(tmp_path / "s1"), **{"model.hidden_size": 64})
    named = r"parameters do not match this model.*embed_tokens: stored \(512, 32\), this model \(512, 64\)"
    with pytest.raises(RunStopped, match=named):
        Trainer(wider, tmp_path / "s2").run()


def test_keeping_no_checkpoint_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"checkpoint.keep must be >= 1"):
        Trainer(tiny_config(**{"checkpoint.keep": 0}), tmp_path / "run")


def test_stages_chain_from_previous_run_directories(tmp_path, monkeypatch):
    """S1 -> S2 -> S3 with their own configs (tiny sizes), each initialised from the previous run directory."""
    from experiments import pretrain_s2, pretrain_s3

    monkeypatch.chdir(tmp_path)
    s1 = tiny_config(steps=2)
    Trainer(s1, "runs/pretrain_s1").run()
    for module, steps in [(pretrain_s2, 2), (pretrain_s3, 2)]:
        c = module.get_config("tiny")
        shape = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                 "head_dim", "tie_word_embeddings")  # fmt: skip
        c.model.update({k: s1.model[k] for k in shape})
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


def test_mesh_that_does_not_fit_the_devices_is_rejected(tmp_path):
    result = _run_cli("--config.mesh.data=3", f"--workdir={tmp_path}")
    assert result.returncode == 1
    assert "needs 3 devices but" in result.stderr and "available" in result.stderr


def _tiny_cli_args(workdir):
    model = [f"--config.model.{k}={v}" for k, v in TINY_MODEL.items()]
    return [*model, "--config.data.vocab_size=512", "--config.seq_len=32", "--config.global_batch=8",
            "--config.steps=2", "--config.log_every=1", "--config.eval.every=2", "--config.eval.batches=1",
            "--config.samples.num=0", "--config.checkpoint.every=1", f"--workdir={workdir}"]  # fmt: skip


def test_library_logs_go_to_the_run_log_and_the_console_shows_our_lines(tmp_path):
    quiet = _run_cli(*_tiny_cli_args(tmp_path / "quiet"))
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    console = quiet.stdout + quiet.stderr
    assert "orbax" not in console and "checkpoint_manager" not in console, console[-2000:]
    assert "step      2/2" in quiet.stdout
    log = (tmp_path / "quiet" / "run.log").read_text()
    assert "checkpoint_manager" in log  # orbax's lines are kept, in the file
    assert "experiment pretrain_s1: variant" in log and "step      2/2" in log  # and so are ours
    verbose = _run_cli(*_tiny_cli_args(tmp_path / "verbose"), "--verbose")
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert "checkpoint_manager" in verbose.stdout + verbose.stderr
