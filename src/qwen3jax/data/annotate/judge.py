"""A prompt-based LM judge labeler: asks a language model to grade each document and parses its score.

The model is any callable from prompt to completion text (the project's sampler once generation exists, or a
remote endpoint), so this module does not depend on how generation is done. Replies without a parseable score in
range are recorded as None and counted, never silently turned into a default score.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from qwen3jax.data.annotate.base import Labeler

EDUCATIONAL_VALUE_PROMPT = """Rate how useful the following extract would be for teaching, from primary school to
university level.
Add one point for each of these that holds:
- it contains some basic information relevant to an educational topic;
- it addresses elements pertinent to education, even if mixed with unrelated content;
- it is appropriate for education and introduces key concepts relevant to a curriculum;
- it is highly relevant and beneficial for learning, like a textbook section or tutorial;
- it is outstanding in educational value, with clear step-by-step reasoning and no irrelevant content.

Extract:
<<<
{text}
>>>

Give a one-sentence justification, then end with the line "Score: N" where N is an integer from {low} to {high}."""

_SCORE = re.compile(r"score\s*[:=]\s*(-?\d+)", re.IGNORECASE)


class JudgeLabeler(Labeler):
    """`{field: int score or None}` from an LM's reply to `prompt` (with `{text}`, `{low}`, `{high}` fields).

    Attributes:
      unparsed: how many replies had no score in [low, high] (they were labelled None).
    """

    name = "judge"

    def __init__(
        self,
        generate: Callable[[str], str],
        *,
        field: str = "edu_score_lm",
        prompt: str = EDUCATIONAL_VALUE_PROMPT,
        low: int = 0,
        high: int = 5,
        max_chars: int = 4000,
    ):
        if low > high:
            raise ValueError(f"empty score range [{low}, {high}]")
        self.generate = generate
        self.field = field
        self.fields = (field,)
        self.prompt, self.low, self.high, self.max_chars = prompt, low, high, max_chars
        self.unparsed = 0

    def parse(self, reply: str) -> int | None:
        """The last "Score: N" in the reply, if N is in range."""
        matches = _SCORE.findall(reply)
        if matches and self.low <= int(matches[-1]) <= self.high:
            return int(matches[-1])
        return None

    def __call__(self, text: str) -> dict[str, Any]:
        reply = self.generate(self.prompt.format(text=text[: self.max_chars], low=self.low, high=self.high))
        score = self.parse(reply)
        self.unparsed += score is None
        return {self.field: score}
