"""Create a model directly in its sharded layout: no device ever holds a full replica it does not need."""

from __future__ import annotations

import jax
from flax import nnx
from jax.sharding import Mesh

from qwen3jax.model.config import ModelConfig
from qwen3jax.model.transformer import Qwen3
from qwen3jax.parallel.rules import state_shardings


def create_model(cfg: ModelConfig, *, seed: int = 0, mesh: Mesh | None = None) -> Qwen3:
    """Initialise `Qwen3(cfg)`; with a mesh, under `jax.set_mesh(mesh)` with every parameter sharded by the rules."""
    if mesh is None:
        return Qwen3(cfg, rngs=nnx.Rngs(seed))
    with jax.set_mesh(mesh):
        graphdef, abstract_state = nnx.split(nnx.eval_shape(lambda: Qwen3(cfg, rngs=nnx.Rngs(seed))))
        shardings = state_shardings(abstract_state, mesh)

        @jax.jit(out_shardings=shardings)
        def init():
            return nnx.state(Qwen3(cfg, rngs=nnx.Rngs(seed)))

        return nnx.merge(graphdef, init())
