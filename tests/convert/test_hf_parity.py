"""Logit parity of `load_hf` against HF `Qwen3ForCausalLM` / `Qwen3MoeForCausalLM` on random tiny models."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from qwen3jax.convert import load_hf

from .hf_models import TOL, YARN, hf_logits, max_diff, our_logits, save_random, tokens

# name: (kind, HF config overrides, expected layer groups (is_moe, count))
CASES = {
    "dense_mha_untied": ("dense", dict(num_key_value_heads=4), [(False, 2)]),
    "dense_gqa2_tied_hd16": (
        "dense", dict(num_attention_heads=8, num_key_value_heads=4, head_dim=16, tie_word_embeddings=True),
        [(False, 2)],
    ),
    "dense_gqa4_theta1e6": (
        "dense",
        dict(num_attention_heads=8, num_key_value_heads=2, head_dim=16, num_hidden_layers=3,
             rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
        [(False, 3)],
    ),
    # 24 tokens > original_max_position_embeddings=16, so YaRN's interpolated frequencies matter.
    "dense_yarn": ("dense", dict(rope_parameters=dict(YARN), max_position_embeddings=64), [(False, 2)]),
    "moe_norm_topk": ("moe", dict(norm_topk_prob=True), [(True, 2)]),
    "moe_no_norm_sparse_step2": (
        "moe", dict(norm_topk_prob=False, decoder_sparse_step=2, num_hidden_layers=3),
        [(False, 1), (True, 1), (False, 1)],
    ),
    "moe_mlp_only_tied_gqa4_yarn": (
        "moe",
        dict(mlp_only_layers=[0], num_hidden_layers=3, tie_word_embeddings=True, num_attention_heads=8,
             num_key_value_heads=2, head_dim=16, rope_parameters=dict(YARN, rope_theta=1e6),
             max_position_embeddings=64),
        [(False, 1), (True, 2)],
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_logits_match_hf(tmp_path, name):
    kind, overrides, groups = CASES[name]
    hf = save_random(tmp_path, kind, **overrides)
    cfg, model = load_hf(tmp_path)
    assert cfg.layer_groups() == groups
    assert cfg.num_kv_heads == hf.config.num_key_value_heads and cfg.head_dim == hf.config.head_dim
    toks = tokens()
    assert max_diff(our_logits(model, toks), hf_logits(hf, toks)) <= TOL


def test_packed_documents_match_hf_run_separately(tmp_path):
    """A packed row [A | B] gives each document the logits HF gives it alone (block-diagonal mask, positions
    restarting per document); HF's own restarting position_ids would not isolate the documents, so it runs each
    document separately."""
    hf = save_random(tmp_path, "moe", decoder_sparse_step=2, num_hidden_layers=3)
    _, model = load_hf(tmp_path)
    doc_a, doc_b = tokens((1, 10), seed=1), tokens((1, 14), seed=2)
    segment_ids = jnp.asarray([[1] * 10 + [2] * 14])
    packed = our_logits(model, np.concatenate([doc_a, doc_b], axis=1), segment_ids=segment_ids)
    assert max_diff(packed[:, :10], hf_logits(hf, doc_a)) <= TOL
    assert max_diff(packed[:, 10:], hf_logits(hf, doc_b)) <= TOL
