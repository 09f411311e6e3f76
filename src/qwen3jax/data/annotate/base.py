"""The labeler interface: a callable from a document's text to the label fields it adds to the record."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any


class Labeler(abc.ABC):
    """Adds label fields to records. `fields` names every key `__call__` may return."""

    name: str
    fields: tuple[str, ...]

    @abc.abstractmethod
    def __call__(self, text: str) -> dict[str, Any]:
        """Labels of one document. Values are JSON scalars (str, int, float, bool) or lists of strings."""


def annotate_record(
    record: Mapping[str, Any], labelers: Sequence[Labeler], *, text_key: str = "text", overwrite: bool = False
) -> dict[str, Any]:
    """A copy of `record` with every labeler's fields added; existing fields are kept unless `overwrite`."""
    out = dict(record)
    text = record[text_key]
    for labeler in labelers:
        if not overwrite and all(field in out for field in labeler.fields):
            continue
        for key, value in labeler(text).items():
            if overwrite or key not in out:
                out[key] = value
    return out
