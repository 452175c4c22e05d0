"""Derived covariates: body size and renal function computed from sampled covariates.

:data:`DERIVED` lists each derived covariate with the covariates it needs and its unit;
:func:`derive_covariates` computes them from the published equations (BMI, BSA,
creatinine clearance, eGFR, lean body weight). A new derived covariate goes into both
(and into the study schema's list).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["DERIVED", "derive_covariates"]


#: Derived covariates: name -> (covariates needed, unit).
DERIVED: dict[str, tuple[tuple[str, ...], str]] = {
    "bmi": (("weight", "height"), "kg/m2"),
    "bsa": (("weight", "height"), "m2"),
    "bsa_dubois": (("weight", "height"), "m2"),
    "crcl": (("age", "weight", "scr", "sex"), "mL/min"),
    "egfr": (("age", "scr", "sex"), "mL/min/1.73m2"),
    "lbw": (("weight", "height", "sex"), "kg"),
}


def derive_covariates(names: list[str], c: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Compute derived covariates.

    - ``bmi`` (kg/m²) = weight / (height/100)²
    - ``bsa`` (m², Mosteller 1987) = sqrt(height · weight / 3600)
    - ``bsa_dubois`` (m², DuBois & DuBois 1916) = 0.007184 · weight^0.425 · height^0.725
    - ``crcl`` (mL/min, Cockcroft & Gault 1976) = (140 − age) · weight / (72 · scr), × 0.85 if F
    - ``egfr`` (mL/min/1.73 m², CKD-EPI 2021, Inker et al. NEJM 2021) =
      142 · min(scr/κ, 1)^α · max(scr/κ, 1)^−1.200 · 0.9938^age (× 1.012 if F),
      κ = 0.7 (F) / 0.9 (M), α = −0.241 (F) / −0.302 (M)
    - ``lbw`` (kg, Janmahasatian et al. 2005) = 9270 · W / (6680 + 216 · BMI) for M,
      9270 · W / (8780 + 244 · BMI) for F

    Units: weight kg, height cm, age years, scr (serum creatinine) mg/dL.
    """
    out: dict[str, np.ndarray] = {}
    female = np.asarray(c["sex"]) == "F" if "sex" in c else None
    for name in names:
        if name == "bmi":
            out[name] = c["weight"] / np.square(c["height"] / 100.0)
        elif name == "bsa":
            out[name] = np.sqrt(c["height"] * c["weight"] / 3600.0)
        elif name == "bsa_dubois":
            out[name] = 0.007184 * c["weight"] ** 0.425 * c["height"] ** 0.725
        elif name == "crcl":
            assert female is not None
            v = (140.0 - c["age"]) * c["weight"] / (72.0 * c["scr"])
            out[name] = np.where(female, 0.85 * v, v)
        elif name == "egfr":
            assert female is not None
            kappa = np.where(female, 0.7, 0.9)
            alpha = np.where(female, -0.241, -0.302)
            r = c["scr"] / kappa
            v = 142.0 * np.minimum(r, 1.0) ** alpha * np.maximum(r, 1.0) ** -1.2
            v = v * 0.9938 ** c["age"]
            out[name] = np.where(female, 1.012 * v, v)
        elif name == "lbw":
            assert female is not None
            bmi = c["weight"] / np.square(c["height"] / 100.0)
            out[name] = np.where(
                female,
                9270.0 * c["weight"] / (8780.0 + 244.0 * bmi),
                9270.0 * c["weight"] / (6680.0 + 216.0 * bmi),
            )
        else:  # pragma: no cover - schema guards
            raise ValueError(f"unknown derived covariate {name!r}")
    return out
