"""Mixture-of-experts feed-forward: softmax router over all experts → top-k → optional renormalisation → dropless
dispatch to SwiGLU experts, through one of several interchangeable kernels.

Kernels share one signature, `kernel(x_SD, expert_SK, weight_SK, w_gate_EDF, w_up_EDF, w_down_EFD) -> y_SD`
(S tokens, K = top-k slots), and are proven equal to `naive` in tests:

- `naive`    every expert on every token, masked: E× the FLOPs; the test oracle.
- `sorted`   slots sorted by expert into blocks of `moe_block_size` rows, each block one expert; one batched matmul
             over every block of the static bound against per-block gathered weights. Portable and GSPMD-friendly.
- `looped`   the same blocks, but a loop over only the blocks in use, each a plain matmul against its expert's
             weights in place, with a hand-written backward loop: the CPU default (it skips the unused blocks of
             the static bound and the per-block weight copies that `sorted` makes). It indexes the expert weights
             with traced values, so on a mesh that shards experts GSPMD gathers them whole: use another kernel there.
- `ragged`   `jax.lax.ragged_dot` over expert groups (GPU/TPU; on XLA:CPU it lowers to a masked dense dot over every
             expert, so it is slow there).
- `megablox` the Pallas TPU grouped matmul (`interpret` mode off TPU, for testing only).

Routing statistics for the (global-batch) load-balancing loss come back with every call: per-expert counts of
routed slots and per-expert sums of router probabilities over the real (unmasked) tokens.

On a mesh with an `expert` axis, `moe_expert_exchange` (`auto`, `ragged` or `padded`) runs the kernel on each
device's own experts after an explicit all-to-all of the tokens (model/expert_parallel.py); the router and the
statistics are computed the same way either way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from qwen3jax.model.config import ModelConfig
from qwen3jax.model.expert_parallel import expert_axis_size, expert_parallel
from qwen3jax.model.layers import param
from qwen3jax.parallel.rules import constrain


class RoutingStats(NamedTuple):
    """Per-layer routing sums over the real tokens of one forward pass (add across micro-batches and shards)."""

    expert_counts: jax.Array  # [E] float32: routed (token, slot) pairs per expert
    router_prob_sums: jax.Array  # [E] float32: Σ_tokens softmax probability per expert
    num_tokens: jax.Array  # [] float32: real tokens counted
    # [] float32: (token, slot) pairs a capacity-limited expert exchange dropped (all tokens, padding included);
    # always 0 for dropless dispatch, see model/expert_parallel.py
    dropped_slots: jax.Array


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


def _combine_slots(y_RD, weight_SK):
    """Sum each token's K expert outputs (rows in slot order, slot = token * K + k) weighted by the router."""
    s, k = weight_SK.shape
    return jnp.einsum("SKD,SK->SD", y_RD.reshape(s, k, -1), weight_SK.astype(y_RD.dtype))


def _combine(y_sorted_RD, sort: _Sorted, weight_SK):
    """Put the sorted rows back in slot order (a scatter, as the block kernels do), then `_combine_slots`."""
    return _combine_slots(jnp.zeros_like(y_sorted_RD).at[sort.order_R].set(y_sorted_RD), weight_SK)


class _Blocks(NamedTuple):
    """Sorted slots padded to whole blocks per expert: block n holds slots of expert `block_expert_N[n]` only."""

    slot_NB: jax.Array  # [N, B] int32 flat slot (token * K + k) of each row; R (= S * K, out of range) for padding
    block_expert_N: jax.Array  # [N] int32; trailing unused blocks get a valid expert and only padding rows
    num_used: jax.Array  # [] int32 blocks that hold any slots (the first num_used of the N)


