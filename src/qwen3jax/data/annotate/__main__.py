"""Annotation CLI.

  python -m qwen3jax.data.annotate label IN.jsonl [IN2.jsonl ...] --output OUT.jsonl \\
      [--labelers language,domain,edu,safety,classifier:clf.npz]
      Adds label fields to every record (JSONL, gzip JSONL or ArrayRecord in and out, by file name), prints a
      table of label counts and of rejected records per reason.
  python -m qwen3jax.data.annotate train LABELLED.jsonl --label_field topic --output clf.npz
      Trains the hashed n-gram classifier on records that carry a label, for use as `classifier:clf.npz`.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import tqdm

from qwen3jax.data.annotate import annotate_record, get_labeler
from qwen3jax.data.annotate.classifier import ClassifierLabeler, NgramClassifier
from qwen3jax.data.badinput import BadInputError, BadInputTracker, BadRecord, format_report
from qwen3jax.data.records import encode_json_record, parse_document
from qwen3jax.data.sources import expand_paths, open_source
from qwen3jax.data.writers import RecordWriter, source_kind_of


def _documents(inputs: Sequence[str], text_key: str, tracker: BadInputTracker, max_chars: int) -> Iterator[dict]:
    paths = expand_paths(inputs)
    kinds = {source_kind_of(p) for p in paths}
    if len(kinds) > 1:
        raise ValueError(f"inputs mix file kinds {sorted(kinds)}; annotate one kind at a time")
    source = open_source(kinds.pop(), paths)
    for i in tqdm.trange(len(source), desc="records", file=sys.stderr):
        raw = source[i]
        try:
            document = parse_document(raw, text_key=text_key, max_chars=max_chars)
        except BadRecord as e:
            tracker.bad(e, raw.where)
            continue
        tracker.good()
        # parse_document stores the text under "text"; keep the input's own field name in the output.
        document[text_key] = document.pop("text")
        yield document


def count_labels(counts: dict[str, Counter], record: dict[str, Any]) -> None:
    """Adds a record's label values to `counts` (field → value → count); list labels count every element."""
    for field, counter in counts.items():
        value = record.get(field)
        for v in value if isinstance(value, list) else [value]:
            counter[str(v)] += 1


def format_label_counts(counts: dict[str, Counter]) -> str:
    lines = [f"{'label':<20} {'value':<24} {'count':>8}"]
    for field, counter in counts.items():
        for value, count in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"{field:<20} {value:<24} {count:>8}")
    return "\n".join(lines)


def _label(args: argparse.Namespace) -> int:
    labelers = [get_labeler(name.strip()) for name in args.labelers.split(",") if name.strip()]
    counts = {f: Counter() for labeler in labelers for f in labeler.fields if not f.endswith("_confidence")}
    tracker = BadInputTracker(",".join(args.inputs), args.max_bad_fraction, args.min_records)
    with RecordWriter(args.output) as writer:
        try:
            for document in _documents(args.inputs, args.text_key, tracker, args.max_chars):
                record = annotate_record(document, labelers, text_key=args.text_key, overwrite=args.overwrite)
                writer.write(encode_json_record(record))
                count_labels(counts, record)
            tracker.check(final=True)
        except BadInputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(format_label_counts(counts))
    print(format_report({"input": tracker.summary()}))
    return 0


def _train(args: argparse.Namespace) -> int:
    tracker = BadInputTracker(",".join(args.inputs), args.max_bad_fraction, args.min_records)
    texts, labels = [], []
    for document in _documents(args.inputs, args.text_key, tracker, args.max_chars):
        if document.get(args.label_field) is not None:
            texts.append(document[args.text_key])
            labels.append(str(document[args.label_field]))
    tracker.check(final=True)
    classifier = NgramClassifier.train(texts, labels, steps=args.steps)
    ClassifierLabeler(classifier, args.field or args.label_field).save(args.output)
    print(f"trained on {len(texts)} records with labels {dict(Counter(labels))}; saved {args.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qwen3jax.data.annotate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("label", "train"):
        sub = commands.add_parser(name)
        sub.add_argument("inputs", nargs="+", help="input files or globs (JSONL, .jsonl.gz, ArrayRecord)")
        sub.add_argument("--output", required=True)
        sub.add_argument("--text_key", default="text")
        sub.add_argument("--max_chars", type=int, default=1_000_000, help="longer documents are rejected")
        sub.add_argument("--max_bad_fraction", type=float, default=0.05)
        sub.add_argument("--min_records", type=int, default=1000, help="records read before the bad check applies")
    commands.choices["label"].add_argument("--labelers", default="language,domain,edu,safety")
    commands.choices["label"].add_argument("--overwrite", action="store_true", help="replace existing label fields")
    commands.choices["train"].add_argument("--label_field", required=True, help="field holding the training label")
    commands.choices["train"].add_argument("--field", default="", help="field the labeler writes (default: same)")
    commands.choices["train"].add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    return _label(args) if args.command == "label" else _train(args)


if __name__ == "__main__":
    sys.exit(main())
