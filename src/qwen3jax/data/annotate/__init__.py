"""Data property annotation: pluggable labelers that add fields (language, domain, educational value, safety,
or any label a trained classifier predicts) to records, so that mixtures can select and weight by them.

Labelers by name (`get_labeler`):
  "language", "domain", "edu", "safety"  — fast heuristics (`heuristics.py`);
  "classifier:PATH"                      — a hashed n-gram classifier trained on labelled examples (`classifier.py`).
An LM judge (`judge.JudgeLabeler`) wraps any text-generation callable and is constructed in code.
CLI: `python -m qwen3jax.data.annotate --help`.
"""

from __future__ import annotations

from qwen3jax.data.annotate.base import Labeler, annotate_record
from qwen3jax.data.annotate.heuristics import HEURISTIC_LABELERS

__all__ = ["Labeler", "annotate_record", "get_labeler", "HEURISTIC_LABELERS"]


def get_labeler(spec: str) -> Labeler:
    """A labeler by name: a heuristic (`HEURISTIC_LABELERS`) or `classifier:PATH` (a saved trained classifier)."""
    if spec in HEURISTIC_LABELERS:
        return HEURISTIC_LABELERS[spec]()
    if spec.startswith("classifier:"):
        from qwen3jax.data.annotate.classifier import ClassifierLabeler  # pylint: disable=import-outside-toplevel

        return ClassifierLabeler.load(spec.split(":", 1)[1])
    raise ValueError(f"unknown labeler {spec!r}; expected one of {sorted(HEURISTIC_LABELERS)} or 'classifier:PATH'")
