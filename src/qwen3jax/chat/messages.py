"""Validation of HF/OpenAI-style chat messages into the plain fields the Qwen3 template reads.

The official jinja template never rejects anything: an unknown role renders nothing, non-string content renders as
'', a malformed tool call renders half a JSON object. Training data built from such input is silently wrong, so the
native path checks every message up front and names the offending index instead.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


@dataclasses.dataclass(frozen=True)
class Turn:
    """One validated message. `tool_calls` holds (name, arguments-as-rendered) pairs."""

    role: str
    content: str
    reasoning_content: str | None = None
    tool_calls: tuple[tuple[str, str], ...] = ()


def to_json(value: Any, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    """The `tojson` filter as HF's chat templating defines it (jinja's own escapes HTML and sorts keys), so the
    native renderer and `render_with_jinja` print tool schemas and arguments identically."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def is_tool_response(content: str) -> bool:
    """A user message that only wraps a tool result; the template does not count it as a real user query."""
    return content.startswith("<tool_response>") and content.endswith("</tool_response>")


def parse_messages(messages: Sequence[Mapping[str, Any]]) -> list[Turn]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError(f"messages must be a list of dicts, got {type(messages).__name__}")
    if not messages:
        raise ValueError("messages is empty; the Qwen3 template needs at least one message")
    return [_parse_message(i, m) for i, m in enumerate(messages)]


def parse_tools(tools: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """Each tool's JSON line for the system block; None or [] means no tools section (the template tests `if tools`)."""
    if tools is None:
        return []
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise ValueError(f"tools must be a list of dicts (JSON schemas), got {type(tools).__name__}")
    texts = []
    for k, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise ValueError(f"tool {k}: expected a dict (JSON schema), got {type(tool).__name__}")
        texts.append(_json_or_error(tool, f"tool {k}"))
    return texts


def _parse_message(i: int, message: Any) -> Turn:
    if not isinstance(message, Mapping):
        raise ValueError(f"message {i}: expected a dict, got {type(message).__name__}")
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise ValueError(f"message {i}: unknown role {role!r}; expected one of {', '.join(ROLES)}")
    content = message.get("content")
    raw_calls = message.get("tool_calls")
    reasoning = message.get("reasoning_content")
    if role != "assistant":
        for key in ("tool_calls", "reasoning_content"):
            if message.get(key):
                raise ValueError(f"message {i}: {key!r} is only allowed on assistant messages, not {role!r}")
    # OpenAI convention: an assistant turn that only calls tools may have no content; everything else needs text.
    if content is None and role == "assistant" and raw_calls:
        content = ""
    if not isinstance(content, str):
        problem = "has no 'content'" if content is None else f"content must be a string, got {type(content).__name__}"
        raise ValueError(f"message {i} ({role}): {problem}")
    if role != "assistant":
        return Turn(role, content)
    if reasoning is not None and not isinstance(reasoning, str):
        raise ValueError(f"message {i}: reasoning_content must be a string, got {type(reasoning).__name__}")
    return Turn(role, content, reasoning, _parse_tool_calls(i, raw_calls))


def _parse_tool_calls(i: int, calls: Any) -> tuple[tuple[str, str], ...]:
    if calls is None:
        return ()
    if not isinstance(calls, Sequence) or isinstance(calls, (str, bytes)):
        raise ValueError(f"message {i}: tool_calls must be a list, got {type(calls).__name__}")
    parsed = []
    for j, call in enumerate(calls):
        where = f"message {i}, tool call {j}"
        if not isinstance(call, Mapping):
            raise ValueError(f"{where}: expected a dict, got {type(call).__name__}")
        # The template unwraps `function` only when it is truthy; otherwise it reads name/arguments from the call.
        function = call.get("function") or call
        if not isinstance(function, Mapping):
            raise ValueError(f"{where}: 'function' must be a dict, got {type(function).__name__}")
        name, arguments = function.get("name"), function.get("arguments")
        if not isinstance(name, str):
            raise ValueError(f"{where}: function name must be a string, got {type(name).__name__}")
        if isinstance(arguments, dict):
            arguments = _json_or_error(arguments, where)
        elif not isinstance(arguments, str):
            raise ValueError(
                f"{where}: arguments must be a dict or a JSON string, got {type(arguments).__name__}"
            )
        else:  # rendered verbatim inside the call's JSON object: anything but JSON would break it
            try:
                json.loads(arguments)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: arguments is a string but not JSON ({e}): {arguments[:80]!r}") from None
        parsed.append((name, arguments))
    return tuple(parsed)


def _json_or_error(value: Any, where: str) -> str:
    try:
        return to_json(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: not JSON-serialisable: {e}") from e
