"""Mergeable quantile sketches: accuracy against exact order statistics, exact merging."""

from __future__ import annotations

import numpy as np
import pytest

from vtrial.analysis.sketch import ALPHA, from_frame, merge, quantiles, sketch_block, to_frame

QS = (0.05, 0.5, 0.95)


def exact_lower(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, 100 * q, method="lower"))


@pytest.mark.parametrize(
    "dist",
    ["lognormal", "normal_with_negatives", "with_zeros", "tiny_and_huge"],
)
def test_quantiles_within_relative_alpha(dist: str) -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    x = {
        "lognormal": rng.lognormal(0, 2, n),
        "normal_with_negatives": rng.normal(0.5, 1.0, n),
        "with_zeros": np.where(rng.random(n) < 0.3, 0.0, rng.lognormal(0, 1, n)),
        "tiny_and_huge": np.exp(rng.uniform(-200, 200, n)),
    }[dist]
    sk = sketch_block(x, np.zeros(n, dtype=np.int64), 1)
    got = quantiles(sk, QS)[0]
    for q, g in zip(QS, got, strict=True):
        ref = exact_lower(x, q)
        assert abs(g - ref) <= ALPHA * abs(ref) * (1 + 1e-12), (q, g, ref)
    assert sk.group_n[0] == n


def test_merge_is_exact_and_order_free() -> None:
    rng = np.random.default_rng(4)
    x = rng.lognormal(1, 1, (3000, 5))
    groups = np.broadcast_to(np.arange(5), x.shape)
    whole = sketch_block(x, groups, 5)
    parts = [sketch_block(x[i : i + 700], groups[i : i + 700], 5) for i in range(0, 3000, 700)]
    merged = merge(parts)
    assert np.array_equal(merged.keys, whole.keys)
    assert np.array_equal(merged.counts, whole.counts)
    assert np.array_equal(merge(parts[::-1]).counts, whole.counts)
    np.testing.assert_array_equal(quantiles(merged, QS), quantiles(whole, QS))


def test_nan_ignored_empty_groups_nan_and_roundtrip() -> None:
    x = np.array([1.0, np.nan, 2.0, 3.0])
    sk = sketch_block(x, np.array([0, 0, 0, 0]), 2)
    q = quantiles(sk, (0.5,))
    assert q[0, 0] == pytest.approx(2.0, rel=ALPHA)
    assert np.isnan(q[1, 0])
    back = from_frame(to_frame(sk))
    assert np.array_equal(back.keys, sk.keys)
    assert np.array_equal(back.group_n, sk.group_n)
