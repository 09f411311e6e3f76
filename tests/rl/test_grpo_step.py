"""The `grpo` loss through THE train step on rollout rows equals the objective computed independently from the
model's full logits with NumPy (log-softmax, token alignment, clipping, aggregation, k3 KL to a reference), its
`entropy` metric the mean entropy over every sampled token, and two micro-batches give the same loss and gradient
norm as one batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3jax.model import ModelConfig
from qwen3jax.parallel import make_mesh
from qwen3jax.rl.loss import GrpoLoss
from qwen3jax.rl.rows import rollout_rows
from qwen3jax.train.state import create_train_state
from qwen3jax.train.step import FrozenModel, train_step
from tests.rl.test_objective import reference_loss
from tests.train.helpers import TINY_MODEL, tiny_config


def _log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _setup(seed=0):
    cfg = ModelConfig.from_dict(dict(ModelConfig.from_preset("tiny").to_dict(), **TINY_MODEL))
    mesh = make_mesh({"data": 1, "fsdp": 1, "expert": 1, "context": 1, "tensor": 1}, jax.devices()[:1])
    optim = tiny_config().optim
    state, _ = create_train_state(cfg, optim, 10, mesh, seed=seed)
    rng = np.random.default_rng(seed)
    prompts = [list(rng.integers(1, 500, 5)) for _ in range(4)]
    completions = [list(rng.integers(1, 500, n)) for n in (6, 3, 7, 5)]
    forced = [np.zeros(len(c)) for c in completions]
    forced[2][3] = 1  # a budget-forced token is not trained
    sampled = [rng.normal(-6.5, 0.4, len(c)) for c in completions]  # near log(1/512): ratios around 1
    rows = rollout_rows(prompts, completions, sampled, forced, np.array([1.2, -0.8, 0.5, -1.5]),
                        np.array([True, True, True, False]), seq_len=16)  # fmt: skip
    return cfg, mesh, state, rows


def _reference(state, rows, loss: GrpoLoss, ref_state=None):
    """NumPy: the model's full logits → log-probs of each target token, then the formula loop of test_objective."""

    def target_logp(params):
        model = state.model(params)
        logits = np.asarray(model(jnp.asarray(rows["tokens"]), jnp.asarray(rows["positions"]),
                                  jnp.asarray(rows["segment_ids"])), np.float64)  # fmt: skip
        logp = _log_softmax(logits)
        return np.take_along_axis(logp[:, :-1], rows["tokens"][:, 1:, None], axis=-1)[..., 0]

    mask = rows["loss_mask"][:, 1:].astype(bool) & (rows["segment_ids"][:, 1:] == rows["segment_ids"][:, :-1])
    logp = target_logp(state.params)
    ref = None if ref_state is None else target_logp(ref_state.params)
    total, _, _ = reference_loss(logp, rows["old_logprobs"][:, 1:].astype(np.float64), rows["advantages"], mask,
                                 eps_low=loss.eps_low, eps_high=loss.eps_high, beta=loss.beta, ref=ref,
                                 aggregation=loss.aggregation, max_tokens=loss.max_tokens)  # fmt: skip
    return total


def _reference_entropy(state, rows):
    """NumPy: the mean entropy of the model's full softmax at the positions predicting each sampled token."""
    logits = np.asarray(state.model()(jnp.asarray(rows["tokens"]), jnp.asarray(rows["positions"]),
                                      jnp.asarray(rows["segment_ids"])), np.float64)  # fmt: skip
    logp = _log_softmax(logits)
    entropy = -(np.exp(logp) * logp).sum(-1)[:, :-1]
    sampled = rows["sampled_mask"][:, 1:].astype(bool)
    return entropy[sampled].mean()


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean", "constant"])
def test_grpo_step_loss_equals_the_numpy_reference(aggregation):
    cfg, mesh, state, rows = _setup()
    loss = GrpoLoss(aggregation=aggregation, max_tokens=8, vocab_slices=3)
    batch = {k: jnp.asarray(v) for k, v in rows.items()}
    _, metrics = jax.jit(lambda s, b: train_step(s, b, loss_fn=loss))(state, batch)
    assert float(metrics["loss"]) == pytest.approx(_reference(state, rows, loss), rel=2e-5)
    assert float(metrics["completion_tokens"]) == 6 + 3 + 6  # row 4 untrained, one forced token dropped
    # The entropy counts every sampled token, row 4's too (not the forced one).
    assert rows["sampled_mask"].sum() == 6 + 3 + 6 + 5
    assert float(metrics["entropy"]) == pytest.approx(_reference_entropy(state, rows), rel=1e-5)


def test_a_batch_without_signal_reports_its_policys_entropy():
    """No trained token at all (every group without signal): the entropy is still the mean over the sampled tokens,
    not 0."""
    _, _, state, rows = _setup()
    rows["loss_mask"][:] = 0
    loss = GrpoLoss(vocab_slices=3)
    _, metrics = jax.jit(lambda s, b: train_step(s, b, loss_fn=loss))(state, {k: jnp.asarray(v) for k, v in rows.items()})
    assert float(metrics["entropy"]) == pytest.approx(_reference_entropy(state, rows), rel=1e-5)


def test_grpo_step_with_reference_kl_and_micro_batches():
    cfg, mesh, state, rows = _setup()
    _, _, ref_state, _ = _setup(seed=1)  # another model as the frozen reference
    loss = GrpoLoss(beta=0.1, vocab_slices=2)
    batch = {k: jnp.asarray(v) for k, v in rows.items()}
    frozen = {"reference": FrozenModel(ref_state.params, ref_state.graphdef)}
    one = jax.jit(lambda s, b, f: train_step(s, b, f, loss_fn=loss))(state, batch, frozen)[1]
    two = jax.jit(lambda s, b, f: train_step(s, b, f, loss_fn=loss, num_micro_batches=2))(state, batch, frozen)[1]
    assert float(one["loss"]) == pytest.approx(_reference(state, rows, loss, ref_state), rel=2e-5)
    assert float(one["kl"]) > 0
    for key in ("loss", "grad_norm", "kl", "clip_frac", "entropy"):
        assert float(two[key]) == pytest.approx(float(one[key]), rel=1e-5), key
    with pytest.raises(ValueError, match="needs the frozen model 'reference'"):
        jax.jit(lambda s, b: train_step(s, b, loss_fn=loss))(state, batch)


def test_grpo_settings_are_checked():
    with pytest.raises(ValueError, match="aggregation"):
        GrpoLoss(aggregation="sum")
    with pytest.raises(ValueError, match="eps_low"):
        GrpoLoss(eps_low=1.5)
