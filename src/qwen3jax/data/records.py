"""Record formats: raw source records → validated text documents, and the binary layout of packed rows.

Every source yields `RawRecord`s: the undecoded payload (bytes of one JSON object, or an already structured row from
Parquet/TFDS) plus a human-readable location (`file.jsonl:17`, `shard.array_record#3`) used in error reports.
`parse_document` turns one into `{text_key: str, **labels}` or raises `BadRecord` with the reason.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from qwen3jax.data.badinput import BadRecord

# The fields of a packed row, in their storage order (see `encode_packed_row`). This is also the batch contract
# with the model and trainer: int32 arrays of shape [seq_len] per row, [batch, seq_len] per batch.
PACKED_FIELDS = ("tokens", "segment_ids", "positions", "loss_mask")


@dataclasses.dataclass(frozen=True)
class RawRecord:
    payload: bytes | Mapping[str, Any]
    where: str


def _decode_utf8(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRecord("invalid_utf8", f"{what}: {e}") from None


def _label_value(value: Any) -> Any:
    """Plain JSON-compatible label values; bytes (TFDS text features) are decoded, numpy scalars unwrapped."""
    if isinstance(value, bytes):
        return _decode_utf8(value, "label")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def parse_object(raw: RawRecord) -> Mapping[str, Any]:
    """The record as a mapping (JSON bytes decoded; Parquet/TFDS rows as they are); raises BadRecord if it is not
    one."""
    payload = raw.payload
    if isinstance(payload, bytes):
        line = _decode_utf8(payload, "record").removeprefix("\ufeff")  # a byte-order mark opens some files
        try:
            payload = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadRecord("malformed_json", str(e)) from None
    if not isinstance(payload, Mapping):
        raise BadRecord("not_an_object", f"got {type(payload).__name__}")
    return payload


def parse_document(raw: RawRecord, *, text_key: str, max_chars: int) -> dict[str, Any]:
    """Validates one raw record and returns it with the text (a str) under `text_key` and every other field as a
    label, a field that happens to be called "text" included; raises BadRecord on bad input."""
    payload = parse_object(raw)
    text = payload.get(text_key)
    if isinstance(text, bytes):
        text = _decode_utf8(text, text_key)
    if not isinstance(text, str):
        found = "absent" if text is None else type(text).__name__
        raise BadRecord("missing_text", f"field {text_key!r} is {found}; keys: {sorted(payload)[:10]}")
    if not text.strip():
        raise BadRecord("empty_document")
    if len(text) > max_chars:
        raise BadRecord("too_long", f"{len(text)} characters > {max_chars}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # JSON "\ud800" escapes decode to lone surrogates, which are not text.
        raise BadRecord("invalid_utf8", str(e)) from None
    return {key: text if key == text_key else _label_value(value) for key, value in payload.items()}


def encode_json_record(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8")


def encode_packed_row(row: Mapping[str, np.ndarray]) -> bytes:
    """One packed row as raw int32 bytes of a [len(PACKED_FIELDS), seq_len] array (no per-record header)."""
    return np.stack([np.asarray(row[k], dtype=np.int32) for k in PACKED_FIELDS]).tobytes()


def decode_packed_row(data: bytes, seq_len: int) -> dict[str, np.ndarray]:
    array = np.frombuffer(data, dtype=np.int32)
    if array.size != len(PACKED_FIELDS) * seq_len:
        raise ValueError(
            f"packed row holds {array.size} int32 values, expected {len(PACKED_FIELDS)} x seq_len={seq_len}; "
            "was the data prepared with a different sequence length?"
        )
    array = array.reshape(len(PACKED_FIELDS), seq_len)
    return {key: array[i] for i, key in enumerate(PACKED_FIELDS)}
