"""Individual-effects plot of a twin crossover study (vtrial.report.trial_plots)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from vtrial.errors import DataError
from vtrial.report import trial_plots
from vtrial.trial.spec import EffectOptions

ARMS = ["placebo", "low", "high"]
N, REPS = 150, 2


def twin_patients(seed: int = 7) -> pd.DataFrame:
    """Every patient under every arm: y = base + arm shift + noise; a responder column
    ``resp`` (y <= -10); patient 3 of replicate 1 failed under ``high``."""
    rng = np.random.default_rng(seed)
    rows = []
    for rep in range(REPS):
        base = rng.normal(0.0, 8.0, N)
        for arm, shift in zip(ARMS, (0.0, -6.0, -14.0), strict=True):
            y = base + shift + rng.normal(0.0, 4.0, N)
            for pid in range(N):
                failed = rep == 1 and pid == 3 and arm == "high"
                rows.append(
                    {
                        "replicate": rep,
                        "patient_id": pid,
                        "arm": arm,
                        "solver_status": "max_steps" if failed else "ok",
                        "y": np.nan if failed else y[pid],
                        "resp": np.nan if failed else float(y[pid] <= -10.0),
                    }
                )
    return pd.DataFrame(rows)


def capture(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    figs: list[Figure] = []

    def render(build, path):  # type: ignore[no-untyped-def]
        figs.append(build())
        return Path(path)

    monkeypatch.setattr(trial_plots, "render_png", render)
    return figs


def reference_effects(p: pd.DataFrame, column: str, arm: str) -> np.ndarray:
    """d = y(arm) - y(placebo) over pairs with both solves ok, by a pivot."""
    ok = p[p["solver_status"] == "ok"]
    wide = ok.pivot_table(index=["replicate", "patient_id"], columns="arm", values=column)
    return (wide[arm] - wide["placebo"]).dropna().to_numpy()


def test_png_written(tmp_path: Path) -> None:
    out = trial_plots.plot_individual_effects(
        twin_patients(),
        "y",
        arms=ARMS,
        control="placebo",
        unit="%",
        options=EffectOptions("lower", 5.0),
        path=tmp_path / "ite.png",
    )
    img = mpimg.imread(out)
    assert img.shape[1] > img.shape[0] > 400  # two panels side by side
    assert float(np.std(img[..., :3])) > 0.0


def test_continuous_distribution_and_shares(monkeypatch: pytest.MonkeyPatch) -> None:
    """Legend n and median, histogram mass and benefit/no change/harm bar widths equal
    those computed independently from a pivot of the table (margin 5, lower better)."""
    p = twin_patients()
    figs = capture(monkeypatch)
    trial_plots.plot_individual_effects(
        p,
        "y",
        arms=ARMS,
        control="placebo",
        unit="%",
        options=EffectOptions("lower", 5.0),
        path="x.png",
    )
    ax, bx = figs[0].axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "|d| <= 5"
    assert ax.get_xlabel() == "Individual effect on y: arm - placebo (%)"
    for arm, label in zip(ARMS[1:], labels[1:], strict=True):
        d = reference_effects(p, "y", arm)
        assert label.startswith(f"{arm} (n = {d.size}, median {np.median(d):.3g}, ")
    assert reference_effects(p, "y", "high").size == N * REPS - 1  # the failed pair
    # bars: harm, no change, benefit for each arm, in percent
    widths = np.array([r.get_width() for r in bx.patches]).reshape(3, 2)
    for j, arm in enumerate(ARMS[1:]):
        d = reference_effects(p, "y", arm)
        expect = 100 * np.array([np.mean(d > 5), np.mean(np.abs(d) <= 5), np.mean(d < -5)])
        np.testing.assert_allclose(widths[:, j], expect, atol=1e-9)
    # histogram: each arm's step outline sums to 100 % of its patients
    stairs = [patch.get_data()[0] for patch in ax.patches if hasattr(patch, "get_data")]
    assert len(stairs) == 2
    for values in stairs:
        np.testing.assert_allclose(values.sum(), 100.0)


def test_responder_and_no_direction(monkeypatch: pytest.MonkeyPatch) -> None:
    """A responder endpoint: d in -1/0/1 with named ticks; without ``better`` one panel."""
    figs = capture(monkeypatch)
    trial_plots.plot_individual_effects(
        twin_patients(), "resp", arms=ARMS, control="placebo", path="x.png"
    )
    (ax,) = figs[0].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "lost response",
        "same",
        "gained response",
    ]
    assert ax.get_xlabel() == "Individual effect on resp: arm - placebo"


def test_not_a_twin_table(tmp_path: Path) -> None:
    p = twin_patients()
    with pytest.raises(DataError, match="arm 'low' must have exactly one row for each"):
        trial_plots.plot_individual_effects(
            p.iloc[1:], "y", arms=ARMS, control="placebo", path=tmp_path / "x.png"
        )
    with pytest.raises(DataError, match="control arm 'none' is not one of the arms"):
        trial_plots.plot_individual_effects(
            p, "y", arms=ARMS, control="none", path=tmp_path / "x.png"
        )
    assert not (tmp_path / "x.png").exists()
