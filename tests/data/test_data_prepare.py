"""The preparation CLI writes packed shards that train back exactly; the benchmark function runs."""

from __future__ import annotations

import json
import re

import numpy as np

from qwen3jax.data.bench import pipeline_throughput
from qwen3jax.data.pipeline import build_eval_iterator, build_pretrain_iterator
from qwen3jax.data.prepare import main as prepare_main
from qwen3jax.data.records import decode_packed_row
from qwen3jax.data.sources import open_source


def test_prepare_writes_packed_shards_that_train(write_jsonl, tmp_path, tokenizer, unpack, capsys):
    docs = [{"text": f"record {i}: " + "lorem ipsum " * (i % 23 + 1)} for i in range(200)]
    path = write_jsonl("web.jsonl.gz", docs + ["{not json", {"body": "no text"}], gzipped=True)
    out = tmp_path / "prepared"
    # The default tokenizer (cached) keeps this test fast; `--tokenizer PATH` takes a .model or tokenizer.json.
    argv = [
        "--output",
        str(out),
        "--seq_len",
        "64",
        "--source",
        f"web=jsonl:{path}",
        "--records_per_shard",
        "25",
        "--max_bad_fraction",
        "0.05",
    ]
    assert prepare_main(argv) == 0
    printed = capsys.readouterr().out
    assert "malformed_json=1" in printed and "missing_text=1" in printed and "tokens/s" in printed
    summary = json.loads((out / "web" / "summary-00000.json").read_text())["train"]
    shards = sorted((out / "web").glob("train-*.array_record"))
    assert len(shards) == summary["shards"] == -(-summary["rows"] // 25)
    assert summary["bad_input"]["bad"] == {"malformed_json": 1, "missing_text": 1}

    source = open_source("packed", str(out / "web" / "train-*.array_record"))
    rows = [decode_packed_row(source[i].payload, 64) for i in range(len(source))]
    expected = [tokenizer.encode(d["text"]) + [tokenizer.eos_id] for d in docs]
    assert unpack.documents_of_rows(rows, tokenizer.eos_id) == expected

    cfg = {"sources": {"web": {"kind": "packed", "path": str(out / "web" / "train-*.array_record")}}}
    it = build_pretrain_iterator(cfg, seq_len=64, batch_size=4, seed=0, process_index=0, process_count=1)
    batch = next(it)
    assert batch["tokens"].shape == (4, 64) and batch["tokens"].dtype == np.int32
    batch_rows = {row["tokens"].tobytes() for row in unpack.rows_of([batch])}
    assert batch_rows <= {row["tokens"].tobytes() for row in rows}
    cfg["sources"]["web"]["eval_every"] = 10
    assert sum(1 for _ in build_eval_iterator(cfg, seq_len=64, batch_size=4, process_index=0, process_count=1)) > 0


def test_prepare_stops_on_mostly_bad_input(write_jsonl, tmp_path, capsys):
    path = write_jsonl("bad.jsonl", ["{broken"] * 30 + [{"text": "fine"}] * 5)
    argv = ["--output", str(tmp_path / "o"), "--seq_len", "32", "--source", f"bad=jsonl:{path}"]
    assert prepare_main(argv) == 1
    assert re.search(rf"{path}:\d+: malformed_json", capsys.readouterr().err)


def test_pipeline_throughput_is_measured(tokenizer):
    assert pipeline_throughput("s1", seq_len=128, batch_size=4, seconds=0.5, warmup_batches=1) > 1_000
