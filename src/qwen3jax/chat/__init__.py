"""Qwen3 chat template: native renderer, sandboxed jinja rendering, soft switches and training-data encoding."""

from qwen3jax.chat.encode import (
    TEMPLATE_SPECIAL_TOKENS,
    TokenizerLike,
    encode_conversation,
    encode_prompt,
    encode_tool_responses,
    trained_turns,
)
from qwen3jax.chat.jinja import load_chat_template, render_with_jinja
from qwen3jax.chat.template import EMPTY_THINK, apply_chat_template
from qwen3jax.chat.thinking import resolve_thinking

__all__ = [
    "EMPTY_THINK",
    "TEMPLATE_SPECIAL_TOKENS",
    "TokenizerLike",
    "apply_chat_template",
    "encode_conversation",
    "encode_prompt",
    "encode_tool_responses",
    "load_chat_template",
    "render_with_jinja",
    "resolve_thinking",
    "trained_turns",
]
