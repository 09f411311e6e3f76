"""Chat-test fixtures: the official template and tokenizer (fetched by tests/qwen3_assets.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from qwen3jax.data.tokenizer import Tokenizer as ProjectTokenizer
from tests import qwen3_assets


@pytest.fixture(scope="session")
def qwen3_tokenizer_dir() -> Path:
    return qwen3_assets.qwen3_tokenizer_dir()


@pytest.fixture(scope="session")
def official_template(qwen3_tokenizer_dir: Path) -> str:
    return json.loads((qwen3_tokenizer_dir / "tokenizer_config.json").read_text(encoding="utf-8"))["chat_template"]


class HFTokenizer:
    """The encoder protocol over a `tokenizers.Tokenizer`: no added special tokens, Qwen3 has no BOS."""

    def __init__(self, path: Path):
        self.inner = Tokenizer.from_file(str(path))

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text, add_special_tokens=False).ids

    def token_to_id(self, token: str) -> int | None:
        return self.inner.token_to_id(token)

    def decode(self, ids: list[int]) -> str:
        return self.inner.decode(ids, skip_special_tokens=False)

    encode_plain = ProjectTokenizer.encode_plain  # special-token strings as text (checked in tests/data)


@pytest.fixture(scope="session")
def qwen3_tokenizer(qwen3_tokenizer_dir: Path) -> HFTokenizer:
    return HFTokenizer(qwen3_tokenizer_dir / "tokenizer.json")
