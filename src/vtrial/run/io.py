"""Reading and writing result files: atomic Parquet with provenance, content hashes.

Every Parquet file vtrial writes carries provenance in its footer metadata (key
``vtrial``: vtrial version and git revision, study sha256, seed, shard, package
versions) and is written atomically: to a hidden temporary name in the target folder,
flushed and fsynced, then renamed with :func:`os.replace`. A reader therefore sees
either the previous complete file or the new complete file, never a partial one,
and writing the same content twice leaves one file. A temporary file left behind by a
writer that was killed is removed by the next write of the same path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vtrial.errors import DataError

PROVENANCE_KEY = b"vtrial"
_PACKAGES = ("vtrial", "numpy", "scipy", "pandas", "pyarrow", "numba", "dask", "distributed")


@cache
def package_versions() -> dict[str, str]:
    """Installed versions of the packages that determine vtrial's numbers."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@cache
def git_revision() -> str:
    """Git revision of the vtrial source tree (``unknown`` outside a checkout).

    A ``-dirty`` suffix marks uncommitted changes to tracked files.
    """
    here = Path(__file__).resolve().parents[1]  # the vtrial package folder
    try:
        rev = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}-dirty" if dirty else rev


def provenance(**extra: Any) -> dict[str, Any]:
    """Provenance record: versions, git revision, host, plus ``extra`` fields."""
    versions = package_versions()
    return {
        "vtrial_version": versions["vtrial"],
        "git_revision": git_revision(),
        "packages": versions,
        "python": platform.python_version(),
        **extra,
    }


def _read_umask() -> int:
    # os.umask can only be read by setting it; do it once, at import (single-threaded)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def stale_temporaries(path: str | Path) -> list[Path]:
    """Temporary files of :func:`atomic_path` for ``path`` that are still there.

    Only a writer killed between creating and renaming its temporary file (SIGKILL,
    node failure) leaves one; :func:`atomic_path` removes them before writing.
    """
    final = Path(path)
    pattern = re.compile(rf"\.{re.escape(final.name)}\.[a-z0-9_]{{8}}\.tmp")
    if not final.parent.is_dir():
        return []
    return sorted(p for p in final.parent.iterdir() if pattern.fullmatch(p.name))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync and rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    Temporary files of an earlier, killed writer of ``path`` are removed first (a
    path has one writer at a time: Snakemake gives every output file one job).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_temporaries(final):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give results the usual permissions (umask applies)
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, final)
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet(
    df: pd.DataFrame,
    path: str | Path,
    *,
    meta: Mapping[str, Any],
    row_group_size: int | None = None,
    schema: pa.Schema | None = None,
) -> None:
    """Write ``df`` atomically as Parquet with ``meta`` in the footer (key ``vtrial``).

    ``schema`` fixes the Arrow types (e.g. of an empty table, whose object columns
    would otherwise have no type); by default they are inferred from ``df``.
    """
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    existing = table.schema.metadata or {}
    table = table.replace_schema_metadata(
        {**existing, PROVENANCE_KEY: json.dumps(dict(meta), sort_keys=True, default=str).encode()}
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)


def write_text(text: str, path: str | Path) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_provenance(path: str | Path) -> dict[str, Any]:
    """The ``vtrial`` footer metadata of a Parquet file written by :func:`write_parquet`."""
    md = pq.read_schema(path).metadata or {}
    if PROVENANCE_KEY not in md:
        raise DataError(f"{path}: no vtrial provenance in the Parquet footer")
    return dict(json.loads(md[PROVENANCE_KEY]))


def read_rows(path: str | Path, start: int, stop: int) -> pd.DataFrame:
    """Rows ``[start, stop)`` of a Parquet file, reading only the row groups needed."""
    pf = pq.ParquetFile(path)
    groups, first = [], None
    offset = 0
    for rg in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        if offset < stop and offset + n > start:
            groups.append(rg)
            if first is None:
                first = offset
        offset += n
    if not groups or first is None:
        return pf.schema_arrow.empty_table().to_pandas()
    table = pf.read_row_groups(groups)
    return table.slice(start - first, stop - start).to_pandas()


def read_parts(paths: Sequence[str | Path], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Concatenate part files in the given order."""
    frames = [pd.read_parquet(p, columns=list(columns) if columns else None) for p in paths]
    if not frames:
        raise DataError("no part files to read")
    return pd.concat(frames, ignore_index=True)


def table_hash(df: pd.DataFrame) -> str:
    """SHA-256 of a table's content (column names, types and values), not of file bytes.

    Two files with the same rows in the same order hash the same whatever their
    compression, row-group layout or footer metadata.
    """
    h = hashlib.sha256()
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata(None)
    h.update(str(table.schema).encode())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.combine_chunks().to_batches(max_chunksize=1 << 30):
            writer.write_batch(batch)
    h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()
