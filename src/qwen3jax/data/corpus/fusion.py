"""The embedded thinking-mode fusion set: `posttrain.fusion.fusion_records` over the embedded cold-start set's
curated thinking records (`corpus/cold_start.py`), per split: half the trained turns think (`/think` flag, or no
flag), half answer directly after the empty think block (`/no_think`), flags in user or system messages, some
multi-turn conversations whose last flag decides.

Built once per cold-start set and fusion code (`cache.build_once`) as ArrayRecord; the data config names it as the
embedded source `thinking_fusion` with `format="chat"`. At full size the fusion command fuses rejection samples of
the reasoning-RL model instead (`python -m qwen3jax.posttrain.fusion`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import pathlib
import sys
from collections import Counter
from typing import Any

from array_record.python.array_record_module import ArrayRecordWriter

from qwen3jax.data.cache import build_once
from qwen3jax.data.records import encode_json_record
from qwen3jax.data.sources import ArrayRecordSource

FUSION_SOURCE = "thinking_fusion"
SEED = 0


def cache_dir() -> pathlib.Path:
    from qwen3jax.data.corpus import build, cold_start  # pylint: disable=import-outside-toplevel
    from qwen3jax.posttrain import fusion  # pylint: disable=import-outside-toplevel

    curated = cold_start.cache_dir()
    code = hashlib.sha256("".join(inspect.getsource(m) for m in (sys.modules[__name__], fusion)).encode()).hexdigest()
    target = curated.with_name(f"{curated.name}-{FUSION_SOURCE}-{code[:8]}")

    def write(out: pathlib.Path) -> None:
        for part in build.SPLITS:
            source = ArrayRecordSource([str(cold_start.source_path(part))])
            examples = [fusion.example_from_curated(json.loads(source[i].payload)) for i in range(len(source))]
            records = fusion.fusion_records(examples, seed=SEED)
            writer = ArrayRecordWriter(str(out / f"{FUSION_SOURCE}.{part}.array_record"), "group_size:1")
            for record in records:
                writer.write(encode_json_record(record))
            writer.close()
            report = {"records": len(records), "modes": dict(Counter(r["provenance"]["mode"] for r in records)),
                      "layouts": dict(Counter(r["provenance"]["layout"] for r in records))}  # fmt: skip
            (out / f"{FUSION_SOURCE}.{part}.report.json").write_text(json.dumps(report, indent=2))

    return build_once(target, write)


def source_path(split: str) -> pathlib.Path:
    """The ArrayRecord file of the embedded fusion set's `split` ("train" or "eval")."""
    from qwen3jax.data.corpus import build  # pylint: disable=import-outside-toplevel

    if split not in build.SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {build.SPLITS}")
    return cache_dir() / f"{FUSION_SOURCE}.{split}.array_record"


def curation_report(split: str = "train") -> dict[str, Any]:
    """The fused set's shares of modes and layouts."""
    return json.loads((cache_dir() / f"{FUSION_SOURCE}.{split}.report.json").read_text())
