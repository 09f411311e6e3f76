"""The run's eval against independent references: the loss against a NumPy log-softmax of the model's full logits,
bits per byte against the targets' byte lengths gathered in NumPy."""

import math

import jax
import numpy as np

from qwen3jax.train.evals import HeldOutLoss
from qwen3jax.train.loop import Trainer, configured_tokenizer_for
from qwen3jax.train.metrics import MetricsWriter

from .helpers import tiny_config


def _log_softmax(logits):
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_eval_loss_and_bits_per_byte_match_numpy(tmp_path):
    # A large init spreads the logits, so a wrong target or mask changes the loss (near-uniform logits would not).
    config = tiny_config(**{"eval.batches": 2, "model.init_std": 0.5})
    trainer = Trainer(config, tmp_path)
    state = trainer.init_state()
    trainer.source = trainer.batch_source()
    trainer.evaluator = HeldOutLoss(trainer)
    with jax.set_mesh(trainer.mesh):
        result = trainer.evaluate(state, 0, MetricsWriter(tmp_path, enabled=False))

    byte_lengths = configured_tokenizer_for(config).token_byte_lengths
    model = state.model()
    nats, targets, num_bytes = 0.0, 0, 0
    for _, batch in zip(range(config.eval.batches), trainer.source.eval_batches()):
        tokens, segments, mask = (np.asarray(batch[k]) for k in ("tokens", "segment_ids", "loss_mask"))
        log_probs = _log_softmax(np.asarray(model(tokens, batch["positions"], segments)))
        # Position t predicts token t + 1 of the same (real) document, where that token is trained on.
        valid = (segments[:, 1:] == segments[:, :-1]) & (segments[:, 1:] > 0) & (mask[:, 1:] > 0)
        next_tokens = tokens[:, 1:]
        picked = np.take_along_axis(log_probs[:, :-1], next_tokens[..., None], -1)[..., 0]
        nats -= picked[valid].sum()
        targets += valid.sum()
        num_bytes += byte_lengths[next_tokens[valid]].sum()
    assert result["eval/tokens"] == targets
    np.testing.assert_allclose(result["eval/loss"], nats / targets, rtol=1e-5)
    np.testing.assert_allclose(result["eval/bpb"], nats / math.log(2) / num_bytes, rtol=1e-5)
    assert abs(result["eval/loss"] - math.log(config.model.vocab_size)) > 0.5  # logits far from uniform
