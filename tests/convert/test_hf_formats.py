"""The checkpoint spellings `load_hf` accepts: both config dialects, fused expert tensors, BF16 and sharded files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from qwen3jax.convert import load_hf, read_hf_config

from .hf_models import (
    TOL, YARN, assert_same_params, flat_params, hf_logits, max_diff, our_logits, save_random, to_old_dialect, tokens,
)


THETA_5E5 = {"rope_type": "default", "rope_theta": 5e5}


@pytest.mark.parametrize(
    "kind, overrides",
    [
        ("dense", dict(rope_parameters=dict(YARN), max_position_embeddings=64)),
        ("moe", dict(decoder_sparse_step=2, num_hidden_layers=3, rope_parameters=THETA_5E5)),
    ],
)
def test_released_config_dialect(tmp_path, kind, overrides):
    """Top-level rope_theta + rope_scaling{type}, num_experts: read exactly like transformers-5's rope_parameters."""
    new, old = tmp_path / "new", tmp_path / "old"
    hf = save_random(new, kind, **overrides)
    shutil.copytree(new, old)
    to_old_dialect(old)
    assert "rope_parameters" not in json.loads((old / "config.json").read_text())
    assert read_hf_config(old) == read_hf_config(new)
    _, model = load_hf(old)
    toks = tokens()
    assert max_diff(our_logits(model, toks), hf_logits(hf, toks)) <= TOL


def test_fused_expert_tensors(tmp_path):
    """Some transformers versions write the in-memory fused layout: experts.gate_up_proj [E, 2F, D] (gate rows
    first) and experts.down_proj [E, D, F]."""
    hf = save_random(tmp_path / "per_expert", "moe", decoder_sparse_step=2, num_hidden_layers=3)
    fused = tmp_path / "fused"
    fused.mkdir()
    shutil.copy(tmp_path / "per_expert" / "config.json", fused)
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    assert "model.layers.1.mlp.experts.gate_up_proj" in state
    save_file(state, fused / "model.safetensors", metadata={"format": "pt"})
    _, model = load_hf(fused)
    toks = tokens()
    assert max_diff(our_logits(model, toks), hf_logits(hf, toks)) <= TOL
    assert_same_params(model, load_hf(tmp_path / "per_expert")[1])


def test_bf16_checkpoint(tmp_path):
    hf = save_random(tmp_path / "f32", "moe").to(torch.bfloat16)
    hf.save_pretrained(tmp_path / "bf16")
    with safe_open(tmp_path / "bf16" / "model.safetensors", "numpy") as f:
        assert f.get_slice("model.embed_tokens.weight").get_dtype() == "BF16"
    hf.float().save_pretrained(tmp_path / "rounded_f32")  # the same bf16 values, stored as float32
    _, from_bf16 = load_hf(tmp_path / "bf16")
    assert_same_params(from_bf16, load_hf(tmp_path / "rounded_f32")[1])
    _, kept_bf16 = load_hf(tmp_path / "bf16", param_dtype="bfloat16")
    for key, value in flat_params(kept_bf16).items():
        assert value.dtype == np.dtype("bfloat16"), key
        np.testing.assert_array_equal(value.astype(np.float32), flat_params(from_bf16)[key])


def test_sharded_safetensors_with_index(tmp_path):
    hf = save_random(tmp_path, "moe", mlp_only_layers=[1])
    shutil.rmtree(tmp_path)
    hf.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("*.safetensors"))) > 2
    _, model = load_hf(tmp_path)
    toks = tokens()
    assert max_diff(our_logits(model, toks), hf_logits(hf, toks)) <= TOL
