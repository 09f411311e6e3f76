"""Chat records → token ids with the assistant-only loss mask, for SFT and distillation data.

A record is `{"messages": [...], "tools": [...]?, "enable_thinking": bool?}` (JSONL, ArrayRecord or a Parquet row
with those columns; other fields are labels, usable in `where` filters). It is rendered with the project's Qwen3
chat template and encoded by `chat.encode_conversation`: the loss mask covers the think block, answer, tool calls
and `<|im_end|>` of every trained assistant turn, and nothing of system, user or tool turns.

Bad records are counted by reason (`badinput.REASONS`) and skipped. A conversation longer than the sequence is
dropped and counted (`dropped_too_long`), never cut: a cut conversation would train an answer without its end or
without the question it answers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from qwen3jax.chat import encode_conversation
from qwen3jax.chat.messages import ROLES
from qwen3jax.data.badinput import BadInputTracker, BadRecord
from qwen3jax.data.config import ComponentConfig, label_matches
from qwen3jax.data.records import RawRecord, parse_object
from qwen3jax.data.tokenizer import Tokenizer


def _tool_arguments(call: Any) -> Any:
    function = call.get("function") or call if isinstance(call, Mapping) else None
    return function.get("arguments") if isinstance(function, Mapping) else None


def check_conversation(record: Mapping[str, Any]) -> None:
    """Raises BadRecord with the reason when a chat record cannot be trained on (the encoder checks the rest)."""
    messages = record.get("messages")
    if not isinstance(messages, list | tuple) or not messages:
        found = "absent" if messages is None else f"a {type(messages).__name__}" if messages else "empty"
        raise BadRecord("missing_messages", f"'messages' is {found}; keys: {sorted(record)[:10]}")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise BadRecord("invalid_conversation", f"message {i} is a {type(message).__name__}, not an object")
        role = message.get("role")
        if role not in ROLES:
            raise BadRecord("unknown_role", f"message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        content = message.get("content")
        if not isinstance(content, str) and not (content is None and role == "assistant" and message.get("tool_calls")):
            raise BadRecord("non_string_content", f"message {i} ({role}) has content of type {type(content).__name__}")
        for j, call in enumerate(message.get("tool_calls") or ()):
            arguments = _tool_arguments(call)
            if isinstance(arguments, str):
                try:
                    json.loads(arguments)
                except json.JSONDecodeError as e:
                    raise BadRecord("tool_arguments_not_json", f"message {i}, tool call {j}: {e}") from None
            elif not isinstance(arguments, Mapping):
                raise BadRecord("tool_arguments_not_json", f"message {i}, tool call {j}: arguments are "
                                f"{type(arguments).__name__}")  # fmt: skip
    if not any(m.get("role") == "assistant" for m in messages):
        raise BadRecord("no_assistant_turn", f"roles: {[m.get('role') for m in messages]}")


def encode_chat_record(record: Mapping[str, Any], tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """(tokens, loss_mask) of a chat record; BadRecord (with its reason) if it cannot be trained on."""
    check_conversation(record)
    thinking = record.get("enable_thinking")
    if thinking is not None and not isinstance(thinking, bool):
        raise BadRecord("invalid_conversation", f"enable_thinking must be a bool, got {type(thinking).__name__}")
    try:
        return encode_conversation(
            tokenizer, list(record["messages"]), tools=record.get("tools") or None,
            enable_thinking=True if thinking is None else thinking,
        )  # fmt: skip
    except ValueError as e:
        reason = "no_assistant_turn" if "nothing to train on" in str(e) else "invalid_conversation"
        raise BadRecord(reason, str(e)) from None


class ConversationMaker:
    """Raw chat record → `{"tokens", "loss_mask"}` int32 arrays, or None for bad (counted), filtered-out or
    too-long (counted) conversations. The pipeline's counterpart of `documents.DocumentMaker` for chat sources."""

    def __init__(
        self, comp: ComponentConfig, tokenizer: Tokenizer, tracker: BadInputTracker, *, seq_len: int, give_up_after: int
    ):
        self._comp, self._tokenizer, self._tracker, self._seq_len = comp, tokenizer, tracker, seq_len
        self._give_up_after = give_up_after  # as DocumentMaker: records in a row without a conversation
        self._lock = threading.Lock()
        self._unusable_in_a_row = 0
        self.filtered = 0
        self.dropped_too_long = 0

    def _unusable(self, counter: str | None = None) -> None:
        with self._lock:
            if counter:
                setattr(self, counter, getattr(self, counter) + 1)
            self._unusable_in_a_row += 1
            hopeless = self._unusable_in_a_row > self._give_up_after
        if hopeless:
            raise ValueError(
                f"sources.{self._comp.name}: no record of the source gives a trainable conversation (bad input: "
                f"{self._tracker.summary()['bad']}, filtered out: {self.filtered}, longer than seq_len="
                f"{self._seq_len}: {self.dropped_too_long})"
            )

    def __call__(self, raw: RawRecord) -> dict[str, np.ndarray] | None:
        try:
            record = parse_object(raw)
            tokens, mask = encode_chat_record(record, self._tokenizer)
        except BadRecord as e:
            self._tracker.bad(e, raw.where)
            return self._unusable()
        self._tracker.good()
        if not label_matches(record, self._comp.where):
            return self._unusable("filtered")
        if len(tokens) > self._seq_len:
            return self._unusable("dropped_too_long")
        with self._lock:
            self._unusable_in_a_row = 0
        return {"tokens": np.asarray(tokens, np.int32), "loss_mask": np.asarray(mask, np.int32)}
