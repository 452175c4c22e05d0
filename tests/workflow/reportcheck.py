"""Check a Snakemake HTML report: it holds every plot and page, and it shows each one.

``snakemake --report results/<study>/report.html`` writes one self-contained HTML file:
a JavaScript app whose results (plots, pages) are embedded as data URIs, listed by
category and subcategory. This module checks such a file in two ways:

1. :func:`contents_problems` reads the embedded data: every report file of the
   study's ``manifest.json`` (``report/*.png``, ``report/**/*.html``) is in the report,
   byte for byte the file on disk, with a caption;
2. :func:`browse` opens the report in headless Chromium (driven by Selenium with the
   system's ``chromedriver``) and clicks through it as a reader would: every category,
   every subcategory, the eye button of every result. It checks that the result is then
   shown (an image decoded to its real size, or a page in a frame) and saves a
   screenshot of each view, to look at.

Run it with ``make report-check`` or ``python -m tests.workflow.reportcheck results/<study>``
(exit code 1 with the problems listed).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

__all__ = ["Browsed", "browse", "chromium_paths", "contents_problems", "report_contents"]

#: flags for Chromium on a machine without internet access (no background connections)
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1500,1000",
)
_SCRIPT = r'<script id="{name}">\s*var {name} = (.*?);?\s*</script>'


def report_contents(html_path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The results and the categories embedded in a Snakemake HTML report.

    Returns
    -------
    results : dict
        Path (as Snakemake saw it, e.g. ``results/s/report/forest.png``) -> entry
        with ``caption`` (HTML), ``mime_type`` and ``data_uri``.
    categories : dict
        Category -> subcategory (``"Other"`` when none) -> list of result paths.

    Raises
    ------
    ValueError
        If the file is not a Snakemake report (the embedded data are not found).
    """
    text = Path(html_path).read_text(encoding="utf-8")
    out = []
    for name in ("results", "categories"):
        m = re.search(_SCRIPT.format(name=name), text, re.S)
        if m is None:
            raise ValueError(f"{html_path}: no embedded {name!r}: not a Snakemake report")
        out.append(json.loads(m.group(1)))
    return out[0], out[1]


def _data(uri: str) -> bytes:
    header, _, payload = uri.partition(",")
    if not header.endswith(";base64"):
        raise ValueError(f"not a base64 data URI: {header[:60]!r}")
    return base64.b64decode(payload)


def contents_problems(html_path: str | Path, results_dir: str | Path) -> list[str]:
    """What the report lacks: every report file listed in ``manifest.json`` must be
    embedded, identical to the file, with a non-empty caption; [] if nothing."""
    results_dir = Path(results_dir)
    manifest = json.loads((results_dir / "manifest.json").read_text())
    expected = sorted(e["path"] for e in manifest["outputs"] if e["path"].startswith("report/"))
    if not expected:
        return [f"{results_dir}/manifest.json lists no report file"]
    results, categories = report_contents(html_path)
    by_rel: dict[str, dict[str, Any]] = {}
    for key, entry in results.items():
        rel = Path(key)
        parts = rel.parts
        if "report" in parts:
            by_rel["/".join(parts[parts.index("report") :])] = entry
    problems = []
    for rel in expected:
        entry = by_rel.get(rel)
        if entry is None:
            problems.append(f"{rel}: not in the report")
            continue
        if _data(entry["data_uri"]) != (results_dir / rel).read_bytes():
            problems.append(f"{rel}: embedded content differs from the file")
        if not re.sub(r"<[^>]+>|\s", "", entry.get("caption") or ""):
            problems.append(f"{rel}: no caption")
    listed = {p for subs in categories.values() for paths in subs.values() for p in paths}
    for key in results:
        if key not in listed:
            problems.append(f"{key}: in no category (not reachable from the menu)")
    return problems


