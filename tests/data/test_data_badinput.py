"""Bad input: every case is counted by reason; runs continue below the limit and stop above it, naming lines."""

from __future__ import annotations

import json

import pytest

from qwen3jax.data.badinput import BadInputError, BadInputTracker, BadRecord, format_report
from qwen3jax.data.pipeline import build_component_rows, build_pretrain_iterator
from qwen3jax.data.records import RawRecord, parse_document

CASES = {
    "malformed_json": b'{"text": "unterminated',
    "not_an_object": b'["text", "in a list"]',
    "missing_text": b'{"body": "the text is under another key"}',
    "invalid_utf8": b'{"text": "caf\xe9"}',
    "empty_document": b'{"text": "  \\n\\t "}',
    "too_long": json.dumps({"text": "x" * 101}).encode(),
}


@pytest.mark.parametrize("reason", sorted(CASES))
def test_parse_document_rejects_each_case(reason):
    with pytest.raises(BadRecord) as info:
        parse_document(RawRecord(CASES[reason], "f.jsonl:1"), text_key="text", max_chars=100)
    assert info.value.reason == reason


def test_parse_document_other_bad_shapes():
    for payload in (b'{"text": 42}', {"text": None}, b'{"text": ["a"]}'):
        with pytest.raises(BadRecord, match="missing_text"):
            parse_document(RawRecord(payload, "x"), text_key="text", max_chars=100)
    with pytest.raises(BadRecord, match="invalid_utf8"):  # A JSON escape of a lone surrogate is not text.
        parse_document(RawRecord(b'{"text": "a\\ud800b"}', "x"), text_key="text", max_chars=100)
    with pytest.raises(BadRecord, match="invalid_utf8"):  # Bytes fields (TFDS) are decoded strictly too.
        parse_document(RawRecord({"text": b"\xff\xfe"}, "x"), text_key="text", max_chars=100)
    good = parse_document(RawRecord({"body": b"ok", "n": 3, "text": "a title"}, "x"), text_key="body", max_chars=100)
    assert good == {"body": "ok", "n": 3, "text": "a title"}  # a label called "text" is a label like any other


def test_tracker_limits():
    tracker = BadInputTracker("src", max_bad_fraction=0.25, min_records=8)
    for _ in range(5):
        tracker.good()
    tracker.bad(BadRecord("missing_text"), "f:6")
    tracker.bad(BadRecord("missing_text"), "f:7")  # 2/7 > 25%, but fewer than min_records seen: no stop yet.
    with pytest.raises(BadInputError, match=r"(?s)source 'src': 3 of 8 records.*f:6: missing_text.*f:8"):
        tracker.bad(BadRecord("malformed_json"), "f:8")
    assert tracker.summary()["bad"] == {"malformed_json": 1, "missing_text": 2}
    small = BadInputTracker("tiny", max_bad_fraction=0.1, min_records=100)
    small.good()
    small.bad(BadRecord("empty_document"), "g:2")
    small.check()
    with pytest.raises(BadInputError, match="tiny"):
        small.check(final=True)
    assert "empty_document=1" in format_report({"tiny": small.summary()})
    with pytest.raises(ValueError, match="unknown bad-record reason"):
        BadRecord("weird")


def _mixed_file(write_jsonl, good: int):
    lines = [{"text": f"good document number {i}"} for i in range(good)] + list(CASES.values())
    return write_jsonl("mixed.jsonl", lines)


def test_run_continues_and_counts_every_reason(write_jsonl, tokenizer):
    path = _mixed_file(write_jsonl, good=94)
    cfg = {
        "sources": {"web": {"kind": "jsonl", "path": path}},
        "max_doc_chars": 100,
        "max_bad_fraction": 0.1,
        "min_records_for_bad_check": 10,
    }
    rows = build_component_rows(
        cfg, "web", split="train", seq_len=64, process_index=0, process_count=1, tokenizer=tokenizer
    )
    assert sum(1 for _ in rows) > 0
    report = rows.report()["bad_input"]["web"]
    assert report["records"] == 100
    assert report["bad"] == dict.fromkeys(sorted(CASES), 1)
    expected = {f"{path}:{95 + i}: {reason}" for i, reason in enumerate(CASES)}  # Line numbers of the bad cases.
    assert len(report["first_offenders"]) == 5
    assert all(any(o.startswith(e) for e in expected) for o in report["first_offenders"])
    assert rows.metrics()["data/bad/web/invalid_utf8"] == 1


def test_too_many_bad_records_stop_the_run_naming_the_lines(write_jsonl, tokenizer):
    path = _mixed_file(write_jsonl, good=4)
    cfg = {
        "sources": {"web": {"kind": "jsonl", "path": path}},
        "max_doc_chars": 100,
        "max_bad_fraction": 0.2,
        "min_records_for_bad_check": 5,
        "shuffle": False,
    }
    iterator = build_pretrain_iterator(
        cfg, seq_len=32, batch_size=2, seed=0, process_index=0, process_count=1, tokenizer=tokenizer
    )
    # Reader threads parse records concurrently, so which bad lines are met first varies; all are lines 5-10.
    with pytest.raises(BadInputError, match=rf"(?s)source 'web'.*First offenders:\n  {path}:([5-9]|10): "):
        for _ in range(100):
            next(iterator)


def test_a_source_without_any_usable_record_fails_instead_of_hanging(write_jsonl, tokenizer):
    path = write_jsonl("all_bad.jsonl", ["{broken"] * 20)
    cfg = {"sources": {"web": {"kind": "jsonl", "path": path}}, "max_bad_fraction": 1.0}
    iterator = build_pretrain_iterator(
        cfg, seq_len=32, batch_size=2, seed=0, process_index=0, process_count=1, tokenizer=tokenizer
    )
    with pytest.raises(ValueError, match=r"no record of the source gives a document.*'malformed_json': \d{3}"):
        next(iterator)
