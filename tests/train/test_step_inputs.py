"""What the shared step gives a loss besides the batch: metrics that are not sums reduced by their declared
reduction (checked against the whole-batch formula), a distinct RNG key per micro-batch, and frozen models that are
read but never trained."""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3jax.model import ModelConfig
from qwen3jax.parallel import make_mesh
from qwen3jax.train.batch import TOKEN_FIELDS, Field
from qwen3jax.train.losses import PretrainLoss
from qwen3jax.train.state import create_train_state
from qwen3jax.train.step import FrozenModel, reduce_metrics, train_step

from .helpers import TINY_MODEL, tiny_config

CFG = ModelConfig.from_preset("tiny").replace(**TINY_MODEL)


@dataclasses.dataclass(frozen=True)
class ProbeLoss(PretrainLoss):
    """The pretraining loss plus per-micro-batch statistics of a float per-row field, and the RNG and frozen
    model it was given."""

    batch_spec: ClassVar = {**TOKEN_FIELDS, "score": Field(np.float32, ("batch",))}
    metric_reductions: ClassVar = {"score_mean": "mean", "score_max": "max", "score_min": "min", "key_max": "max",
                                   "key_min": "min"}  # fmt: skip

    def __call__(self, model, batch, ctx, *, frozen=None, rng=None):
        loss, metrics = super().__call__(model, batch, ctx)
        draw = jax.random.uniform(rng)
        metrics |= {"score_mean": jnp.mean(batch["score"]), "score_max": jnp.max(batch["score"]),
                    "score_min": jnp.min(batch["score"]), "score_sum": jnp.sum(batch["score"]),
                    "key_max": draw, "key_min": draw}  # fmt: skip
        if frozen:  # a KL-like pull towards the frozen model: its parameters must get no update
            ref = frozen["reference"](batch["tokens"], batch["positions"], batch["segment_ids"])
            mine = model(batch["tokens"], batch["positions"], batch["segment_ids"])
            metrics["gap"] = jnp.mean((mine - ref) ** 2)
            loss = loss + metrics["gap"]
        return loss, metrics


def _batch(b=8, t=16, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, CFG.vocab_size, (b, t)).astype(np.int32)
    ones = np.ones_like(tokens)
    return {"tokens": tokens, "segment_ids": ones, "positions": np.broadcast_to(np.arange(t), (b, t)).astype(np.int32),
            "loss_mask": ones, "score": rng.normal(size=b).astype(np.float32)}  # fmt: skip


def _state():
    state, _ = create_train_state(CFG, tiny_config().optim, 10, make_mesh({"data": 1}, jax.devices()[:1]))
    return state


@pytest.mark.parametrize("k", [1, 4])
def test_non_sum_metrics_follow_their_reduction_over_micro_batches(k):
    batch = _batch()
    _, metrics = jax.jit(lambda s, b: train_step(s, b, loss_fn=ProbeLoss(), num_micro_batches=k))(_state(), batch)
    score = batch["score"]
    # Micro-batch i holds rows i, i+k, ...: equally many rows each, so the mean of their means is the batch mean.
    np.testing.assert_allclose(metrics["score_mean"], score.mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["score_max"], score.max(), rtol=1e-6)
    np.testing.assert_allclose(metrics["score_min"], score.min(), rtol=1e-6)
    np.testing.assert_allclose(metrics["score_sum"], score.sum(), rtol=1e-5)  # undeclared: summed
    assert (metrics["key_max"] > metrics["key_min"]) == (k > 1)  # each micro-batch draws with its own key


def test_an_unknown_reduction_is_named():
    with pytest.raises(ValueError, match=r"metric_reductions \{'x': 'median'\}"):
        reduce_metrics({"x": jnp.ones(2)}, {"x": "median"})


def test_frozen_models_are_read_and_never_trained():
    state = _state()
    reference = FrozenModel(jax.tree.map(lambda x: x + 0.01, state.params), state.graphdef)
    before = jax.device_get(reference.params)
    step = jax.jit(lambda s, b, f: train_step(s, b, f, loss_fn=ProbeLoss()))
    new_state, metrics = step(state, _batch(), {"reference": reference})
    assert float(metrics["gap"]) > 0
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(reference.params), before)
    # The optimizer state holds moments of the trained parameters only.
    assert len(jax.tree.leaves(new_state.opt_state)) == len(jax.tree.leaves(_state().opt_state))
