"""Time MAP estimation (:func:`vtrial.estimation.map.fit_subject`) per patient.

``python benchmarks/map_speed.py [--patients N] [--no-multistart] [--cases a,b]`` fits N
patients (default 200) of each case one at a time, as :func:`~vtrial.estimation.map.
fit_cohort` does, and prints the median, mean, 90th percentile and largest CPU time per
patient (``time.process_time``, steadier than wall time on a shared machine; the wall
total too), the mean number of batched objective calls, and how many patients used the
multi-start. ``--no-multistart`` keeps each first local minimum (the estimator before
the multi-start, at the same cost). The profiles are simulated here from a seed: each
patient's eta from the prior, the predictions by :func:`vtrial.estimation.map.predict`,
then residual error.

Cases (a dose of 500 over 1 h every 12 h, 4 doses, 10 samples; or 300 orally, 2 doses,
6 samples):

- ``2cmt_3eta``: ``pk_2cmt`` with IIV on CL, V1, V2 (OMEGA diag 0.09, 0.04, 0.09),
  combined error 0.05 + 10 %.
- ``2cmt_4eta_large_iiv``: the 2-compartment case of
  ``tests/estimation/test_map_agreement.py`` (CL, V1, Q2, V2 with variances 0.5 to 0.8),
  where one patient in ten has a likelihood that is not convex at the first estimate.
- ``mm_3eta``: ``pk_mm_1cmt`` (Michaelis-Menten, an ODE model) with IIV on VMAX, KM, V1,
  as in the verification.
"""

from __future__ import annotations

import argparse
import inspect
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vtrial import build_model
from vtrial.data.dataset import dataset_from_frame
from vtrial.data.records import dose_routes, record_events
from vtrial.estimation.map import Prior, cohort_data, fit_subject, predict
from vtrial.model.residual import ErrorModel


@dataclass
class Case:
    pk: str
    names: tuple[str, ...]
    omega: np.ndarray
    parameters: dict[str, float]
    error: ErrorModel
    doses: list[tuple[float, float, float, int]]  # time, amount, rate, compartment
    times: list[float]


INFUSIONS = [(12.0 * i, 500.0, 500.0, 2) for i in range(4)]
SAMPLES = [0.5, 1.0, 2.0, 6.0, 11.9, 24.5, 36.5, 47.0, 60.0, 72.0]
CASES = {
    "2cmt_3eta": Case(
        "pk_2cmt",
        ("CL", "V1", "V2"),
        np.diag([0.09, 0.04, 0.09]),
        {"CL": 5.0, "V1": 50.0, "Q2": 10.0, "V2": 100.0},
        ErrorModel(additive=0.05, proportional=0.1),
        INFUSIONS,
        SAMPLES,
    ),
    "2cmt_4eta_large_iiv": Case(
        "pk_2cmt",
        ("CL", "V1", "Q2", "V2"),
        np.array([[0.6, 0.2, 0, 0], [0.2, 0.5, 0, 0], [0, 0, 0.8, 0.1], [0, 0, 0.1, 0.7]]),
        {"CL": 5.0, "V1": 50.0, "Q2": 10.0, "V2": 100.0},
        ErrorModel(additive=0.05, proportional=0.1),
        INFUSIONS,
        SAMPLES,
    ),
    "mm_3eta": Case(
        "pk_mm_1cmt",
        ("VMAX", "KM", "V1"),
        np.diag([0.09, 0.16, 0.04]),
        {"VMAX": 20.0, "KM": 2.0, "V1": 50.0, "KA": 1.0},
        ErrorModel(additive=0.1, proportional=0.1),
        [(0.0, 300.0, 0.0, 1), (12.0, 300.0, 0.0, 1)],
        [1.0, 4.0, 11.0, 14.0, 20.0, 30.0],
    ),
}


def _frame(case: Case, y: np.ndarray) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for i in range(y.shape[0]):
        recs: list[tuple[float, int, dict[str, Any]]] = []
        for t, amt, rate, cmt in case.doses:
            recs.append((t, 1, {"EVID": 1, "MDV": 1, "AMT": amt, "RATE": rate, "CMT": cmt}))
        for j, t in enumerate(case.times):
            recs.append((t, 0, {"EVID": 0, "MDV": 0, "DV": y[i, j], "AMT": 0, "RATE": 0}))
        recs.sort(key=lambda r: (r[0], r[1]))  # a sample at a dose time before the dose
        rows += [{"ID": i + 1, "TIME": t, **rec} for t, _, rec in recs]
    return pd.DataFrame(rows).fillna({"CMT": 0, "DV": np.nan})


def _data(case: Case, n: int, seed: int) -> tuple[Any, Prior]:
    model = build_model({"pk": case.pk})
    typical = {k: np.full(n, v) for k, v in case.parameters.items()}
    prior = Prior(case.names, case.omega, ("lognormal",) * len(case.names))
    errors = {"CP": case.error}

    def build(y: np.ndarray) -> Any:
        ds = dataset_from_frame(_frame(case, y))
        ev = record_events(ds, dose_routes(model))
        return cohort_data(model, ds, ev, typical=typical, outputs=["CP"], errors=errors)

    rng = np.random.default_rng(seed)
    eta = rng.multivariate_normal(np.zeros(prior.k), case.omega, size=n)
    placeholder = build(np.ones((n, len(case.times))))
    f = np.array([predict(placeholder, prior, s, eta[s])[0] for s in range(n)])
    y = case.error.observe(f, rng.standard_normal(f.shape))
    return build(y), prior


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--no-multistart", action="store_true")
    ap.add_argument("--seed", type=int, default=20261206)
    args = ap.parse_args()
    kwargs: dict[str, Any] = {}
    if "multistart" in inspect.signature(fit_subject).parameters:
        kwargs["multistart"] = not args.no_multistart
    elif not args.no_multistart:
        print("(this vtrial's fit_subject has no multi-start)")
    for name in args.cases.split(","):
        data, prior = _data(CASES[name], args.patients, args.seed)
        fit_subject(data, prior, 0, **kwargs)  # the kernel compiled or loaded
        cpu, calls, starts = [], [], []
        wall = time.perf_counter()
        for s in range(args.patients):
            t0 = time.process_time()
            fit = fit_subject(data, prior, s, **kwargs)
            cpu.append(time.process_time() - t0)
            calls.append(fit.n_eval)
            starts.append(getattr(fit, "n_starts", 1))
        wall = time.perf_counter() - wall
        ms = 1e3 * np.array(cpu)
        print(
            f"{name}: {args.patients} patients, CPU per patient median {np.median(ms):.1f} ms, "
            f"mean {ms.mean():.1f}, p90 {np.percentile(ms, 90):.1f}, max {ms.max():.1f}; "
            f"wall {wall:.1f} s; calls {np.mean(calls):.1f}; "
            f"multi-start {int(np.sum(np.array(starts) > 1))}"
        )


if __name__ == "__main__":
    main()
