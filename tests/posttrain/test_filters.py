"""Cold-start curation filters: each measure against a hand-computed value, and every filter against the embedded
generators' worked solutions (none rejected) and their deliberately flawed variants (each caught by its filter)."""

import random
from collections import Counter

import pytest

from qwen3jax.data.corpus import synthetic
from qwen3jax.posttrain import filters, responses


def exact_verifier(completion: str, gold: str) -> float | None:
    """A stand-in with verify_answer's contract: the last boxed answer after the think block, compared verbatim."""
    boxed = filters.last_boxed(completion.split("</think>")[-1])
    return None if boxed is None else float(boxed.strip() == gold.strip())


def test_split_thinking_accepts_exactly_one_leading_block():
    assert filters.split_thinking("<think>\nstep\n</think>\n\nanswer") == filters.ThinkingResponse("step", "answer")
    assert filters.split_thinking("  <think></think>done") == filters.ThinkingResponse("", "done")
    assert filters.split_thinking("answer <think>x</think>") is None  # not at the start
    assert filters.split_thinking("<think>a</think><think>b</think>c") is None  # two blocks
    assert filters.split_thinking("<think>never closed") is None
    assert filters.split_thinking("no thinking at all") is None


def test_count_questions():
    assert filters.count_questions("What is 2 + 2?") == 1
    assert filters.count_questions("Evaluate 3 × 4.") == 1
    assert filters.count_questions("What is x? What is y?") == 2
    assert filters.count_questions("Find (a) the sum and (b) the product of 3 and 4.") == 2
    assert filters.count_questions("Solve:\n1. 2x = 4\n2. 3y = 9\n3. z + 1 = 2") == 3


def test_query_rejection():
    assert filters.query_rejection("What is 2 + 2?", "4", exact_verifier) is None
    assert filters.query_rejection("What is 2 + 2?", "", exact_verifier) == "no_gold_answer"
    assert filters.query_rejection("What is 2 + 2?", None, exact_verifier) == "no_gold_answer"
    assert filters.query_rejection("Is it x? Or y?", "4", exact_verifier) == "several_questions"
    unparsable = lambda completion, gold: None  # noqa: E731 - a verifier that can read no gold
    assert filters.query_rejection("What is 2 + 2?", "4", unparsable) == "no_gold_answer"


def test_solved_without_thinking():
    answers = ["<think>\n\n</think>\n\n\\boxed{5}", "<think>\n\n</think>\n\n\\boxed{4}"]
    assert filters.solved_without_thinking(answers, "4", exact_verifier)
    assert not filters.solved_without_thinking(answers[:1], "4", exact_verifier)


def test_repetition_measures():
    # 12 words, 7 six-grams of which "a b c d e f" occurs twice: 1 - 6/7 repeated.
    assert filters.repetition_score("a b c d e f a b c d e f") == pytest.approx(1 - 6 / 7)
    assert filters.repetition_score("one two three") == 0.0
    assert filters.most_repeated_line("x = 1\n\ny = 2\nx = 1\n  x = 1  \n") == 3


def test_foreign_script_share():
    assert filters.foreign_script_share("abc 中文", "abc") == pytest.approx(2 / 5)
    assert filters.foreign_script_share("abc π θ 12", "abc") == 0.0  # Greek letters are mathematics
    assert filters.foreign_script_share("中文", "中文问题") == 0.0


def test_ngram_index_measures_containment_of_one_item_without_template_text():
    template = "first we write the problem down carefully and then"
    items = [f"{template} the value of item {i} is {i * 7} exactly {i}" for i in range(5)]
    index = filters.NgramIndex(items, n=4, max_items=3)
    # An item's distinctive 4-grams: those containing its own numbers (the template ones are shared by all 5).
    assert index.overlap(items[2]) == 1.0
    assert index.overlap(template + " something else entirely here") == 0.0
    words = items[2].split()
    half = " ".join(words[-6:])  # "item 2 is 14 exactly 2": 3 of item 2's 4-grams
    distinctive = [g for g in index.grams(items[2]) if any(w in g for w in ("2", "14"))]
    assert index.overlap(half) == pytest.approx(3 / len(distinctive))


