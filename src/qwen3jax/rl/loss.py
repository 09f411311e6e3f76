"""The GRPO-family loss, registered as `grpo` in the shared loss registry: one more loss for the one train step.

Batch (from the `rollouts` batch source, `rl/rows.py`): packed-row fields plus `old_logprobs` [B, T] (the sampler's
log-prob of each token), `sampled_mask` [B, T] (every token the policy chose, trained or not) and `advantages` [B].
The frozen model `reference` (when β > 0) gives the k3 KL term.
Position t scores token t + 1 where the row's loss mask is set, exactly as the pretraining loss does, so the
policy's log-probs, the sampler's and the reference's are compared on the same tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from qwen3jax.rl.objective import AGGREGATIONS, policy_loss, token_entropy, token_weights
from qwen3jax.train.batch import TOKEN_FIELDS, BatchSpec, Field
from qwen3jax.train.losses import LOSSES, next_token_targets, token_cross_entropy

REFERENCE = "reference"  # the frozen model's name in the experiment's `frozen` block


def _shift_left(a: jax.Array) -> jax.Array:
    """Per-token values aligned with the next-token targets: position t holds token t + 1's value."""
    return jnp.concatenate([a[:, 1:], jnp.zeros_like(a[:, :1])], axis=1)


def _target_logprobs(model, batch, vocab_slices: int, *, entropy: bool):
    hidden = model(batch["tokens"], batch["positions"], batch["segment_ids"], head=False)
    targets, valid = next_token_targets(batch)
    slices = model.head(hidden, vocab_slices)
    scores = token_cross_entropy(slices, targets)
    return -scores.ce, valid, (token_entropy(slices, scores.log_z) if entropy else None)


@LOSSES.register("grpo")
@dataclasses.dataclass(frozen=True)
class GrpoLoss:
    """Clipped policy-gradient loss with group-relative advantages (SPEC §6).

    eps_low / eps_high: the ratio's clip range [1 − eps_low, 1 + eps_high] (DAPO clip-higher: 0.2 / 0.28).
    aggregation: "token_mean" (DAPO), "sequence_mean" (GRPO) or "constant" (Dr. GRPO, divides by
      sequences × `max_tokens`).
    max_tokens: the constant length of the "constant" aggregation, normally the completion budget.
    beta: weight of the k3 KL to the frozen `reference` model (0: no reference is needed or read).
    entropy_coef: weight of an entropy bonus (0: entropy is only measured).
    vocab_slices: the LM head in this many vocabulary slices, as in pretraining.
    """

    eps_low: float = 0.2
    eps_high: float = 0.28
    aggregation: str = "token_mean"
    max_tokens: int = 1024
    beta: float = 0.0
    entropy_coef: float = 0.0
    vocab_slices: int = 8

    batch_spec: ClassVar[BatchSpec] = {
        **TOKEN_FIELDS,
        "old_logprobs": Field(np.float32, ("batch", "seq")),
        "sampled_mask": Field(np.int32, ("batch", "seq")),
        "advantages": Field(np.float32, ("batch",)),
    }
    metric_reductions: ClassVar[Mapping[str, str]] = {"ratio_max": "max"}

    def __post_init__(self):
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if not (0 <= self.eps_low < 1 and self.eps_high >= 0):
            raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got {self.eps_low} and {self.eps_high}")
        if self.beta < 0 or self.entropy_coef < 0 or self.max_tokens < 1:
            raise ValueError("beta and entropy_coef must be >= 0 and max_tokens >= 1")

    def context(self, model_fn, micro_batches):
        del model_fn
        whole = {k: v.reshape(-1, *v.shape[2:]) for k, v in micro_batches.items()}
        _, valid = next_token_targets(whole)
        return {"total_tokens": jnp.sum(valid), "num_sequences": jnp.sum(jnp.any(valid, axis=1)),
                "sampled_tokens": jnp.sum(_shift_left(whole["sampled_mask"]))}

    def __call__(self, model, batch, ctx, *, frozen=None, rng=None):
        del rng
        logp, valid, entropy = _target_logprobs(model, batch, self.vocab_slices, entropy=True)
        weights = token_weights(valid, self.aggregation, total_tokens=ctx["total_tokens"],
                                num_sequences=ctx["num_sequences"], max_tokens=self.max_tokens)  # fmt: skip
        ref_logp = None
        if self.beta:
            if not frozen or REFERENCE not in frozen:
                raise ValueError(f"grpo with beta={self.beta} needs the frozen model {REFERENCE!r} (config.frozen)")
            ref_logp, _, _ = _target_logprobs(frozen[REFERENCE], batch, self.vocab_slices, entropy=False)
        terms = policy_loss(logp, _shift_left(batch["old_logprobs"]), batch["advantages"], weights,
                            eps_low=self.eps_low, eps_high=self.eps_high, beta=self.beta, ref_logp_BT=ref_logp)  # fmt: skip
        # Entropy is reported per sampled token (trained or not: a step without signal still shows its policy's
        # entropy), whatever the aggregation, so runs compare.
        per_sampled = _shift_left(batch["sampled_mask"]).astype(jnp.float32) / jnp.maximum(ctx["sampled_tokens"], 1)
        mean_entropy = jnp.sum(jax.lax.stop_gradient(entropy) * per_sampled)
        loss = terms.loss - self.entropy_coef * jnp.sum(entropy * weights)
        metrics = {
            "pg_loss": terms.loss,
            "clip_frac": terms.clip_frac,
            "entropy": mean_entropy,
            "ratio_max": terms.ratio_max,
            "completion_tokens": jnp.sum(valid).astype(jnp.float32),
        }
        if ref_logp is not None:
            metrics["kl"] = terms.kl
        return loss, metrics
