"""The cold-start curation: every filter's count in the report equals the number of samples the worked-solution
teacher flawed that way (labels from the generator, reasons from the filters), query filters and the pass@n rule."""

import dataclasses
import json
from collections import Counter

import pytest

from qwen3jax.data.corpus import synthetic
from qwen3jax.posttrain import curate, filters, responses
from tests.posttrain.test_filters import exact_verifier


def _queries(seed: int, per_generator: int, skip: set[str] = frozenset()) -> list[curate.Query]:
    problems = [synthetic.generate(g, seed, i) for g in sorted(synthetic.GENERATORS) for i in range(per_generator)]
    return [curate.Query(f"{p.kind}/{i}", p.query, p.answer, p.kind, p.solution) for i, p in enumerate(problems)
            if p.query not in skip]  # fmt: skip


@pytest.fixture(scope="module")
def pool_and_validation():
    pool = _queries(1, 6)
    validation = _queries(2, 10, skip={q.prompt for q in pool})
    return pool, validation


def _problems(queries):
    return [synthetic.Problem(q.domain, q.prompt, q.solution, q.gold, {}) for q in queries]


def test_report_counts_equal_the_flaws_drawn(pool_and_validation):
    pool, validation = pool_and_validation
    teacher = curate.WorkedSolutionTeacher(_problems(validation), seed=5, flawed_share=0.5)
    index = filters.NgramIndex(f"{v.prompt}\n{v.solution}" for v in validation)
    settings = curate.CurationSettings(n=4, keep_per_query=2)
    records, report = curate.curate(pool, teacher=teacher, verify=exact_verifier,
                                    response_filters=filters.ResponseFilters(exact_verifier, index), settings=settings)  # fmt: skip
    drawn = [responses.sample_responses(p, 4, seed=5, flawed_share=0.5, validation=teacher.validation)
             for p in _problems(pool)]  # fmt: skip
    flaws = Counter(flaw for samples in drawn for _, flaw in samples if flaw)
    assert report["response_rejected"] == {"think": {r: flaws[r] for r in filters.RESPONSE_REASONS}}
    assert sum(flaws.values()) > 20  # every filter had work to do
    # A query is dropped as a whole when no sample has the right answer (pass@n = 0).
    zero_pass = sum(all(f == "wrong_answer" for _, f in samples) for samples in drawn)
    assert report["zero_pass_at_n"] == {"think": zero_pass}
    # The other dropped queries: a right answer among the samples, but none passed every filter.
    none_passed = sum(not all(f == "wrong_answer" for _, f in samples) and all(f for _, f in samples)
                      for samples in drawn)  # fmt: skip
    assert report["no_response_passed"] == {"think": none_passed} and none_passed > 0
    assert report["kept_queries"] == len(pool) - zero_pass - none_passed
    expected = sum(min(2, sum(f is None for _, f in samples)) for samples in drawn)
    assert report["kept_responses"] == len(records) == expected
    for record in records:
        assert record["enable_thinking"] is True
        user, assistant = record["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        query = next(q for q in pool if q.id == record["provenance"]["query_id"])
        assert user["content"] == query.prompt
        assert assistant["content"] == responses.worked_solution(_problems([query])[0])
        assert record["provenance"]["teacher"] == "worked_solutions"
        assert record["provenance"]["filters_passed"] == list(filters.RESPONSE_REASONS)


@dataclasses.dataclass
class FixedInstruct:
    """An instruct model that answers the queries in `knows` correctly (in the non-thinking format)."""

    knows: set[str]
    name: str = "instruct"

    def sample(self, queries, n, *, thinking):
        assert not thinking
        return [[f"<think>\n\n</think>\n\n\\boxed{{{q.gold if q.id in self.knows else 'no idea'}}}"] * n for q in queries]


def test_query_filters_and_domain_cap(pool_and_validation):
    pool, validation = pool_and_validation
    broken = [
        dataclasses.replace(pool[0], id="no-gold", gold=None),
        dataclasses.replace(pool[1], id="two-questions", prompt=pool[1].prompt + " What is 2 + 2? And why?"),
    ]
    queries = broken + pool[2:]
    easy = {q.id for q in pool[2:7]}
    teacher = curate.WorkedSolutionTeacher(_problems(validation), flawed_share=0.0)
    _, report = curate.curate(
        queries, teacher=teacher, verify=exact_verifier, response_filters=filters.ResponseFilters(exact_verifier),
        settings=curate.CurationSettings(n=2, max_per_domain=3), instruct=FixedInstruct(easy),
    )  # fmt: skip
    assert report["query_rejected"] == {"no_gold_answer": 1, "several_questions": 1, "solved_without_thinking": 5}
    remaining = Counter(q.domain for q in pool[2:] if q.id not in easy)
    assert report["kept_domains"] == {d: min(c, 3) for d, c in remaining.items()}
    assert report["domain_capped"] == sum(max(c - 3, 0) for c in remaining.values())


def test_query_records(tmp_path):
    path = tmp_path / "pool.jsonl"
    rows = [{"id": "a", "prompt": "What is 1 + 1?", "gold": "2", "domain": "math"},
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Why?"}], "answer": 3}]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    a, b = curate.read_queries(str(path))
    assert (a.id, a.prompt, a.gold, a.domain) == ("a", "What is 1 + 1?", "2", "math")
    assert (b.id, b.prompt, b.gold) == ("2", "Why?", "3")
    path.write_text('{"gold": "2"}\n')
    with pytest.raises(ValueError, match="query 1: no prompt"):
        curate.read_queries(str(path))
    path.write_text("{oops\n")
    with pytest.raises(ValueError, match="pool.jsonl:1: not JSON"):
        curate.read_queries(str(path))


def test_both_modes_for_off_policy_distillation(pool_and_validation):
    pool, validation = pool_and_validation
    teacher = curate.WorkedSolutionTeacher(_problems(validation), seed=1, flawed_share=0.4)
    settings = curate.CurationSettings(n=3, keep_per_query=1, modes=("think", "no_think"))
    records, report = curate.curate(pool, teacher=teacher, verify=exact_verifier,
                                    response_filters=filters.ResponseFilters(exact_verifier), settings=settings)  # fmt: skip
    direct = [responses.sample_responses(p, 3, seed=1, flawed_share=0.4, validation=teacher.validation, thinking=False)
              for p in _problems(pool)]  # fmt: skip
    wrong = sum(flaw == "wrong_answer" for samples in direct for _, flaw in samples)
    assert report["response_rejected"]["no_think"] == {r: wrong if r == "wrong_answer" else 0 for r in filters.RESPONSE_REASONS}
    by_mode = Counter(r["provenance"]["mode"] for r in records)
    assert by_mode["no_think"] == sum(any(f is None for _, f in samples) for samples in direct)
    for record in records:
        thinking = record["provenance"]["mode"] == "think"
        assert record["enable_thinking"] is thinking
        assert (filters.split_thinking(record["messages"][1]["content"]).thinking != "") is thinking
    with pytest.raises(ValueError, match="modes"):
        curate.CurationSettings(modes=("fast",))


def test_mode_mismatch_is_malformed():
    response_filters = filters.ResponseFilters(exact_verifier)
    problem = synthetic.generate("arithmetic", 0, 0)
    thinking = responses.worked_solution(problem)
    direct = responses.direct_answer(problem.answer)
    assert response_filters.rejection(problem.query, direct, problem.answer, thinking=False) is None
    assert response_filters.rejection(problem.query, thinking, problem.answer, thinking=False) == "malformed_thinking"
    assert response_filters.rejection(problem.query, direct, problem.answer, thinking=True) == "malformed_thinking"
