"""Twins of a synthetic cohort: how long the twins stage takes for N subjects.

The cohort is the vancomycin example's scenario
(``config/studies/data/make_tdm_dataset.py``) drawn for ``--subjects`` patients (the same
script, its subject count and its numbers of kidney injuries and missed doses scaled,
levels below the LLOQ kept), with the example study's model, as a study with
``outputs.twins``. The script times, on this machine:

- ``in process``: :func:`vtrial.run.twin_stage.estimate_twins`, one process;
- ``dask``: the same on a local Dask cluster of ``--workers`` processes (its start
  included);
- ``workflow``: ``snakemake --cores C`` on the twins target only
  (``summary/twins.parquet``: ``--shards`` twins jobs and their summary), each job with
  ``C / shards`` workers,

and checks that the three tables are bit-identical. Not part of ``make bench``::

    .venv/bin/python benchmarks/twins_cohort.py --subjects 1000 --keep /tmp/twins1000
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "studies" / "vancomycin_tdm.yaml"
GENERATOR = ROOT / "config" / "studies" / "data" / "make_tdm_dataset.py"


def write_cohort(folder: Path, n: int, shards: int, workers: int) -> Path:
    """The dataset of ``n`` subjects and its twins study in ``folder``; the study file."""
    spec = importlib.util.spec_from_file_location("make_tdm_dataset", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gen  # its dataclass needs it
    spec.loader.exec_module(gen)
    gen.N_SUBJECTS = n
    gen.N_AKI = max(1, n * 6 // 40)
    gen.N_MISSED = max(1, n * 6 // 40)
    # the script refuses a level below the assay's LLOQ (none among the shipped 40);
    # a larger cohort has a few: they stay quantified values (the combined error's
    # additive part gives them a likelihood)
    gen.LLOQ = -float("inf")
    (folder / "cohort.csv").write_text(gen.make_dataset())
    d = yaml.safe_load(EXAMPLE.read_text())
    d["study"]["name"] = f"twins-{n}"
    d["study"]["replicates"] = 1
    d["population"]["dataset"]["path"] = "cohort.csv"
    d["outputs"]["twins"] = {"method": "map"}
    d["execution"] = {"shards": shards, "workers": workers, "chunk_size": 2000}
    study = folder / "study.yaml"
    study.write_text(yaml.safe_dump(d, sort_keys=False))
    return study


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2, help="workers of the Dask timing")
    p.add_argument("--cores", type=int, default=2, help="snakemake --cores")
    p.add_argument("--shards", type=int, default=2, help="twins jobs of the workflow")
    p.add_argument("--keep", type=Path, help="folder to keep (a temporary one otherwise)")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)

    from vtrial.run.io import table_hash
    from vtrial.run.stages import setup_logging
    from vtrial.run.twin_stage import estimate_twins
    from vtrial.study.config import load_study

    setup_logging()
    with tempfile.TemporaryDirectory(prefix="vtrial-twins-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        per_job = max(1, args.cores // args.shards)
        study_file = write_cohort(folder, args.subjects, args.shards, per_job)
        study = load_study(study_file)
        out: dict[str, Any] = {"subjects": args.subjects}
        t0 = time.perf_counter()
        serial = estimate_twins(study)
        out["in_process_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        dask = estimate_twins(study, threads=args.workers)
        out["dask_s"] = time.perf_counter() - t0
        out["dask_workers"] = args.workers
        target = f"results/{study.name}/summary/twins.parquet"
        cmd = [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(ROOT / "Snakefile"),
            "--directory",
            str(folder),
            "--cores",
            str(args.cores),
            target,
            "--config",
            f"study={study_file}",
        ]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        out["workflow_s"] = time.perf_counter() - t0
        out["workflow"] = {"cores": args.cores, "shards": args.shards, "workers_per_job": per_job}
        parts = sorted((folder / "results" / study.name / "twins").glob("part-*.parquet"))
        flow = pd.concat([pd.read_parquet(x) for x in parts], ignore_index=True)
        hashes = {table_hash(t) for t in (serial, dask, flow)}
        out["identical"] = len(hashes) == 1
        out["ok"] = int((serial["status"] == "ok").sum())
        out["n_eval_median"] = float(serial["n_eval"].median())
        summary = pd.read_parquet(folder / "results" / study.name / "summary" / "twins.parquet")
        out["shrinkage"] = dict(zip(summary["parameter"], summary["shrinkage"], strict=True))
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if out["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
