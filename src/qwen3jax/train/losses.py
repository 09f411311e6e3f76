"""Loss registry. A loss is built by a factory registered by name (configured from the experiment's `loss` block)
and has two parts, both pure:

- `context(model_fn, micro_batches) -> ctx`: statistics of the WHOLE global batch that every micro-batch's loss
  needs before its own terms can be computed (token counts for exact normalisation, MoE expert frequencies for the
  global-batch balance loss). Runs once per step, before the gradient accumulation loop.
- `__call__(model, batch, ctx, *, frozen, rng) -> (loss, metrics)`: one micro-batch's contribution. Contributions
  are normalised by global counts, so the step's loss is the plain SUM over micro-batches: k micro-batches == one
  batch of k× size. `frozen`: {name: model} of the run's frozen models; `rng`: this micro-batch's key.

and two declarations the loop and the step read:

- `batch_spec`: the fields the loss reads, with dtype and logical axes (`train.batch.Field`); the batch source must
  give exactly these, and the shardings of the jitted step follow them.
- `metric_reductions`: {metric: "mean" | "max" | "min"} for metrics that are not sums over micro-batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from qwen3jax.registry import Registry
from qwen3jax.train.batch import TOKEN_FIELDS, BatchSpec

LOSSES: Registry[Callable[..., Any]] = Registry("loss")

Batch = Mapping[str, jax.Array]


def next_token_targets(batch: Batch) -> tuple[jax.Array, jax.Array]:
    """Targets [B, T] and their validity: position t predicts token t+1 of the same document, when trained; the
    last position has no target (a placeholder 0, never valid). Full length so that the [B, T, V] logits are used
    as they are: slicing off their last position copies them (forward and backward)."""

    def shifted(a):
        return jnp.concatenate([a[:, 1:], jnp.zeros_like(a[:, :1])], axis=1)

    tokens, segments = batch["tokens"], batch["segment_ids"]
    next_segments = shifted(segments)
    valid = (shifted(batch["loss_mask"]) > 0) & (next_segments == segments) & (next_segments > 0)
    return shifted(tokens), valid


class TokenScores(NamedTuple):
    """Per-token results of `token_cross_entropy`, all [B, T]."""

    ce: jax.Array  # -log p(target), fp32
    log_z: jax.Array  # log-partition (for z-loss), fp32
    argmax: jax.Array  # the most likely token (for accuracy); not differentiable


def token_cross_entropy(logit_slices: Sequence[jax.Array], targets_BT: jax.Array) -> TokenScores:
    """Cross-entropy of fp32 logits given as consecutive vocabulary slices [B, T, V_i] (`Qwen3.head`). Each slice
    is reduced on its own, so the whole [B, T, V] logits are never formed as one array; a single slice is the plain
    computation."""
    log_zs, target_logit, maxima, argmaxes = [], 0.0, [], []
    start = 0
    for logits in logit_slices:
        size = logits.shape[-1]
        log_zs.append(jax.nn.logsumexp(logits, axis=-1))
        local_BT = targets_BT - start
        picked_BT = jnp.take_along_axis(logits, jnp.clip(local_BT, 0, size - 1)[..., None], axis=-1)[..., 0]
        target_logit = target_logit + jnp.where((local_BT >= 0) & (local_BT < size), picked_BT, 0.0)
        best_BT = jnp.argmax(logits, axis=-1)
        maxima.append(jax.lax.stop_gradient(jnp.take_along_axis(logits, best_BT[..., None], axis=-1)[..., 0]))
        argmaxes.append(best_BT + start)
        start += size
    log_z = jax.nn.logsumexp(jnp.stack(log_zs), axis=0)
    # First maximal slice, like argmax over the whole vocabulary (which picks the first maximal index).
    winner = jnp.argmax(jnp.stack(maxima), axis=0)
    argmax = jnp.take_along_axis(jnp.stack(argmaxes), winner[None], axis=0)[0]
    return TokenScores(ce=log_z - target_logit, log_z=log_z, argmax=argmax)


def next_token_scores(model, hidden: jax.Array, batch: Batch, vocab_slices: int):
    """(scores, targets, valid) of the masked next-token prediction from the model's final hidden states: the one
    computation behind the training losses and the held-out loss."""
    targets, valid = next_token_targets(batch)
    return token_cross_entropy(model.head(hidden, vocab_slices), targets), targets, valid


@LOSSES.register("pretrain")
@dataclasses.dataclass(frozen=True)
class PretrainLoss:
    """Next-token cross-entropy on `loss_mask` tokens + optional z-loss + MoE load-balancing loss.

    balance_scope: "global" — expert frequencies f are summed over every micro-batch and data-parallel shard of
      the global batch before the product `E · Σ f·P` (Qwen3, SPEC §2); with several micro-batches this costs one
      extra forward pass per step to count the routing first. "micro" — HF's per-micro-batch loss, averaged.
    vocab_slices: the LM head and cross-entropy run in this many vocabulary slices (`Qwen3.head`); same loss and
      gradients, less memory and (on XLA:CPU) a faster step; 1 = one [B, T, V] logits array.
    """

    z_loss: float = 0.0
    balance_coef: float = 0.001
    balance_scope: str = "global"
    vocab_slices: int = 8

    batch_spec: ClassVar[BatchSpec] = TOKEN_FIELDS
    metric_reductions: ClassVar[Mapping[str, str]] = {}  # every metric is a normalised contribution: summed

    def __post_init__(self):
        if self.balance_scope not in ("global", "micro"):
            raise ValueError(f"balance_scope must be 'global' or 'micro', got {self.balance_scope!r}")
        if not isinstance(self.vocab_slices, int) or self.vocab_slices < 1:
            raise ValueError(f"vocab_slices must be a positive integer, got {self.vocab_slices!r}")

    def context(self, model_fn, micro_batches: Batch) -> dict[str, jax.Array]:
        whole = {k: v.reshape(-1, *v.shape[2:]) for k, v in micro_batches.items()}
        num_micro = micro_batches["tokens"].shape[0]
        ctx = {
            "num_micro": num_micro,
            "num_targets": jnp.maximum(jnp.sum(next_token_targets(whole)[1]), 1),
            "real_tokens": jnp.sum(whole["segment_ids"] > 0),
        }
        if model_fn().config.is_moe and self.balance_coef and self.balance_scope == "global" and num_micro > 1:

            def count(batch):
                _, stats = model_fn()(batch["tokens"], batch.get("positions"), batch["segment_ids"], return_stats=True)
                return stats.expert_counts.sum(0), stats.num_tokens.sum()

            counts, tokens = jax.lax.map(count, micro_batches)
            ctx["expert_freq"] = jax.lax.stop_gradient(counts.sum(0) / tokens.sum())
        return ctx

    def __call__(self, model, batch: Batch, ctx: Mapping[str, jax.Array], *, frozen=None, rng=None):
        del frozen, rng  # deterministic, and no frozen model
        hidden, stats = model(batch["tokens"], batch.get("positions"), batch["segment_ids"], return_stats=True,
                              head=False)  # fmt: skip
        scores, targets, valid = next_token_scores(model, hidden, batch, self.vocab_slices)
        weight = valid.astype(jnp.float32) / ctx["num_targets"]
        ce_loss = jnp.sum(scores.ce * weight)
        metrics = {
            "ce": ce_loss,
            "accuracy": jnp.sum((scores.argmax == targets) * weight),
            "target_tokens": jnp.sum(valid).astype(jnp.float32),
        }
        loss = ce_loss
        if self.z_loss:
            metrics["z_loss"] = self.z_loss * jnp.sum(scores.log_z**2 * weight)
            loss = loss + metrics["z_loss"]
        if stats.expert_counts.size:  # slots a capacity-limited expert exchange dropped (0 when dropless)
            metrics["moe_dropped_slots"] = jnp.sum(stats.dropped_slots)
        if stats.expert_counts.size and self.balance_coef:
            metrics["balance_loss"] = self.balance_coef * self._balance(stats, ctx)
            loss = loss + metrics["balance_loss"]
        return loss, metrics

    def _balance(self, stats, ctx) -> jax.Array:
        num_experts = stats.expert_counts.shape[-1]
        probs = stats.router_prob_sums.sum(0)  # [E] pooled over layers; the only differentiable part
        if self.balance_scope == "micro":
            tokens = jnp.maximum(stats.num_tokens.sum(), 1)
            freq = jax.lax.stop_gradient(stats.expert_counts.sum(0) / tokens)
            return num_experts * jnp.sum(freq * probs / tokens) / ctx["num_micro"]
        # Global: f over the whole batch; this micro-batch contributes its probability sums over the whole batch's
        # pooled token count (every MoE layer routes every real token), so contributions add up to E·Σ f·P.
        total = jnp.maximum(ctx["real_tokens"] * stats.num_tokens.shape[0], 1)
        freq = ctx.get("expert_freq", jax.lax.stop_gradient(stats.expert_counts.sum(0) / total))
        return num_experts * jnp.sum(freq * probs / total)


@LOSSES.register("sft")
@dataclasses.dataclass(frozen=True)
class SftLoss(PretrainLoss):
    """Supervised fine-tuning: the same masked next-token loss, on the tokens the chat encoder marks as trained
    (think block, answer and `<|im_end|>` of the trained assistant turns); no z-loss by default."""

    z_loss: float = 0.0
