"""Forecasts of a twin under candidate regimens (vtrial.run.forecast), against closed-form
superposition written apart from the engine (tests.numerics.closed_forms), and the
recommendation's ranking and refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate

from tests.numerics.closed_forms import conc_events
from vtrial.errors import ConfigError
from vtrial.estimation.map import predict
from vtrial.run.forecast import (
    Candidate,
    Forecast,
    _with_grid,
    candidates_from_data,
    forecast,
    history,
    next_dose_time,
    recommend,
    target_from_data,
)
from vtrial.run.twin_report import patient_twin
from vtrial.run.twins import subject_cohort, subject_records, twin_posterior
from vtrial.study.config import load_study

STUDY = """
study: {{name: fc, seed: 1}}
population:
  dataset: {{path: {data}, doses: recorded}}
model:
  pk: pk_2cmt
  parameters:
    CL: {{value: 4.6, unit: L/h, covariates: "(CRCL / 80) ** 0.75"}}
    V1: {{value: 30.0, unit: L, covariates: "WT / 70"}}
    Q2: {{value: 6.0, unit: L/h}}
    V2: {{value: 40.0, unit: L}}
  iiv:
    omega: {{CL: 0.09, V1: 0.04, V2: 0.09}}
  residual_error:
    CP: {{proportional: 0.15, additive: 1.0}}
simulation: {{end: 48}}
outputs: {{observations: {{outputs: [CP]}}}}
adverse_events:
  high_exposure: {{output: CP, thresholds: [30, 45, 60], direction: above}}
"""

#: one patient: 1000 mg over 1 h every 12 h (two recorded doses), two levels
DATA = """ID,TIME,EVID,AMT,CMT,RATE,II,ADDL,DV,MDV,WT,CRCL
1,0,1,1000,2,1000,12,1,.,1,80,60
1,11.5,0,.,2,.,.,.,9.1,0,80,60
1,13.5,0,.,2,.,.,.,31.0,0,80,60
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("fc")
    (d / "d.csv").write_text(DATA)
    (d / "s.yaml").write_text(STUDY.format(data=d / "d.csv"))
    return load_study(d / "s.yaml")


def _params(eta: np.ndarray) -> dict[str, float]:
    """Individual parameters of the patient (CRCL 60, WT 80) at ``eta`` (CL, V1, V2)."""
    return {
        "cl": 4.6 * (60 / 80) ** 0.75 * np.exp(eta[0]),
        "v1": 30.0 * 80 / 70 * np.exp(eta[1]),
        "q2": 6.0,
        "v2": 40.0 * np.exp(eta[2]),
    }


