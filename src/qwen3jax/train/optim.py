"""Optimizer from the experiment's `optim` block: AdamW (optax) with warmup + cosine or warmup-stable-decay,
global-norm clipping, and a weight-decay mask built from the parameters' logical axes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from qwen3jax.parallel.rules import logical_axes


# field: (lowest, highest, whether the lowest is allowed). Every numeric field of the `optim` block is listed: a NaN
# or out-of-range value is refused before anything compiles (a NaN rate would otherwise train to NaN weights, a
# negative one uphill, both without a word).
_RANGES = {
    "peak_lr": (0.0, math.inf, False), "warmup_steps": (0, math.inf, True), "decay_steps": (0, math.inf, True),
    "decay_fraction": (0.0, 1.0, True), "end_lr_ratio": (0.0, 1.0, True), "b1": (0.0, 1.0, True),
    "b2": (0.0, 1.0, True), "eps": (0.0, math.inf, False), "weight_decay": (0.0, math.inf, True),
    "clip_norm": (0.0, math.inf, True), "max_nonfinite_steps": (1, math.inf, True),
}  # fmt: skip
_INTEGER = ("warmup_steps", "decay_steps", "max_nonfinite_steps")


def check_optimizer_settings(o: Mapping[str, Any]) -> None:
    """ValueError naming the first optim field that is not a finite number in its range (b1, b2 below 1)."""
    for name, (low, high, low_ok) in _RANGES.items():
        value = o[name]
        kind = "an integer" if name in _INTEGER else "a number"
        if isinstance(value, bool) or not isinstance(value, int if name in _INTEGER else (int, float)):
            raise ValueError(f"optim.{name} must be {kind}, got {value!r}")
        upper_ok = high == math.inf or name not in ("b1", "b2")
        if not (math.isfinite(value) and (value >= low if low_ok else value > low) and
                (value <= high if upper_ok else value < high)):  # fmt: skip
            bounds = f"{'[' if low_ok else '('}{low}, {high}{']' if upper_ok and high != math.inf else ')'}"
            raise ValueError(f"optim.{name} must be a finite {kind[2:]} in {bounds}, got {value!r}")
    if o["schedule"] not in ("cosine", "wsd"):
        raise ValueError(f"optim.schedule must be 'cosine' or 'wsd', got {o['schedule']!r}")


def learning_rate_schedule(o: Mapping[str, Any], total_steps: int) -> optax.Schedule:
    """The rate of update k (0-based) is the curve's value at step k + 1, so the warmup starts at peak/warmup_steps
    (an update at rate 0 would only move the Adam moments), reaches the peak at update warmup_steps - 1 and the
    run's last update uses the final rate. `cosine`: linear warmup, cosine decay to end_lr_ratio·peak over
    `decay_steps` (default: the rest of the run; fewer steps = an accelerated decay that then holds the final LR).
    `wsd`: warmup, constant, then a linear decay over the last `decay_fraction` of the run."""
    peak, warmup = o["peak_lr"], int(o["warmup_steps"])
    end = peak * o["end_lr_ratio"]
    if o["schedule"] == "cosine":
        decay_steps = int(o["decay_steps"]) or max(total_steps - warmup, 1)
        curve = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, warmup + decay_steps, end)
    elif o["schedule"] == "wsd":
        decay = max(int(round(total_steps * o["decay_fraction"])), 1)
        stable = max(total_steps - warmup - decay, 0)
        curve = optax.join_schedules(
            [
                optax.linear_schedule(0.0, peak, max(warmup, 1)),
                optax.constant_schedule(peak),
                optax.linear_schedule(peak, end, decay),
            ],
            boundaries=[warmup, warmup + stable],
        )
    else:
        raise ValueError(f"optim.schedule must be 'cosine' or 'wsd', got {o['schedule']!r}")
    return lambda count: curve(count + 1)


def weight_decay_mask(abstract_params: nnx.State, *, decay_norms: bool, decay_embeddings: bool) -> dict:
    """True where weight decay applies: never on norm gains unless asked, on embeddings only if asked."""

    def decays(v: nnx.Variable) -> bool:
        axes = logical_axes(v)
        if "norm" in axes:
            return decay_norms
        if "vocab" in axes:
            return decay_embeddings
        return True

    mask = jax.tree.map(lambda v: v.replace(decays(v)), abstract_params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.to_pure_dict(mask)


def skip_nonfinite(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """`optax.apply_if_finite` (same state, so the same counters), except that the update itself is checked too: a
    finite gradient can still give a non-finite update (an overflowing moment, a broken schedule). A step with a
    non-finite gradient or update changes neither the weights nor the optimizer state, and never gives up."""

    def init(params):
        return optax.ApplyIfFiniteState(
            notfinite_count=jnp.zeros([], jnp.int32), last_finite=jnp.array(True, jnp.bool_),
            total_notfinite=jnp.zeros([], jnp.int32), inner_state=inner.init(params),
        )  # fmt: skip

    def update(grads, state, params=None):
        updates, inner_state = inner.update(grads, state.inner_state, params)
        finite = _all_finite(grads) & _all_finite(updates)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        return jax.tree.map(lambda u: keep(u, jnp.zeros_like(u)), updates), optax.ApplyIfFiniteState(
            notfinite_count=jnp.where(finite, 0, state.notfinite_count + 1),
            last_finite=finite,
            total_notfinite=state.total_notfinite + (~finite).astype(jnp.int32),
            inner_state=jax.tree.map(keep, inner_state, state.inner_state),
        )

    return optax.GradientTransformation(init, update)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_optimizer(o: Mapping[str, Any], abstract_params: nnx.State, total_steps: int):
    """(optax transformation, schedule). Non-finite gradients and updates never reach the weights."""
    check_optimizer_settings(o)
    schedule = learning_rate_schedule(o, total_steps)
    mask = weight_decay_mask(
        abstract_params, decay_norms=o["decay_norms"], decay_embeddings=o["decay_embeddings"]
    )
    tx = optax.chain(
        optax.clip_by_global_norm(o["clip_norm"]) if o["clip_norm"] else optax.identity(),
        optax.adamw(schedule, b1=o["b1"], b2=o["b2"], eps=o["eps"], weight_decay=o["weight_decay"], mask=mask),
    )
    # The loop stops the run after `max_nonfinite_steps` skipped steps in a row.
    return skip_nonfinite(tx), schedule


def opt_state_shardings(tx, params, param_shardings, replicated):
    """Optimizer-state shardings: moment trees are laid out like the parameters they mirror (ZeRO: never a
    replica per device); counters and other scalars are replicated."""
    return optax.tree_map_params(
        tx, lambda _, sharding: sharding, jax.eval_shape(tx.init, params), param_shardings,
        transform_non_params=lambda _: replicated,
    )  # fmt: skip
