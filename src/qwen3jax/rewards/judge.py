"""Model-based reward with a reference answer (SPEC §4, general RL): a frozen judge model reads the question, the
reference answer and the response's final answer through the chat template and replies with a 0–10 score.

The score is parsed robustly (`parse_score`): the last labelled score ("Score: 7", "score of 7/10", "[[7]]",
"Rating: 7.5"), else the last "N/10", else a reply that is nothing but a number. A reply without a score in range
masks the completion ("unparsable_judge") and is counted; scores map linearly to [0, 1].

In a run the judge is one of the run's frozen models (`frozen: {judge: {path: ...}}` and `{"name": "judge", "frozen":
"judge"}`: on the run's mesh, loaded once, sharing the trained model's tokenizer); a judge with a tokenizer of its own,
or one used outside a run, is a native checkpoint (`checkpoint=`) or an HF folder (`hf=`) loaded by itself. It
generates greedily in non-thinking mode by default; tests and remote judges pass `generate=` (a function from prompt
texts to replies).
"""

from __future__ import annotations

import argparse
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from qwen3jax.rewards.base import REWARDS, LentModel, RewardResult, column
from qwen3jax.rewards.format import final_answer

DEFAULT_SYSTEM = "You are a strict, fair grader of answers."
DEFAULT_TEMPLATE = """Grade the response to the question below against the reference answer.

Question:
{question}

Reference answer:
{reference}

Response:
{response}

Judge whether the response's final answer agrees with the reference answer and is correct and complete. Reply with
one short sentence of justification, then a last line "Score: N" where N is an integer from {low} (wrong) to {high}
(fully correct and equivalent to the reference)."""

_NUM = r"(-?\d+(?:\.\d+)?)"
_LABELLED = re.compile(rf"(?:score|rating|grade)\s*(?:is|of|=|:)?\s*\**\s*{_NUM}(?:\s*(?:/|out of)\s*{_NUM})?", re.I)
_BRACKETED = re.compile(rf"\[\[\s*{_NUM}\s*\]\]")
_FRACTION = re.compile(rf"{_NUM}\s*(?:/|out of)\s*{_NUM}")
_BARE = re.compile(rf"^\W*{_NUM}\W*$")


def parse_score(reply: str, low: float = 0, high: float = 10) -> float | None:
    """The judge's score in [low, high] from its reply (thinking skipped), or None when there is none."""
    answer = final_answer(reply)
    if answer is None:
        return None
    found: list[tuple[str, str | None]] = [(m.group(1), m.group(2)) for m in _LABELLED.finditer(answer)]
    found = found or [(m.group(1), None) for m in _BRACKETED.finditer(answer)]
    found = found or [(m.group(1), m.group(2)) for m in _FRACTION.finditer(answer)]
    if not found:
        bare = _BARE.match(answer.strip())
        found = [(bare.group(1), None)] if bare else []
    if not found:
        return None
    value, scale = found[-1]
    score = float(value)
    if scale is not None and float(scale) != high:
        return None  # "3/5" on a 0–10 scale: a different scale, not a score we can read
    return score if low <= score <= high else None


