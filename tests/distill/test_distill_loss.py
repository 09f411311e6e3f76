"""The `distill` loss through THE train step equals the divergence computed independently with NumPy from both
models' full float64 logits (forward KL, reverse KL, JSD at several betas, the teacher's top-k with a tail bucket,
temperature, the trained-token mask); vocabulary slices and micro-batches change nothing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3jax.distill.loss import DistillLoss
from qwen3jax.model import ModelConfig
from qwen3jax.parallel import make_mesh
from qwen3jax.rl.rows import rollout_rows
from qwen3jax.train.batch import TOKEN_FIELDS
from qwen3jax.train.state import create_train_state
from qwen3jax.train.step import FrozenModel, train_step
from tests.train.helpers import TINY_MODEL, tiny_config


def _state(seed, **sizes):
    cfg = ModelConfig.from_dict(dict(ModelConfig.from_preset("tiny").to_dict(), **{**TINY_MODEL, **sizes}))
    mesh = make_mesh({"data": 1, "fsdp": 1, "expert": 1, "context": 1, "tensor": 1}, jax.devices()[:1])
    return create_train_state(cfg, tiny_config().optim, 10, mesh, seed=seed)[0]


@pytest.fixture(scope="module")
def setup():
    student = _state(0)
    teacher = _state(1, hidden_size=64, intermediate_size=128)  # a bigger model with the same vocabulary
    teacher = teacher.replace(params=jax.tree.map(lambda x: 3 * x, teacher.params))  # sharper distributions
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(1, 500, n)) for n in (5, 3, 6, 4)]
    completions = [list(rng.integers(1, 500, n)) for n in (6, 3, 7, 5)]
    forced = [np.zeros(len(c)) for c in completions]
    forced[2][3] = 1  # a token the sampler forced is not trained
    rows = rollout_rows(prompts, completions, [np.zeros(len(c)) for c in completions], forced, np.zeros(4),
                        np.array([True, True, True, False]), seq_len=16)  # fmt: skip
    batch = {k: jnp.asarray(rows[k]) for k in TOKEN_FIELDS}
    return student, teacher, batch


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _divergence(p_s, p_t, beta):
    """Per-position divergence of probability vectors (last axis), written from the definitions."""
    with np.errstate(divide="ignore", invalid="ignore"):
        def kl(p, q):
            return np.where(p > 0, p * np.log(p / q), 0.0).sum(-1)

        if beta == 0:
            return kl(p_t, p_s)
        if beta == 1:
            return kl(p_s, p_t)
        m = beta * p_t + (1 - beta) * p_s
        return beta * kl(p_t, m) + (1 - beta) * kl(p_s, m)


def reference(student, teacher, batch, *, beta, temperature=1.0, top_k=0):
    """NumPy, float64: the mean divergence over trained next-token positions."""

    def probs(state):
        logits = state.model()(batch["tokens"], batch["positions"], batch["segment_ids"])
        return np.exp(_log_softmax(np.asarray(logits, np.float64)[:, :-1] / temperature))

    p_s, p_t = probs(student), probs(teacher)
    if top_k:
        top = np.argsort(-p_t, axis=-1, kind="stable")[..., :top_k]

        def coarse(p):
            kept = np.take_along_axis(p, top, axis=-1)
            return np.concatenate([kept, 1 - kept.sum(-1, keepdims=True)], axis=-1)

        p_s, p_t = coarse(p_s), coarse(p_t)
    seg, mask = np.asarray(batch["segment_ids"]), np.asarray(batch["loss_mask"])
    trained = (mask[:, 1:] > 0) & (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
    return _divergence(p_s, p_t, beta)[trained].mean(), trained.sum()


def _step(student, teacher, batch, loss, micro=1):
    frozen = {"teacher": FrozenModel(teacher.params, teacher.graphdef)}
    fn = jax.jit(lambda s, b, f: train_step(s, b, f, loss_fn=loss, num_micro_batches=micro))
    return {k: float(v) for k, v in fn(student, batch, frozen)[1].items()}


@pytest.mark.parametrize(
    "beta, temperature, top_k, slices",
    [(0.0, 1.0, 0, 3), (1.0, 1.0, 0, 1), (0.3, 2.0, 0, 3), (0.5, 1.0, 5, 3), (1.0, 0.5, 7, 1)],
)
def test_the_distill_loss_equals_the_numpy_divergence(setup, beta, temperature, top_k, slices):
    student, teacher, batch = setup
    loss = DistillLoss(beta=beta, temperature=temperature, top_k=top_k, vocab_slices=slices)
    metrics = _step(student, teacher, batch, loss)
    expected, tokens = reference(student, teacher, batch, beta=beta, temperature=temperature, top_k=top_k)
    assert expected > 1e-3  # the two models differ: a real comparison
    assert metrics["loss"] == pytest.approx(expected, rel=1e-4)
    assert metrics["distill_tokens"] == tokens == 6 + 3 + 6  # row 4 untrained, one forced token dropped


def test_vocab_slices_and_micro_batches_change_neither_loss_nor_gradient(setup):
    student, teacher, batch = setup
    one = _step(student, teacher, batch, DistillLoss(beta=0.5, vocab_slices=1))
    other = _step(student, teacher, batch, DistillLoss(beta=0.5, vocab_slices=5), micro=2)
    for key in ("loss", "grad_norm"):
        assert other[key] == pytest.approx(one[key], rel=1e-5), key
    assert one["grad_norm"] > 0


def test_a_missing_teacher_and_bad_settings_are_named(setup):
    student, _, batch = setup
    with pytest.raises(ValueError, match="frozen model 'teacher'"):
        jax.jit(lambda s, b: train_step(s, b, loss_fn=DistillLoss()))(student, batch)
    with pytest.raises(ValueError, match="beta must be in"):
        DistillLoss(beta=1.5)
    with pytest.raises(ValueError, match="top_k must be in"):
        _step(student, setup[1], batch, DistillLoss(top_k=512))
