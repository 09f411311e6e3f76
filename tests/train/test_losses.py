"""The loss pieces: cross-entropy over vocabulary slices == over the whole vocabulary (values, argmax, gradients),
and the pretraining loss is the same with and without slicing the LM head."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from qwen3jax.train.loop import Trainer
from qwen3jax.train.losses import PretrainLoss, next_token_targets, token_cross_entropy

from ..model.helpers import DENSE, MOE, build, tokens
from .helpers import tiny_config


def _split(logits, sizes):
    return jnp.split(logits, np.cumsum(sizes)[:-1], axis=-1)


def test_sliced_cross_entropy_equals_whole_vocabulary():
    logits = jax.random.normal(jax.random.key(0), (3, 5, 37)) * 4
    targets = jax.random.randint(jax.random.key(1), (3, 5), 0, 37).at[0, :4].set(jnp.array([0, 9, 10, 36]))
    # A tie across slices: argmax over the whole vocabulary picks the first maximal index, and so must the slices.
    logits = logits.at[1, 2, 3].set(50.0).at[1, 2, 30].set(50.0)
    sizes = [10, 9, 9, 9]
    whole = token_cross_entropy([logits], targets)
    sliced = token_cross_entropy(_split(logits, sizes), targets)
    np.testing.assert_allclose(whole.ce, optax.softmax_cross_entropy_with_integer_labels(logits, targets), rtol=1e-6)
    np.testing.assert_allclose(whole.log_z, jax.nn.logsumexp(logits, -1), rtol=1e-6)
    np.testing.assert_array_equal(whole.argmax, jnp.argmax(logits, -1))
    np.testing.assert_allclose(sliced.ce, whole.ce, rtol=1e-6)
    np.testing.assert_allclose(sliced.log_z, whole.log_z, rtol=1e-6)
    np.testing.assert_array_equal(sliced.argmax, whole.argmax)
    assert sliced.argmax[1, 2] == 3

    weights = jax.random.uniform(jax.random.key(2), (3, 5))
    grad_whole = jax.grad(lambda x: jnp.sum(token_cross_entropy([x], targets).ce * weights))(logits)
    grad_sliced = jax.grad(lambda x: jnp.sum(token_cross_entropy(_split(x, sizes), targets).ce * weights))(logits)
    oracle = (jax.nn.softmax(logits) - jax.nn.one_hot(targets, 37)) * weights[..., None]
    np.testing.assert_allclose(grad_whole, oracle, atol=1e-6)
    np.testing.assert_allclose(grad_sliced, oracle, atol=1e-6)


def _loss_and_grads(cfg, loss_fn, batch):
    model = build(cfg)
    graphdef, params = nnx.split(model, nnx.Param)
    ctx = loss_fn.context(lambda: model, jax.tree.map(lambda x: x[None], batch))

    def loss(p):
        return loss_fn(nnx.merge(graphdef, p), batch, ctx)

    (value, metrics), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return value, metrics, grads


@pytest.mark.parametrize("cfg", [DENSE, DENSE.replace(tie_word_embeddings=True), MOE], ids=["untied", "tied", "moe"])
def test_pretrain_loss_is_the_same_with_a_sliced_head(cfg):
    toks = tokens(cfg, (2, 12))
    segments = jnp.array([[1] * 7 + [2] * 5, [1] * 10 + [0] * 2])
    batch = {"tokens": toks, "segment_ids": segments, "loss_mask": (segments > 0).astype(jnp.int32)}
    ref_value, ref_metrics, ref_grads = _loss_and_grads(cfg, PretrainLoss(vocab_slices=1, z_loss=1e-2), batch)
    value, metrics, grads = _loss_and_grads(cfg, PretrainLoss(vocab_slices=5, z_loss=1e-2), batch)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    assert metrics.keys() == ref_metrics.keys()
    for key in ref_metrics:
        np.testing.assert_allclose(metrics[key], ref_metrics[key], rtol=1e-6, err_msg=key)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads, ref_grads)


@pytest.mark.parametrize("bad", [0, -2, 2.5])
def test_vocab_slices_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="vocab_slices must be a positive integer"):
        PretrainLoss(vocab_slices=bad)


def test_the_experiment_config_sets_vocab_slices(tmp_path):
    assert Trainer(tiny_config(), tmp_path / "a").loss_fn.vocab_slices == 8
    assert Trainer(tiny_config(**{"loss.vocab_slices": 3}), tmp_path / "b").loss_fn.vocab_slices == 3


# Two rows of packed documents. Row 0: document 1, document 2, one padding slot; row 1: two documents. The loss mask
# differs from `segment_ids > 0`: it drops the start of a document (a prompt) and covers the padding slot.
_SEGMENTS = np.array([[1, 1, 1, 1, 2, 2, 2, 2, 2, 0], [3, 3, 3, 3, 3, 3, 4, 4, 4, 4]])
_LOSS_MASK = np.array([[1, 1, 1, 1, 0, 0, 1, 1, 1, 1], [1, 1, 0, 1, 1, 1, 1, 1, 1, 1]])
# Position t is trained on token t+1 iff that token is in the loss mask and in the same (real) document. Written out
# by hand: the last position of each document predicts nothing (row 0 t=3, row 1 t=5), nor does a position whose
# next token is masked (row 0 t=4, row 1 t=1) or padding (row 0 t=8), nor the last column.
_VALID = np.array([[1, 1, 1, 0, 0, 1, 1, 1, 0, 0], [1, 0, 1, 1, 1, 0, 1, 1, 1, 0]], bool)


def test_next_token_targets_follow_documents_and_the_loss_mask():
    tokens = np.arange(20).reshape(2, 10) + 5
    targets, valid = next_token_targets({"tokens": tokens, "segment_ids": _SEGMENTS, "loss_mask": _LOSS_MASK})
    np.testing.assert_array_equal(valid, _VALID)
    np.testing.assert_array_equal(np.where(_VALID, targets, -1), np.where(_VALID, np.roll(tokens, -1, axis=1), -1))


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_pretrain_loss_equals_a_numpy_log_softmax_reference():
    cfg = DENSE
    toks = np.asarray(tokens(cfg, (2, 10))) * (_SEGMENTS > 0)
    batch = {"tokens": jnp.asarray(toks), "segment_ids": jnp.asarray(_SEGMENTS), "loss_mask": jnp.asarray(_LOSS_MASK)}
    model = build(cfg)
    loss_fn = PretrainLoss(z_loss=1e-2, vocab_slices=3)

    @nnx.jit
    def loss_and_logits(model, batch):
        ctx = loss_fn.context(lambda: model, jax.tree.map(lambda x: x[None], batch))
        return loss_fn(model, batch, ctx), model(batch["tokens"], None, batch["segment_ids"])  # the full head

    (loss, metrics), logits = loss_and_logits(model, batch)
    logits = np.asarray(logits, np.float64)  # [B, T, V]
    log_probs = _log_softmax(logits)
    rows, cols = np.nonzero(_VALID)
    ce = -log_probs[rows, cols, toks[rows, cols + 1]]
    log_z = np.log(np.exp(logits).sum(-1))[rows, cols]
    assert metrics["target_tokens"] == _VALID.sum() == 13
    np.testing.assert_allclose(metrics["ce"], ce.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["z_loss"], 1e-2 * np.mean(log_z**2), rtol=1e-5)
    np.testing.assert_allclose(loss, ce.mean() + 1e-2 * np.mean(log_z**2), rtol=1e-5)
    accuracy = np.mean(logits[rows, cols].argmax(-1) == toks[rows, cols + 1])
    np.testing.assert_allclose(metrics["accuracy"], accuracy, atol=1e-6)
