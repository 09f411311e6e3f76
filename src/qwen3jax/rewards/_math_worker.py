"""A math-verify worker process: reads JSON lines `{"answer", "gold"}` on stdin, writes `{"score": 1.0 | 0.0 | null}`
(null: the gold is not parseable math) or `{"error": "..."}` per line. Started by `qwen3jax.rewards.math` with
`python -I <this file>`, so it imports nothing of the project (and never a caller's `__main__`)."""

import json
import logging
import re
import sys

from math_verify import parse, verify

logging.disable(logging.WARNING)  # math-verify warns on every call that its own (SIGALRM) time-out is off

# Unicode operators of the embedded corpus's answers (e.g. "2^3 × 5") as LaTeX, for both gold and answer.
_UNICODE = {"×": r"\times ", "÷": r"\div ", "−": "-", "²": "^2", "³": "^3", "·": r"\cdot "}


def normalise(text):
    for char, latex in _UNICODE.items():
        text = text.replace(char, latex)
    return text


# Words that may appear in a mathematical answer; any other run of two or more letters makes the gold text (a name,
# a phrase), which sympy would otherwise read as a product of single-letter symbols.
_MATH_WORDS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln exp sqrt frac dfrac tfrac pi infty inf "
    "oo cdot times div pm mp le leq ge geq ne neq in cup cap emptyset mathbb mathrm text left right circ deg "
    "mod pmod bmod gcd lcm min max binom choose".split()
)
_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")


def is_text(gold):
    return any(word not in _MATH_WORDS for word in _WORD.findall(gold))


def parse_gold(gold):
    """A reference answer is the answer itself, so it is parsed as math (`$gold$`) when it has no delimiters.
    Only a sympy parse counts: math-verify's string fallback would compare text and is not a parse."""
    gold = normalise(gold)
    if is_text(gold):
        return []
    candidates = [gold] if ("$" in gold or "\\boxed" in gold or "\\(" in gold) else [f"${gold}$", gold]
    for text in candidates:
        parsed = parse(text, parsing_timeout=None)
        if parsed and not isinstance(parsed[0], str):
            return parsed
    return []


def check(answer, gold):
    gold_parsed = parse_gold(gold)
    if not gold_parsed:
        return None
    if answer is None:
        return 0.0
    parsed = parse(normalise(answer), parsing_timeout=None)
    if not parsed:
        return 0.0
    return 1.0 if verify(gold_parsed, parsed, timeout_seconds=None) else 0.0


def main():
    sys.stdout.write(json.dumps({"ready": True}) + "\n")  # imports done: request time-outs start now
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"score": check(request["answer"], request["gold"])}
        except Exception as e:  # a crash on one input must not end the worker
            reply = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
