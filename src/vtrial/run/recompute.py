"""Recompute shards of a finished study and compare them with its results.

``vtrial verify RESULTS --recompute [--shards K | --all]`` rebuilds the study from the
study file recorded in ``manifest.json`` with the recorded ``execution`` settings
(checked against the recorded sha256, which covers the model files), samples the
population again and simulates ``K`` shards chosen at random (or all of them), with
``outputs.twins`` also estimating their subjects' twins, into a temporary folder, on a
local Dask cluster, then compares the content of every recomputed table with the
manifest and with the file in the results folder. Any difference is named: the file,
and the first differing column and row. With ``population.dataset.parameters: twins``
the population is sampled from the results' own twins parts (which ``vtrial verify``
checks against the manifest), so recomputing some shards does not re-estimate every
twin; the chosen shards' twins are re-estimated and compared.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vtrial.errors import ConfigError, VerificationError
from vtrial.infra.yamlsafe import load_yaml
from vtrial.run.io import table_hash
from vtrial.run.stages import needs_twins, run_sample_population, run_simulate, shard_name
from vtrial.run.twin_stage import run_twins
from vtrial.study.config import Study, deep_merge, study_from_dict

log = logging.getLogger("vtrial")

#: per-shard tables, in the order they are compared
SHARD_TABLES = ("patients", "timecourse", "bands", "observations", "doses")


def _base_dirs(root: Path, manifest: Mapping[str, Any]) -> list[Path]:
    """Folders the study's relative paths (model files) may be relative to."""
    source = Path(str(manifest.get("source", "")))
    out = []
    if manifest.get("base_dir"):
        out.append(Path(manifest["base_dir"]))
    if source.is_absolute():
        out.append(source.parent)
    # results/<study> lives in the folder Snakemake ran in, by default
    out += [root.resolve().parent.parent / source.parent, Path.cwd() / source.parent]
    return list(dict.fromkeys(out))


def recorded_study(results: str | Path) -> Study:
    """The study recorded in ``results/manifest.json``, as it was run.

    Raises
    ------
    VerificationError
        If the recorded configuration does not give the recorded sha256 (a model file
        or another input file changed since the run, or cannot be found).
    """
    root = Path(results)
    manifest = json.loads((root / "manifest.json").read_text())
    source = str(manifest.get("source", "<manifest>"))
    if manifest.get("study_file") is not None:
        # the file as written, with the execution settings of the run (command-line
        # overrides included)
        execution = {"execution": manifest["config"]["execution"]}
        data = deep_merge(load_yaml(manifest["study_file"]), execution)
    else:
        data = manifest["config"]
    tried = []
    for base in _base_dirs(root, manifest):
        try:
            study = study_from_dict(data, source=source, base_dir=base)
            sha = study.sha256
        except (ConfigError, OSError) as exc:
            tried.append(f"{base}: {str(exc).splitlines()[-1].strip()}")
            continue
        if sha == manifest["study_sha256"]:
            return study
        tried.append(f"{base}: study sha256 {sha[:12]}")
    raise VerificationError(
        f"{root / 'manifest.json'}: cannot rebuild the recorded study (sha256 "
        f"{manifest['study_sha256'][:12]}); its model or input files changed or moved. "
        f"Tried: {'; '.join(tried)}"
    )


