"""Sharded == unsharded: forward and gradients on 8 simulated CPU devices for several mesh shapes."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from qwen3jax.model import create_model
from qwen3jax.parallel import make_mesh

from .helpers import DENSE, MOE, loss_and_grads, tokens

MESHES = {
    "fsdp4_tensor2": {"fsdp": 4, "tensor": 2},
    "data2_expert4": {"data": 2, "expert": 4},
    "fsdp2_expert2_tensor2": {"fsdp": 2, "expert": 2, "tensor": 2},
    "data2_context2_tensor2": {"data": 2, "context": 2, "tensor": 2},
}


@pytest.fixture(scope="module")
def reference():
    return {
        name: loss_and_grads(create_model(cfg, seed=0), tokens(cfg, (8, 12)))
        for name, cfg in [("dense", DENSE), ("moe", MOE)]
    }


@pytest.mark.parametrize("mesh_name", sorted(MESHES))
@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_sharded_matches_single_device(reference, mesh_name, kind):
    cfg = {"dense": DENSE, "moe": MOE}[kind]
    mesh = make_mesh(MESHES[mesh_name])
    model = create_model(cfg, seed=0, mesh=mesh)
    with jax.set_mesh(mesh):
        value, grads = loss_and_grads(model, tokens(cfg, (8, 12)))
    ref_value, ref_grads = reference[kind]
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), grads, ref_grads)


def test_parameters_are_laid_out_by_the_rules():
    mesh = make_mesh({"fsdp": 2, "expert": 2, "tensor": 2})
    model = create_model(MOE, mesh=mesh)
    attn = model.stacks[0].layers.self_attn
    assert attn.q_proj[...].sharding.spec == P(None, ("fsdp", "expert"), "tensor", None)
    assert model.stacks[0].layers.mlp.gate_proj[...].sharding.spec == P(None, "expert", "fsdp", "tensor")
    assert model.embed_tokens[...].sharding.spec == P("tensor", ("fsdp", "expert"))
    # Each device stores only its shard.
    shard = model.stacks[0].layers.mlp.gate_proj[...].addressable_shards[0].data
    assert shard.shape == (1, MOE.num_experts // 2, MOE.hidden_size // 2, MOE.moe_intermediate_size // 2)


def test_mesh_rejects_shapes_that_do_not_fit():
    with pytest.raises(ValueError, match="needs 6 devices but 8 are available"):
        make_mesh({"data": 3, "tensor": 2})
    with pytest.raises(ValueError, match="does not divide 8"):
        make_mesh({"data": -1, "tensor": 3})
    with pytest.raises(ValueError, match="unknown mesh axes"):
        make_mesh({"model": 8})
