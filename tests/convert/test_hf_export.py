"""`save_hf`: transformers loads the folder and computes our logits; `load_hf` reads it back bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flax import nnx
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from qwen3jax.convert import CheckpointError, load_hf, save_hf
from qwen3jax.model import ModelConfig, Qwen3, YarnScaling

from .hf_models import TOL, YARN, assert_same_params, flat_params, hf_logits, max_diff, our_logits, save_random, tokens


def _from_pretrained(path):
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", dtype=torch.float32).eval()


@pytest.mark.parametrize(
    "kind, overrides",
    [
        ("dense", dict(tie_word_embeddings=True, rope_parameters=dict(YARN), max_position_embeddings=64)),
        ("moe", dict(norm_topk_prob=False, mlp_only_layers=[2], num_hidden_layers=3, num_key_value_heads=1)),
    ],
)
def test_export_round_trip(tmp_path, kind, overrides):
    hf = save_random(tmp_path / "hf", kind, **overrides)
    cfg, model = load_hf(tmp_path / "hf")
    save_hf(model, cfg, tmp_path / "out")

    toks = tokens()
    exported = _from_pretrained(tmp_path / "out")
    assert max_diff(hf_logits(exported, toks), our_logits(model, toks)) <= TOL
    assert max_diff(hf_logits(exported, toks), hf_logits(hf, toks)) == 0.0  # same weights, same HF code

    cfg_back, model_back = load_hf(tmp_path / "out")
    assert cfg_back == cfg
    assert_same_params(model_back, model)
    with safe_open(tmp_path / "out" / "model.safetensors", "numpy") as f:
        keys = set(f.keys())
    assert ("lm_head.weight" in keys) == (not cfg.tie_word_embeddings)
    if cfg.is_moe:  # per-expert keys, as save_pretrained writes them
        assert "model.layers.0.mlp.experts.7.down_proj.weight" in keys


def test_export_of_native_model_with_derived_yarn(tmp_path):
    """A model we built (not from HF), whose YaRN fields say "derive as HF does": the exported config makes
    transformers derive the same frequencies (factor = 64 / 16)."""
    cfg = ModelConfig(
        vocab_size=256, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=32,
        rope_theta=10_000.0, max_position_embeddings=64, num_experts=4, num_experts_per_tok=2,
        moe_intermediate_size=32, rope_scaling=YarnScaling(factor=None, original_max_position_embeddings=16),
    )
    model = Qwen3(cfg, rngs=nnx.Rngs(3))
    save_hf(model, cfg, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["rope_parameters"]["factor"] == 4.0
    toks = tokens()
    assert max_diff(hf_logits(_from_pretrained(tmp_path), toks), our_logits(model, toks)) <= TOL


def test_sharded_bf16_export(tmp_path):
    save_random(tmp_path / "hf", "moe")
    cfg, model = load_hf(tmp_path / "hf")
    save_hf(model, cfg, tmp_path / "out", dtype="bfloat16", max_shard_bytes=64 * 1024)
    out = tmp_path / "out"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 2 and set(index["weight_map"].values()) == set(shards)
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"

    toks = tokens()
    exported = _from_pretrained(out)
    assert next(exported.parameters()).dtype == torch.float32
    _, back = load_hf(out)
    assert max_diff(hf_logits(exported, toks), our_logits(back, toks)) <= TOL
    for key, value in flat_params(back).items():  # the bf16 rounding of the original weights, nothing else
        original = flat_params(model)[key]
        np.testing.assert_array_equal(value, original.astype("bfloat16").astype(np.float32), err_msg=str(key))


def test_export_refuses_non_empty_directory(tmp_path):
    save_random(tmp_path / "hf", "dense")
    cfg, model = load_hf(tmp_path / "hf")
    out = tmp_path / "out"
    save_hf(model, cfg, out, max_shard_bytes=64 * 1024)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not empty.*overwrite"):
        save_hf(model, cfg, out)
    save_hf(model, cfg, out, overwrite=True)  # one file now: the stale shards and index must go
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "notes.txt"]
    assert_same_params(load_hf(out)[1], model)


def test_export_rejects_model_not_matching_cfg(tmp_path):
    save_random(tmp_path / "hf", "dense")
    cfg, model = load_hf(tmp_path / "hf")
    with pytest.raises(CheckpointError, match=r"stacks/0/layers/mlp/gate_proj: expected \[2, 64, 128\]"):
        save_hf(model, cfg.replace(intermediate_size=128), tmp_path / "out")
    assert not (tmp_path / "out").exists()
