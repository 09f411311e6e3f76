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


def test_the_thinking_budget_reaches_the_sampler_and_its_forced_text_is_not_trained(monkeypatch):
    """SPEC §4's budget in RL: the source passes `thinking_budget` to the sampler, and the tokens the sampler reports
    as forced (the stop-thinking text) stay in the row untrained while the policy's own tokens around them train."""
    tok = default_tokenizer(8192)
    stop = tok.token_to_id("<|im_end|>")
    chosen_before, forced_text, chosen_after = tok.encode("<think>\nab"), tok.encode("forced"), tok.encode("x") + [stop]
    seen = {}

    def fake_generate(model, prompts, *, n, **kwargs):
        seen.update(kwargs)
        tokens = [chosen_before + forced_text + chosen_after for _ in prompts for _ in range(n)]
        forced = [np.array([False] * len(chosen_before) + [True] * len(forced_text) + [False] * len(chosen_after))
                  for _ in tokens]  # fmt: skip
        logprobs = [np.full(len(t), -1.0, np.float32) for t in tokens]
        return GenerationResult(tokens, logprobs, logprobs, forced, ["stop"] * len(tokens), [len(t) for t in tokens])

    monkeypatch.setattr(rollout_source, "generate", fake_generate)
    config = types.SimpleNamespace(global_batch=4, seed=0, seq_len=256, rewards=[{"name": "format"}])
    layout = types.SimpleNamespace(to_global=lambda rows: rows)
    trainer = types.SimpleNamespace(config=config, layout=layout, tokenizer=tok, lend_frozen=None)
    source = rollout_source.RolloutSource(trainer, prompts="embedded:math", group_size=4, thinking_budget=3,
                                          dynamic_sampling=False)  # fmt: skip
    rows = source.next(types.SimpleNamespace(model=lambda: None))
    assert seen["thinking_budget"] == 3
    completion = chosen_before + forced_text + chosen_after
    # (equal rewards: no group signal, so the policy's tokens show in `sampled_mask`, the loss mask before that)
    for tokens, segments, sampled in zip(rows["tokens"], rows["segment_ids"], rows["sampled_mask"]):
        length = int(segments.sum())
        start = length - len(completion)
        assert tokens[start:length].tolist() == completion
        expected = [1] * len(chosen_before) + [0] * len(forced_text) + [1] * len(chosen_after)
        assert sampled[start:length].tolist() == expected and sampled[:start].sum() == 0
    with pytest.raises(ValueError, match="thinking_budget"):
        rollout_source.RolloutSource(trainer, prompts="embedded:math", group_size=4, thinking_budget=-2)
