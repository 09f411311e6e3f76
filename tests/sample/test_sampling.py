"""Sampling: draws follow the filtered distribution, never leave the top-k / top-p set, report log-probs equal to a
full-forward recomputation, are seeded, and n samples per prompt share one prefill."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3jax.sample import engine, generate
from qwen3jax.sample.sampling import Filters, choose, penalize

from .helpers import PEAKED, build, log_softmax, sampling_log_probs, step_logits

KNOBS = dict(temperature=0.7, top_k=5, top_p=0.9, presence_penalty=1.0)
PROMPTS = [[3, 17, 25, 9, 44], [100, 7, 81, 2, 63, 15, 90, 33, 5]]
N, STEPS = 4, 12


def test_draws_follow_the_filtered_distribution():
    """Many independent draws from one step's logits: frequencies match the NumPy reference distribution (penalty on
    the seen tokens, temperature, top-k, top-p), excluded tokens never appear, log-probs are the reference's."""
    vocab, draws = 24, 20_000
    logits = np.random.default_rng(0).normal(0, 1.5, vocab).astype(np.float32)
    seen = {int(np.argmax(logits)), 5}  # penalising the favourite changes which tokens survive top-p
    seen_row = np.zeros(vocab, bool)
    seen_row[list(seen)] = True
    filters = Filters(greedy=False, top_k=8, top_p=True, penalty=True)

    @jax.jit
    def draw(key):
        penalized = penalize(jnp.tile(logits, (draws, 1)), jnp.tile(seen_row, (draws, 1)), 1.0)
        return choose(key, penalized, filters, jnp.float32(0.8), jnp.float32(0.9))

    tokens, logprobs = map(np.asarray, draw(jax.random.key(1)))
    ref = sampling_log_probs(logits, seen, temperature=0.8, top_k=8, top_p=0.9, presence_penalty=1.0)
    unpenalized = sampling_log_probs(logits, set(), temperature=0.8, top_k=8, top_p=0.9, presence_penalty=0.0)
    assert not np.allclose(ref, unpenalized)  # the penalty matters for this case
    assert np.isfinite(ref[tokens]).all()
    np.testing.assert_allclose(logprobs, ref[tokens], atol=1e-5)
    expected = np.exp(ref)
    observed = np.bincount(tokens, minlength=vocab) / draws
    tolerance = 4 * np.sqrt(expected * (1 - expected) / draws) + 1e-9  # 4 binomial standard deviations
    assert np.all(np.abs(observed - expected) <= tolerance), (observed, expected)


@pytest.fixture(scope="module")
def sampled():
    model = build(PEAKED, seed=5)
    prefill_batches = []
    real_prefill = engine._prefill

    def recording_prefill(model, prompts_BP, lengths_B, cache_len):
        prefill_batches.append(prompts_BP.shape[0])
        return real_prefill(model, prompts_BP, lengths_B, cache_len)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "_prefill", recording_prefill)
        result = generate(model, PROMPTS, max_new_tokens=STEPS, n=N, seed=7, **KNOBS)
    return model, result, prefill_batches


def test_tokens_stay_in_the_filtered_set_and_logprobs_match_full_forward(sampled):
    model, result, _ = sampled
    assert len(result.tokens) == len(PROMPTS) * N
    kept_sizes = []
    for i, tokens in enumerate(result.tokens):
        prompt = PROMPTS[i // N]  # prompt-major: a wrong order would break the recomputation
        logits = step_logits(model, prompt, tokens, width=32)
        for t, token in enumerate(tokens):
            ref = sampling_log_probs(logits[t], set(tokens[:t]), **KNOBS)
            kept_sizes.append(int(np.isfinite(ref).sum()))
            assert np.isfinite(ref[token]), f"sample {i} step {t}: token {token} is outside the top-k/top-p set"
            assert result.logprobs[i][t] == pytest.approx(ref[token], abs=1e-4)
            assert result.raw_logprobs[i][t] == pytest.approx(log_softmax(logits[t])[token], abs=1e-4)
    # Both filters bind somewhere, so the check above is not vacuous.
    assert min(kept_sizes) < KNOBS["top_k"] and max(kept_sizes) == KNOBS["top_k"]


def test_n_samples_share_one_prefill_and_differ(sampled):
    _, result, prefill_batches = sampled
    assert prefill_batches == [len(PROMPTS)]  # one prefill of the prompts, not of prompts x n
    for i in range(len(PROMPTS)):
        group = [tuple(t) for t in result.tokens[i * N : (i + 1) * N]]
        assert len(set(group)) == N


def test_sampling_is_seeded(sampled):
    model, result, _ = sampled
    again = generate(model, PROMPTS, max_new_tokens=STEPS, n=N, seed=7, **KNOBS)
    assert again.tokens == result.tokens
    np.testing.assert_array_equal(np.concatenate(again.logprobs), np.concatenate(result.logprobs))
    other = generate(model, PROMPTS, max_new_tokens=STEPS, n=N, seed=8, **KNOBS)
    assert other.tokens != result.tokens


def test_vocab_limit_keeps_padded_ids_out():
    """Ids at or past `vocab_limit` (a padded vocabulary's unused rows) are never generated: greedy takes the argmax of
    the ids below it, sampling draws from the distribution over them alone; raw log-probs stay the full model's."""
    model, limit = build(PEAKED, seed=5), 64
    unlimited = generate(model, PROMPTS, max_new_tokens=STEPS)
    assert max(max(tokens) for tokens in unlimited.tokens) >= limit  # the limit binds: the test is not vacuous
    greedy = generate(model, PROMPTS, max_new_tokens=STEPS, vocab_limit=limit)
    sampled = generate(model, PROMPTS, max_new_tokens=STEPS, n=N, seed=7, vocab_limit=limit, **KNOBS)
    for i, tokens in enumerate(greedy.tokens):
        logits = step_logits(model, PROMPTS[i], tokens, width=32)
        assert tokens == [int(np.argmax(step[:limit])) for step in logits[: len(tokens)]]
    for i, tokens in enumerate(sampled.tokens):
        logits = step_logits(model, PROMPTS[i // N], tokens, width=32)
        for t, token in enumerate(tokens):
            assert token < limit
            ref = sampling_log_probs(logits[t][:limit], set(tokens[:t]), **KNOBS)
            assert sampled.logprobs[i][t] == pytest.approx(ref[token], abs=1e-4)
            assert sampled.raw_logprobs[i][t] == pytest.approx(log_softmax(logits[t])[token], abs=1e-4)
