"""Random-access readers of raw records: ArrayRecord, JSONL (plain or gzip), Parquet, TFDS, the embedded corpus.

Every source is a grain `RandomAccessDataSource` (`__len__`, `__getitem__`) of `RawRecord`s, so the pipeline can
shuffle globally, shard exactly across processes and checkpoint by index, whatever the file format. A glob (or a
list of paths/globs) is one source: its files are concatenated in sorted order.

Missing files, globs that match nothing, directories given as files and unreadable paths fail here, immediately,
with the path in the message. Problems inside records (bad JSON, no text...) are not detected here: they surface
when the pipeline parses the record (`records.parse_document`) and are counted there.

Memory: JSONL files are memory-mapped and indexed by line (24 bytes per line); gzip files are decompressed into
memory once; Parquet files are memory-mapped Arrow tables. For corpora beyond a machine's memory, convert them to
ArrayRecord shards with `python -m qwen3jax.data.prepare`.
"""

from __future__ import annotations

import abc
import bisect
import glob
import gzip
import importlib
import mmap
import os
import zlib
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
from array_record.python.array_record_module import ArrayRecordReader

from qwen3jax.data.records import RawRecord

_SCAN_CHUNK = 64 << 20  # Bytes scanned at a time when indexing line ends.


def expand_paths(pattern: str | Sequence[str]) -> list[str]:
    """Files named by a path, a glob, or a list of them; fails immediately, naming the path, if any is missing."""
    patterns = [pattern] if isinstance(pattern, str | os.PathLike) else list(pattern)
    if not patterns:
        raise ValueError("no input path given")
    paths: list[str] = []
    for p in map(str, patterns):
        if glob.has_magic(p):
            matches = sorted(m for m in glob.glob(p, recursive=True) if os.path.isfile(m))
            if not matches:
                raise FileNotFoundError(f"no files match {p!r}")
        else:
            if os.path.isdir(p):
                raise IsADirectoryError(f"{p} is a directory; give a file or a glob such as '{p}/*.jsonl'")
            if not os.path.isfile(p):
                raise FileNotFoundError(f"input file not found: {p}")
            matches = [p]
        for path in matches:
            if not os.access(path, os.R_OK):
                raise PermissionError(f"input file is not readable: {path}")
        paths.extend(matches)
    return paths


class _MultiFileSource(abc.ABC):
    """Concatenation of per-file record lists; subclasses provide `_file_len` and `_read`."""

    def __init__(self, paths: Sequence[str]):
        self._paths = list(paths)
        self._offsets = np.cumsum([0] + [self._file_len(i) for i in range(len(self._paths))]).tolist()

    @abc.abstractmethod
    def _file_len(self, file_index: int) -> int:
        """Number of records in file `file_index`."""

    @abc.abstractmethod
    def _read(self, file_index: int, local_index: int, index: int) -> RawRecord:
        """Record `local_index` of file `file_index` (which is record `index` of the whole source)."""

    def __len__(self) -> int:
        return self._offsets[-1]

    def __getitem__(self, index: int) -> RawRecord:
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} out of range [0, {len(self)}) of {self!r}")
        file_index = bisect.bisect_right(self._offsets, index) - 1
        return self._read(file_index, index - self._offsets[file_index], index)

    def __repr__(self) -> str:
        first = self._paths[0] if self._paths else "-"
        return f"{type(self).__name__}({len(self._paths)} files, first {first}, {len(self)} records)"


class ArrayRecordSource(_MultiFileSource):
    """ArrayRecord files whose records are bytes (UTF-8 JSON objects, or packed rows from `prepare`)."""

    def __init__(self, paths: Sequence[str]):
        self._counts = []
        for path in paths:
            try:
                reader = ArrayRecordReader(path)
                self._counts.append(reader.num_records())
                reader.close()  # A file that is not ArrayRecord may only fail here.
            except Exception as e:  # The reader raises a bare RuntimeError/ValueError without the path.
                raise ValueError(f"cannot read ArrayRecord file {path}: {e}") from e
        super().__init__(paths)
        self._data = grain.sources.ArrayRecordDataSource(self._paths) if self._paths else None

    def _file_len(self, file_index: int) -> int:
        return self._counts[file_index]

    def _read(self, file_index: int, local_index: int, index: int) -> RawRecord:
        return RawRecord(self._data[index], f"{self._paths[file_index]}#{local_index}")


