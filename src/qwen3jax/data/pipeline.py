"""Pretraining data pipeline: weighted mixtures of sources → tokenized documents → packed batches, on grain.

Entry points (called by the trainer):
  build_pretrain_iterator(data_cfg, *, seq_len, batch_size, seed, process_index=None, process_count=None)
      Infinite, shuffled (per epoch differently), deterministic for a seed; this process's share of the data.
  build_eval_iterator(data_cfg, *, seq_len, batch_size, process_index=None, process_count=None)
      One pass over the held-out documents of every component that has them; the last batch is padded with
      all-zero rows (loss_mask 0).
Both return a `DataIterator`: `next()` gives a batch — a dict of int32 numpy arrays of shape [batch_size,
seq_len]: `tokens`, `segment_ids`, `positions`, `loss_mask` (see `packing`); `get_state()`/`set_state()` save and
restore the exact position (JSON-serialisable, usable with `grain.checkpoint.CheckpointHandler`/orbax); `report()`
and `metrics()` give bad-input counts per source and reason, filter counts, and the measured S3 length mix.

`data_cfg` is a dict or ConfigDict (validated by `config.parse_data_config`):
  sources: {name: {kind, path, weight=1.0, format="text", text_key="text", where={}, annotate=[], eval_path="",
                   eval_every=0, split="train", eval_split="", data_dir=None}}
      kind: "embedded" (path: an embedded corpus source, e.g. "python_code"), "jsonl" (plain or gzip),
      "arrayrecord" (JSON records), "parquet", "tfds" (dataset directory or name), "packed" (rows from
      `python -m qwen3jax.data.prepare`; all sources must then be packed). path: file, glob or list of them.
      weight: relative share of documents drawn from this component (rows, for packed sources).
      where/annotate: keep only records whose labels match, optionally computing labels first (label groups:
      the same source may appear as several components with different filters and weights).
      format: "text", or "chat" for conversations (`conversations.py`: chat template, assistant-only loss mask,
      conversations kept whole by first-fit packing, too-long ones dropped and counted).
  tokenizer="default" | path to .model / tokenizer.json;  vocab_size=8192 (default tokenizer only)
  packing="concat_then_split" | "first_fit";  packing_bins=32;  shuffle=True
  length_mix=None | {long_fraction=0.75, block_records=32, separator="\n\n"}   (S3)
  max_doc_chars=1_000_000;  max_bad_fraction=0.05;  min_records_for_bad_check=1000
  read_threads=2;  prefetch=64;  weight_unit="documents" | "tokens" (weights are token shares; see DataConfig)

How it is built: each component is a grain MapDataset over a random-access source, cut to this process's
contiguous shard, shuffled and repeated, and mapped through `DocumentMaker` (parse → validate → label → filter
→ tokenize → EOS) in reader threads; components are interleaved by weight (`IterDataset.mix`, exact
proportions), then packed and batched. Every stage is a grain iterator with exact checkpoint state.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Mapping
from typing import Any

import grain
import numpy as np

from qwen3jax.data.badinput import BadInputTracker
from qwen3jax.data.config import ComponentConfig, DataConfig, parse_data_config
from qwen3jax.data.conversations import ConversationMaker
from qwen3jax.data.documents import BlockReader, DocumentMaker, decode_row
from qwen3jax.data.length_mix import LengthMixIterDataset, LengthMixStats
from qwen3jax.data.packing import pack_documents, pad_batch
from qwen3jax.data.sources import HoldoutView, curation_report, open_source
from qwen3jax.data.tokenizer import Tokenizer, default_tokenizer, load_tokenizer

TOKEN_SAMPLE = 128  # documents measured per component for weight_unit="tokens"


def configured_tokenizer(cfg: DataConfig) -> Tokenizer:
    """The tokenizer named by the config ("default": the embedded-corpus SentencePiece model)."""
    if cfg.tokenizer == "default":
        return default_tokenizer(cfg.vocab_size)
    return load_tokenizer(cfg.tokenizer)


def _component_seed(seed: int, name: str) -> int:
    """Independent, stable 32-bit seeds per component (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:4], "little")


def _process_grid(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax  # pylint: disable=import-outside-toplevel

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, process_count={process_count})")
    return process_index, process_count