def chromium_paths() -> tuple[str, str] | None:
    """``(chromium, chromedriver)`` executables found on PATH, or None."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@dataclass
class Browsed:
    """What :func:`browse` saw: the views shown and saved, and the problems."""

    shown: list[str] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _wait(condition: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll ``condition`` until it returns a truthy value (None after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    return None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def browse(
    html_path: str | Path,
    screenshots: str | Path,
    *,
    chromium: str,
    chromedriver: str,
) -> Browsed:
    """Click through every result of a report in headless Chromium, screenshot each.

    The landing page is saved as ``00_report.png``; each result as
    ``<category>__<subcategory>__<file>.png`` in `screenshots`.

    Parameters
    ----------
    html_path : str or pathlib.Path
        The report.
    screenshots : str or pathlib.Path
        Folder for the screenshots (created).
    chromium, chromedriver : str
        Executables (:func:`chromium_paths`).

    Returns
    -------
    Browsed
        Views shown, screenshots written, problems (a result that could not be
        opened or was not displayed).
    """
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    html_path = Path(html_path).resolve()
    out = Path(screenshots)
    out.mkdir(parents=True, exist_ok=True)
    results, categories = report_contents(html_path)
    seen = Browsed()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = out / ".chromium-profile"
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:

        def shot(name: str) -> None:
            path = out / f"{name}.png"
            driver.save_screenshot(str(path))
            seen.screenshots.append(path)

        def menu(label: str) -> bool:
            xpath = f"//nav//a[.//span[normalize-space()={json.dumps(label)}]]"
            link = _wait(lambda: driver.find_elements(By.XPATH, xpath), timeout=5.0)
            if not link:
                return False
            link[0].click()
            return True

        def home() -> None:
            driver.get(html_path.as_uri())
            _wait(lambda: driver.find_elements(By.XPATH, "//nav//a[.//span]"))

        def open_result(category: str, sub: str, key: str) -> str | None:
            """Click home -> category -> subcategory -> the eye of `key`; None when it
            worked, else what failed (the app re-renders as it loads, so a click can
            land on an element just replaced: three attempts)."""
            row = f"//tr[td[normalize-space()={json.dumps(key)}]]//a[@iconname='eye']"
            failure = "menu entry not found"
            for _ in range(3):
                try:
                    home()
                    if not menu(category) or (sub != "Other" and not menu(sub)):
                        failure = "menu entry not found"
                        continue
                    eye = _wait(partial(driver.find_elements, By.XPATH, row), timeout=5.0)
                    if not eye:
                        failure = "no row with a view button"
                        continue
                    eye[0].click()
                    return None
                except WebDriverException as exc:
                    failure = f"{type(exc).__name__} while clicking"
            return failure

        home()
        if not _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#app nav")):
            seen.problems.append("the report app did not render (no menu)")
            return seen
        shot("00_report")
        for category, subs in categories.items():
            for sub, paths in subs.items():
                for key in paths:
                    what = f"{category} / {sub} / {Path(key).name}"
                    # Two tries: on a loaded machine a click can land before the app
                    # has bound it; a result that twice fails to show is a problem.
                    for _ in range(2):
                        failure = open_result(category, sub, key)
                        if failure is None and not _shown(driver, results[key]):
                            failure = "not displayed"
                        if failure is None:
                            break
                    if failure is not None:
                        seen.problems.append(f"{what}: {failure}")
                        continue
                    seen.shown.append(key)
                    parts = (category, *([sub] if sub != "Other" else []), Path(key).stem)
                    shot("__".join(_safe(x) for x in parts))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return seen


def _shown(driver: Any, entry: dict[str, Any]) -> bool:
    """Whether the result is displayed: an ``img`` with its data URI decoded to a real
    size, or an ``iframe`` / ``embed`` holding its data (pages)."""
    from selenium.webdriver.common.by import By

    uri = entry["data_uri"]
    if entry["mime_type"].startswith("image/"):

        def decoded() -> bool:
            for img in driver.find_elements(By.TAG_NAME, "img"):
                if img.get_attribute("src") == uri:
                    width = driver.execute_script("return arguments[0].naturalWidth", img)
                    return bool(width and img.is_displayed())
            return False

        return bool(_wait(decoded))

    def framed() -> bool:
        for tag in ("iframe", "embed", "object"):
            for el in driver.find_elements(By.TAG_NAME, tag):
                src = el.get_attribute("src") or el.get_attribute("data") or ""
                if src == uri and el.is_displayed():
                    return True
        return False

    return bool(_wait(framed))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.workflow.reportcheck results/<study> [--report FILE]
    [--screenshots DIR]``."""
    p = argparse.ArgumentParser(prog="python -m tests.workflow.reportcheck", description=__doc__)
    p.add_argument("results", help="results folder of a finished study")
    p.add_argument("--report", help="the HTML report (default: <results>/report.html)")
    p.add_argument(
        "--screenshots", help="folder for screenshots (default: <results>/report-screenshots)"
    )
    args = p.parse_args(argv)
    results = Path(args.results)
    report = Path(args.report or results / "report.html")
    try:
        problems = contents_problems(report, results)
    except (OSError, ValueError) as exc:
        print(f"problem: {exc}", file=sys.stderr)
        return 1
    paths = chromium_paths()
    if paths is None:
        problems.append("chromium and chromedriver not found on PATH: cannot render the report")
    else:
        seen = browse(
            report,
            args.screenshots or results / "report-screenshots",
            chromium=paths[0],
            chromedriver=paths[1],
        )
        problems += seen.problems
        print(f"{report}: {len(seen.shown)} results shown, screenshots:")
        for s in seen.screenshots:
            print(f"  {s}")
    for msg in problems:
        print(f"problem: {msg}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
