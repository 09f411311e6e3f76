"""The data configuration: a plain mapping (dict or `ml_collections.ConfigDict`) validated into dataclasses.

Experiment files hold the data section as a ConfigDict so that `--config.data.sources.code.weight=2` works from
the command line; the pipeline parses it here once, rejecting unknown keys and bad values with a message that names
the offending key. Field meanings are documented on the dataclasses below and in `pipeline`'s module docstring.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from qwen3jax.data.sources import SOURCE_KINDS

PACKING_MODES = ("concat_then_split", "first_fit")
FORMATS = ("text", "chat")


@dataclasses.dataclass(frozen=True)
class LengthMixConfig:
    """S3 long-context mix: every sampled document gets a length bucket before it is built.

    Attributes:
      long_fraction: share of documents with length in [seq_len/2, seq_len]; the rest have length in
        [seq_len/8, seq_len/2). The report's S3 uses 0.75.
      block_records: records are shuffled in blocks of this many consecutive records, so that short documents
        concatenated to reach a length bucket are neighbours in storage (same file/package/book), i.e. related.
      separator: text placed between concatenated documents (tokenized once).
    """

    long_fraction: float = 0.75
    block_records: int = 32
    separator: str = "\n\n"

    def __post_init__(self):
        if not 0.0 <= self.long_fraction <= 1.0:
            raise ValueError(f"length_mix.long_fraction must be in [0, 1], got {self.long_fraction}")
        if self.block_records < 1:
            raise ValueError(f"length_mix.block_records must be >= 1, got {self.block_records}")


@dataclasses.dataclass(frozen=True)
class ComponentConfig:
    """One weighted component of the mixture: a source, optionally narrowed to records whose labels match `where`.

    Attributes:
      name: the component's key in `sources`; used in metrics and error messages.
      kind: one of SOURCE_KINDS.
      path: file, glob or list of them; a TFDS dataset directory or name; an embedded source name.
      weight: relative sampling weight (per document, or per token with the data config's weight_unit="tokens";
        per row for `packed`). Normalised over all components.
      format: "text" (documents under `text_key`) or "chat" (`{"messages", "tools"?, "enable_thinking"?}` records,
        encoded with the chat template and the assistant-only loss mask; see `conversations`). Chat needs
        `packing="first_fit"`, which keeps conversations whole.
      text_key: field holding the document text.
      where: label filter. `{label: value}` keeps records whose label equals value, `{label: [v1, v2]}` any of
        them, `{label: {"min": a, "max": b}}` a numeric range (either bound optional). All entries must hold; a
        label holding a list (e.g. `safety_reasons`) holds when one of its elements does.
      annotate: labelers (names as for `annotate.get_labeler`) run on records before `where` is applied, for sources
        whose records lack the labels.
      eval_path: a separate file/glob of held-out records (same kind). Embedded sources use their eval split.
      eval_every: hold out every N-th record of `path` for evaluation instead (0: no hold-out).
      split / eval_split: TFDS splits for training and evaluation.
      data_dir: TFDS data directory when `path` is a dataset name.
    """

    name: str
    kind: str
    path: Any = ""
    weight: float = 1.0
    format: str = "text"
    text_key: str = "text"
    where: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    annotate: tuple[str, ...] = ()
    eval_path: Any = ""
    eval_every: int = 0
    split: str = "train"
    eval_split: str = ""
    data_dir: str | None = None

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"sources.{self.name}.kind: unknown kind {self.kind!r}; expected one of {SOURCE_KINDS}")
        if not self.path:
            raise ValueError(f"sources.{self.name}.path is required")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"sources.{self.name}.weight must be a positive number, got {self.weight}")
        if self.eval_every and (self.eval_path or self.eval_split):
            raise ValueError(
                f"sources.{self.name}: eval_every holds out part of `path`; it cannot be combined "
                "with eval_path/eval_split"
            )
        if self.eval_every < 0 or self.eval_every == 1:
            raise ValueError(f"sources.{self.name}.eval_every must be 0 (off) or >= 2, got {self.eval_every}")
        for label, condition in self.where.items():
            if isinstance(condition, Mapping) and not set(condition) <= {"min", "max"}:
                raise ValueError(
                    f"sources.{self.name}.where.{label}: range keys must be 'min'/'max', got {set(condition)}"
                )
        if self.format not in FORMATS:
            raise ValueError(f"sources.{self.name}.format: unknown format {self.format!r}; expected one of {FORMATS}")
        if self.format == "chat" and (self.annotate or self.kind == "packed"):
            raise ValueError(f"sources.{self.name}: chat records take no labelers (annotate) and are not packed rows")
        if self.kind == "packed" and (self.where or self.annotate):
            raise ValueError(f"sources.{self.name}: packed rows have no labels; 'where'/'annotate' cannot apply")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The whole data section of an experiment.

    Attributes:
      sources: the mixture components, in order.
      tokenizer: "default" (SentencePiece BPE trained on the embedded corpus) or a `.model`/`tokenizer.json` path.
      vocab_size: vocabulary size of the default tokenizer.
      packing: "concat_then_split" (no padding; documents cut at row ends) or "first_fit" (documents kept whole
        where they fit; padding). Documents longer than a row are split in both.
      packing_bins: rows packed at a time by first-fit (more bins: less padding, more memory).
      shuffle: shuffle records (each epoch differently); off for inspection.
      length_mix: S3 long-context length mix (None: off).
      max_doc_chars: longer documents are rejected as bad input ("too_long").
      max_bad_fraction / min_records_for_bad_check: stop when more than this fraction of a source's records is
        bad, once at least that many records were read from it.
      read_threads / prefetch: threads and buffer (records) of each component's reader.
      weight_unit: what the component weights are shares of: "documents" drawn (rows, for packed sources), or
        "tokens" (each weight is divided by the component's mean tokens per document, measured on a sample of
        its usable documents when the iterator is built; not with `length_mix`, whose documents all follow one
        length distribution, so that document shares are token shares already).
    """

    sources: tuple[ComponentConfig, ...]
    tokenizer: str = "default"
    vocab_size: int = 8192
    packing: str = "concat_then_split"
    packing_bins: int = 32
    shuffle: bool = True
    length_mix: LengthMixConfig | None = None
    max_doc_chars: int = 1_000_000
    max_bad_fraction: float = 0.05
    min_records_for_bad_check: int = 1000
    read_threads: int = 2
    prefetch: int = 64
    weight_unit: str = "documents"

    def __post_init__(self):
        if not self.sources:
            raise ValueError("data config needs at least one entry in 'sources'")
        if self.packing not in PACKING_MODES:
            raise ValueError(f"packing: unknown mode {self.packing!r}; expected one of {PACKING_MODES}")
        packed = [c.kind == "packed" for c in self.sources]
        if any(packed) and not all(packed):
            raise ValueError("packed sources (rows from `prepare`) cannot be mixed with raw-text sources")
        chat = [c.name for c in self.sources if c.format == "chat"]
        if chat and self.packing != "first_fit":
            raise ValueError(f"chat sources {chat} need packing='first_fit' (conversations are kept whole, never cut "
                             f"at a row end); got packing={self.packing!r}")  # fmt: skip
        if chat and self.length_mix is not None:
            raise ValueError(f"length_mix builds long documents from text; it cannot apply to chat sources {chat}")
        if any(packed) and self.length_mix is not None:
            raise ValueError("length_mix needs raw documents; it cannot apply to packed sources")
        if self.weight_unit not in ("documents", "tokens"):
            raise ValueError(f"weight_unit: expected 'documents' or 'tokens', got {self.weight_unit!r}")
        if self.weight_unit == "tokens" and (any(packed) or self.length_mix is not None):
            raise ValueError("weight_unit='tokens' needs raw documents without length_mix (see DataConfig)")
        for name in ("packing_bins", "max_doc_chars", "vocab_size", "prefetch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def is_packed(self) -> bool:
        return self.sources[0].kind == "packed"


def _plain(value: Any) -> Any:
    """ConfigDict/FrozenConfigDict → dict, recursively; tuples stay tuples."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    return value


def _build(cls: type, fields: Mapping[str, Any], where: str, **extra: Any) -> Any:
    allowed = {f.name for f in dataclasses.fields(cls)} - set(extra)
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    return cls(**fields, **extra)


def parse_data_config(cfg: Mapping[str, Any] | DataConfig) -> DataConfig:
    """Validates a data config mapping (see DataConfig) and returns it as dataclasses."""
    if isinstance(cfg, DataConfig):
        return cfg
    fields = dict(_plain(cfg))
    sources = fields.pop("sources", None)
    if not isinstance(sources, Mapping):
        raise ValueError("data config needs 'sources': a mapping from component name to its settings")
    components = []
    for name, spec in sources.items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"sources.{name} must be a mapping, got {type(spec).__name__}")
        spec = dict(spec)
        if "annotate" in spec:
            spec["annotate"] = tuple(spec["annotate"])
        components.append(_build(ComponentConfig, spec, f"sources.{name}", name=name))
    length_mix = fields.pop("length_mix", None)
    if length_mix is not None:
        length_mix = _build(LengthMixConfig, length_mix, "length_mix")
    return _build(DataConfig, fields, "data config", sources=tuple(components), length_mix=length_mix)


def label_matches(record: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    """Whether `record`'s labels satisfy the `where` filter of a component (see ComponentConfig). A label holding
    a list (e.g. `safety_reasons`) satisfies a condition when one of its elements does."""
    for label, condition in where.items():
        if label not in record:
            return False
        value = record[label]
        values = value if isinstance(value, list) else [value]
        if not any(_value_matches(v, condition) for v in values):
            return False
    return True


def _value_matches(value: Any, condition: Any) -> bool:
    if isinstance(condition, Mapping):
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        return not ("min" in condition and value < condition["min"] or "max" in condition and value > condition["max"])
    if isinstance(condition, list | tuple):
        return value in condition
    return value == condition
