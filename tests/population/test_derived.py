"""Derived covariates (vtrial.population.derived) against values computed by hand from the
published equations: BMI, BSA (Mosteller, DuBois), Cockcroft-Gault creatinine clearance,
CKD-EPI 2021 eGFR and the Janmahasatian lean body weight.
"""

from __future__ import annotations

import numpy as np
import pytest

from vtrial.population.derived import DERIVED, derive_covariates


def test_every_derived_covariate_is_computed() -> None:
    """derive_covariates computes every name of DERIVED from the covariates it lists."""
    c = {
        "sex": np.array(["F", "M"], dtype=object),
        "age": np.array([50.0, 60.0]),
        "weight": np.array([60.0, 80.0]),
        "height": np.array([165.0, 180.0]),
        "scr": np.array([0.8, 1.0]),
    }
    for name, (needs, _) in DERIVED.items():
        out = derive_covariates([name], {k: c[k] for k in needs})
        assert list(out) == [name]
        assert out[name].shape == (2,)
        assert np.all(np.isfinite(out[name]))


def test_derived_covariates_hand_checked() -> None:
    c = {
        "weight": np.array([70.0, 60.0]),
        "height": np.array([175.0, 160.0]),
        "age": np.array([40.0, 70.0]),
        "scr": np.array([1.0, 0.8]),
        "sex": np.array(["M", "F"], dtype=object),
    }
    d = derive_covariates(["bmi", "bsa", "bsa_dubois", "crcl", "egfr", "lbw"], c)
    np.testing.assert_allclose(d["bmi"], [70 / 1.75**2, 60 / 1.6**2], rtol=1e-14)
    np.testing.assert_allclose(d["bsa"], np.sqrt([175 * 70 / 3600, 160 * 60 / 3600]), rtol=1e-14)
    np.testing.assert_allclose(
        d["bsa_dubois"], 0.007184 * np.array([70, 60]) ** 0.425 * np.array([175, 160]) ** 0.725
    )
    # Cockcroft-Gault: (140-40)*70/72 = 97.22 mL/min; female (140-70)*60/(72*0.8)*0.85
    np.testing.assert_allclose(d["crcl"], [100 * 70 / 72, 70 * 60 / 57.6 * 0.85], rtol=1e-14)
    # CKD-EPI 2021, male scr 1.0 (> kappa 0.9): 142 * (1/0.9)^-1.2 * 0.9938^40
    m = 142 * (1 / 0.9) ** -1.2 * 0.9938**40
    f = 142 * (0.8 / 0.7) ** -1.2 * 0.9938**70 * 1.012
    np.testing.assert_allclose(d["egfr"], [m, f], rtol=1e-12)
    bmi = d["bmi"]
    lbw = [9270 * 70 / (6680 + 216 * bmi[0]), 9270 * 60 / (8780 + 244 * bmi[1])]
    np.testing.assert_allclose(d["lbw"], lbw, rtol=1e-14)


def test_derived_covariates_against_hand_computed_values() -> None:
    """Values worked out by hand from the published equations (rounded as shown).

    Patient 1: M, 60 y, 72 kg, 180 cm, scr 1.0; patient 2: F, 60 y, 72 kg, 165 cm,
    scr 1.0; patient 3: M, 50 y, 80 kg, 180 cm, scr 1.0; patient 4: F, 50 y, 60 kg,
    165 cm, scr 1.0; patient 5: F, 30 y, 60 kg, 165 cm, scr 0.6; patient 6: M, 70 y,
    80 kg, 180 cm, scr 0.8.
    """
    c = {
        "sex": np.array(["M", "F", "M", "F", "F", "M"], dtype=object),
        "age": np.array([60.0, 60.0, 50.0, 50.0, 30.0, 70.0]),
        "weight": np.array([72.0, 72.0, 80.0, 60.0, 60.0, 80.0]),
        "height": np.array([180.0, 165.0, 180.0, 165.0, 165.0, 180.0]),
        "scr": np.array([1.0, 1.0, 1.0, 1.0, 0.6, 0.8]),
    }
    d = derive_covariates(["bmi", "bsa", "bsa_dubois", "crcl", "egfr", "lbw"], c)
    # Cockcroft-Gault: (140 - 60) * 72 / (72 * 1.0) = 80 mL/min; female x 0.85 = 68;
    # (140 - 50) * 80 / 72 = 100; (140 - 50) * 60 / 72 * 0.85 = 63.75;
    # (140 - 30) * 60 / (72 * 0.6) * 0.85 = 129.86; (140 - 70) * 80 / (72 * 0.8) = 97.22
    np.testing.assert_allclose(d["crcl"], [80, 68, 100, 63.75, 129.86, 97.22], rtol=5e-4)
    # BMI: 80 / 1.8^2 = 24.69 kg/m2; 60 / 1.65^2 = 22.04
    np.testing.assert_allclose(d["bmi"][[2, 3]], [24.69, 22.04], rtol=5e-4)
    # Mosteller: sqrt(180 * 80 / 3600) = sqrt(4) = 2 m2 exactly; sqrt(165 * 60 / 3600) = 1.658
    assert d["bsa"][2] == 2.0
    assert d["bsa"][3] == pytest.approx(1.658, rel=5e-4)
    # DuBois: 0.007184 * 80^0.425 (6.4388) * 180^0.725 (43.154) = 1.9962 m2
    assert d["bsa_dubois"][2] == pytest.approx(1.9962, rel=5e-4)
    # CKD-EPI 2021 (race-free), rounded like the NKF calculator: 50 y M scr 1.0 -> 92,
    # 50 y F scr 1.0 -> 69 (142 * (1/0.7)^-1.2 * 0.9938^50 * 1.012 = 68.6);
    # 30 y F scr 0.6 < kappa: 142 * (0.6/0.7)^-0.241 * 0.9938^30 * 1.012 = 123.8 -> 124;
    # 70 y M scr 0.8 < kappa: 142 * (0.8/0.9)^-0.302 * 0.9938^70 = 95.2 -> 95
    assert np.round(d["egfr"][2:]).tolist() == [92, 69, 124, 95]
    # Janmahasatian 2005 LBW: M 9270 * 80 / (6680 + 216 * 24.69) = 61.73 kg;
    # F 9270 * 60 / (8780 + 244 * 22.04) = 39.29 kg
    np.testing.assert_allclose(d["lbw"][[2, 3]], [61.73, 39.29], rtol=5e-4)
