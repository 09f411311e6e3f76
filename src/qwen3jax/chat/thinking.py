"""The `/think` and `/no_think` soft switches (TR §4.3, thinking-mode fusion).

They are plain text in user or system messages; the model follows the most recent one, so the last flag in the
conversation wins, also within one message. The template itself ignores them: the caller resolves the mode and
passes it on (as `enable_thinking` for a generation prompt, or to `encode_conversation` for training data).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from qwen3jax.chat.messages import is_tool_response, parse_messages

# A whole-word flag: "/thinking", "a/think" or "//think" are not switches.
_SWITCH = re.compile(r"(?<![\w/])/(no_)?think(?!\w)")


def resolve_thinking(messages: Sequence[Mapping[str, Any]], *, enable_thinking: bool = True) -> bool:
    """The thinking mode in force after `messages`: the last soft switch in a user or system message decides, and
    `enable_thinking` applies when there is none. Tool results (tool messages, or user messages wrapping a
    `<tool_response>`) are environment output, not the user's words, so their text is never read as a switch."""
    if not isinstance(enable_thinking, bool):
        raise ValueError(f"enable_thinking must be a bool, got {type(enable_thinking).__name__}")
    mode = enable_thinking
    for turn in parse_messages(messages):
        if turn.role in ("user", "system") and not is_tool_response(turn.content):
            flags = _SWITCH.findall(turn.content)
            if flags:
                mode = flags[-1] != "no_"
    return mode
