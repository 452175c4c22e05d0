"""The chronic-disease twin example (config/studies/glucose_titration_twin.yaml): its
shipped dataset is what its script writes; a patient's forecast FPG agrees with the
PK + idr1 ODE written here and integrated by scipy; the recommendation is the smallest
daily dose whose forecast FPGs meet the target; a target on an output the model lacks
is refused at load.

One model (pk_1cmt + idr1, one kernel) and one patient (ID 7: 84 days of titrated
doses, some missed, a fall of CRCL at week 8), to stay fast.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import integrate

from vtrial.errors import ConfigError
from vtrial.run import twin_report
from vtrial.run.forecast import Candidate, forecast
from vtrial.run.twins import subject_records, twin_posterior
from vtrial.study.config import Study, load_study

ROOT = Path(__file__).resolve().parents[2]
STUDY = ROOT / "config" / "studies" / "glucose_titration_twin.yaml"
DATA = ROOT / "config" / "studies" / "data"
SUBJECT = 6  # index in file order: ID 7
#: relative agreement of the forecast FPG with scipy's: the twin's forecasts integrate at
#: rtol 1e-10 (vtrial.estimation.map.ESTIMATION_RTOL), scipy below at rtol 1e-12
RTOL = 1e-8


def _study(tmp: Path, twins: dict[str, Any]) -> Study:
    """The example study with its dataset, ``outputs.twins`` updated by ``twins``."""
    d = yaml.safe_load(STUDY.read_text())
    d["population"]["dataset"]["path"] = str(DATA / "glucose_titration.csv")
    d["outputs"]["twins"].update(twins)
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return load_study(path)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    return _study(tmp_path_factory.mktemp("glu"), {"posterior": {"method": "map"}})


class _Reference:
    """The model's equations (pk_1cmt oral + idr1, the study's parameters and
    covariate models) for one patient at ``eta`` (CL, R0, IC50), integrated by scipy
    from dose to dose; CRCL changes at each record and holds from it on (LOCF), into
    the forecast."""

    def __init__(self, records: pd.DataFrame, eta: np.ndarray) -> None:
        self.eta_cl, eta_r0, eta_ic50 = eta
        self.v1 = 300.0 * float(records["WT"].iloc[0]) / 90.0
        self.r0 = 9.5 * np.exp(eta_r0)
        self.ic50 = 1.5 * np.exp(eta_ic50)
        self.t_rec = records["TIME"].to_numpy(dtype=np.float64)
        self.crcl = records["CRCL"].to_numpy(dtype=np.float64)
        self.doses: dict[float, float] = {}  # the recorded doses, ADDL/II expanded
        for r in records[records["EVID"] == 1].itertuples():
            for k in range(int(r.ADDL) + 1):
                self.doses[float(r.TIME) + k * float(r.II)] = float(r.AMT)

    def cl(self, t: float) -> float:
        value = self.crcl[np.searchsorted(self.t_rec, t, side="right") - 1]  # LOCF
        return 25.0 * (value / 100.0) ** 0.75 * np.exp(self.eta_cl)

    def rhs(self, _t: float, y: np.ndarray, cl: float) -> list[float]:
        ka, kout, imax = 0.8, 0.01, 0.6
        depot, central, fpg = y
        cp = central / self.v1
        return [
            -ka * depot,
            ka * depot - cl / self.v1 * central,
            self.r0 * kout * (1.0 - imax * cp / (self.ic50 + cp)) - kout * fpg,
        ]

    def state(self, y: np.ndarray, a: float, b: float, doses: dict[float, float]) -> np.ndarray:
        """The state (depot, central amounts, FPG) at ``b`` from ``y`` at ``a``, before a
        dose at ``a``, with ``doses`` (time -> mg; F 0.55 into the depot)."""
        t = [*(x for x in doses if a < x < b), *(x for x in self.t_rec if a < x < b)]
        breaks = sorted({a, b, *t})
        y = y.copy()
        for lo, hi in itertools.pairwise(breaks):
            y[0] += 0.55 * doses.get(lo, 0.0)
            sol = integrate.solve_ivp(
                self.rhs, (lo, hi), y, method="DOP853", rtol=1e-12, atol=1e-14, args=(self.cl(lo),)
            )
            assert sol.success
            y = sol.y[:, -1].copy()
        return y


def test_forecast_fpg_matches_scipy(study: Study) -> None:
    """posterior: map (one draw, the MAP): the FPG at the end of the forecast under two
    candidates equals scipy's integration of the same ODE to RTOL."""
    assert study.twins is not None
    assert study.twins.posterior == "map"
    assert study.twins.forecast is not None
    records = subject_records(study, SUBJECT)
    assert records["ID"].iloc[0] == 7
    post = twin_posterior(study, records, SUBJECT, method=study.twins.posterior)
    assert post.status == "ok"
    assert post.eta.shape == (1, 3)
    cands = [Candidate("oral", 500.0, 24.0), Candidate("oral", 2000.0, 24.0)]
    horizon = study.twins.forecast.horizon
    fc = forecast(study, SUBJECT, post.eta, cands, horizon=horizon, every=24.0)
    # the next dose is due 24 h after the last recorded one (1344.5 h + 27 x 24 h)
    assert fc.start == 2016.5
    assert fc.end.tolist() == [2016.5 + 672.0] * 2
    model = _Reference(records, post.eta[0])
    at_start = model.state(np.array([0.0, 0.0, model.r0]), 0.0, 2016.5, model.doses)
    got = fc.metrics.set_index("candidate")
    for c, cand in enumerate(cands):
        doses = dict.fromkeys(2016.5 + 24.0 * np.arange(28), cand.dose)
        ref = model.state(at_start, 2016.5, float(fc.end[c]), doses)[2]
        assert got.loc[c, "status"] == 0
        assert got.loc[c, "RESPONSE"] == pytest.approx(ref, rel=RTOL)
    # more drug, lower FPG: a sanity check of the reference itself
    assert got.loc[1, "RESPONSE"] < got.loc[0, "RESPONSE"] < float(records["DV"].iloc[0])


