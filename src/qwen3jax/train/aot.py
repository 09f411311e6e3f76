"""Ahead-of-time compilation of an experiment's train step from shapes alone (no weights are allocated), so that
shape and sharding bugs of pod-size configs surface on a laptop or in CI (tests/train/test_aot.py): build a
`Trainer` for the config on a simulated CPU mesh (XLA_FLAGS=--xla_force_host_platform_device_count=N) and call
`compile_train_step(trainer)`. The batch is the loss's batch spec at the config's sizes."""

from __future__ import annotations

import jax

from qwen3jax.train.loop import Trainer
from qwen3jax.train.state import create_train_state
from qwen3jax.train.step import TrainState


def abstract_train_state(trainer: Trainer) -> TrainState:
    """The train state as sharded ShapeDtypeStructs, laid out exactly as `Trainer.init_state` would place it."""
    c = trainer.config
    state, trainer.schedule = create_train_state(trainer.model_cfg, c.optim, c.steps, trainer.mesh, seed=c.seed,
                                                 abstract=True)  # fmt: skip
    return state


def compile_train_step(trainer: Trainer):
    """Lower and compile the experiment's train step for its full global batch; returns the compiled executable."""
    state = abstract_train_state(trainer)
    step = trainer.step_function(jax.tree.map(lambda x: x.sharding, state))
    with jax.set_mesh(trainer.mesh):
        return step.lower(state, trainer.layout.abstract()).compile()
