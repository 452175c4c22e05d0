"""NONMEM's output tables of a fit: readers of the ``.ext``, ``.cov`` and ``.phi`` files.

What is read
------------
- :func:`read_ext`: a NONMEM ``.ext`` file (final estimates of THETA, OMEGA, SIGMA and
  the objective function, with their standard errors and FIXED flags when present).
- :func:`read_cov`: a NONMEM ``.cov`` file (covariance matrix of the estimates).
- :func:`read_phi`: a NONMEM ``.phi`` file (individual ETAs or PHIs, their conditional
  variances and each subject's objective function).

What they give is mapped to the study's parameters by :mod:`~vtrial.data.fitted`.

Conventions of the NONMEM tables (those of NONMEM 7's output files)
--------------------------------------------------------------------
- A file holds one or more blocks. Each starts with a line ``TABLE NO. n: <method>:
  ...`` followed by a header line of whitespace-separated column names and the rows.
  ``table`` selects a block by its position in the file, as a Python index (0: the
  first, -1: the last, the default, i.e. the final estimation step). Only the selected
  block is checked; problems in other blocks are not looked for.
- Columns are found by name, never by position: ``THETAn``, ``OMEGA(i,j)``,
  ``SIGMA(i,j)`` (only the lower triangle, ``i >= j``, which must be complete),
  ``OBJ`` (``SAEMOBJ``, ``MCMCOBJ`` for SAEM and BAYES), whatever their order (NONMEM
  versions differ on whether SIGMA or OMEGA comes first). Names are matched
  case-insensitively; an unknown column is a problem.
- Numbers are Fortran's: ``1.23456E+00``, ``1.23456D+00``, the exponent without its
  ``E`` when it has three digits (``1.23456-100``), and ``NaN``/``Infinity``.
- ``.ext`` rows are told apart by ``ITERATION``: iterations (any whole number, negative
  during SAEM burn-in), and the special rows ``-1000000000`` (final estimates, required),
  ``-1000000001`` (standard errors), ``-1000000006`` (FIXED flags, 1 = fixed). The other
  special rows (``-1000000002`` to ``-1000000005``, ``-1000000007``, ``-1000000008`` and
  any later code below ``-999999999``) are checked as numbers and otherwise ignored.
  NONMEM writes ``1.00000E+10`` as the standard error of an element it did not
  estimate (fixed, or an off-diagonal element outside an OMEGA block): it is read as
  NaN. An off-diagonal OMEGA/SIGMA element outside a block is flagged FIXED by NONMEM.
- OMEGA, SIGMA and the ETC matrices are variances and covariances (not SDs), and are
  returned as full symmetric matrices built from their lower triangle.

Problems
--------
Every problem of a file is reported at once (at most
:data:`~vtrial.data.tables.MAX_TABLE_PROBLEMS` of one kind, then a count), before
anything is returned, as :class:`vtrial.errors.Problem` ``(file, where, message)``
where ``where`` is ``line L, column C`` (lines of the file from 1), ``line L``,
``table n (line L)`` (``n`` the ``TABLE NO.``), or ``table=<index>``; the readers raise
:class:`vtrial.errors.DatasetError`. Nothing here prints a file's contents: a problem
quotes at most one offending cell, and a file is identified by its SHA-256.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from vtrial.data._nonmem_table import (
    ETA_COL,
    ETC_COL,
    THETA_COL,
    column_layout,
    finite_numbers,
    read_lines,
    row_numbers,
    select_block,
    symmetric_matrix,
    whole_numbers,
)
from vtrial.data._text import FileProblems, listed
from vtrial.errors import DatasetError, Problem
from vtrial.infra.hashing import file_sha256

__all__ = [
    "EXT_CODES",
    "CovarianceMatrix",
    "EtaTable",
    "ExtEstimates",
    "read_cov",
    "read_ext",
    "read_phi",
]

log = logging.getLogger(__name__)

#: ``ITERATION`` codes of the special rows of a ``.ext`` table.
EXT_CODES: Mapping[int, str] = MappingProxyType(
    {
        -1000000000: "final estimates",
        -1000000001: "standard errors",
        -1000000002: "eigenvalues of the correlation matrix",
        -1000000003: "condition number",
        -1000000004: "OMEGA and SIGMA as SDs and correlations",
        -1000000005: "standard errors of the SDs and correlations",
        -1000000006: "FIXED flags",
        -1000000007: "termination status",
        -1000000008: "partial derivatives of the likelihood",
    }
)
_FINAL, _SE, _FIXED = -1000000000, -1000000001, -1000000006
#: NONMEM's standard error of an element it did not estimate.
_NOT_ESTIMATED_SE = 1.0e10


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class ExtEstimates:
    """The estimates of one table (estimation step) of a NONMEM ``.ext`` file.

    Attributes
    ----------
    path : str
        The file.
    sha256 : str
        SHA-256 of the file's bytes.
    table_number : int
        The ``n`` of the block's ``TABLE NO. n`` line.
    method : str
        The estimation method as the ``TABLE`` line names it (``First Order
        Conditional Estimation with Interaction``).
    theta : ndarray of float64, shape (n_theta,)
        Final THETA estimates, THETA1 first.
    omega : ndarray of float64, shape (n_eta, n_eta)
        Final OMEGA (variances and covariances of the ETAs), symmetric; (0, 0) when
        the model has no ETA.
    sigma : ndarray of float64, shape (n_eps, n_eps)
        Final SIGMA (variances and covariances of the EPSs), symmetric.
    ofv : float
        The objective function at the final estimates (the ``objective`` column of the
        final-estimate row).
    objective : str
        Name of that column: ``OBJ``, or ``SAEMOBJ``/``MCMCOBJ`` (which are not -2 log
        likelihoods).
    theta_se, omega_se, sigma_se : ndarray of float64 or None
        Standard errors, shaped as the estimates (NaN where NONMEM did not estimate
        one, see the module docstring); None when the table has no standard-error row.
    theta_fixed, omega_fixed, sigma_fixed : ndarray of bool
        FIXED flags, shaped as the estimates; all False when the table has no
        FIXED row.
    """

    path: str
    sha256: str
    table_number: int
    method: str
    theta: np.ndarray
    omega: np.ndarray
    sigma: np.ndarray
    ofv: float
    objective: str
    theta_se: np.ndarray | None
    omega_se: np.ndarray | None
    sigma_se: np.ndarray | None
    theta_fixed: np.ndarray
    omega_fixed: np.ndarray
    sigma_fixed: np.ndarray

    @property
    def n_theta(self) -> int:
        """Number of THETAs."""
        return len(self.theta)

    @property
    def n_eta(self) -> int:
        """Number of ETAs (size of OMEGA)."""
        return len(self.omega)

    @property
    def n_eps(self) -> int:
        """Number of EPSs (size of SIGMA)."""
        return len(self.sigma)


@dataclass(frozen=True, eq=False)
class CovarianceMatrix:
    """The covariance matrix of the estimates of one table of a NONMEM ``.cov`` file.

    Attributes
    ----------
    path, sha256 : str
        The file and the SHA-256 of its bytes.
    table_number : int
        The ``n`` of the block's ``TABLE NO. n`` line.
    method : str
        The estimation method of the block.
    names : tuple of str
        The estimates in the file's order (``THETA1``, ``SIGMA(1,1)``, ``OMEGA(2,1)``...),
        upper-case.
    matrix : ndarray of float64, shape (n, n)
        Their covariance matrix, in the order of ``names`` (symmetrised: the mean of
        the two mirrored elements, which agree within the reader's tolerance).
    zero_thetas : tuple of str
        THETAs whose row and column are all zero (fixed in the fit).
    """

    path: str
    sha256: str
    table_number: int
    method: str
    names: tuple[str, ...]
    matrix: np.ndarray
    zero_thetas: tuple[str, ...]

    def theta_block(self) -> tuple[tuple[str, ...], np.ndarray]:
        """The THETAs and their covariance.

        Returns
        -------
        names : tuple of str
            The THETA names in the file's order.
        cov : ndarray of float64, shape (len(names), len(names))
            Their covariance matrix (zero rows and columns for fixed THETAs).
        """
        idx = [k for k, n in enumerate(self.names) if THETA_COL.fullmatch(n)]
        return tuple(self.names[k] for k in idx), self.matrix[np.ix_(idx, idx)].copy()


@dataclass(frozen=True, eq=False)
class EtaTable:
    """Individual random effects of one table of a NONMEM ``.phi`` file.

    Attributes
    ----------
    path, sha256 : str
        The file and the SHA-256 of its bytes.
    table_number : int
        The ``n`` of the block's ``TABLE NO. n`` line.
    method : str
        The estimation method of the block.
    kind : {"ETA", "PHI"}
        Which the file holds: ETAs (``ETA(n)``/``ETC(i,j)`` columns, the classical
        methods) or PHIs (``PHI(n)``/``PHC(i,j)``, the EM and Bayesian methods, where
        PHI = MU + ETA for a MU-referenced parameter).
    etas : DataFrame, shape (n_subjects, n_eta)
        Indexed by ``ID`` (int64 when every ID is a whole number, float64 otherwise),
        in file order; columns ``ETA1``... (``PHI1``... for PHIs).
    subject_no : ndarray of int64, shape (n_subjects,)
        NONMEM's ``SUBJECT_NO`` of each row.
    etc : ndarray of float64, shape (n_subjects, n_eta, n_eta), or None
        Each subject's conditional variance matrix (ETC or PHC), symmetric; None when
        the file has no such columns.
    obj : ndarray of float64, shape (n_subjects,), or None
        Each subject's objective function value; None without an ``OBJ`` column.
    """

    path: str
    sha256: str
    table_number: int
    method: str
    kind: str
    etas: pd.DataFrame = field(repr=False)
    subject_no: np.ndarray = field(repr=False)
    etc: np.ndarray | None = field(repr=False)
    obj: np.ndarray | None = field(repr=False)

    @property
    def n_eta(self) -> int:
        """Number of ETAs (PHIs) per subject."""
        return self.etas.shape[1]

    @property
    def values(self) -> np.ndarray:
        """The ETAs as an array, shape (n_subjects, n_eta)."""
        return self.etas.to_numpy(dtype=np.float64)


# ---------------------------------------------------------------------------- readers


def _ext(path: Path, table: int) -> tuple[ExtEstimates | None, list[Problem]]:
    out = FileProblems(str(path))
    lines = read_lines(path, out, "'.ext' file")
    block = None if lines is None else select_block(lines, table, "ITERATION", out, ".ext file")
    if block is None:
        return None, out.all()
    lay = column_layout(block.header[1:], block.header_line, out, objective=True)
    row_lines, _, data, bad = row_numbers(block, out)
    iteration, values, bad_values = data[:, 0], data[:, 1:], bad[:, 1:]
    whole = whole_numbers(iteration, bad[:, 0], row_lines, "ITERATION", out)
    special: dict[int, int] = {}  # code -> row
    for k in map(int, np.flatnonzero(whole & (iteration <= -1000000000))):
        code = int(iteration[k])
        if code in special:
            out.add(
                f"line {row_lines[k]}, column ITERATION",
                f"ITERATION {code} ({EXT_CODES.get(code, 'special row')}) may appear once in "
                f"a table, found again (first on line {row_lines[special[code]]})",
            )
        else:
            special[code] = k
    final = special.get(_FINAL)
    if final is None:
        out.add(
            block.where,
            "no final-estimate row (ITERATION -1000000000): the estimation did not finish "
            "or the table is cut short",
        )
    else:
        estimates = [*lay.theta, *(k for m in lay.matrices.values() for k in m.values())]
        if lay.objective is not None:
            estimates.append(lay.objective[0])
        for k in estimates:
            v = values[final, k]
            if not bad_values[final, k] and not np.isfinite(v):
                name = block.header[k + 1]
                out.add(
                    f"line {row_lines[final]}, column {name}",
                    f"a final estimate must be a finite number, got {v}",
                )
    if out or final is None or lay.objective is None:
        return None, out.all()

    def parts(row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            row[lay.theta],
            symmetric_matrix(row, lay.matrices["OMEGA"], lay.sizes["OMEGA"]),
            symmetric_matrix(row, lay.matrices["SIGMA"], lay.sizes["SIGMA"]),
        )

    theta, omega, sigma = parts(values[final])
    se: tuple[np.ndarray, np.ndarray, np.ndarray] | tuple[None, None, None] = (None, None, None)
    if _SE in special:
        row = values[special[_SE]]
        se = parts(np.where(row == _NOT_ESTIMATED_SE, np.nan, row))
    if _FIXED in special:
        flags = parts(values[special[_FIXED]])
        fixed = (flags[0] != 0, flags[1] != 0, flags[2] != 0)
    else:
        fixed = (
            np.zeros(len(theta), bool),
            np.zeros(omega.shape, bool),
            np.zeros(sigma.shape, bool),
        )
    assert block.number is not None
    return (
        ExtEstimates(
            path=str(path),
            sha256=file_sha256(path),
            table_number=block.number,
            method=block.method,
            theta=theta,
            omega=omega,
            sigma=sigma,
            ofv=float(values[final, lay.objective[0]]),
            objective=lay.objective[1],
            theta_se=se[0],
            omega_se=se[1],
            sigma_se=se[2],
            theta_fixed=fixed[0],
            omega_fixed=fixed[1],
            sigma_fixed=fixed[2],
        ),
        [],
    )


def read_ext(path: str | Path, table: int = -1) -> ExtEstimates:
    """Read the final estimates of one table of a NONMEM ``.ext`` file.

    Parameters
    ----------
    path : str or Path
        The ``.ext`` file.
    table : int
        Which ``TABLE NO.`` block, by position in the file as a Python index (0: the
        first; -1, the default: the last, i.e. the final estimation step).

    Returns
    -------
    ExtEstimates
        THETA (n_theta,), OMEGA (n_eta, n_eta), SIGMA (n_eps, n_eps), the objective
        function, standard errors and FIXED flags when the table has them.

    Raises
    ------
    DatasetError
        Every problem of the file (see the module docstring), e.g. no final-estimate
        row, a cell that is not a number, an incomplete OMEGA lower triangle.
    """
    result, problems = _ext(Path(path), table)
    if result is None:
        raise DatasetError(problems)
    log.info(
        "ext %s (sha256 %s): table %d, %d THETA, %d ETA, %d EPS, %s %.6g",
        result.path,
        result.sha256[:16],
        result.table_number,
        result.n_theta,
        result.n_eta,
        result.n_eps,
        result.objective,
        result.ofv,
    )
    return result


def _cov(path: Path, table: int, rtol: float) -> tuple[CovarianceMatrix | None, list[Problem]]:
    out = FileProblems(str(path))
    lines = read_lines(path, out, "'.cov' file")
    block = None if lines is None else select_block(lines, table, "NAME", out, ".cov file")
    if block is None:
        return None, out.all()
    names = block.header[1:]
    column_layout(names, block.header_line, out, objective=False)
    row_lines, texts, matrix, bad = row_numbers(block, out, skip=1)
    finite_numbers(matrix, bad, row_lines, names, out)
    row_names = [t[0].upper() for t in texts]
    n = len(names)
    if len(block.rows) != n:
        out.add(
            block.where,
            f"the matrix must be square: {n} columns (line {block.header_line}), "
            f"got {len(block.rows)} rows",
        )
    for k, (line, name) in enumerate(zip(row_lines, row_names, strict=True)):
        if k < n and name != names[k]:
            out.add(
                f"line {line}, column NAME",
                f"row {k + 1} must be named as column {k + 1} ({names[k]}), got {name[:40]!r}",
                kind="row name differs from the column name",
            )
    if out:
        return None, out.all()
    line_of = dict(zip(row_names, row_lines, strict=True))
    diag = np.diag(matrix)
    scale = np.sqrt(np.abs(np.outer(diag, diag)))
    tol = rtol * np.maximum(np.maximum(np.abs(matrix), np.abs(matrix.T)), scale)
    asym = np.abs(matrix - matrix.T) > tol
    for i, j in zip(*np.nonzero(np.tril(asym, -1)), strict=True):
        out.add(
            f"line {line_of[names[i]]}, column {names[j]}",
            f"the matrix must be symmetric (within relative tolerance {rtol:g}): "
            f"{matrix[i, j]:.6g} here, {matrix[j, i]:.6g} at line {line_of[names[j]]}, "
            f"column {names[i]}",
            kind="not symmetric",
        )
    for i in np.flatnonzero(diag < 0):
        out.add(
            f"line {line_of[names[i]]}, column {names[i]}",
            f"a variance must be >= 0, got {diag[i]:.6g}",
        )
    matrix = (matrix + matrix.T) / 2
    theta = [k for k, name in enumerate(names) if THETA_COL.fullmatch(name)]
    zero = [k for k in theta if diag[k] == 0]
    for k in zero:
        if np.any(matrix[k] != 0):
            j = int(np.flatnonzero(matrix[k])[0])
            out.add(
                f"line {line_of[names[k]]}, column {names[j]}",
                f"{names[k]} has variance 0 (fixed), so its covariances must be 0, "
                f"got {matrix[k, j]:.6g}",
            )
    free = [k for k in theta if diag[k] > 0]
    if free and not out:
        sd = np.sqrt(diag[free])
        corr = matrix[np.ix_(free, free)] / np.outer(sd, sd)
        low = float(np.linalg.eigvalsh(corr)[0])
        if low < -rtol * len(free):
            out.add(
                block.where,
                "the THETA block must be positive semi-definite: the smallest eigenvalue "
                f"of its correlation matrix is {low:.6g} (tolerance {-rtol * len(free):.3g})",
            )
    if out:
        return None, out.all()
    assert block.number is not None
    return (
        CovarianceMatrix(
            path=str(path),
            sha256=file_sha256(path),
            table_number=block.number,
            method=block.method,
            names=tuple(names),
            matrix=matrix,
            zero_thetas=tuple(names[k] for k in zero),
        ),
        [],
    )


def read_cov(path: str | Path, table: int = -1, *, rtol: float = 1e-5) -> CovarianceMatrix:
    """Read the covariance matrix of the estimates from a NONMEM ``.cov`` file.

    Parameters
    ----------
    path : str or Path
        The ``.cov`` file (header ``NAME THETA1 ... SIGMA(1,1) ... OMEGA(1,1) ...``,
        then one row per name).
    table : int
        Which ``TABLE NO.`` block, as a Python index (default: the last).
    rtol : float
        Tolerance of the checks: mirrored elements may differ by ``rtol`` times the
        larger of their magnitudes and ``sqrt(a_ii a_jj)`` (correlation units), and
        the smallest eigenvalue of the correlation matrix of the estimated THETAs may
        be as low as ``-rtol * n`` (printed values are rounded).

    Returns
    -------
    CovarianceMatrix
        The names, the symmetric matrix (n, n), and the THETAs whose row is zero.

    Raises
    ------
    DatasetError
        Every problem: not square, row names that differ from the column names, not
        symmetric, a negative variance, a THETA block that is not positive
        semi-definite, a fixed THETA (zero variance) with nonzero covariances, cells
        that are not numbers.
    """
    result, problems = _cov(Path(path), table, rtol)
    if result is None:
        raise DatasetError(problems)
    if result.zero_thetas:
        log.info("cov %s: zero rows (fixed) for %s", result.path, ", ".join(result.zero_thetas))
    return result


def _phi(path: Path, table: int) -> tuple[EtaTable | None, list[Problem]]:
    out = FileProblems(str(path))
    lines = read_lines(path, out, "'.phi' file")
    block = None if lines is None else select_block(lines, table, "SUBJECT_NO", out, ".phi file")
    if block is None:
        return None, out.all()
    header, hline = block.header, block.header_line
    if len(header) < 2 or header[1] != "ID":
        got = header[1][:40] if len(header) > 1 else "nothing"
        out.add(f"line {hline}", f"the second column must be ID, got {got!r}")
        return None, out.all()
    etas: dict[int, int] = {}
    etc: dict[tuple[int, int], int] = {}
    kinds: set[str] = set()
    obj: int | None = None
    for k, name in enumerate(header[2:], start=2):
        where = f"line {hline}, column {name}"
        if m := ETA_COL.fullmatch(name):
            kinds.add(m[1])
            if int(m[2]) < 1 or int(m[2]) in etas:
                out.add(where, f"ETA numbers start at 1 and appear once, got {name!r}")
            etas[int(m[2])] = k
        elif m := ETC_COL.fullmatch(name):
            kinds.add("ETA" if m[1] == "ETC" else "PHI")
            i, j = int(m[2]), int(m[3])
            if j < 1 or i < j or (i, j) in etc:
                out.add(where, f"must be in the lower triangle, once, got {name!r}")
            etc[(i, j)] = k
        elif name == "OBJ" and obj is None:
            obj = k
        else:
            out.add(where, f"unknown column (expected ETA(n), ETC(i,j), OBJ), got {name[:40]!r}")
    if len(kinds) > 1:
        out.add(
            f"line {hline}",
            "the columns must be ETA(n)/ETC(i,j) or PHI(n)/PHC(i,j), not a mix of both",
        )
    kind = kinds.pop() if len(kinds) == 1 else "ETA"
    cond = "ETC" if kind == "ETA" else "PHC"
    n_eta = max(etas, default=0)
    if n_eta == 0:
        out.add(f"line {hline}", f"no {kind}(n) column")
    gone = [f"{kind}({n})" for n in range(1, n_eta + 1) if n not in etas]
    if gone:
        out.add(f"line {hline}", f"{kind}s must be numbered 1..{n_eta}, missing {listed(gone)}")
    if etc:
        over = [f"{cond}({i},{j})" for i, j in etc if i > n_eta]
        if over:
            out.add(f"line {hline}", f"{cond} beyond the {n_eta} {kind}(s): {listed(over)}")
        lower = [(i, j) for i in range(1, n_eta + 1) for j in range(1, i + 1)]
        miss = [f"{cond}({i},{j})" for i, j in lower if (i, j) not in etc]
        if miss:
            out.add(
                f"line {hline}",
                f"the lower triangle of the {n_eta} x {n_eta} {cond} must be complete, "
                f"missing {listed(miss)}",
            )
    row_lines, _, data, bad = row_numbers(block, out)
    finite_numbers(data[:, 2:], bad[:, 2:], row_lines, header[2:], out)
    if not block.rows:
        out.add(block.where, "no subject rows")
    whole_numbers(data[:, 0], bad[:, 0], row_lines, "SUBJECT_NO", out)
    ids = data[:, 1]
    first: dict[float, int] = {}
    for k in map(int, np.flatnonzero(~bad[:, 1])):
        v = float(ids[k])
        if not np.isfinite(v):
            out.add(f"line {row_lines[k]}, column ID", f"must be a finite number, got {v}")
        elif v in first:
            out.add(
                f"line {row_lines[k]}, column ID",
                f"an ID may appear once in a table, got {v:g} again "
                f"(first on line {row_lines[first[v]]})",
                kind="duplicate ID",
            )
        else:
            first[v] = k
    if out:
        return None, out.all()
    integral = bool(np.all(ids == np.round(ids)))
    index = pd.Index(ids.astype(np.int64) if integral else ids, name="ID")
    order = [etas[n] for n in range(1, n_eta + 1)]
    frame = pd.DataFrame(
        data[:, order], index=index, columns=[f"{kind}{n}" for n in range(1, n_eta + 1)]
    )
    cv: np.ndarray | None = None
    if etc:
        cv = np.zeros((len(data), n_eta, n_eta))
        for (i, j), k in etc.items():
            cv[:, i - 1, j - 1] = cv[:, j - 1, i - 1] = data[:, k]
    assert block.number is not None
    return (
        EtaTable(
            path=str(path),
            sha256=file_sha256(path),
            table_number=block.number,
            method=block.method,
            kind=kind,
            etas=frame,
            subject_no=data[:, 0].astype(np.int64),
            etc=cv,
            obj=None if obj is None else data[:, obj].copy(),
        ),
        [],
    )


def read_phi(path: str | Path, table: int = -1) -> EtaTable:
    """Read the individual ETAs (or PHIs) of one table of a NONMEM ``.phi`` file.

    Parameters
    ----------
    path : str or Path
        The ``.phi`` file (header ``SUBJECT_NO ID ETA(1) ... ETC(1,1) ... OBJ``, or
        ``PHI(n)``/``PHC(i,j)`` for the EM and Bayesian methods).
    table : int
        Which ``TABLE NO.`` block, as a Python index (default: the last).

    Returns
    -------
    EtaTable
        ETAs by ID (n_subjects, n_eta), conditional variances (n_subjects, n_eta,
        n_eta) and each subject's objective function.

    Raises
    ------
    DatasetError
        Every problem: a header without ``SUBJECT_NO``/``ID``, unknown or mixed
        columns, an incomplete ETC lower triangle, cells that are not numbers,
        duplicate IDs.
    """
    result, problems = _phi(Path(path), table)
    if result is None:
        raise DatasetError(problems)
    log.info(
        "phi %s (sha256 %s): table %d, %d subjects, %d %s",
        result.path,
        result.sha256[:16],
        result.table_number,
        len(result.etas),
        result.n_eta,
        result.kind,
    )
    return result
