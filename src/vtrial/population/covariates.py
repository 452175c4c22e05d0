"""Virtual-population covariates: marginals, copula, real tables and eligibility.

A :class:`CovariateSampler` draws the covariates of *candidates* ``0, 1, 2, ...`` of a
replicate. Candidate ``k``'s covariates depend only on (study seed, replicate, ``k``):
every draw is a row of a keyed stream (:func:`vtrial.infra.rng.keyed_uniform_rows`), so
they never depend on shards, workers, batch sizes, other replicates or
``population.size``. The patients of a replicate are the first ``population.size``
candidates that meet the inclusion and exclusion criteria (all candidates when there
are none, so patient ``i`` is candidate ``i - 1``).

Per candidate, in this order:

1. ``population.resample``: a row of the user's covariate table (a stratified,
   optionally weighted bootstrap with keyed draws, see :class:`CovariateTable`), with
   an optional multiplicative jitter of its numeric columns;
2. the categorical covariates of ``population.covariates``;
3. the other sampled covariates: one keyed uniform each (``covariate:<name>``),
   correlated through a Gaussian copula for the covariates of
   ``population.correlation`` (normal scores ``z = Φ⁻¹(u)`` times the Cholesky factor
   of the correlation matrix, back to uniforms with Φ), then mapped through each
   marginal's inverse CDF (normal, log-normal, truncated, uniform, empirical; with
   ``by`` the parameters of the candidate's category). So every marginal is exact
   and a covariate outside the copula has the draws it would have without it;
4. the derived covariates (:func:`vtrial.population.sampling.derive_covariates`).

The module works on plain study data (``Study.data``) so that study validation can
use it (:func:`resampled_columns`, :func:`covariate_problems`) before any compute.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from vtrial.errors import ConfigError, ExpressionError, Problem
from vtrial.infra.rng import keyed_uniform_rows, stream
from vtrial.model.expressions import Expression, evaluate, parse_expression

#: Derived covariates: name -> (covariates needed, unit).
DERIVED: dict[str, tuple[tuple[str, ...], str]] = {
    "bmi": (("weight", "height"), "kg/m2"),
    "bsa": (("weight", "height"), "m2"),
    "bsa_dubois": (("weight", "height"), "m2"),
    "crcl": (("age", "weight", "scr", "sex"), "mL/min"),
    "egfr": (("age", "scr", "sex"), "mL/min/1.73m2"),
    "lbw": (("weight", "height", "sex"), "kg"),
}


__all__ = [
    "CANDIDATE_CAP_FACTOR",
    "CONTINUOUS",
    "MIN_ACCEPTANCE",
    "PILOT_CANDIDATES",
    "CovariateSampler",
    "CovariateTable",
    "Criterion",
    "Resampled",
    "categories_of",
    "correlation_matrix",
    "covariate_problems",
    "covariate_sampler",
    "input_files",
    "read_covariate_table",
    "resampled_columns",
]

#: Distributions that may take part in ``population.correlation`` (continuous ones).
CONTINUOUS = ("normal", "lognormal", "uniform", "empirical")
#: Candidates drawn at validation time to measure the acceptance of the criteria.
PILOT_CANDIDATES = 10_000
#: Default of ``population.min_acceptance``: least acceptable share of eligible candidates.
MIN_ACCEPTANCE = 0.01
#: Hard cap of candidates per replicate: ``CANDIDATE_CAP_FACTOR * size / min_acceptance``
#: (plus the pilot size), i.e. four times what the minimum acceptance would need.
CANDIDATE_CAP_FACTOR = 4
#: Most candidates drawn at once while looking for eligible ones (bounds memory).
MAX_BATCH = 1 << 20
#: Problems listed per column and kind of problem of a covariate table (then a count).
MAX_TABLE_PROBLEMS = 20
#: Column names of the population table that a table column must not take.
RESERVED_COLUMNS = ("replicate", "patient_id", "arm", "arm_index", "resample_row")
#: Values of a CSV cell that count as missing (after stripping blanks).
MISSING = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", ".")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
#: 2**64 / golden ratio: the Kronecker (golden-ratio) sequence of the strata
_PHI64 = 0x9E3779B97F4A7C15


# ---------------------------------------------------------------------------
# Marginals
# ---------------------------------------------------------------------------


def _by(value: Any, by_labels: np.ndarray | None) -> np.ndarray | float:
    """Scalar, or per-patient values looked up by the `by` covariate's category."""
    if isinstance(value, Mapping):
        assert by_labels is not None
        out = np.empty(by_labels.shape[0])
        for cat, v in value.items():
            out[by_labels == cat] = float(v)
        return out
    return float(value)


def _truncated_normal(u: np.ndarray, mu: Any, sd: Any, lo: float, hi: float) -> np.ndarray:
    """Inverse-CDF draw from N(mu, sd) truncated to [lo, hi] (exact, no rejection)."""
    a = special.ndtr((lo - mu) / sd)
    b = special.ndtr((hi - mu) / sd)
    return np.asarray(mu + sd * special.ndtri(a + u * (b - a)), dtype=np.float64)


def _pick(value: Any, category: str | None) -> Any:
    """The entry of a per-category mapping, or the value itself."""
    return value[category] if isinstance(value, Mapping) and category is not None else value


