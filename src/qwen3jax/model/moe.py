"""Mixture-of-experts feed-forward: softmax router over all experts → top-k → optional renormalisation → dropless
dispatch to SwiGLU experts, through one of several interchangeable kernels.

Kernels share one signature, `kernel(x_SD, expert_SK, weight_SK, w_gate_EDF, w_up_EDF, w_down_EFD) -> y_SD`
(S tokens, K = top-k slots), and are proven equal to `naive` in tests:

- `naive`    every expert on every token, masked: E× the FLOPs; the test oracle.
- `sorted`   slots sorted by expert into blocks of `moe_block_size` rows, each block one expert; a batched matmul
             against per-block gathered weights. Portable, dropless, ~1.1× the useful FLOPs: the CPU default.
- `ragged`   `jax.lax.ragged_dot` over expert groups (GPU/TPU; on XLA:CPU it lowers to a masked dense dot, ~10× slow).
- `megablox` the Pallas TPU grouped matmul (`interpret` mode off TPU, for testing only).

Routing statistics for the (global-batch) load-balancing loss come back with every call: per-expert counts of
routed slots and per-expert sums of router probabilities over the real (unmasked) tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from qwen3jax.model.config import ModelConfig
from qwen3jax.model.layers import param
from qwen3jax.parallel.rules import constrain


class RoutingStats(NamedTuple):
    """Per-layer routing sums over the real tokens of one forward pass (add across micro-batches and shards)."""

    expert_counts: jax.Array  # [E] float32: routed (token, slot) pairs per expert
    router_prob_sums: jax.Array  # [E] float32: Σ_tokens softmax probability per expert
    num_tokens: jax.Array  # [] float32: real tokens counted


def _swiglu(gate, up):
    return jax.nn.silu(gate) * up


# ---- kernels -------------------------------------------------------------------------------------------------------


def naive_kernel(x_SD, expert_SK, weight_SK, w_gate_EDF, w_up_EDF, w_down_EFD):
    num_experts = w_gate_EDF.shape[0]
    # combine_SE[s, e]: total weight token s gives expert e (0 when not routed there).
    combine_SE = jnp.einsum("SK,SKE->SE", weight_SK, jax.nn.one_hot(expert_SK, num_experts, dtype=weight_SK.dtype))
    h_ESF = _swiglu(
        jnp.einsum("SD,EDF->ESF", x_SD, w_gate_EDF), jnp.einsum("SD,EDF->ESF", x_SD, w_up_EDF)
    )
    y_ESD = jnp.einsum("ESF,EFD->ESD", h_ESF, w_down_EFD)
    return jnp.einsum("ESD,SE->SD", y_ESD, combine_SE.astype(y_ESD.dtype))


class _Sorted(NamedTuple):
    """Slots (token, k) sorted by expert: the permutation and group sizes every grouped kernel needs."""

    order_R: jax.Array  # sorted position → flat slot index (slot = token * K + k)
    token_R: jax.Array  # sorted position → token index
    group_sizes_E: jax.Array  # int32 slots per expert


def _sort_slots(expert_SK: jax.Array, num_experts: int) -> _Sorted:
    flat = expert_SK.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    group_sizes = jnp.bincount(flat, length=num_experts).astype(jnp.int32)
    return _Sorted(order, order // expert_SK.shape[1], group_sizes)


def _combine(y_sorted_RD, sort: _Sorted, weight_SK):
    """Undo the sort and sum each token's K expert outputs weighted by the router."""
    s, k = weight_SK.shape
    y_slots_RD = y_sorted_RD[jnp.argsort(sort.order_R)]
    return jnp.einsum("SKD,SK->SD", y_slots_RD.reshape(s, k, -1), weight_SK.astype(y_slots_RD.dtype))


