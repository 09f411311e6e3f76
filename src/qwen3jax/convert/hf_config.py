"""Hugging Face `config.json` ⇄ `ModelConfig` for Qwen3 (dense) and Qwen3-MoE.

Two dialects exist: released checkpoints put `rope_theta` and `rope_scaling` (with `type` or `rope_type`) at the top
level and call the expert count `num_experts`; transformers ≥ 5 writes one `rope_parameters` dict (holding
`rope_theta`) and `num_local_experts`. Both read the same way here. A missing key takes the default transformers'
config class would give it, so a config means what it means to transformers. Features our model does not implement
are refused by name instead of being ignored.
"""

from __future__ import annotations

from typing import Any

from qwen3jax.convert.common import CheckpointError
from qwen3jax.model import ModelConfig, YarnScaling

ARCHITECTURES = {"qwen3": "Qwen3ForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM"}

# transformers 5.x `Qwen3Config` / `Qwen3MoeConfig` defaults for every key read below. (`head_dim` has no MoE default:
# the MoE modelling code falls back to hidden_size // num_attention_heads.)
_COMMON_DEFAULTS = {
    "vocab_size": 151_936,
    "max_position_embeddings": 32_768,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "attention_bias": False,
    "use_sliding_window": False,
}
_HF_DEFAULTS = {
    "qwen3": {
        **_COMMON_DEFAULTS,
        "hidden_size": 4096,
        "intermediate_size": 22016,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": None,  # None: as many as query heads
        "head_dim": 128,
    },
    "qwen3_moe": {
        **_COMMON_DEFAULTS,
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "moe_intermediate_size": 768,
        "norm_topk_prob": False,
        "decoder_sparse_step": 1,
        "mlp_only_layers": None,
    },
}
_DEFAULT_ROPE_THETA = 10_000.0  # transformers' `default_theta` when a config names none


