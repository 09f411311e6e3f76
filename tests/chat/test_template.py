"""The native renderer, the official jinja template (sandboxed) and HF transformers agree byte for byte with the
hand-written expected strings of every case; malformed messages fail with the message index."""

from __future__ import annotations

import re

import pytest
from tests.chat.chat_cases import CASES, Case, wrapped
from transformers import PreTrainedTokenizerFast

from qwen3jax.chat import apply_chat_template, render_with_jinja

PARAMS = [pytest.param(case, id=case.id) for case in CASES]


@pytest.mark.parametrize("case", PARAMS)
def test_native_renderer_matches_expected(case: Case):
    assert apply_chat_template(case.messages, **case.kwargs) == case.expected


@pytest.mark.parametrize("case", PARAMS)
def test_official_jinja_template_matches_expected(case: Case, official_template: str):
    assert render_with_jinja(official_template, case.messages, **case.kwargs) == case.expected


@pytest.fixture(scope="module")
def hf_tokenizer(qwen3_tokenizer_dir):
    return PreTrainedTokenizerFast.from_pretrained(str(qwen3_tokenizer_dir))


@pytest.mark.parametrize("case", PARAMS)
def test_transformers_apply_chat_template_matches_expected(case: Case, hf_tokenizer):
    # Independent check of our jinja environment settings (whitespace control, tojson) against HF's.
    assert hf_tokenizer.apply_chat_template(case.messages, tokenize=False, **case.kwargs) == case.expected


def test_messages_are_not_modified():
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>r</think>a"}]
    snapshot = [dict(m) for m in messages]
    apply_chat_template(messages)
    assert messages == snapshot


USER = {"role": "user", "content": "q"}
MALFORMED = [
    ("empty", [], "messages is empty"),
    ("not_a_list", {"role": "user", "content": "q"}, "must be a list"),
    ("not_a_dict", [USER, "hello"], "message 1: expected a dict"),
    ("unknown_role", [USER, {"role": "developer", "content": "x"}], "message 1: unknown role 'developer'"),
    ("missing_role", [{"content": "x"}], "message 0: unknown role None"),
    ("missing_content", [USER, {"role": "assistant"}], "message 1 (assistant): has no 'content'"),
    ("none_content_user", [{"role": "user", "content": None}], "message 0 (user): has no 'content'"),
    (
        "list_content",
        [USER, {"role": "tool", "content": [{"type": "text", "text": "x"}]}],
        "message 1 (tool): content must be a string, got list",
    ),
    ("system_bytes", [{"role": "system", "content": b"x"}, USER], "message 0 (system): content must be a string"),
    (
        "reasoning_not_string",
        [USER, {"role": "assistant", "content": "a", "reasoning_content": 3}],
        "message 1: reasoning_content must be a string",
    ),
    (
        "reasoning_on_user",
        [{"role": "user", "content": "q", "reasoning_content": "r"}],
        "message 0: 'reasoning_content' is only allowed on assistant",
    ),
    (
        "tool_calls_on_tool",
        [USER, {"role": "tool", "content": "x", "tool_calls": [wrapped({})]}],
        "message 1: 'tool_calls' is only allowed on assistant",
    ),
    (
        "tool_calls_not_list",
        [USER, {"role": "assistant", "content": "", "tool_calls": "get_weather"}],
        "message 1: tool_calls must be a list",
    ),
    (
        "tool_call_not_dict",
        [USER, {"role": "assistant", "content": "", "tool_calls": [wrapped({}), 7]}],
        "message 1, tool call 1: expected a dict",
    ),
    (
        "tool_call_function_not_dict",
        [USER, {"role": "assistant", "content": "", "tool_calls": [{"function": "now"}]}],
        "message 1, tool call 0: 'function' must be a dict",
    ),
    (
        "tool_call_without_name",
        [USER, {"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": {}}}]}],
        "message 1, tool call 0: function name must be a string, got NoneType",
    ),
    (
        "tool_call_arguments_wrong_type",
        [USER, {"role": "assistant", "content": "", "tool_calls": [wrapped(["a"])]}],
        "message 1, tool call 0: arguments must be a dict or a JSON string, got list",
    ),
    (
        "tool_call_arguments_string_not_json",
        [USER, {"role": "assistant", "content": "", "tool_calls": [wrapped("{city: Paris")]}],
        "message 1, tool call 0: arguments is a string but not JSON (Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1)): '{city: Paris'",
    ),
    (
        "tool_call_arguments_not_json",
        [USER, {"role": "assistant", "content": "", "tool_calls": [wrapped({"when": object()})]}],
        "message 1, tool call 0: not JSON-serialisable",
    ),
]


@pytest.mark.parametrize(("messages", "match"), [pytest.param(m, e, id=i) for i, m, e in MALFORMED])
def test_malformed_messages_raise_naming_the_message(messages, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        apply_chat_template(messages)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tools": {"type": "function"}}, "tools must be a list"),
        ({"tools": [{"type": "function"}, "now"]}, "tool 1: expected a dict"),
        ({"tools": [{"f": {1, 2}}]}, "tool 0: not JSON-serialisable"),
        ({"enable_thinking": 0, "add_generation_prompt": True}, "enable_thinking must be a bool"),
        ({"add_generation_prompt": "yes"}, "add_generation_prompt must be a bool"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        apply_chat_template([USER], **kwargs)