_WHITESPACE = np.frombuffer(b" \t\r\x0b\x0c", dtype=np.uint8)


class _LineIndex:
    """Byte ranges and 1-based line numbers of the non-blank lines of a buffer."""

    def __init__(self, buffer: Any):
        data = np.frombuffer(buffer, dtype=np.uint8)
        ends = np.concatenate(
            [np.flatnonzero(data[i : i + _SCAN_CHUNK] == ord("\n")) + i for i in range(0, data.size, _SCAN_CHUNK)]
            + [np.array([data.size])]
        ).astype(np.int64)
        starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
        lengths = ends - starts
        keep = lengths > 0
        # Whitespace-only lines are layout, not records; only a line that starts with whitespace can be one.
        first = data[np.minimum(starts, data.size - 1)] if data.size else np.zeros(starts.shape, np.uint8)
        for i in np.flatnonzero(keep & np.isin(first, _WHITESPACE)):
            keep[i] = bool(bytes(data[starts[i] : ends[i]]).strip())
        self.starts, self.ends = starts[keep], ends[keep]
        self.line_numbers = np.flatnonzero(keep) + 1


class JsonlSource(_MultiFileSource):
    """JSON Lines files, plain or gzip-compressed (detected by content, not by name); one record per line."""

    def __init__(self, paths: Sequence[str]):
        self._buffers, self._indexes = [], []
        for path in paths:
            buffer = self._open(path)
            self._buffers.append(buffer)
            self._indexes.append(_LineIndex(buffer))
        super().__init__(paths)

    @staticmethod
    def _open(path: str) -> Any:
        with open(path, "rb") as f:
            magic = f.read(2)
            if magic == b"\x1f\x8b":
                f.seek(0)
                try:
                    return gzip.decompress(f.read())
                except (OSError, EOFError, zlib.error) as e:
                    raise ValueError(f"{path} is not a valid gzip file: {e}") from e
            if os.fstat(f.fileno()).st_size == 0:
                return b""
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def _file_len(self, file_index: int) -> int:
        return len(self._indexes[file_index].starts)

    def _read(self, file_index: int, local_index: int, index: int) -> RawRecord:
        idx = self._indexes[file_index]
        start, end = int(idx.starts[local_index]), int(idx.ends[local_index])
        line = idx.line_numbers[local_index]
        return RawRecord(bytes(self._buffers[file_index][start:end]), f"{self._paths[file_index]}:{line}")


class ParquetSource(_MultiFileSource):
    """Parquet files; each row becomes a record dict of its columns."""

    def __init__(self, paths: Sequence[str]):
        import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

        self._tables = []
        for path in paths:
            try:
                self._tables.append(pq.read_table(path, memory_map=True))
            except Exception as e:  # Arrow raises ArrowInvalid without the path.
                raise ValueError(f"cannot read Parquet file {path}: {e}") from e
        super().__init__(paths)

    def _file_len(self, file_index: int) -> int:
        return self._tables[file_index].num_rows

    def _read(self, file_index: int, local_index: int, index: int) -> RawRecord:
        table = self._tables[file_index]
        row = {name: table.column(name)[local_index].as_py() for name in table.column_names}
        return RawRecord(row, f"{self._paths[file_index]}#row{local_index}")


class TfdsSource:
    """A TFDS dataset through `tfds.data_source` (ArrayRecord-backed; TensorFlow is not needed).

    `path` is either a prepared dataset directory (the one holding `dataset_info.json`, read with
    `builder_from_directory`) or a registered dataset name such as `"mnist"` or `"c4/en:3.1.0"` found under
    `data_dir`. Nothing is downloaded.
    """

    def __init__(self, path: str, split: str, data_dir: str | None = None):
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

        self._where = f"{path}[{split}]"
        if os.path.isdir(path):
            if not os.path.isfile(os.path.join(path, "dataset_info.json")):
                raise FileNotFoundError(f"{path} is not a prepared TFDS dataset directory (no dataset_info.json)")
            builder = tfds.builder_from_directory(path)
        else:
            if os.sep in path:
                raise FileNotFoundError(f"TFDS dataset directory not found: {path}")
            builder = tfds.builder(path, data_dir=data_dir)
            if not builder.is_prepared():
                raise FileNotFoundError(f"TFDS dataset {path!r} is not prepared under {builder.data_dir}")
        if split not in builder.info.splits:
            raise ValueError(f"TFDS dataset {path} has no split {split!r}; splits: {list(builder.info.splits)}")
        self._data = builder.as_data_source(split=split)

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index: int) -> RawRecord:
        return RawRecord(self._data[index], f"{self._where}#{index}")

    def __repr__(self) -> str:
        return f"TfdsSource({self._where}, {len(self)} records)"


