"""Tokenizers behind one interface: SentencePiece (`.model`) and Hugging Face (`tokenizer.json`).

Both kinds carry the Qwen3 special tokens as single ids, so chat formatting and end-of-document handling are the same
at every scale: the real Qwen3 byte-level BPE has them natively; any other tokenizer gets the missing ones appended
to its vocabulary when loaded. Special-token strings inside text passed to `encode` map to their single ids (for
the chat template's markup); `encode_plain` keeps them ordinary text, for data (a web page that contains
`<|im_start|>` must not open a chat turn in the training data, nor `<|endoftext|>` end its document).

Ids: `eos_id` is `<|endoftext|>`, the end-of-document token appended to every pretraining document (and the
`eos_token_id` of Qwen3 base models); `pad_id` is also `<|endoftext|>`, as in Qwen3. The end of a chat turn,
`<|im_end|>`, is `token_to_id("<|im_end|>")`.
"""

from __future__ import annotations

import abc
import functools
import io
import os
import pathlib
import random
import re
from collections.abc import Iterable, Sequence

import numpy as np
import sentencepiece as spm
import tokenizers
from sentencepiece import sentencepiece_model_pb2

from qwen3jax.data.cache import build_once, cache_root
from qwen3jax.data.corpus.build import DEFAULT_CORPUS, CorpusConfig, corpus_key, iter_records
from qwen3jax.special_tokens import ENDOFTEXT, SPECIAL_TOKENS

_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")


