"""The registry, RewardResult and the weighted combination; format, exact/numeric and multiple-choice rules."""

import math

import numpy as np
import pytest
from ml_collections import ConfigDict

from qwen3jax.chat import EMPTY_THINK
from qwen3jax.rewards import REWARDS, RewardResult, build_rewards
from qwen3jax.rewards.format import final_answer, format_violations, thinking_mode
from qwen3jax.rewards.match import answer_span, choice_letter, parse_number


def test_result_mask_and_metrics():
    result = RewardResult.from_judgements([1.0, "timeout", 0.5, "timeout", "unparsable_gold"])
    assert result.mask.tolist() == [True, False, True, False, False]
    assert result.masked_counts() == {"timeout": 2, "unparsable_gold": 1}
    metrics = result.metrics("r")
    assert metrics["r/mean"] == 0.75 and metrics["r/judged"] == 0.4 and metrics["r/masked/timeout"] == 2
    assert math.isnan(RewardResult.from_judgements(["timeout"]).metrics("r")["r/mean"])
    with pytest.raises(ValueError, match="finite"):
        RewardResult.from_judgements([float("nan")])
    with pytest.raises(ValueError, match="masked exactly"):
        RewardResult(np.zeros(1, np.float32), np.zeros(1, bool), (None,))


def test_registry_builds_from_config_and_fails_loudly():
    assert {"math", "format", "exact_match", "numeric_match", "multiple_choice"} <= set(REWARDS.names())
    with pytest.raises(KeyError, match="Did you mean 'math'"):
        build_rewards([{"name": "mathh"}])
    with pytest.raises(ValueError, match="bad options"):
        build_rewards([{"name": "numeric_match", "tolerance": 0.1}])
    with pytest.raises(ValueError, match="duplicate reward labels"):
        build_rewards([{"name": "format"}, {"name": "format"}])


def test_weighted_combination_against_hand_computed_sums():
    rewards = build_rewards(
        [ConfigDict({"name": "multiple_choice", "weight": 2.0}), ConfigDict({"name": "format", "weight": 0.5})]
    )
    prompts = ["Q /think", "Q /think", "Q /no_think", "Q /think"]
    completions = [
        "<think>\nhm\n</think>\n\nThe answer is (B).",  # right, well formed: 2 + 0.5
        "<think>\n\n</think>\n\nB",  # right, empty thinking in thinking mode: 2
        EMPTY_THINK + "A",  # wrong, well formed: 0.5
        "<think>\nhm\n</think>\n\nB",  # gold is not a letter: masked by the first component
    ]
    result, metrics = rewards.score(prompts, completions, gold=["B", "B", "B", "E"])
    assert result.scores.tolist() == [2.5, 2.0, 0.5, 0.0]
    assert result.mask.tolist() == [True, True, True, False]
    assert result.reasons[3] == "multiple_choice:unparsable_gold"
    assert metrics["reward/multiple_choice/masked/unparsable_gold"] == 1
    assert metrics["reward/format/mean"] == 0.75
    assert metrics["reward/total/mean"] == pytest.approx(5 / 3)
    assert metrics["reward/total/masked/multiple_choice:unparsable_gold"] == 1


def test_final_answer_is_after_the_last_think_close():
    assert final_answer("<think>\na\n</think>\n\n b <|im_end|>") == "b"
    assert final_answer("plain answer") == "plain answer"
    assert final_answer("<think>\nnever closed") is None


def test_thinking_mode_from_prompts():
    assert thinking_mode("solve this /no_think") is False
    assert thinking_mode("a /no_think then /think") is True
    assert thinking_mode("no switch", default=False) is False
    assert thinking_mode([{"role": "system", "content": "/no_think"}, {"role": "user", "content": "hi"}]) is False
    assert thinking_mode("path a/think is not a switch /thinking") is True


@pytest.mark.parametrize(
    "completion, thinking, problems",
    [
        ("<think>\nreason\n</think>\n\nanswer<|im_end|>", True, []),
        (EMPTY_THINK + "answer", False, []),
        (EMPTY_THINK + "answer", True, ["empty_thinking"]),
        ("<think>\nreason\n</think>\n\nanswer", False, ["thinking_in_no_think_mode"]),
        ("answer without a block", True, ["no_leading_think_block", "think_tags"]),
        ("intro <think>\nr\n</think>\n\nanswer", True, ["no_leading_think_block"]),
        ("<think>\nr\n</think>\n\n<think>\nr\n</think>\n\nanswer", True, ["stray_special_token", "think_tags"]),
        ("<think>\nr\n</think>\n\n", True, ["no_answer"]),
        ("<think>\nr<|im_start|>\n</think>\n\nanswer", True, ["stray_special_token"]),
        ("<think>\nr\n</think>\n\nanswer <tool_call>", True, ["stray_special_token"]),
        ("<think>\nr\n\nanswer", True, ["no_leading_think_block", "think_tags"]),
    ],
)
def test_format_violations(completion, thinking, problems):
    assert format_violations(completion, thinking) == problems


def test_answer_extraction_helpers():
    assert answer_span("</think>so \\boxed{\\frac{1}{2}} and \\boxed{7}") == "7"
    assert answer_span("</think>Working... The final answer is: Paris.") == "Paris."
    assert parse_number("it costs 1,234.50 dollars") == parse_number("1234.5")
    assert parse_number("ratio 3/4") * 4 == 3
    assert parse_number("none") is None
    assert choice_letter("</think>I think the answer is (C).") == "C"
    assert choice_letter("</think>\\boxed{B}") == "B"
    assert choice_letter("</think>B) because ...") == "B"
    assert choice_letter("<think>answer is A</think>\n\nNo idea.") is None
    assert choice_letter("</think>A is tempting, but the answer is D") == "D"
    assert choice_letter("</think>The answer is E", letters="ABCD") is None


def test_exact_and_numeric_match():
    exact = REWARDS.get("exact_match")()
    got = exact(["q"] * 3, ["</think>The answer is Alice.", "</think>\\boxed{alice}", "</think>Bob"],
                gold=["Alice", "Alice", "Alice"])  # fmt: skip
    assert got.scores.tolist() == [1.0, 1.0, 0.0]
    numeric = REWARDS.get("numeric_match")(rel_tol=0.01)
    got = numeric(["q"] * 4, ["</think>about 99.5", "</think>\\boxed{1,000}", "</think>98", "</think>1"],
                  gold=["100", "1000", "100", "two"])  # fmt: skip
    assert got.scores.tolist()[:3] == [1.0, 1.0, 0.0] and got.reasons[3] == "unparsable_gold"