def test_thinking_conclusion():
    assert filters.thinking_conclusion("so \\boxed{\\frac{1}{2}} it is") == "\\frac{1}{2}"
    assert filters.thinking_conclusion("Step 1.\nSo the answer is 42.") == "42"
    assert filters.thinking_conclusion("The answer is $x = 3$.\nMore.\nThe final answer is 7") == "7"
    assert filters.thinking_conclusion("no conclusion stated") is None


def test_balance_by_domain():
    items = [{"domain": "math"}] * 5 + [{"domain": "code"}] * 2 + [{}]
    kept = filters.balance_by_domain(items, max_per_domain=2)
    assert Counter(i.get("domain", "unknown") for i in kept) == {"math": 2, "code": 2, "unknown": 1}
    with pytest.raises(ValueError, match="max_per_domain"):
        filters.balance_by_domain(items, max_per_domain=0)


@pytest.fixture(scope="module")
def problems():
    pool = [synthetic.generate(g, 1, i) for g in sorted(synthetic.GENERATORS) for i in range(25)]
    queries = {p.query for p in pool}
    held_out = [synthetic.generate(g, 2, i) for g in sorted(synthetic.GENERATORS) for i in range(20)]
    return pool, [p for p in held_out if p.query not in queries]


def test_worked_solutions_pass_and_every_flaw_is_caught_by_its_filter(problems):
    pool, validation = problems
    index = filters.NgramIndex([f"{p.query}\n{p.solution}" for p in validation])
    response_filters = filters.ResponseFilters(verify=exact_verifier, validation=index)
    rng = random.Random(0)
    wrongly_rejected, missed = Counter(), Counter()
    for problem in pool:
        reason = response_filters.rejection(problem.query, responses.worked_solution(problem), problem.answer)
        if reason is not None:
            wrongly_rejected[problem.kind, reason] += 1
        for flaw in responses.FLAWS:
            response = responses.flawed_solution(problem, flaw, rng, rng.choice(validation))
            got = response_filters.rejection(problem.query, response, problem.answer)
            if got != flaw:
                missed[problem.kind, flaw, got] += 1
    assert not wrongly_rejected
    assert not missed


def test_malformed_and_unverifiable_responses(problems):
    problem = problems[0][0]
    response_filters = filters.ResponseFilters(verify=exact_verifier)
    assert response_filters.rejection(problem.query, f"\\boxed{{{problem.answer}}}", problem.answer) == "malformed_thinking"
    assert response_filters.rejection(problem.query, "<think>\nlong enough\n</think>\n\n", problem.answer) == (
        "malformed_thinking"  # nothing after the think block
    )
    unboxed = "<think>\n" + problem.solution + "\n</think>\n\nI cannot say."
    assert response_filters.rejection(problem.query, unboxed, problem.answer) == "unverifiable_answer"


def test_sample_responses_is_deterministic_and_flaws_at_the_share(problems):
    pool, validation = problems
    draws = [responses.sample_responses(p, 8, seed=3, flawed_share=0.5, validation=validation) for p in pool[:60]]
    again = [responses.sample_responses(p, 8, seed=3, flawed_share=0.5, validation=validation) for p in pool[:60]]
    assert draws == again
    flaws = Counter(flaw for samples in draws for _, flaw in samples)
    assert 0.4 < 1 - flaws[None] / 480 < 0.6
    assert set(flaws) == {None, *responses.FLAWS}
    clean = responses.sample_responses(pool[0], 4, seed=3, flawed_share=0.0, validation=validation)
    assert clean == [(responses.worked_solution(pool[0]), None)] * 4
