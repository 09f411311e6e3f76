"""The embedded verifiable sets: deterministic, sized, valid, held out (train/eval disjoint, math disjoint from the
pretraining corpus), and labelled correctly according to the verifiers themselves (reference code passes its
tests in the sandbox and the buggy variant does not; every preference pair's chosen side outscores its rejected)."""

import json
import random

import pytest

from qwen3jax.data.corpus import verifiable
from qwen3jax.data.verifiable import batch_fields, validate_record
from qwen3jax.rewards import REWARDS, sandbox
from qwen3jax.rewards.math import verify_answer

DOMAINS = ("math", "code", "instruction", "qa", "thinkfollow")
PAIR_DOMAINS = ("math", "code", "instruction")


@pytest.mark.parametrize("domain", DOMAINS)
def test_sets_are_deterministic_valid_and_held_out(domain):
    train = verifiable.verifiable_records(domain, "train")
    evaluation = verifiable.verifiable_records(domain, "eval")
    assert (len(train), len(evaluation)) == (verifiable.SPLITS["train"], verifiable.SPLITS["eval"])
    assert verifiable.verifiable_records(domain, "eval") == evaluation
    for record in train + evaluation:
        validate_record(record)
    prompts = lambda records: {r.get("prompt") or json.dumps(r["messages"]) for r in records}  # noqa: E731
    assert len(prompts(train)) == len(train) and not prompts(train) & prompts(evaluation)


def test_math_is_disjoint_from_pretraining():
    for record in verifiable.verifiable_records("math", "train") + verifiable.verifiable_records("math", "eval"):
        query = record["prompt"].removesuffix(" Put the final answer in \\boxed{}.")
        assert query not in verifiable.pretraining_queries(record["kind"])
    assert {r["kind"] for r in verifiable.verifiable_records("math", "eval")} == set(verifiable.MATH_KINDS)


def test_qa_questions_are_not_the_math_sets_nor_pretrainings():
    math = {r["prompt"].removesuffix(" Put the final answer in \\boxed{}.") for split in ("train", "eval")
            for r in verifiable.verifiable_records("math", split)}  # fmt: skip
    for record in verifiable.verifiable_records("qa", "train") + verifiable.verifiable_records("qa", "eval"):
        assert record["prompt"] not in math and record["prompt"] not in verifiable.pretraining_queries(record["kind"])
    for record in random.Random(0).sample(verifiable.verifiable_records("qa", "eval"), 8):
        assert verify_answer(f"</think>\\boxed{{{record['reference']}}}", record["reference"]) == 1.0, record


def test_thinkfollow_conversations_switch_modes_and_end_on_a_switch():
    format_reward = REWARDS.get("format")()
    for record in verifiable.verifiable_records("thinkfollow", "eval"):
        users = [m["content"] for m in record["messages"] if m["role"] == "user"]
        switches = [u.rsplit(" ", 1)[1] for u in users]
        assert 2 <= len(users) <= 3 and set(switches) == {"/think", "/no_think"}, users
        assert [m["role"] for m in record["messages"]] == ["user", "assistant"] * (len(users) - 1) + ["user"]
        # The format reward asks for the last switch's mode: an empty think block passes exactly under /no_think.
        replies = ["<think>\n\n</think>\n\nFine.", "<think>\nLet me think.\n</think>\n\nFine."]
        scores = format_reward([record["messages"]] * 2, replies).scores
        assert list(scores) == ([1.0, 0.0] if switches[-1] == "/no_think" else [0.0, 1.0]), record


def test_math_golds_verify():
    for record in random.Random(0).sample(verifiable.verifiable_records("math", "eval"), 12):
        assert verify_answer(f"</think>\\boxed{{{record['gold']}}}", record["gold"]) == 1.0, record


@pytest.mark.skipif(not sandbox.is_available(), reason="no sandbox here")
def test_code_reference_passes_and_buggy_fails_in_the_sandbox():
    records = verifiable.verifiable_records("code", "eval")
    families = {r["kind"]: r for r in records}  # one task per family
    sample = list(families.values())
    assert len(sample) == 7
    fence = "<think>\n\n</think>\n\n```python\n{}```"
    prompts, fields = batch_fields(sample * 2)
    completions = [fence.format(r["solution"]) for r in sample] + [fence.format(r["buggy_solution"]) for r in sample]
    result = REWARDS.get("code_tests")()(prompts, completions, **fields)
    assert result.scores.tolist() == [1.0] * 7 + [0.0] * 7, [r["kind"] for r in sample]
    io = REWARDS.get("code_io")(partial=True)
    io_completions = [fence.format(r["solution"] + r["io_driver"]) for r in sample[:3]]
    io_result = io(prompts[:3], io_completions, tests=[r["io_tests"] for r in sample[:3]])
    assert io_result.scores.tolist() == [1.0] * 3


def test_preference_pairs_are_labelled_by_the_verifiers():
    pairs = verifiable.preference_pairs("eval", n_per_domain=128)
    assert {p["domain"] for p in pairs} == set(PAIR_DOMAINS) and len(pairs) == 3 * 128
    instruction = [p for p in pairs if p["domain"] == "instruction"]
    ifeval = REWARDS.get("ifeval")(strict=True)
    prompts = [p["prompt"] for p in instruction]
    fields = {"constraints": [p["constraints"] for p in instruction]}
    assert ifeval(prompts, [p["chosen"] for p in instruction], **fields).scores.tolist() == [1.0] * 128
    assert ifeval(prompts, [p["rejected"] for p in instruction], **fields).scores.tolist() == [0.0] * 128
    for pair in random.Random(1).sample([p for p in pairs if p["domain"] == "math"], 8):
        assert (verify_answer(pair["chosen"], pair["gold"]), verify_answer(pair["rejected"], pair["gold"])) == (1, 0)


def test_a_derivation_stops_early_at_an_intermediate_value_that_is_not_the_answer():
    solution = "First a = 2 + 3 = 5.\nThen b = 25 ≡ 18 (mod 7).\nSo c = 4 + 3 = 7.\nCheck: 7 = 7."
    drawn = {verifiable._stopped_early(solution, "7", random.Random(seed)) for seed in range(30)}
    # The kept lines and the first number after their last = or ≡; the third cut arrives at the answer: never drawn.
    assert drawn == {("First a = 2 + 3 = 5.", "5"), ("First a = 2 + 3 = 5.\nThen b = 25 ≡ 18 (mod 7).", "18")}
    # Without = or ≡ the value is the last number of the kept lines.
    assert verifiable._stopped_early("We have 3 pears and 12 apples.\nSo x = 3.", "3", random.Random(0)) == (
        "We have 3 pears and 12 apples.", "12"
    )
    assert verifiable._stopped_early("We have 12 apples and 3 pears.\nSo x = 3.", "3", random.Random(0)) is None


def test_math_pairs_are_a_whole_derivation_against_its_beginning():
    stopped = 0
    for pair in [p for p in verifiable.preference_pairs("eval") if p["domain"] == "math"]:
        chosen, rejected = (pair[side].removeprefix("<think>\n\n</think>\n\n").split("\n\nThe final answer is ")
                            for side in ("chosen", "rejected"))  # fmt: skip
        assert chosen[1] == f"$\\boxed{{{pair['gold']}}}$." != rejected[1]
        whole, begun = chosen[0].splitlines(), rejected[0].splitlines()
        assert begun == whole[: len(begun)]  # the same steps, fewer of them (all of them: a digit of the answer)
        stopped += len(begun) < len(whole)
    assert stopped >= 0.95 * 128
