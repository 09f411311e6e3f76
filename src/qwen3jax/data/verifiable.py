"""Query–verifier pairs: the JSONL records that RL rollouts, cold-start filtering and reward checks read.

One JSON object per line:
  `id`          optional string, for reports.
  `prompt`      the user's text, or `messages`: a chat (validated like SFT data; the last turn is the user's).
  `rewards`     `[{"name": "math", "weight": 1.0, **options}, ...]`: the verifiers that score its completions
                (names and options as in the experiment config; built with `qwen3jax.rewards.build_reward`).
  `gold`        the reference final answer (math, exact_match, numeric_match, multiple_choice);
  `tests`       assert strings (code_tests) or `[{"stdin", "stdout"}]` cases (code_io);
  `constraints` instruction constraints `[{"id", **params}]` (ifeval);
  `reference`   a reference answer for the judge;
  `domain`      e.g. "math", "code", "instruction"; `difficulty` a number in [0, 1] (optional).

`read_verifiable` counts bad records by reason (`data/badinput.py`) and stops when too many are bad.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from qwen3jax.chat.messages import parse_messages
from qwen3jax.data.badinput import BadInputTracker, BadRecord
from qwen3jax.rewards import REWARDS
from qwen3jax.rewards.ifeval import validate_constraint

# The record field each reward reads (rewards not listed need none beyond prompt and completion).
REWARD_FIELDS = {
    "math": "gold", "exact_match": "gold", "numeric_match": "gold", "multiple_choice": "gold",
    "code_tests": "tests", "code_io": "tests", "ifeval": "constraints", "judge": "reference",
}  # fmt: skip
VERIFIER_FIELDS = ("gold", "tests", "constraints", "reference")


def _check_prompt(record: Mapping[str, Any]) -> None:
    if "messages" in record:
        try:
            turns = parse_messages(record["messages"])
        except ValueError as e:
            raise BadRecord("missing_prompt", f"messages: {e}") from None
        if not turns or turns[-1].role != "user":
            raise BadRecord("missing_prompt", "messages must end with a user turn")
    elif not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
        raise BadRecord("missing_prompt", "needs a non-empty 'prompt' string or a 'messages' list")


def _check_tests(name: str, tests: Any) -> None:
    if not isinstance(tests, list) or not tests:
        raise BadRecord("bad_tests", f"{name}: tests must be a non-empty list")
    if name == "code_tests" and not all(isinstance(t, str) and t.strip() for t in tests):
        raise BadRecord("bad_tests", "code_tests: every test is a non-empty string of Python (asserts)")
    if name == "code_io" and not all(
        isinstance(t, Mapping) and isinstance(t.get("stdout"), str) and isinstance(t.get("stdin", ""), str)
        for t in tests
    ):
        raise BadRecord("bad_tests", "code_io: every case is {'stdin': str, 'stdout': str}")


def validate_record(record: Any) -> dict[str, Any]:
    """The record if it is a valid query–verifier pair; raises BadRecord naming the first problem."""
    if not isinstance(record, dict):
        raise BadRecord("not_an_object", f"got {type(record).__name__}")
    _check_prompt(record)
    rewards = record.get("rewards")
    if not isinstance(rewards, list) or not rewards:
        raise BadRecord("bad_rewards", "needs a non-empty 'rewards' list of {'name', ...options}")
    for spec in rewards:
        name = spec.get("name") if isinstance(spec, Mapping) else None
        if name not in REWARDS.names():
            raise BadRecord("bad_rewards", f"unknown reward {name!r}; registered: {REWARDS.names()}")
        if "weight" in spec and not isinstance(spec["weight"], (int, float)):
            raise BadRecord("bad_rewards", f"{name}: weight must be a number")
        field = REWARD_FIELDS.get(name)
        if field is not None and record.get(field) in (None, "", []):
            raise BadRecord("missing_verifier_field", f"reward {name!r} needs the field {field!r}")
        if field == "tests":
            _check_tests(name, record["tests"])
        if field == "constraints":
            if not isinstance(record["constraints"], list):
                raise BadRecord("bad_constraint", "constraints must be a list")
            for constraint in record["constraints"]:
                problem = validate_constraint(constraint)
                if problem:
                    raise BadRecord("bad_constraint", problem)
    if "domain" in record and not isinstance(record["domain"], str):
        raise BadRecord("bad_metadata", "domain must be a string")
    difficulty = record.get("difficulty")
    if difficulty is not None and not (isinstance(difficulty, (int, float)) and 0 <= difficulty <= 1):
        raise BadRecord("bad_metadata", f"difficulty must be a number in [0, 1], got {difficulty!r}")
    return record


def iter_verifiable(
    path: str | pathlib.Path, tracker: BadInputTracker, validate: Callable[[Any], dict] = validate_record
) -> Iterator[dict[str, Any]]:
    """The records of a JSONL file that `validate` accepts (it returns the record, possibly rewritten, or raises
    BadRecord); bad ones are counted in `tracker` (which raises past its limit)."""
    with open(path, encoding="utf-8", errors="strict") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                try:
                    record = json.loads(line)
                except ValueError as e:
                    raise BadRecord("malformed_json", str(e)) from None
                yield validate(record)
                tracker.good()
            except BadRecord as e:
                tracker.bad(e, f"{path}:{number}")


def read_verifiable(
    path: str | pathlib.Path, *, max_bad_fraction: float = 0.0, validate: Callable[[Any], dict] = validate_record
) -> tuple[list[dict], dict]:
    """(valid records, the tracker's summary); BadInputError when more than `max_bad_fraction` are bad (by
    default any bad record: a hand-made RL set is small, so one bad line is a mistake worth stopping for). The
    whole file is read first, so the error counts every bad record by reason."""
    tracker = BadInputTracker(str(path), max_bad_fraction=max_bad_fraction, min_records=1 << 62)
    records = list(iter_verifiable(path, tracker, validate))
    tracker.check(final=True)
    return records, tracker.summary()


def load_verifiable(spec: str, split: str) -> list[dict[str, Any]]:
    """Query–verifier records: `embedded:<domain>` (the embedded RL sets' `split`) or a JSONL file."""
    if spec.startswith("embedded:"):
        from qwen3jax.data.corpus.verifiable import verifiable_records  # pylint: disable=import-outside-toplevel

        return verifiable_records(spec.split(":", 1)[1], split)
    return read_verifiable(spec)[0]


def write_verifiable(records: Sequence[Mapping[str, Any]], path: str | pathlib.Path) -> None:
    """Writes valid records as JSONL; refuses to overwrite an existing file."""
    path = pathlib.Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; not overwriting it")
    for record in records:
        validate_record(dict(record))
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def batch_fields(records: Sequence[Mapping[str, Any]]) -> tuple[list[Any], dict[str, list[Any]]]:
    """(prompts, per-completion verifier columns) of a batch of records, as `reward(prompts, completions, **fields)`
    takes them (one completion per record; repeat records for several samples per prompt)."""
    prompts = [r["messages"] if "messages" in r else r["prompt"] for r in records]
    return prompts, {field: [r.get(field) for r in records] for field in VERIFIER_FIELDS}
