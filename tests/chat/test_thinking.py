"""`/think` and `/no_think` soft switches: the last one in a user or system message wins."""

from __future__ import annotations

import pytest

from qwen3jax.chat import resolve_thinking


def user(text):
    return {"role": "user", "content": text}


@pytest.mark.parametrize(
    ("messages", "default", "expected"),
    [
        ([user("hi")], True, True),
        ([user("hi")], False, False),
        ([user("hi /no_think")], True, False),
        ([user("hi /think")], False, True),
        ([user("a /no_think"), {"role": "assistant", "content": "ok"}, user("b /think")], False, True),
        ([user("a /think"), {"role": "assistant", "content": "ok"}, user("b, same mode")], False, True),
        ([user("/think first, then /no_think")], True, False),
        ([{"role": "system", "content": "Answer fast. /no_think"}, user("q")], True, False),
        ([{"role": "system", "content": "/no_think"}, user("q /think")], True, True),
        ([user("(/no_think)")], True, False),
        ([user("end./no_think.")], True, False),
    ],
)
def test_last_switch_wins(messages, default, expected):
    assert resolve_thinking(messages, enable_thinking=default) is expected


@pytest.mark.parametrize(
    "messages",
    [
        [user("/thinking about /no_thinking, a/no_think, //no_think")],
        [user("q"), {"role": "assistant", "content": "I will /no_think"}],
        [user("q"), {"role": "tool", "content": "/no_think"}],
        [user("q"), {"role": "user", "content": "<tool_response>\n/no_think\n</tool_response>"}],
    ],
    ids=["not_whole_words", "assistant_text", "tool_message", "wrapped_tool_response"],
)
def test_text_that_is_not_a_switch(messages):
    assert resolve_thinking(messages, enable_thinking=True) is True


def test_invalid_input_raises():
    with pytest.raises(ValueError, match="enable_thinking must be a bool"):
        resolve_thinking([user("q")], enable_thinking="no")
    with pytest.raises(ValueError, match="message 0: unknown role"):
        resolve_thinking([{"role": "human", "content": "/no_think"}])
