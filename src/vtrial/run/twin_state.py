"""A patient's twin over time: created from the study's dataset, updated as new doses and
levels arrive, and rebuilt bit for bit at any step.

A twin lives in a folder of its own, on the machine that holds the patient's data:

- ``twin.json``: the study it was made under (path and SHA-256 of the study file and of
  its dataset), the subject's ``ID``, and one entry per step: the records it added
  (file, SHA-256, count), the SHA-256 of the subject's records up to that step, the
  starting estimate, and the result (``eta``, objective, Laplace covariance, standard
  errors, status, iterations);
- ``updates/NNNN.<ext>``: a byte-for-byte copy of each update's records file, so the
  folder alone (with the study) rebuilds every step.

Step 0 estimates the subject from its records in the study's dataset
(:func:`create_twin`). Each update (:func:`update_twin`) reads a records file in the
dataset's own format (its columns, its ``ID``), checks it exactly as the dataset is
checked, and more: every record is the twin's subject, none is earlier than the twin's
last record, the columns are the dataset's; the new records are appended to the
subject's, and the random effects are re-estimated **warm-started** from the previous
step's estimate (:func:`vtrial.estimation.map.fit_subject` ``start``). The estimate of
a step is a deterministic function of the study, the records up to it and its start,
all recorded, so :func:`rebuild_twin` recomputes every step and compares the bytes of
each estimate with the stored ones.

``twin.json`` is written last and atomically: an update that fails (bad records, a
study that changed since the twin was made) leaves the twin as it was. Logs name
records by count and hash only, never their values.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vtrial import __version__
from vtrial.data.dataset import Dataset, check_dataset
from vtrial.data.records import dose_routes
from vtrial.errors import ConfigError, Problem
from vtrial.estimation.map import SubjectFit, fit_subject
from vtrial.infra.hashing import file_sha256
from vtrial.run.io import atomic_path
from vtrial.run.twins import subject_cohort, twin_problems
from vtrial.study.config import Study

__all__ = [
    "TWIN_FORMAT",
    "create_twin",
    "load_twin",
    "rebuild_twin",
    "twin_fit",
    "twin_now",
    "update_twin",
]

log = logging.getLogger(__name__)

#: the format tag of ``twin.json``
TWIN_FORMAT = "vtrial-twin/1"
_JSON = "twin.json"


def _sha(frame: pd.DataFrame) -> str:
    """SHA-256 of records (their CSV text, float values written exactly)."""
    text = frame.to_csv(index=False, float_format="%.17g")
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(x: Any) -> Any:
    """A numpy scalar as the Python value JSON writes."""
    return x.item() if hasattr(x, "item") else x


def _dataset(study: Study) -> Dataset:
    subjects = study.subjects
    found = twin_problems(study)
    if found:
        raise ConfigError(found)
    assert subjects is not None
    assert subjects.dataset is not None
    return subjects.dataset


def _subject_records(ds: Dataset, subject_id: Any, source: str) -> pd.DataFrame:
    ids = ds.records["ID"]
    at = ids == subject_id
    if not at.any():
        shown = ", ".join(str(x) for x in ds.subjects[:5])
        raise ConfigError(
            [
                Problem(
                    source,
                    "subject",
                    f"no subject with this ID in {ds.name} (its IDs: {shown}, ...), "
                    f"got {subject_id!r}",
                )
            ]
        )
    return ds.records[at].reset_index(drop=True)


def twin_fit(study: Study, records: pd.DataFrame, start: np.ndarray | None) -> SubjectFit:
    """The MAP estimate of one subject whose records are ``records`` (the study's
    dataset's columns), from ``start``."""
    _dataset(study)
    data, prior = subject_cohort(study, records, subject=_index(study, records["ID"].iloc[0]))
    return fit_subject(data, prior, 0, start=start)


def _index(study: Study, subject_id: Any) -> int:
    """The subject's index in the study's dataset (file order)."""
    ds = _dataset(study)
    return int(np.flatnonzero(ds.subjects == subject_id)[0])


def _step(
    n: int, records: pd.DataFrame, start: np.ndarray | None, fit: SubjectFit, added: dict[str, Any]
) -> dict[str, Any]:
    return {
        "step": n,
        "added": added,
        "records": len(records),
        "records_sha256": _sha(records),
        "last_time": float(records["TIME"].max()),
        "start": None if start is None else [float(x) for x in start],
        "eta": [float(x) for x in fit.eta],
        "eta_hex": [float(x).hex() for x in fit.eta],
        "ofv": float(fit.ofv),
        "covariance": [[float(x) for x in row] for row in fit.covariance],
        "se": [float(x) for x in fit.se],
        "status": fit.status,
        "n_iter": fit.n_iter,
        "vtrial": __version__,
    }


def _write(folder: Path, state: Mapping[str, Any]) -> None:
    with atomic_path(folder / _JSON) as tmp:
        tmp.write_text(json.dumps(state, indent=1, allow_nan=True) + "\n")


def create_twin(study: Study, subject_id: Any, folder: str | Path) -> dict[str, Any]:
    """Make the twin of dataset subject ``subject_id`` in ``folder`` (step 0: its records
    in the study's dataset, estimated from the typical patient).

    Raises
    ------
    ConfigError
        The study cannot estimate twins, the subject is not in the dataset, or
        ``folder`` already holds a twin (nothing is overwritten).
    """
    folder = Path(folder)
    if (folder / _JSON).exists():
        raise ConfigError(
            [Problem(str(folder), _JSON, "already holds a twin: update it, or choose a new folder")]
        )
    ds = _dataset(study)
    records = _subject_records(ds, subject_id, study.source)
    fit = twin_fit(study, records, None)
    state = {
        "format": TWIN_FORMAT,
        "study": {"path": str(study.source), "sha256": file_sha256(study.source)},
        "dataset": {"path": ds.name, "sha256": ds.sha256},
        "subject": _plain(records["ID"].iloc[0]),
        "names": list(study.variability.omega_names),
        "steps": [_step(0, records, None, fit, {"from": "dataset"})],
    }
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder, state)
    log.info(
        "twin created: %d records (sha256 %s), status %s",
        len(records),
        state["steps"][0]["records_sha256"][:12],
        fit.status,
    )
    return state