@dataclass(frozen=True)
class _Empirical:
    """Inverse CDF of one empirical distribution (one category)."""

    x: np.ndarray
    cum: np.ndarray | None  # discrete values: normalised cumulative weights
    probs: np.ndarray | None  # quantiles: their probabilities (linear in between)

    @classmethod
    def build(cls, spec: Mapping[str, Any], category: str | None) -> _Empirical:
        if "values" in spec:
            x = np.asarray(_pick(spec["values"], category), dtype=np.float64)
            w = spec.get("weights")
            wv = np.ones(x.size) if w is None else np.asarray(_pick(w, category), np.float64)
            order = np.argsort(x, kind="stable")
            cum = np.cumsum(wv[order])
            return cls(x=x[order], cum=cum / cum[-1], probs=None)
        q = np.asarray(_pick(spec["quantiles"], category), dtype=np.float64)
        p = spec.get("probs")
        pv = np.linspace(0.0, 1.0, q.size) if p is None else np.asarray(_pick(p, category))
        return cls(x=q, cum=None, probs=np.asarray(pv, dtype=np.float64))

    def ppf(self, u: np.ndarray) -> np.ndarray:
        if self.cum is not None:
            idx = np.minimum(np.searchsorted(self.cum, u, side="right"), self.x.size - 1)
            return np.asarray(self.x[idx], dtype=np.float64)
        assert self.probs is not None
        return np.asarray(np.interp(u, self.probs, self.x), dtype=np.float64)


def _empirical_ppf(
    spec: Mapping[str, Any], u: np.ndarray, by_labels: np.ndarray | None
) -> np.ndarray:
    """Inverse CDF of ``empirical`` (per category of ``by`` when it has mappings)."""
    if by_labels is None or not any(isinstance(v, Mapping) for v in spec.values()):
        return _Empirical.build(spec, None).ppf(u)
    out = np.empty(u.shape[0])
    cats = next(v for v in spec.values() if isinstance(v, Mapping))
    for cat in cats:
        m = by_labels == cat
        out[m] = _Empirical.build(spec, str(cat)).ppf(u[m])
    return out


def _marginal(spec: Mapping[str, Any], u: np.ndarray, by_labels: np.ndarray | None) -> np.ndarray:
    """Map uniforms through the inverse CDF of a non-categorical covariate."""
    lo, hi = spec.get("bounds", (-np.inf, np.inf))
    if "normal" in spec:
        mu = _by(spec["normal"]["mean"], by_labels)
        sd = _by(spec["normal"]["sd"], by_labels)
        return _truncated_normal(u, mu, sd, lo, hi)
    if "lognormal" in spec:
        med = _by(spec["lognormal"]["median"], by_labels)
        cv = _by(spec["lognormal"]["cv"], by_labels)
        sigma = np.sqrt(np.log1p(np.square(cv)))
        llo = np.log(lo) if lo > 0 else -np.inf
        lhi = np.log(hi) if np.isfinite(hi) else np.inf
        return np.exp(_truncated_normal(u, np.log(med), sigma, llo, lhi))
    if "uniform" in spec:
        low = _by(spec["uniform"]["low"], by_labels)
        high = _by(spec["uniform"]["high"], by_labels)
        return np.asarray(low + u * (np.asarray(high) - low), dtype=np.float64)
    if "empirical" in spec:
        return _empirical_ppf(spec["empirical"], u, by_labels)
    return np.full(u.shape[0], float(spec["constant"]))


def _categorical(spec: Mapping[str, Any], u: np.ndarray) -> np.ndarray:
    labels = list(spec["categorical"])
    cum = np.cumsum([float(spec["categorical"][c]) for c in labels])
    cum /= cum[-1]
    idx = np.minimum(np.searchsorted(cum, u, side="right"), len(labels) - 1)
    return np.asarray(labels, dtype=object)[idx]


def correlation_matrix(names: Sequence[str], pairs: Mapping[str, float]) -> np.ndarray:
    """Correlation matrix of the normal scores of ``names`` from ``{"a~b": r}`` pairs.

    Examples
    --------
    >>> correlation_matrix(["age", "scr"], {"age~scr": 0.3}).tolist()
    [[1.0, 0.3], [0.3, 1.0]]
    """
    r = np.eye(len(names))
    index = {n: i for i, n in enumerate(names)}
    for pair, value in pairs.items():
        a, b = pair.split("~")
        r[index[a], index[b]] = r[index[b], index[a]] = float(value)
    return r


def categories_of(data: Mapping[str, Any]) -> dict[str, list[str]]:
    """Categorical covariates and their labels: sampled ones, then resampled ones.

    Parameters
    ----------
    data : mapping
        Study data (``Study.data``).

    Returns
    -------
    dict of str to list of str
        ``population.covariates`` with a ``categorical`` distribution and the columns
        declared in ``population.resample.categorical``.
    """
    pop = data["population"]
    out = {
        k: list(v["categorical"])
        for k, v in pop.get("covariates", {}).items()
        if "categorical" in v
    }
    res = pop.get("resample") or {}
    for k, labels in (res.get("categorical") or {}).items():
        out.setdefault(k, [str(x) for x in labels])
    return out


