"""The declared mapping of fitted quantities (THETA, ETA, SIGMA) to model parameters
(:mod:`vtrial.data.fitted`).

The fitted files are synthetic NONMEM tables written by :mod:`tests.data.fitted_files`
(6 significant digits: values are compared with a relative tolerance of 1e-5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.data.fitted_files import (
    COV_NAMES,
    ETAS,
    IDS,
    OBJ,
    OMEGA,
    OMEGA_FIX,
    RTOL,
    SIGMA_FIX,
    THETA,
    THETA_FIX,
    cov_matrix,
    cov_table,
    error_message,
    ext_file,
    phi_table,
    write,
)
from vtrial.data.fitted import FitMapping, apply_mapping, parse_mapping
from vtrial.data.nonmem import read_cov, read_ext, read_phi
from vtrial.errors import Problem

# ---------------------------------------------------------------------------- mapping


MAP = {
    "THETA(1)": "CL",
    " theta ( 2 ) ": "V1",
    "THETA(4)": "F1",
    "ETA(1)": "CL",
    "eta(2)": "V1",
    "ETA(3)": "KA",
    "SIGMA(1)": "prop",
}


def _fit_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    ext = ext_file(tmp_path, fixed=(THETA_FIX, OMEGA_FIX, SIGMA_FIX))
    cov = write(tmp_path / "run12.cov", cov_table(cov_matrix()))
    phi = write(tmp_path / "run12.phi", phi_table(IDS))
    return ext, cov, phi


def _parsed(mapping: dict[str, Any]) -> FitMapping:
    fm, problems = parse_mapping(mapping, "study.yaml", "model.from_fit.map")
    assert problems == []
    assert fm is not None
    return fm


def test_parse_mapping_reads_keys_case_and_blank_insensitively() -> None:
    fm = _parsed(MAP)
    assert dict(fm.theta) == {1: "CL", 2: "V1", 4: "F1"}
    assert dict(fm.eta) == {1: "CL", 2: "V1", 3: "KA"}
    assert dict(fm.sigma) == {1: "prop"}
    assert fm.at("THETA", 2) == "model.from_fit.map. theta ( 2 ) "


def test_apply_mapping_typical_values_omega_sigma_cov_and_etas(tmp_path: Path) -> None:
    ext_p, cov_p, phi_p = _fit_files(tmp_path)
    ext, cov, phi = read_ext(ext_p), read_cov(cov_p), read_phi(phi_p)
    fitted, problems = apply_mapping(_parsed(MAP), ext, cov, phi)
    assert problems == []
    assert fitted is not None
    assert list(fitted.typical) == ["CL", "V1", "F1"]
    np.testing.assert_allclose(list(fitted.typical.values()), THETA[[0, 1, 3]], rtol=RTOL)
    assert fitted.fixed == ("F1",)
    assert fitted.omega_names == ("CL", "V1", "KA")
    np.testing.assert_allclose(fitted.omega, OMEGA, rtol=RTOL)
    assert dict(fitted.sigma) == pytest.approx({"prop": 0.0225}, rel=RTOL)
    assert fitted.theta_cov is not None
    np.testing.assert_allclose(
        fitted.theta_cov, cov_matrix()[np.ix_([0, 1, 3], [0, 1, 3])], rtol=RTOL, atol=0
    )
    assert fitted.etas is not None
    assert list(fitted.etas.columns) == ["CL", "V1", "KA"]
    assert fitted.etas.index.tolist() == IDS
    np.testing.assert_allclose(fitted.etas.to_numpy(), ETAS, rtol=RTOL, atol=0)
    assert fitted.eta_kind == "ETA"
    assert fitted.ofv == pytest.approx(OBJ)
    assert set(fitted.sources) == {"ext", "cov", "phi"}


def test_apply_mapping_omega_sub_matrix_without_cov_or_phi(tmp_path: Path) -> None:
    ext = read_ext(ext_file(tmp_path))
    fitted, problems = apply_mapping(_parsed({"THETA(2)": "V1", "ETA(3)": "KA"}), ext)
    assert problems == []
    assert fitted is not None
    assert fitted.omega_names == ("KA",)
    np.testing.assert_allclose(fitted.omega, [[0.04]], rtol=RTOL)
    assert fitted.theta_cov is None
    assert fitted.etas is None
    assert fitted.eta_kind is None
    assert fitted.fixed == ()


def test_apply_mapping_refuses_to_drop_an_omega_covariance(tmp_path: Path) -> None:
    ext = read_ext(ext_file(tmp_path))
    fitted, problems = apply_mapping(_parsed({"THETA(1)": "CL", "ETA(1)": "CL"}), ext)
    assert fitted is None
    assert len(problems) == 1
    p = problems[0]
    assert p.file == "study.yaml"
    assert p.where == "model.from_fit.map.ETA(1)"
    assert "OMEGA(2,1) = 0.021" in p.message
    assert "links ETA(1) (CL) to ETA(2), which is not mapped" in p.message


def test_apply_mapping_unknown_indices_name_the_file_and_key(tmp_path: Path) -> None:
    ext_p, _, phi_p = _fit_files(tmp_path)
    ext, phi = read_ext(ext_p), read_phi(phi_p)
    mapping = _parsed({"THETA(7)": "CL", "ETA(4)": "V1", "SIGMA(3)": "add"})
    fitted, problems = apply_mapping(mapping, ext, phi=phi, source="other.yaml")
    assert fitted is None
    text = [str(p) for p in problems]
    assert (
        f"other.yaml: model.from_fit.map.THETA(7): THETA(7) is not in {ext_p}: it has 4 THETA(s)"
        in text
    )
    assert any("map.ETA(4): ETA(4) is not in" in t and str(ext_p) in t for t in text)
    assert any("map.SIGMA(3): SIGMA(3) is not in" in t and "2 EPS(s)" in t for t in text)


def test_apply_mapping_files_from_different_fits(tmp_path: Path) -> None:
    ext = read_ext(ext_file(tmp_path))
    phi_lines = phi_table(IDS)
    phi_lines[1] = phi_lines[1].replace("ETA(3)", "ETA(4)")  # a 4th ETA, without ETA(3)
    bad = write(tmp_path / "x.phi", phi_lines)
    assert "ETAs must be numbered 1..4, missing ETA(3)" in error_message(read_phi, bad)
    keep = [k for k in range(13) if k != 3]  # no THETA4
    small = cov_matrix()[np.ix_(keep, keep)]
    cov = read_cov(write(tmp_path / "x.cov", cov_table(small, [COV_NAMES[k] for k in keep])))
    _, problems = apply_mapping(_parsed({"THETA(2)": "V1"}), ext, cov)
    assert any("has 3 THETA(s) but" in p.message for p in problems)


def test_parse_mapping_duplicates_and_malformed_entries() -> None:
    bad = {
        "THETA(1)": "CL",
        "THETA(2)": "CL",  # CL from two THETAs
        "theta(1)": "V1",  # THETA(1) twice
        "ETA(1)": "CL",
        "ETA(2)": "CL",  # CL from two ETAs
        "THETA3": "KA",  # no parentheses
        "ETA(0)": "Q",  # index 0
        "SIGMA(1)": "2prop",  # not a name
        "OMEGA(1)": "CL",
    }
    fm, problems = parse_mapping(bad, "study.yaml", "from_fit.map")
    assert fm is None
    text = [str(p) for p in problems]
    assert (
        "study.yaml: from_fit.map.THETA(2): CL is already mapped from THETA(1): a parameter "
        "takes its typical value from one THETA, got a second one" in text
    )
    assert (
        "study.yaml: from_fit.map.theta(1): THETA(1) is mapped twice (also as 'THETA(1)')" in text
    )
    assert any(t.startswith("study.yaml: from_fit.map.ETA(2): CL is already mapped") for t in text)
    assert any("from_fit.map.THETA3: the key must be" in t and "'THETA3'" in t for t in text)
    assert any("from_fit.map.ETA(0): the key must be" in t for t in text)
    assert any("from_fit.map.OMEGA(1): the key must be" in t for t in text)
    assert "study.yaml: from_fit.map.SIGMA(1): must be a parameter name" in " ".join(text)
    assert "got '2prop'" in " ".join(text)
    assert len(problems) == 7


def test_parse_mapping_residual_error_names_for_theta_and_sigma_only() -> None:
    fm = _parsed({"THETA(3)": "CP.additive", "SIGMA(1)": "CP.proportional", "ETA(1)": "CL"})
    assert dict(fm.theta) == {3: "CP.additive"}
    assert dict(fm.sigma) == {1: "CP.proportional"}
    bad = {"ETA(1)": "CL.x", "SIGMA(1)": "CP.", "THETA(1)": "CP.a.b", "SIGMA(2)": ".x"}
    fm2, problems = parse_mapping(bad, "s.yaml", "m")
    assert fm2 is None
    assert [p.where for p in problems] == ["m.ETA(1)", "m.SIGMA(1)", "m.THETA(1)", "m.SIGMA(2)"]
    assert problems[0].message == (
        "must be a parameter name (a letter, then letters, digits or _), got 'CL.x'"
    )
    assert problems[1].message == (
        "must be a parameter name (a letter, then letters, digits or _), or OUTPUT.part for "
        "a residual error, got 'CP.'"
    )


def test_parse_mapping_not_a_mapping() -> None:
    fm, problems = parse_mapping(["THETA(1)"], "s.yaml", "from_fit.map")
    assert fm is None
    assert problems == [
        Problem(
            "s.yaml",
            "from_fit.map",
            "must be a non-empty mapping of THETA(n), ETA(n), SIGMA(n) to parameter names, "
            "got list",
        )
    ]
