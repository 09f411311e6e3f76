"""Context parallelism: long sequences split over the `context` mesh axis, attention over all-gathered keys and
values, in a load-balanced causal layout.

Why all-gathered keys/values and not ring attention: with grouped-query attention the keys and values are a small
fraction of the activations (Qwen3: 4-8 KV heads against 16-64 query heads), so gathering them costs little
memory and one collective per layer (and its reduce-scatter in the backward), it puts no ordering constraint on the
document (segment) mask, and the per-device attention stays an ordinary masked softmax, so a local kernel
(the blocked XLA attention here, or a Pallas kernel later) is used as is. Ring attention overlaps its transfers
with the blocks' compute but needs an online-softmax over steps, a hand-written backward pass and per-step mask
slices; its advantage only shows when keys/values are as large as the queries (multi-head attention).

Load balance: a causal row's work grows with its index, so contiguous chunks would leave the first device nearly
idle and the last doing most of the work. The sequence is cut into 2·cp chunks and device c holds chunks c and
2·cp−1−c (`to_balanced` / `from_balanced`, one reverse-and-concatenate each way, so GSPMD moves only the half
that changes device). The model applies the layout once to its inputs (tokens, positions, segment ids and the
original index of every slot) and undoes it on its final hidden states; everything between is per-token except
attention, whose mask uses the original indices: same document and key index ≤ query index. Since device c's
first chunk (c < cp) can only see the first half of the sequence, it attends to the first cp chunks only and its
second chunk to all of them: 3/4 of the [T/cp, T] logits per device, the same on every device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from qwen3jax.parallel.rules import logical_to_spec


class ContextMask(NamedTuple):
    """Stands in for the [B, T, T] mask under context parallelism (the model's arrays in the balanced layout)."""

    segment_ids_BT: jax.Array  # document ids, 0 = padding
    index_BT: jax.Array  # each slot's index in the original sequence (for causality)


def context_axis_size() -> int:
    """Size of the `context` axis of the mesh set with `jax.set_mesh` (1 without a mesh)."""
    mesh = jax.sharding.get_abstract_mesh()
    return 1 if mesh.empty else dict(mesh.shape).get("context", 1)


def check_length(t: int, cp: int) -> None:
    if t % (2 * cp):
        raise ValueError(f"context parallelism over context={cp} devices needs the sequence length to be a multiple of "
                         f"2 × {cp} = {2 * cp} (load-balanced chunks), got {t}")  # fmt: skip


def to_balanced(x, cp: int):
    """[B, T, ...] in original order → the balanced layout: chunks (0, 2cp−1, 1, 2cp−2, ...), so that a contiguous
    split over cp devices gives device c the chunks c and 2cp−1−c."""
    b, t = x.shape[:2]
    chunks = x.reshape(b, 2, cp, t // (2 * cp), *x.shape[2:])
    first, second = chunks[:, 0], jnp.flip(chunks[:, 1], axis=1)  # [B, cp, L, ...] each
    return jnp.stack([first, second], axis=2).reshape(x.shape)


def from_balanced(x, cp: int):
    """The inverse of `to_balanced`."""
    b, t = x.shape[:2]
    pairs = x.reshape(b, cp, 2, t // (2 * cp), *x.shape[2:])
    first, second = pairs[:, :, 0], jnp.flip(pairs[:, :, 1], axis=1)
    return jnp.concatenate([first, second], axis=1).reshape(x.shape)


def balanced_inputs(tokens_BT, positions_BT, segment_ids_BT, cp: int):
    """The model's per-token inputs in the balanced layout, and the `ContextMask` attention uses."""
    check_length(tokens_BT.shape[1], cp)
    index_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1], dtype=jnp.int32), tokens_BT.shape)
    tokens_BT, positions_BT, segment_ids_BT, index_BT = (
        to_balanced(a, cp) for a in (tokens_BT, positions_BT, segment_ids_BT, index_BT)
    )
    return tokens_BT, positions_BT, segment_ids_BT, ContextMask(segment_ids_BT, index_BT)


def context_parallel_attention(q_BTNH, k_BTKH, v_BTKH, mask: ContextMask, attend: Callable) -> jax.Array:
    """Attention of every device's query chunks over the keys/values all-gathered from the `context` axis.

    `attend(q_BTKGH, k_BKSH, v_BKSH, mask_BTS) -> out_BTKGH` is the local attention core. Arrays are in the
    balanced layout and sharded over `context` on their sequence dim; returns the output [B, T, N, H] likewise."""
    mesh_shape = dict(jax.sharding.get_abstract_mesh().shape)
    cp = mesh_shape["context"]
    q_spec = logical_to_spec(("batch", "seq", "act_heads", None), q_BTNH.shape, mesh_shape)
    kv_spec = logical_to_spec(("batch", "seq", "act_kv_heads", None), k_BTKH.shape, mesh_shape)
    if kv_spec[2] is None:  # KV heads replicated: keep all query heads together so that the GQA groups line up
        q_spec = P(q_spec[0], q_spec[1], None, None)
    if q_spec[1] != "context":
        raise ValueError(f"context parallelism needs the sequence dim sharded over `context` alone, got {q_spec}")
    ids_spec = P(q_spec[0], q_spec[1])

    def local(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT, index_BT):
        def gather(a):  # the whole sequence, back in its original order
            return from_balanced(jax.lax.all_gather(a, "context", axis=1, tiled=True), cp)

        k_all, v_all, seg_all, idx_all = (gather(a) for a in (k_BTKH, v_BTKH, segment_ids_BT, index_BT))
        b, t_local, n, h = q_BTNH.shape
        q_BTKGH = q_BTNH.reshape(b, t_local, k_BTKH.shape[2], n // k_BTKH.shape[2], h)
        half, total = t_local // 2, k_all.shape[1]
        outputs = []
        # The first local chunk (original chunk c < cp) sees only the first half of the keys; the second all.
        for rows, keys in ((slice(0, half), total // 2), (slice(half, t_local), total)):
            visible_BTS = (segment_ids_BT[:, rows, None] == seg_all[:, None, :keys]) & (
                idx_all[:, None, :keys] <= index_BT[:, rows, None]
            )
            k_BKSH = k_all[:, :keys].transpose(0, 2, 1, 3)
            v_BKSH = v_all[:, :keys].transpose(0, 2, 1, 3)
            outputs.append(attend(q_BTKGH[:, rows], k_BKSH, v_BKSH, visible_BTS))
        return jnp.concatenate(outputs, axis=1).reshape(b, t_local, n, h)

    return jax.shard_map(local, in_specs=(q_spec, kv_spec, kv_spec, ids_spec, ids_spec), out_specs=q_spec,
                         check_vma=False)(q_BTNH, k_BTKH, v_BTKH, *mask)  # fmt: skip
