"""The Snakemake HTML report of a finished study holds every plot and page, byte for
byte, with captions, and shows each one when a reader clicks through it in headless
Chromium (tests.workflow.reportcheck); screenshots are checked to be real renderings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import yaml

from tests.conftest import small_study_data, snakemake_cmd
from tests.workflow import reportcheck

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The small study run to its end, then ``snakemake --report``; returns the results
    folder and the report."""
    wd = tmp_path_factory.mktemp("report_html")
    study = wd / "small.yaml"
    study.write_text(yaml.safe_dump(small_study_data(), sort_keys=False))
    cmd = snakemake_cmd(wd, study, cores=2)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    report = wd / "results" / "small" / "report.html"
    cmd = snakemake_cmd(wd, study, "--report", str(report), cores=2)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    return wd / "results" / "small", report


def test_report_holds_every_plot_and_page(project: tuple[Path, Path]) -> None:
    results, report = project
    assert reportcheck.contents_problems(report, results) == []
    embedded, categories = reportcheck.report_contents(report)
    names = {Path(k).name for k in embedded}
    assert {"forest.png", "bands_CP.png", "safety_neutropenia.png", "study.html"} <= names
    assert {"efficacy.html", "safety.html", "population.html"} <= names
    assert set(categories) == {"Plots", "Summary tables", "Study"}


def test_contents_check_finds_a_changed_or_missing_plot(
    project: tuple[Path, Path], tmp_path: Path
) -> None:
    """A plot changed after the report was made, and one the manifest lists but the
    report lacks, are both named."""
    results, report = project
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    (copy / "report" / "forest.png").write_bytes(b"\x89PNG changed")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["outputs"].append({"path": "report/extra.png"})
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert reportcheck.contents_problems(report, copy) == [
        "report/extra.png: not in the report",
        "report/forest.png: embedded content differs from the file",
    ]


def test_report_renders_in_headless_chromium(project: tuple[Path, Path], tmp_path: Path) -> None:
    """Every result is reachable from the menu and displayed; each screenshot is a real
    rendering (the size of the window, not blank)."""
    paths = reportcheck.chromium_paths()
    if paths is None:
        if os.environ.get("VTRIAL_REQUIRE_BROWSER"):
            pytest.fail("VTRIAL_REQUIRE_BROWSER is set but chromium/chromedriver are missing")
        pytest.skip(
            "chromium and chromedriver not installed (apt-get install chromium chromium-driver)"
        )
    _, report = project
    seen = reportcheck.browse(report, tmp_path / "shots", chromium=paths[0], chromedriver=paths[1])
    assert seen.problems == []
    embedded, _ = reportcheck.report_contents(report)
    assert sorted(seen.shown) == sorted(embedded)
    assert len(seen.screenshots) == len(embedded) + 1  # and the landing page
    for shot in seen.screenshots:
        img = mpimg.imread(shot)
        assert img.shape[1] == 1500, shot  # the window's width (pages may be taller)
        assert img.shape[0] >= 800, shot
        assert float(np.std(img[..., :3])) > 0.02, shot
    print(f"\nreport: {len(seen.shown)} results shown; screenshots in {tmp_path / 'shots'}")


def test_check_command_refuses_a_non_report(
    project: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m tests.workflow.reportcheck``: exit 1 naming the file when it is not a report."""
    results, _ = project
    fake = tmp_path / "report.html"
    fake.write_text("<html><body>hello</body></html>")
    assert reportcheck.main([str(results), "--report", str(fake)]) == 1
    err = capsys.readouterr().err
    assert f"problem: {fake}: no embedded 'results': not a Snakemake report" in err