def _plain(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def first_difference(stored: pd.DataFrame, recomputed: pd.DataFrame) -> str:
    """The first difference between a stored table and its recomputation, in words.

    Empty if the tables are equal (values, types, columns and order; NaN equals NaN).
    """
    expected, got = recomputed, stored
    if list(expected.columns) != list(got.columns):
        return f"columns {list(got.columns)}, recomputed {list(expected.columns)}"
    if len(expected) != len(got):
        return f"{len(got)} rows, recomputed {len(expected)}"
    for col in expected.columns:
        a, b = expected[col], got[col]
        if str(a.dtype) != str(b.dtype):
            return f"column {col}: type {b.dtype}, recomputed {a.dtype}"
        eq = (a == b) | (a.isna() & b.isna())
        same = eq.fillna(False).to_numpy(dtype=bool)
        if not same.all():
            i = int(np.flatnonzero(~same)[0])
            return f"column {col}, row {i}: {_plain(b.iloc[i])!r}, recomputed {_plain(a.iloc[i])!r}"
    return ""


def choose_shards(n_shards: int, k: int | None, *, seed: int | None = None) -> list[int]:
    """``k`` shards of ``n_shards`` chosen at random (all if ``k`` is None), sorted."""
    if k is None or k >= n_shards:
        return list(range(n_shards))
    if k < 1:
        raise ValueError(f"--shards: must be >= 1, got {k}")
    return sorted(random.Random(seed).sample(range(n_shards), k))


def recompute(
    results: str | Path,
    *,
    shards: Sequence[int] | None = None,
    workers: int = 1,
    workdir: str | Path | None = None,
) -> list[str]:
    """Recompute the population and ``shards`` of a results folder; list differences.

    Parameters
    ----------
    results : str or Path
        A results folder (``results/<study>``) with its ``manifest.json``.
    shards : sequence of int, optional
        Shards to recompute (all if None).
    workers : int
        Single-threaded worker processes of the local Dask cluster.
    workdir : str or Path, optional
        Folder for the recomputed files (a temporary folder, removed afterwards, if None).

    Returns
    -------
    list of str
        One line per difference, naming the file (empty if everything matches).
    """
    root = Path(results)
    manifest = json.loads((root / "manifest.json").read_text())
    listed = {e["path"]: e for e in manifest["outputs"]}
    study = recorded_study(root)
    n_shards = int(study.execution["shards"])
    chosen = list(range(n_shards)) if shards is None else sorted(set(shards))
    bad = [s for s in chosen if not 0 <= s < n_shards]
    if bad:
        raise ValueError(f"shards {bad}: the study has shards 0 to {n_shards - 1}")
    # same results on any resources: a local cluster, whatever the run used
    ex = {
        k: v
        for k, v in study.execution.items()
        if k not in ("cluster", "memory_limit", "scheduler_address")
    }
    local = dataclasses.replace(study, data={**study.data, "execution": {**ex, "workers": workers}})
    with tempfile.TemporaryDirectory(prefix="vtrial-recompute-") as tmp:
        out = Path(workdir) if workdir is not None else Path(tmp)
        files = {"population.parquet": out / "population.parquet"}
        # parameters: twins: the population from the stored twins of every shard (checked
        # against the manifest by verify; the chosen shards' twins are re-estimated below)
        twin_parts = (
            [root / "twins" / f"{shard_name(s)}.parquet" for s in range(n_shards)]
            if needs_twins(study)
            else None
        )
        run_sample_population(local, files["population.parquet"], twins=twin_parts)
        for s in chosen:
            name = shard_name(s)
            paths = {t: out / t / f"{name}.parquet" for t in SHARD_TABLES}
            run_simulate(
                local,
                files["population.parquet"],
                s,
                paths["patients"],
                paths["timecourse"],
                paths["bands"],
                threads=workers,
                out_observations=paths["observations"] if study.observations.outputs else None,
                out_doses=paths["doses"] if study.has_dose_ledger else None,
            )
            files.update({f"{t}/{name}.parquet": p for t, p in paths.items() if p.exists()})
            if study.twins is not None:  # the shard's twins (vtrial.run.twin_stage)
                twins = out / "twins" / f"{name}.parquet"
                run_twins(local, s, twins, threads=workers)
                files[f"twins/{name}.parquet"] = twins
        return _compare(root, listed, files)


def _compare(root: Path, listed: Mapping[str, Any], files: Mapping[str, Path]) -> list[str]:
    problems = []
    for rel, path in files.items():
        new = pd.read_parquet(path)
        target = root / rel
        entry = listed.get(rel)
        if entry is None:
            problems.append(f"{target}: recomputed, but not listed in the manifest")
        elif table_hash(new) != entry["content_sha256"]:
            problems.append(f"{target}: recomputed content differs from the manifest")
        try:
            old = pd.read_parquet(target)
        except (OSError, ValueError) as exc:
            problems.append(f"{target}: cannot compare with the recomputation ({exc})")
            continue
        if diff := first_difference(old, new):
            problems.append(f"{target}: differs from its recomputation: {diff}")
        log.info("%s: compared with its recomputation", target)
    return problems
