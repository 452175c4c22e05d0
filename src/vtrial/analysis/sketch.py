"""Mergeable quantile sketches for percentile bands over any number of patients.

Percentile bands (5/50/95 % of an output at each time, by arm) over a million virtual
patients cannot come from the stored time courses, which may hold only a subset. Each
simulate task instead summarises its chunk as counts in logarithmic buckets (the
relative-accuracy histogram of DDSketch: Masson, Rim & Lee, VLDB 2019): a value ``x``
falls in bucket ``i = ceil(log|x| / log(gamma))`` with ``gamma = (1 + alpha) / (1 - alpha)``,
and the bucket is represented by ``2 gamma^i / (gamma + 1)``, within a relative
``alpha`` of every value in it. Counts of equal keys add, so chunks, shards and
replicates merge exactly and in any order; the result does not depend on the layout.

The ``ddsketch`` package implements the same idea one value at a time; vtrial needs
the whole (patients x times x outputs) block of a chunk at once, which this module
does with a few vectorised numpy calls.

Accuracy: a band value is within relative ``alpha`` (default 0.5 %) of the order
statistic of rank ``floor(q * (n - 1))`` (``numpy.percentile(..., method="lower")``).
Zeros are kept exactly; negative values use mirrored buckets; NaN is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

ALPHA = 0.005
_CODE_OFFSET = 1 << 17  # bucket codes are within +-(1 << 17)
_CODE_SPAN = 1 << 18
_MIN_ABS = 1e-300


@dataclass
class Sketch:
    """Bucket counts of many groups: ``key = group * 2**18 + code + 2**17``.

    Attributes
    ----------
    keys : ndarray of int64, sorted, unique
    counts : ndarray of int64
    group_n : ndarray of int64, shape (n_groups,)
        Number of finite values of each group.
    alpha : float
        Relative accuracy.
    """

    keys: np.ndarray
    counts: np.ndarray
    group_n: np.ndarray
    alpha: float = ALPHA

    @property
    def n_groups(self) -> int:
        return int(self.group_n.shape[0])


def _gamma(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: must be in (0, 1), got {alpha}")
    return (1.0 + alpha) / (1.0 - alpha)


def _codes(x: np.ndarray, alpha: float) -> np.ndarray:
    """Signed bucket codes: 0 for zero, +-(i + offset/2) for positive/negative values."""
    lg = np.log(_gamma(alpha))
    a = np.abs(x.astype(np.float64))
    nz = a > 0.0
    i = np.zeros(a.shape, dtype=np.int64)
    i[nz] = np.ceil(np.log(np.maximum(a[nz], _MIN_ABS)) / lg).astype(np.int64)
    half = _CODE_OFFSET // 2
    if np.abs(i).max(initial=0) >= half:
        raise ValueError("value outside the representable range of the sketch")
    code = np.where(a == 0.0, 0, i + half)
    return np.where(x < 0, -code, code)


def sketch_block(
    values: np.ndarray, groups: np.ndarray, n_groups: int, *, alpha: float = ALPHA
) -> Sketch:
    """Sketch of ``values`` whose group ids are ``groups`` (same shape, NaN ignored)."""
    v = np.asarray(values).ravel()
    g = np.asarray(groups, dtype=np.int64).ravel()
    if v.shape != g.shape:
        raise ValueError("values and groups must have the same shape")
    ok = np.isfinite(v)
    v, g = v[ok], g[ok]
    keys = g * _CODE_SPAN + (_codes(v, alpha) + _CODE_OFFSET)
    uk, counts = np.unique(keys, return_counts=True)
    gn = np.bincount(g, minlength=n_groups).astype(np.int64)
    return Sketch(uk, counts.astype(np.int64), gn, alpha)


def merge(sketches: Sequence[Sketch]) -> Sketch:
    """Merge sketches of the same groups (exact: integer counts add, in any order)."""
    if not sketches:
        raise ValueError("nothing to merge")
    alpha = sketches[0].alpha
    if any(s.alpha != alpha or s.n_groups != sketches[0].n_groups for s in sketches):
        raise ValueError("sketches differ in alpha or number of groups")
    keys = np.concatenate([s.keys for s in sketches])
    counts = np.concatenate([s.counts for s in sketches])
    uk, inv = np.unique(keys, return_inverse=True)
    merged = np.bincount(inv, weights=counts, minlength=uk.size).astype(np.int64)
    gn = np.asarray(np.sum([s.group_n for s in sketches], axis=0, dtype=np.int64))
    return Sketch(uk, merged, gn, alpha)


def quantiles(sk: Sketch, qs: Sequence[float]) -> np.ndarray:
    """Quantiles (fractions in [0, 1]) of every group, shape (n_groups, len(qs)).

    NaN for groups without values.
    """
    gamma = _gamma(sk.alpha)
    half = _CODE_OFFSET // 2
    # keys are sorted by (group, code), and codes increase with the value (negative
    # values have codes -(i + half), zero 0, positive i + half): value order in a group
    group = sk.keys // _CODE_SPAN
    code = sk.keys % _CODE_SPAN - _CODE_OFFSET
    counts = sk.counts
    rep = np.where(
        code == 0,
        0.0,
        np.sign(code) * 2.0 * gamma ** (np.abs(code) - half).astype(np.float64) / (gamma + 1.0),
    )
    out = np.full((sk.n_groups, len(qs)), np.nan)
    cum = np.cumsum(counts)
    starts = np.searchsorted(group, np.arange(sk.n_groups), side="left")
    ends = np.searchsorted(group, np.arange(sk.n_groups), side="right")
    for gi in np.flatnonzero(ends > starts):
        s, e = starts[gi], ends[gi]
        before = cum[s - 1] if s > 0 else 0
        n = cum[e - 1] - before
        for j, q in enumerate(qs):
            rank = int(np.floor(q * (n - 1)))  # 0-based rank of the order statistic
            pos = np.searchsorted(cum[s:e] - before, rank, side="right")
            out[gi, j] = rep[s + pos]
    return out


def to_frame(sk: Sketch) -> pd.DataFrame:
    """Sketch as a table: bucket rows (``key >= 0``, ``count``), then one row per group
    (``key = -1 - group``, ``count`` = values in the group)."""
    return pd.DataFrame(
        {
            "key": np.concatenate([sk.keys, -1 - np.arange(sk.n_groups, dtype=np.int64)]),
            "count": np.concatenate([sk.counts, sk.group_n]),
        }
    )


def from_frame(df: pd.DataFrame, *, alpha: float = ALPHA) -> Sketch:
    """Inverse of :func:`to_frame`."""
    key = df["key"].to_numpy(dtype=np.int64)
    bucket = key >= 0
    gid = -1 - key[~bucket]
    n_groups = int(gid.max()) + 1 if gid.size else 0
    gn = np.zeros(n_groups, dtype=np.int64)
    gn[gid] = df["count"].to_numpy(dtype=np.int64)[~bucket]
    return Sketch(key[bucket], df["count"].to_numpy(dtype=np.int64)[bucket], gn, alpha)
