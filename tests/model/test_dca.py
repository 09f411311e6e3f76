"""Dual Chunk Attention (model/dca.py): equal to a per-query NumPy implementation of the paper's position rules,
to plain attention when a document fits one chunk, cached decode == full forward, and greedy generation through the
sampler == full-forward argmax, all with DCA on (and YaRN where it matters)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from qwen3jax.convert.common import apply_overrides
from qwen3jax.model import KVCache, dca, decode_view
from qwen3jax.model.attention import attention_mask
from qwen3jax.model.config import DualChunk, ModelConfig, YarnScaling
from qwen3jax.model.layers import rope_cos_sin, rope_frequencies
from qwen3jax.model.transformer import positions_from_segments
from qwen3jax.sample import generate

from ..sample.helpers import greedy_by_full_forward
from .helpers import DENSE, build, forward, tokens

YARN = YarnScaling(factor=4.0, original_max_position_embeddings=8)
# Two documents packed in row 0, one long document in row 1: 24 tokens cross several chunks of every setting below.
SEGMENTS = np.array([[1] * 13 + [2] * 11, [1] * 24])


def _rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rotate(x_H, position, inv_freq, scale):
    """Half-split RoPE of one head vector at one position, times the YaRN cos/sin scale."""
    angles = position * inv_freq
    cos, sin = np.cos(angles) * scale, np.sin(angles) * scale
    x1, x2 = np.split(x_H, 2)
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin])


def _reference_positions(pq: int, pk: int, chunk_size: int, local_size: int) -> tuple[int, int]:
    """(query position, key position) of the DCA paper's rules for document positions pq >= pk: keys at their
    position within a chunk of s = chunk_size - local_size tokens; the query at its own in-chunk position for a key
    of its chunk, at s + its in-chunk position (at most chunk_size) for a key of the previous chunk, and at the last
    position of the successive block for a key of any earlier chunk."""
    s = chunk_size - local_size
    query_chunk, key_chunk = pq // s, pk // s
    if query_chunk == key_chunk:
        query = pq - query_chunk * s
    elif query_chunk == key_chunk + 1:
        query = min(s + pq - query_chunk * s, chunk_size)
    else:
        query = min(s + s - 1, chunk_size)
    return query, pk - key_chunk * s


def reference_attention(attn, x_BTD, segments_BT, dc: DualChunk, inv_freq, scale) -> np.ndarray:
    """Dual Chunk Attention of one layer, one query at a time, in float64 NumPy."""
    x = np.asarray(x_BTD, np.float64)
    wq, wk, wv, wo = (np.asarray(w[...], np.float64) for w in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj))
    eps = attn.q_norm.eps
    q = _rms(np.einsum("btd,dnh->btnh", x, wq), np.asarray(attn.q_norm.weight[...]), eps)
    k = _rms(np.einsum("btd,dkh->btkh", x, wk), np.asarray(attn.k_norm.weight[...]), eps)
    v = np.einsum("btd,dkh->btkh", x, wv)
    b, t, n, h = q.shape
    groups = n // k.shape[2]
    out = np.zeros((b, t, n, h))
    for row in range(b):
        segs = list(segments_BT[row])
        pos = [i - segs.index(segs[i]) for i in range(t)]  # each document counts from 0
        for i in range(t):
            keys = [j for j in range(i + 1) if segs[j] == segs[i]]
            for head in range(n):
                kv = head // groups
                scores = []
                for j in keys:
                    pq, pk = _reference_positions(pos[i], pos[j], dc.chunk_size, dc.local_size)
                    qr, kr = _rotate(q[row, i, head], pq, inv_freq, scale), _rotate(k[row, j, kv], pk, inv_freq, scale)
                    scores.append(qr @ kr / np.sqrt(h))
                p = np.exp(np.array(scores) - max(scores))
                out[row, i, head] = (p / p.sum()) @ v[row, keys, kv]
    return np.einsum("btnh,nhd->btd", out, wo)


def run_attention(attn, cfg: ModelConfig, x_BTD, segments_BT):
    """The first layer's attention as the decoder calls it for a packed batch (no cache)."""
    segments = jnp.asarray(segments_BT)
    positions = positions_from_segments(segments)
    inv_freq, scale = rope_frequencies(cfg)
    if cfg.dual_chunk is None:
        rope, mask = rope_cos_sin(positions, inv_freq, scale), attention_mask(segments, segments)
    else:
        rope = dca.dual_chunk_rope(cfg.dual_chunk, positions, inv_freq, scale)
        mask = dca.visibility(cfg.dual_chunk, attention_mask(segments, segments), positions, positions)
    return np.asarray(attn(x_BTD, rope, mask)[0])