def test_forecast_matches_superposition(study) -> None:  # type: ignore[no-untyped-def]
    """Trough, peak, AUC over the last 24 h and the bands' median agree with closed-form
    superposition of the recorded and the candidate's doses to 1e-9 relative."""
    eta = np.array([[0.0, 0.0, 0.0], [0.3, -0.2, 0.1], [-0.4, 0.1, -0.3]])
    cands = [Candidate("iv_infusion", 1250.0, 8.0, 2.0), Candidate("iv_bolus", 500.0, 12.0)]
    fc = forecast(study, 0, eta, cands, horizon=30.0, every=0.5)
    # the next dose is due 12 h after the last recorded one (ADDL 1: at 12 h)
    assert fc.start == 24.0
    assert fc.end.tolist() == [24.0 + 4 * 8.0, 24.0 + 3 * 12.0]
    history = [(0.0, 1000.0, 1.0), (12.0, 1000.0, 1.0)]
    for c, cand in enumerate(cands):
        end = fc.end[c]
        doses = 24.0 + cand.interval * np.arange(round((end - 24.0) / cand.interval))
        for e in range(eta.shape[0]):
            p = _params(eta[e])

            def conc(
                t: np.ndarray, cand: Candidate = cand, doses: np.ndarray = doses
            ) -> np.ndarray:
                hist = conc_events(t, history, "iv_infusion", **p)  # noqa: B023
                if cand.route == "iv_infusion":
                    new = [(t0, cand.dose, cand.duration) for t0 in doses]
                else:
                    new = [(t0, cand.dose) for t0 in doses]
                return hist + conc_events(t, new, cand.route, **p)  # noqa: B023

            row = fc.metrics[(fc.metrics["candidate"] == c) & (fc.metrics["draw"] == e)].iloc[0]
            assert row["status"] == 0
            assert row["trough"] == pytest.approx(conc(np.array([end]))[0], rel=1e-9)
            # peak: at the end of the last infusion, or at the last bolus (post-dose)
            t_peak = doses[-1] + (cand.duration if cand.route == "iv_infusion" else 1e-12)
            assert row["peak"] == pytest.approx(conc(np.array([t_peak]))[0], rel=1e-9)
            breaks = [t for t in np.r_[doses, doses + cand.duration] if end - 24 < t < end]
            ref, _ = integrate.quad(
                lambda t: conc(np.array([t]))[0],
                end - 24,
                end,
                points=breaks,
                epsabs=0,
                epsrel=1e-12,
                limit=200,
            )
            assert row["auc_24"] == pytest.approx(ref, rel=1e-9)
            assert row["CP"] == row["trough"]
            worst = max(row["peak"], conc(np.arange(24.0, end + 1e-9, 0.5)).max())
            assert row["ae_high_exposure_grade"] == int(np.sum(worst > np.array([30, 45, 60])))
        band = fc.bands[(fc.bands["candidate"] == c) & (fc.bands["output"] == "CP")]
        t = band["time"].to_numpy()
        assert t[0] == 24.0
        assert t[-1] == end
        # the median of three draws is the middle draw at each time
        each = np.array(
            [
                conc_events(t, history, "iv_infusion", **_params(eta[e]))
                + conc_events(
                    t,
                    [
                        (t0, cand.dose, cand.duration) if cand.duration else (t0, cand.dose)
                        for t0 in doses
                    ],
                    cand.route,
                    **_params(eta[e]),
                )
                for e in range(3)
            ]
        )
        # (closed-form superposition includes a bolus at its own time: the forecast
        # record at a dose time comes after the dose)
        np.testing.assert_allclose(band["q50"].to_numpy(), np.median(each, axis=0), rtol=1e-9)


def test_forecast_is_the_same_alone_or_with_other_candidates(study) -> None:  # type: ignore[no-untyped-def]
    eta = np.array([[0.1, 0.0, -0.1], [0.2, 0.1, 0.0]])
    cands = candidates_from_data(
        {"route": "iv_infusion", "dose": [750, 1000], "duration": 1, "interval": [8, 12]}
    )
    together = forecast(study, 0, eta, cands, horizon=24.0)
    alone = forecast(study, 0, eta, [cands[3]], horizon=24.0)
    a = together.metrics[together.metrics["candidate"] == 3].drop(columns="candidate")
    b = alone.metrics.drop(columns="candidate")
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_next_dose_time() -> None:
    def rec(times, evid, ii=0.0, addl=0):  # type: ignore[no-untyped-def]
        n = len(times)
        return pd.DataFrame(
            {
                "TIME": times,
                "EVID": evid,
                "II": [ii if e == 1 else 0.0 for e in evid],
                "ADDL": [addl if e == 1 else 0 for e in evid],
            }
        ).iloc[:n]

    assert next_dose_time(rec([0.0, 5.0], [1, 0], ii=12.0, addl=2)) == 36.0
    assert next_dose_time(rec([0.0, 8.0, 9.0], [1, 1, 0])) == 16.0  # the last gap
    assert next_dose_time(rec([0.0, 50.0], [1, 0], ii=12.0)) == 50.0  # not before the last record
    assert next_dose_time(rec([3.0], [0])) == 3.0


def _forecast(metric: dict[str, list[float]], cands: list[Candidate]) -> Forecast:
    n = len(next(iter(metric.values()))) // len(cands)
    frame = pd.DataFrame(
        {
            "candidate": np.repeat(np.arange(len(cands)), n),
            "draw": np.tile(np.arange(n), len(cands)),
            "status": 0,
            **metric,
        }
    )
    return Forecast(cands, 0.0, np.zeros(len(cands)), frame, pd.DataFrame())


