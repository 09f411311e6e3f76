"""Raw records → tokenized documents: validation, bad-input accounting, labels, filters, tokenization.

These are the per-record functions that the pipeline maps over its sources in grain's reader threads.
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

from qwen3jax.data.annotate import get_labeler
from qwen3jax.data.annotate.base import annotate_record
from qwen3jax.data.badinput import BadInputTracker, BadRecord
from qwen3jax.data.config import ComponentConfig, DataConfig, label_matches
from qwen3jax.data.records import RawRecord, decode_packed_row, parse_document
from qwen3jax.data.tokenizer import Tokenizer


class DocumentMaker:
    """Raw record → `{"tokens", "loss_mask"}` int32 arrays, or None for bad (counted) or filtered-out records."""

    def __init__(
        self,
        comp: ComponentConfig,
        cfg: DataConfig,
        tokenizer: Tokenizer,
        tracker: BadInputTracker,
        *,
        num_records: int,
        append_eos: bool,
    ):
        self._comp = comp
        self._max_chars = cfg.max_doc_chars
        self._tokenizer = tokenizer
        self._tracker = tracker
        self._labelers = [get_labeler(name) for name in comp.annotate]
        self._give_up_after = self.give_up_after(cfg, num_records)
        self._eos = [tokenizer.eos_id] if append_eos else []
        self.filtered = 0
        self._unusable_in_a_row = 0

    @staticmethod
    def give_up_after(cfg: DataConfig, num_records: int) -> int:
        """Records in a row without a usable one after which a source has none: each pass is shuffled on its own,
        so two usable records may be up to two passes apart (first of one pass, last of the next); reader threads
        reorder records by at most what they hold in flight."""
        return 2 * num_records + cfg.prefetch + cfg.read_threads

    def document(self, raw: RawRecord) -> dict[str, Any] | None:
        """The validated, labelled record if it is good and passes the filter."""
        try:
            record = parse_document(raw, text_key=self._comp.text_key, max_chars=self._max_chars)
        except BadRecord as e:
            self._tracker.bad(e, raw.where)
            return self._unusable()
        self._tracker.good()
        if self._labelers:
            record = annotate_record(record, self._labelers, text_key=self._comp.text_key)
        if not label_matches(record, self._comp.where):
            self.filtered += 1
            return self._unusable()
        self._unusable_in_a_row = 0
        return record

    def _unusable(self) -> None:
        """Counts a record that yields no document; fails once more records in a row yielded none than can lie
        between two usable ones, i.e. the source has none, since repeating it forever would hang the run."""
        self._unusable_in_a_row += 1
        if self._unusable_in_a_row > self._give_up_after:
            raise ValueError(
                f"sources.{self._comp.name}: no record of the source gives a document (records are bad or "
                f"none matches where={dict(self._comp.where)}); bad input: {self._tracker.summary()['bad']}"
            )

    def __call__(self, raw: RawRecord) -> dict[str, np.ndarray] | None:
        record = self.document(raw)
        if record is None:
            return None
        tokens = np.asarray(self._tokenizer.encode_plain(record[self._comp.text_key]) + self._eos, dtype=np.int32)
        return {"tokens": tokens, "loss_mask": np.ones_like(tokens)}


class BlockReader:
    """Block number → the documents (token arrays, no EOS) of that block of consecutive records (S3 input)."""

    def __init__(self, records: grain.MapDataset, block: int, maker: DocumentMaker):
        self._records, self._block, self._maker = records, block, maker

    def __call__(self, block_index: int) -> list[np.ndarray]:
        start = block_index * self._block
        docs = (self._maker(self._records[i]) for i in range(start, min(start + self._block, len(self._records))))
        return [d["tokens"] for d in docs if d is not None]


def decode_row(seq_len: int, raw: RawRecord) -> dict[str, np.ndarray]:
    return decode_packed_row(raw.payload, seq_len)
