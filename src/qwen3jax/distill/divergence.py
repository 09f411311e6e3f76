"""Per-token divergences between a student's and a teacher's next-token distributions (SPEC §6, GKD), computed
from logits given as consecutive vocabulary slices [B, T, V_i] (`Qwen3.head`), so neither model's [B, T, V] logits
are ever concatenated into one array.

With s = log softmax(student / τ) and t = log softmax(teacher / τ) (τ: `temperature`), `beta` chooses (as TRL's
GKD does):
- beta = 0: forward KL(teacher ‖ student) = Σ e^t (t − s)   (mass-covering; plain distillation);
- beta = 1: reverse KL(student ‖ teacher) = Σ e^s (s − t)   (mode-seeking; on-policy distillation's usual choice);
- 0 < beta < 1: generalised JSD(β) = β KL(teacher ‖ m) + (1 − β) KL(student ‖ m), m = β e^t + (1 − β) e^s.

`top_k` > 0 compares the two distributions coarsened to the teacher's k most likely tokens plus one "every other
token" bucket (k + 1 outcomes, each distribution's own tail mass in the bucket). Both stay proper distributions, so
every divergence is still ≥ 0 and is a lower bound of the full-vocabulary one (data processing); the student is
still pushed to move its mass off the tail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def check_beta(beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1] (0: forward KL, 1: reverse KL, between: JSD(beta)), got {beta}")


def pointwise(s: jax.Array, t: jax.Array, beta: float) -> jax.Array:
    """The divergence's terms per outcome from finite normalised log-probs s (student) and t (teacher); sum them
    over the outcomes."""

    def kl_terms(p_log, q_log):  # p·(log p − log q)
        return jnp.exp(p_log) * (p_log - q_log)

    if beta == 0.0:
        return kl_terms(t, s)
    if beta == 1.0:
        return kl_terms(s, t)
    m = jnp.logaddexp(s + math.log1p(-beta), t + math.log(beta))
    return beta * kl_terms(t, m) + (1.0 - beta) * kl_terms(s, m)


def _log_z(slices: Sequence[jax.Array]) -> jax.Array:
    return jax.nn.logsumexp(jnp.stack([jax.nn.logsumexp(x, axis=-1) for x in slices]), axis=0)


def full_divergence(student: Sequence[jax.Array], teacher: Sequence[jax.Array], *, beta: float) -> jax.Array:
    """[B, T] divergence over the whole vocabulary of temperature-scaled logit slices: one pass for the two
    log-partitions, one pass summing each slice's terms."""
    lz_s, lz_t = _log_z(student), _log_z(teacher)
    total = 0.0
    for s, t in zip(student, teacher, strict=True):
        total = total + jnp.sum(pointwise(s - lz_s[..., None], t - lz_t[..., None], beta), axis=-1)
    return total


def _gather(slices: Sequence[jax.Array], ids: jax.Array) -> jax.Array:
    """Logits at vocabulary ids [B, T, K] from consecutive slices."""
    picked, start = 0.0, 0
    for x in slices:
        local = ids - start
        inside = (local >= 0) & (local < x.shape[-1])
        values = jnp.take_along_axis(x, jnp.clip(local, 0, x.shape[-1] - 1), axis=-1)
        picked, start = picked + jnp.where(inside, values, 0.0), start + x.shape[-1]
    return picked


def _log_mass_outside(slices: Sequence[jax.Array], ids: jax.Array) -> jax.Array:
    """log Σ_{v ∉ ids} e^{x_v} [B, T]: each slice with the listed ids masked out (a scatter, never a [.., V, K]
    comparison)."""
    per_slice, start = [], 0
    b, t = jnp.indices(ids.shape[:2])
    for x in slices:
        size = x.shape[-1]
        local = ids - start
        local = jnp.where((local >= 0) & (local < size), local, size)  # out of this slice: dropped by the scatter
        listed = jnp.zeros(x.shape, bool).at[b[..., None], t[..., None], local].set(True, mode="drop")
        per_slice.append(jax.nn.logsumexp(jnp.where(listed, -jnp.inf, x), axis=-1))
        start += size
    return jax.nn.logsumexp(jnp.stack(per_slice), axis=0)


def top_k_divergence(student: Sequence[jax.Array], teacher: Sequence[jax.Array], *, beta: float, k: int) -> jax.Array:
    """[B, T] divergence of the two distributions over the teacher's top-k tokens plus one tail bucket."""
    vocab = sum(x.shape[-1] for x in teacher)
    if not 0 < k < vocab:
        raise ValueError(f"top_k must be in [1, vocab_size={vocab}) (0: the full vocabulary), got {k}")
    # The teacher's top-k over the vocabulary: each slice's own top-k, then the best k of those candidates.
    values, ids, start = [], [], 0
    for x in teacher:
        v, i = jax.lax.top_k(x, min(k, x.shape[-1]))
        values.append(v)
        ids.append(i + start)
        start += x.shape[-1]
    _, best = jax.lax.top_k(jnp.concatenate(values, axis=-1), k)
    top_ids = jax.lax.stop_gradient(jnp.take_along_axis(jnp.concatenate(ids, axis=-1), best, axis=-1))

    def coarse(slices):  # normalised log-probs of the k + 1 outcomes [B, T, k + 1]
        lz = _log_z(slices)
        outcomes = jnp.concatenate([_gather(slices, top_ids), _log_mass_outside(slices, top_ids)[..., None]], -1)
        return outcomes - lz[..., None]

    return jnp.sum(pointwise(coarse(student), coarse(teacher), beta), axis=-1)


def token_divergence(
    student: Sequence[jax.Array], teacher: Sequence[jax.Array], *, beta: float, temperature: float = 1.0, top_k: int = 0
) -> jax.Array:
    """[B, T] divergence between the student's and the teacher's next-token distributions at every position, from
    fp32 logit slices of the same vocabulary split (the teacher's are not differentiated)."""
    check_beta(beta)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if [x.shape[-1] for x in student] != [x.shape[-1] for x in teacher]:
        raise ValueError("student and teacher logits must come in the same vocabulary slices")
    student = [x / temperature for x in student]
    teacher = [jax.lax.stop_gradient(x) / temperature for x in teacher]
    if top_k:
        return top_k_divergence(student, teacher, beta=beta, k=top_k)
    return full_divergence(student, teacher, beta=beta)
