"""The embedded default corpus: built once from `realtext` and `synthetic`, labelled, split, cached as ArrayRecord.

Layout of a built corpus directory (one per `CorpusConfig` and environment, under `cache_root()/corpus/`):
  `{source}.{split}.array_record` — JSON records `{"text", "id", "source", "group", "title", "language", "domain",
      "edu_score", "safety", "safety_reasons", ...}`; synthetic records add `"kind", "query", "solution", "answer",
      "params"`. Records are stored in collection order, so neighbours are related documents.
  `manifest.json` — configuration, Python and package versions, and per-source/per-label counts.

Determinism: the build is a pure function of the config, the Python version, the versions of the pinned packages
and the code of the builder, collectors, generators and labelers; all of them are part of the cache key. Eval
documents are chosen by a hash of the document id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import inspect
import json
import pathlib
import platform
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from qwen3jax.data.annotate import heuristics
from qwen3jax.data.annotate.base import annotate_record
from qwen3jax.data.cache import build_once, cache_root
from qwen3jax.data.corpus import clean, realtext, synthetic
from qwen3jax.data.records import encode_json_record

SYNTHETIC_SOURCE = "synthetic_reasoning"
SOURCES = (*realtext.COLLECTORS, SYNTHETIC_SOURCE)
SPLITS = ("train", "eval")
# Coarse field of each synthetic generator (real text gets its domain from the domain labeler).
_SYNTHETIC_DOMAIN = {"ordering": "logic", "knights_knaves": "logic"}
# Labels that the corpus sets from provenance; heuristic labelers fill in the rest.
_LABELERS = tuple(cls() for cls in heuristics.HEURISTIC_LABELERS.values())


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """What goes into the embedded corpus.

    Attributes:
      seed: seed of the synthetic problems.
      sources: which sources to build (all of SOURCES by default; tests build small subsets).
      synthetic_per_generator: distinct problems per synthetic generator (14 generators); a generator with a small
        problem space gives fewer (it gets `_SYNTHETIC_TRIES` times as many draws).
      max_doc_chars: real documents longer than this are split into consecutive parts.
      eval_permille: share of documents (per thousand, chosen by a hash of the text, so that a text can never be
        in both splits) held out for evaluation. Exact duplicate texts within a source are kept once.
    """

    seed: int = 0
    sources: tuple[str, ...] = SOURCES
    synthetic_per_generator: int = 1500
    max_doc_chars: int = 60_000
    eval_permille: int = 20

    def __post_init__(self):
        unknown = set(self.sources) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown embedded sources {sorted(unknown)}; known: {SOURCES}")
        if not 0 < self.eval_permille < 1000:
            raise ValueError(f"eval_permille must be in (0, 1000), got {self.eval_permille}")


DEFAULT_CORPUS = CorpusConfig()


def _environment() -> dict[str, Any]:
    versions = {}
    for name in realtext.PINNED_DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "packages": versions}


def _code_fingerprint() -> str:
    """Hash of the code that decides the corpus's content, so that editing it never reuses a stale cache."""
    modules = (sys.modules[__name__], realtext, synthetic, clean, heuristics)
    return hashlib.sha256("".join(inspect.getsource(m) for m in modules).encode()).hexdigest()


