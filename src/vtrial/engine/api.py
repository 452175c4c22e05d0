"""``vtrial.simulate``: patients given as a table under one regimen, or a dataset's
subjects as recorded.

Both paths run the checks a study file gets before anything is simulated: a regimen
is checked against the study schema's ``regimen`` and the phase rules of
:func:`vtrial.protocol.dosing.phase_problems` (:class:`vtrial.errors.ConfigError`),
a dataset by the dataset reader's rules and the model's dose compartments
(:class:`vtrial.errors.DatasetError`, :mod:`vtrial.engine.records`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pandas as pd

from vtrial.data.dataset import Dataset
from vtrial.engine.host import Tolerances, labels, run_kernel
from vtrial.engine.interface import METHODS, STATUS
from vtrial.engine.records import simulate_records
from vtrial.errors import ConfigError, Problem
from vtrial.infra.yamlsafe import package_schema
from vtrial.model.residual import add_observations
from vtrial.model.schema_errors import best_errors, key_path, schema_message
from vtrial.model.spec import Model
from vtrial.protocol.dosing import event_table, phase_problems, regimen_phases

__all__ = ["regimen_problems", "simulate"]


def regimen_problems(regimen: Any, where: str = "regimen") -> list[Problem]:
    """Problems of a regimen given to :func:`simulate`, as a study file's arm would get.

    Examples
    --------
    >>> [str(p) for p in regimen_problems({"route": "oral", "dose": -1})]
    ['<regimen>: regimen.dose: must be > 0, got -1']
    """
    if regimen is None:  # no doses (the API's spelling of a study file's "none")
        return []
    study = package_schema("study")
    schema = {"$defs": study["$defs"], "$ref": "#/$defs/regimen"}
    # the study loader's messages (a oneOf error gives the errors of the fitting branch)
    errors = best_errors(list(jsonschema.Draft202012Validator(schema).iter_errors(regimen)))
    if errors:
        return [
            Problem("<regimen>", key_path([where, *e.absolute_path]), schema_message(e))
            for e in sorted(errors, key=lambda e: [str(x) for x in e.absolute_path])
        ]
    if regimen == "none":
        return []
    phases = [regimen] if isinstance(regimen, Mapping) else list(regimen)
    out: list[Problem] = []
    for k, ph in enumerate(phases):
        here = where if isinstance(regimen, Mapping) else f"{where}[{k}]"
        for message in phase_problems(ph, here):
            key, _, rule = message.partition(": ")
            out.append(Problem("<regimen>", key, rule))
    return out


def simulate(
    model: Model,
    parameters: pd.DataFrame | None = None,
    regimen: Any = None,
    times: Sequence[float] | np.ndarray | None = None,
    *,
    data: pd.DataFrame | Dataset | str | Path | None = None,
    columns: Mapping[str, str] | None = None,
    interpolation: str = "nocb",
    outputs_at_dose: str = "before",
    tolerances: Tolerances | None = None,
    residual_error: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Simulate patients given as a table, or a dataset's subjects as recorded.

    Parameters
    ----------
    model : Model
        A composed model (:func:`vtrial.build_model` or :func:`vtrial.model.spec.compose`).
    parameters : DataFrame
        One row per patient; columns named like model parameters (missing ones take
        their typical value); optional ``patient_id``, ``weight`` (kg) and ``bsa`` (m²)
        for ``mg/kg`` and ``mg/m2`` doses. With ``data``: optional, one row per ``ID``
        (or one row for all), see :func:`vtrial.engine.records.simulate_records`.
    regimen : mapping or list of mappings or None
        A regimen (the ``regimen`` of a study arm, :mod:`vtrial.protocol.dosing`), the
        same for every patient, checked as a study file's is.
    times : array_like
        Output times (h), sorted; the simulation runs from ``min(0, times[0])``.
        An output at a dose time is taken before that dose, unless ``outputs_at_dose``
        is ``"after"``.
    data : DataFrame, Dataset, str or Path, optional
        NONMEM-style records instead of ``regimen`` and ``times``: every subject is
        simulated with its own doses and the outputs come back on its records, as
        mrgsolve's ``mrgsim(data=)`` (:func:`vtrial.engine.records.simulate_records`).
    columns : mapping, optional
        With ``data``: standard item -> the dataset's own column name.
    interpolation : {"nocb", "locf"}
        With ``data``: when a parameter column that changes within a subject takes its
        new value (NONMEM's ``"nocb"`` by default, rxode2's ``"locf"``).
    outputs_at_dose : {"before", "after"}
        With a regimen: an output at a dose time is taken before the dose (default,
        mrgsolve's) or after it. With ``data`` the record order decides.
    residual_error : mapping, optional
        Output -> residual error model, as ``model.residual_error`` of a study file
        (e.g. ``{"CP": {"proportional": 0.15, "additive": 0.05, "lloq": 0.01}}``):
        adds ``<OUTPUT>_obs`` (and ``<OUTPUT>_blq`` with an ``lloq``) columns, see
        :func:`vtrial.model.residual.add_observations`. Needs integer ``patient_id`` >= 1.
        Not with ``data``.
    seed : int
        Seed of the residual error draws (keyed by patient, time and output).

    Returns
    -------
    DataFrame
        Columns ``patient_id``, ``time``, one column per model output,
        ``solver_status`` and ``solver`` (method used), then the observed values if
        ``residual_error`` is given; ``len(parameters) * len(times)`` rows. With
        ``data``: one row per record (:func:`vtrial.engine.records.simulate_records`).

    Raises
    ------
    ConfigError
        A regimen that a study file could not hold either.
    DatasetError
        Every problem of ``data``.

    Examples
    --------
    >>> import pandas as pd
    >>> from vtrial import build_model
    >>> m = build_model({"pk": "pk_1cmt"})
    >>> out = simulate(m, pd.DataFrame({"CL": [5.0], "V1": [50.0]}),
    ...                {"route": "iv_bolus", "dose": 100}, [0.0, 1.0, 10.0])
    >>> [round(x, 6) for x in out["CP"]]  # 0 before the dose at t=0, then 2 exp(-0.1 t)
    [0.0, 1.809675, 0.735759]
    """
    if data is not None:
        if regimen is not None or times is not None or residual_error is not None:
            raise ValueError("data: give a dataset, or a regimen and times, not both")
        return simulate_records(
            model,
            data,
            parameters,
            columns=columns,
            interpolation=interpolation,
            tolerances=tolerances,
        )
    if parameters is None or times is None:
        raise ValueError("simulate: give parameters, regimen and times, or data")
    problems = regimen_problems(regimen)
    if problems:
        raise ConfigError(problems)
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or times.size == 0 or np.any(np.diff(times) <= 0):
        raise ValueError("times: must be a non-empty strictly increasing 1-D array")
    n = len(parameters)
    start = min(0.0, float(times[0]))
    grid = np.unique(np.concatenate([[start], times]))
    if grid.size < 2:
        grid = np.array([start, start + 1.0])
    events = event_table([regimen_phases(regimen)])
    scale = np.ones((n, 3))
    if "weight" in parameters:
        scale[:, 1] = parameters["weight"].to_numpy(dtype=np.float64)
    if "bsa" in parameters:
        scale[:, 2] = parameters["bsa"].to_numpy(dtype=np.float64)
    params = {
        c: parameters[c].to_numpy(dtype=np.float64) for c in model.parameters if c in parameters
    }
    outs = list(model.outputs)
    res = run_kernel(
        model,
        params,
        n=n,
        events=events,
        arm=np.zeros(n, dtype=np.int64),
        dose_scale=scale,
        grid=grid,
        store_times=times,
        store_outputs=outs,
        tolerances=tolerances,
        store_dtype=np.float64,
        outputs_at_dose=outputs_at_dose,
    )
    ids = (
        parameters["patient_id"].to_numpy()
        if "patient_id" in parameters
        else np.arange(1, n + 1, dtype=np.int64)
    )
    table: dict[str, Any] = {
        "patient_id": np.repeat(ids, times.size),
        "time": np.tile(times, n),
    }
    for j, o in enumerate(outs):
        table[o] = res.store[:, :, j].astype(np.float64).ravel()
    out = pd.DataFrame(table)
    out["solver_status"] = np.repeat(labels(res.status, STATUS), times.size)
    out["solver"] = np.repeat(labels(res.method, METHODS), times.size)
    if residual_error is not None:
        out = add_observations(out, residual_error, seed=seed, outputs=outs)
    return out