def test_recommend_picks_the_smallest_daily_dose_that_is_eligible() -> None:
    cands = [
        Candidate("iv_bolus", 500.0, 12.0),  # 1000 mg/day: misses the target
        Candidate("iv_bolus", 1000.0, 24.0),  # 1000 mg/day: same, longer interval
        Candidate("iv_bolus", 750.0, 12.0),  # 1500 mg/day: on target, safe
        Candidate("iv_bolus", 1000.0, 12.0),  # 2000 mg/day: on target, trough too high
    ]
    auc = [
        *(300, 350, 420, 390),
        *(300, 310, 320, 330),
        *(450, 500, 550, 390),
        *(500, 550, 590, 600),
    ]
    trough = [*(5, 6, 7, 8), *(2, 3, 4, 5), *(10, 12, 14, 16), *(18, 21, 22, 25)]
    fc = _forecast({"auc_24": auc, "trough": trough}, cands)
    target = target_from_data(
        {
            "auc_24": [400, 600],
            "probability": 0.7,
            "safety": {"trough_max": 20, "probability": 0.25},
        }
    )
    table = recommend(fc, target)
    assert table["p_target"].tolist() == [0.25, 0.0, 0.75, 1.0]
    assert table["p_trough_max"].tolist() == [0.0, 0.0, 0.0, 0.75]
    assert table["eligible"].tolist() == [False, False, True, False]
    assert table["recommended"].tolist() == [False, False, True, False]
    assert "P(trough > 20) 0.750 > 0.25" in table["reason"][3]
    # nothing eligible: nothing recommended, each candidate says why
    strict = recommend(fc, target_from_data({"auc_24": [400, 560], "probability": 0.99}))
    assert not strict["recommended"].any()
    assert strict.loc[2, "reason"] == "P(target) 0.750 < 0.99"
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['cmin'\]"):
        recommend(fc, target_from_data({"cmin": [1, 2]}))


def test_bad_candidates_and_start_are_refused(study) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="duration: an infusion's duration must be > 0"):
        Candidate("iv_infusion", 1000.0, 12.0)
    with pytest.raises(ValueError, match="route: one of"):
        candidates_from_data({"route": "im", "dose": 1, "interval": 1})
    with pytest.raises(ValueError, match="interval: required"):
        candidates_from_data({"route": "iv_bolus", "dose": 1})
    with pytest.raises(ConfigError, match=r"forecast.start: .*last record \(13.5 h\), got 12"):
        forecast(study, 0, np.zeros((1, 3)), [Candidate("iv_bolus", 1.0, 12.0)], start=12.0)
    with pytest.raises(ValueError, match=r"safety\.trough_top: <metric>_max or <metric>_min"):
        target_from_data({"safety": {"trough_top": 3}})


def test_twin_posterior_draws(study) -> None:  # type: ignore[no-untyped-def]
    """The MAP alone, a Laplace sample (mean and covariance within 4 Monte Carlo SEs of
    the fit's), and an SIR sample that is the same each time (keyed by seed and ID)."""
    records = subject_records(study, 0)
    one = twin_posterior(study, records, 0, method="map")
    assert one.eta.shape == (1, 3)
    np.testing.assert_array_equal(one.eta[0], one.fit.eta)
    n = 4000
    lap = twin_posterior(study, records, 0, method="laplace", n=n, fit=one.fit)
    se = np.sqrt(np.diag(one.fit.covariance) / n)
    assert np.all(np.abs(lap.eta.mean(axis=0) - one.fit.eta) < 4 * se)
    # the variance of a normal sample has relative SE sqrt(2 / n) (2.2 %): 4 SEs
    np.testing.assert_allclose(
        np.diag(np.cov(lap.eta, rowvar=False)), np.diag(one.fit.covariance), rtol=4 * np.sqrt(2 / n)
    )
    a = twin_posterior(study, records, 0, method="sir", n=200, fit=one.fit)
    b = twin_posterior(study, records, 0, method="sir", n=200)
    assert a.status == "ok"
    assert a.ess > 200
    np.testing.assert_array_equal(a.eta, b.eta)
    fc = forecast(study, 0, a.eta, [Candidate("iv_infusion", 1000.0, 12.0, 1.0)], horizon=24)
    assert len(fc.metrics) == 200
    with pytest.raises(ValueError, match="method: one of sir, laplace, map, got 'mcmc'"):
        twin_posterior(study, records, 0, method="mcmc")


