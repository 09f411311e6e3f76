"""Long-CoT cold-start curation filters (TR §4.1, SPEC §4): which queries and which teacher responses to keep.

Query filters drop queries that cannot be checked (several sub-questions, no single checkable answer) and queries
an instruct model already answers correctly without thinking. Response filters drop teacher samples with a wrong
final answer, heavy repetition, a guess without reasoning, thinking that disagrees with the final summary,
language mixing, or text too close to the validation set. Every filter returns the reason it rejects (a counter
key) or None, so the curation command can report how many each one removed.

Answer checking is injected (`Verifier`, the signature of `qwen3jax.rewards.math.verify_answer`): 1.0 / 0.0, or
None when it cannot judge. A response the verifier cannot judge is not kept: an unjudged sample is no evidence.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable

Verifier = Callable[[str, str], "float | None"]

# Response rejection reasons, in the order the filters run (the first that rejects is the one counted).
RESPONSE_REASONS = (
    "malformed_thinking",  # Not one <think>…</think> block at the start (empty in non-thinking mode), no answer after it.
    "wrong_answer",  # The final answer does not match the gold answer.
    "unverifiable_answer",  # The verifier could not judge the final answer.
    "repetition",  # The same lines or word n-grams over and over.
    "guessing",  # An answer with (next to) no reasoning in the thinking.
    "inconsistent_thinking",  # The thinking concludes with another answer than the final summary.
    "language_mixing",  # Letters of scripts the query does not use (e.g. Chinese sentences in English reasoning).
    "near_validation",  # Shares most of its distinctive n-grams with a validation item.
)
QUERY_REASONS = (
    "no_gold_answer",  # The query has no gold answer, or the verifier cannot parse it.
    "several_questions",  # Several sub-questions: no single checkable answer.
    "solved_without_thinking",  # The instruct model answered correctly in non-thinking mode.
)

_THINK = re.compile(r"\A\s*<think>(.*?)</think>(.*)\Z", re.DOTALL)
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclasses.dataclass(frozen=True)
class ThinkingResponse:
    """A response split at its think block: `thinking` between the tags, `answer` after `</think>`."""

    thinking: str
    answer: str


def split_thinking(text: str) -> ThinkingResponse | None:
    """The response's think block and answer, or None unless it has exactly one `<think>…</think>` at the start."""
    match = _THINK.match(text)
    if not match or text.count("<think>") != 1 or text.count("</think>") != 1:
        return None
    return ThinkingResponse(match.group(1).strip(), match.group(2).strip())


# ----------------------------------------------------------------------------------------------------- queries
_ENUMERATED_PART = re.compile(r"(?:^|\s)\((?:[a-h]|i{1,3}|iv|v)\)\s|^\s*\d+[.)]\s+\S", re.MULTILINE)


def count_questions(query: str) -> int:
    """How many questions a query asks: question marks, or enumerated parts ("(a) …", "(ii) …", "2. …")."""
    parts = len(_ENUMERATED_PART.findall(query))
    return max(query.count("?"), parts if parts > 1 else 0, 1)


def query_rejection(query: str, gold: str | None, verify: Verifier) -> str | None:
    """Why the query is not verifiable, or None. The gold must parse: a gold the verifier cannot read as an answer
    (it judges the gold against itself as None) would turn every response into an unjudged one."""
    if not gold or not gold.strip() or verify(f"<think>\n</think>\n\n\\boxed{{{gold}}}", gold) is None:
        return "no_gold_answer"
    if count_questions(query) > 1:
        return "several_questions"
    return None


def solved_without_thinking(non_thinking_answers: Iterable[str], gold: str, verify: Verifier) -> bool:
    """Whether any of the instruct model's non-thinking answers is correct: such a query needs no long CoT."""
    return any(verify(answer, gold) == 1.0 for answer in non_thinking_answers)


def balance_by_domain(items: Iterable[dict], *, max_per_domain: int, key: str = "domain") -> list[dict]:
    """The first `max_per_domain` items of each domain (items without one count as "unknown"), so that one
    abundant domain does not dominate the cold-start set."""
    if max_per_domain < 1:
        raise ValueError(f"max_per_domain must be >= 1, got {max_per_domain}")
    taken: Counter[str] = Counter()
    kept = []
    for item in items:
        domain = item.get(key) or "unknown"
        if taken[domain] < max_per_domain:
            taken[domain] += 1
            kept.append(item)
    return kept


# --------------------------------------------------------------------------------------------------- responses
def most_repeated_line(text: str) -> int:
    """How often the most frequent non-blank line occurs (a model stuck in a loop repeats whole steps)."""
    lines = Counter(line.strip() for line in text.split("\n") if line.strip())
    return max(lines.values(), default=0)


def repetition_score(text: str, n: int = 6) -> float:
    """The share of the text's word n-grams that repeat an earlier one (0: none, → 1: one phrase looped)."""
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


