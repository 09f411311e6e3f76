"""Verifiable instruction following (IFEval-style): each constraint is checked from parameters stored with the
prompt, on the final answer (the text after `</think>`).

A record carries its constraints as `[{"id": "length_words", "relation": "at least", "num": 120}, ...]`; `CHECKS`
maps each id to its check and `INSTRUCTIONS` to the instruction text a prompt generator appends, so data and
verifier cannot drift apart. Constraints with an unknown id or wrong parameters mask the completion
("bad_constraint") rather than score it.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from qwen3jax.data.annotate.heuristics import LanguageLabeler
from qwen3jax.rewards.base import REWARDS, RewardResult, column
from qwen3jax.rewards.format import final_answer

RELATIONS = ("at least", "at most", "less than", "more than", "exactly")


def _compare(count: int, relation: str, num: int) -> bool:
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
    return {
        "at least": count >= num, "at most": count <= num, "less than": count < num, "more than": count > num,
        "exactly": count == num,
    }[relation]  # fmt: skip


_WORD = re.compile(r"\b[\w'-]+\b")
# A sentence ends at terminal punctuation followed by white space (so "3.5" and "e.g.," do not split).
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")
_BULLET = re.compile(r"^\s*[*-]\s+\S", re.MULTILINE)


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def count_sentences(text: str) -> int:
    return len([s for s in _SENTENCE_END.split(text.strip()) if re.search(r"\w", s)])


def paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n|^\s*\*\*\*\s*$", text.strip(), flags=re.MULTILINE) if p and p.strip()]


def _length_words(text: str, relation: str, num: int) -> bool:
    return _compare(count_words(text), relation, num)


def _length_sentences(text: str, relation: str, num: int) -> bool:
    return _compare(count_sentences(text), relation, num)


def _length_paragraphs(text: str, num: int) -> bool:
    return len(paragraphs(text)) == num


def _keywords_include(text: str, keywords: Sequence[str]) -> bool:
    return all(re.search(rf"\b{re.escape(k)}\b", text, re.IGNORECASE) for k in keywords)


def _keyword_frequency(text: str, keyword: str, relation: str, num: int) -> bool:
    return _compare(len(re.findall(rf"\b{re.escape(keyword)}\b", text, re.IGNORECASE)), relation, num)


def _forbidden_words(text: str, words: Sequence[str]) -> bool:
    return not any(re.search(rf"\b{re.escape(w)}\b", text, re.IGNORECASE) for w in words)


def _lowercase(text: str) -> bool:
    return text == text.lower() and any(c.isalpha() for c in text)


def _uppercase(text: str) -> bool:
    return text == text.upper() and any(c.isalpha() for c in text)


def _json_format(text: str) -> bool:
    body = re.sub(r"^```(?:json)?\s*\n?|\n?```$", "", text.strip(), flags=re.IGNORECASE).strip()
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def _bullet_count(text: str, num: int) -> bool:
    return len(_BULLET.findall(text)) == num


def _numbered_sections(text: str, num: int, prefix: str = "Section") -> bool:
    """Sections headed `{prefix} 1` ... `{prefix} num` at line starts, in order, and no others."""
    found = [int(n) for n in re.findall(rf"^\s*(?:#+\s*)?{re.escape(prefix)}\s+(\d+)", text, re.MULTILINE | re.I)]
    return found == list(range(1, num + 1))


def _starts_with(text: str, phrase: str) -> bool:
    return text.strip().lower().startswith(phrase.strip().lower())


def _ends_with(text: str, phrase: str) -> bool:
    return text.strip().lower().endswith(phrase.strip().lower())


def _quotation(text: str) -> bool:
    text = text.strip()
    return len(text) >= 2 and text[0] == '"' and text[-1] == '"'


def _placeholders(text: str, num: int) -> bool:
    return len(re.findall(r"\[[^\[\]\n]+\]", text)) >= num


def _title(text: str) -> bool:
    return re.search(r"<<[^<>\n]+>>", text) is not None


_LANGUAGE = LanguageLabeler()


def _language(text: str, language: str) -> bool:
    return _LANGUAGE(text)["language"] == language


def _no_commas(text: str) -> bool:
    return "," not in text and "，" not in text


def _highlighted_sections(text: str, num: int) -> bool:
    return len(re.findall(r"\*[^*\n]+\*", text)) >= num


def _postscript(text: str, marker: str = "P.S.") -> bool:
    return re.search(rf"^\s*{re.escape(marker)}", text, re.MULTILINE | re.IGNORECASE) is not None


CHECKS: dict[str, Callable[..., bool]] = {
    "length_words": _length_words,
    "length_sentences": _length_sentences,
    "length_paragraphs": _length_paragraphs,
    "keywords_include": _keywords_include,
    "keyword_frequency": _keyword_frequency,
    "forbidden_words": _forbidden_words,
    "lowercase": _lowercase,
    "uppercase": _uppercase,
    "json_format": _json_format,
    "bullet_count": _bullet_count,
    "numbered_sections": _numbered_sections,
    "starts_with": _starts_with,
    "ends_with": _ends_with,
    "quotation": _quotation,
    "placeholders": _placeholders,
    "title": _title,
    "language": _language,
    "no_commas": _no_commas,
    "highlighted_sections": _highlighted_sections,
    "postscript": _postscript,
}

# The instruction a prompt states for each constraint, formatted with its parameters.
INSTRUCTIONS: dict[str, str] = {
    "length_words": "Answer with {relation} {num} words.",
    "length_sentences": "Answer with {relation} {num} sentences.",
    "length_paragraphs": "Write exactly {num} paragraphs, separated by blank lines.",
    "keywords_include": "Include the keywords {keywords_text} in your response.",
    "keyword_frequency": "The word '{keyword}' should appear {relation} {num} times.",
    "forbidden_words": "Do not use the words {words_text} in your response.",
    "lowercase": "Your entire response must be in lowercase letters; no capital letters are allowed.",
    "uppercase": "Your entire response must be in English capital letters only.",
    "json_format": "Wrap your entire output in JSON format.",
    "bullet_count": "Your answer must contain exactly {num} bullet points, using markdown bullets such as '* item'.",
    "numbered_sections": "Your response must have {num} sections; mark the beginning of each with '{prefix} X'.",
    "starts_with": "Start your response with the phrase '{phrase}'.",
    "ends_with": "Finish your response with the exact phrase '{phrase}'. No other words should follow it.",
    "quotation": "Wrap your entire response in double quotation marks.",
    "placeholders": "The response must contain at least {num} placeholders in square brackets, such as [address].",
    "title": "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>.",
    "language": "Your entire response must be in the language with ISO code '{language}', no other language.",
    "no_commas": "In your entire response, refrain from the use of any commas.",
    "highlighted_sections": "Highlight at least {num} sections of your answer with markdown, i.e. *highlighted "
    "section*.",
    "postscript": "At the end of your response, add a postscript starting with {marker}",
}


def _defaults(check: Callable[..., bool]) -> dict[str, Any]:
    return {n: p.default for n, p in inspect.signature(check).parameters.items() if p.default is not p.empty}


def instruction_text(constraint: Mapping[str, Any]) -> str:
    """The sentence a prompt uses to state `constraint`."""
    params = {**_defaults(CHECKS[constraint["id"]]), **{k: v for k, v in constraint.items() if k != "id"}}
    for key in ("keywords", "words"):
        if key in params:
            params[f"{key}_text"] = ", ".join(f"'{w}'" for w in params[key])
    return INSTRUCTIONS[constraint["id"]].format(**params)


def validate_constraint(constraint: Any) -> str | None:
    """None when `constraint` names a known check with exactly the parameters it takes, else the problem."""
    if not isinstance(constraint, Mapping) or constraint.get("id") not in CHECKS:
        return f"unknown constraint {constraint!r}; known ids: {sorted(CHECKS)}"
    params = inspect.signature(CHECKS[constraint["id"]]).parameters
    given = set(constraint) - {"id"}
    required = {n for n, p in list(params.items())[1:] if p.default is p.empty}
    allowed = set(list(params)[1:])
    if not required <= given <= allowed:
        return (f"constraint {constraint['id']!r} takes {sorted(allowed)} (required {sorted(required)}), "
                f"got {sorted(given)}")  # fmt: skip
    if "relation" in given and constraint["relation"] not in RELATIONS:
        return f"relation must be one of {RELATIONS}, got {constraint['relation']!r}"
    return None


def check_constraint(response: str, constraint: Mapping[str, Any]) -> bool:
    return CHECKS[constraint["id"]](response, **{k: v for k, v in constraint.items() if k != "id"})


@REWARDS.register("ifeval")
@dataclasses.dataclass(frozen=True)
class InstructionReward:
    """The fraction of the record's `constraints` the final answer follows (`strict`: 1 only when all are).
    A completion without a final answer (unclosed think block) follows none."""

    strict: bool = False

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **fields) -> RewardResult:
        constraints = column(fields, "constraints", len(completions), "ifeval")
        out: list[float | str] = []
        for completion, wanted in zip(completions, constraints):
            if not wanted or any(validate_constraint(c) for c in wanted):
                out.append("bad_constraint")
                continue
            answer = final_answer(completion)
            followed = [answer is not None and check_constraint(answer, c) for c in wanted]
            out.append(float(all(followed)) if self.strict else sum(followed) / len(followed))
        return RewardResult.from_judgements(out)
