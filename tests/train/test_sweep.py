"""Sweep overrides are applied like command-line overrides: fields derived from an overridden one follow it."""

from experiments import pretrain_s2
from qwen3jax.experiment_cli import configure


def test_a_sweep_over_steps_moves_the_fields_derived_from_it():
    base = pretrain_s2.get_config("tiny")
    base.lock()  # as config_flags hands it over
    short = configure(base, {"steps": 60})
    assert (short.steps, short.optim.decay_steps) == (60, 30)  # S2 decays over the first half of its steps
    assert (base.steps, base.optim.decay_steps) == (100, 50)  # the next run of the sweep starts from the original
    pinned = configure(base, {"steps": 60, "optim.decay_steps": 7})  # a derived field can still be set directly
    assert (pinned.steps, pinned.optim.decay_steps) == (60, 7)
