"""Tiny, fully randomised Hugging Face Qwen3 / Qwen3-MoE models and logit helpers for the conversion tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx, traverse_util
from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3MoeConfig

# head_dim differs from hidden / heads (64 / 4 = 16 ≠ 32), as in every released Qwen3.
DENSE = dict(
    vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=32, max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=False,
)
MOE = dict(DENSE, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True)
YARN = {"rope_type": "yarn", "rope_theta": 10_000.0, "factor": 4.0, "original_max_position_embeddings": 16}
TOL = 1e-4


def random_hf_model(kind: str = "dense", seed: int = 0, **overrides) -> torch.nn.Module:
    """An eager-attention HF model with EVERY weight random: norms around 1 (a misplaced norm changes the logits)
    and router weights large enough that tokens pick different experts."""
    config = (Qwen3MoeConfig if kind == "moe" else Qwen3Config)(**{**(MOE if kind == "moe" else DENSE), **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("mlp.gate.weight"):  # router [E, D]
                p.normal_(0, 2 / math.sqrt(p.shape[-1]))
            elif "embed_tokens" in name:
                p.normal_(0, 1)
            else:  # [out, in] (or [E, out, in]) projections: unit-scale activations
                p.normal_(0, 1 / math.sqrt(p.shape[-1]))
    return model


def save_random(path: Path, kind: str = "dense", seed: int = 0, **overrides) -> torch.nn.Module:
    model = random_hf_model(kind, seed, **overrides)
    model.save_pretrained(path)
    return model


def tokens(shape=(2, 24), vocab: int = 256, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, shape)


def hf_logits(model: torch.nn.Module, toks: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(toks)).logits.float().numpy()


def our_logits(model, toks: np.ndarray, **kwargs) -> np.ndarray:
    return np.asarray(model(jnp.asarray(toks), **kwargs))


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def to_old_dialect(path: Path) -> None:
    """Rewrite a transformers-5 config.json the way released checkpoints spell it: top-level `rope_theta`,
    `rope_scaling` with `type`, `num_experts`, `torch_dtype`."""
    file = path / "config.json"
    hf = json.loads(file.read_text())
    rope = hf.pop("rope_parameters")
    hf["rope_theta"] = rope.pop("rope_theta")
    rope_type = rope.pop("rope_type")
    hf["rope_scaling"] = None if rope_type == "default" else {"type": rope_type, **rope}
    if "num_local_experts" in hf:
        hf["num_experts"] = hf.pop("num_local_experts")
    hf["torch_dtype"] = hf.pop("dtype")
    file.write_text(json.dumps(hf, indent=2))


def flat_params(model) -> dict:
    """{state path: numpy array} of a model's parameters."""
    state = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(state).items()}


def assert_same_params(a, b) -> None:
    pa, pb = flat_params(a), flat_params(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        assert pa[key].dtype == pb[key].dtype, key
        np.testing.assert_array_equal(pa[key], pb[key], err_msg=str(key))
