"""Next-token selection: the sampling distribution (presence penalty → temperature → top-k → top-p) and draws.

Order and definitions follow the common serving stacks (vLLM / HF warpers):
  penalised = logits - presence_penalty * [token already generated in this row]   (prompt tokens are not counted)
  scaled    = penalised / temperature
  top-k     keeps the k largest scaled logits (ties: lower id first)
  top-p     then keeps, in decreasing probability (renormalised over the top-k survivors), every token whose
            preceding cumulative probability is < top_p: the smallest prefix with mass >= top_p, never empty
and the sampling distribution is the softmax of `scaled` over the kept tokens. Greedy decoding (temperature 0) is the
argmax of `penalised`; its sampling distribution is a point mass, so the sampled token's log-prob is 0.

Which filters exist is static (it picks the code path); temperature, top_p and the penalty are traced values, so
changing them never recompiles.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Filters(NamedTuple):
    """The static part of the sampling parameters (one compilation per distinct value)."""

    greedy: bool
    top_k: int | None  # None: no top-k
    top_p: bool  # whether a top-p value is applied
    penalty: bool  # whether a presence penalty is applied


def penalize(logits_RV: jax.Array, seen_RV: jax.Array | None, presence_penalty: jax.Array) -> jax.Array:
    """Subtract the presence penalty from every token the row has already generated (`seen_RV`, bool)."""
    if seen_RV is None:
        return logits_RV
    return logits_RV - presence_penalty * seen_RV.astype(logits_RV.dtype)


def sampling_log_probs(
    penalized_RV: jax.Array, filters: Filters, temperature: jax.Array, top_p: jax.Array
) -> jax.Array:
    """Log-probabilities [R, V] of the sampling distribution (-inf outside the kept set) for non-greedy decoding."""
    scaled_RV = penalized_RV / temperature
    if filters.top_k is None and not filters.top_p:
        return jax.nn.log_softmax(scaled_RV, axis=-1)
    rows, vocab = scaled_RV.shape
    k = min(filters.top_k or vocab, vocab)
    # lax.top_k returns the survivors sorted by decreasing value, which is also the order top-p walks them in.
    values_RK, ids_RK = jax.lax.top_k(scaled_RV, k)
    keep_RK = jnp.ones(values_RK.shape, bool)
    if filters.top_p:
        probs_RK = jax.nn.softmax(values_RK, axis=-1)
        mass_before_RK = jnp.cumsum(probs_RK, axis=-1) - probs_RK
        keep_RK = mass_before_RK < top_p
        keep_RK = keep_RK.at[:, 0].set(True)  # float round-off must never empty the set
    kept_RV = jnp.zeros((rows, vocab), bool).at[jnp.arange(rows)[:, None], ids_RK].set(keep_RK)
    return jax.nn.log_softmax(jnp.where(kept_RV, scaled_RV, -jnp.inf), axis=-1)


def choose(
    key: jax.Array, penalized_RV: jax.Array, filters: Filters, temperature: jax.Array, top_p: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(token [R], its log-prob under the sampling distribution [R])."""
    if filters.greedy:
        token_R = jnp.argmax(penalized_RV, axis=-1).astype(jnp.int32)
        return token_R, jnp.zeros(token_R.shape, jnp.float32)
    logp_RV = sampling_log_probs(penalized_RV, filters, temperature, top_p)
    token_R = jax.random.categorical(key, logp_RV, axis=-1).astype(jnp.int32)
    return token_R, jnp.take_along_axis(logp_RV, token_R[:, None], axis=-1)[:, 0]
