"""The `distill` loss, one more loss of the shared train step: the student's next-token distributions are pulled
towards the frozen `teacher`'s on the trained tokens of each row (`loss_mask`: an on-policy sample's completion, or
a fixed dataset's assistant turns), by the divergence of `divergence.py`, averaged over the global batch's trained
tokens (TRL's GKD "batchmean" over completion tokens)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp

from qwen3jax.distill.divergence import check_beta, token_divergence
from qwen3jax.train.batch import TOKEN_FIELDS, BatchSpec
from qwen3jax.train.losses import LOSSES, next_token_targets

TEACHER = "teacher"  # the frozen model's name in the experiment's `frozen` block


def teacher_of(frozen) -> object:
    if not frozen or TEACHER not in frozen:
        raise ValueError(f"distillation needs the frozen model {TEACHER!r}: config.frozen.{TEACHER}.path = a native "
                         f"checkpoint, an HF folder or a run directory")  # fmt: skip
    return frozen[TEACHER]


def logit_slices(model, batch, vocab_slices: int) -> list[jax.Array]:
    hidden = model(batch["tokens"], batch["positions"], batch["segment_ids"], head=False)
    return model.head(hidden, vocab_slices)


@LOSSES.register("distill")
@dataclasses.dataclass(frozen=True)
class DistillLoss:
    """Mean over trained tokens of the student–teacher divergence (GKD).

    beta: 0 forward KL(teacher ‖ student), 1 reverse KL(student ‖ teacher), between: generalised JSD(β).
    temperature: both models' logits are divided by it before the softmax.
    top_k: 0 = the full vocabulary; k > 0 = the teacher's top-k tokens plus one tail bucket.
    vocab_slices: both LM heads and the divergence run in this many vocabulary slices (same value, less memory).
    """

    beta: float = 0.5
    temperature: float = 1.0
    top_k: int = 0
    vocab_slices: int = 8

    batch_spec: ClassVar[BatchSpec] = TOKEN_FIELDS
    metric_reductions: ClassVar[Mapping[str, str]] = {}  # every metric is a normalised contribution: summed

    def __post_init__(self):
        check_beta(self.beta)
        if self.temperature <= 0 or self.top_k < 0 or self.vocab_slices < 1:
            raise ValueError(f"need temperature > 0, top_k >= 0 and vocab_slices >= 1; got {self.temperature}, "
                             f"{self.top_k} and {self.vocab_slices}")  # fmt: skip

    def context(self, model_fn, micro_batches):
        del model_fn
        whole = {k: v.reshape(-1, *v.shape[2:]) for k, v in micro_batches.items()}
        return {"total_tokens": jnp.maximum(jnp.sum(next_token_targets(whole)[1]), 1)}

    def divergence(self, student, teacher, batch) -> tuple[jax.Array, jax.Array]:
        """(per-token divergence [B, T], trained-token mask [B, T]) of a batch of rows."""
        per_token = token_divergence(logit_slices(student, batch, self.vocab_slices),
                                     logit_slices(teacher, batch, self.vocab_slices),
                                     beta=self.beta, temperature=self.temperature, top_k=self.top_k)  # fmt: skip
        return per_token, next_token_targets(batch)[1]

    def __call__(self, model, batch, ctx, *, frozen=None, rng=None):
        del rng  # deterministic
        per_token, valid = self.divergence(model, teacher_of(frozen), batch)
        weight = valid.astype(jnp.float32) / ctx["total_tokens"]
        loss = jnp.sum(jnp.where(valid, per_token, 0.0) * weight)
        return loss, {"kl": loss, "distill_tokens": jnp.sum(valid).astype(jnp.float32)}
