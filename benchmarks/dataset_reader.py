"""Time vtrial's dataset reader on a generated NONMEM-style dataset (no peers).

``python benchmarks/dataset_reader.py [--subjects N]`` writes N subjects (default
100,000) of 20 records each (10 oral doses every 24 h with sparse samples between them,
a weight that changes at every record) to a temporary CSV, then times
:func:`vtrial.data.dataset.read_dataset` on it and prints records, seconds and the
process's peak resident set. The dataset is generated here, from a seed: no real data.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

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
    frame.to_csv(path, index=False, na_rep=".")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vtrial-dataset-") as tmp:
        path = Path(tmp) / "dataset.csv"
        write_dataset(path, args.subjects)
        t0 = time.perf_counter()
        ds = read_dataset(path)
        seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"dataset reader: {ds.summary()['subjects']:,} subjects, {len(ds.records):,} records "
        f"checked in {seconds:.1f} s; peak resident set {peak_mb:,.0f} MB"
    )


if __name__ == "__main__":
    main()