def _block_layout(sort: _Sorted, max_block_size: int) -> _Blocks:
    num_experts, num_slots = sort.group_sizes_E.shape[0], sort.order_R.shape[0]
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
    block_expert_N = jnp.minimum(jnp.searchsorted(block_end_E, jnp.arange(num_blocks), side="right"), num_experts - 1)
    # Row r of the padded layout ← sorted slot `slot_start + offset` when offset < group size, else padding.
    row = jnp.arange(num_blocks * block_size)
    row_expert = block_expert_N[row // block_size]
    offset = row - block_start_E[row_expert] * block_size
    valid = offset < sort.group_sizes_E[row_expert]
    slot = jnp.where(valid, sort.order_R[jnp.where(valid, slot_start_E[row_expert] + offset, 0)], num_slots)
    return _Blocks(slot.reshape(num_blocks, block_size), block_expert_N, block_end_E[-1])


def _gather_rows(rows_XD, index):
    """rows_XD[index] with out-of-range indices (padding rows) reading zeros."""
    return rows_XD.at[index].get(mode="fill", fill_value=0)


def make_sorted_kernel(max_block_size: int):
    """Block-sorted dispatch as one batched matmul over all N blocks of the static bound (used or not), each block
    against its expert's gathered weights: larger blocks mean fewer weight copies but more padding rows."""

    def kernel(x_SD, expert_SK, weight_SK, w_gate_EDF, w_up_EDF, w_down_EFD):
        top_k = expert_SK.shape[1]
        blocks = _block_layout(_sort_slots(expert_SK, w_gate_EDF.shape[0]), max_block_size)
        x_NBD, experts = _gather_rows(x_SD, blocks.slot_NB // top_k), blocks.block_expert_N
        h_NBF = _swiglu(
            jnp.einsum("NBD,NDF->NBF", x_NBD, w_gate_EDF[experts]),
            jnp.einsum("NBD,NDF->NBF", x_NBD, w_up_EDF[experts]),
        )
        y_NBD = jnp.einsum("NBF,NFD->NBD", h_NBF, w_down_EFD[experts])
        y_RD = jnp.zeros((expert_SK.size, x_SD.shape[1]), y_NBD.dtype).at[blocks.slot_NB].set(y_NBD, mode="drop")
        return _combine_slots(y_RD, weight_SK)

    return kernel


def make_looped_kernel(max_block_size: int):
    """Block-sorted dispatch as a loop over only the blocks in use, each gathering its rows and running plain
    matmuls against its expert's weights in place: no weight copies, no padded [N, B, D] copies of the tokens, and
    none of the static bound's unused blocks. Forward and backward are explicit loops (`_expert_blocks`)."""

    def kernel(x_SD, expert_SK, weight_SK, w_gate_EDF, w_up_EDF, w_down_EFD):
        blocks = _block_layout(_sort_slots(expert_SK, w_gate_EDF.shape[0]), max_block_size)
        y_RD = _expert_blocks(expert_SK.shape[1], x_SD, *blocks, w_gate_EDF, w_up_EDF, w_down_EFD)
        return _combine_slots(y_RD, weight_SK)

    return kernel


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _expert_blocks(top_k, x_SD, slot_NB, block_expert_N, num_used, w_gate_EDF, w_up_EDF, w_down_EFD):
    """[S * K, D] expert outputs in slot order: for each used block n, SwiGLU expert `block_expert_N[n]` applied
    to the tokens of its slots. A loop with a traced trip count cannot be reverse-differentiated by JAX, hence the
    hand-written backward."""
    return _expert_blocks_fwd(top_k, x_SD, slot_NB, block_expert_N, num_used, w_gate_EDF, w_up_EDF, w_down_EFD)[0]


def _expert_blocks_fwd(top_k, x_SD, slot_NB, block_expert_N, num_used, w_gate_EDF, w_up_EDF, w_down_EFD):
    num_blocks, block_size = slot_NB.shape
    hidden_NBF = jnp.zeros((num_blocks, block_size, w_gate_EDF.shape[2]), x_SD.dtype)

    def block(n, carry):
        y_RD, gate_NBF, up_NBF = carry
        expert, slot_B = block_expert_N[n], slot_NB[n]
        x_BD = _gather_rows(x_SD, slot_B // top_k)
        gate_BF, up_BF = x_BD @ w_gate_EDF[expert], x_BD @ w_up_EDF[expert]
        y_RD = y_RD.at[slot_B].set(_swiglu(gate_BF, up_BF) @ w_down_EFD[expert], mode="drop")
        return y_RD, gate_NBF.at[n].set(gate_BF), up_NBF.at[n].set(up_BF)

    y_RD = jnp.zeros((x_SD.shape[0] * top_k, x_SD.shape[1]), x_SD.dtype)
    y_RD, gate_NBF, up_NBF = jax.lax.fori_loop(0, num_used, block, (y_RD, hidden_NBF, hidden_NBF))
    return y_RD, (x_SD, slot_NB, block_expert_N, num_used, w_gate_EDF, w_up_EDF, w_down_EFD, gate_NBF, up_NBF)


def _expert_blocks_bwd(top_k, residuals, dy_RD):
    x_SD, slot_NB, block_expert_N, num_used, w_gate_EDF, w_up_EDF, w_down_EFD, gate_NBF, up_NBF = residuals
    f32 = jnp.float32

    def block(n, carry):
        dx_SD, dw_gate, dw_up, dw_down = carry
        expert, slot_B, gate_BF, up_BF = block_expert_N[n], slot_NB[n], gate_NBF[n], up_NBF[n]
        x_BD, dy_BD = _gather_rows(x_SD, slot_B // top_k), _gather_rows(dy_RD, slot_B)
        sigmoid_BF = jax.nn.sigmoid(gate_BF)
        silu_BF = gate_BF * sigmoid_BF
        dh_BF = dy_BD @ w_down_EFD[expert].T
        dup_BF = dh_BF * silu_BF
        dgate_BF = dh_BF * up_BF * (sigmoid_BF + silu_BF * (1 - sigmoid_BF))  # silu'(g) = σ(g) (1 + g (1 - σ(g)))
        dx_BD = dgate_BF @ w_gate_EDF[expert].T + dup_BF @ w_up_EDF[expert].T
        dx_SD = dx_SD.at[slot_B // top_k].add(dx_BD, mode="drop")
        # Weight gradients summed over blocks in fp32, whatever the compute dtype.
        dw_down = dw_down.at[expert].add(jnp.dot((silu_BF * up_BF).T, dy_BD, preferred_element_type=f32))
        dw_gate = dw_gate.at[expert].add(jnp.dot(x_BD.T, dgate_BF, preferred_element_type=f32))
        dw_up = dw_up.at[expert].add(jnp.dot(x_BD.T, dup_BF, preferred_element_type=f32))
        return dx_SD, dw_gate, dw_up, dw_down

    weights = (w_gate_EDF, w_up_EDF, w_down_EFD)
    init = (jnp.zeros_like(x_SD), *(jnp.zeros(w.shape, f32) for w in weights))
    dx_SD, *dw = jax.lax.fori_loop(0, num_used, block, init)
    # The slot table, block experts and their count are integers: no cotangent.
    return (dx_SD, None, None, None, *(g.astype(w.dtype) for g, w in zip(dw, weights)))


_expert_blocks.defvjp(_expert_blocks_fwd, _expert_blocks_bwd)


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
    blocked = {"sorted": make_sorted_kernel, "looped": make_looped_kernel}
    if name in blocked:
        return blocked[name](block_size)
    return {"naive": naive_kernel, "ragged": ragged_kernel, "megablox": megablox_kernel}[name]


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
        self.expert_exchange = cfg.moe_expert_exchange
        self.capacity_factor = cfg.moe_capacity_factor
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
        kernel = get_kernel(self.kernel_name, self.block_size)
        weights = (self.gate_proj, self.up_proj, self.down_proj)
        args = (x_SD, expert_SK, weight_SK.astype(dt), *(w[...].astype(dt) for w in weights))
        if self.expert_exchange != "none" and expert_axis_size() > 1:
            y_SD, dropped = expert_parallel(kernel, self.expert_exchange, self.capacity_factor, *args)
        else:
            y_SD, dropped = kernel(*args), jnp.zeros((), jnp.float32)
        mask_S = token_mask_BT.reshape(-1).astype(jnp.float32)
        stats = RoutingStats(
            expert_counts=jnp.einsum("SKE,S->E", jax.nn.one_hot(expert_SK, probs_SE.shape[-1]), mask_S),
            router_prob_sums=jnp.einsum("SE,S->E", probs_SE, mask_S),
            num_tokens=jnp.sum(mask_S),
            dropped_slots=dropped,
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
