"""The response format of Qwen3's hybrid thinking (TR §4.3) as a rule reward, and the final-answer split every
answer-checking reward shares.

A completion here is the whole assistant turn as the template lays it out: `<think>\\n…\\n</think>\\n\\nanswer`,
optionally followed by the turn's end token. In non-thinking mode the template puts the empty think block
(`EMPTY_THINK`) into the generation prompt, so a rollout passes that prefix plus the generated text.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from qwen3jax.chat.thinking import resolve_thinking
from qwen3jax.rewards.base import REWARDS, RewardResult
from qwen3jax.special_tokens import SPECIAL_TOKENS

_END_TOKENS = ("<|im_end|>", "<|endoftext|>")
# The last whole-word soft switch of a plain-text prompt (the chat helper parses message lists).
_SWITCH = re.compile(r"(?<![\w/])/(no_)?think(?!\w)")


def _strip_end(completion: str) -> str:
    """The completion without its trailing end-of-turn tokens (one each at most, as generation stops there)."""
    text = completion.rstrip()
    for token in ("<|endoftext|>", "<|im_end|>"):
        if text.endswith(token):
            text = text[: -len(token)].rstrip()
    return text


def final_answer(completion: str) -> str | None:
    """The text after the last `</think>` (end tokens removed); the whole text when there is no think block; None
    when a think block is opened and never closed (the model ran out of budget inside its reasoning)."""
    text = _strip_end(completion)
    if "</think>" in text:
        return text.rsplit("</think>", 1)[1].strip()
    if "<think>" in text:
        return None
    return text.strip()


def thinking_mode(prompt: Any, default: bool = True) -> bool:
    """The mode a prompt asks for: the last `/think` or `/no_think` of a message list (tool output ignored) or of
    a plain-text prompt; `default` when there is none."""
    if isinstance(prompt, str):
        flags = _SWITCH.findall(prompt)
        return flags[-1] != "no_" if flags else default
    if isinstance(prompt, Sequence) and all(isinstance(m, Mapping) for m in prompt):
        return resolve_thinking(prompt, enable_thinking=default)
    raise TypeError(f"a prompt is a string or a list of chat messages, got {type(prompt).__name__}")


_BLOCK = re.compile(r"<think>(.*?)</think>(.*)", re.DOTALL)


def format_violations(completion: str, thinking: bool) -> list[str]:
    """Every way `completion` breaks the hybrid-thinking format for the requested mode ([] = well formed)."""
    text = _strip_end(completion)
    problems = []
    if text.count("<think>") != 1 or text.count("</think>") != 1:
        problems.append("think_tags")  # exactly one opening and one closing tag
    match = _BLOCK.match(text)
    if match is None:
        return sorted(set(problems + ["no_leading_think_block"]))
    reasoning, answer = match.group(1), match.group(2)
    if any(token in reasoning + answer for token in SPECIAL_TOKENS):
        problems.append("stray_special_token")
    if thinking and not reasoning.strip():
        problems.append("empty_thinking")
    if not thinking and reasoning.strip():
        problems.append("thinking_in_no_think_mode")
    if not answer.strip():
        problems.append("no_answer")
    return sorted(set(problems))


@REWARDS.register("format")
@dataclasses.dataclass(frozen=True)
class FormatReward:
    """1 when the completion has the format its prompt's mode asks for, else 0 (always judgeable).

    default_thinking: the mode of prompts without a soft switch (the template's `enable_thinking`).
    """

    default_thinking: bool = True

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **fields) -> RewardResult:
        if len(prompts) != len(completions):
            raise ValueError(f"format reward: {len(prompts)} prompts for {len(completions)} completions")
        return RewardResult.from_judgements(
            [
                0.0 if format_violations(c, thinking_mode(p, self.default_thinking)) else 1.0
                for p, c in zip(prompts, completions)
            ]
        )
