"""Model-level equivalences: packed == separate, remat == none, scan == unrolled, blocked == unblocked attention,
the decode view == the model; routing statistics; presets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from qwen3jax.model import MODEL_CARD_PARAMS, ModelConfig, Qwen3, load_balance_loss, decode_view
from qwen3jax.model.attention import MAX_QUERY_BLOCKS, causal_blocks
from qwen3jax.model.layers import FEW_ROWS
from qwen3jax.model.transformer import positions_from_segments

from .helpers import DENSE, MOE, build, forward, loss_and_grads, tokens


@pytest.mark.parametrize("cfg", [DENSE, MOE], ids=["dense", "moe"])
def test_packed_equals_separate(cfg):
    model = build(cfg)
    doc_a, doc_b = tokens(cfg, (1, 7), seed=2), tokens(cfg, (1, 9), seed=3)
    pad = jnp.zeros((1, 4), jnp.int32)
    packed = jnp.concatenate([doc_a, doc_b, pad], axis=1)
    segments = jnp.array([[1] * 7 + [2] * 9 + [0] * 4])
    logits = forward(model, packed, segment_ids=segments)
    np.testing.assert_allclose(logits[:, :7], forward(model, doc_a), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(logits[:, 7:16], forward(model, doc_b), atol=1e-5, rtol=1e-5)


def test_positions_restart_per_document():
    seg = jnp.array([[1, 1, 1, 2, 2, 3, 0, 0]])
    np.testing.assert_array_equal(positions_from_segments(seg), [[0, 1, 2, 0, 1, 0, 0, 1]])


@pytest.mark.parametrize("cfg", [DENSE, MOE], ids=["dense", "moe"])
@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch"])
def test_remat_matches_no_remat(cfg, policy):
    toks = tokens(cfg, (2, 12))
    ref_value, ref_grads = loss_and_grads(build(cfg), toks)
    value, grads = loss_and_grads(build(cfg.replace(remat=policy)), toks)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads, ref_grads)


@pytest.mark.parametrize("cfg", [DENSE, MOE], ids=["dense", "moe"])
def test_scan_matches_unrolled(cfg):
    toks = tokens(cfg, (2, 12))
    ref_value, ref_grads = loss_and_grads(build(cfg), toks)
    value, grads = loss_and_grads(build(cfg.replace(scan_layers=False)), toks)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads, ref_grads)


@pytest.mark.parametrize("cfg", [DENSE, MOE], ids=["dense", "moe"])
def test_blocked_causal_attention_matches_unblocked(cfg):
    # 14 tokens in blocks of 4 (the last one ragged), two packed documents and padding: every mask case crosses blocks.
    toks = tokens(cfg, (2, 14))
    segments = jnp.array([[1] * 6 + [2] * 6 + [0] * 2, [1] * 14])
    ref_value, ref_grads = loss_and_grads(build(cfg.replace(attention_block_size=0)), toks, segment_ids=segments)
    value, grads = loss_and_grads(build(cfg.replace(attention_block_size=4)), toks, segment_ids=segments)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads, ref_grads)


def test_causal_blocks_cover_the_sequence_and_cap_their_number():
    assert causal_blocks(14, 4) == [(0, 4), (4, 8), (8, 12), (12, 14)]
    assert causal_blocks(100, 128) == causal_blocks(100, 0) == [(0, 100)]
    long = causal_blocks(32768, 128)
    assert len(long) == MAX_QUERY_BLOCKS and long[0] == (0, 2048) and long[-1][1] == 32768


@pytest.mark.parametrize("cfg,tied", [(DENSE, False), (DENSE, True), (MOE, False)], ids=["untied", "tied", "moe"])
@pytest.mark.parametrize("shape", [(2, 9), (3, 30)], ids=["few_rows", "many_rows"])  # either side of FEW_ROWS
def test_decode_view_matches_model(cfg, tied, shape):
    """Both the weight-first (few rows) and the rows-first products of the view's output-major weights."""
    assert 2 * 9 <= FEW_ROWS < 3 * 30
    cfg = cfg.replace(tie_word_embeddings=tied)
    model = build(cfg)
    toks = tokens(cfg, shape)
    view_logits = nnx.jit(lambda m, t: decode_view(m)(t))(model, toks)
    np.testing.assert_allclose(view_logits, forward(model, toks), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("view", [False, True], ids=["model", "decode_view"])
def test_head_slices_concatenate_to_the_logits(tied, view):
    """`head(hidden, n)`: consecutive vocabulary slices (uneven: 128 = 43 + 43 + 42), also over a decode view's
    output-major head, whose concatenation is the model's logits."""
    cfg = DENSE.replace(tie_word_embeddings=tied)
    model = build(cfg)
    toks = tokens(cfg, (2, 9))

    def sliced(m, t):
        m = decode_view(m) if view else m
        return m.head(m(t, head=False), 3)

    slices = nnx.jit(sliced)(model, toks)
    assert [s.shape[-1] for s in slices] == [43, 43, 42] and all(s.dtype == jnp.float32 for s in slices)
    np.testing.assert_allclose(jnp.concatenate(slices, -1), forward(model, toks), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad", [0, DENSE.vocab_size + 1])
def test_head_rejects_slice_counts_outside_the_vocabulary(bad):
    model = build(DENSE)
    with pytest.raises(ValueError, match=r"vocab_slices must be in \[1, vocab_size=128\]"):
        model.head(jnp.zeros((1, 2, DENSE.hidden_size)), bad)


def test_layer_groups_follow_hf_sparsity_rule():
    cfg = MOE.replace(num_layers=6, decoder_sparse_step=2, mlp_only_layers=(3,))
    assert [cfg.layer_is_moe(i) for i in range(6)] == [False, True, False, False, False, True]
    assert cfg.layer_groups() == [(False, 1), (True, 1), (False, 3), (True, 1)]
    model = build(cfg)
    assert [s.count for s in model.stacks] == [1, 1, 3, 1]
    logits, stats = model(tokens(cfg, (1, 5)), return_stats=True)
    assert stats.expert_counts.shape == (2, cfg.num_experts)


def test_routing_stats_count_real_tokens_only():
    model = build(MOE)
    toks = tokens(MOE, (2, 10))
    segments = jnp.array([[1] * 10, [1] * 6 + [0] * 4])
    _, stats = model(toks, segment_ids=segments, return_stats=True)
    real = 16
    np.testing.assert_allclose(stats.num_tokens, real)
    np.testing.assert_allclose(stats.expert_counts.sum(-1), real * MOE.num_experts_per_tok)
    np.testing.assert_allclose(stats.router_prob_sums.sum(-1), real, rtol=1e-5)
    # HF pools layers: f and P are means over (layer, token) pairs.
    pairs = real * MOE.num_moe_layers
    f, p = stats.expert_counts.sum(0) / pairs, stats.router_prob_sums.sum(0) / pairs
    np.testing.assert_allclose(load_balance_loss(stats), MOE.num_experts * jnp.sum(f * p), rtol=1e-6)


def test_dense_model_returns_empty_stats():
    _, stats = build(DENSE)(tokens(DENSE, (1, 4)), return_stats=True)
    assert stats.expert_counts.shape == (0, 0)


def test_bf16_compute_returns_fp32_logits_close_to_fp32():
    toks = tokens(DENSE, (2, 8))
    ref = build(DENSE)(toks)
    low = build(DENSE.replace(dtype="bfloat16"))(toks)
    assert low.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(low - ref))) < 0.05 * float(jnp.max(jnp.abs(ref)))


