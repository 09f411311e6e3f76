"""config.json ⇄ ModelConfig: released configs give our presets; what we write, transformers reads and re-saves
into a config that reads back to the same ModelConfig."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig

from qwen3jax.convert import config_from_hf, config_to_hf
from qwen3jax.model import PRESETS, ModelConfig, YarnScaling

# Released-checkpoint dialect (as on the Hub for Qwen3-0.6B and Qwen3-30B-A3B, transformers 4.51 era).
QWEN3_0_6B = {
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024, "initializer_range": 0.02,
    "intermediate_size": 3072, "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
    "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False,
    "vocab_size": 151936,
}
QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
    "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 6144, "max_position_embeddings": 40960,
    "max_window_layers": 48, "mlp_only_layers": [], "model_type": "qwen3_moe", "moe_intermediate_size": 768,
    "norm_topk_prob": True, "num_attention_heads": 32, "num_experts": 128, "num_experts_per_tok": 8,
    "num_hidden_layers": 48, "num_key_value_heads": 4, "output_router_logits": False, "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001, "sliding_window": None,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": True,
    "use_sliding_window": False, "vocab_size": 151936,
}


@pytest.mark.parametrize("hf, preset", [(QWEN3_0_6B, "qwen3_0_6b"), (QWEN3_30B_A3B, "qwen3_30b_a3b")])
def test_released_configs_are_the_presets(hf, preset):
    assert config_from_hf(hf) == PRESETS[preset]
    # The model card's 128K recipe (SPEC §1): YaRN factor 4 over 32,768 positions.
    yarn = {**hf, "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
    assert config_from_hf(yarn) == PRESETS[preset].replace(rope_scaling=YarnScaling())


def test_missing_keys_take_transformers_defaults():
    cfg = config_from_hf({"model_type": "qwen3_moe", "hidden_size": 64, "num_attention_heads": 4})
    assert (cfg.head_dim, cfg.num_kv_heads, cfg.num_experts, cfg.norm_topk_prob) == (16, 4, 128, False)
    assert cfg.rope_theta == 10_000.0 and cfg.rope_scaling is None
    dense = config_from_hf({"model_type": "qwen3", "num_attention_heads": 8, "num_key_value_heads": None})
    assert (dense.head_dim, dense.num_kv_heads, dense.is_moe) == (128, 8, False)


ROUND_TRIP = {
    **{name: PRESETS[name] for name in ("qwen3_0_6b", "qwen3_8b", "qwen3_235b_a22b", "tiny_moe")},
    "yarn_full": PRESETS["qwen3_4b"].replace(
        rope_scaling=YarnScaling(factor=2.0, original_max_position_embeddings=8192, beta_fast=16.0, beta_slow=2.0,
                                 attention_factor=1.2, mscale=0.8, mscale_all_dim=0.5, truncate=False)
    ),
    "mixed_moe": PRESETS["tiny_moe"].replace(decoder_sparse_step=2, mlp_only_layers=(3,), norm_topk_prob=False),
}


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_transformers_round_trip(tmp_path, name):
    cfg = ROUND_TRIP[name]
    (tmp_path / "config.json").write_text(json.dumps(config_to_hf(cfg, "float32")))
    hf = AutoConfig.from_pretrained(tmp_path)
    assert hf.model_type == ("qwen3_moe" if cfg.is_moe else "qwen3")
    assert (hf.head_dim, hf.num_key_value_heads, hf.rope_parameters["rope_theta"]) == (
        cfg.head_dim, cfg.num_kv_heads, cfg.rope_theta
    )
    if cfg.is_moe:
        assert (hf.num_experts, hf.mlp_only_layers, hf.decoder_sparse_step) == (
            cfg.num_experts, list(cfg.mlp_only_layers), cfg.decoder_sparse_step
        )
    hf.save_pretrained(tmp_path / "resaved")  # transformers' own dialect
    resaved = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert config_from_hf(resaved) == cfg
    assert config_from_hf(config_to_hf(cfg, "float32")) == cfg


def test_runtime_fields_are_not_part_of_the_hf_config():
    cfg = ModelConfig.from_preset("tiny", remat="full", moe_kernel="naive", scan_layers=False, dtype="bfloat16")
    assert config_from_hf(config_to_hf(cfg, "bfloat16")) == PRESETS["tiny"]
