"""Time one patient's posterior by SIR (:func:`vtrial.estimation.posterior.sample_posterior`).

``python benchmarks/posterior_speed.py [--proposals M] [--resample N] [--repeats R]``
builds one patient of a 2-compartment model (``pk_2cmt``, four 1-h infusions of 500 mg
every 12 h, 8 samples, combined error; random effects on CL, V1, Q2 and V2, drawn from
OMEGA with a seed: no real data), fits its MAP estimate, then times SIR with ``M``
proposals (default 10,000) resampled to ``N`` (default 1,000), best and median of ``R``
runs after one warm-up (the kernel compiled and loaded), with the time of the batched
objective alone and the effective sample size. It also times ``chunk`` 1,000 (ten
kernel calls instead of two) and the Laplace draws of the same size.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from vtrial import build_model
from vtrial.data.dataset import dataset_from_frame
from vtrial.data.records import dose_routes, record_events
from vtrial.estimation.map import CohortData, Prior, cohort_data, fit_subject, objective, predict
from vtrial.estimation.posterior import Posterior, laplace_sample, sample_posterior
from vtrial.infra.rng import stream
from vtrial.model.residual import ErrorModel

OMEGA = np.array([[0.3, 0.1, 0, 0], [0.1, 0.25, 0, 0], [0, 0, 0.4, 0.05], [0, 0, 0.05, 0.35]])
TIMES = [0.5, 1.5, 6.0, 11.9, 24.5, 36.5, 47.0, 60.0]


def patient() -> tuple[CohortData, Prior]:
    model = build_model({"pk": "pk_2cmt"})
    error = ErrorModel(additive=0.05, proportional=0.1)
    rows = [
        {"ID": 1, "TIME": 12.0 * i, "EVID": 1, "MDV": 1, "AMT": 500.0, "RATE": 500.0, "CMT": 2}
        for i in range(4)
    ] + [{"ID": 1, "TIME": t, "EVID": 0, "MDV": 0, "DV": 1.0} for t in TIMES]
    frame = pd.DataFrame(rows).fillna({"AMT": 0.0, "RATE": 0.0, "CMT": 0}).sort_values("TIME")
    typical = {"CL": 5.0, "V1": 50.0, "Q2": 10.0, "V2": 100.0}
    prior = Prior(tuple(typical), OMEGA, ("lognormal",) * 4)

    def data_of(y: np.ndarray) -> CohortData:
        f = frame.copy()
        f.loc[f["EVID"] == 0, "DV"] = y
        ds = dataset_from_frame(f)
        ev = record_events(ds, dose_routes(model))
        return cohort_data(
            model,
            ds,
            ev,
            typical={k: np.array([v]) for k, v in typical.items()},
            outputs=["CP"],
            errors={"CP": error},
        )

    rng = np.random.default_rng(20261206)
    eta = rng.multivariate_normal(np.zeros(4), OMEGA)
    truth = predict(data_of(np.ones(len(TIMES))), prior, 0, eta)[0]
    y = error.observe(truth, rng.standard_normal(truth.size))
    return data_of(np.asarray(y)), prior


def _time(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proposals", type=int, default=10_000)
    ap.add_argument("--resample", type=int, default=1_000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    t0 = time.perf_counter()
    data, prior = patient()
    fit = fit_subject(data, prior, 0)
    print(f"setup and first fit (compile or load the kernel): {time.perf_counter() - t0:.2f} s")
    t_fit = _time(lambda: fit_subject(data, prior, 0), a.repeats)
    print(f"MAP fit: {min(t_fit) * 1e3:.1f} ms (status {fit.status}, {fit.n_eval} calls)")

    def sir(chunk: int = 5000) -> Posterior:
        return sample_posterior(
            data, prior, 0, fit, n=a.resample, n_proposal=a.proposals, seed=1, chunk=chunk
        )

    post = sir()
    z = np.random.default_rng(0).standard_normal((a.proposals, 4))
    rows = [
        ("SIR (chunk 5000)", _time(sir, a.repeats)),
        ("SIR (chunk 1000)", _time(lambda: sir(1000), a.repeats)),
        ("objective alone", _time(lambda: objective(data, prior, 0, z), a.repeats)),
        (
            "Laplace draws",
            _time(lambda: laplace_sample(fit, a.resample, stream(1, "bench", 0)), a.repeats),
        ),
    ]
    print(
        f"{a.resample} resampled from {a.proposals} proposals, pk_2cmt, one patient, "
        f"{len(TIMES)} samples; ESS {post.ess:.0f} ({post.status}); best / median of "
        f"{a.repeats}:"
    )
    for name, ts in rows:
        print(f"  {name:18s} {min(ts) * 1e3:8.1f} ms  {statistics.median(ts) * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