def load_twin(folder: str | Path) -> dict[str, Any]:
    """The state of the twin in ``folder`` (``twin.json``), checked for its format."""
    path = Path(folder) / _JSON
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError([Problem(str(path), "", f"cannot read the twin: {exc}")]) from exc
    if state.get("format") != TWIN_FORMAT:
        raise ConfigError(
            [Problem(str(path), "format", f"must be {TWIN_FORMAT}, got {state.get('format')!r}")]
        )
    return state


def _same_study(study: Study, state: Mapping[str, Any], where: str) -> None:
    """Refuse a study (or dataset) other than the one the twin was made under."""
    ds = _dataset(study)
    problems = []
    sha = file_sha256(study.source)
    if sha != state["study"]["sha256"]:
        problems.append(
            Problem(
                study.source,
                "",
                f"is not the study the twin in {where} was made under (SHA-256 "
                f"{state['study']['sha256'][:12]}..., got {sha[:12]}...): a twin is "
                "updated and rebuilt under its own study",
            )
        )
    if ds.sha256 != state["dataset"]["sha256"]:
        problems.append(
            Problem(
                ds.name,
                "",
                f"is not the dataset the twin in {where} was made from (SHA-256 "
                f"{state['dataset']['sha256'][:12]}..., got {ds.sha256[:12]}...)",
            )
        )
    if problems:
        raise ConfigError(problems)


def _read_update(
    study: Study, path: Path, subject: Any, columns: list[str], last_time: float
) -> pd.DataFrame:
    """An update's records, checked (see the module docstring)."""
    spec = study.population.dataset
    assert spec is not None
    routes = dose_routes(study.model)
    new, problems = check_dataset(
        path, columns=dict(spec.columns), dose_compartments=routes.compartments
    )
    if new is None:
        raise ConfigError(problems)
    problems = twin_problems(study, dataset=new)
    r = new.records
    line = new.first_line
    for i in np.flatnonzero(r["ID"].to_numpy() != subject):
        rec = int(r["REC"].iloc[i])
        problems.append(
            Problem(
                str(path),
                f"row {rec} (line {line + rec - 1}), column ID"
                if line
                else f"row {rec}, column ID",
                f"an update holds the twin's subject only ({subject!r}), "
                f"got {_plain(r['ID'].iloc[i])!r}",
            )
        )
    for i in np.flatnonzero(r["TIME"].to_numpy(dtype=np.float64) < last_time):
        rec = int(r["REC"].iloc[i])
        problems.append(
            Problem(
                str(path),
                f"row {rec} (line {line + rec - 1}), column TIME"
                if line
                else f"row {rec}, column TIME",
                f"an update's records come after the twin's last record ({last_time:g} h), "
                f"got {float(r['TIME'].iloc[i]):g}",
            )
        )
    if sorted(r.columns) != sorted(columns):
        problems.append(
            Problem(
                str(path),
                "columns",
                f"an update has the dataset's columns ({sorted(columns)}), got {sorted(r.columns)}",
            )
        )
    if problems:
        raise ConfigError(problems)
    return r[columns]