# ---------------------------------------------------------------------------
# Covariate tables (population.resample)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CovariateTable:
    """A validated covariate table of ``population.resample``.

    Rows are resampled with replacement, with probability proportional to their weight
    (1 without a ``weights`` column). With ``strata``, the candidates' strata follow the
    table's (weighted) stratum shares by a low-discrepancy sequence: the golden-ratio
    sequence ``frac(k/φ + c)`` (``c`` keyed per replicate) mapped onto the cumulative
    shares, so every run of consecutive candidates holds each stratum in very nearly
    its share; the row within the stratum is drawn with the keyed uniform
    ``resample:row``. Numeric columns with a jitter ``s > 0`` are multiplied by
    ``exp(s·z)``, ``z`` a keyed normal (``resample:jitter:<column>``).

    Attributes
    ----------
    path : Path
        The table file.
    columns : tuple of str
        The resampled columns, in table order.
    numeric : dict of str to ndarray
        Float64 values of the numeric columns.
    categorical : dict of str to ndarray
        Labels (object arrays of str) of the categorical columns.
    weights : ndarray
        Row weights (> 0).
    strata : tuple of str
        Stratum columns (categorical).
    jitter : dict of str to float
        Log-scale SD of the multiplicative jitter per numeric column (0: none).
    """

    path: Path
    columns: tuple[str, ...]
    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    weights: np.ndarray
    strata: tuple[str, ...]
    jitter: dict[str, float]
    _stratum_cum: np.ndarray = field(repr=False, compare=False)
    _stratum_rows: tuple[np.ndarray, ...] = field(repr=False, compare=False)
    _row_cum: tuple[np.ndarray, ...] = field(repr=False, compare=False)

    @property
    def n_rows(self) -> int:
        """Rows of the table."""
        return int(self.weights.size)

    def draw_rows(self, seed: int, replicate: int, start: int, stop: int) -> np.ndarray:
        """Table rows (0-based) of candidates ``start..stop-1`` of a replicate."""
        u = keyed_uniform_rows(seed, "resample:row", replicate, start, stop)[:, 0]
        if len(self._stratum_rows) == 1:
            return self._pick(0, u)
        x = _golden_sequence(seed, replicate, start, stop)
        last = len(self._stratum_rows) - 1
        s = np.minimum(np.searchsorted(self._stratum_cum, x, side="right"), last)
        rows = np.empty(stop - start, dtype=np.int64)
        for k in range(last + 1):
            m = s == k
            rows[m] = self._pick(k, u[m])
        return rows

    def _pick(self, stratum: int, u: np.ndarray) -> np.ndarray:
        rows = self._stratum_rows[stratum]
        j = np.minimum(np.searchsorted(self._row_cum[stratum], u, side="right"), rows.size - 1)
        return np.asarray(rows[j], dtype=np.int64)

    def draw(self, seed: int, replicate: int, start: int, stop: int) -> dict[str, np.ndarray]:
        """Resampled columns (jittered) and ``resample_row`` (1-based table row)."""
        rows = self.draw_rows(seed, replicate, start, stop)
        out: dict[str, np.ndarray] = {}
        for c in self.columns:
            if c in self.categorical:
                out[c] = self.categorical[c][rows]
                continue
            v = self.numeric[c][rows]
            sd = self.jitter.get(c, 0.0)
            if sd > 0:
                u = keyed_uniform_rows(seed, f"resample:jitter:{c}", replicate, start, stop)
                v = v * np.exp(sd * special.ndtri(u[:, 0]))
            out[c] = v
        out["resample_row"] = rows + 1
        return out


def _golden_sequence(seed: int, replicate: int, start: int, stop: int) -> np.ndarray:
    """``frac(k/φ + c)`` for candidates ``k = start..stop-1`` (exact 64-bit arithmetic)."""
    offset = np.uint64(stream(seed, "resample:strata", replicate).bit_generator.random_raw())
    k = np.arange(start, stop, dtype=np.uint64)
    x = k * np.uint64(_PHI64) + offset  # wraps modulo 2**64 (array arithmetic)
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class Resampled:
    """What validation needs to know of ``population.resample`` (empty without it).

    Attributes
    ----------
    columns : tuple of str
        Resampled columns (covariate names); the listed ones if the table is unusable.
    categories : dict of str to list of str
        Declared categorical columns and their labels.
    table : CovariateTable or None
        The table, if it is valid.
    problems : list of Problem
        Every problem of the resample section and of the table.
    """

    columns: tuple[str, ...] = ()
    categories: dict[str, list[str]] = field(default_factory=dict)
    table: CovariateTable | None = None
    problems: list[Problem] = field(default_factory=list)


def resampled_columns(data: Mapping[str, Any], source: str, base_dir: str | Path) -> Resampled:
    """Read and validate the covariate table of ``population.resample`` (if any).

    Parameters
    ----------
    data : mapping
        Study data.
    source : str
        The study file (for messages about its keys).
    base_dir : str or Path
        Folder the table path is relative to (the study file's folder).

    Returns
    -------
    Resampled
    """
    res = data["population"].get("resample")
    if not res:
        return Resampled()
    cats = {k: [str(x) for x in v] for k, v in (res.get("categorical") or {}).items()}
    table, problems, columns = _read(res, base_dir, source)
    return Resampled(columns=columns, categories=cats, table=table, problems=problems)


def read_covariate_table(
    spec: Mapping[str, Any], base_dir: str | Path, source: str
) -> tuple[CovariateTable | None, list[Problem]]:
    """Read a covariate table (CSV or Parquet) and check it column by column.

    Parameters
    ----------
    spec : mapping
        ``population.resample``.
    base_dir : str or Path
        Folder the table path is relative to.
    source : str
        The study file (problems with keys of ``population.resample`` name it).

    Returns
    -------
    table : CovariateTable or None
        None if there is any problem.
    problems : list of Problem
        Problems of the keys (file = the study) and of the cells (file = the table,
        ``where`` = ``row R (line L), column C``; at most :data:`MAX_TABLE_PROBLEMS`
        per column and kind, then a count).
    """
    table, problems, _ = _read(spec, base_dir, source)
    return table, problems


def _read(
    spec: Mapping[str, Any], base_dir: str | Path, source: str
) -> tuple[CovariateTable | None, list[Problem], tuple[str, ...]]:
    """:func:`read_covariate_table` and the selected columns (also when not valid)."""
    path = Path(base_dir) / str(spec["table"])
    try:
        st = path.stat()
    except OSError as exc:
        msg = f"cannot read the covariate table {path} ({exc.strerror}), got {spec['table']!r}"
        listed = tuple(spec.get("columns") or ())
        return None, [Problem(source, "population.resample.table", msg)], listed
    key = json.dumps(spec, sort_keys=True, default=str)
    table, problems, columns = _read_cached(str(path), st.st_mtime_ns, st.st_size, key, source)
    return table, list(problems), columns


@functools.lru_cache(maxsize=8)
def _read_cached(
    path: str, mtime_ns: int, size: int, spec_json: str, source: str
) -> tuple[CovariateTable | None, tuple[Problem, ...], tuple[str, ...]]:
    """Cached :func:`_read_table` (every stage loads the study, hence the table)."""
    table, problems, columns = _read_table(Path(path), json.loads(spec_json), source)
    return table, tuple(problems), columns


