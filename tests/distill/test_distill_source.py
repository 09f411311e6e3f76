"""The `distill` batch source's GKD mix: batch i is on-policy with probability lmbda (a seeded draw, the same
after a resume); with lmbda = 0 it yields the fixed dataset's rows exactly and resumes on the same batch; bad
settings are named."""

import numpy as np
import pytest

from experiments import distill_on_policy
from qwen3jax.data.pipeline import build_pretrain_iterator
from qwen3jax.distill.source import on_policy_draw
from qwen3jax.train.loop import Trainer


@pytest.mark.parametrize("lmbda", [0.0, 0.25, 0.5, 1.0])
def test_the_share_of_on_policy_batches_is_lmbda(lmbda):
    draws = [on_policy_draw(0, i, lmbda) for i in range(4000)]
    assert np.mean(draws) == pytest.approx(lmbda, abs=0.025)
    assert draws == [on_policy_draw(0, i, lmbda) for i in range(4000)]  # reproducible, so resumable
    assert lmbda in (0.0, 1.0) or draws != [on_policy_draw(1, i, lmbda) for i in range(4000)]  # seeded


def _trainer(tmp_path, **batch_source):
    c = distill_on_policy.get_config("tiny")
    c.model.update(vocab_size=8192, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                   num_kv_heads=1, head_dim=16)  # fmt: skip
    c.seq_len, c.global_batch = 256, 8
    c.batch_source.update(batch_source)
    return Trainer(c, tmp_path)


def test_without_on_policy_batches_the_source_is_the_fixed_dataset_and_resumes(tmp_path):
    trainer = _trainer(tmp_path, lmbda=0.0)
    source = trainer.batch_source()
    rows = build_pretrain_iterator(trainer.config.data, seq_len=256, batch_size=8, seed=0, process_index=0,
                                   process_count=1)  # fmt: skip
    for _ in range(2):
        expected, got = next(rows), source.next(None)  # no state needed: nothing is sampled
        for key, value in expected.items():
            np.testing.assert_array_equal(np.asarray(got[key]), value)
    saved = source.get_state()
    third = source.next(None)
    source.set_state(saved)
    np.testing.assert_array_equal(np.asarray(source.next(None)["tokens"]), np.asarray(third["tokens"]))
    assert source.metrics() == {"on_policy": 0.0} and source.report()["fixed_batches"] == 4


@pytest.mark.parametrize(
    "options, message",
    [({"lmbda": 1.5}, "lmbda"), ({"modes": ["thinking"]}, "modes"), ({"temperature": 0.0}, "temperature")],
)
def test_bad_source_settings_are_named(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        _trainer(tmp_path, **options).batch_source()
