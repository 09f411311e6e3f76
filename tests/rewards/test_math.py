"""verify_answer: math-verify equivalences, answers only from after </think>, unparsable gold -> None, a killable
time-out, calls from threads, and the embedded corpus's exactly computed answers as the independent reference."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from qwen3jax.data.corpus import synthetic
from qwen3jax.rewards import REWARDS
from qwen3jax.rewards.math import VerifierPool, default_pool, verify_answer


def final(answer: str) -> str:
    return f"<think>\nLet me work it out.\n</think>\n\nThe answer is ${answer}$."


@pytest.mark.parametrize(
    "answer, gold",
    [
        ("0.5", r"\frac{1}{2}"),
        (r"\frac{1}{2}", "0.5"),
        ("(x+1)^2", "x^2+2x+1"),
        (r"\{3, 1, 2\}", r"\{1, 2, 3\}"),
        (r"\boxed{4, -3}", "-3, 4"),
        (r"50\%", "0.5"),
        (r"\boxed{2^{2} \times 3}", "2^2 × 3"),
        (r"\boxed{5\text{ cm}}", "5"),  # units stripped
        (r"\boxed{[1, 3)}", "[1,3)"),  # intervals
        (r"\boxed{(-\infty, 2]}", r"x \le 2"),
        (r"\boxed{(2, \infty)}", r"(2,\infty)"),  # an interval to infinity
    ],
)
def test_equivalent_answers_match(answer, gold):
    assert verify_answer(final(answer), gold) == 1.0


@pytest.mark.parametrize(
    "completion, gold",
    [
        (final("2"), "12"),  # no loose substring matching
        (final("12"), "2"),
        (final("(-2, 3)"), "(3, -2)"),  # an ordered pair is not a set
        (final(r"\boxed{(1, 3)}"), "[1,3)"),  # an open end is not a closed one
        ("<think>\nSo the answer is 12.\n</think>\n\nI am not sure.", "12"),  # answer only inside the think block
        ("<think>\nThe answer is \\boxed{12}", "12"),  # think block never closed: no final answer
        ("<think>\n\\boxed{12}\n</think>\n\n\\boxed{13}", "12"),
    ],
)
def test_wrong_or_hidden_answers_score_zero(completion, gold):
    assert verify_answer(completion, gold) == 0.0


@pytest.mark.parametrize("gold", ["Alice", "a blue whale", "", "???"])
def test_unparsable_gold_is_none(gold):
    assert verify_answer(final("12"), gold) is None


def test_pathological_expression_is_bounded_by_the_time_out():
    pool = VerifierPool(workers=1, timeout_s=2.0)
    try:
        pool.check("</think>x", "1")  # warm the worker: its imports are not part of a request's time-out
        start = time.monotonic()
        assert pool.check(r"</think>\boxed{(x+1)^{5000}}", "(x+2)^{5000}") == (None, "timeout")
        assert time.monotonic() - start < 30  # bounded (the hang would last minutes), not a speed check
        assert pool.timeouts == 1
        assert pool.check(final(r"\frac{2}{4}"), "1/2") == (1.0, None)  # a fresh worker replaced the killed one
    finally:
        pool.close()


def test_calls_from_threads():
    cases = [(final(str(n)), str(n if n % 3 else n + 1)) for n in range(24)]
    with ThreadPoolExecutor(6) as threads:
        got = list(threads.map(lambda c: verify_answer(*c), cases))
    assert got == [1.0 if n % 3 else 0.0 for n in range(24)]
    assert len(default_pool()._idle) <= default_pool().workers


@pytest.mark.parametrize("kind", sorted(k for k in synthetic.GENERATORS if k not in ("ordering", "knights_knaves")))
def test_corpus_answers_verify_against_their_generator(kind):
    """The generators compute answers exactly (Fractions); the boxed answer matches and a changed one does not."""
    for index in range(3):
        problem = synthetic.generate(kind, 0, index)
        assert verify_answer(f"</think>\n\\boxed{{{problem.answer}}}", problem.answer) == 1.0, problem
        wrong = problem.answer + "1" if problem.answer[-1].isdigit() else problem.answer + "+1"
        assert verify_answer(f"</think>\n\\boxed{{{wrong}}}", problem.answer) == 0.0, (problem, wrong)


def test_math_reward_masks_and_counts():
    reward = REWARDS.get("math")()
    result = reward(["q"] * 3, [final("3"), final("4"), final("3")], gold=["3", "3", "Alice"])
    assert result.scores.tolist()[:2] == [1.0, 0.0]
    assert result.mask.tolist() == [True, True, False]
    assert result.metrics("reward/math") == {
        "reward/math/mean": 0.5, "reward/math/judged": 2 / 3, "reward/math/masked/unparsable_gold": 1.0
    }  # fmt: skip
    with pytest.raises(KeyError, match="needs the per-completion field 'gold'"):
        reward(["q"], [final("3")])
