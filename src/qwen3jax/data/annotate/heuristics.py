"""Fast rule-based labelers: language, domain/field, educational value, safety.

They look at a bounded prefix of each document (`_SAMPLE_CHARS`) so their cost does not grow with document length,
and they share one word/line analysis of that prefix (`_analyse`, cached) instead of running many case-insensitive
regular expressions (which Python's `re` executes slowly). At about a millisecond per document for all four they
can run inline in the training pipeline. They are heuristics: the model-based labelers in `classifier.py` and
`judge.py` exist for when these are not good enough.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections import Counter
from typing import Any

from qwen3jax.data.annotate.base import Labeler

_SAMPLE_CHARS = 5_000
_MAX_LINES = 200
_WORD = re.compile(r"[^\W\d_]+")


@dataclasses.dataclass(frozen=True)
class _Analysis:
    sample: str
    lower: str  # Lower-cased sample, for substring tests of phrases.
    num_words: int
    counts: Counter[str]  # Lower-cased words (letters only) and how often each occurs.
    lines: tuple[str, ...]  # Non-blank lines, at most _MAX_LINES.


@functools.lru_cache(maxsize=8)
def _analyse(text: str) -> _Analysis:
    sample = text[:_SAMPLE_CHARS]
    lower = sample.lower()
    lines = tuple(line for line in sample.split("\n") if line.strip())[:_MAX_LINES]
    words = _WORD.findall(lower)
    return _Analysis(sample, lower, len(words), Counter(words), lines)


def _count_stems(a: _Analysis, stems: tuple[str, ...]) -> int:
    """Occurrences of words starting with any of `stems` (tested once per distinct word)."""
    return sum(count for word, count in a.counts.items() if word.startswith(stems))


def _count_words(a: _Analysis, words: frozenset[str]) -> int:
    return sum(a.counts[w] for w in a.counts.keys() & words)


def _count_phrases(lower: str, phrases: tuple[str, ...]) -> int:
    return sum(lower.count(p) for p in phrases)


# --------------------------------------------------------------------------------------------------- language
# Unicode blocks of scripts that identify a language (or a small family) by themselves.
_SCRIPTS = {
    "ja": re.compile("[\u3040-\u30ff]"),  # Kana: Japanese even when mixed with Han characters.
    "zh": re.compile("[\u4e00-\u9fff\u3400-\u4dbf]"),
    "ko": re.compile("[\uac00-\ud7af\u1100-\u11ff]"),
    "ru": re.compile("[\u0400-\u04ff]"),
    "el": re.compile("[\u0370-\u03ff]"),
    "ar": re.compile("[\u0600-\u06ff]"),
    "he": re.compile("[\u0590-\u05ff]"),
    "hi": re.compile("[\u0900-\u097f]"),
    "th": re.compile("[\u0e00-\u0e7f]"),
}
_LATIN = re.compile("[A-Za-z\u00c0-\u024f]")

# The most frequent function words (articles, pronouns, auxiliaries, prepositions, conjunctions) of Latin-script
# languages. Function words make up a third or more of any sentence, so they separate these languages on a few
# hundred words of text, and on a single sentence when several distinct ones agree.
_STOPWORDS = {
    "en": "the and of to in is that it for with as was on are be this by not or from which an you he she we they my "
    "your his her our their me him us them have has had were will would can could should do does did at but all "
    "there what so if about been no here where when why how who some any into out up over than then now just very",
    "de": "der die und das ist nicht ein eine zu den mit sich des auf für dem im auch es von ich du er sie wir ihr mich "
    "dich mir dir uns habe hat haben bin bist sind war waren wird werden kann keine kein noch nach bei aus wie was wo "
    "wer sehr schon heute aber oder wenn dass doch nur in seit um zum zur vom",
    "fr": "le la les et des est une un du que dans pour pas qui sur au avec ce sont par je tu il elle nous vous ils "
    "elles ne mon ma mes ton ta son sa ses avons avez ont suis était où mais ou donc car très aussi cette ces leur "
    "plus aux",
    "es": "el la los las y de que en es por un una para con del se al como su pero mi mis yo él ella nosotros ellos "
    "está están estoy son fue era muy más ya también sé dónde donde cuando porque hay este esta estos esa eso lo le "
    "nos tengo tiene",
    "it": "il la che di e per un una sono del della non con gli le al nel anche io lui lei noi voi loro mio mia sul "
    "sulla dei delle alla è sia ho hai ha abbiamo siamo questo questa quello dove come ma più molto",
    "pt": "o a os as e de que em um uma para com não do da por se ao dos eu ele ela nós eles meu minha meus seu sua "
    "está estão sou é foi muito mais já também onde quando porque há este esta isso na no nas nos das à",
    "nl": "de het een en van is dat niet op te zijn met voor er aan ook als ik jij je hij zij wij mijn weet waar wat "
    "wie hoe naar gaan heb heeft hebben waren wordt maar nog al dan toch",
}
_STOPWORD_SETS = {lang: frozenset(words.split()) for lang, words in _STOPWORDS.items()}
# A text this short is one or two sentences: it has too few function words for the count threshold of longer texts,
# so it is labelled when at least two distinct ones of a language make up this share of its words, and it reads as
# prose: no code line, and letters make up this share of its non-space characters (not a URL or a formula).
_SHORT_TEXT_WORDS = 30
_SHORT_TEXT_SHARE = 0.2
_PROSE_LETTER_SHARE = 0.85


class LanguageLabeler(Labeler):
    """`language`: ISO 639-1 code of the natural language (code counts as the language of its comments), or "und"."""

    name = "language"
    fields = ("language",)

    def __call__(self, text: str) -> dict[str, Any]:
        a = _analyse(text)
        latin = len(_LATIN.findall(a.sample))
        if not a.sample.isascii():
            counts = {lang: len(pattern.findall(a.sample)) for lang, pattern in _SCRIPTS.items()}
            letters = latin + sum(counts.values())
            if counts["ja"] > 0.05 * letters:
                return {"language": "ja"}
            lang, count = max(counts.items(), key=lambda kv: kv[1])
            if count > 0.3 * letters:
                return {"language": lang}
        if latin < 10:
            return {"language": "und"}
        scores = sorted(((_count_words(a, stop), lang) for lang, stop in _STOPWORD_SETS.items()), reverse=True)
        (best, lang), (second, _) = scores[0], scores[1]
        if best < 1.5 * second:
            return {"language": "und"}
        if best >= 5:
            return {"language": lang}
        # One or two sentences of prose (code keywords such as `for`, `in`, `as` are English stopwords).
        distinct = len(a.counts.keys() & _STOPWORD_SETS[lang])
        letters = sum(map(str.isalpha, a.sample))
        prose = letters >= _PROSE_LETTER_SHARE * (len(a.sample) - sum(map(str.isspace, a.sample))) and not any(
            _CODE_LINE.search(line) for line in a.lines
        )
        if prose and a.num_words <= _SHORT_TEXT_WORDS and distinct >= 2 and best >= _SHORT_TEXT_SHARE * a.num_words:
            return {"language": lang}
        return {"language": "und"}


# ----------------------------------------------------------------------------------------------------- domain
_CODE_LINE = re.compile(
    r"^\s*(def |class |import |from \S+ import|return\b|elif\b|else:|try:|except\b|raise\b|yield\b|"
    r"#include|public |private |static |function\b|var |let |const |package |fn |func |@\w+)"
    r"|[;{}]\s*$|^\s*[\w.\[\]]+\s*[+\-*/]?=\s*\S|^\s*#|^\s*//|^\s*>>> |^ {4,}\S.*[(:]$"
)
_LATEX = re.compile(
    r"\\(frac|sum|int|sqrt|boxed|alpha|beta|theta|pi|cdot|times|leq|geq|mathbb|left|right)\b|\$[^$\n]{1,200}\$"
)
_ARITHMETIC = re.compile(r"\d\s*[-+*/×÷^=]\s*\d")
_MATH_STEMS = (
    "equation",
    "theorem",
    "lemma",
    "proof",
    "integer",
    "polynomial",
    "matri",
    "derivativ",
    "integral",
    "eigen",
    "probabilit",
    "solv",
    "solution",
    "prime",
    "divisib",
    "remainder",
    "fraction",
    "varianc",
    "vector",
    "modulo",
)
_SCIENCE_STEMS = (
    "physic",
    "chemi",
    "biolog",
    "molecul",
    "cell",
    "protein",
    "gene",
    "species",
    "energ",
    "experiment",
    "hypothes",
    "measurement",
    "climat",
    "atom",
    "quantum",
    "astronom",
    "galax",
    "neuron",
    "clinical",
    "medical",
    "dataset",
    "image",
    "annotat",
    "benchmark",
    "corpus",
    "sample",
    "observation",
    "sensor",
    "spectr",
    "statistic",
    "research",
    "scientific",
    "laborator",
    "organism",
    "disease",
    "patient",
)
_LEGAL_STEMS = (
    "licens",
    "licenc",
    "warrant",
    "liabilit",
    "hereby",
    "pursuant",
    "copyright",
    "shall",
    "indemnif",
    "damages",
    "redistribut",
    "notwithstanding",
    "agreement",
)
_BIB_ENTRY = re.compile(r"@(article|inproceedings|misc|book|techreport|phdthesis|incollection|online)\s*\{", re.I)

DOMAINS = ("code", "math", "science", "legal", "reference", "prose")
# Per-word density at which a field's vocabulary makes a document belong to it.
_DOMAIN_THRESHOLDS = {"math": 0.03, "legal": 0.03, "science": 0.015}


class DomainLabeler(Labeler):
    """`domain`: one of DOMAINS, from line-level code patterns and per-word densities of field vocabulary."""

    name = "domain"
    fields = ("domain",)

    def __call__(self, text: str) -> dict[str, Any]:
        a = _analyse(text)
        if not a.lines:
            return {"domain": "prose"}
        bib_entries = len(_BIB_ENTRY.findall(a.sample))
        if bib_entries and a.sample.count("=") >= 3 * bib_entries:
            return {"domain": "reference"}
        if sum(bool(_CODE_LINE.search(line)) for line in a.lines) >= 0.5 * len(a.lines):
            return {"domain": "code"}
        n = max(a.num_words, 1)
        densities = {
            "math": (len(_LATEX.findall(a.sample)) + len(_ARITHMETIC.findall(a.sample)) + _count_stems(a, _MATH_STEMS))
            / n,
            "legal": _count_stems(a, _LEGAL_STEMS) / n,
            "science": _count_stems(a, _SCIENCE_STEMS) / n,
        }
        passing = [(densities[d] / t, d) for d, t in _DOMAIN_THRESHOLDS.items() if densities[d] >= t]
        return {"domain": max(passing)[1] if passing else "prose"}


# -------------------------------------------------------------------------------------------- educational value
_EXPLANATORY_PHRASES = (
    "for example",
    "for instance",
    "e.g.",
    "note that",
    "is defined",
    "means that",
    "in other words",
    "we can",
    "this shows",
    "as a result",
    "first,",
    "second,",
    "finally,",
)
_EXPLANATORY_WORDS = frozenset({"because", "therefore", "thus", "hence", "consider", "step", "since"})
_ACADEMIC_STEMS = (
    "analy",
    "concept",
    "method",
    "theor",
    "principl",
    "function",
    "algorithm",
    "structur",
    "process",
    "exampl",
    "defin",
    "describ",
    "paramet",
    "result",
    "equation",
    "evaluat",
    "comput",
    "calculat",
    "explain",
    "represent",
    "propert",
    "variabl",
)
_STRUCTURE = re.compile(r"^(#{1,6} |\s*[-*] |\s*\d+[.)] |\s*```|[-=~^]{3,}$)")
_BOILERPLATE_PHRASES = (
    "http://",
    "https://",
    "www.",
    "click here",
    "subscribe",
    "cookie",
    "all rights reserved",
    "sign up",
    "log in",
    "privacy policy",
)
_SENTENCE_END = re.compile(r"[.!?。！？](\s|$)")


class EducationalValueLabeler(Labeler):
    """`edu_score`: 0–5, one point each for length, explanation, vocabulary, structure and sentence form; minus
    one for boilerplate. Modelled on the additive rubric of FineWeb-Edu's annotation prompt, with rules instead of
    an LM."""

    name = "edu"
    fields = ("edu_score",)

    def __call__(self, text: str) -> dict[str, Any]:
        a = _analyse(text)
        n = max(a.num_words, 1)
        explanatory = _count_phrases(a.lower, _EXPLANATORY_PHRASES) + _count_words(a, _EXPLANATORY_WORDS)
        sentences = len(_SENTENCE_END.findall(a.sample))
        score = 0
        score += a.num_words >= 80
        score += explanatory >= 2
        score += _count_stems(a, _ACADEMIC_STEMS) / n >= 0.01
        score += sum(bool(_STRUCTURE.match(line)) for line in a.lines) >= 2
        score += sentences >= 3 and 6 <= a.num_words / sentences <= 45
        repeated = 1 - len(set(a.lines)) / max(len(a.lines), 1)
        score -= _count_phrases(a.lower, _BOILERPLATE_PHRASES) / n > 0.02 or repeated > 0.4
        return {"edu_score": int(max(0, min(5, score)))}


# ------------------------------------------------------------------------------------------------------ safety
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]*[a-z]{2,}\b", re.IGNORECASE)
_PHONE = re.compile(r"(?<![\w.])\+?\(?\d{2,4}\)?[ .-]\d{3,4}[ .-]\d{3,4}(?![\w.])")
_SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
_CARD = re.compile(r"\b(?:\d[ -]?){13,19}\b")
_HARMFUL_PHRASES = (
    "kill yourself",
    "how to make a bomb",
    "build a bomb",
    "child porn",
    "credit card dump",
    "buy stolen",
    "white power",
    "heil hitler",
)
_PROFANITY_STEMS = ("fuck", "shit", "cunt", "motherfuck", "bitch")


def _luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


class SafetyLabeler(Labeler):
    """`safety`: "flagged" or "ok"; `safety_reasons`: which of pii_email, pii_phone, pii_ssn, pii_card,
    harmful, profanity fired. Flags are for filtering/weighting by the mixture, not proof of harm."""

    name = "safety"
    fields = ("safety", "safety_reasons")

    def __call__(self, text: str) -> dict[str, Any]:
        a = _analyse(text)
        reasons = []
        if "@" in a.sample and _EMAIL.search(a.sample):
            reasons.append("pii_email")
        if _PHONE.search(a.sample):
            reasons.append("pii_phone")
        if _SSN.search(a.sample):
            reasons.append("pii_ssn")
        if any(_luhn_valid(re.sub(r"\D", "", m.group())) for m in _CARD.finditer(a.sample)):
            reasons.append("pii_card")
        if _count_phrases(a.lower, _HARMFUL_PHRASES):
            reasons.append("harmful")
        if _count_stems(a, _PROFANITY_STEMS) >= 3:
            reasons.append("profanity")
        return {"safety": "flagged" if reasons else "ok", "safety_reasons": reasons}


HEURISTIC_LABELERS: dict[str, type[Labeler]] = {
    "language": LanguageLabeler,
    "domain": DomainLabeler,
    "edu": EducationalValueLabeler,
    "safety": SafetyLabeler,
}
