"""Fingerprints of the results of every shipped study, at a reduced size.

A fingerprint is the content hash (:func:`vtrial.run.io.table_hash`: column names, types
and values, not file bytes) of every table a study writes: the population, the
patients, time courses, observations and dose ledger of its single shard, and every
summary table. ``tests/data/fingerprints.json`` holds the fingerprints recorded
before a refactoring; :mod:`tests.test_fingerprints` recomputes them and requires
them bit-identical, so a change of layout or of internal interfaces cannot change a
single number a user sees.

Record anew (only when a change of results is intended and explained in its commit)::

    python -m tests.fingerprint --write
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "tests" / "data" / "fingerprints.json"

#: study name -> study file (relative to the repository root)
STUDY_FILES = {
    "default": "config/config.yaml",
    "antidiabetic_titration": "config/studies/antidiabetic_titration.yaml",
    "cytotoxic_q3w_rules": "config/studies/cytotoxic_q3w_rules.yaml",
    "dose_ranging_pos": "config/studies/dose_ranging_pos.yaml",
    "million": "config/studies/million.yaml",
    "vancomycin_tdm": "config/studies/vancomycin_tdm.yaml",
}


def _reduce(data: dict[str, Any]) -> dict[str, Any]:
    """The study at a reduced size: 60 patients per replicate (a dataset's subjects
    as they are), at most 3 replicates, one shard in chunks of 16 (so chunking is
    exercised)."""
    d = copy.deepcopy(data)
    if "dataset" not in d["population"]:  # a dataset's patients are its subjects
        d["population"]["size"] = 60
    d["study"]["replicates"] = min(int(d["study"].get("replicates", 1)), 3)
    d["execution"] = {"shards": 1, "workers": 1, "chunk_size": 16}
    return d


def _twin_observed(data: dict[str, Any]) -> dict[str, Any]:
    """The default study as a twin crossover with sampled observations and residual
    error (paths the shipped studies do not all take)."""
    d = _reduce(data)
    d["study"]["design"] = "twin_crossover"
    d["population"]["size"] = 20
    d["model"]["residual_error"] = {"CP": {"proportional": 0.15, "additive": 0.05, "lloq": 0.5}}
    d["outputs"]["observations"] = {"outputs": ["CP"], "times": [1.0, 4.0, 24.0, 168.0, 500.0]}
    return d


#: variant name -> (study file, transformation of its data)
VARIANTS: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    **{name: (path, _reduce) for name, path in STUDY_FILES.items()},
    "default_twin_observed": (STUDY_FILES["default"], _twin_observed),
}


def compute(variant: str, workdir: Path) -> dict[str, str]:
    """Run one variant in-process (stages of the workflow, Dask replaced by a serial
    stand-in) in ``workdir``; return table name -> content hash."""
    from tests.conftest import sync_client
    from vtrial.analysis.design import summary_tables
    from vtrial.analysis.success import table_names
    from vtrial.run import stages as pipeline
    from vtrial.run.io import table_hash
    from vtrial.study.config import load_study

    path, transform = VARIANTS[variant]
    data = transform(yaml.safe_load((ROOT / path).read_text()))
    study_file = workdir / f"{variant}.yaml"
    study_file.write_text(yaml.safe_dump(data, sort_keys=False))
    # a study's relative paths (model files, tables, datasets) resolve against its own
    # folder: copy its tables, those of subfolders (data/) too
    folder = (ROOT / path).parent
    for src in sorted(folder.rglob("*")):
        dest = workdir / src.relative_to(folder)
        if src.is_file() and src.suffix in (".csv", ".parquet") and not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(src.read_bytes())
    study = load_study(study_file)
    out = workdir / "results"
    population = out / "population.parquet"
    summary_dir = out / "summary"
    saved = pipeline.dask_client, pipeline.in_completion_order
    pipeline.dask_client, pipeline.in_completion_order = sync_client, enumerate  # type: ignore[assignment]
    try:
        pipeline.run_sample_population(
            study, population, summary=summary_dir / "population.parquet"
        )
        parts = {
            "patients": out / "patients.parquet",
            "timecourse": out / "timecourse.parquet",
            "bands_part": out / "bands.parquet",
        }
        extra: dict[str, Path] = {}
        if study.observations.outputs:
            extra["out_observations"] = out / "observations.parquet"
        if study.has_dose_ledger:
            extra["out_doses"] = out / "doses.parquet"
        pipeline.run_simulate(
            study,
            population,
            0,
            parts["patients"],
            parts["timecourse"],
            parts["bands_part"],
            threads=1,
            **extra,  # type: ignore[arg-type]
        )
        names = [*pipeline.SUMMARY_TABLES, *summary_tables(study), *table_names(study.success)]
        pipeline.run_aggregate(
            study,
            [parts["patients"]],
            [parts["bands_part"]],
            {name: summary_dir / f"{name}.parquet" for name in names},
            population=population,
        )
    finally:
        pipeline.dask_client, pipeline.in_completion_order = saved  # type: ignore[assignment]
    files = {"population": population, **parts}
    files.update({k.removeprefix("out_"): v for k, v in extra.items()})
    files.update({f"summary/{p.stem}": p for p in sorted(summary_dir.glob("*.parquet"))})
    return {name: table_hash(pd.read_parquet(p)) for name, p in sorted(files.items())}


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {RECORD}")
    parser.add_argument("variants", nargs="*", default=list(VARIANTS))
    args = parser.parse_args(argv)
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    differ = 0
    for variant in args.variants:
        with tempfile.TemporaryDirectory() as tmp:
            got = compute(variant, Path(tmp))
        same = record.get(variant) == got
        differ += not same
        print(f"{variant}: {len(got)} tables, {'same as' if same else 'DIFFERENT from'} the record")
        record[variant] = got
    if args.write:
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return 1 if differ and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
