"""The learning-rate schedules: update k uses the curve at step k + 1 (no wasted update at rate 0)."""

import math

import pytest

from experiments import pretrain_s1
from qwen3jax.train.optim import learning_rate_schedule


@pytest.mark.parametrize("kind", ["cosine", "wsd"])
def test_schedule_starts_above_zero_peaks_after_warmup_and_ends_at_the_final_rate(kind):
    optim = pretrain_s1.get_config("tiny").optim
    optim.update(schedule=kind, peak_lr=1.0, warmup_steps=4, end_lr_ratio=0.1, decay_fraction=0.5)
    rate = learning_rate_schedule(optim, total_steps=20)
    assert [float(rate(k)) for k in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert float(rate(19)) == pytest.approx(0.1)  # the run's last update
    assert all(float(rate(k)) >= float(rate(k + 1)) for k in range(3, 19))
    if kind == "wsd":
        assert [float(rate(k)) for k in range(3, 10)] == pytest.approx([1.0] * 7)  # stable until the last half


@pytest.mark.parametrize(
    ("field", "value"),
    [("peak_lr", float("nan")), ("peak_lr", -0.003), ("peak_lr", 0.0), ("b1", 1.0), ("b2", -0.1), ("eps", 0.0),
     ("weight_decay", float("inf")), ("clip_norm", -1.0), ("end_lr_ratio", 1.5), ("decay_fraction", float("nan")),
     ("warmup_steps", -1), ("max_nonfinite_steps", 0), ("warmup_steps", 2.5)],
)  # fmt: skip
def test_every_numeric_optimiser_setting_is_checked_up_front(field, value):
    from qwen3jax.train.optim import check_optimizer_settings

    optim = dict(pretrain_s1.get_config("tiny").optim)
    check_optimizer_settings(optim)  # the defaults pass
    optim[field] = value
    with pytest.raises(ValueError, match=rf"^optim\.{field} must be a"):
        check_optimizer_settings(optim)


def test_skip_nonfinite_is_apply_if_finite_and_also_refuses_a_non_finite_update():
    import jax.numpy as jnp
    import numpy as np
    import optax

    from qwen3jax.train.optim import skip_nonfinite

    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    grads = [{"w": jnp.array([0.5, 0.1, -0.3])}, {"w": jnp.array([jnp.nan, 0.0, 0.0])}, {"w": jnp.array([1.0, 2.0, 3.0])}]
    ours, reference = skip_nonfinite(optax.adam(0.1)), optax.apply_if_finite(optax.adam(0.1), 10)
    s_ours, s_ref = ours.init(params), reference.init(params)
    for g in grads:  # finite, non-finite gradient, finite: the same updates and counters as optax's
        u_ours, s_ours = ours.update(g, s_ours, params)
        u_ref, s_ref = reference.update(g, s_ref, params)
        np.testing.assert_array_equal(u_ours["w"], u_ref["w"])
        assert (bool(s_ours.last_finite), int(s_ours.total_notfinite)) == (bool(s_ref.last_finite), int(s_ref.total_notfinite))
    # A finite gradient with a non-finite update (a NaN rate): optax applies it, ours leaves weights and state alone.
    broken = skip_nonfinite(optax.sgd(float("nan")))
    state = broken.init(params)
    updates, after = broken.update(grads[0], state, params)
    assert not np.isfinite(optax.apply_if_finite(optax.sgd(float("nan")), 10).update(grads[0], state, params)[0]["w"]).any()
    np.testing.assert_array_equal(updates["w"], np.zeros(3))
    assert (bool(after.last_finite), int(after.notfinite_count), int(after.total_notfinite)) == (False, 1, 1)


def _cosine(s, peak, warmup, decay, end):
    """Linear warmup to `peak` over `warmup` steps, then cosine to `end` over `decay` steps, then `end`."""
    if s < warmup:
        return peak * s / warmup
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * min((s - warmup) / decay, 1.0)))


def _wsd(s, peak, warmup, stable, decay, end):
    if s < warmup:
        return peak * s / warmup
    if s < warmup + stable:
        return peak
    return peak + (end - peak) * min((s - warmup - stable) / decay, 1.0)


@pytest.mark.parametrize("decay_steps", [0, 7])
def test_cosine_schedule_follows_its_formula_at_every_update(decay_steps):
    optim = pretrain_s1.get_config("tiny").optim
    optim.update(schedule="cosine", peak_lr=2.0, warmup_steps=5, end_lr_ratio=0.1, decay_steps=decay_steps)
    rate = learning_rate_schedule(optim, total_steps=30)
    decay = decay_steps or 25
    for k in range(30):  # update k uses the curve at k + 1
        assert float(rate(k)) == pytest.approx(_cosine(k + 1, 2.0, 5, decay, 0.2), rel=1e-5), k


def test_wsd_schedule_follows_its_formula_at_every_update():
    optim = pretrain_s1.get_config("tiny").optim
    optim.update(schedule="wsd", peak_lr=2.0, warmup_steps=5, end_lr_ratio=0.1, decay_fraction=0.3)
    rate = learning_rate_schedule(optim, total_steps=40)
    for k in range(40):  # decay over the last 12 of 40 steps, after 5 warmup and 23 stable steps
        assert float(rate(k)) == pytest.approx(_wsd(k + 1, 2.0, 5, 23, 12, 0.2), rel=1e-5), k
