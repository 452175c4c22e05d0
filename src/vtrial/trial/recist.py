"""RECIST 1.1-style response categories from a simulated tumour size.

The rules of RECIST 1.1 for target lesions (Eisenhauer EA et al. New response
evaluation criteria in solid tumours: revised RECIST guideline (version 1.1).
Eur J Cancer 2009;45(2):228-47) are applied to one model output, the tumour size
(e.g. the sum of longest diameters in mm, or a tumour weight), at assessment times:

* **PD** (progressive disease): size >= 1.2 x the nadir so far (the smallest size
  at baseline and at the earlier assessments) and size - nadir >= ``min_increase``
  (RECIST: 5 mm for a sum of diameters; default 0);
* **CR** (complete response): size <= ``complete_below`` when given (an absolute
  detection limit; without it no assessment is CR). CR is checked before PD: a size
  under the detection limit cannot progress;
* **PR** (partial response): size <= 0.7 x baseline (a decrease of at least 30 %);
* **SD** (stable disease): otherwise.

The best overall response is the best category (CR > PR > SD) among the assessments
before the first PD, and PD when the first assessment is PD. It is unconfirmed: no
confirmation of CR/PR at a later visit and no minimum duration of SD are required.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "RESPONSE_CATEGORIES",
    "Schedule",
    "assessment_times",
    "best_overall_response",
    "categories_in",
    "response_column",
    "schedule_problems",
    "visit_responses",
]

#: Response categories, best first; codes are their positions (CR 0 ... PD 3).
RESPONSE_CATEGORIES: tuple[str, ...] = ("CR", "PR", "SD", "PD")
#: Code of an undefined response (failed solve, non-finite or non-positive baseline).
UNDEFINED = -1
_CR, _PR, _SD, _PD = range(4)
#: Most assessments an endpoint may have.
MAX_ASSESSMENTS = 1000


def schedule_problems(spec: Mapping[str, Any], end: float, *, noun: str) -> list[tuple[str, str]]:
    """Problems of a time schedule given as ``every`` (with ``first``, ``by``) or
    ``times`` (:func:`assessment_times`): ``(key relative to spec, message)`` pairs;
    `noun` names the times in messages (``assessments``, ``visits``)."""
    out: list[tuple[str, str]] = []
    has_every, has_times = "every" in spec, "times" in spec
    if has_every == has_times:
        given = [k for k in ("every", "times") if k in spec]
        rule = "needs exactly one of 'every' (with 'first', 'by') or 'times'"
        out.append(("", f"{rule}, got {given}"))
    if not has_every:
        for key in ("first", "by"):
            if key in spec:
                out.append((f".{key}", f"only applies with 'every', got {spec[key]}"))
    if has_every and not has_times:
        every = float(spec["every"])
        first = float(spec.get("first", every))
        by = float(spec.get("by", end))
        for key, value in (("first", first), ("by", by)):
            if value > end:
                shown = spec.get(key, f"{value} (default)")
                out.append((f".{key}", f"must be <= simulation.end ({end}), got {shown}"))
        if first > by:
            out.append((".by", f"must be >= first ({first}), got {by}"))
        elif (by - first) / every + 1 > MAX_ASSESSMENTS + 1e-6:
            count = int((by - first) / every) + 1
            out.append((".every", f"gives {count} {noun} (limit {MAX_ASSESSMENTS}), got {every}"))
    if has_times and not has_every:
        times = [float(t) for t in spec["times"]]
        if not all(a < b for a, b in itertools.pairwise(times)):
            out.append((".times", f"must be strictly increasing, got {spec['times']}"))
        late = [t for t in times if t > end]
        if late:
            out.append((".times", f"must be <= simulation.end ({end}), got {late}"))
    return out


@dataclass(frozen=True)
class Schedule:
    """Assessment or visit times: the given ``times`` (h), or ``every`` (h) from
    ``first`` (h, default ``every``) up to ``by`` (h, default the end of the study)."""

    every: float | None = None
    first: float | None = None
    by: float | None = None
    times: tuple[float, ...] | None = None

    @classmethod
    def from_data(cls, spec: Mapping[str, Any]) -> Schedule:
        """The schedule keys (``every``, ``first``, ``by``, ``times``) of a validated
        endpoint or ``dropout.visits``."""

        def num(key: str) -> float | None:
            return float(spec[key]) if spec.get(key) is not None else None

        times = spec.get("times")
        return cls(
            num("every"),
            num("first"),
            num("by"),
            None if times is None else tuple(map(float, times)),
        )

    def until(self, end: float) -> list[float]:
        """The times (h): ``first, first + every, ...`` up to ``by`` (a time within 1e-9
        relative of ``by`` is kept; ``by`` defaults to ``end``), or the given ``times``,
        in the given order."""
        if self.times is not None:
            return list(self.times)
        assert self.every is not None  # the schema requires every or times
        every = self.every
        first = every if self.first is None else self.first
        by = end if self.by is None else self.by
        if by < first:
            return []
        count = int(np.floor((by - first) / every * (1.0 + 1e-9) + 1e-9)) + 1
        count = min(count, MAX_ASSESSMENTS + 1)  # more is refused by validation
        return [min(first + every * k, by) for k in range(count)]


def assessment_times(spec: Mapping[str, Any], end: float) -> list[float]:
    """Assessment times (h) of a ``best_response`` endpoint given as data
    (:meth:`Schedule.until` of :meth:`Schedule.from_data`).

    Parameters
    ----------
    spec : mapping
        The endpoint: either ``times`` (a list of times, h) or ``every`` (h) with
        optional ``first`` (h, default ``every``) and ``by`` (h, default ``end``).
    end : float
        ``simulation.end`` (h).

    Examples
    --------
    >>> assessment_times({"every": 1008, "first": 1008}, 4032.0)
    [1008.0, 2016.0, 3024.0, 4032.0]
    >>> assessment_times({"times": [500, 1000]}, 2016.0)
    [500.0, 1000.0]
    """
    return Schedule.from_data(spec).until(end)


def visit_responses(
    baseline: npt.ArrayLike,
    sizes: npt.ArrayLike,
    *,
    complete_below: float | None = None,
    min_increase: float = 0.0,
) -> npt.NDArray[np.int8]:
    """Response category code at every assessment.

    Parameters
    ----------
    baseline : array_like, shape (n,)
        Tumour size at baseline (t = 0), in the unit of the output.
    sizes : array_like, shape (n, m)
        Tumour size at the m assessments, in time order.
    complete_below : float, optional
        Size at or below which an assessment is CR; None: never CR.
    min_increase : float
        Absolute increase over the nadir also needed for PD (same unit).

    Returns
    -------
    ndarray of int8, shape (n, m)
        Codes into :data:`RESPONSE_CATEGORIES` (0 CR, 1 PR, 2 SD, 3 PD); -1 for
        patients whose baseline is not finite and > 0 and at assessments whose size
        is not finite.

    Examples
    --------
    >>> visit_responses([100.0], [[80.0, 60.0, 72.0, 70.0]]).tolist()
    [[2, 1, 3, 1]]
    """
    b = np.asarray(baseline, dtype=np.float64)
    s = np.asarray(sizes, dtype=np.float64)
    if s.ndim != 2 or b.shape != (s.shape[0],):
        raise ValueError(f"need baseline (n,) and sizes (n, m), got {b.shape} and {s.shape}")
    hist = np.concatenate([b[:, None], s[:, :-1]], axis=1)
    with np.errstate(invalid="ignore"):
        nadir = np.fmin.accumulate(hist, axis=1)  # smallest size before each assessment
        code = np.full(s.shape, _SD, dtype=np.int8)
        # s <= 0.7 b and s >= 1.2 nadir, written so that decimal sizes exactly on a
        # limit (70 of 100, 120 of 100) compare as they read
        code[10.0 * s <= 7.0 * b[:, None]] = _PR
        progressed = (10.0 * s >= 12.0 * nadir) & (s - nadir >= min_increase)
        code[progressed] = _PD
        if complete_below is not None:
            code[s <= complete_below] = _CR
    undefined = ~np.isfinite(s) | ~(np.isfinite(b) & (b > 0))[:, None]
    code[undefined] = UNDEFINED
    return code


def best_overall_response(codes: npt.ArrayLike) -> npt.NDArray[np.int8]:
    """Best overall response from the per-assessment codes of :func:`visit_responses`.

    Parameters
    ----------
    codes : array_like of int, shape (n, m)
        Per-assessment codes (0 CR ... 3 PD, -1 undefined), in time order.

    Returns
    -------
    ndarray of int8, shape (n,)
        The best code before the first PD; PD if the first assessment is PD; -1 if an
        assessment up to the first PD is undefined or there is no assessment.

    Examples
    --------
    >>> best_overall_response([[2, 1, 3, 0], [3, 0, 0, 0], [2, 2, 2, 2]]).tolist()
    [1, 3, 2]
    """
    c = np.asarray(codes, dtype=np.int8)
    n, m = c.shape
    if m == 0:
        return np.full(n, UNDEFINED, dtype=np.int8)
    is_pd = c == _PD
    first_pd = np.where(is_pd.any(axis=1), is_pd.argmax(axis=1), m)
    upto = np.arange(m)[None, :] <= np.minimum(first_pd, m - 1)[:, None]
    before = np.arange(m)[None, :] < first_pd[:, None]
    best = np.where(before, c, _PD).min(axis=1).astype(np.int8)
    bad = ((c == UNDEFINED) & upto).any(axis=1)
    best[bad] = UNDEFINED
    return best


def response_column(codes: npt.ArrayLike) -> pd.Categorical:
    """Codes as an ordered categorical of :data:`RESPONSE_CATEGORIES` (-1 -> null)."""
    c = np.asarray(codes, dtype=np.int64)
    dtype = pd.CategoricalDtype(list(RESPONSE_CATEGORIES), ordered=True)
    return pd.Categorical.from_codes(np.where(c < 0, -1, c), dtype=dtype)


def categories_in(values: Sequence[str] | pd.Categorical, allowed: Sequence[str]) -> np.ndarray:
    """1.0 where a category is in ``allowed``, 0.0 where not, NaN where null."""
    arr = pd.Series(values, dtype=object)
    hit = arr.isin(list(allowed)).to_numpy(dtype=np.float64)
    hit[arr.isna().to_numpy()] = np.nan
    return hit
