"""Tests of vtrial.report (plots, bands, safety, exposure, forest): figures written as
valid, non-blank PNGs, atomically.

The tables are built with the summaries of :mod:`vtrial.analysis` from a small seeded synthetic
patients table, so the figures read exactly what the pipeline writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from vtrial.analysis import stats
from vtrial.analysis.bands import percentile_bands
from vtrial.analysis.efficacy import efficacy_summary
from vtrial.analysis.exposure import exposure_summary
from vtrial.analysis.safety import safety_summary
from vtrial.errors import DataError
from vtrial.report import bands as bands_plots
from vtrial.report import exposure as exposure_plots
from vtrial.report import forest as forest_plots
from vtrial.report import plots as report
from vtrial.report import safety as safety_plots

ARMS = ["placebo", "low", "high"]
DOSE = {"placebo": 0.0, "low": 50.0, "high": 200.0}
EVENTS = {"neutropenia": "ae_neutropenia_grade"}
UNITS = {"CP": "mg/L", "ANC": "10^9/L", "tumour_change": "%"}
ENDPOINTS: dict[str, Literal["continuous", "binary"]] = {
    "tumour_change": "continuous",
    "objective_response": "binary",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- #
# Synthetic data
# --------------------------------------------------------------------------- #


def make_patients(seed: int = 0, n_per_rep: int = 45, n_rep: int = 2) -> pd.DataFrame:
    """Patients table: placebo with zero exposure, a few solver failures."""
    rng = np.random.default_rng(seed)
    n = n_per_rep * n_rep
    arm = np.tile(np.repeat(ARMS, n_per_rep // len(ARMS)), n_rep)
    dose = np.array([DOSE[a] for a in arm])
    status = np.where(rng.random(n) < 0.05, "max_steps", "ok")
    auc = dose / rng.lognormal(np.log(5.0), 0.3, n) * 10.0
    cmax = auc / 12.0 * rng.lognormal(0.0, 0.2, n)
    p3 = np.where(dose > 0, 1.0 / (1.0 + np.exp(-(np.log(auc + 1e-9) - np.log(150.0)) * 2)), 0.05)
    grade = np.where(rng.random(n) < p3, rng.integers(3, 6, n), rng.integers(0, 3, n))
    t3 = np.where(grade >= 3, rng.uniform(10.0, 300.0, n), np.nan)
    return pd.DataFrame(
        {
            "replicate": np.repeat(np.arange(n_rep, dtype=np.int32), n_per_rep),
            "patient_id": np.arange(n, dtype=np.int64),
            "arm": arm,
            "solver_status": status,
            "cmax": cmax,
            "auc": auc,
            "ctrough": cmax * 0.2,
            "tumour_change": rng.normal(-5.0 - dose / 10.0, 15.0, n),
            "objective_response": (rng.random(n) < 0.1 + dose / 400.0).astype(np.int8),
            "ae_neutropenia_grade": grade.astype(np.int8),
            "ae_neutropenia_time_grade3": t3,
        }
    )


def make_timecourse(patients: pd.DataFrame, horizon: float = 168.0) -> pd.DataFrame:
    """CP (decaying, 0 for placebo) and ANC time courses of the ok patients."""
    ok = patients[patients["solver_status"] == "ok"]
    times = np.linspace(0.0, horizon, 15)
    rng = np.random.default_rng(1)
    dose = np.array([DOSE[a] for a in ok["arm"]])
    scale = rng.lognormal(0.0, 0.3, len(ok))
    cp = (dose * scale / 20.0)[:, None] * np.exp(-0.03 * times)[None, :]
    anc = 5.0 - (dose * scale / 100.0)[:, None] * (1.0 - np.exp(-times / 50.0))[None, :]
    nt = times.size
    return pd.DataFrame(
        {
            "replicate": np.repeat(ok["replicate"].to_numpy(), nt),
            "patient_id": np.repeat(ok["patient_id"].to_numpy(), nt),
            "arm": np.repeat(ok["arm"].to_numpy(dtype=object), nt),
            "time": np.tile(times, len(ok)),
            "CP": cp.reshape(-1),
            "ANC": anc.reshape(-1),
        }
    )


def make_tables(patients: pd.DataFrame, horizon: float = 168.0) -> dict[str, pd.DataFrame]:
    return {
        "exposure": exposure_summary(patients, metrics=["cmax", "auc"], arms=ARMS),
        "efficacy": efficacy_summary(patients, endpoints=ENDPOINTS, arms=ARMS, control="placebo"),
        "safety": safety_summary(patients, events=["neutropenia"], arms=ARMS, horizon=336.0),
        "bands": percentile_bands(
            make_timecourse(patients, horizon), outputs=["CP", "ANC"], arms=ARMS
        ),
    }


@pytest.fixture(scope="module")
def patients() -> pd.DataFrame:
    return make_patients()


@pytest.fixture(scope="module")
def tables(patients: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return make_tables(patients)


@pytest.fixture(autouse=True)
def _no_open_figures() -> Iterator[None]:
    """No test may leave a pyplot figure open (report never uses pyplot)."""
    assert plt.get_fignums() == []
    yield
    assert plt.get_fignums() == []


def assert_png(path: Path, *, min_height: int = 400) -> np.ndarray:
    """A readable, non-blank PNG of a sensible size; returns the pixels."""
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    assert img.ndim == 3
    assert img.shape[2] in (3, 4)
    h, w = img.shape[:2]
    assert min_height <= h <= 4000
    assert 600 <= w <= 1200  # 7 in at 120 dpi = 840 px
    assert float(np.std(img[..., :3])) > 0.0
    return img


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


# --------------------------------------------------------------------------- #
# plot_bands
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("log", [False, True])
def test_plot_bands_writes_png(tables: dict[str, pd.DataFrame], tmp_path: Path, log: bool) -> None:
    out = bands_plots.plot_bands(
        tables["bands"], "CP", arms=ARMS, unit="mg/L", path=tmp_path / "cp.png", log=log
    )
    assert out == tmp_path / "cp.png"
    img = assert_png(out)
    assert img.shape[:2] == (540, 840)
    assert no_temp_files(tmp_path)


def test_bands_axis_units_and_skipped_arms(tables: dict[str, pd.DataFrame]) -> None:
    # a 168 h horizon (a week) reads in hours; an arm not in the table is skipped.
    fig = bands_plots._bands_figure(
        tables["bands"], "ANC", ["high", "ghost", "low"], "10^9/L", None, False
    )
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Time (h)"
    assert ax.get_ylabel() == "ANC (10$^{9}$/L)"
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["high", "low"]
    assert ax.get_xlim()[1] == pytest.approx(168.0, rel=0.1)
    # log scale: placebo CP is all 0 and disappears from the legend
    fig = bands_plots._bands_figure(tables["bands"], "CP", ARMS, "mg/L", "my title", True)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_title() == "my title"
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["low", "high"]


def test_bands_draw_the_grade_thresholds(tables: dict[str, pd.DataFrame]) -> None:
    """The ANC plot shows the CTCAE grade 3 and 4 lines, each in the legend."""
    refs = [(1.0, "neutropenia grade 3"), (0.5, "neutropenia grade 4")]
    fig = bands_plots._bands_figure(tables["bands"], "ANC", ARMS, "10^9/L", None, False, refs)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[-2:] == ["neutropenia grade 3", "neutropenia grade 4"]
    levels = sorted(line.get_ydata()[0] for line in ax.get_lines() if len(line.get_ydata()) == 2)
    assert levels[:2] == [0.5, 1.0]


def test_bands_leave_out_an_arm_at_zero_and_say_so(tables: dict[str, pd.DataFrame]) -> None:
    """Placebo's CP is 0 throughout: no line, no legend entry, a note instead."""
    fig = bands_plots._bands_figure(tables["bands"], "CP", ARMS, "mg/L", None, False)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["low", "high"]
    notes = [t.get_text() for t in ax.texts]
    assert "not shown, 0 throughout: placebo" in notes


