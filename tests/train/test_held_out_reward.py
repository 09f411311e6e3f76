"""The held-out answer evaluation reads its prompts, rewards, mode and length from `eval.*`: with the generator
replaced by fixed replies (right for a known subset of prompts), the accuracy and mean reward equal the share of
right replies counted independently; the prompts are rendered in the configured thinking mode; the composed SFT
evaluator reports both the masked loss and the accuracy."""

import json
import types

import ml_collections
import numpy as np
import pytest

from qwen3jax.data.tokenizer import default_tokenizer
from qwen3jax.data.verifiable import load_verifiable
from qwen3jax.sample.result import GenerationResult
from qwen3jax.train import evals


def _trainer(tmp_path, **eval_overrides):
    config = ml_collections.ConfigDict(
        {"eval": {"name": "held_out_reward", "every": 1, "batches": 1, "prompts": "embedded:math", "num_prompts": 12,
                  "thinking": False, "max_new_tokens": 7, "rewards": [{"name": "exact_match"}]},
         "rewards": []}  # fmt: skip
    )
    config.eval.update(eval_overrides)
    return types.SimpleNamespace(config=config, tokenizer=default_tokenizer(8192), workdir=tmp_path, primary=True,
                                 lend_frozen=None)  # no model-based reward here


def _fake_generate(right: set[int], golds: list[str], tok, calls: list):
    def generate(model, prompts, *, max_new_tokens, stop_ids, vocab_limit):
        calls.append((prompts, max_new_tokens))
        replies = [f"The final answer is $\\boxed{{{g if i in right else g + '1'}}}$." for i, g in enumerate(golds)]
        tokens = [tok.encode(r) + [stop_ids[0]] for r in replies]
        none = [None] * len(tokens)
        return GenerationResult(tokens, none, none, none, ["stop"] * len(tokens), [len(t) for t in tokens])

    return generate


@pytest.mark.parametrize("thinking", [False, True])
def test_accuracy_is_the_share_of_right_answers_counted_independently(tmp_path, monkeypatch, thinking):
    trainer = _trainer(tmp_path, thinking=thinking)
    records = load_verifiable("embedded:math", "eval")[:12]
    right = {0, 3, 4, 9}
    calls = []
    monkeypatch.setattr("qwen3jax.sample.generate",
                        _fake_generate(right, [r["gold"] for r in records], trainer.tokenizer, calls))  # fmt: skip
    evaluator = evals.HeldOutReward(trainer)
    metrics = evaluator(types.SimpleNamespace(model=lambda: None, step=np.int32(5)))
    assert metrics["eval/accuracy"] == pytest.approx(len(right) / 12)
    assert metrics["eval/reward_mean"] == pytest.approx(len(right) / 12) and metrics["eval/masked_frac"] == 0
    prompts, max_new = calls[0]
    assert len(prompts) == 12 and max_new == 7
    rendered = trainer.tokenizer.decode(prompts[0])
    assert records[0]["prompt"] in rendered and rendered.endswith("<think>\n\n</think>\n\n") != thinking
    rows = [json.loads(line) for line in open(tmp_path / "eval_samples.jsonl")]
    assert [r["reward"] for r in rows] == [1.0, 0.0, 0.0, 1.0] and all(r["step"] == 5 for r in rows)


