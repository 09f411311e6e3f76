"""Thinking-mode fusion data: the mode in force at every trained turn (by the chat encoder's own rule) matches the
target's form, all layouts and both modes occur at their shares, and the records encode with the chat template."""

import json
import re
from collections import Counter

import pytest

from qwen3jax.chat.encode import encode_conversation
from qwen3jax.chat.thinking import resolve_thinking
from qwen3jax.data.corpus import synthetic
from qwen3jax.posttrain import fusion, responses
from qwen3jax.special_tokens import CHAT_TEMPLATE_TOKENS


@pytest.fixture(scope="module")
def examples():
    problems = [synthetic.generate(g, 4, i) for g in sorted(synthetic.GENERATORS) for i in range(20)]
    return [fusion.Example(p.query, responses.worked_solution(p), f"The final answer is $\\boxed{{{p.answer}}}$.",
                           f"{p.kind}/{i}") for i, p in enumerate(problems)]  # fmt: skip


def test_trained_turn_follows_the_last_flag(examples):
    records = fusion.fusion_records(examples, seed=1)
    assert len(records) == len(examples)
    for record, example in zip(records, examples):
        messages = record["messages"]
        thinking = resolve_thinking(messages[:-1], enable_thinking=record["enable_thinking"])
        assert record["provenance"]["mode"] == ("think" if thinking else "no_think")
        assert messages[-1]["content"] == (example.thinking if thinking else example.direct)
        assert example.prompt in messages[-2]["content"]
        for i, message in enumerate(messages[:-1]):  # history replies follow the mode in force at their turn
            if message["role"] == "assistant":
                assert ("<think>" in message["content"]) == resolve_thinking(messages[:i])
    layouts = Counter(r["provenance"]["layout"] for r in records)
    modes = Counter(r["provenance"]["mode"] for r in records)
    assert set(layouts) == {"user_flag", "system_flag", "unflagged", "multi_turn"}
    assert 0.35 < modes["no_think"] / len(records) < 0.65
    assert 0.15 < layouts["multi_turn"] / len(records) < 0.45


class ByteTokenizer:
    """UTF-8 bytes plus the template's special tokens as ids from 1000: enough to read back the trained text."""

    def __init__(self):
        self.specials = {token: 1000 + i for i, token in enumerate(CHAT_TEMPLATE_TOKENS)}
        self._split = re.compile("(" + "|".join(map(re.escape, CHAT_TEMPLATE_TOKENS)) + ")")

    def token_to_id(self, token):
        return self.specials.get(token)

    def encode(self, text):
        out = []
        for piece in self._split.split(text):
            out += [self.specials[piece]] if piece in self.specials else list(piece.encode())
        return out

    def encode_plain(self, text):
        return list(text.encode())

    def decode(self, ids):
        names = {i: t for t, i in self.specials.items()}
        return b"".join(names[i].encode() if i in names else bytes([i]) for i in ids).decode()


def test_trained_text_is_the_target_in_its_mode(examples):
    tokenizer = ByteTokenizer()
    for record, example in zip(fusion.fusion_records(examples, seed=2), examples):
        tokens, mask = encode_conversation(tokenizer, record["messages"], enable_thinking=record["enable_thinking"])
        trained = tokenizer.decode([t for t, m in zip(tokens, mask) if m])
        if record["provenance"]["mode"] == "no_think":  # the template's empty think block is part of the target
            assert trained == f"<think>\n\n</think>\n\n{example.direct}<|im_end|>"
        else:
            assert trained == f"{example.thinking}<|im_end|>"


def test_mix_validation_and_example_from_curated():
    with pytest.raises(ValueError, match="no_think_share"):
        fusion.FusionMix(no_think_share=1.5)
    with pytest.raises(ValueError, match="no examples"):
        fusion.fusion_records([])
    record = {"messages": [{"role": "user", "content": "Q?"},
                           {"role": "assistant", "content": "<think>\nwork\n</think>\n\nThe answer is 3."}],
              "provenance": {"query_id": "q1"}}  # fmt: skip
    assert fusion.example_from_curated(record) == fusion.Example(
        "Q?", "<think>\nwork\n</think>\n\nThe answer is 3.", "The answer is 3.", "q1"
    )
    record["messages"][1]["content"] = "no thinking"
    with pytest.raises(ValueError, match="q1: the response has no thinking"):
        fusion.example_from_curated(record)


def test_command(tmp_path, examples, capsys):
    curated = tmp_path / "curated.jsonl"
    curated.write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": e.prompt}, {"role": "assistant", "content": e.thinking}],
                    "provenance": {"query_id": e.id}}) + "\n" for e in examples[:30]))  # fmt: skip
    out = tmp_path / "fusion.jsonl"
    assert fusion.main(["--thinking", str(curated), "--output", str(out), "--seed", "3"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records == fusion.fusion_records(examples[:30], seed=3)
    assert fusion.main(["--thinking", str(curated), "--output", str(out)]) == 1  # never replaced without asking
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert [json.loads(line) for line in out.read_text().splitlines()] == records
