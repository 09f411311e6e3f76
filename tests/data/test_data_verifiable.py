"""Query–verifier records: the validator names each problem by reason, reading counts bad lines by reason and
stops past the allowed fraction, writing never overwrites."""

import json

import pytest

from qwen3jax.data.badinput import BadInputError, BadRecord
from qwen3jax.data.verifiable import batch_fields, read_verifiable, validate_record, write_verifiable

GOOD = [
    {"prompt": "What is 2+2?", "gold": "4", "rewards": [{"name": "math"}], "domain": "math", "difficulty": 0.1},
    {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Write f."}],
     "tests": ["assert f() == 1"], "rewards": [{"name": "code_tests", "partial": True}, {"name": "format"}]},
    {"prompt": "Say hi.", "constraints": [{"id": "lowercase"}], "rewards": [{"name": "ifeval", "weight": 0.5}]},
    {"prompt": "Echo.", "tests": [{"stdin": "a\n", "stdout": "a\n"}], "rewards": [{"name": "code_io"}]},
    {"prompt": "Capital of France?", "reference": "Paris", "rewards": [{"name": "judge"}]},
]  # fmt: skip

BAD = {
    "not_an_object": ["a list"],
    "missing_prompt": {"prompt": "  ", "gold": "4", "rewards": [{"name": "math"}]},
    "bad_rewards": {"prompt": "q", "gold": "4", "rewards": [{"name": "maths"}]},
    "missing_verifier_field": {"prompt": "q", "rewards": [{"name": "math"}]},
    "bad_tests": {"prompt": "q", "tests": [{"stdin": "x"}], "rewards": [{"name": "code_io"}]},
    "bad_constraint": {"prompt": "q", "constraints": [{"id": "length_words"}], "rewards": [{"name": "ifeval"}]},
    "bad_metadata": {"prompt": "q", "gold": "4", "rewards": [{"name": "math"}], "difficulty": 3},
}


def test_good_records_validate():
    for record in GOOD:
        assert validate_record(record) is record


@pytest.mark.parametrize("reason", sorted(BAD))
def test_each_problem_has_its_reason(reason):
    with pytest.raises(BadRecord) as error:
        validate_record(BAD[reason])
    assert error.value.reason == reason


def test_messages_must_end_with_the_user():
    record = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
              "gold": "1", "rewards": [{"name": "math"}]}  # fmt: skip
    with pytest.raises(BadRecord, match="end with a user turn"):
        validate_record(record)


def test_read_counts_bad_lines_by_reason(tmp_path):
    path = tmp_path / "rl.jsonl"
    lines = [json.dumps(r) for r in GOOD] + [json.dumps(r) for r in BAD.values()] + ["{not json", ""]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadInputError) as error:
        read_verifiable(path)
    message = str(error.value)
    assert "8 of 13 records are bad" in message and "'malformed_json': 1" in message and "'bad_tests': 1" in message
    records, summary = read_verifiable(path, max_bad_fraction=0.7)
    assert len(records) == 5 and sum(summary["bad"].values()) == 8
    assert summary["bad"]["missing_prompt"] == 1 and summary["first_offenders"][0].startswith(f"{path}:6")


def test_write_round_trip_and_never_overwrite(tmp_path):
    path = tmp_path / "out.jsonl"
    write_verifiable(GOOD, path)
    assert read_verifiable(path)[0] == GOOD
    with pytest.raises(FileExistsError):
        write_verifiable(GOOD, path)
    with pytest.raises(BadRecord):
        write_verifiable([BAD["bad_rewards"]], tmp_path / "other.jsonl")


def test_batch_fields_columns():
    prompts, fields = batch_fields(GOOD[:3])
    assert prompts[0] == "What is 2+2?" and prompts[1][-1]["content"] == "Write f."
    assert fields["gold"] == ["4", None, None] and fields["constraints"][2] == [{"id": "lowercase"}]
