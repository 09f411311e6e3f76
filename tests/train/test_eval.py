"""The run's eval against independent references: the loss against a NumPy log-softmax of the model's full logits,
bits per byte against the targets' byte lengths gathered in NumPy; the end-of-run samples against the NumPy sampling
distribution of the configured decoding settings."""

import math

import jax
import numpy as np

import qwen3jax.sample
from qwen3jax.train.evals import HeldOutLoss, TextSamples
from qwen3jax.train.loop import Trainer, configured_tokenizer_for
from qwen3jax.train.metrics import MetricsWriter

from ..sample.helpers import sampling_log_probs, step_logits
from .helpers import tiny_config


def _log_softmax(logits):
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_eval_loss_and_bits_per_byte_match_numpy(tmp_path):
    # A large init spreads the logits, so a wrong target or mask changes the loss (near-uniform logits would not).
    config = tiny_config(**{"eval.batches": 2, "model.init_std": 0.5, "eval.long_from": 20})
    trainer = Trainer(config, tmp_path)
    state = trainer.init_state()
    trainer.source = trainer.batch_source()
    trainer.evaluator = HeldOutLoss(trainer)
    with jax.set_mesh(trainer.mesh):
        result = trainer.evaluate(state, 0, MetricsWriter(tmp_path, enabled=False))

    byte_lengths = configured_tokenizer_for(config).token_byte_lengths
    model = state.model()
    nats, targets, num_bytes, long_nats, long_targets = 0.0, 0, 0, 0.0, 0
    for _, batch in zip(range(config.eval.batches), trainer.source.eval_batches()):
        tokens, segments, mask = (np.asarray(batch[k]) for k in ("tokens", "segment_ids", "loss_mask"))
        log_probs = _log_softmax(np.asarray(model(tokens, batch["positions"], segments)))
        # Position t predicts token t + 1 of the same (real) document, where that token is trained on.
        valid = (segments[:, 1:] == segments[:, :-1]) & (segments[:, 1:] > 0) & (mask[:, 1:] > 0)
        next_tokens = tokens[:, 1:]
        picked = np.take_along_axis(log_probs[:, :-1], next_tokens[..., None], -1)[..., 0]
        nats -= picked[valid].sum()
        targets += valid.sum()
        long = valid & (np.asarray(batch["positions"])[:, 1:] >= 20)  # the predicted token's document position
        long_nats -= picked[long].sum()
        long_targets += long.sum()
        num_bytes += byte_lengths[next_tokens[valid]].sum()
    assert result["eval/tokens"] == targets
    np.testing.assert_allclose(result["eval/loss"], nats / targets, rtol=1e-5)
    np.testing.assert_allclose(result["eval/bpb"], nats / math.log(2) / num_bytes, rtol=1e-5)
    assert result["eval/tokens_long"] == long_targets and 0 < long_targets < targets
    np.testing.assert_allclose(result["eval/loss_long"], long_nats / long_targets, rtol=1e-5)
    assert abs(result["eval/loss"] - math.log(config.model.vocab_size)) > 0.5  # logits far from uniform


def test_samples_are_drawn_with_the_configured_decoding(tmp_path, monkeypatch):
    """Each sampled token's log-prob equals the NumPy sampling distribution's under the config's temperature, top-k,
    top-p and presence penalty (greedy decoding would give 0, another setting another value); the written text is
    the prompts followed by those tokens."""
    decoding = dict(temperature=0.7, top_k=20, top_p=0.8, presence_penalty=0.5)
    samples = {f"samples.{k}": v for k, v in decoding.items()}
    config = tiny_config(**samples, **{"samples.num": 2, "samples.max_new_tokens": 8, "samples.seed": 3,
                                      "model.init_std": 0.5})  # fmt: skip
    trainer = Trainer(config, tmp_path)
    state = trainer.init_state()
    calls, real_generate = [], qwen3jax.sample.generate

    def recording_generate(*args, **kwargs):
        calls.append(real_generate(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(qwen3jax.sample, "generate", recording_generate)
    text = TextSamples(trainer)(state)

    (result,) = calls
    tok, model = trainer.tokenizer, state.model()
    prompts = [tok.encode(p) for p in list(config.samples.prompts)[:2]]
    for prompt, generated, logprobs in zip(prompts, result.tokens, result.logprobs):
        logits = step_logits(model, prompt, generated, len(prompt) + len(generated))
        expected = [
            sampling_log_probs(logits[t], set(generated[:t]), **decoding)[token] for t, token in enumerate(generated)
        ]
        np.testing.assert_allclose(logprobs, expected, rtol=1e-4, atol=1e-5)
        assert np.all(np.isfinite(expected)) and min(expected) < -0.1  # inside the kept set, and not greedy
    assert text == "\n".join(
        f"--- prompt: {p!r}\n{p}{tok.decode(ids)}\n" for p, ids in zip(config.samples.prompts, result.tokens)
    )
