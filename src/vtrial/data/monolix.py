"""Monolix's estimates of a fit: readers of ``populationParameters.txt``,
``estimatedRandomEffects.txt`` and the covariance of the estimates.

What is read
------------
- :func:`read_monolix_population` and :func:`read_monolix_etas`: Monolix
  ``populationParameters.txt`` and ``estimatedRandomEffects.txt``.
- :func:`read_monolix_covariance`: ``FisherInformation/covarianceEstimatesSA.txt``
  (or ``...Lin.txt``): one row per population parameter, its name and then its
  covariances, no header (a header row of the same names is accepted).

Conventions of Monolix's files
------------------------------
Comma-, semicolon- or tab-separated text with a header (the separator is taken from
the header line). ``populationParameters.txt`` names its rows ``<p>_pop`` (typical
value of parameter ``p``, on its natural scale), ``omega_<p>`` (SD of the random
effect of ``p``), ``corr_<p>_<q>`` (correlation of two random effects), ``beta_...``
(covariate effects) and ``gamma_...`` (inter-occasion SDs, kept as given); every other
row is a residual-error parameter (``a``, ``b``, ``c``, ``a1``...).

Problems
--------
Every problem of a file is reported at once (at most
:data:`~vtrial.data.tables.MAX_TABLE_PROBLEMS` of one kind, then a count), before
anything is returned, as :class:`vtrial.errors.Problem` ``(file, where, message)``
where ``where`` is ``row R (line L), column C`` (rows from 1, lines of the file from
1), ``line 1`` (the header) or ``column C``; the readers raise
:class:`vtrial.errors.DatasetError`. Nothing here prints a file's contents: a problem
quotes at most one offending cell, and a file is identified by its SHA-256.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np
import pandas as pd

from vtrial.data._text import FileProblems, NamedMatrix, listed, read_named_matrix
from vtrial.data.tables import (
    cell_problems,
    missing_mask,
    numeric_column,
    read_cells,
    subject_ids,
)
from vtrial.errors import DatasetError
from vtrial.infra.hashing import file_sha256

__all__ = [
    "MonolixEstimates",
    "MonolixEtas",
    "read_monolix_covariance",
    "read_monolix_etas",
    "read_monolix_population",
]

#: tolerance of the smallest eigenvalue of Monolix's correlation matrix, per parameter
#: (correlations are printed rounded)
_MONOLIX_PSD_TOL = 1e-6


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class MonolixEstimates:
    """Population estimates of a Monolix ``populationParameters.txt``.

    Attributes
    ----------
    path, sha256 : str
        The file and the SHA-256 of its bytes.
    typical : mapping of str to float
        Parameter -> typical value (the ``<p>_pop`` rows), in file order.
    omega_names : tuple of str
        Parameters with a random effect (the ``omega_<p>`` rows), in file order.
    omega : ndarray of float64, shape (len(omega_names), len(omega_names))
        Their variance-covariance matrix: ``omega_p ** 2`` on the diagonal and
        ``corr_p_q * omega_p * omega_q`` off it.
    residual : mapping of str to float
        Residual-error parameters (every row of no other kind), as given.
    covariate_effects : mapping of str to float
        The ``beta_...`` rows, named without ``beta_``.
    other : mapping of str to float
        The ``gamma_...`` rows (inter-occasion SDs), as given.
    se : mapping of str to float
        Row name -> standard error (``se_sa``, else ``se_lin``; NaN where missing);
        empty when the file has neither column.
    """

    path: str
    sha256: str
    typical: Mapping[str, float]
    omega_names: tuple[str, ...]
    omega: np.ndarray
    residual: Mapping[str, float]
    covariate_effects: Mapping[str, float]
    other: Mapping[str, float]
    se: Mapping[str, float]


@dataclass(frozen=True, eq=False)
class MonolixEtas:
    """Individual random effects of a Monolix ``estimatedRandomEffects.txt``.

    Attributes
    ----------
    path, sha256 : str
        The file and the SHA-256 of its bytes.
    estimate : {"mode", "mean"}
        Which estimate was read: the conditional mode (EBE) or the conditional mean.
    etas : DataFrame, shape (n_subjects, n_eta)
        Indexed by ``id`` (int64 when every ID is a whole number, float64 when every
        ID is a number, text otherwise), one column per parameter (``Cl`` for
        ``eta_Cl_mode``), in file order.
    sd : DataFrame or None
        The conditional SDs (``eta_<p>_sd``), same shape; None when absent.
    """

    path: str
    sha256: str
    estimate: str
    etas: pd.DataFrame = field(repr=False)
    sd: pd.DataFrame | None = field(repr=False)


# ---------------------------------------------------------------------------- Monolix


def _read_csv(path: Path, out: FileProblems, what: str) -> pd.DataFrame | None:
    """A Monolix text table, all cells as text (separator from the header line)."""
    try:
        cells, _ = read_cells(path)
    except UnicodeDecodeError:
        out.add("", f"cannot read the {what}: not a text file")
        return None
    except (OSError, ValueError) as exc:  # parser errors are ValueErrors
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        out.add("", f"cannot read the {what}: {reason}")
        return None
    return cells


def _column(cells: pd.DataFrame, name: str, out: FileProblems) -> str | None:
    """The file's spelling of a required column (case-insensitive)."""
    for c in cells.columns:
        if c.lower() == name:
            return str(c)
    out.add("line 1", f"no {name!r} column (columns: {listed([str(c) for c in cells.columns])})")
    return None