def shard_bounds(num_records: int, process_index: int, process_count: int) -> tuple[int, int]:
    """The contiguous [start, end) range of records read by one process: disjoint, together complete."""
    return num_records * process_index // process_count, num_records * (process_index + 1) // process_count


def has_eval_split(comp: ComponentConfig) -> bool:
    """Whether the component has held-out records (embedded eval split, eval_path, eval_every, TFDS eval_split)."""
    return comp.kind == "embedded" or bool(
        comp.eval_path or comp.eval_every or (comp.kind == "tfds" and comp.eval_split)
    )


def _open_split(comp: ComponentConfig, split: str) -> Any | None:
    """The component's records for "train" or "eval" (None: the component has no held-out records)."""
    if split == "eval" and not has_eval_split(comp):
        return None
    if comp.kind == "embedded":
        return open_source("embedded", comp.path, split=split)
    if split == "eval" and comp.kind == "tfds" and comp.eval_split:
        return open_source("tfds", comp.path, split=comp.eval_split, data_dir=comp.data_dir)
    if split == "eval" and comp.eval_path:
        return open_source(comp.kind, comp.eval_path, data_dir=comp.data_dir)
    source = open_source(comp.kind, comp.path, split=comp.split, data_dir=comp.data_dir)
    return HoldoutView(source, comp.eval_every, split) if comp.eval_every else source


class DataIterator(grain.DatasetIterator):
    """The pipeline's batch iterator: a grain iterator (exact `get_state`/`set_state`) plus run reporting."""

    def __init__(
        self,
        parent: grain.DatasetIterator,
        trackers: Mapping[str, BadInputTracker],
        makers: Mapping[str, DocumentMaker | ConversationMaker],
        length_mix: LengthMixStats | None,
        mean_tokens: Mapping[str, float] | None = None,
        curation: Mapping[str, dict[str, Any]] | None = None,
    ):
        super().__init__(parent)
        self._trackers = dict(trackers)
        self._makers = dict(makers)
        self._length_mix = length_mix
        self._mean_tokens = dict(mean_tokens or {})
        self._curation = dict(curation or {})

    def __next__(self) -> dict[str, np.ndarray]:
        try:
            return next(self._parent)
        except StopIteration:
            for tracker in self._trackers.values():  # End of a finite pass: judge small sources too.
                tracker.check(final=True)
            raise

    def get_state(self) -> dict[str, Any]:
        """The exact position plus the report's counters, so that the report of a resumed run covers the whole run.
        The counters include the records that reader threads had read ahead of the position; a resume reads those
        again, so each resume may count up to `prefetch` + `read_threads` records of a component twice."""
        counters = {
            "bad_input": {name: t.summary() for name, t in self._trackers.items()},
            "filtered": {name: m.filtered for name, m in self._makers.items()},
        }
        if self._length_mix is not None:
            counters["length_mix"] = dataclasses.asdict(self._length_mix)
        return {"position": self._parent.get_state(), "counters": counters}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.keys() != {"position", "counters"}:  # saved before the counters were kept: the position only
            self._parent.set_state(state)
            return
        self._parent.set_state(state["position"])
        counters = state["counters"]
        for name, summary in counters["bad_input"].items():
            self._trackers[name].restore(summary)
        for name, filtered in counters["filtered"].items():
            self._makers[name].filtered = int(filtered)
        if self._length_mix is not None:
            for field, value in counters["length_mix"].items():
                setattr(self._length_mix, field, int(value))

    def report(self) -> dict[str, Any]:
        """Bad-input counts (by source and reason, with first offenders), filter counts, measured S3 mix, and the
        measured mean document lengths behind token-share weights, and the curation reports of curated embedded
        sets (what each query and response filter removed)."""
        out: dict[str, Any] = {
            "bad_input": {name: t.summary() for name, t in self._trackers.items()},
            "filtered": {name: m.filtered for name, m in self._makers.items()},
        }
        dropped = {name: m.dropped_too_long for name, m in self._makers.items() if isinstance(m, ConversationMaker)}
        if dropped:  # chat: conversations longer than the sequence, dropped whole
            out["dropped_too_long"] = dropped
        if self._length_mix is not None:
            out["length_mix"] = self._length_mix.summary()
        if self._mean_tokens:  # weight_unit="tokens": what the document weights were derived from
            out["mean_document_tokens"] = self._mean_tokens
        if self._curation:
            out["curation"] = self._curation
        return out

    def metrics(self) -> dict[str, float]:
        """`report()` flattened into scalar run metrics (`data/...`)."""
        report = self.report()
        out: dict[str, float] = {}
        for name, summary in report["bad_input"].items():
            out[f"data/records/{name}"] = summary["records"]
            for reason, count in summary["bad"].items():
                out[f"data/bad/{name}/{reason}"] = count
        for name, count in report["filtered"].items():
            out[f"data/filtered/{name}"] = count
        for name, count in report.get("dropped_too_long", {}).items():
            out[f"data/dropped_too_long/{name}"] = count
        for key, value in report.get("length_mix", {}).items():
            out[f"data/length_mix/{key}"] = value
        return out


