"""A study that starts from a Monolix or nlmixr2 fit: ``model.from_fit.monolix`` and
``model.from_fit.nlmixr2`` (:mod:`vtrial.study.fit`).

Every fitted file is synthetic, written here from this file's numbers in the layout
Monolix writes (``populationParameters.txt``, ``estimatedRandomEffects.txt``, the
covariance of ``FisherInformation``) and R writes for nlmixr2 (``write.csv`` of
``fixef(fit)``, ``fit$omega``, ``ranef(fit)``, ``vcov(fit)``). The numbers are dyadic
where a derived value must be exact (an OMEGA from a Monolix SD and correlation), so
the study written out by hand is compared bit for bit; nlmixr2's log-scale typical
values are written with ``repr`` and the hand-written study takes ``exp`` of the same
floats.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.study.test_config import DELETE, assert_reported, mutate, refused, write_study
from tests.study.test_from_fit import base_study, by_hand
from vtrial.model.residual import ErrorModel
from vtrial.population.sampling import sample_population
from vtrial.study.config import load_study

# ---------------------------------------------------------------------------- Monolix

POPULATION = """parameter,value,se_sa,rse_sa
Cl_pop,4.5,0.3,6.67
V_pop,36,2,5.56
Q_pop,8.25,0.5,6.06
V2_pop,80,4,5
ka_pop,1.5,0.1,6.67
omega_Cl,0.5,0.05,10
omega_V,0.25,0.03,12
omega_ka,0.75,0.1,13.3
corr_V_Cl,0.5,0.1,20
a,0.5,0.05,10
b,0.125,0.01,8
"""
#: the covariance of the estimates (Monolix: names then values, no header)
MLX_NAMES = ["Cl_pop", "V_pop", "Q_pop", "V2_pop", "ka_pop", "omega_Cl", "b"]
MLX_COV = np.array(
    [
        [0.0025, 0.001, 0.0, 0.0, 0.0005, 0.0, 0.0],
        [0.001, 0.0016, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0036, 0.0004, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0004, 0.0025, 0.0, 0.0, 0.0],
        [0.0005, 0.0, 0.0, 0.0, 0.0049, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0001, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0001],
    ]
)
RANDOM_EFFECTS = """id,eta_Cl_mode,eta_V_mode,eta_ka_mode,eta_Cl_mean,eta_V_mean,eta_ka_mean,\
eta_Cl_sd
1,0.1,-0.2,0.05,0.11,-0.19,0.04,0.2
2,-0.3,0.15,0,-0.29,0.14,0.01,0.2
7,0,0.25,-0.125,0.01,0.24,-0.12,0.2
"""
MLX_MAP = {
    "Cl_pop": "CL",
    "V_pop": "V1",
    "Q_pop": "Q2",
    "V2_pop": "V2",
    "ka_pop": "KA",
    "omega_Cl": "CL",
    "omega_V": "V1",
    "omega_ka": "KA",
    "b": "CP.proportional",
    "a": "CP.additive",
}


def _matrix_lines(names: list[str], m: np.ndarray, header: bool) -> str:
    rows = [",".join([n, *(repr(float(x)) for x in m[i])]) for i, n in enumerate(names)]
    if header:  # R's write.csv of a matrix
        rows.insert(0, ",".join(['""', *(f'"{n}"' for n in names)]))
    return "\n".join(rows) + "\n"


def write_monolix(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    files = {
        "parameters": folder / "populationParameters.txt",
        "random_effects": folder / "estimatedRandomEffects.txt",
        "covariance": folder / "covarianceEstimatesSA.txt",
    }
    files["parameters"].write_text(POPULATION)
    files["random_effects"].write_text(RANDOM_EFFECTS)
    files["covariance"].write_text(_matrix_lines(MLX_NAMES, MLX_COV, header=False))
    return files


def monolix_study(**monolix: Any) -> dict[str, Any]:
    d = base_study()
    d["model"]["from_fit"] = {
        "monolix": {
            "parameters": "fits/populationParameters.txt",
            "random_effects": "fits/estimatedRandomEffects.txt",
            "covariance": "fits/covarianceEstimatesSA.txt",
            "covariance_scale": "log",
            **monolix,
        },
        "map": dict(MLX_MAP),
    }
    return d


def monolix_by_hand() -> dict[str, Any]:
    d = by_hand()
    d["model"]["iiv"]["omega"]["KA"] = 0.5625  # omega_ka = 0.75
    d["study"]["uncertainty"]["theta"] = {
        "parameters": ["CL", "V1", "Q2", "V2", "KA"],
        "covariance": [[float(x) for x in row] for row in MLX_COV[:5, :5]],
        "scale": "log",
    }
    return d


def test_a_monolix_fit_gives_the_study_written_by_hand(tmp_path: Path) -> None:
    files = write_monolix(tmp_path / "fits")
    fitted = load_study(write_study(tmp_path, monolix_study(), "fitted.yaml"))
    hand = load_study(write_study(tmp_path, monolix_by_hand(), "hand.yaml"))
    assert fitted.effective["model"]["parameters"] == hand.effective["model"]["parameters"]
    assert fitted.effective["model"]["iiv"] == hand.effective["model"]["iiv"]
    assert fitted.observations.errors == {"CP": ErrorModel(additive=0.5, proportional=0.125)}
    assert fitted.observations.errors == hand.observations.errors
    assert fitted.uncertainty == hand.uncertainty
    assert fitted.uncertainty.theta is not None
    assert fitted.uncertainty.theta.scale == "log"
    np.testing.assert_array_equal(fitted.variability.omega, hand.variability.omega)
    pd.testing.assert_frame_equal(
        sample_population(fitted), sample_population(hand), check_exact=True
    )
    fit = fitted.fit
    assert fit is not None
    assert fit.etas is not None
    assert list(fit.etas.columns) == ["CL", "V1", "KA"]
    np.testing.assert_array_equal(fit.etas.loc[7].to_numpy(), [0.0, 0.25, -0.125])
    assert dict(fit.sources) == {
        k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in files.items()
    }
    assert fitted.data_files == list(files.values())
    assert "from_fit" in fitted.data["model"]


def test_monolix_conditional_means_and_a_changed_file_changes_the_hash(tmp_path: Path) -> None:
    files = write_monolix(tmp_path / "fits")
    path = write_study(tmp_path, monolix_study(estimate="mean"))
    study = load_study(path)
    before = study.sha256  # computed when first asked
    assert study.fit is not None
    assert study.fit.etas is not None
    np.testing.assert_array_equal(study.fit.etas.loc[1].to_numpy(), [0.11, -0.19, 0.04])
    files["parameters"].write_text(POPULATION.replace("Cl_pop,4.5", "Cl_pop,4.6"))
    after = load_study(path)
    assert after.sha256 != before
    assert after.model.parameters["CL"].value == 4.6


def test_monolix_random_effects_drive_a_dataset_study(tmp_path: Path) -> None:
    write_monolix(tmp_path / "fits")
    records = "ID,TIME,AMT,DV,weight\n" + "".join(
        f"{i},0,100,.,{w}\n{i},2,0,1.0,{w}\n" for i, w in ((1, 60), (2, 70), (7, 85))
    )
    (tmp_path / "data.csv").write_text(records)
    d = monolix_study()
    del d["arms"], d["population"], d["study"]["replicates"]
    del d["model"]["from_fit"]["monolix"]["covariance"]
    del d["model"]["from_fit"]["monolix"]["covariance_scale"]
    d["population"] = {"dataset": {"path": "data.csv", "parameters": "fit"}}
    d["outputs"] = {"observations": {"outputs": ["CP"]}}
    pop = sample_population(load_study(write_study(tmp_path, d)))
    expected = 4.5 * (np.array([60.0, 70.0, 85.0]) / 70) ** 0.75 * np.exp([0.1, -0.3, 0.0])
    np.testing.assert_allclose(pop["CL"], expected, rtol=1e-15)
    del d["model"]["from_fit"]["monolix"]["random_effects"]
    err = refused(write_study(tmp_path, d))
    assert_reported(
        err,
        ["population.dataset.parameters", "model.from_fit.monolix.random_effects"],
    )


# ---------------------------------------------------------------------------- nlmixr2

FIXEF = {
    "tcl": math.log(4.5),
    "tv1": math.log(36.0),
    "tq": math.log(8.25),
    "tv2": math.log(80.0),
    "tka": math.log(1.5),
    "prop.sd": 0.125,
    "add.sd": 0.5,
}
ETA_NAMES = ["eta.cl", "eta.v1", "eta.ka"]
NLX_OMEGA = np.array([[0.25, 0.0625, 0.0], [0.0625, 0.0625, 0.0], [0.0, 0.0, 0.5]])
COV_NAMES = list(FIXEF)
NLX_COV = np.diag([0.01, 0.0036, 0.0049, 0.0025, 0.0064, 1e-4, 1e-4])
NLX_COV[0, 1] = NLX_COV[1, 0] = 0.003
NLX_MAP: dict[str, Any] = {
    "tcl": {"parameter": "CL", "scale": "log"},
    "tv1": {"parameter": "V1", "scale": "log"},
    "tq": {"parameter": "Q2", "scale": "log"},
    "tv2": {"parameter": "V2", "scale": "log"},
    "tka": {"parameter": "KA", "scale": "log"},
    "eta.cl": "CL",
    "eta.v1": "V1",
    "eta.ka": "KA",
    "prop.sd": "CP.proportional",
    "add.sd": "CP.additive",
}


def write_nlmixr2(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    files = {k: folder / f"{k}.csv" for k in ("fixef", "omega", "ranef", "cov")}
    files["fixef"].write_text(
        '"name","value"\n' + "".join(f'"{k}",{v!r}\n' for k, v in FIXEF.items())
    )
    files["omega"].write_text(_matrix_lines(ETA_NAMES, NLX_OMEGA, header=True))
    files["ranef"].write_text(
        '"ID","eta.cl","eta.v1","eta.ka"\n1,0.1,-0.2,0.05\n2,-0.3,0.15,0\n7,0,0.25,-0.125\n'
    )
    files["cov"].write_text(_matrix_lines(COV_NAMES, NLX_COV, header=True))
    return files


def nlmixr2_study(fit_map: dict[str, Any] | None = None, **files: Any) -> dict[str, Any]:
    d = base_study()
    d["model"]["from_fit"] = {
        "nlmixr2": {k: f"fits/{k}.csv" for k in ("fixef", "omega", "ranef", "cov")} | files,
        "map": dict(NLX_MAP if fit_map is None else fit_map),
    }
    return d


def nlmixr2_by_hand() -> dict[str, Any]:
    d = by_hand()
    for name, key in (("CL", "tcl"), ("V1", "tv1"), ("Q2", "tq"), ("V2", "tv2"), ("KA", "tka")):
        d["model"]["parameters"][name]["value"] = math.exp(FIXEF[key])
    d["study"]["uncertainty"]["theta"] = {
        "parameters": ["CL", "V1", "Q2", "V2", "KA"],
        "covariance": [[float(x) for x in row] for row in NLX_COV[:5, :5]],
        "scale": "log",
    }
    return d


def test_an_nlmixr2_fit_gives_the_study_written_by_hand(tmp_path: Path) -> None:
    files = write_nlmixr2(tmp_path / "fits")
    fitted = load_study(write_study(tmp_path, nlmixr2_study(), "fitted.yaml"))
    hand = load_study(write_study(tmp_path, nlmixr2_by_hand(), "hand.yaml"))
    assert fitted.effective["model"]["parameters"] == hand.effective["model"]["parameters"]
    assert fitted.model.parameters["CL"].value == pytest.approx(4.5, rel=1e-15)
    assert fitted.effective["model"]["iiv"] == hand.effective["model"]["iiv"]
    assert fitted.effective["model"]["iiv"]["correlations"] == {"CL~V1": 0.5}
    assert fitted.observations.errors == {"CP": ErrorModel(additive=0.5, proportional=0.125)}
    assert fitted.uncertainty == hand.uncertainty
    pd.testing.assert_frame_equal(
        sample_population(fitted), sample_population(hand), check_exact=True
    )
    fit = fitted.fit
    assert fit is not None
    assert fit.etas is not None
    assert list(fit.etas.columns) == ["CL", "V1", "KA"]
    assert list(fit.etas.index) == [1, 2, 7]
    assert dict(fit.sources) == {
        k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in files.items()
    }
    assert fitted.data_files == list(files.values())


def test_nlmixr2_linear_fixed_effects_and_no_covariance(tmp_path: Path) -> None:
    write_nlmixr2(tmp_path / "fits")
    d = nlmixr2_study({"tcl": "CL", "eta.cl": "CL", "eta.v1": "V1", "eta.ka": "KA"})
    del d["model"]["from_fit"]["nlmixr2"]["cov"]
    study = load_study(write_study(tmp_path, d))
    assert study.model.parameters["CL"].value == FIXEF["tcl"]  # as estimated
    assert study.uncertainty.theta is None


# ---------------------------------------------------------------------------- problems


def _garble_population(folder: Path) -> None:
    (folder / "populationParameters.txt").write_text(POPULATION.replace("V_pop,36", "V_pop,3x6"))


def _garble_omega(folder: Path) -> None:
    text = (folder / "omega.csv").read_text().replace("0.0625", "0.06z5", 1)
    (folder / "omega.csv").write_text(text)


def _ranef_without_ka(folder: Path) -> None:
    (folder / "ranef.csv").write_text('"ID","eta.cl","eta.v1"\n1,0.1,-0.2\n')


def _remap(d: dict[str, Any], drop: tuple[str, ...] = (), **entries: Any) -> dict[str, Any]:
    out = mutate(d, {})
    m = out["model"]["from_fit"]["map"]
    for k in drop:
        del m[k]
    m.update(entries)
    return out


MLX = "model.from_fit.monolix"
NLX = "model.from_fit.nlmixr2"

PROBLEMS: list[tuple[str, str, dict[str, Any], Any, list[str]]] = [
    (
        "monolix: unknown name",
        "monolix",
        _remap(monolix_study(), ("Cl_pop",), Cll_pop="CL"),
        None,
        ["model.from_fit.map.Cll_pop: 'Cll_pop' is not a fixed effect of", "populationParam"],
    ),
    (
        "monolix: value given twice",
        "monolix",
        mutate(monolix_study(), {"model.parameters.CL.value": 5.0}),
        None,
        ["model.from_fit.map.Cl_pop: ", "from Cl_pop of the fit", "CL.value gives 5.0 too"],
    ),
    (
        "monolix: omega given twice",
        "monolix",
        mutate(monolix_study(), {"model.iiv.omega.V1": 0.1}),
        None,
        ["model.from_fit.map.omega_V: ", "from omega_V of the fit", "omega.V1 gives 0.1"],
    ),
    (
        "monolix: correlation given twice",
        "monolix",
        mutate(monolix_study(), {"model.iiv.correlations": {"V1~CL": 0.3}}),
        None,
        ["model.from_fit.map.omega_", "the covariance of omega_Cl and omega_V", "gives 0.3"],
    ),
    (
        "monolix: missing file",
        "monolix",
        mutate(monolix_study(), {f"{MLX}.parameters": "fits/nothere.txt"}),
        None,
        [f"{MLX}.parameters: cannot read the fitted file", "'fits/nothere.txt'"],
    ),
    (
        "monolix: non-numeric cell",
        "monolix",
        monolix_study(),
        _garble_population,
        [f"{MLX}.parameters: ", "row 2 (line 3), column value", "must be a number", "'3x6'"],
    ),
    (
        "monolix: covariance without its scale",
        "monolix",
        mutate(monolix_study(), {f"{MLX}.covariance_scale": DELETE}),
        None,
        [f"{MLX}.covariance_scale: is required with covariance"],
    ),
    (
        "monolix: a correlation mapped",
        "monolix",
        _remap(monolix_study(), corr_V_Cl="CL"),
        None,
        ["model.from_fit.map.corr_V_Cl: a correlation comes with the random effects"],
    ),
    (
        "monolix: a scale",
        "monolix",
        _remap(monolix_study(), Cl_pop={"parameter": "CL", "scale": "log"}),
        None,
        ["model.from_fit.map.Cl_pop.scale: Monolix gives typical values"],
    ),
    (
        "monolix: a correlated random effect left out",
        "monolix",
        _remap(monolix_study(), ("omega_Cl",)),
        None,
        ["model.from_fit.map.omega_V: the covariance 0.0625 of omega_V and omega_Cl"],
    ),
    (
        "monolix: two formats",
        "monolix",
        mutate(monolix_study(), {"model.from_fit.ext": "fits/run12.ext"}),
        None,
        ["model.from_fit: give the fit's files under exactly one of", "['ext', 'monolix']"],
    ),
    (
        "monolix: a NONMEM key",
        "monolix",
        mutate(monolix_study(), {"model.from_fit.phi": "fits/run12.phi"}),
        None,
        ["model.from_fit.phi: ['phi'] are keys of a NONMEM fit"],
    ),
    (
        "monolix: a residual-error parameter mapped to a parameter",
        "monolix",
        _remap(monolix_study(), ("Q_pop",), a="Q2"),
        None,
        ["model.from_fit.map.a: a is a residual-error parameter", "got 'Q2'"],
    ),
    (
        "monolix: a scale without a covariance",
        "monolix",
        mutate(monolix_study(), {f"{MLX}.covariance": DELETE}),
        None,
        [f"{MLX}.covariance_scale: is the scale of covariance, which is not given"],
    ),
    (
        "nlmixr2: unknown name",
        "nlmixr2",
        _remap(nlmixr2_study(), eta_q="Q2"),
        None,
        ["model.from_fit.map.eta_q: 'eta_q' is not a fixed effect of", "fixef.csv", "omega.csv"],
    ),
    (
        "nlmixr2: residual error given twice",
        "nlmixr2",
        mutate(nlmixr2_study(), {"model.residual_error.CP.additive": 0.2}),
        None,
        ["model.from_fit.map.add.sd: CP.additive comes from add.sd", "gives 0.2 too"],
    ),
    (
        "nlmixr2: a scale other than linear or log",
        "nlmixr2",
        _remap(nlmixr2_study(), tcl={"parameter": "CL", "scale": "exp"}),
        None,
        ["model.from_fit.map.tcl.scale: must be one of ['linear', 'log']", "exp"],
    ),
    (
        "nlmixr2: a scale for a random effect",
        "nlmixr2",
        _remap(nlmixr2_study(), **{"eta.cl": {"parameter": "CL", "scale": "log"}}),
        None,
        ["model.from_fit.map.eta.cl.scale: eta.cl is a random effect"],
    ),
    (
        "nlmixr2: two scales in the covariance",
        "nlmixr2",
        _remap(nlmixr2_study(), tq="Q2"),
        None,
        [f"{NLX}.cov: study.uncertainty.theta has one scale", "(tq)"],
    ),
    (
        "nlmixr2: missing file",
        "nlmixr2",
        mutate(nlmixr2_study(), {f"{NLX}.ranef": "fits/gone.csv"}),
        None,
        [f"{NLX}.ranef: cannot read the fitted file", "'fits/gone.csv'"],
    ),
    (
        "nlmixr2: non-numeric cell",
        "nlmixr2",
        nlmixr2_study(),
        _garble_omega,
        [f"{NLX}.omega: ", "omega.csv, row 1 (line 2), column eta.v1", "'0.06z5'"],
    ),
    (
        "nlmixr2: a random effect without its column",
        "nlmixr2",
        nlmixr2_study(),
        _ranef_without_ka,
        ["model.from_fit.map.eta.ka: ", "ranef.csv has no column 'eta.ka'"],
    ),
    (
        "nlmixr2: a parameter mapped twice",
        "nlmixr2",
        _remap(nlmixr2_study(), tq="CL"),
        None,
        ["model.from_fit.map.tq: CL is already mapped from tcl"],
    ),
    (
        "nlmixr2: not a model parameter",
        "nlmixr2",
        _remap(nlmixr2_study(), tq={"parameter": "Q3", "scale": "log"}),
        None,
        ["model.from_fit.map.tq: not a model parameter", "got 'Q3'"],
    ),
]


@pytest.mark.parametrize(
    ("fmt", "data", "files", "expected"),
    [p[1:] for p in PROBLEMS],
    ids=[p[0] for p in PROBLEMS],
)
def test_each_problem_is_reported_once_naming_the_key(
    tmp_path: Path, fmt: str, data: dict[str, Any], files: Any, expected: list[str]
) -> None:
    folder = tmp_path / "fits"
    (write_monolix if fmt == "monolix" else write_nlmixr2)(folder)
    if files is not None:
        files(folder)
    err = refused(write_study(tmp_path, data))
    assert len(err.problems) == 1, str(err)
    assert_reported(err, expected)
