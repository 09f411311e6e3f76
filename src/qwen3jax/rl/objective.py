"""The GRPO-family policy objective on per-token log-probabilities (SPEC §6): clipped importance ratio with
separate lower and upper clip ranges (DAPO clip-higher), k3 KL to a reference policy, an optional entropy bonus,
and three ways to aggregate tokens into the loss.

Aggregation is expressed as per-token weights that already include the global normaliser, so the loss of a
micro-batch is a plain weighted sum and the step's loss is the sum over micro-batches (see `train/losses.py`):
- "token_mean": every completion token of the global batch weighs the same (DAPO);
- "sequence_mean": each sequence's tokens are averaged, then sequences (the original GRPO); a sequence without a
  trained token (unjudged, or of a group without signal) does not count, as it does not in "token_mean";
- "constant": the sum over tokens divided by (sequences × a constant length), unbiased in length (Dr. GRPO).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

AGGREGATIONS = ("token_mean", "sequence_mean", "constant")


def token_weights(mask_BT: jax.Array, aggregation: str, *, total_tokens, num_sequences, max_tokens: int) -> jax.Array:
    """[B, T] weights of the trained tokens; `total_tokens` and `num_sequences` count the WHOLE global batch."""
    mask = mask_BT.astype(jnp.float32)
    if aggregation == "token_mean":
        return mask / jnp.maximum(total_tokens, 1)
    if aggregation == "sequence_mean":
        lengths = jnp.maximum(mask.sum(axis=1, keepdims=True), 1)
        return mask / lengths / jnp.maximum(num_sequences, 1)
    if aggregation == "constant":
        return mask / (jnp.maximum(num_sequences, 1) * max_tokens)
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def k3_kl(logp_BT: jax.Array, ref_logp_BT: jax.Array) -> jax.Array:
    """Schulman's k3 estimator of KL(policy ‖ reference) per sampled token: e^(ref−p) − (ref−p) − 1 ≥ 0."""
    delta = ref_logp_BT - logp_BT
    return jnp.exp(delta) - delta - 1.0


class PolicyTerms(NamedTuple):
    loss: jax.Array  # scalar: this micro-batch's contribution
    clip_frac: jax.Array  # weighted share of tokens whose gradient the clip removed
    kl: jax.Array  # weighted mean k3 KL (0 without a reference)
    ratio_max: jax.Array  # largest importance ratio among trained tokens (for the metrics' max reduction)


def policy_loss(
    logp_BT: jax.Array,
    old_logp_BT: jax.Array,
    advantages_B: jax.Array,
    weights_BT: jax.Array,
    *,
    eps_low: float,
    eps_high: float,
    beta: float = 0.0,
    ref_logp_BT: jax.Array | None = None,
) -> PolicyTerms:
    """−min(r·A, clip(r, 1−ε_low, 1+ε_high)·A) + β·k3, weighted by `weights_BT` and summed.

    r = exp(logp − old_logp) per token; `old_logp` is the sampler's log-prob of the token (the policy that
    generated it), so the first update of a rollout batch has r = 1 and later off-policy updates (μ > 1) reuse it.
    """
    ratio = jnp.exp(logp_BT - old_logp_BT)
    adv = advantages_B[:, None]
    unclipped = ratio * adv
    clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    surrogate = jnp.minimum(unclipped, clipped)
    per_token = -surrogate
    kl = jnp.zeros_like(per_token)
    if ref_logp_BT is not None:
        kl = k3_kl(logp_BT, ref_logp_BT)
        per_token = per_token + beta * kl
    trained = weights_BT > 0
    was_clipped = (clipped < unclipped) & trained  # the min chose the clipped, constant branch
    return PolicyTerms(
        loss=jnp.sum(per_token * weights_BT),
        clip_frac=jnp.sum(was_clipped * weights_BT),
        kl=jnp.sum(jax.lax.stop_gradient(kl) * weights_BT),
        ratio_max=jnp.max(jnp.where(trained, jax.lax.stop_gradient(ratio), 0.0)),
    )


def token_entropy(logit_slices, log_z_BT: jax.Array) -> jax.Array:
    """Entropy [B, T] of the softmax over logits given as vocabulary slices (`Qwen3.head`), slice by slice:
    H = log Z − Σ p·logit, so the [B, T, V] probabilities are never one array."""
    expected_logit = 0.0
    for logits in logit_slices:
        probs = jnp.exp(logits - log_z_BT[..., None])
        expected_logit = expected_logit + jnp.sum(probs * logits, axis=-1)
    return log_z_BT - expected_logit
