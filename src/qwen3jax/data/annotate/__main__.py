"""Annotation CLI.

  python -m qwen3jax.data.annotate label IN.jsonl [IN2.jsonl ...] --output OUT.jsonl \\
      [--labelers language,domain,edu,safety,classifier:clf.npz]
      Adds label fields to every record (JSONL, gzip JSONL or ArrayRecord in and out, by file name), prints a
      table of label counts and of rejected records per reason.
  python -m qwen3jax.data.annotate train LABELLED.jsonl --label_field topic --output clf.npz
      Trains the hashed n-gram classifier on records that carry a label, for use as `classifier:clf.npz`.

An existing output is never replaced without `--replace_output`, an input never (the output is written to a
temporary file next to it and renamed when complete, so a failed run leaves nothing behind).
"""

from __future__ import annotations

import argparse
import os
import pathlib
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


def _input_paths(args: argparse.Namespace) -> list[str]:
    """The expanded inputs, after checking that the output may be written (see module doc)."""
    paths = expand_paths(args.inputs)
    output = os.path.realpath(args.output)
    if output in {os.path.realpath(p) for p in paths}:
        raise ValueError(f"--output {args.output} is one of the inputs; write the labelled records elsewhere")
    if os.path.exists(output) and not args.replace_output:
        raise ValueError(f"--output {args.output} exists; pass --replace_output to replace it")
    return paths


def _documents(paths: Sequence[str], text_key: str, tracker: BadInputTracker, max_chars: int) -> Iterator[dict]:
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
    paths = _input_paths(args)
    output = pathlib.Path(args.output)
    partial = output.with_name(f".partial-{output.name}")  # keeps the name's format suffix for RecordWriter
    try:
        with RecordWriter(partial) as writer:
            for document in _documents(paths, args.text_key, tracker, args.max_chars):
                record = annotate_record(document, labelers, text_key=args.text_key, overwrite=args.overwrite)
                writer.write(encode_json_record(record))
                count_labels(counts, record)
            tracker.check(final=True)
        os.replace(partial, output)
    except BadInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        partial.unlink(missing_ok=True)
    print(format_label_counts(counts))
    print(format_report({"input": tracker.summary()}))
    return 0


def _train(args: argparse.Namespace) -> int:
    tracker = BadInputTracker(",".join(args.inputs), args.max_bad_fraction, args.min_records)
    texts, labels = [], []
    for document in _documents(_input_paths(args), args.text_key, tracker, args.max_chars):
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
        sub.add_argument("--replace_output", action="store_true", help="replace an existing --output file")
    commands.choices["label"].add_argument("--labelers", default="language,domain,edu,safety")
    commands.choices["label"].add_argument("--overwrite", action="store_true", help="replace existing label fields")
    commands.choices["train"].add_argument("--label_field", required=True, help="field holding the training label")
    commands.choices["train"].add_argument("--field", default="", help="field the labeler writes (default: same)")
    commands.choices["train"].add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    try:
        return _label(args) if args.command == "label" else _train(args)
    except (ValueError, OSError) as e:  # missing inputs, an output that may not be written: one line
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
