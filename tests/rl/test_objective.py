"""The GRPO objective and advantages against straightforward per-token / per-group NumPy loops written from the
formulas (values and gradients), on hand-made batches that exercise both clip sides, every aggregation and the KL."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3jax.rl import advantages as adv_lib
from qwen3jax.rl import objective


def reference_loss(logp, old, adv, mask, *, eps_low, eps_high, beta, ref, aggregation, max_tokens):
    """Loss and d loss / d logp, one token at a time."""
    B, T = logp.shape
    total_tokens, num_seqs = mask.sum(), mask.any(axis=1).sum()  # rows without a trained token do not count
    loss, grad, clipped_weight = 0.0, np.zeros_like(logp), 0.0
    for b in range(B):
        length = mask[b].sum()
        for t in range(T):
            if not mask[b, t]:
                continue
            if aggregation == "token_mean":
                w = 1.0 / total_tokens
            elif aggregation == "sequence_mean":
                w = 1.0 / length / num_seqs
            else:
                w = 1.0 / (num_seqs * max_tokens)
            r = math.exp(logp[b, t] - old[b, t])
            a = adv[b]
            low, high = 1 - eps_low, 1 + eps_high
            r_clip = min(max(r, low), high)
            if r_clip * a < r * a:  # the clipped, constant branch wins the min: no gradient
                term, dterm = -r_clip * a, 0.0
                clipped_weight += w
            else:
                term, dterm = -r * a, -r * a
            if ref is not None:
                d = ref[b, t] - logp[b, t]
                term += beta * (math.exp(d) - d - 1)
                dterm += beta * (1 - math.exp(d))
            loss += w * term
            grad[b, t] = w * dterm
    return loss, grad, clipped_weight


@pytest.mark.parametrize("aggregation", objective.AGGREGATIONS)
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_policy_loss_matches_the_formula(aggregation, beta):
    rng = np.random.default_rng(0)
    B, T = 4, 7
    old = rng.normal(-2.0, 0.5, (B, T))
    # Ratios spread over both clip boundaries: e^±0.5 ∈ [0.61, 1.65] around [0.8, 1.28].
    logp = old + rng.uniform(-0.5, 0.5, (B, T))
    adv = np.array([1.5, -0.7, 0.0, -2.0])
    mask = np.ones((B, T), bool)
    mask[0, 5:] = False
    mask[3, :2] = False
    ref = old + rng.normal(0, 0.3, (B, T)) if beta else None
    want, want_grad, want_clip = reference_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.28, beta=beta, ref=ref,
                                                aggregation=aggregation, max_tokens=10)  # fmt: skip

    def loss_fn(lp):
        weights = objective.token_weights(jnp.asarray(mask), aggregation, total_tokens=mask.sum(), num_sequences=B,
                                          max_tokens=10)  # fmt: skip
        return objective.policy_loss(lp, jnp.asarray(old, jnp.float32), jnp.asarray(adv, jnp.float32), weights,
                                     eps_low=0.2, eps_high=0.28, beta=beta,
                                     ref_logp_BT=None if ref is None else jnp.asarray(ref, jnp.float32))  # fmt: skip

    terms = loss_fn(jnp.asarray(logp, jnp.float32))
    grad = jax.grad(lambda lp: loss_fn(lp).loss)(jnp.asarray(logp, jnp.float32))
    np.testing.assert_allclose(float(terms.loss), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(float(terms.clip_frac), want_clip, rtol=1e-5)
    assert 0 < want_clip < 0.6  # both sides of the clip were exercised
    if beta:
        kl_ref = np.where(mask, np.exp(ref - logp) - (ref - logp) - 1, 0)
        assert float(terms.kl) > 0
        assert float(terms.kl) == pytest.approx(float((kl_ref * np.asarray(
            objective.token_weights(jnp.asarray(mask), aggregation, total_tokens=mask.sum(), num_sequences=B,
                                    max_tokens=10))).sum()), rel=1e-6)  # fmt: skip


def test_micro_batch_contributions_add_up_to_the_whole_batch():
    rng = np.random.default_rng(1)
    old = jnp.asarray(rng.normal(-1, 0.3, (6, 5)), jnp.float32)
    logp = old + jnp.asarray(rng.uniform(-0.4, 0.4, (6, 5)), jnp.float32)
    adv = jnp.asarray(rng.normal(0, 1, 6), jnp.float32)
    mask = jnp.asarray(rng.random((6, 5)) < 0.7)
    for aggregation in objective.AGGREGATIONS:
        kw = dict(aggregation=aggregation, total_tokens=mask.sum(), num_sequences=6, max_tokens=5)
        whole = objective.policy_loss(logp, old, adv, objective.token_weights(mask, **kw), eps_low=0.2, eps_high=0.28)
        parts = sum(
            objective.policy_loss(logp[s], old[s], adv[s], objective.token_weights(mask[s], **kw), eps_low=0.2,
                                  eps_high=0.28).loss for s in (slice(0, 2), slice(2, 6))  # fmt: skip
        )
        np.testing.assert_allclose(float(parts), float(whole.loss), rtol=1e-6)


def test_first_update_is_the_plain_policy_gradient():
    """With old = current log-probs (r = 1) nothing is clipped and the gradient is −A·w per token."""
    logp = jnp.asarray([[-1.0, -2.0, -0.5]])
    weights = jnp.asarray([[0.2, 0.3, 0.5]])
    grad = jax.grad(lambda lp: objective.policy_loss(lp, logp, jnp.asarray([2.0]), weights, eps_low=0.2,
                                                     eps_high=0.28).loss)(logp)  # fmt: skip
    np.testing.assert_allclose(np.asarray(grad), -2.0 * np.asarray(weights), rtol=1e-6)


def test_token_entropy_over_slices_matches_numpy():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (2, 3, 11)).astype(np.float32)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = -(p * np.log(p)).sum(-1)
    log_z = jax.nn.logsumexp(jnp.asarray(logits), axis=-1)
    slices = [jnp.asarray(logits[..., :4]), jnp.asarray(logits[..., 4:9]), jnp.asarray(logits[..., 9:])]
    np.testing.assert_allclose(np.asarray(objective.token_entropy(slices, log_z)), want, rtol=1e-5)


def test_group_advantages():
    rewards = np.array([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0], [0.5, 0.5, 0.5, 0.5], [1.0, 0.0, 0.3, 0.0]])
    judged = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
    out = adv_lib.group_advantages(rewards, judged, scale="std", eps=0.0)
    # Group 0: mean 0.5, sample std sqrt(1/3).
    np.testing.assert_allclose(out.advantages[0], (rewards[0] - 0.5) / math.sqrt(1 / 3), rtol=1e-6)
    # Group 1: the unjudged completion is out of the statistics and untrained; the judged ones are all 1: no signal.
    assert out.zero_std.tolist() == [False, True, True, True]
    assert not out.trained[1:].any() and (out.advantages[1:] == 0).all()
    assert out.trained[0].all()
    dr = adv_lib.group_advantages(rewards, judged, scale="none")
    np.testing.assert_allclose(dr.advantages[0], rewards[0] - 0.5)
    judged[1, 3] = True
    mixed = adv_lib.group_advantages(rewards, judged, scale="std", eps=0.0)
    np.testing.assert_allclose(mixed.advantages[1], (rewards[1] - 0.75) / np.std(rewards[1], ddof=1), rtol=1e-6)
    with pytest.raises(ValueError, match="advantage scale"):
        adv_lib.group_advantages(rewards, judged, scale="rank")


def test_overlong_penalty():
    lengths = np.array([10, 80, 90, 95, 100, 130])
    np.testing.assert_allclose(adv_lib.overlong_penalty(lengths, max_tokens=100, cache_tokens=20),
                               [0, 0, -0.5, -0.75, -1, -1])  # fmt: skip
    with pytest.raises(ValueError, match="cache_tokens"):
        adv_lib.overlong_penalty(lengths, max_tokens=100, cache_tokens=0)