@pytest.mark.parametrize("name", sorted(MODEL_CARD_PARAMS))
def test_preset_parameter_counts_match_model_card(name):
    cfg = ModelConfig.from_preset(name)
    abstract = nnx.eval_shape(lambda: Qwen3(cfg, rngs=nnx.Rngs(0)))
    tree_total = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    counts = cfg.param_counts()
    assert tree_total == counts["total"]  # the formula describes the real module tree
    for kind, card in MODEL_CARD_PARAMS[name].items():
        # Cards print 2-3 significant digits ("1.7B" for 1.72B): allow 1% or one unit of the card's last digit, if larger.
        unit = 10 ** (np.floor(np.log10(card)) - (len(f"{card / 1e9:g}".replace(".", "").lstrip("0")) - 1))
        assert abs(counts[kind] - card) <= max(0.01 * card, unit), (kind, counts[kind], card)


def test_unknown_preset_suggests_nearest():
    with pytest.raises(KeyError, match="qwen3_8b"):
        ModelConfig.from_preset("qwen3-8b")


def test_invalid_config_is_rejected_early():
    with pytest.raises(ValueError, match="num_kv_heads"):
        DENSE.replace(num_heads=6, num_kv_heads=4)
    with pytest.raises(ValueError, match="remat"):
        DENSE.replace(remat="sometimes")