def read_monolix_population(path: str | Path) -> MonolixEstimates:
    """Read a Monolix ``populationParameters.txt``.

    Parameters
    ----------
    path : str or Path
        The file: a header ``parameter,value[,se_sa,rse_sa...]`` and one row per
        population parameter (see the module docstring for the names).

    Returns
    -------
    MonolixEstimates
        Typical values, OMEGA as variances and covariances (Monolix gives SDs and
        correlations), residual-error parameters, covariate effects, SEs.

    Raises
    ------
    DatasetError
        Every problem: missing columns, a value that is not a number, a name given
        twice, a negative SD, a correlation outside [-1, 1] or naming parameters
        without an ``omega_``, an OMEGA that is not positive semi-definite.
    """
    path = Path(path)
    out = FileProblems(str(path))
    cells = _read_csv(path, out, "Monolix population parameters")
    if cells is None:
        raise DatasetError(out.all())
    name_col = _column(cells, "parameter", out)
    value_col = _column(cells, "value", out)
    if name_col is None or value_col is None:
        raise DatasetError(out.all())
    values, found = numeric_column(cells[value_col], "must be a number")
    problems = cell_problems(path, 2, value_col, found)
    se_col = next((c for c in cells.columns if c.lower() in ("se_sa", "se_lin")), None)
    se = np.full(len(cells), np.nan)
    if se_col is not None:
        se, found = numeric_column(cells[se_col], "must be a number", missing=None)
        problems += cell_problems(path, 2, se_col, found)
    for p in problems:
        out.add(p.where, p.message)
    names = cells[name_col].astype(str).str.strip().tolist()
    row_of: dict[str, int] = {}
    for k, name in enumerate(names):
        where = f"row {k + 1} (line {k + 2}), column {name_col}"
        if not name:
            out.add(where, "missing parameter name")
        elif name in row_of:
            out.add(
                where, f"a parameter may appear once, got {name!r} again (row {row_of[name] + 1})"
            )
        else:
            row_of[name] = k
    typical: dict[str, float] = {}
    sds: dict[str, float] = {}
    corr: dict[str, float] = {}
    residual: dict[str, float] = {}
    effects: dict[str, float] = {}
    other: dict[str, float] = {}
    for name, k in row_of.items():
        v = float(values[k])
        if name.endswith("_pop") and len(name) > 4:
            typical[name[:-4]] = v
        elif name.startswith("omega_") and len(name) > 6:
            sds[name[6:]] = v
            if v < 0:
                out.add(
                    f"row {k + 1} (line {k + 2}), column {value_col}",
                    f"an SD must be >= 0, got {v:g}",
                )
        elif name.startswith("corr_"):
            corr[name] = v
        elif name.startswith("beta_"):
            effects[name[5:]] = v
        elif name.startswith("gamma_"):
            other[name] = v
        else:
            residual[name] = v
    omega_names = tuple(sds)
    omega = np.diag(np.array([sds[p] ** 2 for p in omega_names]))
    pos = {p: i for i, p in enumerate(omega_names)}
    for name, r in corr.items():
        k = row_of[name]
        where = f"row {k + 1} (line {k + 2}), column {name_col}"
        rest = name[5:]
        pairs = [
            (rest[:s], rest[s + 1 :])
            for s in range(1, len(rest) - 1)
            if rest[s] == "_" and rest[:s] in pos and rest[s + 1 :] in pos
        ]
        if len(pairs) != 1:
            why = "no pair" if not pairs else "more than one pair"
            out.add(
                where,
                f"a correlation must name two parameters with an omega_ row (corr_<p>_<q>), "
                f"{why} found in {name!r}",
            )
            continue
        a, b = pairs[0]
        if not -1 <= r <= 1:
            out.add(
                f"row {k + 1} (line {k + 2}), column {value_col}",
                f"a correlation must be in [-1, 1], got {r:g}",
            )
            continue
        c = r * sds[a] * sds[b]
        omega[pos[a], pos[b]] = omega[pos[b], pos[a]] = c
    if not out and len(omega_names):
        sd = np.sqrt(np.diag(omega))
        live = sd > 0
        cor = omega[np.ix_(live, live)] / np.outer(sd[live], sd[live])
        low = float(np.linalg.eigvalsh(cor)[0]) if len(cor) else 0.0
        if low < -_MONOLIX_PSD_TOL * len(cor):
            out.add(
                f"column {value_col}",
                "the corr_ rows must give a positive semi-definite OMEGA: the smallest "
                f"eigenvalue of the correlation matrix is {low:.6g}",
            )
    if out:
        raise DatasetError(out.all())
    return MonolixEstimates(
        path=str(path),
        sha256=file_sha256(path),
        typical=MappingProxyType(typical),
        omega_names=omega_names,
        omega=omega,
        residual=MappingProxyType(residual),
        covariate_effects=MappingProxyType(effects),
        other=MappingProxyType(other),
        se=MappingProxyType({n: float(se[k]) for n, k in row_of.items()})
        if se_col
        else MappingProxyType({}),
    )