class HoldoutView:
    """Every `every`-th record (indices every-1, 2·every-1, ...) as the eval split, the rest as train.

    A fixed stride needs no index table, so it costs nothing on sources of any size, and it spreads the held-out
    records over the whole source rather than taking a contiguous (possibly unrepresentative) block.
    """

    def __init__(self, source: Any, every: int, split: str):
        if every < 2:
            raise ValueError(f"eval_every must be at least 2, got {every}")
        if split not in ("train", "eval"):
            raise ValueError(f"unknown split {split!r}")
        self._source, self._every, self._split = source, every, split
        n_eval = len(source) // every
        self._len = n_eval if split == "eval" else len(source) - n_eval

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> RawRecord:
        if not 0 <= index < self._len:
            raise IndexError(f"record {index} out of range [0, {self._len})")
        if self._split == "eval":
            return self._source[index * self._every + self._every - 1]
        return self._source[index + index // (self._every - 1)]


# Embedded chat sets (read with format="chat"): name -> the module whose `source_path(split)` builds it on first use.
EMBEDDED_CHAT_SETS = {
    "reasoning_chat": "qwen3jax.data.corpus.chat",  # every problem, worked solution, in both thinking modes
    "cold_start": "qwen3jax.data.corpus.cold_start",  # the curated long-CoT cold-start set (thinking mode)
    "thinking_fusion": "qwen3jax.data.corpus.fusion",  # the cold-start set fused with /think and /no_think turns
    "distill": "qwen3jax.data.corpus.distill",  # the cold-start curation with the teacher in both modes
}



def curation_report(path: str, split: str) -> dict[str, Any] | None:
    """The curation report of an embedded chat set built by curation (its module's `curation_report`), else None."""
    if str(path) not in EMBEDDED_CHAT_SETS:
        return None
    module = importlib.import_module(EMBEDDED_CHAT_SETS[str(path)])
    return module.curation_report(split) if hasattr(module, "curation_report") else None


SOURCE_KINDS = ("arrayrecord", "jsonl", "parquet", "tfds", "embedded", "packed")


def open_source(kind: str, path: str | Sequence[str], *, split: str = "train", data_dir: str | None = None) -> Any:
    """Opens a source of `RawRecord`s. `split` is used by TFDS and the embedded corpus only.

    Kinds: `arrayrecord`/`packed` (ArrayRecord files; `packed` holds rows written by `prepare`), `jsonl`, `parquet`,
    `tfds` (dataset directory or name), `embedded` (`path` is an embedded corpus source such as `python_code`, or
    one of the embedded chat sets of `EMBEDDED_CHAT_SETS`).
    """
    if kind in ("arrayrecord", "packed"):
        return ArrayRecordSource(expand_paths(path))
    if kind == "jsonl":
        return JsonlSource(expand_paths(path))
    if kind == "parquet":
        return ParquetSource(expand_paths(path))
    if kind == "tfds":
        return TfdsSource(str(path), split, data_dir)
    if kind == "embedded":
        from qwen3jax.data.corpus import build  # pylint: disable=import-outside-toplevel

        if str(path) in EMBEDDED_CHAT_SETS:
            module = importlib.import_module(EMBEDDED_CHAT_SETS[str(path)])
            return ArrayRecordSource([str(module.source_path(split))])
        return ArrayRecordSource([str(build.source_path(str(path), split))])
    raise ValueError(f"unknown source kind {kind!r}; expected one of {SOURCE_KINDS}")