def _read_raw(path: Path) -> tuple[pd.DataFrame, int]:
    """The table's cells (CSV: all text) and the file line of data row 1 (0: Parquet)."""
    if path.suffix.lower() == ".csv":
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
        return df, 2
    return pd.read_parquet(path), 0


def _read_table(
    path: Path, spec: Mapping[str, Any], source: str
) -> tuple[CovariateTable | None, list[Problem], tuple[str, ...]]:
    problems: list[Problem] = []
    here = "population.resample"

    def bad(where: str, msg: str) -> None:
        problems.append(Problem(source, where, msg))

    try:
        raw, first_line = _read_raw(path)
    except (OSError, ValueError, ImportError) as exc:  # parser errors are ValueErrors
        bad(f"{here}.table", f"cannot read the covariate table {path}: {exc}")
        return None, problems, tuple(spec.get("columns") or ())
    raw.columns = [str(c) for c in raw.columns]
    header = list(raw.columns)
    weights_col = spec.get("weights")
    if weights_col is not None and weights_col not in header:
        bad(f"{here}.weights", f"not a column of {path.name} {header}, got {weights_col!r}")
        weights_col = None
    listed = spec.get("columns")
    if listed is None:
        columns = [c for c in header if c != weights_col]
        key_of = dict.fromkeys(columns, f"{here}.table")
    else:
        columns = []
        key_of = {}
        for i, c in enumerate(listed):
            if c not in header:
                bad(f"{here}.columns[{i}]", f"not a column of {path.name} {header}, got {c!r}")
            elif c == weights_col:
                bad(f"{here}.columns[{i}]", f"{c!r} is the weights column, not a covariate")
            else:
                columns.append(c)
                key_of[c] = f"{here}.columns[{i}]"
    for c in columns:
        if not _NAME.match(c):
            bad(
                key_of[c],
                f"column {c!r} of {path.name} is not a covariate name (^[A-Za-z][A-Za-z0-9_]*$): "
                f"rename it or leave it out of {here}.columns",
            )
        elif c in RESERVED_COLUMNS:
            bad(key_of[c], f"column {c!r} of {path.name} is reserved for the population table")
    cats = {k: [str(x) for x in v] for k, v in (spec.get("categorical") or {}).items()}
    for k in cats:
        if k not in columns:
            bad(f"{here}.categorical.{k}", f"not a resampled column {columns}, got {k!r}")
    strata = list(spec.get("strata") or [])
    for i, s in enumerate(strata):
        if s not in cats or s not in columns:
            bad(
                f"{here}.strata[{i}]",
                f"must be a resampled categorical column (declared in {here}.categorical "
                f"{sorted(cats)}), got {s!r}",
            )
    jitter_spec = spec.get("jitter", 0.0)
    numeric_cols = [c for c in columns if c not in cats]
    if isinstance(jitter_spec, Mapping):
        for k in jitter_spec:
            if k not in numeric_cols:
                bad(
                    f"{here}.jitter.{k}",
                    f"not a resampled numeric column {numeric_cols}, got {k!r}",
                )
        jitter = {c: float(jitter_spec.get(c, 0.0)) for c in numeric_cols}
    else:
        jitter = dict.fromkeys(numeric_cols, float(jitter_spec))
    if len(raw) == 0:
        problems.append(Problem(str(path), "", "the covariate table has no rows"))
    # ---- cells, column by column
    numeric: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    checked = [c for c in columns if _NAME.match(c)]
    for c in checked:
        col = raw[c]
        if c in cats:
            labels[c], found = _categorical_column(col, cats[c], f"{here}.categorical.{c}")
        else:
            numeric[c], found = _numeric_column(col, "must be a number")
            texts = [v for i, _, v in found if not _is_missing(v)]
            if len(found) == len(raw) and texts:  # a text column: one problem, not one a row
                shown = list(dict.fromkeys(str(v) for v in texts))[:5]
                msg = (
                    f"no value is a number (e.g. {shown}): declare a text column with its "
                    f"categories in {here}.categorical, got column {c!r}"
                )
                problems.append(Problem(str(path), f"column {c}", msg))
                continue
        problems += _cell_problems(path, first_line, c, found)
    if weights_col is not None:
        w, found = _numeric_column(raw[weights_col], "a weight must be a number")
        bad_w = np.flatnonzero(np.isfinite(w) & (w <= 0))
        found += [
            (int(i), f"a weight must be > 0 ({here}.weights)", raw[weights_col].iloc[i])
            for i in bad_w
        ]
        found.sort(key=lambda t: t[0])
        problems += _cell_problems(path, first_line, weights_col, found)
        weights = w
    else:
        weights = np.ones(len(raw))
    if problems:
        return None, problems, tuple(columns)
    stratum_cum, stratum_rows, row_cum = _strata(len(raw), weights, [labels[s] for s in strata])
    table = CovariateTable(
        path=path,
        columns=tuple(columns),
        numeric=numeric,
        categorical=labels,
        weights=weights,
        strata=tuple(strata),
        jitter=jitter,
        _stratum_cum=stratum_cum,
        _stratum_rows=stratum_rows,
        _row_cum=row_cum,
    )
    return table, problems, table.columns


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() in MISSING


def _numeric_column(col: pd.Series, rule: str) -> tuple[np.ndarray, list[tuple[int, str, Any]]]:
    """Float values of a column and its problems ``(row index, rule, value)``."""
    out = np.full(len(col), np.nan)
    found: list[tuple[int, str, Any]] = []
    for i, v in enumerate(col.tolist()):
        if _is_missing(v):
            found.append((i, "missing value", v))
            continue
        try:
            x = float(v.strip()) if isinstance(v, str) else float(v)
        except (TypeError, ValueError):
            found.append(
                (i, f"{rule} (declare text columns in population.resample.categorical)", v)
            )
            continue
        if not math.isfinite(x):
            found.append((i, "must be a finite number", v))
            continue
        out[i] = x
    return out, found


