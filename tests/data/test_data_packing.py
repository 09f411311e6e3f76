"""Packing invariants for both modes: nothing lost or duplicated, segment ids, positions and loss mask right."""

from __future__ import annotations

import grain
import numpy as np
import pytest

from qwen3jax.data.packing import pack_documents, pad_batch

EOS = 1
SEQ_LEN = 32


def _documents(n: int, seed: int) -> list[np.ndarray]:
    """Documents of varied length (some longer than a row) with unique token values, each ending in EOS."""
    rng = np.random.default_rng(seed)
    docs, next_token = [], 2
    for _ in range(n):
        length = int(rng.choice([1, 3, 10, 31, 32, 33, 50, 100]))
        docs.append(np.append(np.arange(next_token, next_token + length - 1), EOS).astype(np.int32))
        next_token += length - 1
    return docs


def _pack(docs, mode):
    ds = grain.MapDataset.source(docs).map(lambda t: {"tokens": t, "loss_mask": np.ones_like(t)}).to_iter_dataset()
    return list(pack_documents(ds, seq_len=SEQ_LEN, mode=mode, bins=4, seed=0))


def _check_row(row):
    assert set(row) == {"tokens", "segment_ids", "positions", "loss_mask"}
    for value in row.values():
        assert value.dtype == np.int32 and value.shape == (SEQ_LEN,)
    seg, pos = row["segment_ids"], row["positions"]
    real = seg > 0
    n = int(real.sum())
    assert real[:n].all() and not real[n:].any(), "padding only at the end of a row"
    assert (np.diff(seg[:n]) >= 0).all() and set(seg[:n]) == set(range(1, seg.max() + 1)), "segments 1, 2, ..."
    for s in range(1, seg.max() + 1):
        np.testing.assert_array_equal(pos[seg == s], np.arange((seg == s).sum()))
    np.testing.assert_array_equal(row["loss_mask"], real.astype(np.int32))
    assert not row["tokens"][~real].any() and not pos[~real].any()


@pytest.mark.parametrize("mode", ["concat_then_split", "first_fit"])
def test_no_token_lost_or_duplicated(mode, unpack):
    docs = _documents(60, seed=1)
    rows = _pack(docs, mode)
    for row in rows:
        _check_row(row)
    packed = np.concatenate([piece for row in rows for piece in unpack.segments(row)])
    expected = np.concatenate(docs)
    # Token values are unique apart from EOS: the multiset must match exactly.
    np.testing.assert_array_equal(np.sort(packed), np.sort(expected))
    if mode == "concat_then_split":
        np.testing.assert_array_equal(packed, expected)  # Order kept too.
        assert all((row["segment_ids"] > 0).all() for row in rows[:-1]), "only the last row has padding"
        assert unpack.documents_of_rows(rows, EOS) == [d.tolist() for d in docs]


def test_first_fit_keeps_short_documents_whole_and_splits_long_ones(unpack):
    docs = _documents(60, seed=2)
    pieces = [tuple(p.tolist()) for row in _pack(docs, "first_fit") for p in unpack.segments(row)]
    for doc in docs:
        if len(doc) <= SEQ_LEN:
            assert tuple(doc.tolist()) in pieces
        else:  # Consecutive pieces of SEQ_LEN tokens (positions restart in each; checked in _check_row).
            chunks = [tuple(doc[i : i + SEQ_LEN].tolist()) for i in range(0, len(doc), SEQ_LEN)]
            assert all(chunk in pieces for chunk in chunks)


def test_pad_batch_and_errors():
    batch = {k: np.ones((2, 4), np.int32) for k in ("tokens", "segment_ids", "positions", "loss_mask")}
    padded = pad_batch(batch, 3)
    assert all(v.shape == (3, 4) and not v[2].any() and v[:2].all() for v in padded.values())
    with pytest.raises(ValueError, match="more than batch_size"):
        pad_batch(batch, 1)
    with pytest.raises(ValueError, match="unknown packing mode"):
        pack_documents(grain.MapDataset.range(1).to_iter_dataset(), seq_len=8, mode="best", bins=1)