def corpus_key(config: CorpusConfig) -> str:
    """Content key of a corpus: changes whenever its content could change."""
    blob = json.dumps(
        {"code": _code_fingerprint(), "config": dataclasses.asdict(config), "env": _environment()}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


_SYNTHETIC_TRIES = 4


def _is_eval(text_digest: bytes, permille: int) -> bool:
    return int.from_bytes(text_digest[:8], "little") % 1000 < permille


def _real_records(source: str, config: CorpusConfig) -> Iterator[dict[str, Any]]:
    seen: Counter[str] = Counter()
    for doc in realtext.COLLECTORS[source](config.max_doc_chars):
        base = f"{source}/{doc.group}/{doc.title}"
        doc_id = f"{base}#{seen[base]}"  # Titles can repeat (e.g. docstrings of overloads).
        seen[base] += 1
        yield {"text": doc.text, "id": doc_id, "source": source, "group": doc.group, "title": doc.title}


def _synthetic_records(config: CorpusConfig) -> Iterator[dict[str, Any]]:
    for generator in sorted(synthetic.GENERATORS):
        queries: set[str] = set()
        for index in range(config.synthetic_per_generator * _SYNTHETIC_TRIES):
            if len(queries) == config.synthetic_per_generator:
                break
            problem = synthetic.generate(generator, config.seed, index)
            if problem.query in queries:  # small problem spaces repeat themselves
                continue
            queries.add(problem.query)
            yield {
                "text": problem.document(),
                "id": f"{SYNTHETIC_SOURCE}/{generator}/{index}",
                "source": SYNTHETIC_SOURCE,
                "group": generator,
                "title": f"{generator} #{index}",
                "domain": _SYNTHETIC_DOMAIN.get(generator, "math"),
                "kind": problem.kind,
                "query": problem.query,
                "solution": problem.solution,
                "answer": problem.answer,
                "params": problem.params,
            }


def _build(config: CorpusConfig, out: pathlib.Path) -> None:
    manifest: dict[str, Any] = {
        "key": corpus_key(config),
        "config": dataclasses.asdict(config),
        "environment": _environment(),
        "sources": {},
    }
    for source in config.sources:
        records = _synthetic_records(config) if source == SYNTHETIC_SOURCE else _real_records(source, config)
        writers = {
            split: ArrayRecordWriter(str(out / f"{source}.{split}.array_record"), "group_size:1") for split in SPLITS
        }
        counts: dict[str, Any] = {split: 0 for split in SPLITS}
        labels: dict[str, Counter[str]] = {
            "domain": Counter(),
            "language": Counter(),
            "edu_score": Counter(),
            "safety": Counter(),
        }
        chars = duplicates = 0
        seen: set[bytes] = set()
        for record in records:
            digest = hashlib.sha256(record["text"].encode()).digest()
            if digest in seen:
                duplicates += 1
                continue
            seen.add(digest)
            record = annotate_record(record, _LABELERS)
            split = "eval" if _is_eval(digest, config.eval_permille) else "train"
            writers[split].write(encode_json_record(record))
            counts[split] += 1
            chars += len(record["text"])
            for key, counter in labels.items():
                counter[str(record[key])] += 1
        for writer in writers.values():
            writer.close()
        if not counts["train"] or not counts["eval"]:
            raise RuntimeError(
                f"embedded source {source!r} has {counts} documents per split; it needs at least one in each "
                "(is this Python installation missing its standard library or a pinned package?)"
            )
        manifest["sources"][source] = {
            **counts, "chars": chars, "duplicates_dropped": duplicates, "labels": {k: dict(v) for k, v in labels.items()}
        }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))


def corpus_dir(config: CorpusConfig = DEFAULT_CORPUS) -> pathlib.Path:
    """The directory of the built corpus for `config`, building it first if needed (~30 s for the default)."""
    return build_once(cache_root() / "corpus" / corpus_key(config), lambda out: _build(config, out))


def source_path(source: str, split: str, config: CorpusConfig = DEFAULT_CORPUS) -> pathlib.Path:
    """The ArrayRecord file of one embedded source and split."""
    if source not in config.sources:
        raise ValueError(f"embedded source {source!r} is not in this corpus; available: {config.sources}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return corpus_dir(config) / f"{source}.{split}.array_record"


def manifest(config: CorpusConfig = DEFAULT_CORPUS) -> dict[str, Any]:
    return json.loads((corpus_dir(config) / "manifest.json").read_text())


def iter_records(source: str, split: str, config: CorpusConfig = DEFAULT_CORPUS) -> Iterator[dict[str, Any]]:
    """The records of one embedded source and split, in storage order."""
    reader = ArrayRecordReader(str(source_path(source, split, config)))
    try:
        for start in range(0, reader.num_records(), 1024):
            for data in reader.read(list(range(start, min(start + 1024, reader.num_records())))):
                yield json.loads(data)
    finally:
        reader.close()


def reasoning_qa_pairs(split: str = "train", config: CorpusConfig = DEFAULT_CORPUS) -> list[dict[str, Any]]:
    """The synthetic problems as query–answer pairs for post-training (cold-start SFT, RL with verifiers):
    `{"id", "kind", "query", "solution", "answer", "params"}`. The eval split is disjoint from the train split."""
    keys = ("id", "kind", "query", "solution", "answer", "params")
    return [{k: r[k] for k in keys} for r in iter_records(SYNTHETIC_SOURCE, split, config)]
