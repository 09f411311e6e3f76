"""The preparation CLI writes packed shards that train back exactly; the benchmark function runs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

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


def test_prepare_never_replaces_an_earlier_run_without_overwrite(write_jsonl, tmp_path, capsys):
    path = write_jsonl("web.jsonl", [{"text": f"record {i}: " + "lorem ipsum " * (i % 7 + 1)} for i in range(60)])
    out = tmp_path / "prepared"
    argv = ["--output", str(out), "--seq_len", "32", "--source", f"web=jsonl:{path}"]
    assert prepare_main([*argv, "--records_per_shard", "5"]) == 0
    first = {p.name: p.read_bytes() for p in (out / "web").iterdir()}
    with pytest.raises(SystemExit) as refused:
        prepare_main([*argv, "--records_per_shard", "1000"])
    assert refused.value.code == 2 and "pass --overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (out / "web").iterdir()} == first
    # --overwrite replaces the run whole: no stale shard of the first run is left for the training glob.
    assert prepare_main([*argv, "--records_per_shard", "1000", "--overwrite"]) == 0
    shards = sorted(p.name for p in (out / "web").glob("train-*.array_record"))
    rows = json.loads((out / "web" / "summary-00000.json").read_text())["train"]["rows"]
    assert shards == ["train-00000-00000.array_record"] and len(open_source("packed", str(out / "web" / shards[0]))) == rows


def test_prepare_removes_the_shards_of_a_split_that_fails(write_jsonl, tmp_path):
    # Enough good records first to fill shards, then mostly bad ones: the bad-input check stops the split late.
    path = write_jsonl("late.jsonl", [{"text": "fine " * 40}] * 200 + ["{broken"] * 400)
    out = tmp_path / "o"
    argv = ["--output", str(out), "--seq_len", "32", "--records_per_shard", "4", "--source", f"late=jsonl:{path}"]
    assert prepare_main(argv) == 1
    assert not list((out / "late").glob("*.array_record"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--records_per_shard", "0"], "--records_per_shard must be >= 1"),
        (["--seq_len", "1"], "--seq_len must be >= 2"),
    ],
)
def test_prepare_rejects_bad_arguments_with_one_line(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as rejected:
        prepare_main(["--output", str(tmp_path), "--seq_len", "32", "--source", "a=jsonl:x.jsonl", *extra])
    assert rejected.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("source", "message"), [("a=jsonl:/nonexistent/*.jsonl", "/nonexistent"), ("a=csv:/tmp/x.csv", "csv")]
)
def test_prepare_reports_a_bad_source_in_one_line(tmp_path, capsys, source, message):
    assert prepare_main(["--output", str(tmp_path / "o"), "--seq_len", "32", "--source", source]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def _web_source(write_jsonl):
    return write_jsonl("web.jsonl", [{"text": f"record {i}: " + "lorem ipsum " * (i % 7 + 1)} for i in range(60)])


def test_a_full_disk_when_a_shard_is_closed_leaves_no_partial_shard_and_does_not_block_the_rerun(
    write_jsonl, tmp_path, capsys, monkeypatch
):
    from qwen3jax.data.writers import RecordWriter

    out = tmp_path / "prepared"
    argv = ["--output", str(out), "--seq_len", "32", "--records_per_shard", "5", "--source",
            f"web=jsonl:{_web_source(write_jsonl)}"]  # fmt: skip
    close, closed = RecordWriter.close, []

    def close_then_fail(writer):  # the data is on disk, but flushing its end fails, as on a full disk
        close(writer)
        closed.append(writer.path)
        if len(closed) == 3:
            raise OSError(28, "No space left on device", str(writer.path))

    monkeypatch.setattr(RecordWriter, "close", close_then_fail)
    assert prepare_main(argv) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "error" in line.lower()] == [
        f"error: [Errno 28] No space left on device: '{closed[2]}'"
    ] and "Traceback" not in err
    assert not list(out.rglob("*.array_record")) and not list(out.rglob("summary-*.json"))
    monkeypatch.setattr(RecordWriter, "close", close)
    assert prepare_main(argv) == 0  # the corrected rerun needs no --overwrite: the failed run left nothing


def test_a_really_full_disk_leaves_no_shard_behind(write_jsonl, tmp_path, capsys, small_disk):
    disk = small_disk(64 * 1024)
    docs = [{"text": f"record {i}: " + " ".join(f"w{i * j}" for j in range(200))} for i in range(400)]
    argv = ["--output", str(disk / "o"), "--seq_len", "64", "--records_per_shard", "50", "--source",
            f"web=jsonl:{write_jsonl('big.jsonl', docs)}"]  # fmt: skip
    assert prepare_main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "No space left on device" in errors[0], err
    assert "Traceback" not in err
    assert not list((disk / "o").rglob("*.array_record")) and not list((disk / "o").rglob("summary-*.json"))


def test_a_failed_component_leaves_no_summary_so_the_fixed_rerun_is_not_refused(write_jsonl, tmp_path, capsys):
    path = write_jsonl("bad.jsonl", ["{broken"] * 30 + [{"text": "fine"}] * 5)
    out = tmp_path / "o"
    argv = ["--output", str(out), "--seq_len", "32", "--source", f"web=jsonl:{path}"]
    assert prepare_main(argv) == 1
    assert not list(out.rglob("*-00000*"))
    with open(path, "w") as f:  # the fix
        f.write("".join(json.dumps({"text": f"fine {i} " * 9}) + "\n" for i in range(40)))
    assert prepare_main(argv) == 0
