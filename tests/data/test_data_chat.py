"""Chat records in the data pipeline: the assistant-only loss mask at hand-computed positions, conversations packed
whole with too-long ones dropped and counted, bad records counted by reason, exact resume, mixtures with text."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qwen3jax.chat import TEMPLATE_SPECIAL_TOKENS
from qwen3jax.data.badinput import BadInputTracker
from qwen3jax.data.config import parse_data_config
from qwen3jax.data.conversations import ConversationMaker, encode_chat_record
from qwen3jax.data.pipeline import build_component_rows, build_pretrain_iterator
from qwen3jax.data.records import RawRecord

TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
CONVERSATION = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+3?"},
        {"role": "assistant", "reasoning_content": "use add", "content": "",
         "tool_calls": [{"function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
        {"role": "tool", "content": "5"},
        {"role": "assistant", "reasoning_content": "got 5", "content": "It is 5."},
    ],
    "tools": TOOLS,
}


class CharTokenizer:
    """One token per character (its code point) and one per template special token (ids from 1_000_000): token
    positions are character positions, so the expected mask can be computed by hand from the rendered text."""

    specials = {t: 1_000_000 + i for i, t in enumerate(TEMPLATE_SPECIAL_TOKENS)}

    def encode(self, text: str) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            special = next((t for t in self.specials if text.startswith(t, i)), None)
            ids.append(self.specials[special] if special else ord(text[i]))
            i += len(special) if special else 1
        return ids

    def encode_plain(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def token_to_id(self, token: str) -> int | None:
        return self.specials.get(token)


def test_chat_mask_at_hand_computed_positions():
    tools_block = (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + json.dumps(TOOLS[0])
        + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
        '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
        "</tool_call>"
    )
    # (text, trained) in rendering order; the first assistant turn is after the last user query, so both assistant
    # turns are trained, each with its think block, tool call / answer and <|im_end|>.
    parts = [
        (f"<|im_start|>system\nBe brief.\n\n{tools_block}<|im_end|>\n<|im_start|>user\n2+3?<|im_end|>\n"
         "<|im_start|>assistant\n", 0),
        ('<think>\nuse add\n</think>\n\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
         "<|im_end|>", 1),
        ("\n<|im_start|>user\n<tool_response>\n5\n</tool_response><|im_end|>\n<|im_start|>assistant\n", 0),
        ("<think>\ngot 5\n</think>\n\nIt is 5.<|im_end|>", 1),
        ("\n", 0),
    ]
    tok = CharTokenizer()
    expected_tokens = [t for text, _ in parts for t in tok.encode(text)]
    expected_mask = [flag for text, flag in parts for _ in tok.encode(text)]
    tokens, mask = encode_chat_record(CONVERSATION, tok)
    assert tokens == expected_tokens
    assert mask == expected_mask
    trained = np.flatnonzero(mask)
    assert len(trained) == sum(len(tok.encode(text)) for text, flag in parts if flag)


def _maker(seq_len=10_000):
    from qwen3jax.data.config import ComponentConfig

    comp = ComponentConfig(name="chat", kind="jsonl", path="-", format="chat")
    tracker = BadInputTracker("chat", max_bad_fraction=1.0, min_records=1)
    return ConversationMaker(comp, CharTokenizer(), tracker, seq_len=seq_len, give_up_after=100), tracker


BAD = {
    "missing_messages": [{"text": "no messages"}, {"messages": []}, {"messages": "hi"}],
    "unknown_role": [{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}],
    "non_string_content": [{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]},
                           {"messages": [{"role": "user", "content": "x"}, {"role": "assistant"}]}],
    "tool_arguments_not_json": [{"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]}],
    "no_assistant_turn": [{"messages": [{"role": "user", "content": "x"}]},
                          {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "x"}]}],
    "invalid_conversation": [{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                              "enable_thinking": "no"}],
    "malformed_json": ["{not json"],
}  # fmt: skip


def test_bad_records_are_counted_by_reason_and_skipped(write_jsonl, tokenizer):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    records = [good] + [r for rs in BAD.values() for r in rs] + [good]
    path = write_jsonl("chat.jsonl", records)
    cfg = {"sources": {"chat": {"kind": "jsonl", "path": path, "format": "chat"}}, "packing": "first_fit",
           "max_bad_fraction": 1.0}  # fmt: skip
    rows = build_component_rows(cfg, "chat", split="train", seq_len=64, process_index=0, process_count=1,
                                tokenizer=tokenizer)  # fmt: skip
    packed = list(rows)
    assert sum(int(r["segment_ids"].max()) for r in packed) == 2  # the two good conversations, nothing else
    report = rows.report()["bad_input"]["chat"]
    assert report["records"] == len(records)
    assert report["bad"] == {reason: len(rs) for reason, rs in BAD.items()}


def _conversation(i: int, words: int) -> dict:
    return {"messages": [{"role": "user", "content": f"question {i}"},
                         {"role": "assistant", "content": " ".join(["word"] * words) + f" {i}"}],
            "enable_thinking": False}  # fmt: skip


def test_packing_keeps_conversations_whole_and_counts_the_dropped(write_jsonl, tokenizer):
    seq_len = 96
    records = [_conversation(i, words) for i, words in enumerate([3, 40, 10, 200, 5, 25, 300, 1, 12, 60])]
    encoded = {i: encode_chat_record(r, tokenizer) for i, r in enumerate(records)}
    fits = {i for i, (t, _) in encoded.items() if len(t) <= seq_len}
    assert 0 < len(fits) < len(records)  # the case exercises both
    path = write_jsonl("chat.jsonl", records)
    cfg = {"sources": {"chat": {"kind": "jsonl", "path": path, "format": "chat"}}, "packing": "first_fit"}
    rows = build_component_rows(cfg, "chat", split="train", seq_len=seq_len, process_index=0, process_count=1,
                                tokenizer=tokenizer)  # fmt: skip
    segments = []
    for row in rows:
        for s in range(1, int(row["segment_ids"].max()) + 1):
            where = row["segment_ids"] == s
            np.testing.assert_array_equal(row["positions"][where], np.arange(where.sum()))
            segments.append((row["tokens"][where].tolist(), row["loss_mask"][where].tolist()))
    # Every segment is one whole conversation with its own mask; every fitting conversation appears exactly once.
    assert sorted(segments) == sorted((list(encoded[i][0]), list(encoded[i][1])) for i in fits)
    assert rows.report()["dropped_too_long"] == {"chat": len(records) - len(fits)}


def test_chat_needs_first_fit_packing():
    with pytest.raises(ValueError, match=r"chat sources \['chat'\] need packing='first_fit'"):
        parse_data_config({"sources": {"chat": {"kind": "jsonl", "path": "x", "format": "chat"}}})


def _chat_and_text(write_jsonl):
    chats = write_jsonl("chat.jsonl", [_conversation(i, i % 7 + 1) for i in range(40)])
    texts = write_jsonl("text.jsonl", [{"text": f"document number {i} " * (i % 5 + 1)} for i in range(40)])
    return {"sources": {"chat": {"kind": "jsonl", "path": chats, "format": "chat", "weight": 3.0},
                        "text": {"kind": "jsonl", "path": texts}}, "packing": "first_fit"}  # fmt: skip


def test_exact_resume_of_a_chat_and_text_mixture(write_jsonl, tokenizer):
    cfg = _chat_and_text(write_jsonl)
    kw = dict(seq_len=64, batch_size=2, seed=3, process_index=0, process_count=1, tokenizer=tokenizer)
    straight = build_pretrain_iterator(cfg, **kw)
    for _ in range(5):
        next(straight)
    state = json.loads(json.dumps(straight.get_state()))  # through JSON, as a checkpoint stores it
    expected = [next(straight) for _ in range(8)]  # well past one epoch of both sources
    resumed = build_pretrain_iterator(cfg, **kw)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_mixture_weights_apply_to_chat_components(write_jsonl, tokenizer):
    cfg = _chat_and_text(write_jsonl)
    it = build_pretrain_iterator(cfg, seq_len=64, batch_size=4, seed=0, process_index=0, process_count=1,
                                 tokenizer=tokenizer)  # fmt: skip
    im_start = tokenizer.token_to_id("<|im_start|>")
    chat = text = 0
    for _ in range(30):
        batch = next(it)
        for row in range(len(batch["tokens"])):
            for s in range(1, int(batch["segment_ids"][row].max()) + 1):
                first = batch["tokens"][row][batch["segment_ids"][row] == s][0]
                chat, text = chat + (first == im_start), text + (first != im_start)
    assert abs(chat / (chat + text) - 0.75) < 0.06  # weights 3:1 in documents