class _Builder:
    """Shared setup of the pretraining and eval pipelines."""

    def __init__(
        self,
        data_cfg: Mapping[str, Any] | DataConfig,
        seq_len: int,
        batch_size: int,
        process_index: int | None,
        process_count: int | None,
        tokenizer: Tokenizer | None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        self.cfg = parse_data_config(data_cfg)
        self.seq_len, self.batch_size = seq_len, batch_size
        self.process_index, self.process_count = _process_grid(process_index, process_count)
        self.tokenizer = None if self.cfg.is_packed else (tokenizer or configured_tokenizer(self.cfg))
        self.read_options = grain.ReadOptions(num_threads=self.cfg.read_threads, prefetch_buffer_size=self.cfg.prefetch)
        self.trackers: dict[str, BadInputTracker] = {}
        self.makers: dict[str, DocumentMaker | ConversationMaker] = {}
        self.mean_tokens: dict[str, float] = {}  # weight_unit="tokens": measured per component
        self.curation: dict[str, dict[str, Any]] = {}  # curated embedded sets: what their filters removed

    def shard(self, comp: ComponentConfig, source: Any) -> grain.MapDataset:
        start, end = shard_bounds(len(source), self.process_index, self.process_count)
        if start == end:
            raise ValueError(
                f"sources.{comp.name}: process {self.process_index} of {self.process_count} gets no records "
                f"(the source has {len(source)})"
            )
        return grain.MapDataset.source(source)[start:end]

    def maker(self, comp: ComponentConfig, records: grain.MapDataset, *, append_eos: bool) -> Any:
        if self.cfg.is_packed:
            return functools.partial(decode_row, self.seq_len)
        tracker = BadInputTracker(comp.name, self.cfg.max_bad_fraction, self.cfg.min_records_for_bad_check)
        if comp.format == "chat":  # conversations end with <|im_end|>; segment ids separate them, no EOS
            maker = ConversationMaker(comp, self.tokenizer, tracker, seq_len=self.seq_len,
                                      give_up_after=DocumentMaker.give_up_after(self.cfg, len(records)))  # fmt: skip
        else:
            maker = DocumentMaker(comp, self.cfg, self.tokenizer, tracker, num_records=len(records), append_eos=append_eos)
        self.trackers[comp.name], self.makers[comp.name] = tracker, maker
        return maker

    def open_split(self, comp: ComponentConfig, split: str) -> Any | None:
        """`_open_split`, noting the curation report of a curated embedded set's training split for the report."""
        source = _open_split(comp, split)
        if split == "train" and comp.kind == "embedded" and (report := curation_report(comp.path, split)) is not None:
            self.curation[comp.name] = report
        return source

    def one_pass(self, comp: ComponentConfig, split: str, *, skip_empty_share: bool = False) -> grain.MapDataset | None:
        """This process's records of one split of a component, in storage order, as documents (or rows); None
        if the component has no records for `split`, or (with `skip_empty_share`) none for this process."""
        source = self.open_split(comp, split)
        if source is None:
            return None
        start, end = shard_bounds(len(source), self.process_index, self.process_count)
        if skip_empty_share and start == end:
            return None
        records = self.shard(comp, source)
        return records.map(self.maker(comp, records, append_eos=True))

    def rows(self, documents: grain.IterDataset, seed: int) -> grain.IterDataset:
        if self.cfg.is_packed:
            return documents
        return pack_documents(
            documents, seq_len=self.seq_len, mode=self.cfg.packing, bins=self.cfg.packing_bins, seed=seed
        )

    def mean_document_tokens(self, comp: ComponentConfig) -> float:
        """Mean tokens (EOS included) of the component's usable training documents, estimated from records
        spread evenly over the whole source (so every process computes the same weights): their mean length in
        characters times tokens per character measured on TOKEN_SAMPLE of them (a ratio that varies far less
        between documents than their lengths). Bad and filtered records are passed over here (a throwaway
        tracker) and counted only when training reads them."""
        source = _open_split(comp, "train")
        quiet = BadInputTracker(comp.name, max_bad_fraction=1.0, min_records=1)
        if comp.format == "chat":
            return self._mean_conversation_tokens(comp, source, quiet)
        maker = DocumentMaker(comp, self.cfg, self.tokenizer, quiet, num_records=len(source), append_eos=True)
        picks = np.unique(np.linspace(0, len(source) - 1, min(len(source), TOKEN_SAMPLE * 16)).astype(np.int64))
        usable = {int(i): len(text) for i in picks if (text := self._usable_text(maker, comp, source[int(i)]))}
        if not usable:
            raise ValueError(
                f"sources.{comp.name}: none of {len(picks)} sampled records gives a document, so its mean length "
                f"(for weight_unit='tokens') is unknown; check its where={dict(comp.where)} or use weight_unit='documents'"
            )
        indices = list(usable)
        spread = np.unique(np.linspace(0, len(indices) - 1, min(len(indices), TOKEN_SAMPLE)).astype(np.int64))
        measured = [self._usable_text(maker, comp, source[indices[int(j)]]) for j in spread]
        tokens_per_char = sum(len(self.tokenizer.encode_plain(t)) for t in measured) / sum(len(t) for t in measured)
        return float(np.mean(list(usable.values()))) * tokens_per_char + 1

    def _mean_conversation_tokens(self, comp: ComponentConfig, source: Any, quiet: BadInputTracker) -> float:
        """Mean tokens of the usable conversations among TOKEN_SAMPLE records spread over the whole source."""
        maker = ConversationMaker(comp, self.tokenizer, quiet, seq_len=self.seq_len, give_up_after=len(source) + 1)
        picks = np.unique(np.linspace(0, len(source) - 1, min(len(source), TOKEN_SAMPLE)).astype(np.int64))
        lengths = [len(c["tokens"]) for i in picks if (c := maker(source[int(i)])) is not None]
        if not lengths:
            raise ValueError(f"sources.{comp.name}: none of {len(picks)} sampled records gives a conversation that "
                             f"fits seq_len={self.seq_len}, so its mean length (weight_unit='tokens') is unknown")  # fmt: skip
        return float(np.mean(lengths))

    @staticmethod
    def _usable_text(maker: DocumentMaker, comp: ComponentConfig, raw) -> str | None:
        record = maker.document(raw)
        return None if record is None else record[comp.text_key]

    def iterator(self, batches: grain.IterDataset, length_mix: LengthMixStats | None = None) -> DataIterator:
        return DataIterator(batches.__iter__(), self.trackers, self.makers, length_mix, self.mean_tokens, self.curation)


def build_pretrain_iterator(
    data_cfg: Mapping[str, Any] | DataConfig,
    *,
    seq_len: int,
    batch_size: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
    tokenizer: Tokenizer | None = None,
) -> DataIterator:
    """The infinite training iterator of this process (see the module docstring). `process_index`/`count`
    default to `jax.process_index()`/`jax.process_count()`; `tokenizer` overrides the configured one."""
    b = _Builder(data_cfg, seq_len, batch_size, process_index, process_count, tokenizer)
    cfg, mix = b.cfg, b.cfg.length_mix
    stats = LengthMixStats() if mix else None
    streams = []
    for comp in cfg.sources:
        comp_seed = _component_seed(seed, comp.name)
        records = b.shard(comp, b.open_split(comp, "train"))
        if mix is None:
            ds = records.shuffle(comp_seed) if cfg.shuffle else records
            streams.append(ds.repeat(None).map(b.maker(comp, records, append_eos=True)).to_iter_dataset(b.read_options))
            continue
        # S3: shuffle blocks of consecutive (related) records, then build length-bucketed documents from them.
        num_blocks = -(-len(records) // mix.block_records)
        blocks = grain.MapDataset.range(num_blocks)
        blocks = blocks.shuffle(comp_seed) if cfg.shuffle else blocks
        reader = BlockReader(records, mix.block_records, b.maker(comp, records, append_eos=False))
        # Prefetch is counted in records; a block holds block_records of them.
        options = grain.ReadOptions(
            num_threads=cfg.read_threads, prefetch_buffer_size=max(2, cfg.prefetch // mix.block_records)
        )
        streams.append(
            LengthMixIterDataset(
                blocks.repeat(None).map(reader).to_iter_dataset(options),
                seq_len=seq_len,
                long_fraction=mix.long_fraction,
                seed=comp_seed,
                separator=b.tokenizer.encode_plain(mix.separator),
                eos_id=b.tokenizer.eos_id,
                stats=stats,
            )
        )
    weights = [comp.weight for comp in cfg.sources]
    if cfg.weight_unit == "tokens":
        b.mean_tokens = {comp.name: b.mean_document_tokens(comp) for comp in cfg.sources}
        weights = [comp.weight / b.mean_tokens[comp.name] for comp in cfg.sources]
    mixed = streams[0] if len(streams) == 1 else grain.IterDataset.mix(streams, weights)
    batches = b.rows(mixed, _component_seed(seed, "packing")).batch(batch_size, drop_remainder=True)
    return b.iterator(batches, stats)


def build_eval_iterator(
    data_cfg: Mapping[str, Any] | DataConfig,
    *,
    seq_len: int,
    batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
    tokenizer: Tokenizer | None = None,
) -> DataIterator:
    """One deterministic pass over the held-out records of every component that has them (embedded sources'
    eval split, `eval_path`, `eval_every`, TFDS `eval_split`), the components evenly interleaved, packed like
    training data but without the S3 length mix; the final partial batch is padded with all-zero rows. A held-out
    split smaller than the process count leaves some processes without its records; they skip it."""
    b = _Builder(data_cfg, seq_len, batch_size, process_index, process_count, tokenizer)
    parts = [one for comp in b.cfg.sources if (one := b.one_pass(comp, "eval", skip_empty_share=True)) is not None]
    if not parts:
        raise ValueError(
            "no source has held-out data: set eval_path, eval_every or eval_split, or use embedded sources"
        )
    documents = _interleaved(parts).to_iter_dataset(b.read_options)
    batches = b.rows(documents, 0).batch(batch_size).map(functools.partial(pad_batch, batch_size=batch_size))
    return b.iterator(batches)


def _interleaved(parts: list[grain.MapDataset]) -> grain.MapDataset:
    """The parts' records evenly interleaved, each part in its own order: record k of a part of n records sits at
    (k + 0.5) / n of the pass. An eval that reads only the first batches (`eval.batches`) then sees every component
    in proportion to its held-out size, where one part after another showed it the first component alone."""
    whole = grain.MapDataset.concatenate(parts)
    places = np.concatenate([(np.arange(len(part)) + 0.5) / len(part) for part in parts])
    order = np.argsort(places, kind="stable")
    return grain.MapDataset.range(len(order)).map(lambda i: whole[int(order[i])])


def build_component_rows(
    data_cfg: Mapping[str, Any] | DataConfig,
    component: str,
    *,
    split: str,
    seq_len: int,
    process_index: int | None = None,
    process_count: int | None = None,
    tokenizer: Tokenizer | None = None,
) -> DataIterator:
    """One pass, in storage order, over one component's "train" or "eval" records, packed into rows (unbatched
    dicts of [seq_len] arrays). `prepare` writes these; tests use them to check sharding and packing."""
    b = _Builder(data_cfg, seq_len, 1, process_index, process_count, tokenizer)
    comps = {comp.name: comp for comp in b.cfg.sources}
    if component not in comps:
        raise KeyError(f"no component {component!r} in the data config; components: {sorted(comps)}")
    documents = b.one_pass(comps[component], split)
    if documents is None:
        raise ValueError(f"sources.{component} has no {split!r} records")
    return b.iterator(b.rows(documents.to_iter_dataset(b.read_options), 0))
