"""THE train step, shared by every stage and phase: micro-batched gradient accumulation of a pluggable loss,
one optimizer update. Phases differ by the loss, the batch source and the frozen models, never by branches here.

The loss sees, per micro-batch: the trained model, the micro-batch (the fields its `batch_spec` declares), the
whole-batch context, the frozen models (reference policy, teacher, reward model, judge: merged from the traced
`frozen` argument, never differentiated, never in the optimizer state) and its own RNG key. Its metrics are summed
over micro-batches unless `metric_reductions` names another reduction (a mean or maximum over micro-batches).
"""

from __future__ import annotations

from collections.abc import Mapping
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


@flax.struct.dataclass
class FrozenModel:
    """A model the step reads but never trains: parameters (traced, sharded like the student's) + static graph."""

    params: dict
    graphdef: Any = flax.struct.field(pytree_node=False)

    def model(self):
        return nnx.merge(self.graphdef, jax.tree.map(jax.lax.stop_gradient, self.params))


# How a metric's per-micro-batch values combine into the step's value. "sum": contributions normalised by global
# counts (the default); "mean": a per-micro-batch average (micro-batches hold equally many rows); "max"/"min".
REDUCTIONS = {"sum": jnp.sum, "mean": jnp.mean, "max": jnp.max, "min": jnp.min}


def reduce_metrics(metrics: Mapping[str, jax.Array], reductions: Mapping[str, str]) -> dict[str, jax.Array]:
    """Per-micro-batch metric values [k] → one value each, by the loss's declared reductions (default: sum)."""
    unknown = {name: how for name, how in reductions.items() if how not in REDUCTIONS}
    if unknown:
        raise ValueError(f"metric_reductions {unknown}: each must be one of {sorted(REDUCTIONS)}")
    return {name: REDUCTIONS[reductions.get(name, "sum")](v, axis=0) for name, v in metrics.items()}


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    frozen: Mapping[str, FrozenModel] | None = None,
    *,
    loss_fn,
    num_micro_batches: int = 1,
):
    """One update from a global batch [B, ...] split into `num_micro_batches` sequential micro-batches."""
    k = num_micro_batches
    frozen = {} if frozen is None else frozen
    # Strided micro-batches (rows i, i+k, ...): each device's rows stay on it, no resharding of the inputs.
    micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1), batch)
    ctx = loss_fn.context(state.model, micro)
    keys = jax.random.split(state.rng, k)  # unused (and compiled away) by deterministic losses

    def accumulate(grads, inputs):
        mb, key = inputs

        def loss_of(params):  # NNX models are merged at the trace level that uses them: inside the gradient's
            models = {name: f.model() for name, f in frozen.items()}
            return loss_fn(state.model(params), mb, ctx, frozen=models, rng=key)

        (loss, metrics), g = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        return jax.tree.map(jnp.add, grads, g), (loss, metrics)

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    grads, (losses, metrics) = jax.lax.scan(accumulate, zeros, (micro, keys))
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    finite = opt_state.last_finite
    metrics = reduce_metrics(metrics, getattr(loss_fn, "metric_reductions", {}))
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
