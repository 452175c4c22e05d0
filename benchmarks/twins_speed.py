"""Twins of real patients: MAP speed against a hand-written scipy peer, side by side.

``python benchmarks/twins_speed.py [--patients N]`` simulates ``N`` patients (default
100; seeded, no real data) of a 2-compartment model (``pk_2cmt``: three 1-h infusions
of 1000 mg every 12 h, 10 samples, combined error, random effects on CL, V1 and V2),
then estimates each one's MAP twice:

- **vtrial**: :func:`vtrial.estimation.map.fit_subject` (the compiled kernel, batched
  central differences, BFGS in whitened coordinates; the Laplace Hessian included);
- **scipy peer**: what a Python user writes by hand, as mapbayr does in R on mrgsolve:
  the objective from closed-form superposition (``tests.numerics.closed_forms``) and
  :func:`scipy.optimize.minimize` (L-BFGS-B with finite-difference gradients, as
  mapbayr's default ``stats::optim`` L-BFGS-B), no Hessian.

It prints the median time per patient of each, their ratio, and how many estimates
agree within 1e-3 prior SDs (the verification of ``tests/estimation`` uses the same
criterion). One process, one thread; the kernel compiled and loaded before timing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.numerics.closed_forms import conc_events
from vtrial import build_model
from vtrial.data.dataset import dataset_from_frame
from vtrial.data.records import dose_routes, record_events
from vtrial.estimation.map import Prior, cohort_data, fit_subject, predict
from vtrial.model.residual import ErrorModel

TYPICAL = {"CL": 4.0, "V1": 30.0, "Q2": 6.0, "V2": 40.0}
OMEGA = np.diag([0.09, 0.04, 0.09])
NAMES = ("CL", "V1", "V2")
TIMES = [0.5, 1.0, 2.0, 4.0, 8.0, 11.9, 13.0, 20.0, 23.9, 30.0]
DOSES = [(0.0, 1000.0, 1.0), (12.0, 1000.0, 1.0), (24.0, 1000.0, 1.0)]
ADD, PROP = 0.5, 0.1


def _frame(y: np.ndarray) -> pd.DataFrame:
    rows = [
        {"ID": 1, "TIME": t, "EVID": 1, "MDV": 1, "AMT": a, "RATE": a / d, "CMT": 2}
        for t, a, d in DOSES
    ] + [{"ID": 1, "TIME": t, "EVID": 0, "MDV": 0, "DV": v} for t, v in zip(TIMES, y, strict=True)]
    return (
        pd.DataFrame(rows)
        .fillna({"AMT": 0.0, "RATE": 0.0, "CMT": 0})
        .sort_values("TIME", kind="stable")
        .reset_index(drop=True)
    )


def _peer_params(eta: np.ndarray) -> dict[str, float]:
    return {
        "cl": TYPICAL["CL"] * np.exp(eta[0]),
        "v1": TYPICAL["V1"] * np.exp(eta[1]),
        "q2": TYPICAL["Q2"],
        "v2": TYPICAL["V2"] * np.exp(eta[2]),
    }


def peer_fit(y: np.ndarray) -> np.ndarray:
    """The hand-written MAP: -2 log posterior from scipy.stats densities."""
    inv = np.linalg.inv(OMEGA)
    t = np.asarray(TIMES)

    def ofv(eta: np.ndarray) -> float:
        f = conc_events(t, DOSES, "iv_infusion", **_peer_params(eta))
        sd = np.sqrt(ADD**2 + (PROP * f) ** 2)
        return float(-2 * stats.norm.logpdf(y, f, sd).sum() + eta @ inv @ eta)

    res = optimize.minimize(ofv, np.zeros(3), method="L-BFGS-B")
    return np.asarray(res.x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=100)
    a = ap.parse_args()
    model = build_model({"pk": "pk_2cmt"})
    error = ErrorModel(additive=ADD, proportional=PROP)
    prior = Prior(NAMES, OMEGA, ("lognormal",) * 3)
    rng = np.random.default_rng(20261206)

    def data_of(y: np.ndarray):  # type: ignore[no-untyped-def]
        ds = dataset_from_frame(_frame(y))
        ev = record_events(ds, dose_routes(model))
        return cohort_data(
            model,
            ds,
            ev,
            typical={k: np.array([v]) for k, v in TYPICAL.items()},
            outputs=["CP"],
            errors={"CP": error},
        )

    base = data_of(np.ones(len(TIMES)))
    fit_subject(base, prior, 0)  # compile or load the kernel
    t_v, t_p, agree = [], [], 0
    chol = np.linalg.cholesky(OMEGA)
    for _ in range(a.patients):
        eta = chol @ rng.standard_normal(3)
        f = predict(base, prior, 0, eta)[0]
        y = np.asarray(error.observe(f, rng.standard_normal(f.size)))
        data = data_of(y)
        t0 = time.perf_counter()
        fit = fit_subject(data, prior, 0)
        t_v.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = peer_fit(y)
        t_p.append(time.perf_counter() - t0)
        agree += bool(np.all(np.abs(np.linalg.solve(chol, fit.eta - ref)) < 1e-3))
    mv, mp = statistics.median(t_v), statistics.median(t_p)
    print(f"MAP, pk_2cmt, 3 random effects, {len(TIMES)} samples, {a.patients} patients, 1 thread")
    print(f"  vtrial (with Laplace Hessian)  {mv * 1e3:8.1f} ms / patient (median)")
    print(f"  scipy peer (L-BFGS-B, closed form, no Hessian) {mp * 1e3:8.1f} ms / patient")
    print(f"  ratio peer / vtrial            {mp / mv:8.2f}")
    print(f"  estimates agreeing within 1e-3 prior SD: {agree} / {a.patients}")


if __name__ == "__main__":
    main()