def test_recommendation_is_the_smallest_daily_dose_meeting_the_target(
    study: Study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every candidate's probabilities, eligibility and the recommendation follow from
    the forecast's FPG values (50 Laplace draws), and the report plots FPG with the
    target and the hypoglycaemia guard."""
    assert study.twins is not None
    fcs, target = study.twins.forecast, study.twins.target
    assert fcs is not None
    assert target is not None
    plotted: dict[str, Any] = {}
    monkeypatch.setattr(twin_report, "twin_png", lambda path, **kw: plotted.update(kw))
    folder = twin_report.patient_twin(
        study,
        SUBJECT,
        tmp_path,
        candidates=fcs.candidates,
        target=target,
        method="laplace",
        n=50,
        horizon=fcs.horizon,
        every=fcs.every,
    )
    table = pd.read_parquet(folder / "candidates.parquet")
    metrics = pd.read_parquet(folder / "forecast.parquet")
    assert table["daily_dose"].tolist() == [250.0, 500.0, 1000.0, 1500.0, 2000.0]
    lo, hi = target.ranges["RESPONSE"]
    assert (lo, hi, target.probability) == (4.5, 7.0, 0.7)
    assert target.guards == {"RESPONSE": ("min", 4.0)}
    eligible = []
    for c in range(len(table)):
        fpg = metrics.loc[metrics["candidate"] == c, "RESPONSE"].to_numpy()
        assert fpg.size == 50
        p_target = np.mean((fpg >= lo) & (fpg <= hi))
        p_low = np.mean(fpg < 4.0)
        assert table.loc[c, "p_target"] == p_target
        assert table.loc[c, "p_RESPONSE_min"] == p_low
        ok = p_target >= 0.7 and p_low <= 0.1
        assert table.loc[c, "eligible"] == ok
        eligible.append(ok)
    assert any(eligible)
    assert not all(eligible)  # the example tells doses apart
    best = min((d for d, ok in zip(table["daily_dose"], eligible, strict=True) if ok))
    assert table.loc[table["recommended"], "daily_dose"].tolist() == [best]
    assert plotted["output"] == "RESPONSE"  # the measured FPG, not CP
    assert plotted["target"] == {"RESPONSE": (4.5, 7.0)}
    assert plotted["guards"] == {"RESPONSE": ("min", 4.0)}


def test_target_on_an_output_the_model_lacks_is_refused(tmp_path: Path) -> None:
    """The glucose output is RESPONSE (idr1's): a range and a guard on other names are
    both refused when the study loads, each naming its key and what it could read."""
    with pytest.raises(ConfigError) as err:
        _study(
            tmp_path,
            {"target": {"GLU": [4.5, 7.0], "safety": {"FPG_min": 4.0}, "probability": 0.7}},
        )
    text = str(err.value)
    assert "2 problems found" in text
    assert "outputs.twins.target.GLU: a target reads a forecast metric" in text
    assert "outputs.twins.target.safety.FPG_min: a target reads a forecast metric" in text
    assert "CP, RESPONSE, ae_hypoglycaemia_grade), got 'GLU'" in text


def _generator(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The generator script as a module (registered while the test runs: its
    dataclass needs it)."""
    path = DATA / "make_glucose_dataset.py"
    spec = importlib.util.spec_from_file_location("make_glucose_dataset", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_files_are_what_the_script_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _generator(monkeypatch).main([str(tmp_path)]) == 0
    for name in ("glucose_titration.csv", "glucose_titration_update.csv"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes()
    d = pd.read_csv(DATA / "glucose_titration.csv", na_values=".")
    assert d["ID"].nunique() == 30
    doses = d[d["EVID"] == 1]
    assert (doses["CMT"] == 1).all()
    assert set(doses["AMT"]) <= {250, 500, 1000, 1500, 2000}
    crcl = d.groupby("ID")["CRCL"]
    assert ((crcl.min() / crcl.max()) < 0.65).sum() >= 5  # renal function falls
