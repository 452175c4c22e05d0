"""Synthetic fitted-model files for the tests of :mod:`vtrial.data.nonmem`,
:mod:`vtrial.data.monolix` and :mod:`vtrial.data.fitted`.

Every file of those tests is synthetic, written by the writers below from known arrays
in the layout NONMEM 7 uses (``TABLE NO.`` lines, a header, numbers as ``1PE12.5`` in
13-wide columns, so 6 significant digits: values are compared with a relative
tolerance of 1e-5, and exact zeros exactly).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vtrial.errors import DatasetError

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


def ext_table(
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


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def edit(path: Path, line: int, field: int, text: str) -> None:
    """Replace field ``field`` (0-based) of file line ``line`` (from 1)."""
    lines = path.read_text().splitlines()
    fields = lines[line - 1].split()
    fields[field] = text
    lines[line - 1] = "  ".join(fields)
    write(path, lines)


def ext_file(tmp_path: Path, **kw: Any) -> Path:
    return write(tmp_path / "run12.ext", ext_table(1, THETA, OMEGA, SIGMA, OBJ, **kw))


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


def cov_matrix() -> np.ndarray:
    rng = np.random.default_rng(7)
    free = [0, 1, 2, 4, 6, 7, 8, 9, 12]
    a = rng.normal(size=(len(free), len(free))) * np.linspace(0.05, 1.0, len(free))
    c = np.zeros((13, 13))
    c[np.ix_(free, free)] = a @ a.T + np.diag(np.full(len(free), 1e-3))
    return c


def cov_table(matrix: np.ndarray, names: list[str] = COV_NAMES) -> list[str]:
    lines = [_table_line(1, METHOD), _header(["NAME", *names])]
    for name, row in zip(names, matrix, strict=True):
        lines.append(f" {name:<12}" + "".join(_e(v) for v in row))
    return lines


#: four subjects' ETAs and their conditional variance matrices
IDS = [1, 2, 5, 12]
ETAS = np.array([[0.1, -0.2, 0.05], [-0.31, 0.12, 0.0], [0.0, 0.25, -0.11], [0.21, -0.05, 0.33]])
SUBJ_OBJ = np.array([12.5, 30.25, 7.125, 18.0])


def etc_matrices() -> np.ndarray:
    out = np.zeros((4, 3, 3))
    for s in range(4):
        b = np.arange(1.0, 10.0).reshape(3, 3) * 0.001 * (s + 1)
        out[s] = b @ b.T + np.eye(3) * 0.01
    return out


def phi_table(ids: Sequence[float], kind: str = "ETA") -> list[str]:
    cond = "ETC" if kind == "ETA" else "PHC"
    etc = etc_matrices()
    lower = [(i, j) for i in range(3) for j in range(i + 1)]
    names = [f"{kind}({k})" for k in (1, 2, 3)] + [f"{cond}({i + 1},{j + 1})" for i, j in lower]
    lines = [_table_line(1, METHOD), _header(["SUBJECT_NO", "ID", *names, "OBJ"])]
    for s, subject in enumerate(ids):
        cells = [*ETAS[s], *(etc[s, i, j] for i, j in lower), SUBJ_OBJ[s]]
        lines.append(f"{s + 1:13d}" + _e(subject) + "".join(_e(v) for v in cells))
    return lines


def error_message(fn: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(DatasetError) as info:
        fn(*args, **kw)
    return str(info.value)
