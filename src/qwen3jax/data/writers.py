"""Record writers for the command-line tools: JSONL (plain or gzip) and ArrayRecord, chosen by file name."""

from __future__ import annotations

import contextlib
import gzip
import os
import pathlib
from typing import IO

from array_record.python.array_record_module import ArrayRecordWriter


class RecordWriter:
    """Writes byte records to `path`: ArrayRecord if the name contains `.array_record`, else JSON Lines (gzip if
    it ends in `.gz`; each record must then be one line of UTF-8 JSON). Use as a context manager."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._array_record: ArrayRecordWriter | None = None
        self._lines: IO[bytes] | None = None
        if ".array_record" in self.path.name:
            self._array_record = ArrayRecordWriter(str(self.path), "group_size:1")
        elif self.path.suffix == ".gz":
            self._lines = gzip.open(self.path, "wb")
        else:
            self._lines = open(self.path, "wb")

    def write(self, record: bytes) -> None:
        if self._array_record is not None:
            with self._os_errors():
                self._array_record.write(record)
        else:
            assert self._lines is not None
            if b"\n" in record:
                raise ValueError("a JSON Lines record must not contain a raw newline")
            self._lines.write(record + b"\n")

    def close(self) -> None:
        if self._array_record is not None:
            with self._os_errors():
                self._array_record.close()
        if self._lines is not None:
            self._lines.close()

    @contextlib.contextmanager
    def _os_errors(self):
        """ArrayRecord reports a failed write (e.g. a full disk) as a RuntimeError; callers handle I/O as OSError."""
        try:
            yield
        except RuntimeError as e:
            raise OSError(f"{self.path}: {e}") from e

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def source_kind_of(path: str) -> str:
    """The source kind ("arrayrecord" or "jsonl") that reads files written under this name."""
    return "arrayrecord" if ".array_record" in os.path.basename(path) else "jsonl"
