"""The learning-rate schedules: update k uses the curve at step k + 1 (no wasted update at rate 0)."""

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
