"""Default data configs of the three pretraining stages (SPEC §3) on the embedded corpus.

S1 general: every source, safety-flagged documents removed. S2 reasoning: up-weights synthetic problems, code and
the mathematical/scientific documents, keeps only prose with higher educational value. S3 long context: the
sources with long (or concatenable related) documents, under the 75/25 length mix.

Mixture weights are per document. S1/S2 weights are derived from target shares of *tokens*, using the mean
document length of each embedded source (`_MEAN_CHARS`, measured on CPython 3.11 with the pinned packages; the
shares stay approximate elsewhere). Under the S3 length mix every output document follows the same length
distribution, so S3 weights are token shares directly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from qwen3jax.data.config import DataConfig

# Mean characters per document of each embedded source (corpus manifest: chars / documents).
_MEAN_CHARS = {
    "python_code": 18_100,
    "python_docs": 7_000,
    "numpy_docs": 1_340,
    "package_docs": 950,
    "references": 550,
    "synthetic_reasoning": 450,
}


def _component(path: str, share: float, *, per_token: bool, **extra: Any) -> dict[str, Any]:
    weight = share / _MEAN_CHARS[path] * 1000 if per_token else share
    return {"kind": "embedded", "path": path, "weight": weight, "where": {}, **extra}


def _config(sources: dict[str, dict[str, Any]], **overrides: Any) -> ml_collections.ConfigDict:
    """A full data config: every DataConfig field present (so command-line overrides of any of them work)."""
    defaults = {f.name: f.default for f in dataclasses.fields(DataConfig) if f.name != "sources"}
    return ml_collections.ConfigDict({**defaults, **overrides, "sources": sources})


def s1_config() -> ml_collections.ConfigDict:
    """S1 general mix. Token shares: code 30%, Python docs 15%, NumPy docs 20%, package docs 10%, references 5%,
    synthetic reasoning 20%."""
    safe = {"safety": "ok"}
    return _config(
        {
            "code": _component("python_code", 0.30, per_token=True, where=safe),
            "python_docs": _component("python_docs", 0.15, per_token=True, where=safe),
            "numpy_docs": _component("numpy_docs", 0.20, per_token=True, where=safe),
            "package_docs": _component("package_docs", 0.10, per_token=True, where=safe),
            "references": _component("references", 0.05, per_token=True, where=safe),
            "synthetic": _component("synthetic_reasoning", 0.20, per_token=True),
        }
    )


def s2_config() -> ml_collections.ConfigDict:
    """S2 reasoning mix. Token shares: synthetic reasoning 40%, code 25%, NumPy docs in math/science 15%, Python
    and package docs with edu_score >= 3: 15% and 5%."""
    safe = {"safety": "ok"}
    return _config(
        {
            "synthetic": _component("synthetic_reasoning", 0.40, per_token=True),
            "code": _component("python_code", 0.25, per_token=True, where=safe),
            "stem_docs": _component("numpy_docs", 0.15, per_token=True, where={"domain": ["math", "science"]}),
            "python_docs": _component("python_docs", 0.15, per_token=True, where={"edu_score": {"min": 3}}),
            "package_docs": _component("package_docs", 0.05, per_token=True, where={"edu_score": {"min": 3}}),
        }
    )


def s3_config() -> ml_collections.ConfigDict:
    """S3 long-context mix: 75% of documents in [L/2, L], 25% in [L/8, L/2), first-fit packed. Document shares:
    code 40%, Python docs 25%, NumPy docs 15% and synthetic problem sets 20% (both concatenated from related
    neighbours)."""
    return _config(
        {
            "code": _component("python_code", 0.40, per_token=False),
            "python_docs": _component("python_docs", 0.25, per_token=False),
            "numpy_docs": _component("numpy_docs", 0.15, per_token=False),
            "synthetic": _component("synthetic_reasoning", 0.20, per_token=False),
        },
        packing="first_fit",
        length_mix={"long_fraction": 0.75, "block_records": 32, "separator": "\n\n"},
    )


STAGES = {"s1": s1_config, "s2": s2_config, "s3": s3_config}
