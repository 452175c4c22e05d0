"""NONMEM's table-file format, shared by the readers of :mod:`vtrial.data.nonmem`:
``TABLE NO.`` blocks and their header lines, Fortran numbers (``1.2E+00``, ``1.2D+00``,
``1.2-100``, ``NaN``), rows checked as numbers, column layouts (``THETAn``,
``OMEGA(i,j)``, ``SIGMA(i,j)``, ``OBJ``) and symmetric matrices from a lower triangle.
Each function adds its problems to a :class:`~vtrial.data._text.FileProblems`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vtrial.data._text import FileProblems, listed

__all__ = [
    "ETA_COL",
    "ETC_COL",
    "FORTRAN_EXP",
    "MATRIX_COL",
    "NON_FINITE",
    "NUMBER",
    "OBJ_COL",
    "TABLE_LINE",
    "THETA_COL",
    "Layout",
    "TableBlock",
    "column_layout",
    "element_key",
    "finite_numbers",
    "fortran_number",
    "read_lines",
    "row_numbers",
    "select_block",
    "symmetric_matrix",
    "whole_numbers",
]


NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[EeDd][+-]?\d+)?")


FORTRAN_EXP = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))([+-]\d{3})")


NON_FINITE = {
    "nan": np.nan,
    "+nan": np.nan,
    "-nan": np.nan,
    "inf": np.inf,
    "+inf": np.inf,
    "-inf": -np.inf,
    "infinity": np.inf,
    "+infinity": np.inf,
    "-infinity": -np.inf,
}


TABLE_LINE = re.compile(r"TABLE\s+NO\.\s*(\d+)\s*:?\s*(.*)", re.IGNORECASE)


THETA_COL = re.compile(r"THETA(\d+)")


MATRIX_COL = re.compile(r"(OMEGA|SIGMA)\((\d+),(\d+)\)")


OBJ_COL = re.compile(r"[A-Z]*OBJ")


ETA_COL = re.compile(r"(ETA|PHI)\((\d+)\)")


ETC_COL = re.compile(r"(ETC|PHC)\((\d+),(\d+)\)")


@dataclass
class TableBlock:
    """One ``TABLE NO.`` block of a NONMEM table file (lines from 1)."""

    line: int
    title: str
    number: int | None = None
    method: str = ""
    header: list[str] = field(default_factory=list)
    header_line: int = 0
    rows: list[tuple[int, list[str]]] = field(default_factory=list)

    @property
    def where(self) -> str:
        number = self.number if self.number is not None else "?"
        return f"table {number} (line {self.line})"


def fortran_number(text: str) -> float | None:
    """A Fortran number, or None when the text is not one."""
    if NUMBER.fullmatch(text):
        return float(text.replace("D", "E").replace("d", "e"))
    m = FORTRAN_EXP.fullmatch(text)
    if m:
        return float(f"{m[1]}E{m[2]}")
    return NON_FINITE.get(text.lower())


def read_lines(path: Path, out: FileProblems, what: str) -> list[str] | None:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        out.add("", f"cannot read the {what}: not a text file")
        return None
    except OSError as exc:
        out.add("", f"cannot read the {what}: {exc.strerror or exc}")
        return None
    return text.splitlines()


def select_block(
    lines: list[str], table: int, first: str, out: FileProblems, what: str
) -> TableBlock | None:
    """The ``table``-th block, its header checked to start with ``first``."""
    blocks: list[TableBlock] = []
    before = 0
    for k, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        if text.upper().startswith("TABLE"):
            blocks.append(TableBlock(line=k, title=text))
        elif not blocks:
            before = before or k
        elif not blocks[-1].header_line:
            blocks[-1].header, blocks[-1].header_line = text.split(), k
        else:
            blocks[-1].rows.append((k, text.split()))
    if not blocks:
        out.add("", f"no 'TABLE NO.' line: not a NONMEM {what} (or an empty file)")
        return None
    if before:
        out.add(f"line {before}", "text before the first 'TABLE NO.' line")
    n = len(blocks)
    if not -n <= table < n:
        numbers = [m[1] if (m := TABLE_LINE.fullmatch(b.title)) else "?" for b in blocks]
        out.add(
            f"table={table}",
            f"no such table: the file has {n} TABLE block(s) (TABLE NO. {', '.join(numbers)}), "
            f"so table must be in {-n}..{n - 1}, got {table}",
        )
        return None
    block = blocks[table]
    m = TABLE_LINE.fullmatch(block.title)
    if m is None:
        out.add(
            f"line {block.line}",
            f"must read 'TABLE NO. n: <method>: ...', got {block.title[:60]!r}",
        )
    else:
        block.number = int(m[1])
        block.method = m[2].split(":")[0].strip()
    if not block.header_line:
        out.add(block.where, f"no header line ({first} ...) after the TABLE line")
        return None
    if block.header[0].upper() != first:
        out.add(
            f"line {block.header_line}",
            f"the header must start with {first}, got {block.header[0][:40]!r}",
        )
        return None
    block.header = [h.upper() for h in block.header]
    return block


def row_numbers(
    block: TableBlock, out: FileProblems, skip: int = 0
) -> tuple[list[int], list[list[str]], np.ndarray, np.ndarray]:
    """The rows with as many fields as the header, their values and bad cells.

    Returns
    -------
    lines : list of int
        File line of each kept row.
    texts : list of list of str
        Each kept row's first ``skip`` fields, as text.
    values : ndarray of float64, shape (n_rows, n_columns - skip)
        The other fields (NaN where a cell is not a number).
    bad : ndarray of bool, same shape
        Cells that are not numbers (reported).
    """
    width = len(block.header)
    lines: list[int] = []
    texts: list[list[str]] = []
    values: list[list[float]] = []
    bad: list[list[bool]] = []
    for line, fields in block.rows:
        if len(fields) != width:
            out.add(
                f"line {line}",
                f"must have {width} fields (as the header on line {block.header_line}), "
                f"got {len(fields)}",
                kind="wrong number of fields",
            )
            continue
        row: list[float] = []
        row_bad: list[bool] = []
        for name, text in zip(block.header[skip:], fields[skip:], strict=True):
            v = fortran_number(text)
            if v is None:
                out.add(
                    f"line {line}, column {name}",
                    f"must be a number, got {text[:40]!r}",
                    kind=f"not a number in column {name}",
                )
            row.append(np.nan if v is None else v)
            row_bad.append(v is None)
        lines.append(line)
        texts.append(fields[:skip])
        values.append(row)
        bad.append(row_bad)
    shape = (len(values), width - skip)
    return (
        lines,
        texts,
        np.array(values, dtype=np.float64).reshape(shape),
        np.array(bad, dtype=bool).reshape(shape),
    )


def whole_numbers(
    values: np.ndarray, bad: np.ndarray, lines: list[int], column: str, out: FileProblems
) -> np.ndarray:
    """Rows whose cell is a whole number (others reported as such)."""
    ok = ~bad & np.isfinite(values) & (values == np.round(values))
    for k in np.flatnonzero(~ok & ~bad):
        out.add(
            f"line {lines[k]}, column {column}",
            f"must be a whole number, got {values[k]:g}",
            kind=f"not a whole number in column {column}",
        )
    return np.asarray(ok)


def finite_numbers(
    values: np.ndarray, bad: np.ndarray, lines: list[int], names: list[str], out: FileProblems
) -> None:
    """Report cells that are numbers but not finite (NaN, Infinity)."""
    for r, c in zip(*np.nonzero(~bad & ~np.isfinite(values)), strict=True):
        out.add(
            f"line {lines[r]}, column {names[c]}",
            f"must be a finite number, got {values[r, c]}",
            kind=f"not finite in column {names[c]}",
        )


@dataclass
class Layout:
    """Where the estimates are among the columns (index into the value columns)."""

    theta: list[int] = field(default_factory=list)
    matrices: dict[str, dict[tuple[int, int], int]] = field(
        default_factory=lambda: {"OMEGA": {}, "SIGMA": {}}
    )
    sizes: dict[str, int] = field(default_factory=dict)
    objective: tuple[int, str] | None = None


def column_layout(names: list[str], line: int, out: FileProblems, *, objective: bool) -> Layout:
    """Check the estimate columns' names and find them (``names``: value columns)."""
    thetas: dict[int, int] = {}
    lay = Layout()
    seen: set[str] = set()
    for k, name in enumerate(names):
        where = f"line {line}, column {name}"
        if name in seen:
            out.add(where, "a column name may appear once, found again")
            continue
        seen.add(name)
        if m := THETA_COL.fullmatch(name):
            if int(m[1]) < 1:
                out.add(where, f"THETA numbers start at 1, got {name!r}")
            thetas[int(m[1])] = k
        elif m := MATRIX_COL.fullmatch(name):
            i, j = int(m[2]), int(m[3])
            if j < 1 or i < j:
                out.add(where, f"must be in the lower triangle (row >= column >= 1), got {name!r}")
            else:
                lay.matrices[m[1]][(i, j)] = k
        elif objective and OBJ_COL.fullmatch(name) and lay.objective is None:
            lay.objective = (k, name)
        else:
            expected = "THETAn, OMEGA(i,j), SIGMA(i,j)" + (", OBJ" if objective else "")
            out.add(where, f"unknown column (expected {expected}), got {name[:40]!r}")
    n_theta = max(thetas, default=0)
    missing = [f"THETA{n}" for n in range(1, n_theta + 1) if n not in thetas]
    if missing:
        out.add(f"line {line}", f"THETAs must be numbered 1..{n_theta}, missing {listed(missing)}")
    lay.theta = [thetas[n] for n in range(1, n_theta + 1) if n in thetas]
    for kind, elements in lay.matrices.items():
        size = max((i for i, _ in elements), default=0)
        lay.sizes[kind] = size
        lower = [f"{kind}({i},{j})" for i in range(1, size + 1) for j in range(1, i + 1)]
        gone = [e for e in lower if element_key(e) not in elements]
        if gone:
            out.add(
                f"line {line}",
                f"the lower triangle of the {size} x {size} {kind} must be complete, "
                f"missing {listed(gone)}",
            )
    if objective and lay.objective is None:
        out.add(f"line {line}", "no objective-function column (OBJ)")
    return lay


def element_key(element: str) -> tuple[int, int]:
    m = MATRIX_COL.fullmatch(element) or ETC_COL.fullmatch(element)
    assert m is not None
    return int(m[2]), int(m[3])


def symmetric_matrix(
    row: np.ndarray, elements: Mapping[tuple[int, int], int], size: int
) -> np.ndarray:
    """The symmetric matrix of a row's lower-triangle elements."""
    m = np.zeros((size, size))
    for (i, j), k in elements.items():
        m[i - 1, j - 1] = m[j - 1, i - 1] = row[k]
    return m