def test_each_reward_reports_its_own_mean_beside_the_weighted_accuracy(tmp_path, monkeypatch):
    """A weight-0 format reward beside the answer check: the accuracy counts right answers only, while the format
    mean counts every well-formed reply (a closed think block and an answer), right or wrong."""
    rewards = [{"name": "exact_match"}, {"name": "format", "weight": 0.0}]
    trainer = _trainer(tmp_path, thinking=True, rewards=rewards)
    records = load_verifiable("embedded:math", "eval")[:12]
    golds = [r["gold"] for r in records]
    monkeypatch.setattr("qwen3jax.sample.generate", _fake_generate({1, 2}, golds, trainer.tokenizer, []))
    metrics = evals.HeldOutReward(trainer)(types.SimpleNamespace(model=lambda: None, step=np.int32(0)))
    # The fake replies have no think block: in thinking mode every one breaks the format.
    assert metrics["eval/accuracy"] == pytest.approx(2 / 12) and metrics["eval/reward/format/mean"] == 0.0
    assert metrics["eval/reward/exact_match/mean"] == pytest.approx(2 / 12)
    monkeypatch.setattr("qwen3jax.sample.generate", _fake_generate({1, 2}, golds, trainer.tokenizer, []))
    rewards[1]["default_thinking"] = False  # the reward judges the format of the eval's mode
    trainer = _trainer(tmp_path, thinking=False, rewards=rewards)  # the empty think block is the prompt's
    metrics = evals.HeldOutReward(trainer)(types.SimpleNamespace(model=lambda: None, step=np.int32(0)))
    assert metrics["eval/reward/format/mean"] == 1.0 and metrics["eval/accuracy"] == pytest.approx(2 / 12)


def test_missing_settings_are_one_line_errors(tmp_path):
    with pytest.raises(evals.EvalError, match="needs eval.prompts"):
        evals.HeldOutReward(_trainer(tmp_path, prompts=""))
    with pytest.raises(evals.EvalError, match="needs eval.num_prompts >= 1"):
        evals.HeldOutReward(_trainer(tmp_path, num_prompts=0))
    with pytest.raises(evals.EvalError, match="needs eval.rewards"):
        evals.HeldOutReward(_trainer(tmp_path, rewards=[]))


def test_the_composite_evaluator_reports_the_masked_loss_and_the_accuracy(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, name="composite", parts=["held_out_loss", "held_out_reward"])
    monkeypatch.setattr(evals.HeldOutLoss, "__call__", lambda self, state: {"eval/loss": 1.5, "eval/tokens": 10.0})
    monkeypatch.setattr(evals.HeldOutReward, "__call__", lambda self, state: {"eval/accuracy": 0.25})
    metrics = evals.EVALS.get("composite")(trainer)(None)
    assert metrics == {"eval/loss": 1.5, "eval/tokens": 10.0, "eval/accuracy": 0.25}
    with pytest.raises(evals.EvalError, match="needs eval.parts"):
        evals.EVALS.get("composite")(_trainer(tmp_path, name="composite", parts=[]))


def test_thinking_switch_counts_replies_that_follow_the_flag(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, name="thinking_switch", num_prompts=4)
    tok = trainer.tokenizer
    # Prompts alternate /think, /no_think. /think replies: full, empty (wrong), no think block (wrong), unclosed
    # (right: judged by the opening); /no_think replies: empty, empty, full (wrong), empty.
    replies = ["<think>\nwork\n</think>\n\nA", "<think>\n\n</think>\n\nA", "<think>\n\n</think>\n\nA",
               "<think>\n\n</think>\n\nA", "A", "<think>\nwork\n</think>\n\nA", "<think>\nx y",
               "<think>\n\n</think>\n\nA"]  # fmt: skip
    seen = []

    def generate(model, prompts, *, max_new_tokens, stop_ids, vocab_limit):
        seen.extend(tok.decode(p) for p in prompts)
        tokens = [tok.encode(r) + [stop_ids[0]] for r in replies]
        none = [None] * len(tokens)
        return GenerationResult(tokens, none, none, none, ["stop"] * len(tokens), [len(t) for t in tokens])

    monkeypatch.setattr("qwen3jax.sample.generate", generate)
    metrics = evals.EVALS.get("thinking_switch")(trainer)(types.SimpleNamespace(model=lambda: None, step=3))
    assert metrics == {"eval/think_nonempty_frac": 2 / 4, "eval/no_think_empty_frac": 3 / 4}
    assert seen[0].endswith("/think<|im_end|>\n<|im_start|>assistant\n") and "/no_think" in seen[1]
