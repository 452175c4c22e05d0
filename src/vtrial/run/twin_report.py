"""One patient's twin, end to end: estimate, posterior draws, fit to the records,
forecast under the candidate regimens, recommendation, and the clinician's report.

:func:`patient_twin` writes into one folder per patient (``<out>/twin-<ID>/``):

- ``estimate.parquet``: the MAP estimate of each random effect with its Laplace
  standard error, the objective, the status, the posterior method and its effective
  sample size;
- ``history.parquet``: the observations with the individual and typical predictions;
- ``forecast.parquet``: every draw's metrics under every candidate
  (:class:`vtrial.run.forecast.Forecast` ``metrics``), and ``bands.parquet`` the
  quantiles of every output over time, for the history (``candidate`` -1) and for each
  candidate;
- ``candidates.parquet``: each candidate's summary, its probabilities of meeting the
  target and of breaking a guard, eligibility and the recommendation
  (:func:`vtrial.run.forecast.recommend`);
- ``report.png`` and ``report.html`` (:mod:`vtrial.report.twin`).

Every file is written atomically, the page last; the Parquet footers carry the study's
and the records' SHA-256, not the records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vtrial.estimation.twinspec import METRICS
from vtrial.report.style import safe_name
from vtrial.report.twin import twin_page, twin_png
from vtrial.run.forecast import Candidate, Target, forecast, history, recommend
from vtrial.run.io import provenance, write_parquet, write_text
from vtrial.run.twins import subject_records, twin_posterior
from vtrial.study.config import Study

__all__ = ["patient_twin"]


def _records_sha(records: pd.DataFrame) -> str:
    return hashlib.sha256(records.to_csv(index=False, float_format="%.17g").encode()).hexdigest()


def _sentence(table: pd.DataFrame, target: Target | None) -> str:
    if target is None:
        return "No target given: the forecasts of every candidate are shown."
    rec = table[table["recommended"]]
    if not len(rec):
        return (
            "No candidate meets the target with the required probability and within "
            "its guards; see each candidate's reason below."
        )
    row = rec.iloc[0]
    return (
        f"{row['regimen']}, from {row['start']:g} h: probability {row['p_target']:.2f} of "
        f"meeting the target (required {target.probability:g})."
    )


def patient_twin(
    study: Study,
    subject: int,
    out: str | Path,
    *,
    candidates: Sequence[Candidate],
    target: Target | None = None,
    records: pd.DataFrame | None = None,
    method: str = "sir",
    n: int = 1000,
    n_proposal: int | None = None,
    start_eta: np.ndarray | None = None,
    forecast_start: float | None = None,
    horizon: float = 72.0,
    every: float = 1.0,
) -> Path:
    """Estimate, forecast, recommend and report the twin of dataset subject ``subject``
    (index in file order; its records, or ``records``) into ``out/twin-<ID>/`` (see the
    module docstring); returns that folder.

    Raises
    ------
    ConfigError
        Anything :func:`vtrial.run.forecast.forecast` refuses, before anything is
        written.
    """
    if records is None:
        records = subject_records(study, subject)
    sid = records["ID"].iloc[0]
    sid = sid.item() if hasattr(sid, "item") else sid
    post = twin_posterior(
        study, records, subject, method=method, n=n, n_proposal=n_proposal, start=start_eta
    )
    fit = post.fit
    fc = forecast(
        study,
        subject,
        post.eta,
        candidates,
        records=records,
        start=forecast_start,
        horizon=horizon,
        every=every,
        # the CP metrics (and auc_24's second kernel call) only when a target reads them
        exposure=target is None or any(m in METRICS for m in target.metrics),
    )
    hist = history(study, subject, post.eta, fit.eta, records=records, every=every, until=fc.start)
    table = recommend(fc, target) if target is not None else fc.summary()
    names = list(study.variability.omega_names)
    estimate = pd.DataFrame(
        {
            "parameter": names,
            "eta": fit.eta,
            "se": fit.se,
            "posterior_mean": post.eta.mean(axis=0),
            "posterior_sd": post.eta.std(axis=0, ddof=1) if post.eta.shape[0] > 1 else np.nan,
        }
    )
    facts: list[tuple[str, Any]] = [
        ("patient ID", sid),
        ("records", f"{len(records)} (sha256 {_records_sha(records)[:12]}...)"),
        ("objective (-2 log posterior)", f"{fit.ofv:.4f}"),
        ("status", post.status),
        (
            "posterior",
            f"{method}, {post.eta.shape[0]} draws"
            + (f", effective sample size {post.ess:.0f}" if method == "sir" else ""),
        ),
        ("forecast", f"from {fc.start:g} h, at least {horizon:g} h"),
    ]
    folder = Path(out) / f"twin-{safe_name(str(sid))}"
    meta = provenance(
        study=str(study.source),
        subject=str(sid),
        records_sha256=_records_sha(records),
        method=method,
    )
    bands = pd.concat([hist.bands.assign(candidate=-1), fc.bands], ignore_index=True)[
        ["candidate", "time", "output", "q05", "q50", "q95"]
    ]
    est = estimate.assign(ofv=fit.ofv, status=post.status, method=method, ess=post.ess)
    write_parquet(est, folder / "estimate.parquet", meta=meta)
    write_parquet(hist.observations, folder / "history.parquet", meta=meta)
    write_parquet(fc.metrics, folder / "forecast.parquet", meta=meta)
    write_parquet(bands, folder / "bands.parquet", meta=meta)
    write_parquet(table, folder / "candidates.parquet", meta=meta)
    # the plotted output: the measured one (e.g. a glucose twin's FPG), CP when measured
    observed = [str(o) for o in dict.fromkeys(hist.observations["output"])]
    if observed and "CP" not in observed:
        output = observed[0]
    else:
        output = "CP" if "CP" in study.model.outputs else str(next(iter(study.model.outputs)))
    unit = study.model.outputs[output].unit if output in study.model.outputs else ""
    twin_png(
        folder / "report.png",
        observations=hist.observations,
        history_bands=hist.bands,
        forecast_bands=fc.bands,
        candidates=table,
        output=output,
        unit=str(unit or ""),
        target=dict(target.ranges) if target is not None else None,
        guards=dict(target.guards) if target is not None else None,
        title=f"{study.name}: patient {sid}",
    )
    shown = [c for c in table.columns if not c.endswith("_q05") and not c.endswith("_q95")]
    write_text(
        twin_page(
            title=f"{study.name}: twin of patient {sid}",
            facts=facts,
            recommendation=_sentence(table, target),
            candidates=table[shown],
            estimate=estimate,
            image="report.png",
        ),
        folder / "report.html",
    )
    return folder
