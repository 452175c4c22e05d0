"""Time vtrial's dataset reader and the simulation of a dataset as recorded (no peers).

``python benchmarks/dataset_reader.py [--subjects N]`` writes N subjects (default
100,000) of 20 records each (10 oral doses every 12 h whose amounts change from dose to
dose, a sparse sample after each, a weight that changes at every record and with it the
clearance column ``CL = 5 (WT/70)^0.75``) to a temporary CSV, then times
:func:`vtrial.data.dataset.read_dataset` on it and ``vtrial.simulate(pk_2cmt,
data=...)`` on the records (every subject with its own doses, its samples and its
time-varying clearance: 20 occasions each), and the simulation of a tenth of the
subjects, to show that the cost is linear in subjects. It prints seconds, subjects per
second and the process's peak resident set. The dataset is generated here, from a
seed: no real data.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from vtrial import build_model, simulate
from vtrial.data.dataset import read_dataset

PER_SUBJECT = 20


def write_dataset(path: Path, subjects: int, seed: int = 1) -> None:
    """``subjects`` x 20 records: dose, sample, dose, sample, ... every 12 h."""
    rng = np.random.default_rng(seed)
    n = subjects * PER_SUBJECT
    evid = np.tile(np.array([1, 0] * (PER_SUBJECT // 2)), subjects)
    frame = pd.DataFrame(
        {
            "ID": np.repeat(np.arange(1, subjects + 1), PER_SUBJECT),
            "TIME": np.tile(np.arange(PER_SUBJECT) * 12.0, subjects),
            "EVID": evid,
            "AMT": np.where(evid == 1, 100.0, 0.0),
            "CMT": np.where(evid == 1, 1, 2),
            "MDV": 1 - (evid == 0),
            "DV": np.where(evid == 0, rng.lognormal(size=n).round(3), np.nan),
            "WT": np.round(70 + rng.normal(size=n), 1),
        }
    )
    frame["AMT"] *= np.where(evid == 1, rng.choice([0.5, 1.0, 1.5], size=n), 1.0)
    frame["CL"] = np.round(5.0 * (frame["WT"] / 70.0) ** 0.75, 4)
    frame.to_csv(path, index=False, na_rep=".")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=100_000)
    ap.add_argument("--no-simulate", action="store_true", help="time the reader only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vtrial-dataset-") as tmp:
        path = Path(tmp) / "dataset.csv"
        write_dataset(path, args.subjects)
        t0 = time.perf_counter()
        ds = read_dataset(path)
        seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = ds.summary()["subjects"]
    print(
        f"dataset reader: {n:,} subjects, {len(ds.records):,} records "
        f"checked in {seconds:.1f} s; peak resident set {peak_mb:,.0f} MB"
    )
    if args.no_simulate:
        return
    model = build_model({"pk": "pk_2cmt"})
    tenth = dataclasses.replace(ds, records=ds.records[ds.records["ID"] <= max(1, n // 10)])
    simulate(model, data=dataclasses.replace(ds, records=ds.records.head(40)))  # compile first
    timings = {}
    for label, part in (("a tenth", tenth), ("all", ds)):
        t0 = time.perf_counter()
        out = simulate(model, data=part)
        timings[label] = (time.perf_counter() - t0, part.records["ID"].nunique())
        assert (out["solver_status"] == "ok").all()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (t10, n10), (t_all, n_all) = timings["a tenth"], timings["all"]
    print(
        f"dataset simulation (pk_2cmt, 20 occasions each): {n_all:,} subjects in "
        f"{t_all:.1f} s ({n_all / t_all:,.0f} subjects/s); a tenth ({n10:,}) in {t10:.1f} s: "
        f"cost per subject all / tenth = {(t_all / n_all) / (t10 / n10):.2f}; "
        f"peak resident set {peak_mb:,.0f} MB"
    )


if __name__ == "__main__":
    main()
