"""S3 long-context length mix: documents drawn into length buckets, built from long and concatenated documents.

For sequence length L, each output document first draws its bucket: with probability `long_fraction` (the
report's 75%) its length must lie in [L/2, L], otherwise in [L/8, L/2). It is then built from the token stream of
its source: the current document is taken whole if it fits, cut at the bucket's upper bound if it is longer (the
rest starts the next output), and followed by the next documents (joined by a separator) while it is still
shorter than the lower bound. The input arrives in blocks of consecutive records, so the documents concatenated
this way are neighbours in storage, i.e. related (same file, package or book). Every output ends with EOS.

The bucket draw is seeded by (seed, output number), and the iterator checkpoints its position in the input as
(parent state before the current block, document in block, token offset), so restoring a state replays exactly.
`LengthMixStats` measures what was produced; the pipeline reports it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np


@dataclasses.dataclass
class LengthMixStats:
    """Counts of produced documents per bucket, for reporting the achieved mix."""

    long: int = 0
    medium: int = 0
    concatenated: int = 0  # Outputs built from more than one input document.
    tokens: int = 0

    def summary(self) -> dict[str, float]:
        docs = self.long + self.medium
        return {
            "documents": docs,
            "long_fraction": self.long / docs if docs else 0.0,
            "concatenated_fraction": self.concatenated / docs if docs else 0.0,
            "mean_length": self.tokens / docs if docs else 0.0,
        }


def bucket_bounds(seq_len: int, long: bool) -> tuple[int, int]:
    """Inclusive [low, high] document length (EOS included) of the long or medium bucket."""
    if seq_len < 16:
        raise ValueError(f"the length mix needs seq_len >= 16, got {seq_len}")
    return (seq_len // 2, seq_len) if long else (seq_len // 8, seq_len // 2 - 1)


class _LengthMixIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, mix: LengthMixIterDataset):
        super().__init__(parent)
        self._mix = mix
        self._block: Sequence[np.ndarray] | None = None
        self._block_parent_state = self._parent.get_state()
        self._doc = 0
        self._offset = 0
        self._count = 0

    def _current_document(self) -> np.ndarray:
        """The document being consumed (advancing past finished ones); StopIteration when the input ends."""
        while True:
            if self._block is None or self._doc >= len(self._block):
                self._block_parent_state = self._parent.get_state()
                self._block = next(self._parent)
                self._doc, self._offset = 0, 0
                continue
            document = self._block[self._doc]
            if self._offset < len(document):
                return document
            self._doc, self._offset = self._doc + 1, 0

    def __next__(self) -> dict[str, np.ndarray]:
        mix = self._mix
        rng = np.random.default_rng([mix.seed, self._count])
        long = bool(rng.random() < mix.long_fraction)
        low, high = bucket_bounds(mix.seq_len, long)
        low, high = low - 1, high - 1  # Room for content: the EOS token is appended at the end.
        parts: list[np.ndarray] = []
        length, documents = 0, 0
        while length < low:
            try:
                document = self._current_document()
            except StopIteration:
                if not parts:
                    raise
                break  # A finite input ran out: emit the short remainder rather than dropping it.
            if parts:
                if high - length <= len(mix.separator):
                    break
                parts.append(mix.separator)
                length += len(mix.separator)
            take = min(len(document) - self._offset, high - length)
            parts.append(document[self._offset : self._offset + take])
            self._offset += take
            length += take
            documents += 1
        parts.append(np.array([mix.eos_id], np.int32))
        tokens = np.concatenate(parts).astype(np.int32)
        self._count += 1
        stats = mix.stats
        stats.long += long
        stats.medium += not long
        stats.concatenated += documents > 1
        stats.tokens += len(tokens)
        return {"tokens": tokens, "loss_mask": np.ones_like(tokens)}

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._block_parent_state, "doc": self._doc, "offset": self._offset, "count": self._count}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._block_parent_state = state["parent"]
        try:
            self._block = next(self._parent)
        except StopIteration:
            self._block = None
        self._doc, self._offset, self._count = state["doc"], state["offset"], state["count"]


class LengthMixIterDataset(grain.IterDataset):
    """Builds length-bucketed documents from a parent that yields blocks (lists) of token arrays without EOS."""

    def __init__(
        self,
        parent: grain.IterDataset,
        *,
        seq_len: int,
        long_fraction: float,
        seed: int,
        separator: Sequence[int],
        eos_id: int,
        stats: LengthMixStats | None = None,
    ):
        super().__init__(parent)
        bucket_bounds(seq_len, True)  # Validates seq_len early.
        self.seq_len = seq_len
        self.long_fraction = long_fraction
        self.seed = seed
        self.separator = np.asarray(separator, np.int32)
        self.eos_id = eos_id
        self.stats = stats if stats is not None else LengthMixStats()

    def __iter__(self) -> grain.DatasetIterator:
        return _LengthMixIterator(self._parent.__iter__(), self)

    def __str__(self) -> str:
        return f"LengthMixIterDataset(seq_len={self.seq_len}, long_fraction={self.long_fraction})"
