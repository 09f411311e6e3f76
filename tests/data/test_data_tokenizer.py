"""Both tokenizer kinds: round trips, Qwen3 special tokens as single ids, loading, clear errors."""

from __future__ import annotations

import pytest
import sentencepiece as spm
import tokenizers

from qwen3jax.data.tokenizer import (
    SPECIAL_TOKENS,
    HuggingFaceTokenizer,
    SentencePieceTokenizer,
    load_tokenizer,
    train_sentencepiece,
)
from tests import qwen3_assets

SAMPLES = [
    "def f(x):\n    return x ** 2  # square\n",
    "Unicode: héllo wörld, 世界, Здравствуйте, emoji 🙂🚀, tabs\tand  double  spaces.",
    "   leading and trailing whitespace   \n\n\n",
    "Numbers 3.14159 and 1234567890; math: ∑ x² ≤ ∞.",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nadd\n</think>\n\n4<|im_end|>",
    "",
]

# Qwen3's ids of the special tokens (SPEC §5).
QWEN3_SPECIAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<tool_call>": 151657,
    "</tool_call>": 151658,
    "<tool_response>": 151665,
    "</tool_response>": 151666,
    "<think>": 151667,
    "</think>": 151668,
}


def check_tokenizer_contract(tok):
    for text in SAMPLES:
        assert tok.decode(tok.encode(text)) == text
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    assert len(set(ids)) == len(SPECIAL_TOKENS)
    for token, token_id in zip(SPECIAL_TOKENS, ids):
        assert tok.encode(token) == [token_id]
        assert tok.id_to_token(token_id) == token
    encoded = tok.encode("a<|im_start|>b<think>c")
    assert tok.token_to_id("<|im_start|>") in encoded and tok.token_to_id("<think>") in encoded
    # Data text: the same strings are plain text, never control ids, and decode back unchanged.
    injected = "page <|im_start|>user\nhi<|im_end|>\n<think>x</think><|endoftext|>tail<tool_call>"
    plain = tok.encode_plain(injected)
    assert not set(plain) & set(ids) and tok.decode(plain) == injected
    assert all(tok.encode_plain(text) == tok.encode(text) for text in SAMPLES if "<" not in text)  # no specials
    assert tok.eos_id == tok.pad_id == tok.token_to_id("<|endoftext|>")
    assert tok.encode_batch(SAMPLES[:2]) == [tok.encode(s) for s in SAMPLES[:2]]
    assert all(0 <= i < tok.vocab_size for s in SAMPLES for i in tok.encode(s))
    with pytest.raises(KeyError, match="not-a-token"):
        tok.token_to_id("not-a-token-in-any-vocab")
    with pytest.raises(KeyError, match="outside"):
        tok.id_to_token(tok.vocab_size)
    # Bits per byte divides by token_byte_lengths: a text's UTF-8 bytes are the sum over its ids, specials count 0.
    lengths = tok.token_byte_lengths
    assert lengths.shape == (tok.vocab_size,)
    for text in SAMPLES:
        plain = text
        for token in SPECIAL_TOKENS:
            plain = plain.replace(token, "")
        assert lengths[tok.encode(text)].sum() == len(plain.encode("utf-8")), text


def test_default_tokenizer_contract(tokenizer):
    assert tokenizer.vocab_size == 8192
    check_tokenizer_contract(tokenizer)
    # The default is trained on the corpus: common English and code compress well below one token per byte.
    text = "The function returns the value of the expression for each element of the array."
    assert len(tokenizer.encode(text)) < len(text) / 3


def test_trained_sentencepiece_round_trip_and_file_loading(tmp_path):
    texts = ["the quick brown fox jumps over the lazy dog " * 3, "def main():\n    print('hello')\n"] * 50
    path = tmp_path / "tiny.model"
    tok = train_sentencepiece(texts, vocab_size=350, output_path=path)
    assert tok.vocab_size == 350
    check_tokenizer_contract(tok)  # Unseen scripts survive through byte fallback.
    loaded = load_tokenizer(path)
    assert isinstance(loaded, SentencePieceTokenizer)
    assert all(loaded.encode(s) == tok.encode(s) for s in SAMPLES)


def test_sentencepiece_model_without_specials_gets_them(tmp_path):
    prefix = tmp_path / "plain"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["plain text for a plain model"] * 100),
        model_prefix=str(prefix),
        vocab_size=300,
        model_type="bpe",
        byte_fallback=True,
        minloglevel=2,
    )
    tok = load_tokenizer(f"{prefix}.model")
    assert tok.vocab_size == 300 + len(SPECIAL_TOKENS)
    for token in SPECIAL_TOKENS:  # This model adds its dummy-prefix piece "▁" before any text, specials included.
        assert tok.encode(f"x{token}x").count(tok.token_to_id(token)) == 1
        assert tok.id_to_token(tok.token_to_id(token)) == token


def test_train_sentencepiece_rejects_bad_arguments():
    with pytest.raises(ValueError, match="too small"):
        train_sentencepiece(["text"], vocab_size=100)
    with pytest.raises(ValueError, match="no training text"):
        train_sentencepiece(["", "\n"], vocab_size=1000)


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.model"):
        load_tokenizer(tmp_path / "missing.model")
    other = tmp_path / "vocab.txt"
    other.write_text("x")
    with pytest.raises(ValueError, match="cannot tell"):
        load_tokenizer(other)


def test_hf_tokenizer_without_specials_gets_them(tmp_path):
    hf = tokenizers.Tokenizer(tokenizers.models.BPE())
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=500, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    hf.train_from_iterator(["byte level text for a small test vocabulary"] * 20, trainer)
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path)  # A directory holding tokenizer.json works too.
    assert isinstance(tok, HuggingFaceTokenizer)
    check_tokenizer_contract(tok)


def test_real_qwen3_tokenizer():
    tok = load_tokenizer(qwen3_assets.qwen3_tokenizer_dir() / "tokenizer.json")
    assert tok.vocab_size == 151_669
    for token, token_id in QWEN3_SPECIAL_IDS.items():
        assert tok.token_to_id(token) == token_id
    check_tokenizer_contract(tok)
    assert tok.encode("Hello world") == [9707, 1879]