_LETTER_SCRIPTS_NEUTRAL = frozenset({"GREEK"})  # π, θ, Σ in mathematics do not make a text bilingual


def _script(char: str) -> str | None:
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    script = name.split(" ")[0] if name else "UNKNOWN"
    return "CJK" if script in ("CJK", "HIRAGANA", "KATAKANA", "HANGUL") else script


def foreign_script_share(text: str, reference: str) -> float:
    """The share of `text`'s letters written in scripts that `reference` (the query) does not use."""
    allowed = {_script(c) for c in reference} | _LETTER_SCRIPTS_NEUTRAL
    scripts = [s for s in map(_script, text) if s is not None]
    return sum(s not in allowed for s in scripts) / len(scripts) if scripts else 0.0


class NgramIndex:
    """Word n-grams of validation items, to find training text that contains most of one of them. An n-gram held by
    more than `max_items` items is template text (every solution of a generator opens the same way): it is no
    evidence of copying and counts on neither side."""

    def __init__(self, texts: Iterable[str], *, n: int = 8, max_items: int = 3):
        self.n = n
        item_grams = [self.grams(text) for text in texts]
        holders: dict[tuple[str, ...], list[int]] = {}
        for item, grams in enumerate(item_grams):
            for gram in grams:
                holders.setdefault(gram, []).append(item)
        self._holders = {gram: items for gram, items in holders.items() if len(items) <= max_items}
        self._sizes = [sum(gram in self._holders for gram in grams) for grams in item_grams]

    def grams(self, text: str) -> set[tuple[str, ...]]:
        words = _WORD.findall(text.lower())
        return {tuple(words[i : i + self.n]) for i in range(len(words) - self.n + 1)}

    def overlap(self, text: str) -> float:
        """The largest share of one validation item's distinctive n-grams that the text contains (1.0: a copy)."""
        hits = Counter(item for gram in self.grams(text) for item in self._holders.get(gram, ()))
        return max((count / self._sizes[item] for item, count in hits.items()), default=0.0)


@dataclasses.dataclass(frozen=True)
class ResponseFilters:
    """The six response filters with their thresholds (defaults measured on the embedded worked solutions: none
    of the genuine ones is rejected, every deliberately flawed variant is; see tests/posttrain)."""

    verify: Verifier
    validation: NgramIndex | None = None
    max_repetition: float = 0.5  # share of repeated word 6-grams (case enumerations reach ~0.36)
    max_line_repeats: int = 3  # occurrences of one line
    min_thinking_words: int = 12  # fewer words of thinking is a guess
    max_foreign_script: float = 0.02  # share of letters in scripts the query does not use
    max_validation_overlap: float = 0.8  # share of one validation item's distinctive 8-grams contained

    def rejection(self, query: str, response: str, gold: str, *, thinking: bool = True) -> str | None:
        """Why the response is rejected, or None when it passes every filter. A non-thinking response must have the
        empty think block; the filters that read the thinking (guessing, inconsistency) then have nothing to read."""
        parts = split_thinking(response)
        if parts is None or not parts.answer or bool(parts.thinking) != thinking:
            return "malformed_thinking"
        verdict = self.verify(response, gold)
        if verdict is None:
            return "unverifiable_answer"
        if verdict != 1.0:
            return "wrong_answer"
        if (
            max(repetition_score(parts.thinking), repetition_score(parts.answer)) > self.max_repetition
            or most_repeated_line(parts.thinking) > self.max_line_repeats
        ):
            return "repetition"
        if thinking and len(_WORD.findall(parts.thinking)) < self.min_thinking_words:
            return "guessing"
        concluded = thinking_conclusion(parts.thinking) if thinking else None
        if concluded is not None and self.verify(response, concluded) == 0.0:
            return "inconsistent_thinking"
        if foreign_script_share(response, query) > self.max_foreign_script:
            return "language_mixing"
        copied = parts.thinking if thinking else parts.answer
        if self.validation is not None and self.validation.overlap(copied) > self.max_validation_overlap:
            return "near_validation"
        return None


_BOXED = re.compile(r"\\boxed\{")
_STATED_ANSWER = re.compile(r"(?:the (?:final )?answer is|answer:)\s*\$?([^\n$]+?)\$?\s*\.?\s*$", re.IGNORECASE | re.MULTILINE)


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{…}` (braces balanced), or None."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return None


def thinking_conclusion(thinking: str) -> str | None:
    """The answer the thinking itself arrives at: its last `\\boxed{}`, else its last "the answer is X" statement;
    None when it states none (then there is nothing to be inconsistent with)."""
    boxed = last_boxed(thinking)
    if boxed is not None:
        return boxed.strip()
    stated = _STATED_ANSWER.findall(thinking)
    return stated[-1].strip() if stated else None
