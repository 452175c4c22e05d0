"""Readers of Monolix's ``populationParameters.txt`` and ``estimatedRandomEffects.txt``
(:mod:`vtrial.data.monolix`), on synthetic files written here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.data.fitted_files import error_message, write
from vtrial.data.monolix import read_monolix_etas, read_monolix_population

# ---------------------------------------------------------------------------- Monolix


POPULATION = """parameter,value,se_sa,rse_sa
k_a_pop,1.2,0.1,8.33
Cl_pop,0.5,0.02,4
V_pop,10,0.8,8
beta_Cl_logtWT,0.75,0.1,13.3
omega_k_a,0.3,0.05,16.7
omega_Cl,0.25,0.03,12
omega_V,0.2,0.02,10
corr_V_Cl,0.4,0.1,25
corr_k_a_Cl,-0.2,0.1,50
a,0.1,0.01,10
b,0.05,,
"""


def test_monolix_population_sd_to_variance_and_correlation_to_covariance(
    tmp_path: Path,
) -> None:
    est = read_monolix_population(write(tmp_path / "pp.txt", POPULATION.splitlines()))
    assert dict(est.typical) == {"k_a": 1.2, "Cl": 0.5, "V": 10.0}
    assert est.omega_names == ("k_a", "Cl", "V")
    # by hand: variances 0.3², 0.25², 0.2²; cov(V, Cl) = 0.4·0.2·0.25 = 0.02,
    # cov(k_a, Cl) = -0.2·0.3·0.25 = -0.015, cov(k_a, V) = 0
    expected = np.array([[0.09, -0.015, 0.0], [-0.015, 0.0625, 0.02], [0.0, 0.02, 0.04]])
    np.testing.assert_allclose(est.omega, expected, rtol=1e-12)
    assert dict(est.residual) == {"a": 0.1, "b": 0.05}
    assert dict(est.covariate_effects) == {"Cl_logtWT": 0.75}
    assert est.se["Cl_pop"] == 0.02
    assert np.isnan(est.se["b"])


def test_monolix_population_problems(tmp_path: Path) -> None:
    text = POPULATION.replace("Cl_pop,0.5", "Cl_pop,abc").replace("corr_V_Cl,0.4", "corr_V_Q,0.4")
    path = write(tmp_path / "pp.txt", text.splitlines())
    msg = error_message(read_monolix_population, path)
    assert f"{path}: row 2 (line 3), column value: must be a number, got 'abc'" in msg
    assert f"{path}: row 8 (line 9), column parameter: a correlation must name two" in msg
    assert "'corr_V_Q'" in msg


def test_monolix_population_correlation_out_of_range(tmp_path: Path) -> None:
    path = write(tmp_path / "pp.txt", POPULATION.replace("0.4,0.1,25", "1.4,0.1,25").splitlines())
    msg = error_message(read_monolix_population, path)
    assert f"{path}: row 8 (line 9), column value: a correlation must be in [-1, 1], got 1.4" in msg


RANDOM_EFFECTS = """id;eta_k_a_SAEM;eta_k_a_mode;eta_k_a_mean;eta_k_a_sd;\
eta_Cl_mode;eta_Cl_mean;eta_Cl_sd
1;0.11;0.1;0.12;0.05;-0.2;-0.19;0.04
2;-0.3;-0.31;-0.29;0.06;0.12;0.1;0.05
7;0.0;0.01;0.02;0.07;0.25;0.24;0.03
"""


@pytest.mark.parametrize(
    ("estimate", "k_a", "cl"),
    [
        ("mode", [0.1, -0.31, 0.01], [-0.2, 0.12, 0.25]),
        ("mean", [0.12, -0.29, 0.02], [-0.19, 0.1, 0.24]),
    ],
)
def test_monolix_random_effects(
    tmp_path: Path, estimate: str, k_a: list[float], cl: list[float]
) -> None:
    path = write(tmp_path / "re.txt", RANDOM_EFFECTS.splitlines())
    etas = read_monolix_etas(path, estimate=estimate)  # type: ignore[arg-type]
    assert etas.estimate == estimate
    assert list(etas.etas.columns) == ["k_a", "Cl"]
    assert etas.etas.index.tolist() == [1, 2, 7]
    np.testing.assert_allclose(etas.etas["k_a"], k_a)
    np.testing.assert_allclose(etas.etas["Cl"], cl)
    assert etas.sd is not None
    np.testing.assert_allclose(etas.sd["Cl"], [0.04, 0.05, 0.03])


def test_monolix_random_effects_problems(tmp_path: Path) -> None:
    text = RANDOM_EFFECTS.replace("\n7;", "\n2;")
    path = write(tmp_path / "re.txt", text.splitlines())
    msg = error_message(read_monolix_etas, path)
    assert f"{path}: row 3 (line 4), column id: an ID may appear once, got '2' again" in msg
    lines = [line.replace("_mode", "_EBE") for line in RANDOM_EFFECTS.splitlines()]
    path = write(tmp_path / "re2.txt", lines)
    msg = error_message(read_monolix_etas, path)
    assert f"{path}: line 1: no eta_<parameter>_mode column (estimates found: EBE, SAEM" in msg
    with pytest.raises(ValueError, match="estimate must be"):
        read_monolix_etas(path, estimate="median")  # type: ignore[arg-type]


def test_monolix_ids_as_text(tmp_path: Path) -> None:
    text = RANDOM_EFFECTS.replace("\n1;", "\nP-01;").replace("\n2;", "\nP-02;")
    etas = read_monolix_etas(write(tmp_path / "re.txt", text.splitlines()))
    assert etas.etas.index.tolist() == ["P-01", "P-02", "7"]
    assert isinstance(etas.etas, pd.DataFrame)


def test_monolix_population_correlations_not_positive_semi_definite(tmp_path: Path) -> None:
    text = (
        POPULATION.replace("corr_V_Cl,0.4", "corr_V_Cl,0.9").replace(
            "corr_k_a_Cl,-0.2", "corr_k_a_Cl,0.9"
        )
        + "corr_k_a_V,-0.9,0.1,10\n"
    )
    path = write(tmp_path / "pp.txt", text.splitlines())
    msg = error_message(read_monolix_population, path)
    assert f"{path}: column value: the corr_ rows must give a positive semi-definite OMEGA" in msg