def test_bands_days_beyond_a_week(patients: pd.DataFrame) -> None:
    bands = make_tables(patients, horizon=336.0)["bands"]
    fig = bands_plots._bands_figure(bands, "CP", ARMS, "mg/L", None, False)
    assert fig.axes[0].get_xlabel() == "Time (days)"


def test_bands_hours_for_short_horizon(patients: pd.DataFrame) -> None:
    bands = make_tables(patients, horizon=48.0)["bands"]
    fig = bands_plots._bands_figure(bands, "CP", ARMS, "mg/L", None, False)
    assert fig.axes[0].get_xlabel() == "Time (h)"


def test_bands_with_nan_rows(tables: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    bands = tables["bands"].copy()
    bands.loc[bands.index[::3], ["p5", "p50", "p95"]] = np.nan
    assert_png(bands_plots.plot_bands(bands, "ANC", arms=ARMS, unit="", path=tmp_path / "a.png"))


def test_bands_errors(tables: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no finite"):
        bands_plots.plot_bands(tables["bands"], "NOPE", arms=ARMS, unit="", path=tmp_path / "x.png")
    with pytest.raises(DataError, match="no finite positive"):
        bands_plots.plot_bands(
            tables["bands"], "CP", arms=["placebo"], unit="", path=tmp_path / "x.png", log=True
        )
    with pytest.raises(DataError, match="missing column"):
        bands_plots.plot_bands(
            tables["bands"].drop(columns="p95"), "CP", arms=ARMS, unit="", path=tmp_path / "x.png"
        )
    with pytest.raises(ValueError, match="duplicated"):
        bands_plots.plot_bands(
            tables["bands"], "CP", arms=["low", "low"], unit="", path=tmp_path / "x.png"
        )
    assert not (tmp_path / "x.png").exists()
    assert no_temp_files(tmp_path)


# --------------------------------------------------------------------------- #
# plot_safety
# --------------------------------------------------------------------------- #


def test_plot_safety_writes_png(tables: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    out = safety_plots.plot_safety(
        tables["safety"], "neutropenia", arms=[*ARMS, "ghost"], path=tmp_path / "s.png"
    )
    assert_png(out)


def test_safety_legend_has_the_grades_the_event_defines(
    tables: dict[str, pd.DataFrame],
) -> None:
    """The neutrophil-count scale defines grades 1-4: no 'Grade 5' in the legend."""
    records, note = safety_plots.safety_arms(tables["safety"], "neutropenia", ARMS, 0.95)
    for n_grades, last in ((4, "Grade 4"), (5, "Grade 5"), (2, "Grade 2")):
        fig = safety_plots._safety_figure(records, "neutropenia", "95 %", note, n_grades)
        labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert labels[0] == last
        assert len(labels) == n_grades


def test_safety_pooled_incidence(patients: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> None:
    records, note = safety_plots.safety_arms(
        tables["safety"], "neutropenia", ["high", "ghost"], 0.95
    )
    assert note == "replicate 0"
    assert [r.arm for r in records] == ["high"]
    rec = records[0]
    ok = patients[(patients["solver_status"] == "ok") & (patients["arm"] == "high")]
    grades = ok["ae_neutropenia_grade"].to_numpy()
    assert rec.n == len(ok)
    for g in range(1, 6):
        assert rec.incidence[g - 1] == pytest.approx(np.mean(grades == g), rel=1e-12)
    rep0 = grades[ok["replicate"].to_numpy() == 0]
    k, n = int(np.sum(rep0 >= 3)), rep0.size
    assert rec.ge3 == pytest.approx(k / n)
    low, high = stats.wilson_interval(k, n, 0.95)
    assert (rec.ge3_low, rec.ge3_high) == pytest.approx((low, high))


def test_safety_without_replicate_0_is_pooled(
    patients: pd.DataFrame, tables: dict[str, pd.DataFrame]
) -> None:
    safety = tables["safety"][tables["safety"]["replicate"] != 0]
    records, note = safety_plots.safety_arms(safety, "neutropenia", ["low"], 0.95)
    assert note == "pooled over replicates"
    ok = patients[
        (patients["solver_status"] == "ok")
        & (patients["arm"] == "low")
        & (patients["replicate"] != 0)
    ]
    k = int((ok["ae_neutropenia_grade"] >= 3).sum())
    assert records[0].ge3 == pytest.approx(k / len(ok))
    assert (records[0].ge3_low, records[0].ge3_high) == pytest.approx(
        stats.wilson_interval(k, len(ok), 0.95)
    )


def test_safety_empty_arm_and_errors(patients: pd.DataFrame, tmp_path: Path) -> None:
    # "empty" is requested from stats but has no patients: n = 0, drawn as "no data"
    safety = safety_summary(patients, events=["neutropenia"], arms=["low", "empty"], horizon=336.0)
    assert_png(
        safety_plots.plot_safety(
            safety, "neutropenia", arms=["low", "empty"], path=tmp_path / "s.png"
        )
    )
    with pytest.raises(DataError, match="no rows"):
        safety_plots.plot_safety(safety, "rash", arms=["low"], path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="confidence"):
        safety_plots.plot_safety(
            safety, "neutropenia", arms=["low"], path=tmp_path / "x.png", confidence=95
        )


# --------------------------------------------------------------------------- #
# plot_exposure
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("target", [None, (5.0, 20.0), (0.0, 10.0)])
def test_plot_exposure_writes_png(
    patients: pd.DataFrame, tmp_path: Path, target: tuple[float, float] | None
) -> None:
    out = exposure_plots.plot_exposure(
        patients, "cmax", arms=ARMS, unit="mg/L", path=tmp_path / "e.png", target=target
    )
    assert_png(out)


def test_exposure_skips_placebo_and_failed(patients: pd.DataFrame) -> None:
    df = patients.copy()
    df.loc[df["solver_status"] != "ok", "auc"] = np.inf  # garbage of failed patients
    data = exposure_plots.exposure_values(df, "auc", [*ARMS, "ghost"])
    assert [arm for _, arm, _ in data] == ["low", "high"]
    for _, arm, v in data:
        ok = df[(df["arm"] == arm) & (df["solver_status"] == "ok")]
        np.testing.assert_array_equal(v, ok["auc"].to_numpy())
    fig = exposure_plots._exposure_figure(data, "auc", "mg/L·h", None)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert [lab.split("\n")[0] for lab in labels] == ["low", "high"]
    assert ax.get_yscale() == "log"
    assert ax.get_ylabel() == "AUC (mg/L·h)"


def test_exposure_linear_when_zero_in_active_arm(patients: pd.DataFrame) -> None:
    df = patients.copy()
    df.loc[df.index[df["arm"] == "low"][0], "cmax"] = 0.0
    fig = exposure_plots._exposure_figure(
        exposure_plots.exposure_values(df, "cmax", ARMS), "cmax", "", None
    )
    assert fig.axes[0].get_yscale() == "linear"


def test_exposure_errors(patients: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no non-zero"):
        exposure_plots.plot_exposure(
            patients, "cmax", arms=["placebo"], unit="", path=tmp_path / "x.png"
        )
    with pytest.raises(DataError, match="missing column"):
        exposure_plots.plot_exposure(patients, "vss", arms=ARMS, unit="", path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="target"):
        exposure_plots.plot_exposure(
            patients, "cmax", arms=ARMS, unit="", path=tmp_path / "x.png", target=(5.0, 1.0)
        )
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- #
# plot_forest
# --------------------------------------------------------------------------- #


def test_plot_forest_writes_png(tables: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    assert_png(
        forest_plots.plot_forest(tables["efficacy"], path=tmp_path / "f.png", control="placebo")
    )


def test_forest_rows(tables: dict[str, pd.DataFrame]) -> None:
    eff = tables["efficacy"]
    rows, used = forest_plots.forest_rows(eff, "placebo", [*ARMS, "ghost"])
    assert used == 0
    assert [(r.endpoint, r.arm) for r in rows] == [
        ("tumour_change", "low"),
        ("tumour_change", "high"),
        ("objective_response", "low"),
        ("objective_response", "high"),
    ]
    for r in rows:
        src = eff[(eff["replicate"] == 0) & (eff["arm"] == r.arm) & (eff["endpoint"] == r.endpoint)]
        scale = 100.0 if r.kind == "binary" else 1.0
        assert r.diff == pytest.approx(float(src["diff"].iloc[0]) * scale)
        assert r.low == pytest.approx(float(src["diff_ci_low"].iloc[0]) * scale)
        assert r.high == pytest.approx(float(src["diff_ci_high"].iloc[0]) * scale)
        assert r.p_value == pytest.approx(float(src["p_value"].iloc[0]))
    # no replicate 0: the smallest replicate is used
    rows1, used1 = forest_plots.forest_rows(eff[eff["replicate"] == 1], "placebo", None)
    assert used1 == 1
    assert len(rows1) == 4


def test_forest_labels(tables: dict[str, pd.DataFrame]) -> None:
    rows, used = forest_plots.forest_rows(tables["efficacy"], "placebo", ARMS)
    fig = forest_plots._forest_figure(rows, used, "placebo", {"tumour_change": "%"}, "95 %")
    xlabels = [ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()]
    assert xlabels == [
        "Difference vs placebo (%)",
        "Difference vs placebo (percentage points)",
    ]


def test_forest_errors(tables: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    eff = tables["efficacy"]
    with pytest.raises(DataError, match="no rows other than"):
        forest_plots.plot_forest(
            eff[eff["arm"] == "placebo"], path=tmp_path / "x.png", control="placebo"
        )
    with pytest.raises(DataError, match="missing column"):
        forest_plots.plot_forest(
            eff.drop(columns="p_value"), path=tmp_path / "x.png", control="placebo"
        )


# --------------------------------------------------------------------------- #
# plot_exposure_response
# --------------------------------------------------------------------------- #


def test_plot_exposure_response_writes_png(patients: pd.DataFrame, tmp_path: Path) -> None:
    out = exposure_plots.plot_exposure_response(
        patients,
        metric="auc",
        event_grade_column="ae_neutropenia_grade",
        unit="mg/L·h",
        path=tmp_path / "er.png",
    )
    assert_png(out)


@pytest.mark.parametrize("bins", [1, 4, 5])
def test_exposure_response_bins(patients: pd.DataFrame, bins: int) -> None:
    table = exposure_plots._exposure_response_bins(patients, "auc", "ae_neutropenia_grade", bins)
    dosed = patients[(patients["solver_status"] == "ok") & (patients["auc"] > 0)]
    x = dosed["auc"].to_numpy()
    g = dosed["ae_neutropenia_grade"].to_numpy()
    assert len(table) == bins
    assert table["n"].sum() == len(dosed)
    assert table["count"].sum() == int(np.sum(g >= 3))
    edges = np.quantile(x, np.linspace(0.0, 1.0, bins + 1))
    for b, row in enumerate(table.to_dict("records")):
        n, k = int(row["n"]), int(row["count"])
        inb = (x >= edges[b]) & ((x < edges[b + 1]) if b < bins - 1 else (x <= edges[b + 1]))
        assert n == int(inb.sum())
        assert k == int(np.sum(g[inb] >= 3))
        assert row["x_median"] == pytest.approx(np.median(x[inb]))
        assert row["p"] == pytest.approx(k / n)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(stats.wilson_interval(k, n, 0.95))


def test_exposure_response_ties_and_errors(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "solver_status": ["ok"] * 6 + ["nonfinite"],
            "auc": [0.0, 10.0, 10.0, 10.0, 10.0, 20.0, 5.0],
            "g": [5, 0, 3, 1, 4, 2, 5],
        }
    )
    table = exposure_plots._exposure_response_bins(df, "auc", "g", 5)
    assert table["n"].sum() == 5  # placebo (0) and the failed patient excluded
    assert len(table) == 2  # tied quantiles merged
    assert_png(
        exposure_plots.plot_exposure_response(
            df, metric="auc", event_grade_column="g", unit="", path=tmp_path / "er.png", bins=5
        )
    )
    with pytest.raises(DataError, match="no dosed"):
        exposure_plots.plot_exposure_response(
            df[df["auc"] == 0], metric="auc", event_grade_column="g", unit="", path=tmp_path / "x"
        )
    with pytest.raises(ValueError, match="bins"):
        exposure_plots.plot_exposure_response(
            df, metric="auc", event_grade_column="g", unit="", path=tmp_path / "x", bins=0
        )


# --------------------------------------------------------------------------- #
# make_report
# --------------------------------------------------------------------------- #

EXPECTED = [
    "bands_CP.png",
    "bands_ANC.png",
    "safety_neutropenia.png",
    "exposure_cmax.png",
    "exposure_auc.png",
    "forest.png",
    "exposure_response_neutropenia.png",
]


def run_report(
    tables: dict[str, pd.DataFrame],
    patients: pd.DataFrame,
    outdir: Path,
    *,
    arms: list[str] | None = None,
    control: str | None = "placebo",
) -> list[Path]:
    return report.make_report(
        tables,
        patients,
        outdir=outdir,
        arms=ARMS if arms is None else arms,
        control=control,
        units=UNITS,
        events=EVENTS,
        exposure_unit="mg/L",
    )


def test_make_report_all_figures(
    tables: dict[str, pd.DataFrame], patients: pd.DataFrame, tmp_path: Path
) -> None:
    outdir = tmp_path / "figs" / "nested"
    paths = run_report(tables, patients, outdir)
    assert [p.name for p in paths] == EXPECTED
    assert all(p.parent == outdir for p in paths)
    for p in paths:
        assert_png(p)
    assert sorted(p.name for p in outdir.iterdir()) == sorted(EXPECTED)


def test_make_report_passes_exposure_targets(
    tables: dict[str, pd.DataFrame],
    patients: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``targets`` reaches the exposure plot of its metric only."""
    seen: dict[str, object] = {}
    real = report.plot_exposure

    def spy(df, metric, **kw):  # type: ignore[no-untyped-def]
        seen[metric] = kw.get("target")
        return real(df, metric, **kw)

    monkeypatch.setattr(report, "plot_exposure", spy)
    report.make_report(
        tables,
        patients,
        outdir=tmp_path,
        arms=ARMS,
        control="placebo",
        units=UNITS,
        events=EVENTS,
        exposure_unit="mg/L",
        targets={"cmax": (1.0, 4.0)},
    )
    assert seen == {"cmax": (1.0, 4.0), "auc": None}


def test_make_report_is_deterministic_and_replaces(
    tables: dict[str, pd.DataFrame], patients: pd.DataFrame, tmp_path: Path
) -> None:
    (tmp_path / "forest.png").write_bytes(b"stale")
    first = {p.name: p.read_bytes() for p in run_report(tables, patients, tmp_path)}
    second = {p.name: p.read_bytes() for p in run_report(tables, patients, tmp_path)}
    assert first == second
    assert first["forest.png"][:8] == PNG_MAGIC
    assert no_temp_files(tmp_path)


def test_make_report_skips_what_does_not_apply(
    tables: dict[str, pd.DataFrame], patients: pd.DataFrame, tmp_path: Path
) -> None:
    # no control, no bands/safety tables: exposure and E-R only
    partial = {"efficacy": tables["efficacy"]}
    paths = run_report(partial, patients, tmp_path / "a", control=None)
    assert [p.name for p in paths] == [
        "exposure_cmax.png",
        "exposure_auc.png",
        "exposure_response_neutropenia.png",
    ]
    # only placebo and an arm absent from every table: no exposure, forest or E-R
    paths = run_report(tables, patients, tmp_path / "b", arms=["placebo", "ghost"])
    assert [p.name for p in paths] == ["bands_CP.png", "bands_ANC.png", "safety_neutropenia.png"]
    # a patients table without exposure columns
    paths = run_report(
        tables, patients.drop(columns=["cmax", "auc"]), tmp_path / "c", arms=[*ARMS, "ghost"]
    )
    assert [p.name for p in paths] == [
        "bands_CP.png",
        "bands_ANC.png",
        "safety_neutropenia.png",
        "forest.png",
    ]


def test_make_report_safe_file_names(
    tables: dict[str, pd.DataFrame], patients: pd.DataFrame, tmp_path: Path
) -> None:
    safety = tables["safety"].copy()
    safety["event"] = "febrile/neutropenia"
    df = patients.rename(columns={"ae_neutropenia_grade": "g"})
    paths = report.make_report(
        {"safety": safety},
        df,
        outdir=tmp_path,
        arms=ARMS,
        control=None,
        units={},
        events={"febrile/neutropenia": "g"},
        exposure_unit="",
    )
    assert [p.name for p in paths] == [
        "safety_febrile_neutropenia.png",
        "exposure_cmax.png",
        "exposure_auc.png",
        "exposure_response_febrile_neutropenia.png",
    ]


# --------------------------------------------------------------------------- #
# Atomic writing
# --------------------------------------------------------------------------- #


def test_failed_save_leaves_old_file(
    patients: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "e.png"
    target.write_bytes(b"old")

    def broken_savefig(self: Figure, fname: BinaryIO, **kwargs: object) -> None:
        fname.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        exposure_plots.plot_exposure(patients, "auc", arms=ARMS, unit="", path=target)
    assert target.read_bytes() == b"old"
    assert no_temp_files(tmp_path)


def test_no_global_state_leak(patients: pd.DataFrame, tmp_path: Path) -> None:
    import matplotlib as mpl

    before = dict(mpl.rcParams)
    backend = mpl.get_backend()
    exposure_plots.plot_exposure(patients, "auc", arms=ARMS, unit="", path=tmp_path / "e.png")
    assert dict(mpl.rcParams) == before
    assert mpl.get_backend() == backend
    assert plt.get_fignums() == []