def _categorical_column(
    col: pd.Series, allowed: list[str], key: str
) -> tuple[np.ndarray, list[tuple[int, str, Any]]]:
    """Labels of a categorical column and its problems ``(row index, rule, value)``."""
    values = col.tolist()
    out = np.empty(len(values), dtype=object)
    found: list[tuple[int, str, Any]] = []
    ok = set(allowed)
    for i, v in enumerate(values):
        if _is_missing(v):
            found.append((i, "missing value", v))
            continue
        text = v.strip() if isinstance(v, str) else str(v)
        if text not in ok:
            found.append((i, f"unknown category (allowed: {allowed}, {key})", v))
            continue
        out[i] = text
    return out, found


def _cell_problems(
    path: Path, first_line: int, column: str, found: list[tuple[int, str, Any]]
) -> list[Problem]:
    """Problems of one column's cells: at most MAX_TABLE_PROBLEMS per rule, then a count."""
    out: list[Problem] = []
    per_rule: dict[str, list[int]] = {}
    for i, rule, value in found:
        rows = per_rule.setdefault(rule, [])
        rows.append(i)
        if len(rows) <= MAX_TABLE_PROBLEMS:
            line = f" (line {i + first_line})" if first_line else ""
            out.append(
                Problem(str(path), f"row {i + 1}{line}, column {column}", f"{rule}, got {value!r}")
            )
    for rule, rows in per_rule.items():
        if len(rows) > MAX_TABLE_PROBLEMS:
            more = len(rows) - MAX_TABLE_PROBLEMS
            out.append(
                Problem(
                    str(path),
                    f"column {column}",
                    f"{more} more row(s) with: {rule} (not listed; rows "
                    f"{rows[MAX_TABLE_PROBLEMS] + 1} to {rows[-1] + 1})",
                )
            )
    return out


