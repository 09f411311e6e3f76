"""Causal document attention through the Pallas TPU splash-attention kernel (`jax.experimental.pallas.ops.tpu`).

The kernel builds the causal mask tile by tile, skips the tiles above the diagonal, and masks documents from the
segment ids, so no [B, T, T] mask or logits ever exist in HBM: what lets 32K-token sequences train. Mosaic kernels
cannot be partitioned by GSPMD, so the kernel runs inside `shard_map`: each device attends over its own rows
(`batch` axes) and, when the `tensor` axis divides the KV heads, its own heads; the sequence stays whole per device.

`attention_kernel` in `ModelConfig`: "xla" (attention.py's einsum attention), "splash" (this kernel; on CPU it
runs in Pallas interpret mode, for tests only), or "auto" (splash when compiling for TPU, else xla). A model
called with a `SegmentMask` instead of a dense mask attends here (attention.py).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from qwen3jax.parallel.rules import logical_to_spec

KERNELS = ("xla", "splash", "auto")
# Query/key tile of the kernel: the largest of these that divides the sequence.
_BLOCKS = (512, 256, 128)


class SegmentMask(NamedTuple):
    """Causal attention within documents, given by segment ids alone (instead of a dense [B, T, S] mask)."""

    segment_ids_BT: jax.Array


def resolve_kernel(name: str, platform: str) -> str:
    """'auto' → 'splash' for TPU programs, 'xla' otherwise; other names unchanged."""
    if name not in KERNELS:
        raise ValueError(f"attention_kernel={name!r} is not one of {KERNELS}")
    if name == "auto":
        return "splash" if platform == "tpu" else "xla"
    return name


def target_platform() -> str:
    """The platform the program being traced is for: the mesh's devices (TPU when compiling for a TPU slice from
    a CPU host), else the default backend."""
    device = getattr(jax.sharding.get_abstract_mesh(), "abstract_device", None)
    return device.platform if device is not None else jax.default_backend()


def splash_attention(q_BTNH: jax.Array, k_BTKH: jax.Array, v_BTKH: jax.Array, segment_ids_BT: jax.Array) -> jax.Array:
    """softmax(q k^T) v per query head (q already scaled), causal within each document; GQA heads share K/V heads.
    Runs per device in `shard_map` over the mesh set with `jax.set_mesh` (none: the whole batch on one device)."""
    t = q_BTNH.shape[1]
    block = next((b for b in _BLOCKS if t % b == 0), None)
    if block is None:
        raise ValueError(f"attention_kernel='splash' needs a sequence length that is a multiple of {_BLOCKS[-1]}, "
                         f"got {t}; use attention_kernel='xla'")  # fmt: skip
    interpret = target_platform() != "tpu"  # the Pallas interpreter: CPU tests
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return _attend_local(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT, block=block, interpret=interpret)
    sizes = dict(mesh.shape)
    kv_spec = logical_to_spec(("batch", None, "act_kv_heads", None), k_BTKH.shape, sizes)
    batch_spec = kv_spec[0]
    # Query heads follow their KV heads: with K/t KV heads per device, the device's N/t query heads are exactly
    # the ones that read them (query head i reads KV head i // (N/K)).
    q_spec = PartitionSpec(batch_spec, None, kv_spec[2], None)
    local = functools.partial(_attend_local, block=block, interpret=interpret)
    return jax.shard_map(
        local,
        in_specs=(q_spec, kv_spec, kv_spec, PartitionSpec(batch_spec, None)),
        out_specs=q_spec,
        check_vma=False,
    )(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT)


def _attend_local(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT, *, block: int, interpret: bool):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    _, t, n, _ = q_BTNH.shape
    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                              block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)  # fmt: skip
    kernel = splash.make_splash_mha(
        masks.MultiHeadMask([masks.CausalMask((t, t))] * n), block_sizes=sizes, head_shards=1, q_seq_shards=1,
        interpret=interpret,
    )  # fmt: skip

    def one_row(q_NTH, k_KTH, v_KTH, segment_ids_T):
        return kernel(q_NTH, k_KTH, v_KTH, segment_ids=splash.SegmentIds(q=segment_ids_T, kv=segment_ids_T))

    heads_first = (0, 2, 1, 3)
    out_BNTH = jax.vmap(one_row)(
        q_BTNH.transpose(heads_first), k_BTKH.transpose(heads_first), v_BTKH.transpose(heads_first),
        segment_ids_BT.astype(jnp.int32),
    )  # fmt: skip
    return out_BNTH.transpose(heads_first)
