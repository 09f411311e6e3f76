"""Accounting of bad input records: counted by reason, reported, and fatal only above a configured fraction.

A corpus of billions of records always holds some junk; one malformed line must not kill a week-long run. But a
source that is mostly junk (wrong `text_key`, wrong file format, a truncated upload) must stop the run early with a
message that names where to look, instead of training on the few records that happen to parse.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

# Every reason a record can be rejected for. Missing files and unreadable directories are not here: they fail
# immediately when a source is opened.
REASONS = (
    "malformed_json",  # The line/record is not valid JSON.
    "not_an_object",  # Valid JSON, but not a JSON object (e.g. a bare string or list).
    "missing_text",  # No text field, or the text field is not a string.
    "invalid_utf8",  # Bytes that are not UTF-8 (or JSON escapes that decode to lone surrogates).
    "empty_document",  # Text is empty or whitespace only.
    "too_long",  # Text longer than the configured maximum number of characters.
    # Chat records (`{"messages": [...], "tools": [...]?, "enable_thinking": bool?}`):
    "missing_messages",  # No "messages" field, or it is not a non-empty list.
    "unknown_role",  # A message whose role is not system, user, assistant or tool.
    "non_string_content",  # A message whose content is absent or not a string (tool-call-only assistant turns aside).
    "tool_arguments_not_json",  # A tool call whose arguments are neither an object nor a JSON string.
    "no_assistant_turn",  # Nothing to train on: no assistant turn after the last user query.
    "invalid_conversation",  # Anything else the chat template or encoder rejects (the message says what).
    # Query–verifier records (data/verifiable.py).
    "missing_prompt",  # Neither a non-empty `prompt` string nor a valid `messages` list.
    "bad_rewards",  # `rewards` missing, empty, or naming an unknown reward / bad options.
    "missing_verifier_field",  # A named reward needs a field (gold, tests, constraints, reference) the record lacks.
    "bad_tests",  # `tests` is not a list of assert strings / {stdin, stdout} cases as its reward expects.
    "bad_constraint",  # An instruction constraint with an unknown id or wrong parameters.
    "bad_metadata",  # `domain` not a string, or `difficulty` not a number in [0, 1].
    # Evaluation task records (eval/tasks.py).
    "bad_choices",  # A multiple-choice record without >= 2 distinct non-empty choices or a valid answer index/letter.
    "unmapped_field",  # A field the task's field mapping reads is missing, or its gold answer cannot be extracted.
)


class BadRecord(Exception):
    """Raised by record parsers; carries one of `REASONS`."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"unknown bad-record reason {reason!r}; expected one of {REASONS}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class BadInputError(RuntimeError):
    """The fraction of bad records in a source exceeded the configured limit."""


@dataclasses.dataclass
class BadInputTracker:
    """Thread-safe counters of good and bad records of one source.

    Attributes:
      name: the source's name, used in messages.
      max_bad_fraction: the run stops once more than this fraction of the records seen so far is bad...
      min_records: ...but only after this many records were seen, so that one bad record among the first few
        does not look like a 100% failure rate. `check(final=True)` ignores this minimum.
      max_examples: how many of the first offenders are remembered for the error message.
    """

    name: str
    max_bad_fraction: float = 0.1
    min_records: int = 1000
    max_examples: int = 5

    def __post_init__(self):
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        self._lock = threading.Lock()
        self._records = 0
        self._bad: Counter[str] = Counter()
        self._examples: list[str] = []

    def good(self) -> None:
        with self._lock:
            self._records += 1

    def bad(self, error: BadRecord, where: str) -> None:
        """Counts a rejected record found at `where` (e.g. `file.jsonl:17`); raises BadInputError past the limit."""
        with self._lock:
            self._records += 1
            self._bad[error.reason] += 1
            if len(self._examples) < self.max_examples:
                self._examples.append(f"{where}: {error}")
        self.check()

    def check(self, *, final: bool = False) -> None:
        """Raises BadInputError if too large a fraction of the records seen so far is bad."""
        with self._lock:
            records, bad = self._records, sum(self._bad.values())
            examples, counts = list(self._examples), dict(self._bad)
        if records == 0 or (records < self.min_records and not final):
            return
        if bad / records > self.max_bad_fraction:
            raise BadInputError(
                f"source {self.name!r}: {bad} of {records} records are bad ({bad / records:.1%} > the allowed "
                f"{self.max_bad_fraction:.1%}); counts by reason: {counts}. First offenders:\n  "
                + "\n  ".join(examples)
            )

    def summary(self) -> dict[str, Any]:
        """JSON-friendly counters, for run metrics and end-of-run reports."""
        with self._lock:
            return {
                "records": self._records,
                "bad": {reason: self._bad[reason] for reason in REASONS if self._bad[reason]},
                "first_offenders": list(self._examples),
            }


    def restore(self, summary: Mapping[str, Any]) -> None:
        """Continue from the counters of a `summary()`: a resumed run's report covers the whole run."""
        with self._lock:
            self._records = int(summary["records"])
            self._bad = Counter({reason: int(count) for reason, count in summary["bad"].items()})
            self._examples = list(summary["first_offenders"])[: self.max_examples]


def format_report(summaries: dict[str, dict[str, Any]]) -> str:
    """A human-readable table of bad-record counts per source and reason."""
    lines = [f"{'source':<24} {'records':>10} {'bad':>8}  reasons"]
    for name, summary in summaries.items():
        bad = summary["bad"]
        reasons = ", ".join(f"{reason}={count}" for reason, count in bad.items()) or "-"
        lines.append(f"{name:<24} {summary['records']:>10} {sum(bad.values()):>8}  {reasons}")
    return "\n".join(lines)
