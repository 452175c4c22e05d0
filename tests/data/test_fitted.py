"""Readers of fitted population models (NONMEM .ext/.cov/.phi, Monolix) and the mapping of
fitted quantities to model parameters.

Every file here is synthetic, written by the writers below from known arrays in the
layout NONMEM 7 uses (``TABLE NO.`` lines, a header, numbers as ``1PE12.5`` in 13-wide
columns, so 6 significant digits: values are compared with a relative tolerance of
1e-5, and exact zeros exactly).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from vtrial.data.fitted import (
    FitMapping,
    apply_mapping,
    parse_mapping,
    read_cov,
    read_ext,
    read_monolix_etas,
    read_monolix_population,
    read_phi,
)
from vtrial.errors import DatasetError, Problem

RTOL = 1e-5  # 6 significant digits printed

THETA = np.array([1.23456, 25.6789, -0.345678, 0.75])
#: a 2x2 OMEGA block (ETA1, ETA2) and a diagonal ETA3
OMEGA = np.array([[0.09, 0.021, 0.0], [0.021, 0.16, 0.0], [0.0, 0.0, 0.04]])
SIGMA = np.array([[0.0225, 0.0], [0.0, 0.5]])
OBJ = 1234.56789012
THETA_SE = np.array([0.0123, 1.1, 1e-100, np.nan])  # THETA4 fixed; 1e-100: 3-digit exponent
OMEGA_SE = np.array([[0.011, 0.0042, np.nan], [0.0042, 0.021, np.nan], [np.nan, np.nan, 0.008]])
SIGMA_SE = np.array([[0.0011, np.nan], [np.nan, 0.07]])
THETA_FIX = np.array([False, False, False, True])
OMEGA_FIX = np.array([[False, False, True], [False, False, True], [True, True, False]])
SIGMA_FIX = np.array([[False, True], [True, False]])
METHOD = "First Order Conditional Estimation with Interaction"


# ---------------------------------------------------------------------------- writers


def _e(x: float) -> str:
    """A number as NONMEM prints it (1PE12.5 in a 13-wide column), with Fortran's
    exponent without ``E`` when it has three digits."""
    text = f"{x:.5E}"
    mantissa, exponent = text.split("E")
    if abs(int(exponent)) >= 100:
        text = f"{mantissa}{exponent}"
    return f"{text:>13}"


def _table_line(number: int, method: str) -> str:
    return (
        f"TABLE NO.{number:6d}: {method}: Goal Function=MINIMUM VALUE OF OBJECTIVE FUNCTION: "
        "Problem=1 Subproblem=0 Superproblem1=0 Iteration1=0 Superproblem2=0 Iteration2=0"
    )


def _header(names: Sequence[str]) -> str:
    return " " + "".join(f"{n:<13}" for n in names).rstrip()


def _lower(name: str, m: np.ndarray) -> dict[str, float]:
    return {f"{name}({i + 1},{j + 1})": float(m[i, j]) for i in range(len(m)) for j in range(i + 1)}


def _estimates(theta: np.ndarray, omega: np.ndarray, sigma: np.ndarray) -> dict[str, float]:
    out = {f"THETA{k + 1}": float(v) for k, v in enumerate(theta)}
    return out | _lower("OMEGA", omega) | _lower("SIGMA", sigma)


def _ext_table(
    number: int,
    theta: np.ndarray,
    omega: np.ndarray,
    sigma: np.ndarray,
    obj: float,
    *,
    sigma_first: bool = True,
    se: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    fixed: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    method: str = METHOD,
    final: bool = True,
) -> list[str]:
    """One TABLE block of an .ext file: iterations, final estimates, special rows."""
    est = _estimates(theta, omega, sigma)
    thetas = [n for n in est if n.startswith("THETA")]
    om = [n for n in est if n.startswith("OMEGA")]
    sg = [n for n in est if n.startswith("SIGMA")]
    names = thetas + (sg + om if sigma_first else om + sg)

    def row(iteration: int, values: dict[str, float], objective: float) -> str:
        cells = "".join(_e(values[n]) for n in names)
        return f"{iteration:13d}{cells}{objective:20.11f}"

    lines = [_table_line(number, method), _header(["ITERATION", *names, "OBJ"])]
    start = {n: v * 1.1 + 0.01 for n, v in est.items()}
    lines += [row(-20, start, obj + 50), row(0, start, obj + 40), row(5, est, obj + 0.001)]
    if final:
        lines.append(row(-1000000000, est, obj))
    if se is not None:
        values = _estimates(*(np.where(np.isnan(a), 1e10, a) for a in se))
        lines.append(row(-1000000001, values, 0.0))
    lines.append(row(-1000000002, dict.fromkeys(names, 0.5), 0.0))
    lines.append(row(-1000000003, dict.fromkeys(names, 12.0), 0.0))
    if fixed is not None:
        lines.append(row(-1000000006, _estimates(*(a.astype(float) for a in fixed)), 0.0))
    lines.append(row(-1000000007, dict.fromkeys(names, 0.0), 0.0))
    lines.append(row(-1000000008, dict.fromkeys(names, 1.5), 0.0))
    return lines


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _edit(path: Path, line: int, field: int, text: str) -> None:
    """Replace field ``field`` (0-based) of file line ``line`` (from 1)."""
    lines = path.read_text().splitlines()
    fields = lines[line - 1].split()
    fields[field] = text
    lines[line - 1] = "  ".join(fields)
    _write(path, lines)


def _ext_file(tmp_path: Path, **kw: Any) -> Path:
    return _write(tmp_path / "run12.ext", _ext_table(1, THETA, OMEGA, SIGMA, OBJ, **kw))


#: covariance of the estimates: THETA4 fixed and OMEGA(3,1), OMEGA(3,2), SIGMA(2,1)
#: not estimated (zero rows and columns)
COV_NAMES = [
    "THETA1",
    "THETA2",
    "THETA3",
    "THETA4",
    "SIGMA(1,1)",
    "SIGMA(2,1)",
    "SIGMA(2,2)",
    "OMEGA(1,1)",
    "OMEGA(2,1)",
    "OMEGA(2,2)",
    "OMEGA(3,1)",
    "OMEGA(3,2)",
    "OMEGA(3,3)",
]


def _cov_matrix() -> np.ndarray:
    rng = np.random.default_rng(7)
    free = [0, 1, 2, 4, 6, 7, 8, 9, 12]
    a = rng.normal(size=(len(free), len(free))) * np.linspace(0.05, 1.0, len(free))
    c = np.zeros((13, 13))
    c[np.ix_(free, free)] = a @ a.T + np.diag(np.full(len(free), 1e-3))
    return c


def _cov_lines(matrix: np.ndarray, names: list[str] = COV_NAMES) -> list[str]:
    lines = [_table_line(1, METHOD), _header(["NAME", *names])]
    for name, row in zip(names, matrix, strict=True):
        lines.append(f" {name:<12}" + "".join(_e(v) for v in row))
    return lines


#: four subjects' ETAs and their conditional variance matrices
IDS = [1, 2, 5, 12]
ETAS = np.array([[0.1, -0.2, 0.05], [-0.31, 0.12, 0.0], [0.0, 0.25, -0.11], [0.21, -0.05, 0.33]])
SUBJ_OBJ = np.array([12.5, 30.25, 7.125, 18.0])


def _etc() -> np.ndarray:
    out = np.zeros((4, 3, 3))
    for s in range(4):
        b = np.arange(1.0, 10.0).reshape(3, 3) * 0.001 * (s + 1)
        out[s] = b @ b.T + np.eye(3) * 0.01
    return out


def _phi_lines(ids: Sequence[float], kind: str = "ETA") -> list[str]:
    cond = "ETC" if kind == "ETA" else "PHC"
    etc = _etc()
    lower = [(i, j) for i in range(3) for j in range(i + 1)]
    names = [f"{kind}({k})" for k in (1, 2, 3)] + [f"{cond}({i + 1},{j + 1})" for i, j in lower]
    lines = [_table_line(1, METHOD), _header(["SUBJECT_NO", "ID", *names, "OBJ"])]
    for s, subject in enumerate(ids):
        cells = [*ETAS[s], *(etc[s, i, j] for i, j in lower), SUBJ_OBJ[s]]
        lines.append(f"{s + 1:13d}" + _e(subject) + "".join(_e(v) for v in cells))
    return lines


def _message(fn: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(DatasetError) as info:
        fn(*args, **kw)
    return str(info.value)


# ---------------------------------------------------------------------------- .ext


@pytest.mark.parametrize("sigma_first", [True, False])
def test_ext_final_estimates_se_and_fixed_by_name_in_either_order(
    tmp_path: Path, sigma_first: bool
) -> None:
    path = _ext_file(
        tmp_path,
        sigma_first=sigma_first,
        se=(THETA_SE, OMEGA_SE, SIGMA_SE),
        fixed=(THETA_FIX, OMEGA_FIX, SIGMA_FIX),
    )
    ext = read_ext(path)
    assert ext.table_number == 1
    assert ext.method == METHOD
    assert ext.path == str(path)
    assert len(ext.sha256) == 64
    np.testing.assert_allclose(ext.theta, THETA, rtol=RTOL)
    np.testing.assert_allclose(ext.omega, OMEGA, rtol=RTOL)  # block OMEGA, off-diagonals
    np.testing.assert_allclose(ext.sigma, SIGMA, rtol=RTOL)
    assert ext.omega.shape == (3, 3)
    assert ext.sigma.shape == (2, 2)
    assert ext.ofv == pytest.approx(OBJ, rel=1e-12)
    assert ext.objective == "OBJ"
    assert ext.theta_se is not None
    assert ext.omega_se is not None
    assert ext.sigma_se is not None
    # NONMEM's 1.0E+10 (not estimated) reads as NaN; 1.00000-100 as 1e-100
    np.testing.assert_allclose(ext.theta_se, THETA_SE, rtol=RTOL, equal_nan=True)
    np.testing.assert_allclose(ext.omega_se, OMEGA_SE, rtol=RTOL, equal_nan=True)
    np.testing.assert_allclose(ext.sigma_se, SIGMA_SE, rtol=RTOL, equal_nan=True)
    np.testing.assert_array_equal(ext.theta_fixed, THETA_FIX)
    np.testing.assert_array_equal(ext.omega_fixed, OMEGA_FIX)
    np.testing.assert_array_equal(ext.sigma_fixed, SIGMA_FIX)
    assert (ext.n_theta, ext.n_eta, ext.n_eps) == (4, 3, 2)


def test_ext_without_se_or_fixed_rows(tmp_path: Path) -> None:
    ext = read_ext(_ext_file(tmp_path))
    assert ext.theta_se is None
    assert ext.omega_se is None
    assert ext.sigma_se is None
    assert not ext.theta_fixed.any()
    assert ext.omega_fixed.shape == (3, 3)
    assert not ext.omega_fixed.any()
    assert ext.sigma_fixed.shape == (2, 2)
    assert not ext.sigma_fixed.any()


def test_ext_two_tables_picks_last_by_default_and_first_on_request(tmp_path: Path) -> None:
    theta1 = THETA * 0.5
    omega1 = np.diag([0.2, 0.3, 0.1])
    first = _ext_table(1, theta1, omega1, SIGMA, 2000.5, method="Stochastic Approximation")
    second = _ext_table(2, THETA, OMEGA, SIGMA, OBJ, sigma_first=False)
    path = _write(tmp_path / "two.ext", first + second)
    last = read_ext(path)
    assert last.table_number == 2
    assert last.method == METHOD
    np.testing.assert_allclose(last.theta, THETA, rtol=RTOL)
    np.testing.assert_allclose(last.omega, OMEGA, rtol=RTOL)
    assert last.ofv == pytest.approx(OBJ)
    for index in (0, -2):
        one = read_ext(path, table=index)
        assert one.table_number == 1
        assert one.method == "Stochastic Approximation"
        np.testing.assert_allclose(one.theta, theta1, rtol=RTOL)
        np.testing.assert_allclose(one.omega, omega1, rtol=RTOL)
        assert one.ofv == pytest.approx(2000.5)


def test_ext_saem_objective_column_and_no_omega(tmp_path: Path) -> None:
    lines = _ext_table(1, THETA[:2], np.zeros((0, 0)), SIGMA[:1, :1], -512.25)
    lines[1] = lines[1].replace("OBJ", "SAEMOBJ")
    ext = read_ext(_write(tmp_path / "saem.ext", lines))
    assert ext.objective == "SAEMOBJ"
    assert ext.ofv == pytest.approx(-512.25)
    assert ext.omega.shape == (0, 0)
    np.testing.assert_allclose(ext.sigma, [[0.0225]], rtol=RTOL)


# ---------------------------------------------------------------------------- .ext problems


def test_ext_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.ext"
    msg = _message(read_ext, path)
    assert f"{path}: cannot read the '.ext' file" in msg
    assert "No such file" in msg


def test_ext_without_table_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.ext", _ext_file(tmp_path).read_text().splitlines()[1:])
    msg = _message(read_ext, path)
    assert f"{path}: no 'TABLE NO.' line" in msg


def test_ext_table_index_out_of_range_says_how_many(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "two.ext",
        _ext_table(1, THETA, OMEGA, SIGMA, OBJ) + _ext_table(2, THETA, OMEGA, SIGMA, OBJ),
    )
    msg = _message(read_ext, path, table=2)
    assert f"{path}: table=2: no such table: the file has 2 TABLE block(s) (TABLE NO. 1, 2)" in msg
    assert "-2..1, got 2" in msg


def test_ext_header_without_iteration(tmp_path: Path) -> None:
    path = _ext_file(tmp_path)
    _edit(path, 2, 0, "ITER")
    msg = _message(read_ext, path)
    assert f"{path}: line 2: the header must start with ITERATION, got 'ITER'" in msg


def test_ext_row_with_wrong_number_of_fields(tmp_path: Path) -> None:
    path = _ext_file(tmp_path)
    lines = path.read_text().splitlines()
    lines[3] = " ".join(lines[3].split()[:-2])  # line 4: two fields short
    _write(path, lines)
    msg = _message(read_ext, path)
    assert f"{path}: line 4: must have 15 fields (as the header on line 2), got 13" in msg


def test_ext_non_numeric_cell_names_line_column_and_value(tmp_path: Path) -> None:
    path = _ext_file(tmp_path, sigma_first=False)
    header = path.read_text().splitlines()[1].split()
    _edit(path, 6, header.index("OMEGA(2,1)"), "abc")  # line 6: final estimates
    msg = _message(read_ext, path)
    assert f"{path}: line 6, column OMEGA(2,1): must be a number, got 'abc'" in msg


def test_ext_without_final_estimate_row(tmp_path: Path) -> None:
    path = _ext_file(tmp_path, final=False)
    msg = _message(read_ext, path)
    assert f"{path}: table 1 (line 1): no final-estimate row (ITERATION -1000000000)" in msg


def test_ext_incomplete_omega_lower_triangle(tmp_path: Path) -> None:
    path = _ext_file(tmp_path)
    lines = path.read_text().splitlines()
    header = lines[1].split()
    k = header.index("OMEGA(2,1)")
    for i in range(1, len(lines)):
        fields = lines[i].split()
        lines[i] = "  ".join(fields[:k] + fields[k + 1 :])
    _write(path, lines)
    msg = _message(read_ext, path)
    assert f"{path}: line 2: the lower triangle of the 3 x 3 OMEGA must be complete" in msg
    assert "missing OMEGA(2,1)" in msg


def test_ext_upper_triangle_and_unknown_columns(tmp_path: Path) -> None:
    path = _ext_file(tmp_path)
    _edit(path, 2, 1, "OMEGA(1,2)")  # was THETA1
    _edit(path, 2, 2, "KAPPA")  # was THETA2
    msg = _message(read_ext, path)
    assert f"{path}: line 2, column OMEGA(1,2): must be in the lower triangle" in msg
    assert f"{path}: line 2, column KAPPA: unknown column" in msg


def test_ext_every_problem_at_once(tmp_path: Path) -> None:
    path = _ext_file(tmp_path)
    _edit(path, 3, 2, "x1")
    _edit(path, 4, 3, "1.2.3")
    _edit(path, 5, 0, "5.5")  # ITERATION must be whole
    with pytest.raises(DatasetError) as info:
        read_ext(path)
    problems = info.value.problems
    wheres = {p.where for p in problems}
    assert {"line 3, column THETA2", "line 4, column THETA3", "line 5, column ITERATION"} <= wheres
    assert all(p.file == str(path) for p in problems)
    assert "must be a whole number, got 5.5" in str(info.value)


def test_ext_non_finite_final_estimate(tmp_path: Path) -> None:
    path = _ext_file(tmp_path)
    _edit(path, 6, 1, "NaN")
    msg = _message(read_ext, path)
    assert (
        f"{path}: line 6, column THETA1: a final estimate must be a finite number, got nan" in msg
    )


# ---------------------------------------------------------------------------- .cov


def test_cov_theta_block_matches_the_matrix_written(tmp_path: Path) -> None:
    c = _cov_matrix()
    cov = read_cov(_write(tmp_path / "run12.cov", _cov_lines(c)))
    assert cov.names == tuple(COV_NAMES)
    assert cov.matrix.shape == (13, 13)
    np.testing.assert_allclose(cov.matrix, c, rtol=RTOL, atol=0)
    names, block = cov.theta_block()
    assert names == ("THETA1", "THETA2", "THETA3", "THETA4")
    np.testing.assert_allclose(block, c[:4, :4], rtol=RTOL, atol=0)
    assert cov.zero_thetas == ("THETA4",)
    assert cov.table_number == 1


def test_cov_not_symmetric(tmp_path: Path) -> None:
    c = _cov_matrix()
    c[1, 0] *= 1.5  # line 4 (THETA2), column THETA1
    msg = _message(read_cov, _write(tmp_path / "a.cov", _cov_lines(c)))
    assert "a.cov: line 4, column THETA1: the matrix must be symmetric" in msg
    assert f"{c[1, 0]:.6g} here, {c[0, 1]:.6g} at line 3, column THETA2" in msg


def test_cov_theta_block_not_positive_semi_definite(tmp_path: Path) -> None:
    c = _cov_matrix()
    c[0, 1] = c[1, 0] = 1.5 * np.sqrt(c[0, 0] * c[1, 1])  # a correlation of 1.5
    msg = _message(read_cov, _write(tmp_path / "b.cov", _cov_lines(c)))
    assert "b.cov: table 1 (line 1): the THETA block must be positive semi-definite" in msg
    assert "smallest eigenvalue" in msg


def test_cov_not_square_and_row_names(tmp_path: Path) -> None:
    c = _cov_matrix()
    lines = _cov_lines(c)
    path = _write(tmp_path / "c.cov", lines[:-1])  # last row gone
    msg = _message(read_cov, path)
    assert f"{path}: table 1 (line 1): the matrix must be square: 13 columns" in msg
    assert "got 12 rows" in msg
    path = _write(tmp_path / "d.cov", lines)
    _edit(path, 4, 0, "THETA9")
    msg = _message(read_cov, path)
    assert (
        f"{path}: line 4, column NAME: row 2 must be named as column 2 (THETA2), got 'THETA9'"
        in msg
    )


def test_cov_header_without_name(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.cov", _cov_lines(_cov_matrix()))
    _edit(path, 2, 0, "LABEL")
    msg = _message(read_cov, path)
    assert f"{path}: line 2: the header must start with NAME, got 'LABEL'" in msg


def test_cov_fixed_theta_with_covariance(tmp_path: Path) -> None:
    c = _cov_matrix()
    c[3, 0] = c[0, 3] = 0.001  # THETA4 has variance 0
    msg = _message(read_cov, _write(tmp_path / "f.cov", _cov_lines(c)))
    assert "f.cov: line 6, column THETA1: THETA4 has variance 0 (fixed)" in msg


# ---------------------------------------------------------------------------- .phi


def test_phi_etas_conditional_variances_and_obj(tmp_path: Path) -> None:
    phi = read_phi(_write(tmp_path / "run12.phi", _phi_lines(IDS)))
    assert phi.kind == "ETA"
    assert list(phi.etas.columns) == ["ETA1", "ETA2", "ETA3"]
    assert phi.etas.index.name == "ID"
    assert phi.etas.index.dtype == np.int64
    assert phi.etas.index.tolist() == IDS
    np.testing.assert_allclose(phi.values, ETAS, rtol=RTOL, atol=0)
    assert phi.etc is not None
    assert phi.etc.shape == (4, 3, 3)
    np.testing.assert_allclose(phi.etc, _etc(), rtol=RTOL)
    np.testing.assert_array_equal(phi.etc, np.transpose(phi.etc, (0, 2, 1)))
    assert phi.obj is not None
    np.testing.assert_allclose(phi.obj, SUBJ_OBJ, rtol=RTOL)
    np.testing.assert_array_equal(phi.subject_no, [1, 2, 3, 4])


def test_phi_phi_naming_and_non_integer_ids(tmp_path: Path) -> None:
    phi = read_phi(_write(tmp_path / "imp.phi", _phi_lines([1.5, 2, 5, 12], kind="PHI")))
    assert phi.kind == "PHI"
    assert list(phi.etas.columns) == ["PHI1", "PHI2", "PHI3"]
    assert phi.etas.index.dtype == np.float64
    assert phi.etas.index.tolist() == [1.5, 2.0, 5.0, 12.0]
    assert phi.etc is not None
    np.testing.assert_allclose(phi.etc, _etc(), rtol=RTOL)


def test_phi_duplicate_ids(tmp_path: Path) -> None:
    path = _write(tmp_path / "dup.phi", _phi_lines([1, 2, 2, 12]))
    msg = _message(read_phi, path)
    assert f"{path}: line 5, column ID: an ID may appear once in a table, got 2 again" in msg
    assert "(first on line 4)" in msg


def test_phi_header_without_subject_no(tmp_path: Path) -> None:
    path = _write(tmp_path / "h.phi", _phi_lines(IDS))
    _edit(path, 2, 0, "SUBJ")
    msg = _message(read_phi, path)
    assert f"{path}: line 2: the header must start with SUBJECT_NO, got 'SUBJ'" in msg


def test_phi_mixed_columns_and_incomplete_etc(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.phi", _phi_lines(IDS))
    _edit(path, 2, 2, "PHI(1)")
    _edit(path, 2, 6, "ETC(1,2)")  # was ETC(2,1)
    msg = _message(read_phi, path)
    assert f"{path}: line 2: the columns must be ETA(n)/ETC(i,j) or PHI(n)/PHC(i,j)" in msg
    assert f"{path}: line 2, column ETC(1,2): must be in the lower triangle" in msg


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
    ext = _ext_file(tmp_path, fixed=(THETA_FIX, OMEGA_FIX, SIGMA_FIX))
    cov = _write(tmp_path / "run12.cov", _cov_lines(_cov_matrix()))
    phi = _write(tmp_path / "run12.phi", _phi_lines(IDS))
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
        fitted.theta_cov, _cov_matrix()[np.ix_([0, 1, 3], [0, 1, 3])], rtol=RTOL, atol=0
    )
    assert fitted.etas is not None
    assert list(fitted.etas.columns) == ["CL", "V1", "KA"]
    assert fitted.etas.index.tolist() == IDS
    np.testing.assert_allclose(fitted.etas.to_numpy(), ETAS, rtol=RTOL, atol=0)
    assert fitted.eta_kind == "ETA"
    assert fitted.ofv == pytest.approx(OBJ)
    assert set(fitted.sources) == {"ext", "cov", "phi"}


def test_apply_mapping_omega_sub_matrix_without_cov_or_phi(tmp_path: Path) -> None:
    ext = read_ext(_ext_file(tmp_path))
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
    ext = read_ext(_ext_file(tmp_path))
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
    ext = read_ext(_ext_file(tmp_path))
    phi_lines = _phi_lines(IDS)
    phi_lines[1] = phi_lines[1].replace("ETA(3)", "ETA(4)")  # a 4th ETA, without ETA(3)
    bad = _write(tmp_path / "x.phi", phi_lines)
    assert "ETAs must be numbered 1..4, missing ETA(3)" in _message(read_phi, bad)
    keep = [k for k in range(13) if k != 3]  # no THETA4
    small = _cov_matrix()[np.ix_(keep, keep)]
    cov = read_cov(_write(tmp_path / "x.cov", _cov_lines(small, [COV_NAMES[k] for k in keep])))
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
    est = read_monolix_population(_write(tmp_path / "pp.txt", POPULATION.splitlines()))
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
    path = _write(tmp_path / "pp.txt", text.splitlines())
    msg = _message(read_monolix_population, path)
    assert f"{path}: row 2 (line 3), column value: must be a number, got 'abc'" in msg
    assert f"{path}: row 8 (line 9), column parameter: a correlation must name two" in msg
    assert "'corr_V_Q'" in msg


def test_monolix_population_correlation_out_of_range(tmp_path: Path) -> None:
    path = _write(tmp_path / "pp.txt", POPULATION.replace("0.4,0.1,25", "1.4,0.1,25").splitlines())
    msg = _message(read_monolix_population, path)
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
    path = _write(tmp_path / "re.txt", RANDOM_EFFECTS.splitlines())
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
    path = _write(tmp_path / "re.txt", text.splitlines())
    msg = _message(read_monolix_etas, path)
    assert f"{path}: row 3 (line 4), column id: an ID may appear once, got '2' again" in msg
    lines = [line.replace("_mode", "_EBE") for line in RANDOM_EFFECTS.splitlines()]
    path = _write(tmp_path / "re2.txt", lines)
    msg = _message(read_monolix_etas, path)
    assert f"{path}: line 1: no eta_<parameter>_mode column (estimates found: EBE, SAEM" in msg
    with pytest.raises(ValueError, match="estimate must be"):
        read_monolix_etas(path, estimate="median")  # type: ignore[arg-type]


def test_monolix_ids_as_text(tmp_path: Path) -> None:
    text = RANDOM_EFFECTS.replace("\n1;", "\nP-01;").replace("\n2;", "\nP-02;")
    etas = read_monolix_etas(_write(tmp_path / "re.txt", text.splitlines()))
    assert etas.etas.index.tolist() == ["P-01", "P-02", "7"]
    assert isinstance(etas.etas, pd.DataFrame)


def test_monolix_population_correlations_not_positive_semi_definite(tmp_path: Path) -> None:
    text = (
        POPULATION.replace("corr_V_Cl,0.4", "corr_V_Cl,0.9").replace(
            "corr_k_a_Cl,-0.2", "corr_k_a_Cl,0.9"
        )
        + "corr_k_a_V,-0.9,0.1,10\n"
    )
    path = _write(tmp_path / "pp.txt", text.splitlines())
    msg = _message(read_monolix_population, path)
    assert f"{path}: column value: the corr_ rows must give a positive semi-definite OMEGA" in msg
