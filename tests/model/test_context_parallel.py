"""Context parallelism (model/context_parallel.py): the load-balanced layout is the documented chunk order, and a
whole tiny model (dense, and MoE with expert parallelism) with packed documents gives the unsharded model's
values and gradients with its sequence split over the `context` axis."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3jax.model import create_model
from qwen3jax.model.context_parallel import from_balanced, to_balanced
from qwen3jax.parallel import make_mesh
from qwen3jax.parallel.rules import logical_to_spec

from .helpers import DENSE, MOE, loss_and_grads, tokens

B, T = 4, 32


def test_balanced_layout_is_the_mirrored_chunk_order():
    cp = 4
    x = jnp.arange(2 * T).reshape(2, T)
    chunk = T // (2 * cp)
    order = [c for pair in zip(range(cp), range(2 * cp - 1, cp - 1, -1)) for c in pair]  # 0, 7, 1, 6, 2, 5, 3, 4
    want = np.concatenate([np.arange(c * chunk, (c + 1) * chunk) for c in order])
    np.testing.assert_array_equal(to_balanced(x, cp)[0], want)
    np.testing.assert_array_equal(from_balanced(to_balanced(x, cp), cp), x)


def test_sequence_activations_map_to_the_context_axis():
    mesh_shape = {"data": 2, "context": 4}
    assert logical_to_spec(("batch", "seq", "act_embed"), (4, 32, 16), mesh_shape) == jax.P("data", "context", None)
    # Flattened tokens inside the MoE layer keep the batch axes then `context` (batch-major flattening).
    assert logical_to_spec(("tokens", None), (128, 16), mesh_shape) == jax.P(("data", "context"), None)


def _packed():
    """Rows of several documents and trailing padding, with positions restarting per document."""
    idx = np.arange(T)[None]
    cuts = np.array([[5, 19], [11, 27], [3, 8], [16, 31]])
    ends = np.array([32, 29, 32, 24])[:, None]
    segments = (1 + (idx >= cuts[:, :1]) + (idx >= cuts[:, 1:])) * (idx < ends)
    return jnp.asarray(segments, jnp.int32)


CASES = {
    "dense-context4_data2": (DENSE, {"context": 4, "data": 2}),
    "dense-context2_fsdp2_tensor2": (DENSE, {"context": 2, "fsdp": 2, "tensor": 2}),
    "moe_ep-context2_expert4": (MOE.replace(moe_expert_exchange="padded"), {"context": 2, "expert": 4}),
}


@pytest.fixture(scope="module")
def references():
    return {kind: loss_and_grads(create_model(cfg, seed=0), tokens(cfg, (B, T)), segment_ids=_packed())
            for kind, cfg in (("dense", DENSE), ("moe", MOE))}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_context_parallel_model_matches_unsharded(references, case):
    cfg, mesh_spec = CASES[case]
    mesh = make_mesh(mesh_spec)
    model = create_model(cfg, seed=0, mesh=mesh)
    with jax.set_mesh(mesh):
        value, grads = loss_and_grads(model, tokens(cfg, (B, T)), segment_ids=_packed())
    ref_value, ref_grads = references["moe" if cfg.is_moe else "dense"]
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), grads, ref_grads)


def test_sequence_length_must_split_into_balanced_chunks():
    mesh = make_mesh({"context": 4, "data": 2})
    model = create_model(DENSE, seed=0, mesh=mesh)
    with jax.set_mesh(mesh), pytest.raises(ValueError, match="multiple of 2 × 4 = 8"):
        model(tokens(DENSE, (B, 20)))
