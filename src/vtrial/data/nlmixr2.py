"""nlmixr2's estimates of a fit, as a user exports them from R: readers of the
fixed effects, the OMEGA matrix, the individual random effects and the covariance of
the fixed effects.

What is read
------------
nlmixr2 keeps a fit in an R object, with no file format of its own; vtrial reads four
CSV files that R writes in one line each (``fit`` the nlmixr2 fit):

.. code-block:: r

    write.csv(data.frame(name = names(fixef(fit)), value = fixef(fit)),
              "fixef.csv", row.names = FALSE)          # required
    write.csv(fit$omega, "omega.csv")                  # OMEGA: IIV
    write.csv(ranef(fit), "ranef.csv", row.names = FALSE)  # each subject's ETAs
    write.csv(vcov(fit), "cov.csv")                    # uncertainty

- :func:`read_nlmixr2_fixef`: ``fixef.csv``, a ``name`` and a ``value`` column (or
  two columns, names then values: ``write.csv(fixef(fit), "fixef.csv")``), one row per
  fixed effect (``tcl``, ``add.sd``...) as estimated (nlmixr2's ``cl <- exp(tcl +
  eta.cl)`` estimates ``tcl`` on the log scale: the study's ``map`` says so).
- :func:`read_nlmixr2_matrix`: ``omega.csv`` and ``cov.csv``, square matrices with a
  first column of names and a header of the same names (R's ``write.csv`` of a
  matrix).
- :func:`read_nlmixr2_ranef`: ``ranef.csv``, an ``ID`` column and one column per
  random effect (``eta.cl``); other columns (R's row names) are ignored.

Problems
--------
Every problem of a file is reported at once, before anything is returned, as
:class:`vtrial.errors.Problem` ``(file, where, message)`` with ``where`` ``row R (line
L), column C``, ``line 1`` (the header) or empty; the readers raise
:class:`vtrial.errors.DatasetError`. Nothing here prints a file's contents: a problem
quotes at most one offending cell, and a file is identified by its SHA-256.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from vtrial.data._text import FileProblems, NamedMatrix, listed, read_named_matrix
from vtrial.data.tables import cell_problems, missing_mask, numeric_column, read_cells, subject_ids
from vtrial.errors import DatasetError
from vtrial.infra.hashing import file_sha256

__all__ = [
    "Nlmixr2Fixef",
    "Nlmixr2Ranef",
    "read_nlmixr2_fixef",
    "read_nlmixr2_matrix",
    "read_nlmixr2_ranef",
]


@dataclass(frozen=True, eq=False)
class Nlmixr2Fixef:
    """The fixed effects of an nlmixr2 fit (``fixef.csv``).

    Attributes
    ----------
    path, sha256 : str
        The file and the SHA-256 of its bytes.
    values : mapping of str to float
        Name -> estimate as given, in file order.
    """

    path: str
    sha256: str
    values: Mapping[str, float]


@dataclass(frozen=True, eq=False)
class Nlmixr2Ranef:
    """Each subject's random effects of an nlmixr2 fit (``ranef.csv``).

    Attributes
    ----------
    path, sha256 : str
        The file and the SHA-256 of its bytes.
    etas : DataFrame, shape (n_subjects, n_eta)
        Indexed by ``ID`` (int64 when every ID is a whole number, float64 when every
        ID is a number, text otherwise), one column per random effect, in file order.
    """

    path: str
    sha256: str
    etas: pd.DataFrame = field(repr=False)


def _cells(path: Path, out: FileProblems, what: str) -> pd.DataFrame | None:
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


def read_nlmixr2_fixef(path: str | Path) -> Nlmixr2Fixef:
    """Read an nlmixr2 ``fixef.csv`` (see the module docstring).

    Raises
    ------
    DatasetError
        Every problem: no ``name``/``value`` columns, a missing name, a name given
        twice, a value that is missing or not a number.
    """
    path = Path(path)
    out = FileProblems(str(path))
    cells = _cells(path, out, "nlmixr2 fixed effects")
    if cells is None:
        raise DatasetError(out.all())
    cols = [str(c) for c in cells.columns]
    lower = {c.lower(): c for c in cols}
    if "name" in lower and "value" in lower:
        name_col, value_col = lower["name"], lower["value"]
    elif len(cols) == 2:
        name_col, value_col = cols
    else:
        out.add(
            "line 1",
            "needs a 'name' and a 'value' column, or two columns (names, values), got "
            f"columns {listed(cols)}",
        )
        raise DatasetError(out.all())
    values, found = numeric_column(cells[value_col], "must be a number")
    for p in cell_problems(path, 2, value_col, found):
        out.add(p.where, p.message, kind=f"{value_col}: {p.message.split(',')[0]}")
    names = cells[name_col].astype(str).str.strip().tolist()
    row_of: dict[str, int] = {}
    for k, name in enumerate(names):
        where = f"row {k + 1} (line {k + 2}), column {name_col}"
        if not name:
            out.add(where, "missing name")
        elif name in row_of:
            out.add(where, f"a name may appear once, got {name!r} again (row {row_of[name] + 1})")
        else:
            row_of[name] = k
    if out:
        raise DatasetError(out.all())
    return Nlmixr2Fixef(
        path=str(path),
        sha256=file_sha256(path),
        values=MappingProxyType({n: float(values[k]) for n, k in row_of.items()}),
    )


def read_nlmixr2_matrix(path: str | Path, what: str = "nlmixr2 matrix") -> NamedMatrix:
    """Read an nlmixr2 ``omega.csv`` or ``cov.csv`` (R's ``write.csv`` of a named
    matrix; :func:`vtrial.data._text.read_named_matrix`)."""
    return read_named_matrix(path, what)


def read_nlmixr2_ranef(path: str | Path) -> Nlmixr2Ranef:
    """Read an nlmixr2 ``ranef.csv`` (see the module docstring).

    Raises
    ------
    DatasetError
        Every problem: no ``ID`` column, a missing or duplicate ID, a value that is
        missing or not a number.
    """
    path = Path(path)
    out = FileProblems(str(path))
    cells = _cells(path, out, "nlmixr2 random effects")
    if cells is None:
        raise DatasetError(out.all())
    cols = [str(c) for c in cells.columns]
    id_col = next((c for c in cols if c.lower() == "id"), None)
    if id_col is None:
        out.add("line 1", f"no 'ID' column (columns: {listed(cols)})")
        raise DatasetError(out.all())
    # R's row names: an unnamed first column
    etas = [c for c in cols if c != id_col and c and not c.startswith("Unnamed:")]
    gone = missing_mask(cells[id_col])
    for k in np.flatnonzero(gone):
        out.add(f"row {k + 1} (line {k + 2}), column {id_col}", "missing ID", kind="missing ID")
    ids = pd.Index(subject_ids(cells[id_col]))
    for r in map(int, np.flatnonzero(ids.duplicated() & ~gone)):
        out.add(
            f"row {r + 1} (line {r + 2}), column {id_col}",
            f"an ID may appear once, got {str(cells[id_col].iloc[r]).strip()[:40]!r} again",
            kind="duplicate ID",
        )
    frame: dict[str, np.ndarray] = {}
    for c in etas:
        vals, found = numeric_column(cells[c], "must be a number")
        for p in cell_problems(path, 2, c, found):
            out.add(p.where, p.message, kind=f"{c}: {p.message.split(',')[0]}")
        frame[c] = vals
    if out:
        raise DatasetError(out.all())
    return Nlmixr2Ranef(
        path=str(path),
        sha256=file_sha256(path),
        etas=pd.DataFrame(frame, index=ids.rename("ID")),
    )
