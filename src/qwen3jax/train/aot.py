"""Ahead-of-time compilation of an experiment's train step from shapes alone (no weights are allocated), so that
shape and sharding bugs of pod-size configs surface on a laptop or in CI (tests/train/test_aot.py): build a
`Trainer` for the config on a simulated CPU mesh (XLA_FLAGS=--xla_force_host_platform_device_count=N) and call
`compile_train_step(trainer)`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from qwen3jax.model import Qwen3
from qwen3jax.parallel.rules import state_shardings
from qwen3jax.train.loop import Trainer
from qwen3jax.train.optim import make_optimizer, opt_state_shardings
from qwen3jax.train.step import TrainState


def abstract_train_state(trainer: Trainer) -> TrainState:
    """The train state as sharded ShapeDtypeStructs, laid out exactly as `Trainer.init_state` would place it."""
    c, mesh = trainer.config, trainer.mesh
    with jax.set_mesh(mesh):
        graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Qwen3(trainer.model_cfg, rngs=nnx.Rngs(0))), nnx.Param)
        tx, trainer.schedule = make_optimizer(c.optim, abstract, c.steps)
        shardings = nnx.to_pure_dict(state_shardings(abstract, mesh))
        params = jax.tree.map(
            lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s), nnx.to_pure_dict(abstract), shardings
        )
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        jax.eval_shape(tx.init, params),
        opt_state_shardings(tx, params, shardings, replicated),
    )
    step = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
    key = jax.eval_shape(lambda: jax.random.key(0))
    rng = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=replicated)
    return TrainState(step, params, opt_state, rng, graphdef, tx)


def compile_train_step(trainer: Trainer):
    """Lower and compile the experiment's train step for its full global batch; returns the compiled executable."""
    c = trainer.config
    state = abstract_train_state(trainer)
    shape = (c.global_batch, c.seq_len)
    batch = {
        k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=trainer.batch_sharding(shape))
        for k in ("tokens", "segment_ids", "positions", "loss_mask")
    }
    step = trainer.step_function(jax.tree.map(lambda x: x.sharding, state))
    with jax.set_mesh(trainer.mesh):
        return step.lower(state, batch).compile()
