"""A trained run directory is a checkpoint for every command that reads one: `generate`, `chat_repl` (`make chat`)
and `convert export` take the run directory (its newest checkpoint) or one of its step directories directly."""

from __future__ import annotations

import io
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from qwen3jax import chat_repl
from qwen3jax import generate as generate_cli
from qwen3jax.convert import CheckpointError, load_hf, load_native
from qwen3jax.convert.__main__ import main as convert_main
from qwen3jax.train.checkpoint import load_params
from qwen3jax.train.loop import Trainer
from tests.train.helpers import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run of 2 steps with a checkpoint after each."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    Trainer(tiny_config(steps=2, **{"checkpoint.every": 1}), workdir).run()
    return workdir


def _params(model):
    return jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_a_run_directory_loads_its_newest_checkpoint_and_a_step_directory_that_step(run):
    _, newest = load_native(run)
    _, first = load_native(run / "checkpoints" / "1")
    abstract = _params(newest)
    # The reference: the weights as the run loop's own checkpoint reader (init_from) restores them.
    assert _equal(_params(newest), load_params(run / "checkpoints" / "2", abstract))
    assert _equal(_params(first), load_params(run / "checkpoints" / "1", abstract))
    assert not _equal(_params(first), _params(newest))


def test_a_directory_that_is_neither_is_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="is not a native checkpoint: model_config.json is missing; nor is it a training run"):
        load_native(tmp_path)


def test_generate_answers_from_a_run_directory_with_the_runs_tokenizer(run, capsys):
    argv = ["--prompt", "def fibonacci(n):", "--no-think", "--temperature", "0", "--max-new-tokens", "4"]
    assert generate_cli.main(["--ckpt", str(run), *argv]) == 0
    captured = capsys.readouterr()
    assert f"loading {run / 'checkpoints' / '2'} of the training run {run}" in captured.err
    assert "=== sample 1/1: " in captured.out and "--- answer ---" in captured.out
    assert generate_cli.main(["--ckpt", str(run / "checkpoints" / "1"), *argv]) == 0
    assert f"loading {run / 'checkpoints' / '1'} of the training run" in capsys.readouterr().err


def test_chat_repl_talks_from_a_step_directory(run, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n/exit\n"))
    assert chat_repl.main(["--ckpt", str(run / "checkpoints" / "1"), "--temperature", "0", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.count("assistant> ") == 1


def test_convert_export_writes_the_runs_newest_weights_as_a_hugging_face_folder(run, tmp_path):
    assert convert_main(["export", "--ckpt", str(run), "--out", str(tmp_path / "hf")]) == 0
    _, exported = load_hf(tmp_path / "hf")
    _, newest = load_native(run)
    assert _equal(_params(exported), _params(newest))
