"""The rollout source's use of the rewards: a completion the rewards could not judge trains on nothing (no loss
mask, advantage 0), stays out of its group's statistics, and is counted in the step's metrics and the data report,
never scored as a silent 0."""

import types

import numpy as np
import pytest

from qwen3jax.data.tokenizer import default_tokenizer
from qwen3jax.rl import source as rollout_source
from qwen3jax.sample.result import GenerationResult

ANSWERS = ["A", "B", "C", "D"]  # one group; the stub judge scores them 10, 0, (no score), 5 out of 10
JUDGE_REPLIES = {"A": "Score: 10", "B": "Score: 0", "C": "I cannot tell.", "D": "Score: 5"}


def _judge(texts):
    return [JUDGE_REPLIES[text.split("Response:\n")[1][0]] for text in texts]


def test_an_unjudged_completion_is_out_of_the_update_and_counted(monkeypatch):
    tok = default_tokenizer(8192)
    stop = tok.token_to_id("<|im_end|>")

    def fake_generate(model, prompts, *, n, **_):
        tokens = [tok.encode(a) + [stop] for _ in prompts for a in ANSWERS[:n]]
        zeros = [np.zeros(len(t), np.float32) for t in tokens]
        return GenerationResult(tokens, zeros, zeros, [np.zeros(len(t), bool) for t in tokens], ["stop"] * len(tokens),
                                [len(t) for t in tokens])  # fmt: skip

    monkeypatch.setattr(rollout_source, "generate", fake_generate)
    config = types.SimpleNamespace(global_batch=4, seed=0, seq_len=256, rewards=[
        {"name": "judge", "generate": _judge, "reference_field": "gold"}])  # fmt: skip
    layout = types.SimpleNamespace(to_global=lambda rows: rows)
    trainer = types.SimpleNamespace(config=config, layout=layout, tokenizer=tok, lend_frozen=None)
    source = rollout_source.RolloutSource(trainer, prompts="embedded:math", group_size=4, thinking=False)
    rows = source.next(types.SimpleNamespace(model=lambda: None))

    # Judged rewards 1, 0, 0.5: mean 0.5, sample std 0.5; the unjudged completion gets no advantage and no loss.
    np.testing.assert_allclose(rows["advantages"], [1, -1, 0, 0], atol=1e-5)
    assert rows["loss_mask"][2].sum() == 0 and all(rows["loss_mask"][i].sum() > 0 for i in (0, 1))
    metrics = source.metrics()
    assert metrics["reward/judge/masked/unparsable_judge"] == 1 and metrics["masked_frac"] == 0.25
    assert metrics["reward/judge"] == pytest.approx(0.5) and metrics["reward_mean"] == pytest.approx(0.5)
    assert source.report()["masked"] == {"judge:unparsable_judge": 1}
