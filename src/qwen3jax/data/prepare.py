"""Preparation CLI: tokenize and pack sources into ArrayRecord shards of packed rows, for training on pods.

  python -m qwen3jax.data.prepare --output DIR --seq_len 4096 \\
      --source web=jsonl:/data/web/*.jsonl.gz --source code=arrayrecord:/data/code-*.array_record [--tokenizer PATH]
  python -m qwen3jax.data.prepare --output DIR --seq_len 1024 --stage s1      # the embedded corpus's S1 sources

Each source is written separately to `DIR/{name}/{split}-{process:05d}-{shard:05d}.array_record` (train, and eval
when the source has held-out records), so that training mixes them by weight with components
`{"kind": "packed", "path": "DIR/{name}/train-*.array_record"}`. With `--process_index/--process_count`, several
hosts prepare disjoint shares of each source. A progress bar shows rows and tokens/s; at the end a table of bad
records per reason is printed, and `DIR/{name}/summary-{process:05d}.json` records counts, throughput and padding.
A process's files from an earlier run are never replaced unless `--overwrite` is given (then they are removed
first, so no stale shard is left for the glob to pick up). A component that fails (bad input, a full disk) leaves
no file behind — no partial shard for the glob, no summary that would refuse the corrected rerun.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import tqdm

from qwen3jax.data.badinput import BadInputError, format_report
from qwen3jax.data.config import DataConfig, parse_data_config
from qwen3jax.data.pipeline import build_component_rows, configured_tokenizer, has_eval_split
from qwen3jax.data.records import encode_packed_row
from qwen3jax.data.stages import STAGES
from qwen3jax.data.tokenizer import Tokenizer
from qwen3jax.data.writers import RecordWriter


def _parse_source(spec: str, text_key: str) -> tuple[str, dict[str, Any]]:
    name, sep, rest = spec.partition("=")
    kind, sep2, path = rest.partition(":")
    if not (sep and sep2 and name and kind and path):
        raise argparse.ArgumentTypeError(f"--source must look like NAME=KIND:PATH, got {spec!r}")
    return name, {"kind": kind, "path": path, "text_key": text_key}


def prepare_split(
    cfg: DataConfig,
    name: str,
    split: str,
    out_dir: pathlib.Path,
    *,
    seq_len: int,
    records_per_shard: int,
    process_index: int,
    process_count: int,
    tokenizer: Tokenizer,
) -> dict[str, Any]:
    """Writes one component's split as packed-row shards; returns its summary."""
    rows = build_component_rows(
        cfg,
        name,
        split=split,
        seq_len=seq_len,
        process_index=process_index,
        process_count=process_count,
        tokenizer=tokenizer,
    )
    num_rows = real_tokens = shard = 0
    writer = None
    written: list[pathlib.Path] = []
    start = time.perf_counter()
    progress = tqdm.tqdm(desc=f"{name}/{split}", unit=" rows", file=sys.stderr)
    try:
        for row in rows:
            if writer is None or num_rows % records_per_shard == 0:
                if writer is not None:
                    writer.close()  # a full disk may fail here: the shard counts as written (removed below)
                written.append(out_dir / f"{split}-{process_index:05d}-{shard:05d}.array_record")
                writer = RecordWriter(written[-1])
                shard += 1
            writer.write(encode_packed_row(row))
            num_rows += 1
            real_tokens += int((row["segment_ids"] > 0).sum())
            progress.update()
            progress.set_postfix(
                tokens_per_s=f"{num_rows * seq_len / (time.perf_counter() - start):,.0f}", refresh=False
            )
        if writer is not None:
            writer.close()  # the last shard is complete only once closed
    except BaseException:
        # Partial shards would look like complete ones to the training glob (a truncated ArrayRecord file even
        # opens as 0 records without an error): remove them all, also when closing the writer fails again.
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        for path in written:
            path.unlink(missing_ok=True)
        raise
    finally:
        progress.close()
    seconds = time.perf_counter() - start
    bad = rows.report()["bad_input"][name]
    return {
        "rows": num_rows,
        "shards": shard,
        "tokens": num_rows * seq_len,
        "real_tokens": real_tokens,
        "padding_fraction": 1 - real_tokens / max(num_rows * seq_len, 1),
        "seconds": seconds,
        "tokens_per_second": num_rows * seq_len / max(seconds, 1e-9),
        "bad_input": bad,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qwen3jax.data.prepare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--seq_len", type=int, required=True, help="row length in tokens")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--source", action="append", help="NAME=KIND:PATH (repeatable; PATH may be a glob)")
    inputs.add_argument("--stage", choices=sorted(STAGES), help="the sources of an embedded-corpus stage config")
    parser.add_argument("--text_key", default="text", help="field holding the text (with --source)")
    parser.add_argument("--tokenizer", default="default", help="'default', a .model or a tokenizer.json")
    parser.add_argument("--vocab_size", type=int, default=8192, help="vocabulary of the default tokenizer")
    parser.add_argument("--packing", default="concat_then_split", choices=["concat_then_split", "first_fit"])
    parser.add_argument("--records_per_shard", type=int, default=10_000, help="packed rows per output file")
    parser.add_argument("--max_bad_fraction", type=float, default=0.05)
    parser.add_argument("--process_index", type=int, default=0)
    parser.add_argument("--process_count", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true", help="replace this process's files of an earlier run")
    args = parser.parse_args(argv)
    if args.seq_len < 2:
        parser.error(f"--seq_len must be >= 2, got {args.seq_len}")
    if args.records_per_shard < 1:
        parser.error(f"--records_per_shard must be >= 1, got {args.records_per_shard}")
    try:
        return _prepare(args, parser)
    except (ValueError, OSError) as e:  # bad sources, paths or config values: one line, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def _earlier_outputs(output: pathlib.Path, names: Sequence[str], process_index: int) -> list[pathlib.Path]:
    """This process's shards and summaries under `output` for these components."""
    found = []
    for name in names:
        folder = output / name
        found += sorted(folder.glob(f"*-{process_index:05d}-*.array_record"))
        found += sorted(folder.glob(f"summary-{process_index:05d}.json"))
    return found


def _prepare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.stage:
        raw = STAGES[args.stage]().to_dict()
        raw["length_mix"] = None  # Rows of a fixed-length prep are packed normally; S3 mixing happens online.
    else:
        raw = {"sources": dict(_parse_source(spec, args.text_key) for spec in args.source)}
    raw.update(
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        packing=args.packing,
        max_bad_fraction=args.max_bad_fraction,
    )
    cfg = parse_data_config(raw)
    if cfg.is_packed:
        parser.error("the inputs are already packed rows")
    output = pathlib.Path(args.output)
    earlier = _earlier_outputs(output, [comp.name for comp in cfg.sources], args.process_index)
    if earlier and not args.overwrite:
        parser.error(
            f"{output} already holds {len(earlier)} files of process {args.process_index} from an earlier run "
            f"(e.g. {earlier[0]}); pass --overwrite to replace them, or choose another --output"
        )
    tokenizer = configured_tokenizer(cfg)
    for path in earlier:
        path.unlink()
    reports: dict[str, Any] = {}
    failed = False
    for comp in cfg.sources:
        summary: dict[str, Any] = {"seq_len": args.seq_len, "tokenizer": repr(tokenizer), "kind": comp.kind}
        for split in ("train", "eval"):
            if split == "eval" and not has_eval_split(comp):
                continue
            try:
                summary[split] = prepare_split(
                    cfg,
                    comp.name,
                    split,
                    output / comp.name,
                    seq_len=args.seq_len,
                    records_per_shard=args.records_per_shard,
                    process_index=args.process_index,
                    process_count=args.process_count,
                    tokenizer=tokenizer,
                )
            except BaseException as e:
                # The component is incomplete: none of its files stay, so nothing blocks the corrected rerun and no
                # half of it (train without eval) is left for the training glob.
                for path in _earlier_outputs(output, [comp.name], args.process_index):
                    path.unlink()
                if not isinstance(e, BadInputError):
                    raise
                print(f"error: {e}", file=sys.stderr)
                failed = True
                break
            reports[f"{comp.name}/{split}"] = summary[split]
        if failed:
            break
        (output / comp.name).mkdir(parents=True, exist_ok=True)
        (output / comp.name / f"summary-{args.process_index:05d}.json").write_text(json.dumps(summary, indent=1))
    for name, s in reports.items():
        print(
            f"{name}: {s['rows']} rows in {s['shards']} shards, {s['tokens_per_second']:,.0f} tokens/s, "
            f"padding {s['padding_fraction']:.1%}"
        )
    print(format_report({name: s["bad_input"] for name, s in reports.items()}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
