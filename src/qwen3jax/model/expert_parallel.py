"""Expert parallelism: MoE experts sharded over the `expert` mesh axis, tokens sent to their experts' devices with
an explicit all-to-all inside `shard_map` (`ModelConfig.moe_expert_exchange`).

Without it GSPMD decides how a dispatch kernel over expert-sharded weights is partitioned, which for the sorted
kernels means gathering every expert's weights or every token on every device. Here each device of an expert group
(the devices that differ only in their `expert` coordinate) holds E/ep experts and its own share of the tokens:

1. the router, top-k and routing statistics stay outside, in GSPMD (so statistics and the balance loss are the same
   sums as on one device);
2. each device sorts its (token, slot) pairs by expert, which also sorts them by the device owning the expert,
   and all-gathers the per-expert counts over the expert axis (E integers per device): every device then knows
   every offset, so no expert ids travel with the rows;
3. it sends each device its rows, runs its local experts on what it receives with the configured dispatch kernel
   (`moe_kernel`; the weights are local arrays here, so `looped` is fine), sends the outputs back, and combines each
   token's K outputs with its router weights. Expert weights sharded over `tensor` (their FFN dim) give partial
   down-projections, summed over `tensor` before the return trip; an `fsdp`-sharded hidden dim is all-gathered on
   entry (ZeRO-3) by `shard_map`'s input specs, and its gradient reduce-scattered on the way out.

Exchanges (S_l tokens per device, K = top-k, E_l experts per device, ep expert ranks):

- `ragged`   `jax.lax.ragged_all_to_all` sends exactly the routed rows. Its receive buffer has a static size: the
             worst case ep · S_l · min(E_l, K) rows (every sender routing all its tokens to this device), so it is
             dropless. TPU/GPU only: XLA:CPU does not implement the collective.
- `padded`   `jax.lax.all_to_all` of a [ep, C, D] buffer: C rows per (sender, receiver) pair. With
             `moe_capacity_factor=0` (the default) C = S_l · min(E_l, K), the most one sender can route to one
             receiver, so nothing is ever dropped (dropless, at ep× the rows in memory and traffic). With a factor
             f > 0, C = ceil(f · S_l · K / ep) (f = 1: the average load of a pair): a pair's overflow — the sender's
             slots for the receiver's highest-numbered experts beyond C — is dropped (the token is combined as if
             that slot's expert had returned zero) and counted in `RoutingStats.dropped_slots`.
- `auto`     `ragged` on TPU/GPU, `padded` on CPU.

On a mesh without an expert axis (or with `moe_expert_exchange="none"`) the kernel runs on the global arrays as
before.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from qwen3jax.parallel.rules import logical_to_spec


def resolve_exchange(name: str) -> str:
    """The exchange `name` runs as on the mesh's platform (`auto` → `ragged` on accelerators, `padded` on CPU).

    The platform of the mesh set with `jax.set_mesh`, not the default backend: a program compiled ahead of time
    for TPU devices on a CPU host gets the TPU exchange."""
    if name != "auto":
        return name
    device = getattr(jax.sharding.get_abstract_mesh(), "abstract_device", None)
    platform = device.platform if device is not None else jax.default_backend()
    return "padded" if platform == "cpu" else "ragged"


def padded_capacity(tokens_per_device: int, top_k: int, num_experts: int, expert_ranks: int, factor: float) -> int:
    """Rows per (sender, receiver) pair of the padded exchange; `factor` 0 is the dropless worst case."""
    experts_per_rank = num_experts // expert_ranks
    worst = tokens_per_device * min(experts_per_rank, top_k)
    if not factor:
        return worst
    return max(1, min(worst, math.ceil(factor * tokens_per_device * top_k / expert_ranks)))


def describe_exchange(exchange: str, capacity_factor: float, tokens_per_device: int, top_k: int, num_experts: int,
                      expert_ranks: int) -> str:  # fmt: skip
    """One log line: which exchange runs and, for the padded one, its capacity and whether it can drop."""
    exchange = resolve_exchange(exchange)
    if exchange == "ragged":
        return f"MoE expert exchange: ragged all-to-all over {expert_ranks} expert ranks (dropless)"
    capacity = padded_capacity(tokens_per_device, top_k, num_experts, expert_ranks, capacity_factor)
    worst = padded_capacity(tokens_per_device, top_k, num_experts, expert_ranks, 0)
    drops = "dropless" if capacity == worst else f"overflow beyond it dropped and counted (dropless needs {worst})"
    return (f"MoE expert exchange: padded all-to-all over {expert_ranks} expert ranks, capacity {capacity} rows per "
            f"device pair for {tokens_per_device} tokens per device, {drops}")  # fmt: skip


def expert_axis_size() -> int:
    """Size of the `expert` axis of the mesh set with `jax.set_mesh` (1 without a mesh)."""
    mesh = jax.sharding.get_abstract_mesh()
    return 1 if mesh.empty else dict(mesh.shape).get("expert", 1)


def expert_parallel(kernel: Callable, exchange: str, capacity_factor: float, x_SD, expert_SK, weight_SK,
                    w_gate_EDF, w_up_EDF, w_down_EFD) -> tuple[jax.Array, jax.Array]:  # fmt: skip
    """`kernel`'s result (y_SD, see moe.py) computed with experts sharded over the `expert` mesh axis, and the
    number of (token, slot) pairs dropped by a capacity-limited padded exchange (0 when dropless)."""
    mesh_shape = dict(jax.sharding.get_abstract_mesh().shape)
    ep = mesh_shape["expert"]
    num_experts, top_k = w_gate_EDF.shape[0], expert_SK.shape[1]
    if num_experts % ep:
        raise ValueError(f"expert parallelism needs num_experts={num_experts} to be a multiple of the mesh's expert "
                         f"axis ({ep})")  # fmt: skip
    exchange = resolve_exchange(exchange)
    token_axes = logical_to_spec(("tokens", None), x_SD.shape, mesh_shape)[0]
    up_spec = logical_to_spec(("experts", None, "expert_mlp"), w_gate_EDF.shape, mesh_shape)
    down_spec = P(up_spec[0], up_spec[2], None)  # the FFN dim sharded as in gate/up, the hidden dim whole
    ffn_axes = up_spec[2]
    tokens_per_device = x_SD.shape[0] // math.prod(mesh_shape[a] for a in _names(token_axes))
    factor = capacity_factor if exchange == "padded" else 0  # the ragged buffer is always the dropless worst case
    capacity = padded_capacity(tokens_per_device, top_k, num_experts, ep, factor)

    def local(x_SD, expert_SK, weight_SK, w_gate, w_up, w_down):
        def experts(rows_RD, expert_R):
            """Local experts on received rows (expert id E_l marks an empty row): one slot per row, weight 1."""
            ones = jnp.ones((rows_RD.shape[0], 1), rows_RD.dtype)
            y = kernel(rows_RD, expert_R[:, None], ones, w_gate, w_up, w_down)
            return jax.lax.psum(y, ffn_axes) if ffn_axes else y

        plan = _plan(expert_SK, num_experts, ep)
        exchange_fn = _ragged_exchange if exchange == "ragged" else _padded_exchange
        y_sorted_RD, dropped = exchange_fn(plan, x_SD[plan.token_R], experts, capacity)
        y_RD = jnp.zeros_like(y_sorted_RD).at[plan.order_R].set(y_sorted_RD)
        s, k = weight_SK.shape
        y_SD = jnp.einsum("SKD,SK->SD", y_RD.reshape(s, k, -1), weight_SK.astype(y_RD.dtype))
        return y_SD, dropped[None]

    y_SD, dropped = jax.shard_map(
        local,
        in_specs=(P(token_axes, None), P(token_axes, None), P(token_axes, None), up_spec, up_spec, down_spec),
        out_specs=(P(token_axes, None), P(token_axes)),
        # The dispatch kernels start their loops from fresh zeros, which the varying-axes type check rejects.
        check_vma=False,
    )(x_SD, expert_SK, weight_SK, w_gate_EDF, w_up_EDF, w_down_EFD)
    return y_SD, jnp.sum(dropped).astype(jnp.float32)


def _names(axes) -> tuple[str, ...]:
    return () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)


class _Plan(NamedTuple):
    """One rank's (token, slot) pairs sorted by expert — hence by the rank owning the expert — and the routed
    counts of every rank of its expert group."""

    order_R: jax.Array  # sorted position → flat slot (token * K + k)
    token_R: jax.Array  # sorted position → local token
    dest_R: jax.Array  # sorted position → expert rank owning its expert
    sizes: jax.Array  # [sender, receiver] rows each rank sends each rank
    recv_counts: jax.Array  # [sender, local expert] rows this rank receives for each of its experts
    me: jax.Array  # this rank's index on the expert axis


def _plan(expert_SK, num_experts: int, ep: int) -> _Plan:
    local_experts = num_experts // ep
    flat = expert_SK.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    counts_all = jax.lax.all_gather(jnp.bincount(flat, length=num_experts).astype(jnp.int32), "expert")  # [ep, E]
    me = jax.lax.axis_index("expert")
    return _Plan(
        order_R=order,
        token_R=order // expert_SK.shape[1],
        dest_R=flat[order] // local_experts,
        sizes=counts_all.reshape(ep, ep, local_experts).sum(2),
        recv_counts=jax.lax.dynamic_slice_in_dim(counts_all, me * local_experts, local_experts, axis=1),
        me=me,
    )


def _group_ids(group_sizes, num_rows: int):
    """For rows 0..num_rows-1 laid out as consecutive groups of `group_sizes`: each row's group, and whether it is
    inside one (rows past the last group are empty)."""
    ends = jnp.cumsum(group_sizes)
    rows = jnp.arange(num_rows)
    return jnp.searchsorted(ends, rows, side="right"), rows < ends[-1]


def _exclusive_cumsum(x, axis=0):
    return jnp.cumsum(x, axis=axis) - x


def _ragged_exchange(plan: _Plan, x_RD, experts, capacity: int):
    """Send exactly the routed rows; receive them sender-major into a buffer of ep x `capacity` (worst-case) rows."""
    ep, local_experts = plan.recv_counts.shape
    send_sizes, recv_sizes = plan.sizes[plan.me], plan.sizes[:, plan.me]
    input_offsets, recv_offsets = _exclusive_cumsum(send_sizes), _exclusive_cumsum(recv_sizes)
    # Where this rank's rows land in each receiver's buffer: after the rows of every lower-ranked sender.
    output_offsets = _exclusive_cumsum(plan.sizes, axis=0)[plan.me]
    buffer = jnp.zeros((ep * capacity, x_RD.shape[1]), x_RD.dtype)
    received = jax.lax.ragged_all_to_all(x_RD, buffer, input_offsets, send_sizes, output_offsets, recv_sizes,
                                         axis_name="expert")  # fmt: skip
    group, valid = _group_ids(plan.recv_counts.reshape(-1), buffer.shape[0])  # groups: (sender, local expert)
    y = experts(received, jnp.where(valid, group % local_experts, local_experts))
    # The return trip: each sender's rows go back to where they were in its sorted rows.
    back_offsets = _exclusive_cumsum(plan.sizes, axis=1)[:, plan.me]
    y_sorted = jax.lax.ragged_all_to_all(y, jnp.zeros_like(x_RD), recv_offsets, recv_sizes, back_offsets, send_sizes,
                                         axis_name="expert")  # fmt: skip
    return y_sorted, jnp.zeros((), jnp.int32)


def _padded_exchange(plan: _Plan, x_RD, experts, capacity: int):
    """all_to_all of [ep, capacity] rows per rank; rows beyond a pair's capacity are dropped and counted."""
    ep, local_experts = plan.recv_counts.shape
    send_sizes = plan.sizes[plan.me]
    slot_in_pair = jnp.arange(x_RD.shape[0]) - _exclusive_cumsum(send_sizes)[plan.dest_R]
    kept = slot_in_pair < capacity
    index = (plan.dest_R, jnp.where(kept, slot_in_pair, capacity))  # out of range: dropped by the scatter
    send = jnp.zeros((ep, capacity, x_RD.shape[1]), x_RD.dtype).at[index].set(x_RD, mode="drop")
    received = jax.lax.all_to_all(send, "expert", 0, 0)  # [sender, capacity, D]
    # Each sender's rows for this rank, by local expert, cut at `capacity` (what it dropped was its tail).
    group, valid = jax.vmap(lambda sizes: _group_ids(sizes, capacity))(plan.recv_counts)
    y = experts(received.reshape(ep * capacity, -1), jnp.where(valid, group, local_experts).reshape(-1))
    back = jax.lax.all_to_all(y.reshape(ep, capacity, -1), "expert", 0, 0)  # [receiver, capacity, D]
    y_sorted = back.at[index].get(mode="fill", fill_value=0)
    return y_sorted, jnp.sum(jnp.maximum(send_sizes - capacity, 0))
