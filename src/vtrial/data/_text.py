"""Shared by the readers of fitted models' text files (:mod:`~vtrial.data.nonmem`,
:mod:`~vtrial.data.monolix`, :mod:`~vtrial.data.nlmixr2`): the problems of one file,
at most :data:`~vtrial.data.tables.MAX_TABLE_PROBLEMS` of one kind listed, then a count,
short lists of names for a problem's message, and square matrices with named rows
(:func:`read_named_matrix`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vtrial.data.tables import MAX_TABLE_PROBLEMS, cell_problems, numeric_column
from vtrial.errors import DatasetError, Problem
from vtrial.infra.hashing import file_sha256

__all__ = ["FileProblems", "NamedMatrix", "listed", "read_named_matrix"]

#: listed names of missing matrix elements in one problem
_MAX_LISTED = 6


class FileProblems:
    """Problems of one file, at most :data:`MAX_TABLE_PROBLEMS` of one kind listed."""

    def __init__(self, file: str):
        self.file = file
        self.listed: list[Problem] = []
        self.counts: dict[str, int] = {}

    def add(self, where: str, message: str, kind: str | None = None) -> None:
        key = kind or message
        n = self.counts[key] = self.counts.get(key, 0) + 1
        if n <= MAX_TABLE_PROBLEMS:
            self.listed.append(Problem(self.file, where, message))

    def __bool__(self) -> bool:
        return bool(self.listed)

    def all(self) -> list[Problem]:
        more = [
            Problem(self.file, "", f"{n - MAX_TABLE_PROBLEMS} more problem(s) of the kind: {k}")
            for k, n in self.counts.items()
            if n > MAX_TABLE_PROBLEMS
        ]
        return self.listed + more


def listed(names: list[str]) -> str:
    head = ", ".join(names[:_MAX_LISTED])
    return head + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


@dataclass(frozen=True, eq=False)
class NamedMatrix:
    """A square matrix with named rows (:func:`read_named_matrix`).

    Attributes
    ----------
    path, sha256 : str
        The file and the SHA-256 of its bytes.
    names : tuple of str
        The row (and column) names, in file order.
    matrix : ndarray of float64, shape (len(names), len(names))
    """

    path: str
    sha256: str
    names: tuple[str, ...]
    matrix: np.ndarray = field(repr=False)


def read_named_matrix(path: str | Path, what: str) -> NamedMatrix:
    """Read a square matrix whose first column names the rows: R's
    ``write.csv(m, file)`` (a header row ``"",a,b,...``) or Monolix's
    ``FisherInformation/covarianceEstimates*.txt`` (no header). Comma-, semicolon- or
    tab-separated. A header row is one whose second cell is not a number; its names
    must then be the row names, in the same order.

    Parameters
    ----------
    path : str or Path
        The file.
    what : str
        What the matrix is, for problems (``nlmixr2 omega``).

    Raises
    ------
    DatasetError
        Every problem: a missing or non-numeric cell (row, line, column), a name given
        twice, a matrix that is not square or not symmetric, header names that are not
        the row names.
    """
    path = Path(path)
    out = FileProblems(str(path))
    try:
        with open(path, encoding="utf-8-sig") as fh:
            head = fh.readline()
        sep = max((",", ";", "\t"), key=head.count)
        cells = pd.read_csv(
            path,
            sep=sep,
            header=None,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            encoding="utf-8-sig",
        )
    except UnicodeDecodeError:
        out.add("", f"cannot read the {what}: not a text file")
        raise DatasetError(out.all()) from None
    except (OSError, ValueError) as exc:  # parser errors are ValueErrors
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        out.add("", f"cannot read the {what}: {reason}")
        raise DatasetError(out.all()) from None
    header: list[str] | None = None
    first_line = 1
    if len(cells) and cells.shape[1] > 1:
        probe = str(cells.iloc[0, 1]).strip()
        try:
            float(probe)
        except ValueError:
            header = [str(c).strip() for c in cells.iloc[0, 1:]]
            cells = cells.iloc[1:].reset_index(drop=True)
            first_line = 2
    names = [str(c).strip() for c in cells.iloc[:, 0]] if cells.shape[1] else []
    n = len(names)
    if n == 0 or cells.shape[1] != n + 1:
        out.add(
            "",
            f"the {what} must be a square matrix with a first column of names: {n} row(s) "
            f"and {max(cells.shape[1] - 1, 0)} column(s) of values",
        )
        raise DatasetError(out.all())
    seen: dict[str, int] = {}
    for k, name in enumerate(names):
        where = f"row {k + 1} (line {k + first_line}), column 1"
        if not name:
            out.add(where, "missing name")
        elif name in seen:
            out.add(where, f"a name may appear once, got {name!r} again (row {seen[name] + 1})")
        else:
            seen[name] = k
    if header is not None and header != names:
        bad = next(j for j in range(n) if header[j] != names[j])
        out.add(
            f"line 1, column {bad + 2}",
            f"the column names must be the row names in the same order: column {bad + 2} "
            f"is {header[bad]!r}, row {bad + 1} {names[bad]!r}",
        )
    matrix = np.full((n, n), np.nan)
    for j in range(n):
        label = names[j] if names[j] else str(j + 2)
        values, found = numeric_column(cells.iloc[:, j + 1], "must be a number")
        for p in cell_problems(path, first_line, label, found):
            out.add(p.where, p.message, kind=f"{label}: {p.message.split(',')[0]}")
        matrix[:, j] = values
    if not out:
        scale = max(1.0, float(np.abs(matrix).max()))
        asym = np.abs(matrix - matrix.T)
        if asym.max() > 1e-8 * scale:
            r, c = (int(x) for x in np.unravel_index(int(np.argmax(asym)), asym.shape))
            out.add(
                f"row {r + 1} (line {r + first_line}), column {names[c]}",
                f"the {what} must be symmetric: ({names[r]}, {names[c]}) is "
                f"{matrix[r, c]:.6g} and ({names[c]}, {names[r]}) {matrix[c, r]:.6g}",
            )
    if out:
        raise DatasetError(out.all())
    return NamedMatrix(path=str(path), sha256=file_sha256(path), names=tuple(names), matrix=matrix)