@pytest.mark.parametrize(
    "chunk_size, local_size, yarn, block",
    [(6, 2, False, 8), (8, 5, True, 0), (5, 0, False, 0)],
    ids=["s4-w2-blocked", "s3-w5-yarn", "s5-w0"],
)
def test_attention_equals_numpy_reference(chunk_size, local_size, yarn, block):
    """GQA (4 query / 2 KV heads), packed documents, blocked and unblocked prefill; (8, 5) has 2s - 1 < chunk_size,
    (5, 0) no local window."""
    dc = DualChunk(chunk_size, local_size)
    cfg = DENSE.replace(dual_chunk=dc, rope_scaling=YARN if yarn else None, attention_block_size=block)
    attn = build(cfg).stacks[0]._per_layer()[0].self_attn
    x = np.random.default_rng(0).normal(size=(2, 24, cfg.hidden_size)).astype(np.float32)
    inv_freq, scale = rope_frequencies(cfg)

    got = run_attention(attn, cfg, jnp.asarray(x), SEGMENTS)
    want = reference_attention(attn, x, SEGMENTS, dc, inv_freq, scale)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)
    # The case is not trivial: plain RoPE over the same tokens gives another result.
    plain = run_attention(attn, cfg.replace(dual_chunk=None), jnp.asarray(x), SEGMENTS)
    assert np.abs(plain - want).max() > 1e-3


@pytest.mark.parametrize("yarn", [False, True], ids=["rope", "yarn"])
def test_equals_plain_attention_within_one_chunk(yarn):
    """Every document shorter than a chunk: the three positions collapse to the plain ones."""
    plain = DENSE.replace(rope_scaling=YARN if yarn else None)
    toks = tokens(plain, (2, 24))
    segments = jnp.asarray(SEGMENTS)
    model = build(plain)
    want = forward(model, toks, segment_ids=segments)
    model.config = plain.replace(dual_chunk=DualChunk(chunk_size=30, local_size=6))  # chunks of 24 tokens
    got = forward(model, toks, segment_ids=segments)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    model.config = plain.replace(dual_chunk=DualChunk(chunk_size=20, local_size=6))  # row 1 crosses a chunk
    assert np.abs(np.asarray(forward(model, toks, segment_ids=segments)) - np.asarray(want)).max() > 1e-4


CHUNKED = DENSE.replace(dual_chunk=DualChunk(chunk_size=5, local_size=2), rope_scaling=YARN)


@pytest.mark.parametrize("mode", ["scan", "view"])
def test_cached_decode_matches_full_forward(mode):
    """Left-padded prompts prefilled into the cache, then one token at a time across several chunks (of 3)."""
    cfg = CHUNKED.replace(scan_layers=mode == "scan")
    model = build(cfg)
    prompt_lens, width, steps = [7, 4], 7, 9
    full = tokens(cfg, (2, width + steps), seed=4)
    prompts = jnp.stack([jnp.where(jnp.arange(width) >= width - n, full[b, :width], 0) for b, n in enumerate(prompt_lens)])
    pad = jnp.array([[0] * (width - n) + [1] * n for n in prompt_lens])
    positions = jnp.maximum(jnp.cumsum(pad, axis=1) - 1, 0)

    step = nnx.jit(lambda m, t, p, s, c: m(t, positions=p, segment_ids=s, cache=c))
    logits, cache = step(model, prompts, positions, pad, KVCache.init(cfg, 2, width + steps))
    decoded = [logits[:, -1]]
    next_pos = positions[:, -1] + 1
    if mode == "view":
        step = nnx.jit(lambda m, t, p, s, c: decode_view(m)(t, positions=p, segment_ids=s, cache=c))
        cache = cache.per_layer()
    for i in range(steps - 1):
        logits, cache = step(model, full[:, width + i][:, None], next_pos[:, None], jnp.ones((2, 1), jnp.int32), cache)
        decoded.append(logits[:, -1])
        next_pos = next_pos + 1

    for b, n in enumerate(prompt_lens):
        seq = jnp.concatenate([full[b, width - n : width], full[b, width : width + steps - 1]])[None]
        reference = forward(model, seq)[0, n - 1 :]
        np.testing.assert_allclose(jnp.stack([d[b] for d in decoded]), reference, atol=1e-5, rtol=1e-5)


def test_greedy_generation_equals_full_forward_argmax():
    model = build(CHUNKED, seed=3)
    prompts = [[3, 17, 25, 9, 44, 8, 61], [100, 7]]
    result = generate(model, prompts, max_new_tokens=8)
    assert result.tokens == greedy_by_full_forward(model, prompts, 8)
    # DCA is on in the sampler: the same weights without it decode differently.
    model.config = CHUNKED.replace(dual_chunk=None)
    assert generate(model, prompts, max_new_tokens=8).tokens != result.tokens


def test_config_checks_and_round_trip():
    with pytest.raises(ValueError, match="local_size < chunk_size"):
        DualChunk(chunk_size=4, local_size=4)
    assert ModelConfig.from_dict(CHUNKED.to_dict()) == CHUNKED
    # An inference choice on unchanged weights: a loaded checkpoint takes it as an override.
    assert apply_overrides(DENSE, {"dual_chunk": CHUNKED.dual_chunk, "rope_scaling": YARN}) == CHUNKED
