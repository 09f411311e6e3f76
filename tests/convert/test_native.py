"""Native (orbax) checkpoints and the `python -m qwen3jax.convert` CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from qwen3jax.convert import CheckpointError, load_hf, load_native, read_native_config, save_native
from qwen3jax.convert.__main__ import main

from .hf_models import assert_same_params, flat_params, our_logits, save_random, tokens


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "qwen3jax.convert", *map(str, args)], capture_output=True, text=True, env=env,
        timeout=300,
    )


def test_cli_import_export_round_trip(tmp_path):
    """HF → native → HF gives back the very same tensors and config, hence identical logits."""
    save_random(tmp_path / "hf", "moe", decoder_sparse_step=2, num_hidden_layers=3, tie_word_embeddings=True)
    run = _cli("import", "--hf", tmp_path / "hf", "--out", tmp_path / "native")
    assert run.returncode == 0, run.stderr
    assert "loaded MoE 8x top-2, 3 layers" in run.stderr
    assert (tmp_path / "native" / "model_config.json").is_file()

    run = _cli("export", "--ckpt", tmp_path / "native", "--out", tmp_path / "out")
    assert run.returncode == 0, run.stderr

    original = load_file(tmp_path / "hf" / "model.safetensors")
    exported = load_file(tmp_path / "out" / "model.safetensors")
    assert original.keys() == exported.keys()
    for key in original:
        np.testing.assert_array_equal(original[key], exported[key], err_msg=key)
    cfg_a, model_a = load_hf(tmp_path / "hf")
    cfg_b, model_b = load_hf(tmp_path / "out")
    assert cfg_a == cfg_b
    toks = tokens()
    np.testing.assert_array_equal(our_logits(model_a, toks), our_logits(model_b, toks))


@pytest.mark.parametrize(
    "args, message",
    [
        ("import --hf {tmp}/nowhere --out {tmp}/native", "Hugging Face checkpoint directory .*nowhere does not exist"),
        ("export --ckpt {tmp}/nowhere --out {tmp}/out", "native checkpoint directory .*nowhere does not exist"),
        ("export --ckpt {tmp} --out {tmp}/out", "is not a native checkpoint: model_config.json is missing"),
        ("import --hf {tmp}/hf --out {tmp}/full", "output directory .*full is not empty; pass overwrite=True"),
        ("import --hf {tmp}/hf --out {tmp}/x --param-dtype int8", "'int8' is not a floating-point"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    save_random(tmp_path / "hf", "dense")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert main(args.format(tmp=tmp_path).split()) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and re.search(message, lines[-1]), lines
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_native_round_trip_and_overwrite(tmp_path):
    save_random(tmp_path / "hf", "dense", tie_word_embeddings=True)
    cfg, model = load_hf(tmp_path / "hf")
    save_native(model, tmp_path / "native")
    assert read_native_config(tmp_path / "native") == cfg

    cfg_back, back = load_native(tmp_path / "native")
    assert cfg_back == cfg
    assert_same_params(back, model)
    toks = tokens()
    np.testing.assert_array_equal(our_logits(back, toks), our_logits(model, toks))

    _, half = load_native(tmp_path / "native", param_dtype="bfloat16")
    for key, value in flat_params(half).items():
        np.testing.assert_array_equal(value, flat_params(model)[key].astype("bfloat16"), err_msg=str(key))

    with pytest.raises(CheckpointError, match="not empty"):
        save_native(model, tmp_path / "native")
    save_native(half, tmp_path / "native", overwrite=True)
    assert load_native(tmp_path / "native")[0].param_dtype == "bfloat16"


def test_native_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="native checkpoint directory .* does not exist"):
        load_native(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="model_config.json is missing"):
        load_native(tmp_path)
