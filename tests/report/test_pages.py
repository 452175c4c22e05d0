"""HTML pages of the report (vtrial.report.pages): tables and the study file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import ROOT
from vtrial.report.pages import study_page, table_page
from vtrial.study.config import load_study


def test_table_page_cells() -> None:
    """Numbers to 4 significant digits, integers and booleans as they are, missing
    values empty, text escaped and left-aligned; deterministic."""
    df = pd.DataFrame(
        {
            "arm": ["a<b", "c"],
            "n": np.array([800, 12], dtype=np.int64),
            "p": [0.000123456, np.nan],
            "ok": [True, False],
            "rep": pd.array([0, None], dtype="Int32"),
        }
    )
    page = table_page(df, title="T & U", note="see x.parquet")
    assert "<title>T &amp; U</title>" in page
    assert (
        "<td class='text'>a&lt;b</td><td>800</td><td>0.0001235</td><td>True</td><td>0</td>" in page
    )
    assert "<td class='text'>c</td><td>12</td><td></td><td>False</td><td></td>" in page
    assert "2 rows" in page
    assert page == table_page(df, title="T & U", note="see x.parquet")


def test_study_page_shows_study_and_models(tmp_path: Path) -> None:
    study = load_study(ROOT / "config" / "config.yaml")
    models = [c.source for c in study.model.components]
    page = study_page(study.name, study.source, models, study.sha256)
    assert study.sha256 in page
    text = Path(study.source).read_text()
    assert text.splitlines()[0].replace("&", "&amp;").replace("<", "&lt;") in page
    for m in models:
        assert f"<h2>model: {Path(m).name}</h2>" in page