def _records_at(study: Study, folder: Path, state: Mapping[str, Any], step: int) -> pd.DataFrame:
    """The subject's records up to ``step``, from the dataset and the stored updates."""
    ds = _dataset(study)
    records = _subject_records(ds, state["subject"], study.source)
    for entry in state["steps"][1 : step + 1]:
        copy = folder / entry["added"]["copy"]
        sha = file_sha256(copy)
        if sha != entry["added"]["sha256"]:
            raise ConfigError(
                [Problem(str(copy), "", f"changed since step {entry['step']} stored it (SHA-256)")]
            )
        new = _read_update(
            study, copy, state["subject"], list(records.columns), float(records["TIME"].max())
        )
        records = pd.concat([records, new], ignore_index=True)
    return records


def update_twin(study: Study, folder: str | Path, new_records: str | Path) -> dict[str, Any]:
    """Append the records of ``new_records`` (a file in the dataset's format) to the twin
    in ``folder`` and re-estimate it, warm-started from its last estimate.

    Raises
    ------
    ConfigError
        A study or dataset other than the twin's, or records that break a rule (each
        named by its file, row and column), before anything is estimated; the twin is
        left as it was.
    """
    folder = Path(folder)
    state = load_twin(folder)
    _same_study(study, state, str(folder))
    records = _records_at(study, folder, state, len(state["steps"]) - 1)
    path = Path(new_records)
    new = _read_update(
        study, path, state["subject"], list(records.columns), float(records["TIME"].max())
    )
    records = pd.concat([records, new], ignore_index=True)
    last = state["steps"][-1]
    start = np.asarray(last["eta"], dtype=np.float64) if np.all(np.isfinite(last["eta"])) else None
    fit = twin_fit(study, records, start)
    n = len(state["steps"])
    copy = Path("updates") / f"{n:04d}{path.suffix}"
    (folder / "updates").mkdir(exist_ok=True)
    with atomic_path(folder / copy) as tmp:
        shutil.copyfile(path, tmp)
    sha = file_sha256(path)
    added = {"file": path.name, "copy": str(copy), "sha256": sha, "records": len(new)}
    state["steps"].append(_step(n, records, start, fit, added))
    _write(folder, state)
    log.info(
        "twin updated: step %d, %d new records (sha256 %s), status %s",
        n,
        len(new),
        sha[:12],
        fit.status,
    )
    return state


def twin_now(study: Study, folder: str | Path) -> tuple[pd.DataFrame, np.ndarray | None, int]:
    """The twin in ``folder`` as of its last step: the subject's records, the start its
    last estimate was found from (so that estimating again gives the same bits), and
    the subject's index in the study's dataset.

    Raises
    ------
    ConfigError
        As :func:`update_twin`.
    """
    folder = Path(folder)
    state = load_twin(folder)
    _same_study(study, state, str(folder))
    last = state["steps"][-1]
    records = _records_at(study, folder, state, last["step"])
    start = None if last["start"] is None else np.asarray(last["start"], dtype=np.float64)
    return records, start, _index(study, state["subject"])


def rebuild_twin(study: Study, folder: str | Path) -> list[dict[str, Any]]:
    """Recompute every step of the twin in ``folder`` from its inputs; one row per step:
    ``step``, ``records_sha256`` match, ``eta`` bit-identical, and ``ofv`` recomputed.

    Raises
    ------
    ConfigError
        A study or dataset other than the twin's, or a stored update that changed.
    """
    folder = Path(folder)
    state = load_twin(folder)
    _same_study(study, state, str(folder))
    out = []
    for entry in state["steps"]:
        records = _records_at(study, folder, state, entry["step"])
        start = None if entry["start"] is None else np.asarray(entry["start"], dtype=np.float64)
        fit = twin_fit(study, records, start)
        out.append(
            {
                "step": entry["step"],
                "records_match": _sha(records) == entry["records_sha256"],
                "identical": [float(x).hex() for x in fit.eta] == entry["eta_hex"],
                "ofv": float(fit.ofv),
            }
        )
    return out
