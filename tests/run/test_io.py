"""Atomic writes, provenance footers, content hashes, shard boundaries."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from vtrial.run.io import atomic_path, read_provenance, read_rows, table_hash, write_parquet
from vtrial.run.stages import shard_rows


def frame(n: int = 100) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"patient_id": np.arange(n), "x": rng.normal(size=n), "arm": ["a"] * n})


def test_write_parquet_roundtrip_with_provenance(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_parquet(frame(), path, meta={"seed": 3, "shard": 1})
    pd.testing.assert_frame_equal(pd.read_parquet(path), frame())
    assert read_provenance(path) == {"seed": 3, "shard": 1}
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_parquet(frame(), path, meta={"v": 1})
    before = path.read_bytes()

    def interrupted_write() -> None:
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        interrupted_write()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_rewrite_replaces_single_file(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    for _ in range(3):
        write_parquet(frame(), path, meta={"v": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_table_hash_is_about_content_not_bytes(tmp_path: Path) -> None:
    df = frame(1000)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    df.to_parquet(a, compression="snappy", row_group_size=100)
    pq.write_table(pq.read_table(a), b, compression="zstd", row_group_size=1000)
    assert a.read_bytes() != b.read_bytes()
    assert table_hash(pd.read_parquet(a)) == table_hash(pd.read_parquet(b))
    changed = df.copy()
    changed.loc[500, "x"] += 1e-12
    assert table_hash(changed) != table_hash(df)


@pytest.mark.parametrize(("n", "k"), [(10, 3), (7, 7), (300, 7), (1, 1), (1000, 9)])
def test_shard_rows_partition(n: int, k: int) -> None:
    ranges = [shard_rows(n, k, s) for s in range(k)]
    assert ranges[0][0] == 0
    assert ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="shard"):
        shard_rows(n, k, k)


@pytest.mark.parametrize(("start", "stop"), [(0, 10), (95, 205), (250, 300), (0, 300), (299, 300)])
def test_read_rows_reads_exact_ranges(tmp_path: Path, start: int, stop: int) -> None:
    path = tmp_path / "t.parquet"
    df = frame(300)
    write_parquet(df, path, meta={}, row_group_size=64)
    assert pq.ParquetFile(path).metadata.num_row_groups == 5
    got = read_rows(path, start, stop)
    pd.testing.assert_frame_equal(got, df.iloc[start:stop].reset_index(drop=True))