def test_history_fits_and_bands(study) -> None:  # type: ignore[no-untyped-def]
    """IPRED and PRED at the observations, and the bands' median over three draws, against
    closed-form superposition of the recorded doses."""
    eta = np.array([[0.0, 0.0, 0.0], [0.3, -0.2, 0.1], [-0.4, 0.1, -0.3]])
    fit_eta = np.array([0.1, -0.05, 0.2])
    h = history(study, 0, eta, fit_eta, every=0.5)
    doses = [(0.0, 1000.0, 1.0), (12.0, 1000.0, 1.0)]
    obs = h.observations
    assert obs["TIME"].tolist() == [11.5, 13.5]
    assert obs["DV"].tolist() == [9.1, 31.0]
    np.testing.assert_allclose(
        obs["IPRED"], conc_events(obs["TIME"], doses, "iv_infusion", **_params(fit_eta)), rtol=1e-9
    )
    np.testing.assert_allclose(
        obs["PRED"],
        conc_events(obs["TIME"], doses, "iv_infusion", **_params(np.zeros(3))),
        rtol=1e-9,
    )
    band = h.bands[h.bands["output"] == "CP"]
    t = band["time"].to_numpy()
    np.testing.assert_array_equal(t, np.arange(0.0, 13.51, 0.5))
    each = [conc_events(t, doses, "iv_infusion", **_params(e)) for e in eta]
    np.testing.assert_allclose(band["q50"], np.median(each, axis=0), rtol=1e-9, atol=1e-12)


def test_history_grid_starts_no_occasion() -> None:
    """In a dataset whose covariates change from record to record (the vancomycin
    example, NOCB), the added grid records leave every observation's prediction as it
    is without them (to rounding)."""
    from tests.conftest import ROOT

    vanco = load_study(ROOT / "config" / "studies" / "vancomycin_tdm.yaml")
    records = subject_records(vanco, 2)
    assert records["CRCL"].min() < records["CRCL"].max()
    grid, added = _with_grid(records, np.arange(0.0, 170.0, 0.7), "nocb")
    assert len(grid) == len(records) + added.size
    data, prior = subject_cohort(vanco, records, subject=2)
    gdata, gprior = subject_cohort(vanco, grid, subject=2)
    eta = np.array([[0.2, -0.1, 0.3]])
    # equal but for rounding (the closed form is advanced in more steps); a covariate
    # switched at the wrong record would change CL or V1 by several per cent
    np.testing.assert_allclose(
        predict(data, prior, 0, eta), predict(gdata, gprior, 0, eta), rtol=1e-12
    )


def test_patient_twin_writes_its_report(study, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The folder holds the estimate, the forecasts and the recommendation that the
    functions give on their own, and a page that names the recommended regimen; a
    second run writes the same tables."""
    cands = [
        Candidate("iv_infusion", 500.0, 12.0, 1.0),
        Candidate("iv_infusion", 1500.0, 12.0, 1.0),
    ]
    target = target_from_data({"trough": [5, 15], "probability": 0.5})
    folder = patient_twin(
        study, 0, tmp_path / "a", candidates=cands, target=target, n=50, horizon=24
    )
    assert folder.name == "twin-1"
    post = twin_posterior(study, subject_records(study, 0), 0, n=50)
    est = pd.read_parquet(folder / "estimate.parquet")
    np.testing.assert_array_equal(est["eta"], post.fit.eta)
    fc = forecast(study, 0, post.eta, cands, horizon=24)
    table = pd.read_parquet(folder / "candidates.parquet")
    ref = recommend(fc, target)
    pd.testing.assert_frame_equal(table, ref, check_dtype=False)
    assert table["recommended"].sum() == 1
    page = (folder / "report.html").read_text()
    regimen = table.loc[table["recommended"], "regimen"].iloc[0]
    assert f"<p>{regimen}, from 24 h: probability" in page
    assert (folder / "report.png").stat().st_size > 10_000
    bands = pd.read_parquet(folder / "bands.parquet")
    assert bands.loc[bands["candidate"] == -1, "time"].max() == 24.0  # up to the forecast
    again = patient_twin(
        study, 0, tmp_path / "b", candidates=cands, target=target, n=50, horizon=24
    )
    for name in ("estimate", "history", "forecast", "bands", "candidates"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(folder / f"{name}.parquet"), pd.read_parquet(again / f"{name}.parquet")
        )
