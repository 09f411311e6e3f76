"""Default data configs of the three pretraining stages (SPEC §3) on the embedded corpus.

S1 general: every source, safety-flagged documents removed. S2 reasoning: up-weights synthetic problems, code and
the mathematical/scientific documents, keeps only prose with higher educational value. S3 long context: the
sources with long (or concatenable related) documents, under the 75/25 length mix.

Mixture weights: S1/S2 give target shares of *tokens* (`weight_unit="tokens"`: the pipeline divides each by the
component's mean document length in tokens, measured on its filtered documents with the run's tokenizer). Under
the S3 length mix every output document follows the same length distribution, so S3 weights are document shares,
which are token shares there.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from qwen3jax.data.config import DataConfig

def _component(path: str, share: float, **extra: Any) -> dict[str, Any]:
    return {"kind": "embedded", "path": path, "weight": share, "where": {}, **extra}


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
            "code": _component("python_code", 0.30, where=safe),
            "python_docs": _component("python_docs", 0.15, where=safe),
            "numpy_docs": _component("numpy_docs", 0.20, where=safe),
            "package_docs": _component("package_docs", 0.10, where=safe),
            "references": _component("references", 0.05, where=safe),
            "synthetic": _component("synthetic_reasoning", 0.20),
        },
        weight_unit="tokens",
    )


def s2_config() -> ml_collections.ConfigDict:
    """S2 reasoning mix. Token shares: synthetic reasoning 40%, code 25%, NumPy docs in math/science 15%, Python
    and package docs with edu_score >= 3: 15% and 5%."""
    safe = {"safety": "ok"}
    return _config(
        {
            "synthetic": _component("synthetic_reasoning", 0.40),
            "code": _component("python_code", 0.25, where=safe),
            "stem_docs": _component("numpy_docs", 0.15, where={"domain": ["math", "science"]}),
            "python_docs": _component("python_docs", 0.15, where={"edu_score": {"min": 3}}),
            "package_docs": _component("package_docs", 0.05, where={"edu_score": {"min": 3}}),
        },
        weight_unit="tokens",
    )


def s3_config() -> ml_collections.ConfigDict:
    """S3 long-context mix: 75% of documents in [L/2, L], 25% in [L/8, L/2), first-fit packed. Document shares:
    code 40%, Python docs 25%, NumPy docs 15% and synthetic problem sets 20% (both concatenated from related
    neighbours)."""
    return _config(
        {
            "code": _component("python_code", 0.40),
            "python_docs": _component("python_docs", 0.25),
            "numpy_docs": _component("numpy_docs", 0.15),
            "synthetic": _component("synthetic_reasoning", 0.20),
        },
        packing="first_fit",
        length_mix={"long_fraction": 0.75, "block_records": 32, "separator": "\n\n"},
    )


STAGES = {"s1": s1_config, "s2": s2_config, "s3": s3_config}


def chat_sft_config(source: str = "reasoning_chat") -> ml_collections.ConfigDict:
    """Chat SFT on an embedded chat set (`sources.EMBEDDED_CHAT_SETS`; by default `corpus/chat.py`'s: the synthetic
    problems as conversations in thinking and non-thinking form), assistant-only loss, conversations packed whole
    (first-fit)."""
    return _config({source: _component(source, 1.0, format="chat")}, packing="first_fit")
