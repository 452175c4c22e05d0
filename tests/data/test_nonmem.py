"""Readers of NONMEM's ``.ext``/``.cov``/``.phi`` tables (:mod:`vtrial.data.nonmem`).

Every file here is synthetic, written by the writers of :mod:`tests.data.fitted_files`
from known arrays in the layout NONMEM 7 uses (6 significant digits: values are
compared with a relative tolerance of 1e-5, and exact zeros exactly).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data.fitted_files import (
    COV_NAMES,
    ETAS,
    IDS,
    METHOD,
    OBJ,
    OMEGA,
    OMEGA_FIX,
    OMEGA_SE,
    RTOL,
    SIGMA,
    SIGMA_FIX,
    SIGMA_SE,
    SUBJ_OBJ,
    THETA,
    THETA_FIX,
    THETA_SE,
    cov_matrix,
    cov_table,
    edit,
    error_message,
    etc_matrices,
    ext_file,
    ext_table,
    phi_table,
    write,
)
from vtrial.data.nonmem import read_cov, read_ext, read_phi
from vtrial.errors import DatasetError

# ---------------------------------------------------------------------------- .ext


@pytest.mark.parametrize("sigma_first", [True, False])
def test_ext_final_estimates_se_and_fixed_by_name_in_either_order(
    tmp_path: Path, sigma_first: bool
) -> None:
    path = ext_file(
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
    ext = read_ext(ext_file(tmp_path))
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
    first = ext_table(1, theta1, omega1, SIGMA, 2000.5, method="Stochastic Approximation")
    second = ext_table(2, THETA, OMEGA, SIGMA, OBJ, sigma_first=False)
    path = write(tmp_path / "two.ext", first + second)
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
    lines = ext_table(1, THETA[:2], np.zeros((0, 0)), SIGMA[:1, :1], -512.25)
    lines[1] = lines[1].replace("OBJ", "SAEMOBJ")
    ext = read_ext(write(tmp_path / "saem.ext", lines))
    assert ext.objective == "SAEMOBJ"
    assert ext.ofv == pytest.approx(-512.25)
    assert ext.omega.shape == (0, 0)
    np.testing.assert_allclose(ext.sigma, [[0.0225]], rtol=RTOL)


# ---------------------------------------------------------------------------- .ext problems


def test_ext_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.ext"
    msg = error_message(read_ext, path)
    assert f"{path}: cannot read the '.ext' file" in msg
    assert "No such file" in msg


def test_ext_without_table_line(tmp_path: Path) -> None:
    path = write(tmp_path / "x.ext", ext_file(tmp_path).read_text().splitlines()[1:])
    msg = error_message(read_ext, path)
    assert f"{path}: no 'TABLE NO.' line" in msg


def test_ext_table_index_out_of_range_says_how_many(tmp_path: Path) -> None:
    path = write(
        tmp_path / "two.ext",
        ext_table(1, THETA, OMEGA, SIGMA, OBJ) + ext_table(2, THETA, OMEGA, SIGMA, OBJ),
    )
    msg = error_message(read_ext, path, table=2)
    assert f"{path}: table=2: no such table: the file has 2 TABLE block(s) (TABLE NO. 1, 2)" in msg
    assert "-2..1, got 2" in msg


def test_ext_header_without_iteration(tmp_path: Path) -> None:
    path = ext_file(tmp_path)
    edit(path, 2, 0, "ITER")
    msg = error_message(read_ext, path)
    assert f"{path}: line 2: the header must start with ITERATION, got 'ITER'" in msg


def test_ext_row_with_wrong_number_of_fields(tmp_path: Path) -> None:
    path = ext_file(tmp_path)
    lines = path.read_text().splitlines()
    lines[3] = " ".join(lines[3].split()[:-2])  # line 4: two fields short
    write(path, lines)
    msg = error_message(read_ext, path)
    assert f"{path}: line 4: must have 15 fields (as the header on line 2), got 13" in msg


def test_ext_non_numeric_cell_names_line_column_and_value(tmp_path: Path) -> None:
    path = ext_file(tmp_path, sigma_first=False)
    header = path.read_text().splitlines()[1].split()
    edit(path, 6, header.index("OMEGA(2,1)"), "abc")  # line 6: final estimates
    msg = error_message(read_ext, path)
    assert f"{path}: line 6, column OMEGA(2,1): must be a number, got 'abc'" in msg


def test_ext_without_final_estimate_row(tmp_path: Path) -> None:
    path = ext_file(tmp_path, final=False)
    msg = error_message(read_ext, path)
    assert f"{path}: table 1 (line 1): no final-estimate row (ITERATION -1000000000)" in msg


def test_ext_incomplete_omega_lower_triangle(tmp_path: Path) -> None:
    path = ext_file(tmp_path)
    lines = path.read_text().splitlines()
    header = lines[1].split()
    k = header.index("OMEGA(2,1)")
    for i in range(1, len(lines)):
        fields = lines[i].split()
        lines[i] = "  ".join(fields[:k] + fields[k + 1 :])
    write(path, lines)
    msg = error_message(read_ext, path)
    assert f"{path}: line 2: the lower triangle of the 3 x 3 OMEGA must be complete" in msg
    assert "missing OMEGA(2,1)" in msg


def test_ext_upper_triangle_and_unknown_columns(tmp_path: Path) -> None:
    path = ext_file(tmp_path)
    edit(path, 2, 1, "OMEGA(1,2)")  # was THETA1
    edit(path, 2, 2, "KAPPA")  # was THETA2
    msg = error_message(read_ext, path)
    assert f"{path}: line 2, column OMEGA(1,2): must be in the lower triangle" in msg
    assert f"{path}: line 2, column KAPPA: unknown column" in msg


def test_ext_every_problem_at_once(tmp_path: Path) -> None:
    path = ext_file(tmp_path)
    edit(path, 3, 2, "x1")
    edit(path, 4, 3, "1.2.3")
    edit(path, 5, 0, "5.5")  # ITERATION must be whole
    with pytest.raises(DatasetError) as info:
        read_ext(path)
    problems = info.value.problems
    wheres = {p.where for p in problems}
    assert {"line 3, column THETA2", "line 4, column THETA3", "line 5, column ITERATION"} <= wheres
    assert all(p.file == str(path) for p in problems)
    assert "must be a whole number, got 5.5" in str(info.value)


def test_ext_non_finite_final_estimate(tmp_path: Path) -> None:
    path = ext_file(tmp_path)
    edit(path, 6, 1, "NaN")
    msg = error_message(read_ext, path)
    assert (
        f"{path}: line 6, column THETA1: a final estimate must be a finite number, got nan" in msg
    )


# ---------------------------------------------------------------------------- .cov


def test_cov_theta_block_matches_the_matrix_written(tmp_path: Path) -> None:
    c = cov_matrix()
    cov = read_cov(write(tmp_path / "run12.cov", cov_table(c)))
    assert cov.names == tuple(COV_NAMES)
    assert cov.matrix.shape == (13, 13)
    np.testing.assert_allclose(cov.matrix, c, rtol=RTOL, atol=0)
    names, block = cov.theta_block()
    assert names == ("THETA1", "THETA2", "THETA3", "THETA4")
    np.testing.assert_allclose(block, c[:4, :4], rtol=RTOL, atol=0)
    assert cov.zero_thetas == ("THETA4",)
    assert cov.table_number == 1


def test_cov_not_symmetric(tmp_path: Path) -> None:
    c = cov_matrix()
    c[1, 0] *= 1.5  # line 4 (THETA2), column THETA1
    msg = error_message(read_cov, write(tmp_path / "a.cov", cov_table(c)))
    assert "a.cov: line 4, column THETA1: the matrix must be symmetric" in msg
    assert f"{c[1, 0]:.6g} here, {c[0, 1]:.6g} at line 3, column THETA2" in msg


def test_cov_theta_block_not_positive_semi_definite(tmp_path: Path) -> None:
    c = cov_matrix()
    c[0, 1] = c[1, 0] = 1.5 * np.sqrt(c[0, 0] * c[1, 1])  # a correlation of 1.5
    msg = error_message(read_cov, write(tmp_path / "b.cov", cov_table(c)))
    assert "b.cov: table 1 (line 1): the THETA block must be positive semi-definite" in msg
    assert "smallest eigenvalue" in msg


def test_cov_not_square_and_row_names(tmp_path: Path) -> None:
    c = cov_matrix()
    lines = cov_table(c)
    path = write(tmp_path / "c.cov", lines[:-1])  # last row gone
    msg = error_message(read_cov, path)
    assert f"{path}: table 1 (line 1): the matrix must be square: 13 columns" in msg
    assert "got 12 rows" in msg
    path = write(tmp_path / "d.cov", lines)
    edit(path, 4, 0, "THETA9")
    msg = error_message(read_cov, path)
    assert (
        f"{path}: line 4, column NAME: row 2 must be named as column 2 (THETA2), got 'THETA9'"
        in msg
    )


def test_cov_header_without_name(tmp_path: Path) -> None:
    path = write(tmp_path / "e.cov", cov_table(cov_matrix()))
    edit(path, 2, 0, "LABEL")
    msg = error_message(read_cov, path)
    assert f"{path}: line 2: the header must start with NAME, got 'LABEL'" in msg


def test_cov_fixed_theta_with_covariance(tmp_path: Path) -> None:
    c = cov_matrix()
    c[3, 0] = c[0, 3] = 0.001  # THETA4 has variance 0
    msg = error_message(read_cov, write(tmp_path / "f.cov", cov_table(c)))
    assert "f.cov: line 6, column THETA1: THETA4 has variance 0 (fixed)" in msg


# ---------------------------------------------------------------------------- .phi


def test_phi_etas_conditional_variances_and_obj(tmp_path: Path) -> None:
    phi = read_phi(write(tmp_path / "run12.phi", phi_table(IDS)))
    assert phi.kind == "ETA"
    assert list(phi.etas.columns) == ["ETA1", "ETA2", "ETA3"]
    assert phi.etas.index.name == "ID"
    assert phi.etas.index.dtype == np.int64
    assert phi.etas.index.tolist() == IDS
    np.testing.assert_allclose(phi.values, ETAS, rtol=RTOL, atol=0)
    assert phi.etc is not None
    assert phi.etc.shape == (4, 3, 3)
    np.testing.assert_allclose(phi.etc, etc_matrices(), rtol=RTOL)
    np.testing.assert_array_equal(phi.etc, np.transpose(phi.etc, (0, 2, 1)))
    assert phi.obj is not None
    np.testing.assert_allclose(phi.obj, SUBJ_OBJ, rtol=RTOL)
    np.testing.assert_array_equal(phi.subject_no, [1, 2, 3, 4])


def test_phi_phi_naming_and_non_integer_ids(tmp_path: Path) -> None:
    phi = read_phi(write(tmp_path / "imp.phi", phi_table([1.5, 2, 5, 12], kind="PHI")))
    assert phi.kind == "PHI"
    assert list(phi.etas.columns) == ["PHI1", "PHI2", "PHI3"]
    assert phi.etas.index.dtype == np.float64
    assert phi.etas.index.tolist() == [1.5, 2.0, 5.0, 12.0]
    assert phi.etc is not None
    np.testing.assert_allclose(phi.etc, etc_matrices(), rtol=RTOL)


def test_phi_duplicate_ids(tmp_path: Path) -> None:
    path = write(tmp_path / "dup.phi", phi_table([1, 2, 2, 12]))
    msg = error_message(read_phi, path)
    assert f"{path}: line 5, column ID: an ID may appear once in a table, got 2 again" in msg
    assert "(first on line 4)" in msg


def test_phi_header_without_subject_no(tmp_path: Path) -> None:
    path = write(tmp_path / "h.phi", phi_table(IDS))
    edit(path, 2, 0, "SUBJ")
    msg = error_message(read_phi, path)
    assert f"{path}: line 2: the header must start with SUBJECT_NO, got 'SUBJ'" in msg


def test_phi_mixed_columns_and_incomplete_etc(tmp_path: Path) -> None:
    path = write(tmp_path / "m.phi", phi_table(IDS))
    edit(path, 2, 2, "PHI(1)")
    edit(path, 2, 6, "ETC(1,2)")  # was ETC(2,1)
    msg = error_message(read_phi, path)
    assert f"{path}: line 2: the columns must be ETA(n)/ETC(i,j) or PHI(n)/PHC(i,j)" in msg
    assert f"{path}: line 2, column ETC(1,2): must be in the lower triangle" in msg
