"""Every source kind round-trips a fixture written in the test; paths fail early and clearly."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds

from qwen3jax.data.records import parse_document
from qwen3jax.data.sources import HoldoutView, expand_paths, open_source

RECORDS = [
    {"text": f"document {i}: héllo ✓ {'x' * i}", "domain": ["code", "prose"][i % 2], "score": i} for i in range(7)
]


def read_all(source):
    return [parse_document(source[i], text_key="text", max_chars=10_000) for i in range(len(source))]


def test_jsonl_plain_and_gzip(write_jsonl):
    plain = write_jsonl("a.jsonl", RECORDS)
    zipped = write_jsonl("b.jsonl.gz", RECORDS, gzipped=True)
    for path in (plain, zipped):
        source = open_source("jsonl", path)
        assert read_all(source) == RECORDS
    assert open_source("jsonl", plain)[3].where == f"{plain}:4"


def test_jsonl_blank_lines_are_skipped_and_line_numbers_kept(write_jsonl):
    path = write_jsonl("c.jsonl", [RECORDS[0], "", "   ", RECORDS[1], "\r", " \t" * 20, "  " + json.dumps(RECORDS[2])])
    source = open_source("jsonl", path)
    assert len(source) == 3
    assert [source[i].where for i in range(3)] == [f"{path}:1", f"{path}:4", f"{path}:7"]
    assert read_all(source) == RECORDS[:3]
    assert len(open_source("jsonl", write_jsonl("empty.jsonl", [""]))) == 0


def test_jsonl_byte_order_mark_is_not_part_of_the_first_record(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join(json.dumps(r).encode() for r in RECORDS[:2]) + b"\n")
    assert read_all(open_source("jsonl", str(path))) == RECORDS[:2]


def test_glob_concatenates_sorted_files(write_jsonl, tmp_path):
    write_jsonl("part-1.jsonl", RECORDS[3:])
    write_jsonl("part-0.jsonl", RECORDS[:3])
    source = open_source("jsonl", str(tmp_path / "part-*.jsonl"))
    assert read_all(source) == RECORDS
    assert source[3].where.endswith("part-1.jsonl:1")
    assert read_all(open_source("jsonl", [str(tmp_path / "part-0.jsonl"), str(tmp_path / "part-1.jsonl")])) == RECORDS


def test_arrayrecord(write_arrayrecord):
    path = write_arrayrecord("d.array_record", RECORDS)
    source = open_source("arrayrecord", path)
    assert read_all(source) == RECORDS and source[2].where == f"{path}#2"


def test_parquet(tmp_path):
    path = tmp_path / "e.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), path, row_group_size=3)
    source = open_source("parquet", str(path))
    assert read_all(source) == RECORDS and source[4].where == f"{path}#row4"


class _TinyTfds(tfds.core.GeneratorBasedBuilder):
    # TFDS looks for a builder's checksum files next to its module; for a dotted (package) module name that lookup
    # needs `importlib_resources`, which TFDS does not install. A top-level module name skips it.
    __module__ = "tiny_tfds_fixture"
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "domain": tfds.features.Text(), "score": tfds.features.Scalar(np.int64)}
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(RECORDS), "test": self._generate_examples(RECORDS[:2])}

    def _generate_examples(self, records):
        yield from enumerate(records)


def test_tfds_directory(tmp_path):
    builder = _TinyTfds(data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=False))
    source = open_source("tfds", str(builder.data_dir), split="train")
    # TFDS shuffles examples when writing; compare as sets, in the canonical JSON form.
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert sorted(map(key, read_all(source))) == sorted(map(key, RECORDS))
    assert len(open_source("tfds", str(builder.data_dir), split="test")) == 2
    with pytest.raises(ValueError, match="no split 'validation'"):
        open_source("tfds", str(builder.data_dir), split="validation")
    with pytest.raises(FileNotFoundError, match="dataset_info.json"):
        open_source("tfds", str(tmp_path), split="train")


def test_missing_and_unreadable_inputs_fail_immediately_with_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        open_source("jsonl", str(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"no files match .*\*.jsonl"):
        open_source("jsonl", str(tmp_path / "*.jsonl"))
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        open_source("parquet", str(tmp_path))
    not_gzip = tmp_path / "broken.jsonl.gz"
    not_gzip.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(ValueError, match="broken.jsonl.gz is not a valid gzip file"):
        open_source("jsonl", str(not_gzip))
    not_arrayrecord = tmp_path / "x.array_record"
    not_arrayrecord.write_bytes(b"not an array record file")
    with pytest.raises(ValueError, match="x.array_record"):
        open_source("arrayrecord", str(not_arrayrecord))
    with pytest.raises(ValueError, match="unknown source kind"):
        open_source("csv", str(not_arrayrecord))
    with pytest.raises(FileNotFoundError, match="TFDS dataset directory not found"):
        open_source("tfds", str(tmp_path / "missing" / "dir"))
    with pytest.raises(ValueError, match="no input path"):
        expand_paths([])


@pytest.mark.parametrize("every", [2, 3, 5])
def test_holdout_view_is_disjoint_and_complete(write_jsonl, every):
    records = [{"text": f"doc {i}"} for i in range(23)]
    source = open_source("jsonl", write_jsonl("h.jsonl", records))
    train, held_out = HoldoutView(source, every, "train"), HoldoutView(source, every, "eval")
    texts = lambda view: [parse_document(view[i], text_key="text", max_chars=99)["text"] for i in range(len(view))]  # noqa: E731
    assert len(held_out) == 23 // every
    assert sorted(texts(train) + texts(held_out), key=lambda t: int(t.split()[1])) == [r["text"] for r in records]
    assert texts(held_out) == [f"doc {i}" for i in range(every - 1, 23, every)]
    with pytest.raises(IndexError):
        train[len(train)]


def test_gzip_detected_by_content_not_name(tmp_path):
    path = tmp_path / "no_suffix.jsonl"
    path.write_bytes(gzip.compress(b'{"text": "zipped"}\n'))
    assert read_all(open_source("jsonl", str(path))) == [{"text": "zipped"}]