def config_from_hf(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """The `ModelConfig` of an HF Qwen3 / Qwen3-MoE config dict; `source` names the file in error messages."""
    model_type = hf.get("model_type")
    if model_type not in ARCHITECTURES:
        raise CheckpointError(
            f"{source}: unsupported model_type {model_type!r}; supported: {', '.join(ARCHITECTURES)}"
        )
    architectures = hf.get("architectures") or [ARCHITECTURES[model_type]]
    if architectures != [ARCHITECTURES[model_type]]:
        raise CheckpointError(
            f"{source}: unsupported architectures {architectures} for model_type {model_type!r}; "
            f"expected [{ARCHITECTURES[model_type]!r}]"
        )
    d = {**_HF_DEFAULTS[model_type], **hf}
    if "num_local_experts" in hf:  # transformers ≥ 5 spelling of num_experts
        d["num_experts"] = hf["num_local_experts"]
    _refuse_unsupported(d, source)

    moe = model_type == "qwen3_moe"
    heads = d["num_attention_heads"]
    theta, scaling = _rope_from_hf(d, source)
    fields = dict(
        vocab_size=d["vocab_size"],
        hidden_size=d["hidden_size"],
        intermediate_size=d["intermediate_size"],
        num_layers=d["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=d["num_key_value_heads"] or heads,
        head_dim=d.get("head_dim") or d["hidden_size"] // heads,
        rms_norm_eps=d["rms_norm_eps"],
        rope_theta=float(theta),
        rope_scaling=scaling,
        max_position_embeddings=d["max_position_embeddings"],
        tie_word_embeddings=d["tie_word_embeddings"],
    )
    if moe:
        fields.update(
            num_experts=d["num_experts"],
            num_experts_per_tok=d["num_experts_per_tok"],
            moe_intermediate_size=d["moe_intermediate_size"],
            norm_topk_prob=d["norm_topk_prob"],
            decoder_sparse_step=d["decoder_sparse_step"],
            mlp_only_layers=tuple(d["mlp_only_layers"] or ()),
        )
    try:
        return ModelConfig(**fields)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None


def _refuse_unsupported(d: dict[str, Any], source: str) -> None:
    problems = []
    if d["use_sliding_window"]:
        problems.append("use_sliding_window: true (sliding-window attention is not implemented)")
    if d["attention_bias"]:
        problems.append("attention_bias: true (Qwen3 attention has no biases; this model has none)")
    if d["hidden_act"] != "silu":
        problems.append(f"hidden_act: {d['hidden_act']!r} (only 'silu' is implemented)")
    if other := sorted({t for t in d.get("layer_types") or () if t != "full_attention"}):
        problems.append(f"layer_types {other} (only full_attention is implemented)")
    if problems:
        raise CheckpointError(f"{source}: unsupported configuration: " + "; ".join(problems))


def _rope_from_hf(d: dict[str, Any], source: str) -> tuple[float, YarnScaling | None]:
    """(theta, YaRN or None) as transformers resolves them: a legacy `rope_scaling` dict wins over
    `rope_parameters`, and a theta inside the dict wins over the top-level `rope_theta`."""
    params = dict(d.get("rope_scaling") or d.get("rope_parameters") or {})
    theta = params.get("rope_theta", d.get("rope_theta", _DEFAULT_ROPE_THETA))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise CheckpointError(f"{source}: partial_rotary_factor {params['partial_rotary_factor']} is not supported")
    if rope_type == "default":
        return theta, None
    if rope_type != "yarn":
        raise CheckpointError(f"{source}: unsupported rope type {rope_type!r}; supported: 'default', 'yarn'")
    return theta, YarnScaling(
        factor=params.get("factor"),
        original_max_position_embeddings=params.get("original_max_position_embeddings"),
        # transformers reads these with `or`: 0 and null both mean the paper's default.
        beta_fast=float(params.get("beta_fast") or 32.0),
        beta_slow=float(params.get("beta_slow") or 1.0),
        attention_factor=params.get("attention_factor"),
        mscale=params.get("mscale"),
        mscale_all_dim=params.get("mscale_all_dim"),
        truncate=params.get("truncate", True),
    )


def config_to_hf(cfg: ModelConfig, torch_dtype: str) -> dict[str, Any]:
    """A config dict transformers loads as the same model.

    RoPE is written in both dialects: `rope_parameters` for transformers ≥ 5 and top-level `rope_theta` /
    `rope_scaling` for tools that predate it; both name the same values, and transformers 5 reads them consistently.
    """
    moe = cfg.is_moe
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling is not None:
        rope = {"rope_type": "yarn", "rope_theta": cfg.rope_theta, **_yarn_to_hf(cfg)}
    hf: dict[str, Any] = {
        "architectures": [ARCHITECTURES["qwen3_moe" if moe else "qwen3"]],
        "model_type": "qwen3_moe" if moe else "qwen3",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "attention_bias": False,
        "use_sliding_window": False,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None if cfg.rope_scaling is None else {k: v for k, v in rope.items() if k != "rope_theta"},
        "rope_parameters": rope,
        "torch_dtype": torch_dtype,
    }
    if moe:
        hf.update(
            num_experts=cfg.num_experts,
            num_experts_per_tok=cfg.num_experts_per_tok,
            moe_intermediate_size=cfg.moe_intermediate_size,
            norm_topk_prob=cfg.norm_topk_prob,
            decoder_sparse_step=cfg.decoder_sparse_step,
            mlp_only_layers=list(cfg.mlp_only_layers),
        )
    return hf


def _yarn_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """YaRN fields with "derive" (None) resolved as transformers would, since it requires factor and original length."""
    y = cfg.rope_scaling
    original = y.original_max_position_embeddings or cfg.max_position_embeddings
    out = {
        "factor": y.factor if y.factor is not None else cfg.max_position_embeddings / original,
        "original_max_position_embeddings": original,
        "beta_fast": y.beta_fast,
        "beta_slow": y.beta_slow,
        "truncate": y.truncate,
    }
    optional = {"attention_factor": y.attention_factor, "mscale": y.mscale, "mscale_all_dim": y.mscale_all_dim}
    out.update({k: v for k, v in optional.items() if v is not None})
    return out
