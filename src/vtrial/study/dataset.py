"""Studies driven by a dataset (``population.dataset``): the checks and defaults that
need both the study and the model.

:func:`dataset_inputs` reads the dataset and the parameters table
(:func:`vtrial.population.dataset.load_subjects`) and checks the sections that depend
on them before defaults are filled: ``population.size`` is the number of subjects,
``arms`` come from the dataset with ``doses: recorded`` and from the study with
``doses: arms``. :func:`fill_dataset_defaults` fills ``population.size``, the recorded
arms and ``simulation.end``. :func:`recorded_problems` checks what the engine
simulates of the records (:func:`vtrial.data.records.unsupported_problems`, lag against
``II``), and what a study run of them needs: one time line per subject (no resets),
observation times from the records. Every problem names the study key or the dataset
row and column.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vtrial.data.fitted import FittedModel
from vtrial.data.records import dose_routes, unsupported_problems
from vtrial.data.tables import cell_problems
from vtrial.engine.records import dose_terms
from vtrial.errors import Problem
from vtrial.model.spec import Model
from vtrial.population.dataset import (
    RECORDED_ARM,
    DatasetSource,
    Subjects,
    arm_labels,
    dataset_source,
    fit_etas,
    load_subjects,
)
from vtrial.study.fit import etas_key

__all__ = [
    "dataset_inputs",
    "fill_dataset_defaults",
    "fit_problems",
    "record_problems",
    "recorded_arms",
    "recorded_problems",
    "study_subjects",
    "twin_parameter_problems",
]

#: population keys that sample covariates, which a dataset's subjects already have
_SAMPLING_KEYS = (
    "covariates",
    "correlation",
    "resample",
    "inclusion",
    "exclusion",
    "min_acceptance",
)


def study_subjects(
    spec: DatasetSource, model: Model, base_dir: str | Path, source: str
) -> Subjects:
    """The subjects of ``spec`` read for ``model`` (dose compartments, parameters)."""
    return load_subjects(
        spec,
        base_dir,
        source,
        dose_compartments=dose_routes(model).compartments if model.takes_doses else (),
        parameters=tuple(model.parameters),
    )


def dataset_inputs(
    data: Mapping[str, Any], model: Model | None, source: str, base_dir: Path
) -> tuple[list[Problem], Subjects | None]:
    """Problems of a schema-valid study's dataset sections and the subjects (None
    without ``population.dataset``). Without a dataset: only that ``population.size``
    and ``arms`` are given."""
    pop = data["population"]
    spec = dataset_source(pop)
    out: list[Problem] = []

    def bad(where: str, msg: str) -> None:
        out.append(Problem(source, where, msg))

    if spec is None:
        if "size" not in pop:
            bad("population", "needs 'size' (patients per replicate), or a 'dataset' of patients")
        if "arms" not in data:
            bad(
                "(top level)",
                "'arms' is required (unless a population.dataset's recorded doses are simulated)",
            )
        return out, None
    has_arms = "arms" in data
    doses = pop["dataset"].get("doses", "arms" if has_arms else "recorded")
    if "size" in pop:
        bad(
            "population.size",
            f"a dataset's patients are its subjects: leave size out, got {pop['size']}",
        )
    for key in _SAMPLING_KEYS:
        if key in pop:
            bad(
                f"population.{key}",
                "the patients of population.dataset have their own covariates: "
                f"population.{key} does not apply",
            )
    if doses == "recorded" and has_arms:
        bad(
            "arms",
            "with population.dataset.doses 'recorded' the subjects keep their recorded "
            "doses and their arms come from population.dataset.arm_column: leave 'arms' "
            "out, or set doses: arms to give them the study's regimens",
        )
    if doses == "arms" and not has_arms:
        bad(
            "arms",
            "population.dataset.doses 'arms' gives the subjects the study's arms: add 'arms'",
        )
    if doses == "recorded" and data["study"].get("design") == "twin_crossover":
        bad(
            "study.design",
            "a twin crossover runs every subject under every arm: set "
            "population.dataset.doses: arms (recorded doses are one history per subject)",
        )
    if model is None or out:
        return out, None
    subjects = study_subjects(spec, model, base_dir, source)
    out += subjects.problems
    if subjects.dataset is not None and spec.arm_column is not None and doses == "arms" and not out:
        names = {str(a["name"]) for a in data["arms"]}
        labels = arm_labels(subjects.dataset, spec.arm_column)
        unknown = sorted(set(labels) - names)
        if unknown:
            bad(
                "population.dataset.arm_column",
                f"every value of {spec.arm_column!r} must name an arm {sorted(names)}, "
                f"got {unknown[:5]}",
            )
    return out, subjects


def fit_problems(
    data: Mapping[str, Any], fit: FittedModel | None, subjects: Subjects | None, source: str
) -> list[Problem]:
    """Problems of ``population.dataset.parameters: fit``: individual random effects
    (a ``.phi`` file of ETAs, not PHIs; Monolix's ``random_effects``; nlmixr2's
    ``ranef``) with a row for every subject."""
    where = "population.dataset.parameters"
    key = etas_key(data)
    if fit is None or fit.etas is None:
        return [
            Problem(
                source,
                where,
                f"'fit' takes each subject's ETAs from {key}: give model.from_fit with that file",
            )
        ]
    if fit.eta_kind != "ETA":
        return [
            Problem(
                source,
                where,
                f"'fit' needs individual ETAs; the phi file holds {fit.eta_kind}s (a "
                "mu-referenced fit): give the individual parameters as {table: PATH}",
            )
        ]
    if subjects is None or subjects.dataset is None:
        return []
    found, n_missing, first = fit_etas(subjects.dataset, fit.etas)
    if found is None:
        return [
            Problem(
                source,
                where,
                f"every subject of the dataset needs its ETAs in {key}: "
                f"{n_missing} have none (the first: ID {first})",
            )
        ]
    return []


def recorded_arms(subjects: Subjects, spec: DatasetSource) -> list[dict[str, Any]]:
    """The arms of ``doses: recorded``: each label of ``arm_column`` (sorted, numbers by
    value), or one arm ``recorded``; none gives doses (the records do)."""
    if spec.arm_column is None or subjects.dataset is None:
        labels = [RECORDED_ARM]
    else:
        found = set(arm_labels(subjects.dataset, spec.arm_column))
        labels = sorted(found, key=lambda s: (0, float(s), s) if _is_number(s) else (1, 0.0, s))
    return [{"name": name, "regimen": "none", "ratio": 1} for name in labels]


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def fill_dataset_defaults(d: dict[str, Any], subjects: Subjects) -> None:
    """Fill ``population.dataset``'s defaults, ``population.size`` (the subjects) and,
    for recorded doses, the arms and ``simulation.end`` (the last record)."""
    spec = d["population"]["dataset"]
    spec.setdefault("doses", "arms" if "arms" in d else "recorded")
    spec.setdefault("interpolation", "nocb")
    spec.setdefault("parameters", "iiv")
    spec.setdefault("columns", {})
    d["population"]["size"] = max(subjects.n, 1)
    if spec["doses"] == "recorded":
        d["arms"] = recorded_arms(subjects, DatasetSource.from_data(spec))
        if subjects.dataset is not None and len(subjects.dataset.records):
            last = float(subjects.dataset.records["TIME"].max())
            d.setdefault("simulation", {}).setdefault("end", max(last, 1.0))


def record_problems(model: Model, subjects: Subjects) -> list[Problem]:
    """Problems of simulating the dataset's records themselves (what the engine does
    with recorded doses, and what the twins' estimator does with any study's dataset):
    events the engine does not simulate (:func:`vtrial.data.records.unsupported_problems`,
    lag against ``II``) and resets (EVID 3, 4), naming row, line and column."""
    ds = subjects.dataset
    if ds is None:
        return []
    r = ds.records
    out = unsupported_problems(ds, dose_routes(model), dose_terms(model, ds, subjects.table))
    evid = r["EVID"].to_numpy()
    resets = np.flatnonzero(np.isin(evid, (3, 4)))
    if resets.size:
        rule = (
            "a reset (EVID 3, 4) starts a second time line, which a study's endpoints do "
            "not follow: simulate such records with vtrial.simulate(model, data=...)"
        )
        found = [(int(r["REC"].to_numpy()[i]) - 1, rule, int(evid[i])) for i in resets]
        out += cell_problems(ds.name, ds.first_line, ds.columns.get("EVID", "EVID"), found)
    return out


def twin_parameter_problems(d: Mapping[str, Any], source: str) -> list[Problem]:
    """Problems of ``population.dataset.parameters: twins`` (study data, defaults
    filled): the random effects come from the study's own twins stage, so it needs
    ``outputs.twins``; the twins' posteriors are conditional on the model's typical
    values, so ``study.uncertainty`` (other typical values and OMEGA per replicate)
    does not apply."""
    ds = d["population"].get("dataset") or {}
    if ds.get("parameters") != "twins":
        return []
    out: list[Problem] = []
    if (d.get("outputs") or {}).get("twins") is None:
        out.append(
            Problem(
                source,
                "population.dataset.parameters",
                "'twins' takes each subject's random effects from the study's twins stage: "
                "add outputs.twins (e.g. outputs.twins: {method: map}), got no outputs.twins",
            )
        )
    if d["study"].get("uncertainty") is not None:
        out.append(
            Problem(
                source,
                "study.uncertainty",
                "with population.dataset.parameters: twins the replicates draw each twin's "
                "posterior, which is conditional on the model's typical values and OMEGA: "
                "leave study.uncertainty out",
            )
        )
    return out


def recorded_problems(
    d: Mapping[str, Any], model: Model, subjects: Subjects, source: str
) -> list[Problem]:
    """Problems of simulating a study's subjects as recorded (``doses: recorded``)."""
    ds = subjects.dataset
    if ds is None:
        return []
    out = record_problems(model, subjects)
    r = ds.records
    end = float(d["simulation"]["end"])
    last = float(r["TIME"].max()) if len(r) else 0.0
    if last > end:
        out.append(
            Problem(
                source,
                "simulation.end",
                f"must cover the dataset's last record at {last:g} h, got {end:g}",
            )
        )
    obs = d["outputs"].get("observations")
    if obs is not None and (obs.get("times") or "every" in obs):
        out.append(
            Problem(
                source,
                "outputs.observations",
                "with recorded doses the observations are the dataset's observation records "
                "(EVID 0): give only 'outputs', not times or every",
            )
        )
    if d["model"].get("iov"):
        out.append(
            Problem(
                source,
                "model.iov",
                "inter-occasion variability is not simulated with recorded doses yet "
                "(the occasions of a dataset are its covariate changes)",
            )
        )
    return out