def read_monolix_etas(path: str | Path, estimate: Literal["mode", "mean"] = "mode") -> MonolixEtas:
    """Read a Monolix ``estimatedRandomEffects.txt``.

    Parameters
    ----------
    path : str or Path
        The file: an ``id`` column, then ``eta_<p>_<estimate>`` columns (``mode``,
        ``mean``, ``sd``, ``SAEM``...). Other columns are ignored.
    estimate : {"mode", "mean"}
        Which estimate to read: the conditional mode (default, the EBE) or mean.

    Returns
    -------
    MonolixEtas
        ETAs by ID and parameter, and the conditional SDs when the file has them.

    Raises
    ------
    DatasetError
        Every problem: no ``id`` column, no ``eta_<p>_<estimate>`` column, a missing or
        non-numeric value, a duplicate ID.
    ValueError
        ``estimate`` is neither ``mode`` nor ``mean``.
    """
    if estimate not in ("mode", "mean"):
        raise ValueError(f"estimate must be 'mode' or 'mean', got {estimate!r}")
    path = Path(path)
    out = FileProblems(str(path))
    cells = _read_csv(path, out, "Monolix random effects")
    if cells is None:
        raise DatasetError(out.all())
    id_col = _column(cells, "id", out)
    chosen: dict[str, str] = {}
    sds: dict[str, str] = {}
    suffixes: set[str] = set()
    for c in cells.columns:
        if c.startswith("eta_") and "_" in c[4:]:
            param, suffix = c[4:].rsplit("_", 1)
            suffixes.add(suffix)
            if suffix == estimate:
                chosen[param] = c
            elif suffix == "sd":
                sds[param] = c
    if not chosen:
        out.add(
            "line 1",
            f"no eta_<parameter>_{estimate} column (estimates found: "
            f"{', '.join(sorted(suffixes)) or 'none'})",
        )
    if id_col is None or not chosen:
        raise DatasetError(out.all())
    gone = missing_mask(cells[id_col])
    for k in np.flatnonzero(gone):
        out.add(f"row {k + 1} (line {k + 2}), column {id_col}", "missing ID", kind="missing ID")
    ids = pd.Index(subject_ids(cells[id_col]))
    dup = ids.duplicated() & ~gone
    for r in map(int, np.flatnonzero(dup)):
        out.add(
            f"row {r + 1} (line {r + 2}), column {id_col}",
            f"an ID may appear once, got {str(cells[id_col].iloc[r]).strip()[:40]!r} again",
            kind="duplicate ID",
        )
    frames: dict[str, dict[str, np.ndarray]] = {"est": {}, "sd": {}}
    for key, cols in (("est", chosen), ("sd", sds)):
        for param, c in cols.items():
            vals, found = numeric_column(cells[c], "must be a number")
            for p in cell_problems(path, 2, c, found):
                out.add(p.where, p.message, kind=f"{c}: {p.message.split(',')[0]}")
            frames[key][param] = vals
    if out:
        raise DatasetError(out.all())
    index = ids.rename("id")
    etas = pd.DataFrame(frames["est"], index=index)
    sd = pd.DataFrame(frames["sd"], index=index) if sds else None
    return MonolixEtas(
        path=str(path), sha256=file_sha256(path), estimate=estimate, etas=etas, sd=sd
    )


def read_monolix_covariance(path: str | Path) -> NamedMatrix:
    """Read a Monolix ``FisherInformation/covarianceEstimatesSA.txt`` (or ``Lin``).

    Parameters
    ----------
    path : str or Path
        The file: one row per population parameter (``Cl_pop``, ``omega_Cl``, ``b``),
        its name and then its row of the covariance matrix (a header row of the same
        names is accepted).

    Returns
    -------
    NamedMatrix
        The names (as in ``populationParameters.txt``) and the matrix. Which scale it
        is on (that of the parameters, or of their transformed, Gaussian, values)
        depends on the Monolix version: the study says (``covariance_scale``).

    Raises
    ------
    DatasetError
        Every problem (:func:`vtrial.data._text.read_named_matrix`).
    """
    return read_named_matrix(path, "Monolix covariance of the estimates")
