"""Sweep overrides are applied like command-line overrides: fields derived from an overridden one follow it."""

import math

from experiments import pretrain_s2
from qwen3jax.experiment_cli import configure
from qwen3jax.train.optim import learning_rate_schedule


def test_a_sweep_over_steps_moves_the_fields_derived_from_it():
    base = pretrain_s2.get_config("qwen3_0_6b")  # the full-size S2 decays within the first half of its steps
    base.lock()  # as config_flags hands it over
    short = configure(base, {"steps": 60})
    assert (short.steps, short.optim.decay_steps) == (60, 30)
    assert (base.steps, base.optim.decay_steps) == (20_000, 10_000)  # the next sweep run starts from the original
    pinned = configure(base, {"steps": 60, "optim.decay_steps": 7})  # a derived field can still be set directly
    assert (pinned.steps, pinned.optim.decay_steps) == (60, 7)


def test_the_tiny_s2_decays_over_all_its_steps_however_many():
    """The tiny S2 reaches 1% of its peak at its last update and not before (cosine over the whole stage, the
    formula's value at the middle of the decay), also when a sweep shortens it."""
    base = pretrain_s2.get_config("tiny")
    base.lock()
    for steps in (base.steps, 60):
        c = configure(base, {"steps": steps})
        o, warmup = c.optim, c.optim.warmup_steps
        rate = learning_rate_schedule(o, c.steps)
        peak, end = o.peak_lr, o.peak_lr * o.end_lr_ratio
        middle = (c.steps - warmup) // 2  # update k uses the curve at step k + 1 = warmup + middle
        expected = end + (peak - end) * 0.5 * (1 + math.cos(math.pi * middle / (c.steps - warmup)))
        assert math.isclose(float(rate(warmup + middle - 1)), expected, rel_tol=1e-5)
        assert math.isclose(float(rate(c.steps - 1)), end, rel_tol=1e-5)
