"""The embedded long-CoT cold-start set: the curation command's pipeline (`posttrain.curate.curate`) run over the
corpus' synthetic train problems with the worked-solution teacher (its flawed variants exercise every response
filter), the eval split as the validation set, and the registered `exact_match` reward as the verifier. The same
curation in both modes is the embedded off-policy distillation set (`corpus/distill.py`, `--modes think,no_think`).

Records: the curated chat JSONL records (`{"messages", "enable_thinking", "domain", "provenance"}`), thinking mode
only for the cold start. Built once per corpus and curation code (`cache.build_once`), next to it, as ArrayRecord, with the curation
report (`cold_start.report.json`: what every query and response filter removed) in the same directory; the data
config names it as the embedded source `cold_start` with `format="chat"`. The eval split holds the curated eval
problems (kept only for the held-out loss; nothing of it is trained on).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import pathlib
import sys
from typing import Any

from array_record.python.array_record_module import ArrayRecordWriter

from qwen3jax.data.cache import build_once, cache_root
from qwen3jax.data.records import encode_json_record

COLD_START_SOURCE = "cold_start"
DISTILL_SOURCE = "distill"
MODES = {COLD_START_SOURCE: ("think",), DISTILL_SOURCE: ("think", "no_think")}  # what each embedded set curates
VERIFIER = "exact_match"  # the embedded problems' answers are exact strings; fast, no math parser
SAMPLES_PER_QUERY = 4
SEED = 0


def curate_split(split: str, modes: tuple[str, ...] = MODES[COLD_START_SOURCE]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The curated records and report of one split of the embedded problems, teacher responses in `modes`."""
    from qwen3jax.posttrain import curate, filters  # pylint: disable=import-outside-toplevel
    from qwen3jax.posttrain.verifiers import reward_verifier  # pylint: disable=import-outside-toplevel

    queries = curate.read_queries(curate.EMBEDDED, split=split)
    validation = curate.read_queries(curate.EMBEDDED, split="eval")
    problems = [curate.Problem(v.domain or "", v.prompt, v.solution or "", v.gold or "", {}) for v in validation]
    teacher = curate.WorkedSolutionTeacher(problems, seed=SEED)
    verify = reward_verifier(VERIFIER)
    # The eval split is the validation set itself: curating it against itself would reject every response.
    index = filters.NgramIndex(f"{v.prompt}\n{v.solution or ''}" for v in (validation if split == "train" else ()))
    return curate.curate(queries, teacher=teacher, verify=verify, response_filters=filters.ResponseFilters(verify, index),
                         settings=curate.CurationSettings(n=SAMPLES_PER_QUERY, modes=modes))  # fmt: skip


def cache_dir(source: str = COLD_START_SOURCE) -> pathlib.Path:
    """The directory of the built set `source` (both splits' ArrayRecord files and reports), built on first use."""
    from qwen3jax.data.corpus import build  # pylint: disable=import-outside-toplevel
    from qwen3jax.posttrain import curate, filters, responses  # pylint: disable=import-outside-toplevel

    code = hashlib.sha256(
        "".join(inspect.getsource(m) for m in (sys.modules[__name__], curate, filters, responses)).encode()
    ).hexdigest()[:8]
    key = f"{build.corpus_key(build.DEFAULT_CORPUS)}-{source}-{code}"

    def write(out: pathlib.Path) -> None:
        for part in build.SPLITS:
            records, report = curate_split(part, MODES[source])
            writer = ArrayRecordWriter(str(out / f"{source}.{part}.array_record"), "group_size:1")
            for record in records:
                writer.write(encode_json_record(record))
            writer.close()
            (out / f"{source}.{part}.report.json").write_text(json.dumps(report, indent=2))

    return build_once(cache_root() / "corpus" / key, write)


def source_path(split: str, source: str = COLD_START_SOURCE) -> pathlib.Path:
    """The ArrayRecord file of the embedded set `source`'s `split` ("train" or "eval")."""
    from qwen3jax.data.corpus import build  # pylint: disable=import-outside-toplevel

    if split not in build.SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {build.SPLITS}")
    return cache_dir(source) / f"{source}.{split}.array_record"


def curation_report(split: str = "train", source: str = COLD_START_SOURCE) -> dict[str, Any]:
    """What the curation of `split` kept and what every filter removed (read from the built set)."""
    return json.loads((cache_dir(source) / f"{source}.{split}.report.json").read_text())
