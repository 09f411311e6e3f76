"""Dual Chunk Attention (An et al. 2024, "Training-Free Long-Context Scaling of Large Language Models", arXiv
2402.17463): attention over several times the trained context length without training, as Qwen2.5-1M and Qwen3 run
it (together with YaRN) at inference. Switched on by `ModelConfig.dual_chunk` (see `config.DualChunk`).

A document is cut into chunks of `L = chunk_size - local_size` tokens, counted from its first token (the RoPE
positions p of the call, so packed documents and left-padded prompts are chunked on their own). Keys keep chunk-local
positions `p_k mod L`; each query carries three positions and scores each key with the one that matches where the
key lies:

  intra-chunk  (key in the query's chunk):      p_q mod L                       -> the exact distance p_q - p_k
  successive   (key in the chunk just before):  min(p_q mod L + L, chunk_size)  -> exact up to chunk_size, then capped
  inter-chunk  (key in any earlier chunk):      min(2L - 1, chunk_size)         -> one position for all far keys

so every distance RoPE sees lies in [0, chunk_size], the range seen in training, while nearby tokens keep exact
distances. The three score blocks are merged before one softmax per query. The positions are those of Qwen's
`dual_chunk_attention_config` (chunk_size, local_size), i.e. the paper's chunk size s = L and local window
w = local_size, with chunk_size playing the paper's c - 1.

The attention hook: `dual_chunk_rope` replaces the (cos, sin) tables, `visibility` replaces the boolean mask with
0 (hidden) / INTRA / SUCCESSIVE / INTER per (query, key), `rotate` gives queries a rotation axis R = 3 and
`merged_logits` picks each key's score from the rotation its chunk relation names.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from qwen3jax.model.config import DualChunk
from qwen3jax.model.layers import apply_rope, rope_cos_sin

# Values of the visibility array (0: the key is not visible to the query).
INTRA, SUCCESSIVE, INTER = 1, 2, 3


class DualChunkRope(NamedTuple):
    """RoPE tables of one call under Dual Chunk Attention (in place of the plain (cos, sin) pair)."""

    key_cos_BTh: jax.Array  # the call's tokens as keys, at chunk-local positions
    key_sin_BTh: jax.Array
    query_cos_BTRh: jax.Array  # the call's tokens as queries, at R = 3 positions: intra, successive, inter
    query_sin_BTRh: jax.Array


def key_positions(dc: DualChunk, positions: jax.Array) -> jax.Array:
    return positions % dc.chunk_len


def query_positions(dc: DualChunk, positions: jax.Array) -> jax.Array:
    """[..., 3]: the intra-chunk, successive-chunk and inter-chunk position of each query."""
    local = positions % dc.chunk_len
    successive = jnp.minimum(local + dc.chunk_len, dc.chunk_size)
    inter = jnp.full_like(local, min(2 * dc.chunk_len - 1, dc.chunk_size))
    return jnp.stack([local, successive, inter], axis=-1)


def dual_chunk_rope(dc: DualChunk, positions_BT: jax.Array, inv_freq: np.ndarray, scale: float) -> DualChunkRope:
    """The tables for tokens at document positions `positions_BT`, with the model's (YaRN-scaled or plain)
    frequencies and cos/sin scale."""
    key_cos, key_sin = rope_cos_sin(key_positions(dc, positions_BT), inv_freq, scale)
    query_cos, query_sin = rope_cos_sin(query_positions(dc, positions_BT), inv_freq, scale)
    return DualChunkRope(key_cos, key_sin, query_cos, query_sin)


def visibility(dc: DualChunk, mask_BTS: jax.Array, q_positions_BT: jax.Array, kv_positions_BS: jax.Array):
    """int8 [B, T, S]: 0 where `mask_BTS` hides the key, else INTRA / SUCCESSIVE / INTER by how many chunks the
    key's position lies before the query's."""
    q_chunk_BT, kv_chunk_BS = q_positions_BT // dc.chunk_len, kv_positions_BS // dc.chunk_len
    chunks_back_BTS = q_chunk_BT[:, :, None] - kv_chunk_BS[:, None, :]
    relation_BTS = jnp.clip(chunks_back_BTS, 0, 2) + INTRA
    return jnp.where(mask_BTS, relation_BTS, 0).astype(jnp.int8)


def rotate(q_BTNH: jax.Array, k_BTKH: jax.Array, rope: DualChunkRope) -> tuple[jax.Array, jax.Array]:
    """(queries [B, T, N, 3, H] at their three positions, keys [B, T, K, H] at their chunk-local position)."""
    q_rotations = [apply_rope(q_BTNH, rope.query_cos_BTRh[:, :, r], rope.query_sin_BTRh[:, :, r]) for r in range(3)]
    return jnp.stack(q_rotations, axis=3), apply_rope(k_BTKH, rope.key_cos_BTh, rope.key_sin_BTh)


def merged_logits(q_BTKGRH: jax.Array, k_BKSH: jax.Array, visible_BTS: jax.Array) -> jax.Array:
    """fp32 q·k [B, K, G, T, S] (unscaled), each key scored by the query rotation its chunk relation names; hidden
    keys get the inter-chunk score (the caller masks them)."""
    logits_BKGRTS = jnp.einsum("BTKGRH,BKSH->BKGRTS", q_BTKGRH, k_BKSH, preferred_element_type=jnp.float32)
    visible_B11TS = visible_BTS[:, None, None]
    intra, successive, inter = (logits_BKGRTS[:, :, :, r] for r in range(3))
    return jnp.where(visible_B11TS == INTRA, intra, jnp.where(visible_B11TS == SUCCESSIVE, successive, inter))
