"""Parquet code maps: exact round trip, metadata checks, resumable writing, size per image."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from drr.codes.store import CodeMap, CodeMapWriter, CodesDataset, count_rows, open_code_map
from drr.core.errors import DrrError


def meta(n, shape=(8, 8, 4), K=16384, sha="a" * 64):
    return {"code_shape": list(shape), "codebook_size": K, "tokenizer": "t", "tokenizer_sha256": sha,
            "dataset": "d", "split": "train", "num_rows": n}


def build(folder, n=1000, shape=(8, 8, 4), K=16384, rows_per_shard=300, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, K, size=(n, *shape))
    labels = rng.integers(0, 1000, size=n)
    w = CodeMapWriter(folder, meta(n, shape, K), rows_per_shard)
    for s in range(0, n, 128):
        w.write(np.arange(s, min(n, s + 128)), codes[s:s + 128], labels[s:s + 128])
    w.finish()
    return codes, labels


def test_round_trip_is_exact(tmp_path):
    codes, labels = build(tmp_path / "m")
    cm = open_code_map(tmp_path / "m")
    assert cm.codes.dtype == np.int16 and cm.codes.shape == codes.shape
    np.testing.assert_array_equal(cm.codes, codes)
    np.testing.assert_array_equal(cm.labels, labels)
    np.testing.assert_array_equal(cm.index, np.arange(len(codes)))
    assert len(list((tmp_path / "m").glob("part-*.parquet"))) == 4  # 300+300+300+100
    ds = CodesDataset(cm)
    b = ds.batch([5, 2, 999])
    np.testing.assert_array_equal(b["codes"].numpy(), codes[[5, 2, 999]])
    assert ds[7]["codes"].shape == (8, 8, 4)


def test_rows_are_counted_from_the_footers(tmp_path):
    build(tmp_path / "m", n=700)
    assert count_rows(tmp_path / "m") == 700
    (tmp_path / "m" / "_SUCCESS").unlink()
    with pytest.raises(DrrError, match="not a finished code map"):
        count_rows(tmp_path / "m")


def test_file_metadata(tmp_path):
    build(tmp_path / "m")
    m = json.loads(pq.read_schema(tmp_path / "m" / "part-00000.parquet").metadata[b"drr"])
    assert m["code_shape"] == [8, 8, 4] and m["tokenizer_sha256"] == "a" * 64


def test_mismatch_is_refused(tmp_path):
    build(tmp_path / "m")
    cm = CodeMap(tmp_path / "m")
    with pytest.raises(DrrError, match="tokenizer_sha256"):
        cm.check(tokenizer_sha256="b" * 64)
    with pytest.raises(DrrError, match="code_shape"):
        cm.check(code_shape=[16, 16, 1])
    with pytest.raises(DrrError, match="codebook_size"):
        cm.check(codebook_size=1024)
    cm.check(tokenizer_sha256="a" * 64, code_shape=[8, 8, 4], codebook_size=16384)


def test_unfinished_map_is_not_read(tmp_path):
    w = CodeMapWriter(tmp_path / "m", meta(10), 4)
    w.write(np.arange(10), np.zeros((10, 8, 8, 4), int))
    assert not (tmp_path / "m").exists()  # only m.partial/ until finish()
    with pytest.raises(DrrError, match="not a finished code map"):
        CodeMap(tmp_path / "m.partial")


def test_resume_skips_finished_shards(tmp_path):
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 500, size=(10, 8, 8, 4))
    w = CodeMapWriter(tmp_path / "m", meta(10, K=500), 4)
    w.write(np.arange(6), codes[:6])  # one shard of 4 written, 2 rows buffered, then "killed"
    del w
    w = CodeMapWriter(tmp_path / "m", meta(10, K=500), 4)
    done = w.completed_rows()
    assert done == 4
    w.write(np.arange(done, 10), codes[done:])
    w.finish()
    np.testing.assert_array_equal(CodeMap(tmp_path / "m").codes, codes)


def test_shards_disagreeing_on_metadata_are_refused(tmp_path):
    build(tmp_path / "a", n=10, rows_per_shard=10)
    build(tmp_path / "b", n=10, rows_per_shard=10, K=1024)
    (tmp_path / "b" / "part-00000.parquet").rename(tmp_path / "a" / "part-00001.parquet")
    with pytest.raises(DrrError, match="part-00001.parquet: metadata 'codebook_size'"):
        CodeMap(tmp_path / "a")


def test_bytes_per_image_under_target(tmp_path):
    """Issue target: <= 600 bytes per image on disk for 8x8x4 codes with K = 16384."""
    n = 20000
    build(tmp_path / "m", n=n, rows_per_shard=n)
    size = sum(p.stat().st_size for p in (tmp_path / "m").glob("part-*.parquet"))
    assert size / n <= 600, size / n