def make_sorted_kernel(max_block_size: int):
    """Block-sorted dispatch: every expert's slots are padded to whole blocks; block b runs expert `block_expert[b]`.

    Each block gathers its expert's weights, so larger blocks mean fewer weight copies but more padding rows."""

    def kernel(x_SD, expert_SK, weight_SK, w_gate_EDF, w_up_EDF, w_down_EFD):
        num_experts = w_gate_EDF.shape[0]
        num_slots = expert_SK.size
        sort = _sort_slots(expert_SK, num_experts)
        # Blocks no larger than an average expert's group (a power of two, at least 8 rows): bigger ones only add
        # padding, which on a small batch would outweigh the real rows.
        average_group = max(num_slots // num_experts, 1)
        block_size = min(max_block_size, max(8, 1 << (average_group - 1).bit_length()))
        # Static bound on padded rows: each expert wastes < block_size rows.
        num_blocks = -(-(num_slots + num_experts * (block_size - 1)) // block_size)
        blocks_E = -(-sort.group_sizes_E // block_size)
        block_end_E = jnp.cumsum(blocks_E)
        block_start_E = block_end_E - blocks_E
        slot_start_E = jnp.cumsum(sort.group_sizes_E) - sort.group_sizes_E
        # Which expert owns each block; trailing unused blocks get a valid expert and all-invalid rows.
        block_expert_N = jnp.minimum(
            jnp.searchsorted(block_end_E, jnp.arange(num_blocks), side="right"), num_experts - 1
        )
        # Row r of the padded layout ← sorted slot `slot_start + offset` when offset < group size, else padding.
        row = jnp.arange(num_blocks * block_size)
        row_expert = block_expert_N[row // block_size]
        offset = row - block_start_E[row_expert] * block_size
        valid = offset < sort.group_sizes_E[row_expert]
        sorted_pos = jnp.where(valid, slot_start_E[row_expert] + offset, 0)
        x_rows = jnp.where(valid[:, None], x_SD[sort.token_R[sorted_pos]], 0).reshape(num_blocks, block_size, -1)

        h_NBF = _swiglu(
            jnp.einsum("NBD,NDF->NBF", x_rows, w_gate_EDF[block_expert_N]),
            jnp.einsum("NBD,NDF->NBF", x_rows, w_up_EDF[block_expert_N]),
        )
        y_rows = jnp.einsum("NBF,NFD->NBD", h_NBF, w_down_EFD[block_expert_N]).reshape(num_blocks * block_size, -1)
        # Sorted slot j sits at padded row block_start[e]*B + (j - slot_start[e]) for its expert e.
        expert_R = jnp.repeat(jnp.arange(num_experts), sort.group_sizes_E, total_repeat_length=num_slots)
        row_of_sorted = block_start_E[expert_R] * block_size + jnp.arange(num_slots) - slot_start_E[expert_R]
        return _combine(y_rows[row_of_sorted], sort, weight_SK)

    return kernel


def ragged_kernel(x_SD, expert_SK, weight_SK, w_gate_EDF, w_up_EDF, w_down_EFD):
    sort = _sort_slots(expert_SK, w_gate_EDF.shape[0])
    x_RD = x_SD[sort.token_R]
    gs = sort.group_sizes_E
    h_RF = _swiglu(jax.lax.ragged_dot(x_RD, w_gate_EDF, gs), jax.lax.ragged_dot(x_RD, w_up_EDF, gs))
    return _combine(jax.lax.ragged_dot(h_RF, w_down_EFD, gs), sort, weight_SK)


def megablox_kernel(x_SD, expert_SK, weight_SK, w_gate_EDF, w_up_EDF, w_down_EFD):
    from jax.experimental.pallas.ops.tpu.megablox import ops as megablox  # TPU-only kernels; import on use

    backend = jax.default_backend()
    if backend not in ("tpu", "cpu"):
        raise ValueError(f"moe_kernel='megablox' is a TPU kernel (interpreted on CPU for tests); on {backend} use 'ragged'")
    interpret = backend == "cpu"
    sort = _sort_slots(expert_SK, w_gate_EDF.shape[0])
    num_slots = expert_SK.size
    # gmm tiles rows by 128 (or fewer): pad the sorted rows; padding rows belong to no group and stay zero.
    tile_m = min(128, _round_up(num_slots, 8))
    padded = _round_up(num_slots, tile_m)
    x_RD = jnp.pad(x_SD[sort.token_R], ((0, padded - num_slots), (0, 0)))

    def gmm(lhs, rhs):
        tiling = (tile_m, min(128, lhs.shape[1]), min(128, rhs.shape[2]))
        return megablox.gmm(lhs, rhs, sort.group_sizes_E, lhs.dtype, tiling, None, None, False, interpret)

    h_RF = _swiglu(gmm(x_RD, w_gate_EDF), gmm(x_RD, w_up_EDF))
    return _combine(gmm(h_RF, w_down_EFD)[:num_slots], sort, weight_SK)


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def get_kernel(name: str, block_size: int) -> Callable:
    kernels = {"naive": naive_kernel, "ragged": ragged_kernel, "megablox": megablox_kernel}
    return make_sorted_kernel(block_size) if name == "sorted" else kernels[name]


# ---- layer ---------------------------------------------------------------------------------------------------------


class MoE(nnx.Module):
    """Qwen3-MoE sparse block (HF `Qwen3MoeSparseMoeBlock`): no shared expert, no token dropping."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, f, e = cfg.hidden_size, cfg.moe_intermediate_size, cfg.num_experts
        self.router = param(rngs, (d, e), ("embed", None), cfg)
        self.gate_proj = param(rngs, (e, d, f), ("experts", "embed", "expert_mlp"), cfg)
        self.up_proj = param(rngs, (e, d, f), ("experts", "embed", "expert_mlp"), cfg)
        self.down_proj = param(rngs, (e, f, d), ("experts", "expert_mlp", "embed"), cfg)
        self.top_k = cfg.num_experts_per_tok
        self.norm_topk_prob = cfg.norm_topk_prob
        # Names, not functions, as attributes: they are static graph data and must compare equal across layers.
        self.kernel_name = cfg.moe_kernel
        self.block_size = cfg.moe_block_size
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x_BTD: jax.Array, token_mask_BT: jax.Array) -> tuple[jax.Array, RoutingStats]:
        b, t, d = x_BTD.shape
        dt = self.dtype
        x_SD = constrain(x_BTD.reshape(b * t, d), ("tokens", None))
        # Router in fp32: the softmax over all experts and the top-k choice are precision-sensitive.
        logits_SE = jnp.einsum("SD,DE->SE", x_SD.astype(jnp.float32), self.router[...].astype(jnp.float32))
        probs_SE = jax.nn.softmax(logits_SE, axis=-1)
        weight_SK, expert_SK = jax.lax.top_k(probs_SE, self.top_k)
        if self.norm_topk_prob:
            weight_SK = weight_SK / jnp.sum(weight_SK, axis=-1, keepdims=True)
        y_SD = get_kernel(self.kernel_name, self.block_size)(
            x_SD,
            expert_SK,
            weight_SK.astype(dt),
            self.gate_proj[...].astype(dt),
            self.up_proj[...].astype(dt),
            self.down_proj[...].astype(dt),
        )
        mask_S = token_mask_BT.reshape(-1).astype(jnp.float32)
        stats = RoutingStats(
            expert_counts=jnp.einsum("SKE,S->E", jax.nn.one_hot(expert_SK, probs_SE.shape[-1]), mask_S),
            router_prob_sums=jnp.einsum("SE,S->E", probs_SE, mask_S),
            num_tokens=jnp.sum(mask_S),
        )
        return y_SD.reshape(b, t, d), stats


def load_balance_loss(stats: RoutingStats) -> jax.Array:
    """HF/Switch auxiliary loss `E · Σ_e f_e · P_e`, pooled over layers, from summed statistics.

    `stats` fields carry a leading layer axis ([L, E] and [L]). Summing the statistics of every micro-batch and
    data-parallel shard before calling this gives the global-batch variant Qwen3 trained with (SPEC §2); calling it
    per micro-batch gives HF's local variant. Layers are pooled as HF pools them: counts and probabilities are summed
    over layers before the product.
    """
    num_experts = stats.expert_counts.shape[-1]
    total = jnp.sum(stats.num_tokens)
    f_E = jnp.sum(stats.expert_counts, axis=0) / total
    p_E = jnp.sum(stats.router_prob_sums, axis=0) / total
    return num_experts * jnp.sum(f_E * p_E)