def question_text(prompt: Any) -> str:
    """The question of a prompt: a plain string, or the last user message of a chat."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
    if not users:
        raise ValueError("a judged prompt needs a user message")
    return users[-1]


def judge_model(lent: LentModel | None, checkpoint: str | None, hf: str | None, tokenizer: str | None):
    """The judge as a `sample.cli.ChatModel`: the run's frozen model `lent` (its weights as the run holds them, no
    copy), or a native checkpoint / HF folder loaded by itself."""
    from flax import nnx

    from qwen3jax.sample import cli

    if sum(x is not None for x in (lent, checkpoint, hf)) != 1:
        raise ValueError("the judge needs exactly one of frozen= (a run's frozen model), checkpoint= (native) or hf= "
                         "(HF folder)")  # fmt: skip
    if lent is not None:
        if tokenizer is not None:
            raise ValueError("judge: a frozen model reads the run's tokenizer; tokenizer= is for checkpoint=/hf=")
        return cli.chat_model(nnx.merge(lent.frozen.graphdef, lent.frozen.params), lent.tokenizer)
    return cli.load(argparse.Namespace(ckpt=checkpoint, hf=hf, tokenizer=tokenizer))


def model_generate(
    chat, *, max_new_tokens: int, thinking: bool, system: str | None
) -> Callable[[Sequence[str]], list[str]]:
    """A batch generate function of a frozen judge `chat` (greedy, through the chat template)."""
    from qwen3jax.sample import generate

    def run(texts: Sequence[str]) -> list[str]:
        prompts = []
        for text in texts:
            messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
            ids = chat.encode_prompt(messages, thinking)  # the reply is message text: it cannot inject a turn
            context = chat.model.config.max_position_embeddings - max_new_tokens
            prompts.append(ids[-context:] if len(ids) > context else ids)  # keep the end: the response and the ask
        result = generate(
            chat.model, prompts, max_new_tokens=max_new_tokens, stop_ids=chat.stop_ids,
            vocab_limit=chat.tokenizer.vocab_size,
        )  # fmt: skip
        return [chat.text(ids) for ids in result.tokens]

    return run


@REWARDS.register("judge")
class JudgeReward:
    """Score in [0, 1] from a frozen judge comparing the final answer with the record's `reference` field.

    Options (all from the experiment config): `frozen` (in a run: the name of the run's frozen model that judges;
    `build_reward` resolves it to `lent`), or `checkpoint` or `hf` (+ `tokenizer` when the folder has none),
    `template` (with {question}, {reference}, {response}, {low}, {high}), `system`, `low`/`high` (the score
    range asked for), `max_new_tokens`, `thinking` (let the judge think first), `batch_size`; or `generate`.
    """

    def __init__(
        self, *, lent: LentModel | None = None, checkpoint: str | None = None, hf: str | None = None,
        tokenizer: str | None = None,
        generate: Callable[[Sequence[str]], list[str]] | None = None, template: str = DEFAULT_TEMPLATE,
        system: str | None = DEFAULT_SYSTEM, low: int = 0, high: int = 10, max_new_tokens: int = 128,
        thinking: bool = False, batch_size: int = 8, reference_field: str = "reference",
    ):  # fmt: skip
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        expected = {"question", "reference", "response", "low", "high"}
        if not {"question", "reference", "response"} <= fields <= expected:
            raise ValueError(f"judge template fields must be {sorted(expected)} (the first three required), got "
                             f"{sorted(fields)}")  # fmt: skip
        if not low < high or batch_size < 1:
            raise ValueError(f"need low < high and batch_size >= 1, got {low}, {high}, {batch_size}")
        self.chat = None  # the judge model, when it is one of ours
        if generate is None:
            self.chat = judge_model(lent, checkpoint, hf, tokenizer)
            generate = model_generate(self.chat, max_new_tokens=max_new_tokens, thinking=thinking, system=system)
        elif checkpoint or hf or lent:
            raise ValueError("pass either a judge model (frozen=/checkpoint=/hf=) or generate=, not both")
        self.generate, self.template = generate, template
        self.low, self.high, self.batch_size, self.reference_field = low, high, batch_size, reference_field
        self.replies: list[str] = []  # the last batch's judge replies, for logging samples

    def prompt(self, question: str, reference: str, response: str) -> str:
        return self.template.format(
            question=question, reference=reference, response=response, low=self.low, high=self.high
        )

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **fields) -> RewardResult:
        references = column(fields, self.reference_field, len(completions), "judge")
        out: list[float | str | None] = [None] * len(completions)
        pending = []
        for i, (prompt, completion, reference) in enumerate(zip(prompts, completions, references)):
            answer = final_answer(completion)
            if answer is None or not answer:
                out[i] = 0.0  # nothing to judge: the policy gave no final answer
            else:
                pending.append((i, self.prompt(question_text(prompt), str(reference), answer)))
        self.replies = []
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start : start + self.batch_size]
            replies = self.generate([text for _, text in chunk])
            if len(replies) != len(chunk):
                raise ValueError(f"the judge returned {len(replies)} replies for {len(chunk)} prompts")
            self.replies += replies
            for (i, _), reply in zip(chunk, replies):
                score = parse_score(reply, self.low, self.high)
                out[i] = "unparsable_judge" if score is None else (score - self.low) / (self.high - self.low)
        return RewardResult.from_judgements(out)  # type: ignore[arg-type]

