"""Optimizer from the experiment's `optim` block: AdamW (optax) with warmup + cosine or warmup-stable-decay,
global-norm clipping, and a weight-decay mask built from the parameters' logical axes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax
from flax import nnx

from qwen3jax.parallel.rules import logical_axes


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


def make_optimizer(o: Mapping[str, Any], abstract_params: nnx.State, total_steps: int):
    """(optax transformation, schedule). Non-finite gradients never reach the weights (`apply_if_finite`)."""
    schedule = learning_rate_schedule(o, total_steps)
    mask = weight_decay_mask(
        abstract_params, decay_norms=o["decay_norms"], decay_embeddings=o["decay_embeddings"]
    )
    tx = optax.chain(
        optax.clip_by_global_norm(o["clip_norm"]) if o["clip_norm"] else optax.identity(),
        optax.adamw(schedule, b1=o["b1"], b2=o["b2"], eps=o["eps"], weight_decay=o["weight_decay"], mask=mask),
    )
    # The loop stops the run after `max_nonfinite_steps` skipped steps in a row, long before optax would give up.
    return optax.apply_if_finite(tx, max_consecutive_errors=2**30), schedule


def opt_state_shardings(tx, params, param_shardings, replicated):
    """Optimizer-state shardings: moment trees are laid out like the parameters they mirror (ZeRO: never a
    replica per device); counters and other scalars are replicated."""
    return optax.tree_map_params(
        tx, lambda _, sharding: sharding, jax.eval_shape(tx.init, params), param_shardings,
        transform_non_params=lambda _: replicated,
    )  # fmt: skip
