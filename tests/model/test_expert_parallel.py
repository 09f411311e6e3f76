"""Expert parallelism (model/expert_parallel.py): the MoE layer with experts sharded over the `expert` axis and an
explicit all-to-all equals the unsharded layer with the naive oracle kernel — values, gradients and routing
statistics — on simulated 8-device meshes; a capacity-limited padded exchange drops exactly the slots its
documented rule names, and counts them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding

from qwen3jax.model.expert_parallel import expert_parallel, padded_capacity
from qwen3jax.model.moe import MoE, get_kernel
from qwen3jax.parallel import make_mesh
from qwen3jax.parallel.rules import logical_to_spec

from .helpers import MOE

CFG = MOE.replace(moe_kernel="looped", moe_block_size=8)
B, T = 8, 12  # 96 tokens: 12 per device on 8 token shards


def emulated_ragged_all_to_all(operand, output, input_offsets, send_sizes, output_offsets, recv_sizes, *, axis_name):
    """`jax.lax.ragged_all_to_all` as its documentation defines it, from all_gathers (XLA:CPU has no kernel for the
    real one): row r of the result is sender i's row `input_offsets_i[me] + r - output_offsets_i[me]` when r lies
    in [output_offsets_i[me], output_offsets_i[me] + send_sizes_i[me])."""
    me = jax.lax.axis_index(axis_name)
    rows_all, in_all, size_all, out_all = (
        jax.lax.all_gather(a, axis_name) for a in (operand, input_offsets, send_sizes, output_offsets)
    )
    start, size, source = out_all[:, me], size_all[:, me], in_all[:, me]  # [senders]
    r = jnp.arange(output.shape[0])
    inside = (r[None] >= start[:, None]) & (r[None] < (start + size)[:, None])  # [senders, rows]
    src_row = jnp.clip(source[:, None] + r[None] - start[:, None], 0, operand.shape[0] - 1)
    picked = jnp.take_along_axis(rows_all, src_row[..., None], axis=1)  # [senders, rows, D]
    received = jnp.sum(jnp.where(inside[..., None], picked, 0), axis=0)
    return jnp.where(inside.any(0)[:, None], received, output)


MESHES = {
    "expert8": {"expert": 8},
    "expert4_data2": {"expert": 4, "data": 2},
    "expert2_fsdp4": {"expert": 2, "fsdp": 4},
    "expert2_fsdp2_tensor2": {"expert": 2, "fsdp": 2, "tensor": 2},
}


def _layer_inputs():
    x = jax.random.normal(jax.random.key(3), (B, T, CFG.hidden_size))
    mask = jnp.arange(T)[None] < jnp.array([12, 9, 12, 5, 12, 12, 7, 12])[:, None]  # padding is not counted
    return x, mask


def _loss_and_grads(layer, x, mask):
    def loss(layer, x):
        y, stats = layer(x, mask)
        return jnp.sum(jnp.sin(y)) + jnp.sum(stats.router_prob_sums**2), stats

    (value, stats), (g_layer, g_x) = nnx.jit(nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True))(layer, x)
    return value, stats, nnx.to_pure_dict(nnx.state(g_layer)), g_x


@pytest.fixture(scope="module")
def oracle():
    layer = MoE(CFG.replace(moe_kernel="naive"), rngs=nnx.Rngs(0))
    return _loss_and_grads(layer, *_layer_inputs())


# The ragged exchange runs through the emulation above on two meshes (XLA:CPU cannot run the real collective).
CASES = [(name, "padded") for name in sorted(MESHES)]
CASES += [("expert4_data2", "ragged"), ("expert2_fsdp2_tensor2", "ragged")]


@pytest.mark.parametrize("mesh_name,exchange", CASES)
def test_expert_parallel_layer_matches_the_unsharded_oracle(oracle, monkeypatch, mesh_name, exchange):
    if exchange == "ragged":
        monkeypatch.setattr(jax.lax, "ragged_all_to_all", emulated_ragged_all_to_all)
    mesh = make_mesh(MESHES[mesh_name])
    with jax.set_mesh(mesh):
        layer = MoE(CFG.replace(moe_expert_exchange=exchange), rngs=nnx.Rngs(0))
        state = nnx.state(layer)
        # Parameters laid out by the rules (experts over `expert`, hidden dim over fsdp, FFN dim over tensor).
        nnx.update(layer, jax.tree.map(lambda v: jax.device_put(v, _sharding(mesh, v)), state,
                                       is_leaf=lambda v: isinstance(v, nnx.Variable)))  # fmt: skip
        x, mask = _layer_inputs()
        x = jax.device_put(x, NamedSharding(mesh, logical_to_spec(("batch", "seq", None), x.shape, dict(mesh.shape))))
        value, stats, g_layer, g_x = _loss_and_grads(layer, x, mask)
    ref_value, ref_stats, ref_g_layer, ref_g_x = oracle
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for got, want in zip(stats, ref_stats):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert float(stats.dropped_slots) == 0.0  # dropless
    # Summation order differs from the oracle's (which multiplies every token by every expert): fp32 noise of a few
    # 1e-6 on gradients of order 0.1-1.
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5 * float(np.abs(b).max()))  # noqa: E731
    close(g_x, ref_g_x)
    jax.tree.map(close, g_layer, ref_g_layer)


def _sharding(mesh, variable):
    return NamedSharding(mesh, logical_to_spec(variable.get_metadata()["axes"], variable.shape, dict(mesh.shape)))


def test_skewed_routing_padded_capacity_drops_what_the_rule_says(monkeypatch):
    """Every token routed to experts 0 and 1 (both on expert rank 0 of an expert=4 × data=2 mesh): the dropless
    capacity computes everything; capacity factor 1 keeps, per sender, only its first C slots sorted by
    (expert, token) and drops the rest, which a NumPy model of the rule predicts slot by slot."""
    mesh = make_mesh({"expert": 4, "data": 2})
    s, k, e, d, f = 64, 2, 8, 16, 24  # 8 tokens per device
    keys = jax.random.split(jax.random.key(0), 5)
    x = jax.random.normal(keys[0], (s, d))
    expert = jnp.tile(jnp.array([[0, 1]], jnp.int32), (s, 1))
    weight = jax.nn.softmax(jax.random.normal(keys[1], (s, k)))
    params = [jax.random.normal(kk, shape) * 0.2 for kk, shape in zip(keys[2:], [(e, d, f), (e, d, f), (e, f, d)])]
    naive = get_kernel("naive", 0)

    def run(factor):
        fn = jax.jit(lambda *a: expert_parallel(get_kernel("looped", 8), "padded", factor, *a))
        with jax.set_mesh(mesh):
            return fn(x, expert, weight, *params)

    y, dropped = run(0.0)
    np.testing.assert_allclose(y, naive(x, expert, weight, *params), rtol=1e-5, atol=1e-6)
    assert float(dropped) == 0

    per_device, ranks = s // 8, 4
    capacity = padded_capacity(per_device, k, e, ranks, 1.0)
    assert capacity == per_device * k // ranks == 4
    # NumPy model: each device's 8 tokens (blocks in mesh order), slots sorted by (expert, token); the first
    # `capacity` of them (all bound for rank 0) are kept.
    kept = np.zeros((s, k), bool)
    for block in range(8):
        tokens = np.arange(block * per_device, (block + 1) * per_device)
        slots = sorted(((int(expert[t, j]), t, j) for t in tokens for j in range(k)))
        for _, t, j in slots[:capacity]:
            kept[t, j] = True
    y, dropped = run(1.0)
    assert float(dropped) == (~kept).sum() == 8 * (per_device * k - capacity)
    np.testing.assert_allclose(y, naive(x, expert, weight * kept, *params), rtol=1e-5, atol=1e-6)


def test_expert_count_must_divide_the_expert_axis():
    mesh = make_mesh({"expert": 8})
    layer_cfg = CFG.replace(num_experts=4, num_experts_per_tok=2, moe_expert_exchange="padded")
    with jax.set_mesh(mesh):
        layer = MoE(layer_cfg, rngs=nnx.Rngs(0))
        with pytest.raises(ValueError, match="num_experts=4 to be a multiple of the mesh's expert axis"):
            layer(*_layer_inputs())
