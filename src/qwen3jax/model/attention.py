"""Grouped-query self-attention with QK-Norm, RoPE, fp32 softmax and causal + document (segment) masking."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from qwen3jax.model import dca
from qwen3jax.model.config import ModelConfig
from qwen3jax.model.context_parallel import ContextMask, context_parallel_attention
from qwen3jax.model.layers import RMSNorm, apply_rope, param, project
from qwen3jax.model.splash import SegmentMask, splash_attention
from qwen3jax.parallel.rules import constrain

# Large negative instead of -inf so fully masked rows (never produced by valid inputs) cannot create NaNs.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def attention_mask(q_segment_ids_BT: jax.Array, kv_segment_ids_BS: jax.Array, q_offset=0) -> jax.Array:
    """[B, T, S] boolean: query t (at key slot q_offset + t) may see key slot s iff s <= q_offset + t and both
    belong to the same document. Without a cache the keys are the queries (q_offset 0, S == T)."""
    t, s = q_segment_ids_BT.shape[1], kv_segment_ids_BS.shape[1]
    causal_TS = jnp.arange(s)[None, :] <= (q_offset + jnp.arange(t))[:, None]
    same_doc_BTS = q_segment_ids_BT[:, :, None] == kv_segment_ids_BS[:, None, :]
    return same_doc_BTS & causal_TS[None]


# Most query blocks per attention call: caps the unrolled work (and compile time) at long sequence lengths, where
# blocks then grow past `attention_block_size`; 16 blocks already skip 15/32 of the [T, T] logits.
MAX_QUERY_BLOCKS = 16


def causal_blocks(t: int, block_size: int) -> list[tuple[int, int]]:
    """[start, end) query ranges for causal attention over t tokens without a cache.

    Query rows [start, end) can only see keys before `end`, so each block attends to keys [0, end) and the fully
    masked upper triangle is never computed: about (n + 1) / 2n of the [T, T] work for n blocks. The result is the
    unblocked one exactly, since the skipped keys carry zero probability."""
    if block_size <= 0 or t <= block_size:
        return [(0, t)]
    size = max(block_size, -(-t // MAX_QUERY_BLOCKS))
    return [(start, min(start + size, t)) for start in range(0, t, size)]


class KVCache(NamedTuple):
    """Decode state: keys/values of every layer (stacked per layer group) for `max_len` slots.

    Slots are shared by all rows (row b's token at slot s has its own RoPE position), so left-padded prompts and
    per-row lengths need no special layout; empty and padding slots carry segment id 0 and are never attended to by
    real tokens.
    """

    # Per layer group: [L, B, K, S, H] in the compute dtype; slots next to each other per KV head, which is the
    # layout the attention matmuls read, so a decode step reads the cache in place instead of transposing it.
    # In the per-layer form (`per_layer`) a group is instead a tuple of L [B, K, S, H] arrays.
    k: tuple[jax.Array | tuple[jax.Array, ...], ...]
    v: tuple[jax.Array | tuple[jax.Array, ...], ...]
    segment_ids: jax.Array  # [B, S] int32, 0 = empty or padding
    positions: jax.Array  # [B, S] int32: each slot's RoPE position (Dual Chunk Attention chunks keys by it)
    index: jax.Array  # [] int32: next slot to write

    @classmethod
    def init(cls, cfg: ModelConfig, batch: int, max_len: int) -> "KVCache":
        def zeros(count):
            return jnp.zeros((count, batch, cfg.num_kv_heads, max_len, cfg.head_dim), jnp.dtype(cfg.dtype))

        counts = [count for _, count in cfg.layer_groups()]
        return cls(
            k=tuple(zeros(c) for c in counts),
            v=tuple(zeros(c) for c in counts),
            segment_ids=jnp.zeros((batch, max_len), jnp.int32),
            positions=jnp.zeros((batch, max_len), jnp.int32),
            index=jnp.zeros((), jnp.int32),
        )

    def per_layer(self) -> "KVCache":
        """The same cache with every layer's keys and values as arrays of their own, for a decode loop over a
        `decode_view` (unrolled layers): each layer then updates and reads its own loop-carried buffer in place,
        where slicing a stacked group makes XLA:CPU copy the layer's whole cache two or three times per step."""
        return self._replace(k=tuple(tuple(k) for k in self.k), v=tuple(tuple(v) for v in self.v))


def write_slots(group: jax.Array | tuple[jax.Array, ...], layer, new_BKTH: jax.Array, index):
    """Write a layer's new keys (or values) at slot `index` of its group's cache (stacked [L, B, K, S, H] with
    `layer` an index, or per-layer with `layer` a Python int). Returns (updated group, the layer's [B, K, S, H])."""
    new_BKTH = new_BKTH.astype(group[0].dtype)
    if isinstance(group, tuple):
        updated = jax.lax.dynamic_update_slice(group[layer], new_BKTH, (0, 0, index, 0))
        return group[:layer] + (updated,) + group[layer + 1 :], updated
    group = jax.lax.dynamic_update_slice(group, new_BKTH[None], (layer, 0, 0, index, 0))
    return group, group[layer]


class Attention(nnx.Module):
    """Qwen3 attention: q/k/v without bias → per-head RMSNorm on q and k → RoPE → GQA softmax(QK^T/sqrt(d))V → o."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, n, k, h = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = param(rngs, (d, n, h), ("embed", "q_heads", "head_dim"), cfg)
        self.k_proj = param(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), cfg)
        self.v_proj = param(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), cfg)
        self.o_proj = param(rngs, (n, h, d), ("q_heads", "head_dim", "embed"), cfg)
        # QK-Norm: one [head_dim] weight shared by all heads, applied after the head split and before RoPE.
        self.q_norm = RMSNorm(h, cfg)
        self.k_norm = RMSNorm(h, cfg)
        self.num_groups = n // k
        self.scale = h**-0.5
        self.dtype = jnp.dtype(cfg.dtype)
        self.block_size = cfg.attention_block_size

    def __call__(self, x_BTD, rope, mask_BTS, kv_cache=None, cache_index=None):
        """Attend over the current tokens, or, given `kv_cache=(k_group, v_group, layer)` (the whole layer group's
        cache, see `write_slots`, and this layer's index in it), write them at slot `cache_index` and attend over
        this layer's cache.
        Only the new slots are written, so a decode loop that carries the cache updates it in place.
        `rope` is the (cos, sin) pair of the tokens' positions, or a `dca.DualChunkRope` with `mask_BTS` then
        `dca.visibility`'s int8 array (Dual Chunk Attention, model/dca.py).
        Returns (output, updated cache or None)."""
        dt = self.dtype
        q_BTNH = project("BTD,DNH->BTNH", x_BTD, self.q_proj, dt)
        k_BTKH = project("BTD,DKH->BTKH", x_BTD, self.k_proj, dt)
        v_BTKH = project("BTD,DKH->BTKH", x_BTD, self.v_proj, dt)
        q_BTNH, k_BTKH = self.q_norm(q_BTNH), self.k_norm(k_BTKH)
        if isinstance(rope, dca.DualChunkRope):  # queries get a rotation axis: [B, T, N, 3, H]
            q_BTNH, k_BTKH = dca.rotate(q_BTNH, k_BTKH, rope)
        else:
            q_BTNH, k_BTKH = apply_rope(q_BTNH, *rope), apply_rope(k_BTKH, *rope)
        q_BTNH = constrain(q_BTNH, ("batch", "seq", "act_heads") + (None,) * (q_BTNH.ndim - 3))
        k_BTKH = constrain(k_BTKH, ("batch", "seq", "act_kv_heads", None))
        v_BTKH = constrain(v_BTKH, ("batch", "seq", "act_kv_heads", None))
        k_BKSH, v_BKSH = k_BTKH.transpose(0, 2, 1, 3), v_BTKH.transpose(0, 2, 1, 3)  # the matmuls' layout
        if kv_cache is not None:
            k_group, v_group, layer = kv_cache
            # From here on the keys are every cached slot of this layer: S of them, not T.
            k_group, k_BKSH = write_slots(k_group, layer, k_BKSH, cache_index)
            v_group, v_BKSH = write_slots(v_group, layer, v_BKSH, cache_index)
            kv_cache = (k_group, v_group, layer)

        if isinstance(mask_BTS, SegmentMask):  # the Pallas kernel masks from segment ids itself: model/splash.py
            out_BTNH = splash_attention((q_BTNH * self.scale).astype(dt), k_BTKH, v_BTKH, mask_BTS.segment_ids_BT)
            return project("BTNH,NHD->BTD", out_BTNH, self.o_proj, dt), kv_cache
        if isinstance(mask_BTS, ContextMask):  # sequence split over the `context` mesh axis: model/context_parallel.py
            out_BTNH = context_parallel_attention(q_BTNH, k_BTKH, v_BTKH, mask_BTS, self._attend)
            return project("BTNH,NHD->BTD", out_BTNH, self.o_proj, dt), kv_cache
        b, t, n = q_BTNH.shape[:3]  # keys may be longer (the cache): S
        # Query head i reads KV head i // groups: split N into (K, G) instead of repeating K and V.
        q_BTKGH = q_BTNH.reshape(b, t, n // self.num_groups, self.num_groups, *q_BTNH.shape[3:])
        if kv_cache is None:  # causal over the tokens themselves: query block [start, end) sees keys [0, end)
            blocks = [
                self._attend(q_BTKGH[:, a:z], k_BKSH[:, :, :z], v_BKSH[:, :, :z], mask_BTS[:, a:z, :z])
                for a, z in causal_blocks(t, self.block_size)
            ]
            out_BTKGH = jnp.concatenate(blocks, axis=1)
        else:
            out_BTKGH = self._attend(q_BTKGH, k_BKSH, v_BKSH, mask_BTS)
        out_BTNH = out_BTKGH.reshape(b, t, n, v_BKSH.shape[-1])
        return project("BTNH,NHD->BTD", out_BTNH, self.o_proj, dt), kv_cache

    def _attend(self, q_BTKGH, k_BKSH, v_BKSH, mask_BTS):
        """softmax(QK^T / sqrt(d), masked) V with fp32 logits and softmax."""
        if q_BTKGH.ndim == 6:  # Dual Chunk Attention: [B, T, K, G, 3, H] queries, see model/dca.py
            logits_BKGTS = dca.merged_logits(q_BTKGH, k_BKSH, mask_BTS) * self.scale
        else:
            logits_BKGTS = jnp.einsum(
                "BTKGH,BKSH->BKGTS", q_BTKGH, k_BKSH, preferred_element_type=jnp.float32
            ) * self.scale
        logits_BKGTS = jnp.where(mask_BTS[:, None, None], logits_BKGTS, _MASK_VALUE)
        probs_BKGTS = jax.nn.softmax(logits_BKGTS, axis=-1).astype(self.dtype)
        if q_BTKGH.shape[1] == 1:
            # One query per row (decoding): a matrix-vector product per row and KV head, which XLA:CPU runs faster
            # as a fused multiply-reduce (accumulated in fp32) than as a batched dot.
            products = probs_BKGTS[..., None].astype(jnp.float32) * v_BKSH[:, :, None, None].astype(jnp.float32)
            return products.sum(-2).astype(self.dtype).transpose(0, 3, 1, 2, 4)
        return jnp.einsum("BKGTS,BKSH->BTKGH", probs_BKGTS, v_BKSH)
