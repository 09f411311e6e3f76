"""THE train step, shared by every stage and phase: micro-batched gradient accumulation of a pluggable loss,
one optimizer update. Phases differ by the loss (and data / rollouts), never by branches in here."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # optimizer steps taken (including skipped non-finite ones)
    params: dict  # pure nested dict of parameter arrays (nnx.to_pure_dict layout)
    opt_state: Any
    rng: jax.Array  # for stochastic phases (sampling, dropout); split per step
    graphdef: Any = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    def model(self, params=None):
        return nnx.merge(self.graphdef, self.params if params is None else params)


def train_step(state: TrainState, batch: dict[str, jax.Array], *, loss_fn, num_micro_batches: int = 1):
    """One update from a global batch [B, ...] split into `num_micro_batches` sequential micro-batches."""
    k = num_micro_batches
    # Strided micro-batches (rows i, i+k, ...): each device's rows stay on it, no resharding of the inputs.
    micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1), batch)
    ctx = loss_fn.context(state.model, micro)

    def accumulate(grads, mb):
        (loss, metrics), g = jax.value_and_grad(lambda p: loss_fn(state.model(p), mb, ctx), has_aux=True)(
            state.params
        )
        return jax.tree.map(jnp.add, grads, g), (loss, metrics)

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    grads, (losses, metrics) = jax.lax.scan(accumulate, zeros, micro)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    finite = opt_state.last_finite
    metrics = {name: jnp.sum(v) for name, v in metrics.items()}  # contributions are globally normalised
    metrics.update(
        loss=jnp.sum(losses), grad_norm=optax.tree.norm(grads), skipped=1.0 - finite.astype(jnp.float32),
        param_norm=optax.tree.norm(state.params), nonfinite_in_a_row=opt_state.notfinite_count.astype(jnp.float32),
    )
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        rng=jax.random.fold_in(state.rng, state.step),
    )
    return new_state, metrics
