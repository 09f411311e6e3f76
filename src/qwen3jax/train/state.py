"""Creation of the train state, the one place that builds it: parameters in their sharded layout (the rules of
`parallel/rules.py`), the optimizer and its sharded moments, step and RNG. `abstract=True` gives the same state as
sharded ShapeDtypeStructs without allocating anything (ahead-of-time compilation of pod-size configs)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from qwen3jax.model import ModelConfig, Qwen3, create_model
from qwen3jax.parallel.rules import state_shardings
from qwen3jax.train.optim import make_optimizer, opt_state_shardings
from qwen3jax.train.step import TrainState


def _with_sharding(tree, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)


def create_train_state(
    model_cfg: ModelConfig, optim_cfg, total_steps: int, mesh: Mesh, *, seed: int = 0, abstract: bool = False
):
    """(TrainState, lr schedule) for a fresh run: weights initialised from `seed`, optimizer moments zero."""
    replicated = NamedSharding(mesh, PartitionSpec())
    if abstract:
        with jax.set_mesh(mesh):
            graphdef, params_state = nnx.split(nnx.eval_shape(lambda: Qwen3(model_cfg, rngs=nnx.Rngs(seed))), nnx.Param)
            shardings = nnx.to_pure_dict(state_shardings(params_state, mesh))
        params = _with_sharding(nnx.to_pure_dict(params_state), shardings)
    else:
        graphdef, params_state = nnx.split(create_model(model_cfg, seed=seed, mesh=mesh), nnx.Param)
        params = nnx.to_pure_dict(params_state)
        shardings = jax.tree.map(lambda x: x.sharding, params)
    tx, schedule = make_optimizer(optim_cfg, params_state, total_steps)
    opt_shardings = opt_state_shardings(tx, params, shardings, replicated)
    if abstract:
        opt_state = _with_sharding(jax.eval_shape(tx.init, params), opt_shardings)
        step = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
        key = jax.eval_shape(lambda: jax.random.key(seed))
        rng = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=replicated)
    else:
        with jax.set_mesh(mesh):
            opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
        # Made by a jitted function, not device_put: a mesh over several processes' devices is not all addressable.
        step, rng = jax.jit(lambda: (jnp.zeros((), jnp.int32), jax.random.key(seed)), out_shardings=replicated)()
    return TrainState(step, params, opt_state, rng, graphdef, tx), schedule