class Tokenizer(abc.ABC):
    """Text ⇄ token ids. Implementations guarantee that every string in SPECIAL_TOKENS is one id."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special-token strings in it become their single ids. No BOS/EOS is added."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def encode_plain(self, text: str) -> list[int]:
        """Token ids of data text, in which special-token strings are ordinary text: never a control id, and
        `decode` gives them back. Each such string is encoded as its first character and the rest, neither of which
        is a special token; text without them encodes as with `encode`. (The `tokenizers` library's
        `encode_special_tokens` would not do: it still matches added tokens not flagged special, such as Qwen3's
        `<think>` and `<tool_call>`.)"""
        ids: list[int] = []
        for k, part in enumerate(_SPECIAL_SPLIT.split(text)):
            if part:  # re.split puts the captured special-token strings at odd positions
                ids += self.encode(part) if k % 2 == 0 else self.encode(part[:1]) + self.encode(part[1:])
        return ids

    @abc.abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`, special tokens included verbatim."""

    @abc.abstractmethod
    def _lookup_id(self, token: str) -> int | None:
        """The id of the vocabulary entry `token`, or None."""

    @abc.abstractmethod
    def id_to_token(self, token_id: int) -> str:
        """The vocabulary entry of `token_id`; raises KeyError outside [0, vocab_size)."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (the model's embedding table may be padded beyond it)."""

    def token_to_id(self, token: str) -> int:
        """The id of vocabulary entry `token`; raises KeyError naming the token if it is not in the vocabulary."""
        token_id = self._lookup_id(token)
        if token_id is None:
            raise KeyError(f"token {token!r} is not in the vocabulary of {self!r}")
        return token_id

    @functools.cached_property
    def token_byte_lengths(self) -> np.ndarray:
        """[vocab_size] int32: how many UTF-8 bytes of text each id stands for (special tokens: 0), so that the bytes
        of an encoded text are the sum over its ids. Bits per byte, the tokenizer-independent loss, divides by it."""
        special = {self.token_to_id(token) for token in SPECIAL_TOKENS}
        return np.array(
            [0 if i in special else self._token_byte_length(i) for i in range(self.vocab_size)], np.int32
        )

    @abc.abstractmethod
    def _token_byte_length(self, token_id: int) -> int:
        """UTF-8 bytes of text that the (non-special) id `token_id` stands for."""

    @functools.cached_property
    def eos_id(self) -> int:
        return self.token_to_id(ENDOFTEXT)

    @functools.cached_property
    def pad_id(self) -> int:
        return self.token_to_id(ENDOFTEXT)

    def _check_id(self, token_id: int) -> int:
        if not 0 <= int(token_id) < self.vocab_size:
            raise KeyError(f"token id {token_id} is outside [0, {self.vocab_size}) of {self!r}")
        return int(token_id)

    def _check_specials(self) -> None:
        for token in SPECIAL_TOKENS:
            ids = self.encode(token)
            special = self.token_to_id(token)
            # Models that normalise text (e.g. SentencePiece's dummy "▁" prefix) may add whitespace pieces.
            others = [i for i in ids if i != special]
            if ids.count(special) != 1 or self.decode(others).strip():
                raise ValueError(f"{self!r}: special token {token!r} encodes to {ids}, not to one id")


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model; Qwen3 special tokens missing from it are added as user-defined pieces."""

    def __init__(self, model_proto: bytes, *, name: str = "<in-memory>"):
        proto = sentencepiece_model_pb2.ModelProto.FromString(model_proto)
        present = {piece.piece for piece in proto.pieces}
        for token in SPECIAL_TOKENS:
            if token not in present:
                proto.pieces.add(
                    piece=token, score=0.0, type=sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED
                )
        self._name = name
        self._sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self._check_specials()

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> SentencePieceTokenizer:
        return cls(pathlib.Path(path).read_bytes(), name=str(path))

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({self._name}, vocab_size={self.vocab_size})"

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts))

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def _lookup_id(self, token: str) -> int | None:
        token_id = self._sp.piece_to_id(token)
        # piece_to_id answers unk_id for unknown pieces; only the unk piece itself may legitimately map there.
        if token_id == self._sp.unk_id() and token != self._sp.id_to_piece(token_id):
            return None
        return token_id

    def id_to_token(self, token_id: int) -> str:
        return self._sp.id_to_piece(self._check_id(token_id))

    def _token_byte_length(self, token_id: int) -> int:
        if self._sp.is_byte(token_id):  # byte fallback: <0xNN> is one byte of a character outside the pieces
            return 1
        if self._sp.is_control(token_id) or self._sp.is_unknown(token_id):
            return 0
        return len(self._sp.id_to_piece(token_id).replace("\u2581", " ").encode("utf-8"))  # "▁" stands for a space

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()


class HuggingFaceTokenizer(Tokenizer):
    """A Hugging Face `tokenizer.json` (e.g. Qwen3's byte-level BPE); missing special tokens are appended."""

    def __init__(self, path: str | os.PathLike):
        self._path = str(path)
        self._tok = tokenizers.Tokenizer.from_file(self._path)
        missing = [token for token in SPECIAL_TOKENS if self._tok.token_to_id(token) is None]
        if missing:
            self._tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in missing])
        self._check_specials()

    def __repr__(self) -> str:
        return f"HuggingFaceTokenizer({self._path}, vocab_size={self.vocab_size})"

    def encode(self, text: str) -> list[int]:
        # add_special_tokens=False: no post-processor BOS/EOS; specials written in the text are still matched.
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def _lookup_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str:
        return self._tok.id_to_token(self._check_id(token_id))

    def _token_byte_length(self, token_id: int) -> int:
        if isinstance(self._tok.decoder, tokenizers.decoders.ByteLevel):  # each character of a piece is one byte
            return len(self._tok.id_to_token(token_id))
        return len(self.decode([token_id]).encode("utf-8"))

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Loads a SentencePiece `.model` or a Hugging Face `tokenizer.json` (or a directory containing one)."""
    path = pathlib.Path(path)
    if path.is_dir() and (path / "tokenizer.json").is_file():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    if path.suffix == ".model":
        return SentencePieceTokenizer.from_file(path)
    if path.suffix == ".json":
        return HuggingFaceTokenizer(path)
    raise ValueError(
        f"cannot tell the tokenizer kind of {path}: expected a SentencePiece '.model' or a 'tokenizer.json'"
    )


# Longest training "sentence" in bytes; longer lines are cut into pieces this long (SentencePiece skips them).
_MAX_SENTENCE_BYTES = 4096


def _training_sentences(texts: Iterable[str], max_sentences: int, seed: int) -> list[str]:
    lines = []
    for text in texts:
        for line in text.split("\n"):
            # Cut by characters at a bound that keeps every piece under the byte limit (≤ 4 bytes per char).
            lines.extend(line[i : i + _MAX_SENTENCE_BYTES // 4] for i in range(0, len(line), _MAX_SENTENCE_BYTES // 4))
    lines = [line for line in lines if line.strip()]
    if len(lines) > max_sentences:  # Sample here, deterministically, rather than in SentencePiece's own RNG.
        lines = random.Random(seed).sample(lines, max_sentences)
    return lines


def train_sentencepiece(
    texts: Iterable[str],
    *,
    vocab_size: int,
    output_path: str | os.PathLike | None = None,
    max_sentences: int = 300_000,
    seed: int = 0,
) -> SentencePieceTokenizer:
    """Trains a byte-fallback BPE SentencePiece model on `texts` (lines are training sentences).

    Normalisation is the identity and no dummy prefix or whitespace cleanup is applied, so that
    `decode(encode(text)) == text` for every string; byte fallback means nothing is ever `<unk>`. Digits are split
    (as in Qwen's tokenizer) so that arithmetic stays learnable. The Qwen3 special tokens are user-defined symbols.
    """
    min_vocab = 256 + len(SPECIAL_TOKENS) + 2
    if vocab_size < min_vocab:
        raise ValueError(f"vocab_size {vocab_size} is too small: 256 byte pieces + specials need at least {min_vocab}")
    sentences = _training_sentences(texts, max_sentences, seed)
    if not sentences:
        raise ValueError("no training text given to train_sentencepiece")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        character_coverage=0.9995,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        max_sentence_length=_MAX_SENTENCE_BYTES,
        unk_id=0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        user_defined_symbols=list(SPECIAL_TOKENS),
        shuffle_input_sentence=False,
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
    )
    proto = model.getvalue()
    if output_path is not None:
        pathlib.Path(output_path).write_bytes(proto)
    return SentencePieceTokenizer(proto, name=str(output_path or "<trained>"))


# Characters of training text taken from each embedded source, so that the large sources (standard-library code,
# synthetic problems) do not crowd the prose out of the vocabulary.
_DEFAULT_CHARS_PER_SOURCE = 2_000_000


def _default_training_texts(corpus: CorpusConfig) -> Iterable[str]:
    for source in corpus.sources:
        taken = 0
        for record in iter_records(source, "train", corpus):
            if taken >= _DEFAULT_CHARS_PER_SOURCE:
                break
            taken += len(record["text"])
            yield record["text"]


def default_tokenizer(vocab_size: int = 8192, corpus: CorpusConfig = DEFAULT_CORPUS) -> SentencePieceTokenizer:
    """The tiny default: a byte-fallback BPE trained on the embedded corpus's train split (built and cached on
    first use, a few seconds), with the Qwen3 special tokens."""
    target = cache_root() / "tokenizers" / f"spm-bpe-{vocab_size}-{corpus_key(corpus)}"

    def build(out: pathlib.Path) -> None:
        train_sentencepiece(_default_training_texts(corpus), vocab_size=vocab_size, output_path=out / "tokenizer.model")

    return SentencePieceTokenizer.from_file(build_once(target, build) / "tokenizer.model")
