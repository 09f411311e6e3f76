"""Packing tokenized documents into fixed-length rows with grain's packing datasets.

Input elements are `{"tokens", "loss_mask"}` int32 arrays of one document (EOS already appended). Output rows are
the batch contract of the model and trainer (see `records.PACKED_FIELDS`):
  tokens       token ids, 0 on padding;
  segment_ids  1, 2, ... for the documents (or document pieces) of a row, 0 on padding;
  positions    0, 1, ... restarting at every document start and at every piece of a split document; 0 on padding;
  loss_mask    the document's own mask (1 for every pretraining token), 0 on padding.

"concat_then_split" (`grain.experimental.ConcatThenSplitIterDataset`) fills every row completely, cutting the
document that crosses a row end; "first_fit" (`grain.experimental.FirstFitPackIterDataset`) places whole
documents into the first of `bins` rows with room and pads the rest, after splitting documents longer than a row
into row-sized pieces (first-fit cannot place them otherwise).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import grain
import numpy as np

from qwen3jax.data.records import PACKED_FIELDS

_SEQUENCE_FEATURES = ("tokens", "loss_mask")


class _SplitLongDocuments(grain.experimental.FlatMapTransform):
    """Cuts a document into consecutive pieces of at most `seq_len` tokens."""

    max_fan_out = sys.maxsize  # Documents are bounded by max_doc_chars, not by a fan-out limit.

    def __init__(self, seq_len: int):
        self._seq_len = seq_len

    def flat_map(self, element: Mapping[str, np.ndarray]) -> Sequence[dict[str, np.ndarray]]:
        n = len(element["tokens"])
        if n <= self._seq_len:
            return [dict(element)]
        return [{k: element[k][i : i + self._seq_len] for k in _SEQUENCE_FEATURES} for i in range(0, n, self._seq_len)]


class _JsonSafeStateIterator(grain.DatasetIterator):
    """Delegates to a ConcatThenSplit iterator, restoring tuples in its state before `set_state`.

    grain 0.2.18's concat-then-split state holds slices as tuples and compares them with the tuple sentinel
    (-1, -1); after the JSON round trip of a checkpoint they are lists, and the restored iterator would wrongly
    believe it holds a remainder (and emit different rows).
    """

    def __init__(self, parent: grain.DatasetIterator):
        super().__init__(parent)

    def __next__(self):
        return next(self._parent)

    def get_state(self) -> dict:
        return self._parent.get_state()

    def set_state(self, state: dict) -> None:
        slices = {k: tuple(v) for k, v in state["remainder_slices"].items()}
        self._parent.set_state({**state, "remainder_slices": slices})


class _ConcatThenSplit(grain.IterDataset):
    """grain's ConcatThenSplitIterDataset with a JSON-safe iterator state (see _JsonSafeStateIterator)."""

    def __init__(self, documents: grain.IterDataset, seq_len: int):
        lengths = {k: seq_len for k in _SEQUENCE_FEATURES}
        super().__init__(grain.experimental.ConcatThenSplitIterDataset(documents, length_struct=lengths))

    def __iter__(self) -> grain.DatasetIterator:
        return _JsonSafeStateIterator(self._parent.__iter__())


def _to_row(packed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    row = {
        "tokens": packed["tokens"],
        "segment_ids": packed["tokens_segment_ids"],
        "positions": packed["tokens_positions"],
        "loss_mask": packed["loss_mask"],
    }
    return {k: np.asarray(row[k], dtype=np.int32) for k in PACKED_FIELDS}


def pack_documents(
    documents: grain.IterDataset, *, seq_len: int, mode: str, bins: int = 32, seed: int = 0
) -> grain.IterDataset:
    """Rows of `seq_len` tokens packed from `documents` (see the module docstring for both modes)."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    if mode == "concat_then_split":
        packed = _ConcatThenSplit(documents, seq_len)
    elif mode == "first_fit":
        pieces = grain.experimental.FlatMapIterDataset(documents, _SplitLongDocuments(seq_len))
        lengths = {k: seq_len for k in _SEQUENCE_FEATURES}
        packed = grain.experimental.FirstFitPackIterDataset(
            pieces, length_struct=lengths, num_packing_bins=bins, seed=seed, shuffle_bins=True
        )
    else:
        raise ValueError(f"unknown packing mode {mode!r}")
    return packed.map(_to_row)


def pad_batch(batch: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """A batch (dict of [n, seq_len] arrays) padded with all-zero rows to `batch_size` rows.

    Zero rows are pure padding under the contract (segment 0, loss_mask 0), so an eval loop can keep one batch
    shape for its last, partial batch.
    """
    n = len(batch["tokens"])
    if n > batch_size:
        raise ValueError(f"batch has {n} rows, more than batch_size={batch_size}")
    return {k: np.pad(np.asarray(v, np.int32), ((0, batch_size - n), (0, 0))) for k, v in batch.items()}
