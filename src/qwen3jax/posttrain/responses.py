"""A teacher for tiny-scale curation: the embedded generators' worked solutions written as thinking responses.

A tiny model is no useful teacher, so the cold-start pipeline at tiny scale samples its "teacher" responses from
the problems' own worked solutions (`Problem.solution`) in the thinking format, mixed with deliberately flawed
variants, one per response filter, so that every filter has something to remove and its count can be checked.
Real runs sample a checkpoint or HF folder through the generation engine instead.
"""

from __future__ import annotations

import random

from qwen3jax.data.corpus.synthetic import Problem

# Each flaw is built to be caught by the response filter of the same name (qwen3jax.posttrain.filters).
FLAWS = ("wrong_answer", "repetition", "guessing", "inconsistent_thinking", "language_mixing", "near_validation")


def thinking_response(thinking: str, answer: str) -> str:
    """A response in Qwen3's thinking format: the think block, then the final summary with a boxed answer."""
    return f"<think>\n{thinking.strip()}\n</think>\n\nThe final answer is $\\boxed{{{answer}}}$."


def worked_solution(problem: Problem) -> str:
    """The problem's worked solution as thinking, concluding with its answer."""
    return thinking_response(f"{problem.solution}\nSo the answer is {problem.answer}.", problem.answer)


def direct_answer(answer: str) -> str:
    """A non-thinking response: the empty think block, then the boxed answer."""
    return f"<think>\n\n</think>\n\nThe final answer is $\\boxed{{{answer}}}$."


def _wrong(answer: str) -> str:
    """A different answer of the same look (a number off by one, or a word marked wrong)."""
    try:
        return str(int(answer) + 1)
    except ValueError:
        return f"not {answer}"


def flawed_solution(problem: Problem, flaw: str, rng: random.Random, validation: Problem) -> str:
    """A response to `problem` with one deliberate flaw; `validation` is a held-out problem it may copy from."""
    steps = problem.solution.strip().split("\n")
    if flaw == "wrong_answer":
        wrong = _wrong(problem.answer)
        return thinking_response(f"{problem.solution}\nSo the answer is {wrong}.", wrong)
    if flaw == "repetition":
        looped = "\n".join([*steps, *[steps[rng.randrange(len(steps))]] * 12])
        return thinking_response(f"{looped}\nSo the answer is {problem.answer}.", problem.answer)
    if flaw == "guessing":
        return thinking_response("It is probably this.", problem.answer)
    if flaw == "inconsistent_thinking":
        return thinking_response(f"{problem.solution}\nSo the answer is {_wrong(problem.answer)}.", problem.answer)
    if flaw == "language_mixing":
        mixed = [*steps[:1], "我们一步一步地计算这个问题，然后检查每一步的结果。", *steps[1:]]
        return thinking_response("\n".join(mixed) + f"\nSo the answer is {problem.answer}.", problem.answer)
    if flaw == "near_validation":
        copied = f"{validation.query}\n{validation.solution}"  # a memorised held-out solution, then the answer
        return thinking_response(f"{copied}\nSo the answer is {problem.answer}.", problem.answer)
    raise ValueError(f"unknown flaw {flaw!r}; known: {FLAWS}")


def sample_responses(
    problem: Problem, n: int, *, seed: int, flawed_share: float, validation: list[Problem], thinking: bool = True
) -> list[tuple[str, str | None]]:
    """`n` teacher samples for `problem`: (response, flaw or None). Each sample is flawed with probability
    `flawed_share`, the flaw drawn uniformly (non-thinking answers can only be wrong); the draws are a pure function
    of the seed, the mode and the query."""
    if not 0 <= flawed_share <= 1:
        raise ValueError(f"flawed_share must be in [0, 1], got {flawed_share}")
    rng = random.Random(f"{seed}:{problem.query}" if thinking else f"{seed}:no_think:{problem.query}")
    if not thinking:
        return [(direct_answer(_wrong(problem.answer)), "wrong_answer") if rng.random() < flawed_share
                else (direct_answer(problem.answer), None) for _ in range(n)]  # fmt: skip
    samples = []
    for _ in range(n):
        if rng.random() < flawed_share:
            flaw = rng.choice(FLAWS)
            samples.append((flawed_solution(problem, flaw, rng, rng.choice(validation)), flaw))
        else:
            samples.append((worked_solution(problem), None))
    return samples