def _strata(
    n: int, weights: np.ndarray, labels: list[np.ndarray]
) -> tuple[np.ndarray, tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Cumulative stratum shares, rows of each stratum, cumulative weights within each."""
    if not labels:
        keys = np.zeros(n, dtype=np.int64)
        n_strata = 1
    else:
        tuples = [tuple(str(col[i]) for col in labels) for i in range(n)]
        uniq = sorted(set(tuples))
        index = {t: j for j, t in enumerate(uniq)}
        keys = np.array([index[t] for t in tuples], dtype=np.int64)
        n_strata = len(uniq)
    rows = tuple(np.flatnonzero(keys == k) for k in range(n_strata))
    totals = np.array([weights[r].sum() for r in rows])
    stratum_cum = np.cumsum(totals) / totals.sum()
    row_cum = tuple(np.cumsum(weights[r]) / weights[r].sum() for r in rows)
    return stratum_cum, rows, row_cum


def input_files(data: Mapping[str, Any], base_dir: str | Path) -> list[Path]:
    """Data files a study reads besides its model files (the covariate table).

    Parameters
    ----------
    data : mapping
        Study data.
    base_dir : str or Path
        The study file's folder.

    Returns
    -------
    list of Path
    """
    res = data["population"].get("resample")
    return [Path(base_dir) / str(res["table"])] if res else []


# ---------------------------------------------------------------------------
# The sampler
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Criterion:
    """One inclusion or exclusion criterion.

    Attributes
    ----------
    key : str
        Its key path (``population.inclusion[0]``).
    expression : Expression
        The parsed condition.
    include : bool
        True for inclusion (must hold), False for exclusion (must not hold).
    """

    key: str
    expression: Expression
    include: bool

    def passes(self, covs: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """Boolean mask of the candidates this criterion keeps."""
        hit = evaluate(self.expression, covs, size=n).astype(bool)
        return hit if self.include else ~hit


@dataclass(frozen=True)
class CovariateSampler:
    """Draws candidates' covariates and selects the eligible ones (see module doc).

    Build it with :func:`covariate_sampler` (from a Study) or :meth:`from_data`.
    """

    seed: int
    source: str
    covariates: dict[str, Any]
    order: tuple[str, ...]
    derived: tuple[str, ...]
    correlated: tuple[str, ...]
    cholesky: np.ndarray | None
    criteria: tuple[Criterion, ...]
    min_acceptance: float
    table: CovariateTable | None

    @classmethod
    def from_data(
        cls, data: Mapping[str, Any], base_dir: str | Path, source: str = "<dict>"
    ) -> CovariateSampler:
        """Sampler of a validated study's data.

        Raises
        ------
        ConfigError
            If the covariate table cannot be read or is not valid (e.g. changed since
            the study was validated).
        """
        pop = data["population"]
        covs: dict[str, Any] = dict(pop.get("covariates", {}))
        order = [k for k, v in covs.items() if "categorical" in v]
        order += [k for k, v in covs.items() if "categorical" not in v]
        table = None
        if pop.get("resample"):
            table, problems = read_covariate_table(pop["resample"], base_dir, source)
            if problems:
                raise ConfigError(problems)
        corr = pop.get("correlation") or {}
        names = [k for k in covs if any(k in pair.split("~") for pair in corr)]
        chol = np.linalg.cholesky(correlation_matrix(names, corr)) if names else None
        known = [*(table.columns if table else ()), *covs, *pop.get("derived", [])]
        cats = categories_of(data)
        criteria = []
        for kind, include in (("inclusion", True), ("exclusion", False)):
            for i, text in enumerate(pop.get(kind) or []):
                key = f"population.{kind}[{i}]"
                expr = parse_expression(
                    text,
                    where=f"{source}: {key}",
                    known_names=known,
                    categorical=cats,
                    boolean=True,
                )
                criteria.append(Criterion(key, expr, include))
        return cls(
            seed=int(data["study"]["seed"]),
            source=source,
            covariates=covs,
            order=tuple(order),
            derived=tuple(pop.get("derived", [])),
            correlated=tuple(names),
            cholesky=chol,
            criteria=tuple(criteria),
            min_acceptance=float(pop.get("min_acceptance", MIN_ACCEPTANCE)),
            table=table,
        )

    def draw(
        self, replicate: int, start: int, stop: int, *, derived: bool = True
    ) -> dict[str, np.ndarray]:
        """Covariates of candidates ``start..stop-1`` of a replicate.

        Parameters
        ----------
        replicate : int
            Replicate index (0-based).
        start, stop : int
            Candidate range; candidate ``k``'s values depend only on (seed,
            replicate, ``k``).
        derived : bool, default True
            Also compute the derived covariates.

        Returns
        -------
        dict of str to ndarray
            Resampled columns and ``resample_row`` (with ``population.resample``),
            categorical covariates, the other covariates (declaration order), then
            the derived ones.
        """
        n = stop - start
        out: dict[str, np.ndarray] = {}
        if self.table is not None:
            out.update(self.table.draw(self.seed, replicate, start, stop))
        u: dict[str, np.ndarray] = {}
        for name in self.order:
            row = keyed_uniform_rows(self.seed, f"covariate:{name}", replicate, start, stop)
            u[name] = row[:, 0]
        if self.cholesky is not None:
            z = special.ndtri(np.column_stack([u[k] for k in self.correlated]))
            # back to (0, 1): Φ of a large score rounds to 1.0, whose inverse CDF is inf
            top = np.nextafter(1.0, 0.0)
            w = np.clip(special.ndtr(z @ self.cholesky.T), np.finfo(np.float64).tiny, top)
            for j, k in enumerate(self.correlated):
                if np.any(self.cholesky[j, :j] != 0.0):  # a row e_j keeps its own draw
                    u[k] = w[:, j]
        for name in self.order:
            spec = self.covariates[name]
            if "categorical" in spec:
                out[name] = _categorical(spec, u[name])
            else:
                by_labels = out.get(spec["by"]) if "by" in spec else None
                out[name] = _marginal(spec, u[name], by_labels)
        if derived and self.derived:
            # imported here: vtrial.population.sampling imports this module
            from vtrial.population.sampling import derive_covariates

            out.update(derive_covariates(list(self.derived), out))
        assert all(v.shape[0] == n for v in out.values())
        return out

    def eligible(self, covs: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """Mask of the candidates meeting every inclusion and no exclusion criterion."""
        ok = np.ones(n, dtype=bool)
        for c in self.criteria:
            ok &= c.passes(covs, n)
        return ok

    def max_candidates(self, size: int) -> int:
        """Hard cap of candidates drawn per replicate for ``size`` patients."""
        return math.ceil(CANDIDATE_CAP_FACTOR * size / self.min_acceptance) + PILOT_CANDIDATES

    def sample(self, replicate: int, size: int) -> tuple[dict[str, np.ndarray], int]:
        """Covariates of the ``size`` patients of a replicate.

        Returns
        -------
        covariates : dict of str to ndarray
            As :meth:`draw`, for the first ``size`` eligible candidates in order.
        candidates : int
            Candidates examined: the position of the last patient's candidate + 1
            (``size`` without criteria), independent of how candidates are batched.

        Raises
        ------
        ConfigError
            If fewer than ``size`` of :meth:`max_candidates` candidates are eligible.
        """
        if not self.criteria:
            return self.draw(replicate, 0, size), size
        cap = self.max_candidates(size)
        parts: list[dict[str, np.ndarray]] = []
        got, start, last = 0, 0, 0
        while got < size:
            need = size - got
            rate = max(got / start if start else 1.0, self.min_acceptance)
            batch = min(max(1024, math.ceil(1.1 * need / rate)), MAX_BATCH, cap - start)
            if batch <= 0:
                raise ConfigError(
                    [
                        Problem(
                            self.source,
                            self._criteria_key(),
                            self._cap_message(replicate, size, got, start),
                        )
                    ]
                )
            covs = self.draw(replicate, start, start + batch)
            idx = np.flatnonzero(self.eligible(covs, batch))[:need]
            if idx.size:
                parts.append({k: v[idx] for k, v in covs.items()})
                last = start + int(idx[-1]) + 1
            got += int(idx.size)
            start += batch
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return out, last

    def _criteria_key(self) -> str:
        keys = dict.fromkeys(c.key.split("[")[0] for c in self.criteria)
        return " and ".join(keys)

    def _cap_message(self, replicate: int, size: int, got: int, drawn: int) -> str:
        return (
            f"replicate {replicate}: only {got} of {size} candidates met the criteria "
            f"{[c.expression.source for c in self.criteria]} after {drawn} candidates "
            f"(acceptance {got / max(drawn, 1):.3%}); the cap is {CANDIDATE_CAP_FACTOR} x size / "
            f"min_acceptance ({self.min_acceptance:g}) + {PILOT_CANDIDATES}"
        )

    def pilot(self, n: int = PILOT_CANDIDATES) -> tuple[float, dict[str, float]]:
        """Acceptance of candidates ``0..n-1`` of replicate 0: overall and per criterion."""
        covs = self.draw(0, 0, n)
        each = {c.key: float(c.passes(covs, n).mean()) for c in self.criteria}
        return float(self.eligible(covs, n).mean()), each


def covariate_sampler(study: Any) -> CovariateSampler:
    """The :class:`CovariateSampler` of a :class:`vtrial.study.config.Study`."""
    return CovariateSampler.from_data(study.data, study.base_dir, study.source)


# ---------------------------------------------------------------------------
# Validation (called by vtrial.study.config before anything is computed)
# ---------------------------------------------------------------------------


def covariate_problems(
    data: Mapping[str, Any],
    source: str,
    base_dir: str | Path,
    categories: Mapping[str, Sequence[str]],
    *,
    pilot: bool,
) -> list[Problem]:
    """Problems of ``population.correlation``, ``empirical`` covariates, the resampled
    columns' names and the inclusion/exclusion criteria; then (if ``pilot`` and all is
    well) the acceptance of the criteria on :data:`PILOT_CANDIDATES` candidates.

    Parameters
    ----------
    data : mapping
        Study data (defaults filled).
    source : str
        The study file.
    base_dir : str or Path
        The study file's folder.
    categories : mapping
        Every categorical covariate and its labels (sampled and resampled).
    pilot : bool
        Run the pilot (only when the population section has no other problem).

    Returns
    -------
    list of Problem
    """
    out: list[Problem] = []

    def bad(where: str, msg: str) -> None:
        out.append(Problem(source, where, msg))

    pop = data["population"]
    covs: dict[str, Any] = pop.get("covariates", {})
    derived = list(pop.get("derived", []))
    res = resampled_columns(data, source, base_dir)
    for c in res.columns:
        if c in covs:
            bad(
                f"population.covariates.{c}",
                f"{c!r} is also a resampled column of population.resample",
            )
        if c in derived:
            bad("population.derived", f"{c!r} is also a resampled column of population.resample")
    for name, spec in covs.items():
        if "empirical" in spec:
            for key, msg in _empirical_problems(spec, categories):
                bad(f"population.covariates.{name}{key}", msg)
    for where, msg in _correlation_problems(pop, set(res.columns)):
        bad(where, msg)
    known = [*res.columns, *covs, *derived]
    n_criteria = 0
    for kind in ("inclusion", "exclusion"):
        for i, text in enumerate(pop.get(kind) or []):
            n_criteria += 1
            key = f"population.{kind}[{i}]"
            try:
                parse_expression(
                    text,
                    where=f"{source}: {key}",
                    known_names=known,
                    categorical=categories,
                    boolean=True,
                )
            except ExpressionError as exc:
                bad(key, f"{exc.reason} in expression {exc.expression!r}")
    if "min_acceptance" in pop and not n_criteria:
        bad(
            "population.min_acceptance",
            "applies to population.inclusion/exclusion, which are not set, "
            f"got {pop['min_acceptance']}",
        )
    if pilot and n_criteria and not out and not res.problems:
        sampler = CovariateSampler.from_data(data, base_dir, source)
        rate, each = sampler.pilot()
        if rate < sampler.min_acceptance:
            detail = ", ".join(f"{k} {each[k]:.2%}" for k in each)
            crit = [c.expression.source for c in sampler.criteria]
            bad(
                sampler._criteria_key(),
                f"the criteria {crit} accept {rate:.2%} of {PILOT_CANDIDATES} pilot candidates "
                f"({round(rate * PILOT_CANDIDATES)} eligible), below population.min_acceptance "
                f"{sampler.min_acceptance:g}; each alone keeps: {detail}",
            )
    return out


def _correlation_problems(pop: Mapping[str, Any], resampled: set[str]) -> list[tuple[str, str]]:
    """Problems of ``population.correlation`` as ``(key, message)``."""
    out: list[tuple[str, str]] = []
    corr: dict[str, float] = pop.get("correlation") or {}
    covs: dict[str, Any] = pop.get("covariates", {})
    seen: dict[frozenset[str], str] = {}
    for pair in corr:
        where = f"population.correlation.{pair}"
        a, b = pair.split("~")
        if a == b:
            out.append((where, f"a correlation needs two different covariates, got {pair}"))
        key = frozenset((a, b))
        if key in seen:
            out.append((where, f"repeats {seen[key]}"))
        seen.setdefault(key, pair)
        for x in dict.fromkeys((a, b)):
            kind = next((k for k in ("categorical", "constant") if k in covs.get(x, {})), None)
            if x in resampled:
                msg = (
                    f"{x} is resampled from population.resample.table (its correlations are "
                    "the table's); correlate sampled covariates only"
                )
                out.append((where, msg))
            elif x not in covs:
                out.append((where, f"{x} is not a sampled covariate {sorted(covs)}"))
            elif kind is not None:
                msg = f"{x} is {kind}; correlations are between continuous covariates"
                out.append((where, f"{msg} ({', '.join(CONTINUOUS)})"))
    if corr and not out:
        names = [k for k in covs if any(k in p.split("~") for p in corr)]
        w = np.linalg.eigvalsh(correlation_matrix(names, corr))
        if w.min() <= 1e-10:
            msg = (
                f"the correlation matrix of {names} must be positive definite, "
                f"smallest eigenvalue {w.min():.3g}, got {dict(corr)}"
            )
            out.append(("population.correlation", msg))
    return out


def _empirical_problems(
    spec: Mapping[str, Any], categories: Mapping[str, Sequence[str]]
) -> list[tuple[str, str]]:
    """Problems of an ``empirical`` covariate (key relative to the covariate)."""
    out: list[tuple[str, str]] = []
    emp: Mapping[str, Any] = spec["empirical"]
    here = ".empirical"
    if "bounds" in spec:
        out.append(
            (
                ".bounds",
                "an empirical covariate takes no 'bounds' (its values are its support), "
                f"got {spec['bounds']}",
            )
        )
    forms = [k for k in ("values", "quantiles") if k in emp]
    if len(forms) != 1:
        msg = "needs exactly one of 'values' (optional 'weights') or 'quantiles' (optional 'probs')"
        out.append((here, f"{msg}, got {forms}"))
        return out
    form = forms[0]
    extra = "probs" if form == "values" else "weights"
    if extra in emp:
        out.append(
            (
                f"{here}.{extra}",
                f"only applies with {'quantiles' if extra == 'probs' else 'values'}, "
                f"got {emp[extra]}",
            )
        )
        return out
    by = spec.get("by")
    mapped = [k for k, v in emp.items() if isinstance(v, Mapping)]
    keys: list[tuple[str, str | None]] = [("", None)]
    if mapped:
        cats = list(categories.get(by, [])) if by else []
        if not cats or any(set(emp[k]) != set(cats) for k in mapped):
            return out  # reported by the generic per-category check
        keys = [(f".{c}", c) for c in cats]
    other = "weights" if form == "values" else "probs"
    for suffix, cat in keys:
        main = list(_pick(emp[form], cat))
        if other in emp:
            sec = list(_pick(emp[other], cat))
            if len(sec) != len(main):
                out.append(
                    (
                        f"{here}.{other}{suffix}",
                        f"needs one entry per {form[:-1]} ({len(main)}), got {len(sec)}",
                    )
                )
                continue
        if form == "quantiles":
            if len(main) < 2:
                out.append((f"{here}.quantiles{suffix}", f"needs at least 2 quantiles, got {main}"))
                continue
            if any(b < a for a, b in itertools.pairwise(main)):
                out.append((f"{here}.quantiles{suffix}", f"must be non-decreasing, got {main}"))
            if other in emp:
                probs = list(_pick(emp[other], cat))
                inc = all(b > a for a, b in itertools.pairwise(probs))
                if not inc or probs[0] != 0 or probs[-1] != 1:
                    out.append(
                        (
                            f"{here}.probs{suffix}",
                            f"must increase strictly from 0 to 1, got {probs}",
                        )
                    )
    return out


_DISTRIBUTIONS = ("categorical", "normal", "lognormal", "uniform", "empirical", "constant")


def population_problems(
    d: Mapping[str, Any], source: str, base_dir: str | Path
) -> tuple[list[Problem], dict[str, list[str]], set[str]]:
    """Problems of the ``population`` section of a study (defaults filled).

    Distributions, ``by`` conditioning, bounds, derived covariates, the resampled
    table (:func:`resampled_columns`) and :func:`covariate_problems` (correlations,
    empirical distributions, criteria and their pilot, run only if all else is well).

    Returns
    -------
    problems : list of Problem
    categories : dict of str to list of str
        Every categorical covariate (sampled or resampled) and its labels.
    names : set of str
        Every covariate name: sampled, derived and resampled.
    """
    src = source
    out: list[Problem] = []

    def bad(where: str, msg: str) -> None:
        out.append(Problem(src, where, msg))

    covs: dict[str, Any] = d["population"]["covariates"]
    base = Path(base_dir)
    resampled = resampled_columns(d, src, base)  # population.resample: a covariate table
    out += resampled.problems
    categories: dict[str, list[str]] = dict(resampled.categories)
    have = set(covs) | set(resampled.columns)
    for name, spec in covs.items():
        where = f"population.covariates.{name}"
        kinds = [k for k in _DISTRIBUTIONS if k in spec]
        if len(kinds) != 1:
            bad(where, f"needs exactly one distribution of {list(_DISTRIBUTIONS)}, got {kinds}")
            continue
        kind = kinds[0]
        if kind == "categorical":
            freq = spec["categorical"]
            total = sum(freq.values())
            if abs(total - 1.0) > 1e-6:
                bad(f"{where}.categorical", f"frequencies must sum to 1, got {total:g}")
            categories[name] = list(freq)
            if "by" in spec or "bounds" in spec:
                bad(where, "a categorical covariate takes no 'by' or 'bounds'")
    for name, spec in covs.items():
        where = f"population.covariates.{name}"
        kinds = [k for k in _DISTRIBUTIONS if k in spec]
        if len(kinds) != 1 or kinds[0] == "categorical":
            continue
        by = spec.get("by")
        if by is not None and by not in categories:
            bad(
                f"{where}.by", f"must name a categorical covariate {sorted(categories)}, got {by!r}"
            )
            continue
        if kinds[0] in ("uniform", "constant") and "bounds" in spec:
            bad(f"{where}.bounds", f"a {kinds[0]} covariate takes no 'bounds'")
        if kinds[0] == "constant" and by is not None:
            bad(f"{where}.by", "a constant covariate takes no 'by'")
        params = spec[kinds[0]] if isinstance(spec[kinds[0]], Mapping) else {}
        complete = True
        for key, val in params.items():
            if isinstance(val, Mapping):
                if by is None:
                    bad(f"{where}.{kinds[0]}.{key}", "a per-category value needs 'by'")
                    complete = False
                elif set(val) != set(categories[by]):
                    bad(
                        f"{where}.{kinds[0]}.{key}",
                        f"needs a value for every category of {by} {categories[by]}, "
                        f"got {sorted(val)}",
                    )
                    complete = False
        if not complete:
            continue
        if "bounds" in spec:
            lo, hi = spec["bounds"]
            if not lo < hi:
                bad(f"{where}.bounds", f"lower bound must be < upper bound, got [{lo}, {hi}]")
            if kinds[0] == "lognormal" and lo < 0:
                bad(f"{where}.bounds", f"a log-normal covariate is > 0, got lower bound {lo}")
        if kinds[0] == "uniform":
            lo_v, hi_v = params.get("low"), params.get("high")
            for c in categories.get(by, [None]) if by else [None]:
                lv = lo_v[c] if isinstance(lo_v, Mapping) and c is not None else lo_v
                hv = hi_v[c] if isinstance(hi_v, Mapping) and c is not None else hi_v
                if isinstance(lv, int | float) and isinstance(hv, int | float) and not lv < hv:
                    bad(f"{where}.uniform", f"low must be < high, got [{lv}, {hv}]")
    derived = d["population"]["derived"]
    for i, name in enumerate(derived):
        needs, _ = DERIVED[name]
        missing = [c for c in needs if c not in have]
        if missing:
            bad(f"population.derived[{i}]", f"{name} needs covariate(s) {missing}")
        if name in covs:
            bad(f"population.derived[{i}]", f"{name} is also a sampled covariate")
        sex_labels = categories.get("sex")
        if "sex" in needs and "sex" in have and set(sex_labels or ()) != {"F", "M"}:
            bad(
                f"population.derived[{i}]",
                f"{name} needs sex with categories F and M, "
                f"got {sex_labels if sex_labels is not None else 'a numeric covariate'}",
            )
    cov_names = set(covs) | set(derived) | set(resampled.columns)
    # correlations, empirical distributions, inclusion/exclusion (with a pilot draw)
    out += covariate_problems(d, src, base, categories, pilot=not out)
    return out, categories, cov_names
