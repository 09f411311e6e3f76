"""Answer matching without a math parser: exact text, numbers with a tolerance, and multiple-choice letters."""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from qwen3jax.rewards.base import REWARDS, RewardResult, column
from qwen3jax.rewards.format import final_answer

_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|[-+]?\.\d+")


def answer_span(completion: str) -> str | None:
    """The final answer's own text: the last `\\boxed{}` if any, else the text after a closing 'answer is'/'Answer:'
    phrase, else the whole final answer."""
    answer = final_answer(completion)
    if answer is None:
        return None
    boxed = _BOXED.findall(answer)
    if boxed:
        return boxed[-1].strip()
    tail = re.split(r"(?i)answer\s*(?:is\s*:?|:)\s*", answer)
    return tail[-1].strip() if len(tail) > 1 else answer.strip()


def normalise_text(text: str) -> str:
    """Case-, space-, NFKC- and edge-punctuation-insensitive form of a short answer."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"\s+", " ", text).strip()
    return text.strip(" .,;:!\"'`$*")


def parse_number(text: str) -> Fraction | None:
    """The last number of `text` as an exact Fraction (thousands separators, decimals and a/b accepted)."""
    found = _NUMBER.findall(text.replace("\\%", "%"))
    if not found:
        return None
    token = found[-1].replace(",", "")
    try:
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


@REWARDS.register("exact_match")
@dataclasses.dataclass(frozen=True)
class ExactMatchReward:
    """1 when the normalised answer span equals the normalised `gold`."""

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **fields) -> RewardResult:
        golds = column(fields, "gold", len(completions), "exact_match")
        out = []
        for completion, gold in zip(completions, golds):
            span = answer_span(completion)
            out.append(float(span is not None and normalise_text(span) == normalise_text(str(gold))))
        return RewardResult.from_judgements(out)


@REWARDS.register("numeric_match")
@dataclasses.dataclass(frozen=True)
class NumericMatchReward:
    """1 when the last number of the answer span is within `rel_tol` (relative) or `abs_tol` of the numeric
    `gold`; masked when the gold is not a number."""

    rel_tol: float = 1e-6
    abs_tol: float = 1e-9

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **fields) -> RewardResult:
        golds = column(fields, "gold", len(completions), "numeric_match")
        out: list[float | str] = []
        for completion, gold in zip(completions, golds):
            want = parse_number(str(gold))
            if want is None or normalise_text(str(gold)) != normalise_text(_NUMBER.findall(str(gold))[-1]):
                out.append("unparsable_gold")
                continue
            span = answer_span(completion)
            got = parse_number(span) if span is not None else None
            close = got is not None and abs(got - want) <= max(self.abs_tol, self.rel_tol * abs(want))
            out.append(float(close))
        return RewardResult.from_judgements(out)


_CHOICE_PATTERNS = (
    re.compile(r"\\boxed\{\s*\(?([A-Z])\)?\s*\}"),
    re.compile(r"(?i)(?:answer|option|choice)\s*(?:is|:)?\s*\(?\**\(?([A-Z])\b\)?"),
    re.compile(r"^\s*\(?([A-Z])[).:]?\s*$"),
    re.compile(r"^\s*\(?([A-Z])[).:]\s"),
)


def choice_letter(completion: str, letters: str = "ABCD") -> str | None:
    """The chosen option letter of the final answer: a boxed letter, 'the answer is (B)', a bare 'B' or 'B)' line,
    the last match winning; None when no unambiguous choice among `letters` is stated."""
    answer = final_answer(completion)
    if answer is None:
        return None
    for pattern in _CHOICE_PATTERNS:
        found = [m for line in answer.splitlines() for m in pattern.findall(line) if m in letters]
        if found:
            return found[-1]
    return None


@REWARDS.register("multiple_choice")
@dataclasses.dataclass(frozen=True)
class MultipleChoiceReward:
    """1 when the extracted letter equals `gold` (a letter among `letters`); masked when the gold is not one."""

    letters: str = "ABCD"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **fields) -> RewardResult:
        golds = column(fields, "gold", len(completions), "multiple_choice")
        out: list[float | str] = []
        for completion, gold in zip(completions, golds):
            gold = str(gold).strip().strip("()").upper()
            if len(gold) != 1 or gold not in self.letters:
                out.append("unparsable_gold")
            else:
                out.append(float(choice_letter(completion, self.letters) == gold))
        return RewardResult.from_judgements(out)
