"""Fixtures of the data tests: the default tokenizer, fixture writers, and batch decoding helpers."""

from __future__ import annotations

import gzip
import json
import pathlib
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pytest

from qwen3jax.data.tokenizer import Tokenizer, default_tokenizer
from qwen3jax.data.writers import RecordWriter


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    """The real default tokenizer (trained on the embedded corpus; both are cached after the first build)."""
    return default_tokenizer()


@pytest.fixture
def write_jsonl(tmp_path: pathlib.Path) -> Callable[..., str]:
    """write_jsonl(name, records, gzip=False) → path; records are dicts, or raw str/bytes lines (for bad input)."""

    def write(name: str, records: Iterable[Mapping[str, Any] | str | bytes], gzipped: bool = False) -> str:
        lines = []
        for record in records:
            if isinstance(record, bytes):
                lines.append(record)
            elif isinstance(record, str):
                lines.append(record.encode())
            else:
                lines.append(json.dumps(record).encode())
        data = b"\n".join(lines) + b"\n"
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if gzipped else data)
        return str(path)

    return write


@pytest.fixture
def write_arrayrecord(tmp_path: pathlib.Path) -> Callable[..., str]:
    def write(name: str, records: Iterable[Mapping[str, Any] | bytes]) -> str:
        path = tmp_path / name
        with RecordWriter(path) as writer:
            for record in records:
                writer.write(record if isinstance(record, bytes) else json.dumps(record).encode())
        return str(path)

    return write


def _segments(row: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The token arrays of the segments (documents or pieces) of one packed row, in order."""
    seg = row["segment_ids"]
    return [row["tokens"][seg == s] for s in range(1, int(seg.max()) + 1)] if seg.max() > 0 else []


def _rows_of(batches: Iterable[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    return [{k: v[i] for k, v in batch.items()} for batch in batches for i in range(len(batch["tokens"]))]


def _documents_of_rows(rows: Iterable[Mapping[str, np.ndarray]], eos_id: int) -> list[list[int]]:
    """Token lists of whole documents re-assembled from rows packed in order (pieces of a split document follow
    each other; every document ends with EOS)."""
    stream = [int(t) for row in rows for piece in _segments(row) for t in piece]
    docs, current = [], []
    for t in stream:
        current.append(t)
        if t == eos_id:
            docs.append(current)
            current = []
    assert not current, "token stream does not end with EOS"
    return docs


@pytest.fixture
def unpack() -> types.SimpleNamespace:
    """Helpers to take packed batches apart: segments(row), rows_of(batches), documents_of_rows(rows, eos_id)."""
    return types.SimpleNamespace(segments=_segments, rows_of=_rows_of, documents_of_rows=_documents_of_rows)
