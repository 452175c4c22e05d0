"""HTML pages of the Snakemake report: the summary tables and the study itself.

The Snakemake HTML report shows PNG and HTML results inline (Parquet would only be
offered as a download), so the report stage writes, next to the plots:

* ``report/tables/<name>.html``: every summary table (``summary/<name>.parquet``) as
  an HTML table, numbers to 4 significant digits (the Parquet and CSV files keep
  full precision);
* ``report/study.html``: the study file as written, the model files it uses, and its
  sha256 (the one in ``manifest.json``), so that the report says what was run.

Pages are deterministic (no time stamp): the same study gives the same bytes, which
the manifest hashes.

>>> import pandas as pd
>>> html = table_page(pd.DataFrame({"arm": ["a"], "p": [0.123456]}), title="Efficacy")
>>> "<td>0.1235</td>" in html, html.startswith("<!DOCTYPE html>")
(True, True)
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["page", "study_page", "table_html", "table_page"]

_STYLE = """
body { font-family: sans-serif; font-size: 13px; margin: 12px; color: #111; }
h1 { font-size: 17px; } h2 { font-size: 15px; margin-top: 20px; }
table { border-collapse: collapse; }
th, td { border: 1px solid #bbb; padding: 2px 6px; text-align: right; }
th { background: #eee; position: sticky; top: 0; }
td.text { text-align: left; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 8px; overflow-x: auto; }
p.note { color: #444; }
"""


def page(title: str, body: str) -> str:
    """A self-contained HTML page in the report's style around ``body``."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def _cell(value: Any) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return "<td></td>"
    if isinstance(value, (bool, np.bool_)):
        return f"<td>{bool(value)}</td>"
    if isinstance(value, numbers.Integral):
        return f"<td>{int(value)}</td>"
    if isinstance(value, numbers.Real):
        return "<td></td>" if math.isnan(value) else f"<td>{float(value):.4g}</td>"
    return f"<td class='text'>{html.escape(str(value))}</td>"


def table_page(df: pd.DataFrame, *, title: str, note: str = "") -> str:
    """A summary table as a self-contained HTML page.

    Parameters
    ----------
    df : pandas.DataFrame
        The table; floats are shown to 4 significant digits, missing values empty.
    title : str
        Page heading.
    note : str
        A sentence under the heading (e.g. where the full-precision table is).

    Returns
    -------
    str
        The page.
    """
    body = f"<p class='note'>{html.escape(note)}</p>\n" if note else ""
    body += f"<p class='note'>{len(df)} rows</p>\n"
    body += table_html(df)
    return page(title, body)


def table_html(df: pd.DataFrame) -> str:
    """A table as an HTML ``<table>``: floats to 4 significant digits, missing values
    empty."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = "\n".join(
        "<tr>" + "".join(_cell(v) for v in row) + "</tr>"
        for row in df.astype(object).itertuples(index=False)
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"


def study_page(
    name: str, study_file: str | Path, model_files: Sequence[str | Path], sha256: str
) -> str:
    """The study file and the model files it uses, as one HTML page.

    Parameters
    ----------
    name : str
        The study's name.
    study_file : str or pathlib.Path
        The study YAML file (shown as written, comments included).
    model_files : sequence of str or pathlib.Path
        Model files of the study's components (the built-in ones included).
    sha256 : str
        The study's hash (:attr:`vtrial.study.config.Study.sha256`).

    Returns
    -------
    str
        The page.
    """
    parts = [
        f"<p class='note'>study sha256 (with its model and data files): "
        f"<code>{html.escape(sha256)}</code></p>",
        f"<h2>{html.escape(Path(study_file).name)}</h2>",
        f"<pre>{html.escape(Path(study_file).read_text())}</pre>",
    ]
    for path in dict.fromkeys(str(p) for p in model_files):
        parts.append(f"<h2>model: {html.escape(Path(path).name)}</h2>")
        parts.append(f"<pre>{html.escape(Path(path).read_text())}</pre>")
    return page(f"Study {name}", "\n".join(parts))
