"""Study files: loading, validation (schema, then semantics) and defaults.

:func:`load_study` reads a YAML study, checks it against the JSON schema
(``vtrial/schemas/study.schema.yaml``, ``additionalProperties: false`` at every level)
and then semantically (names defined, OMEGA positive semi-definite, regimens feasible,
expressions safe, ...). Every problem is collected and reported at once in a
:class:`~vtrial.errors.ConfigError`, each naming the file, the key path, the rule and
the value found. Nothing is computed or written before the study is valid.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml

from vtrial.analysis.success import SuccessCriterion, criteria, fill_success_defaults
from vtrial.analysis.success import spec_problems as success_problems
from vtrial.data.fitted import FittedModel
from vtrial.engine.grid import Simulation, Timecourse, evaluation_grid, store_times
from vtrial.errors import ConfigError, Problem
from vtrial.estimation.twinspec import TwinOutput, twin_output_problems
from vtrial.infra.yamlsafe import load_yaml, package_schema, yaml_problem
from vtrial.model.residual import Observations, observation_problems
from vtrial.model.schema_errors import best_errors, key_path, schema_message
from vtrial.model.spec import Model, build_model, check_model_section
from vtrial.population.dataset import Subjects
from vtrial.population.design import design_problems
from vtrial.population.resample import input_files
from vtrial.population.sampling import variability_problems
from vtrial.population.spec import (
    Design,
    Population,
    Uncertainty,
    Variability,
    design_from_data,
    uncertainty_from_data,
    variability_from_data,
)
from vtrial.population.uncertainty import uncertainty_problems
from vtrial.population.validate import population_problems
from vtrial.protocol.arms import Arm, arms_from_data
from vtrial.protocol.dosing import (
    DOSE_UNITS,
    EventTable,
    Phase,
    event_table,
    occasion_starts,
    phase_problems,
    regimen_phases,
    schedule_warnings,
)
from vtrial.protocol.rules import RuleProgram, rule_problems, rule_program
from vtrial.study.dataset import (
    dataset_inputs,
    fill_dataset_defaults,
    fit_problems,
    record_problems,
    recorded_problems,
    study_subjects,
    twin_parameter_problems,
)
from vtrial.study.execution import execution_problems
from vtrial.study.fit import fit_files, load_fit, stand_in, with_fit
from vtrial.trial.adverse import (
    AdverseEvent,
    adverse_event_problems,
    adverse_events_from_data,
    threshold_gradings,
)
from vtrial.trial.dropout import Dropout, dropout_from_data
from vtrial.trial.endpoints import (
    MAX_PROBE_BYTES,
    endpoint_kinds,
    endpoint_units,
    trial_probe_times,
)
from vtrial.trial.endpoints import probe_times as endpoint_probe_times
from vtrial.trial.kinds import EndpointKind
from vtrial.trial.spec import Endpoint, Exposure, endpoints_from_data
from vtrial.trial.validate import endpoint_section_problems, fill_defaults, trial_problems


def _schema() -> dict[str, Any]:
    return package_schema("study")


def schema_path() -> Path:
    """Path of the study JSON schema shipped with the package."""
    return Path(str(resources.files("vtrial").joinpath("schemas/study.schema.yaml")))


@dataclass(frozen=True)
class Study:
    """A validated study with its defaults filled in.

    Attributes
    ----------
    data : dict
        The study as plain data (JSON-compatible), defaults filled in.
    source : str
        The file it came from (``"<dict>"`` for in-memory studies).
    base_dir : Path
        Folder against which relative paths in the study are resolved.
    fit : FittedModel or None
        The fitted model of ``model.from_fit`` (:func:`vtrial.study.fit.load_fit`):
        typical values, OMEGA, SIGMA, THETA covariance and, with a ``phi`` file (Monolix:
        ``random_effects``, nlmixr2: ``ranef``), each subject's ETAs (``fit.etas``);
        None without ``from_fit``.
    effective : dict
        The study as it is run: ``data`` with the fit's values written in
        (:func:`vtrial.study.fit.with_fit`; ``data`` itself without a fit). The typed
        sections and the model are built from it; ``data`` (``from_fit`` as written)
        is what is hashed and recorded, with the fitted files (:attr:`data_files`).
    """

    data: dict[str, Any]
    source: str
    base_dir: Path
    fit: FittedModel | None = field(default=None, repr=False, compare=False)
    effective: dict[str, Any] = field(init=False, repr=False, compare=False)
    #: the typed sections, built from ``data`` at construction
    arms: tuple[Arm, ...] = field(init=False, repr=False, compare=False)
    adverse_events: Mapping[str, AdverseEvent] = field(init=False, repr=False, compare=False)
    endpoints: Mapping[str, Endpoint] = field(init=False, repr=False, compare=False)
    dropout: Dropout | None = field(init=False, repr=False, compare=False)
    success: tuple[SuccessCriterion, ...] = field(init=False, repr=False, compare=False)
    simulation: Simulation = field(init=False, repr=False, compare=False)
    timecourse: Timecourse = field(init=False, repr=False, compare=False)
    exposure: Exposure = field(init=False, repr=False, compare=False)
    observations: Observations = field(init=False, repr=False, compare=False)
    population: Population = field(init=False, repr=False, compare=False)
    design: Design = field(init=False, repr=False, compare=False)
    variability: Variability = field(init=False, repr=False, compare=False)
    uncertainty: Uncertainty = field(init=False, repr=False, compare=False)
    #: ``outputs.twins`` (None without it): the workflow estimates every subject's twin
    twins: TwinOutput | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        d = with_fit(self.data, self.fit) if self.fit is not None else self.data
        object.__setattr__(self, "effective", d)
        object.__setattr__(self, "arms", arms_from_data(d["arms"]))
        object.__setattr__(self, "adverse_events", adverse_events_from_data(d["adverse_events"]))
        object.__setattr__(self, "population", Population.from_data(d["population"]))
        object.__setattr__(self, "design", design_from_data(d))
        object.__setattr__(self, "variability", variability_from_data(d["model"]))
        object.__setattr__(self, "endpoints", endpoints_from_data(d["endpoints"]))
        object.__setattr__(self, "dropout", dropout_from_data(d.get("dropout")))
        object.__setattr__(self, "success", criteria(d))
        object.__setattr__(self, "simulation", Simulation.from_data(d["simulation"]))
        tc = Timecourse.from_data(d["outputs"]["timecourse"])
        object.__setattr__(self, "timecourse", tc)
        object.__setattr__(self, "exposure", Exposure.from_data(d["exposure"]))
        obs = Observations.from_data(
            d["outputs"].get("observations"),
            d["model"].get("residual_error", {}),
            self.end,
        )
        object.__setattr__(self, "observations", obs)
        object.__setattr__(self, "uncertainty", uncertainty_from_data(d))
        object.__setattr__(self, "twins", TwinOutput.from_data(d["outputs"]))

    @property
    def name(self) -> str:
        return str(self.data["study"]["name"])

    @property
    def seed(self) -> int:
        return int(self.data["study"]["seed"])

    @property
    def replicates(self) -> int:
        return int(self.data["study"]["replicates"])

    @property
    def size(self) -> int:
        """Patients per replicate trial."""
        return self.population.size

    @property
    def n_patients(self) -> int:
        """Patients in the whole study (all replicates)."""
        return self.size * self.replicates

    @property
    def arm_names(self) -> list[str]:
        return [a.name for a in self.arms]

    @property
    def end(self) -> float:
        """End of the simulation (h)."""
        return self.simulation.end

    @property
    def control_arm(self) -> str | None:
        c = self.data["study"].get("control_arm")
        return str(c) if c is not None else None

    @property
    def execution(self) -> dict[str, Any]:
        return dict(self.data["execution"])

    @cached_property
    def model(self) -> Model:
        """The composed model."""
        return build_model(self.effective["model"], base_dir=self.base_dir, source=self.source)

    @property
    def warnings(self) -> list[Problem]:
        """Plausibility warnings (valid, but almost always a slip): overlapping
        infusions, doses more often than hourly
        (:func:`vtrial.protocol.dosing.schedule_warnings`). ``vtrial validate`` prints
        them and the population stage logs them."""
        out: list[Problem] = []
        for i, arm in enumerate(self.arms):
            for where, message in schedule_warnings(arm.phases, f"arms[{i}].regimen"):
                out.append(Problem(self.source, where, message))
        return out

    def arm_phases(self) -> list[list[Phase]]:
        """Dosing phases of every arm, in arm order."""
        return [list(a.phases) for a in self.arms]

    def arm_occasions(self) -> list[list[float]]:
        """Start times (h) of occasions 1, 2, ... of every arm (none without IOV)."""
        iov = self.effective["model"].get("iov")
        if not iov:
            return [[] for _ in self.effective["arms"]]
        return [occasion_starts(ph, iov["occasions"]) for ph in self.arm_phases()]

    def events(self) -> EventTable:
        """Dose, trough-marker, occasion and decision events of every arm (built once)."""
        return self._events

    @cached_property
    def _events(self) -> EventTable:
        program = self.rule_program
        decisions = program.decisions if program is not None else None
        return event_table(self.arm_phases(), self.arm_occasions(), decisions)

    @cached_property
    def rule_program(self) -> RuleProgram | None:
        """Kernel inputs of the arms' dose-modification rules (None if none)."""
        gradings = threshold_gradings(self.adverse_events)
        return rule_program(self.arms, list(self.model.outputs), gradings, self.end)

    @property
    def has_dose_ledger(self) -> bool:
        """True if an arm declares dose modification or adherence (doses/ output)."""
        return any(a.modification or a.adherence for a in self.arms)

    @cached_property
    def sha256(self) -> str:
        """Hash of the canonical study (defaults filled), of every model file used and
        of the data files (:attr:`data_files`: the covariance file of
        ``study.uncertainty``, the covariate table of ``population.resample``, the
        fitted files of ``model.from_fit``)."""
        h = hashlib.sha256(canonical_json(self.data).encode())
        for comp in self.model.components:
            h.update(Path(comp.source).read_bytes())
        for path in self.data_files:
            h.update(path.read_bytes())
        return h.hexdigest()

    @property
    def data_files(self) -> list[Path]:
        """Data files the study reads besides its model files, in hashing order: the
        covariance CSV of ``study.uncertainty.theta`` (if it names one), the
        covariate table of ``population.resample``, the fitted files of
        ``model.from_fit`` (``ext``, ``cov``, ``phi``; or those of ``monolix`` or
        ``nlmixr2``), the dataset of
        ``population.dataset`` and its parameters table. The run manifest records their
        SHA-256 (``inputs.data``), and a change of any reruns the workflow."""
        theta = self.uncertainty.theta
        cov = theta.covariance if theta is not None else None
        files = [self.base_dir / cov] if isinstance(cov, str) else []
        files += input_files(self.population.resample, self.base_dir)
        files += fit_files(self.data, self.base_dir)
        ds = self.population.dataset
        if ds is not None:
            files += [self.base_dir / p for p in (ds.path, ds.table) if p is not None]
        return files

    @property
    def subjects(self) -> Subjects | None:
        """The checked subjects of ``population.dataset`` (None without one); read
        once per process (:func:`vtrial.population.dataset.load_subjects` caches)."""
        spec = self.population.dataset
        if spec is None:
            return None
        return study_subjects(spec, self.model, self.base_dir, self.source)

    @property
    def recorded(self) -> bool:
        """Whether the patients are simulated with their recorded doses
        (``population.dataset.doses: recorded``)."""
        ds = self.population.dataset
        return ds is not None and ds.recorded

    def grid(self) -> np.ndarray:
        """Evaluation grid (h): regular grid, stored time points and endpoint times
        (:func:`vtrial.engine.grid.evaluation_grid`)."""
        step = self.simulation.grid
        return evaluation_grid(self.end, step, self.store_times(), self.probe_times())

    def store_times(self) -> np.ndarray:
        """Time points of the stored time courses (h)."""
        return store_times(self.end, self.timecourse.every)

    def observation_times(self) -> np.ndarray:
        """Sampling times of ``outputs.observations`` (h), sorted, unique; empty if none."""
        return self.observations.times

    def probe_times(self) -> list[float]:
        """Times at which every output is recorded for endpoints (baseline 0 first;
        :func:`vtrial.trial.endpoints.probe_times`)."""
        return endpoint_probe_times(
            self.endpoints, self.dropout, self.end, self.observation_times()
        )

    def endpoint_kinds(self) -> dict[str, EndpointKind]:
        """Endpoint name -> ``"continuous"``, ``"binary"`` (responders),
        ``"categorical"`` (``best_response``) or ``"time_to_event"``."""
        return endpoint_kinds(self.endpoints)

    def endpoint_units(self) -> dict[str, str]:
        """Endpoint name -> unit of its patient-table value
        (:func:`vtrial.trial.endpoints.endpoint_units`)."""
        return endpoint_units(self.endpoints, self.model.output_units)


def _non_finite(data: Any, path: list[Any]) -> list[tuple[str, float]]:
    """Key paths of non-finite numbers (.inf, .nan) anywhere in plain data."""
    out: list[tuple[str, float]] = []
    if isinstance(data, float) and not np.isfinite(data):
        out.append((key_path(path), data))
    elif isinstance(data, Mapping):
        for k, v in data.items():
            out += _non_finite(v, [*path, k])
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _non_finite(v, [*path, i])
    return out


def canonical_json(data: Any) -> str:
    """Deterministic JSON text of plain data (sorted keys, no spaces)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def default_data(
    data: Mapping[str, Any], model: Model | None, subjects: Subjects | None = None
) -> dict[str, Any]:
    """Fill in defaults (documented in config/README.md); ``subjects``: those of
    ``population.dataset`` (:func:`vtrial.study.dataset.fill_dataset_defaults`)."""
    d = copy.deepcopy(dict(data))
    if subjects is not None:
        fill_dataset_defaults(d, subjects)
    d["study"].setdefault("replicates", 1)
    d["study"].setdefault("control_arm", None)
    d["study"].setdefault("description", "")
    pop = d["population"]
    pop.setdefault("covariates", {})
    pop.setdefault("derived", [])
    d["model"].setdefault("parameters", {})
    d["model"].setdefault("iiv", {})
    d["model"]["iiv"].setdefault("omega", {})
    d["model"]["iiv"].setdefault("correlations", {})
    d["model"]["iiv"].setdefault("distribution", {})
    if d["model"].get("iov"):
        d["model"]["iov"].setdefault("occasions", "cycles")
    for arm in d["arms"]:
        arm.setdefault("ratio", 1)
    last_dose = 0.0
    for arm in d["arms"]:
        for ph in regimen_phases(arm["regimen"]):
            times = ph.dose_times()
            if times.size:
                last_dose = max(last_dose, float(times[-1]) + ph.duration)
    sim = d.setdefault("simulation", {})
    sim.setdefault("end", last_dose + 168.0 if last_dose > 0 else 168.0)
    sim.setdefault("grid", 1.0)
    sim.setdefault("rtol", 1e-6)
    sim.setdefault("atol", 1e-9)
    sim.setdefault("max_steps", 200_000)
    outs = list(model.outputs) if model is not None else []
    exp = d.setdefault("exposure", {})
    if "output" not in exp and "CP" in outs:
        exp["output"] = "CP"
    d.setdefault("adverse_events", {})
    d.setdefault("endpoints", {})
    o = d.setdefault("outputs", {})
    tc = o.setdefault("timecourse", {})
    tc.setdefault("every", max(float(sim["grid"]), float(sim["end"]) / 200.0))
    tc.setdefault("outputs", outs)
    tc.setdefault("patients", "all")
    if "observations" in o:  # no defaults without it: existing studies keep their sha256
        o["observations"].setdefault("times", [])
        if "every" in o["observations"]:
            o["observations"].setdefault("from", 0.0)
            o["observations"].setdefault("to", float(sim["end"]))
    if "twins" in o:  # likewise
        o["twins"].setdefault("method", "map")
    ex = d.setdefault("execution", {})
    ex.setdefault("shards", 1)
    ex.setdefault("workers", 2)
    ex.setdefault("chunk_size", 2000)
    ex.setdefault("scheduler_address", None)
    fill_defaults(d)  # auec, time_to_event, dropout (vtrial.trial.endpoints)
    fill_success_defaults(d)  # vtrial.analysis.success
    return d


def load_study(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> Study:
    """Load, validate and complete a study file.

    Parameters
    ----------
    path : str or Path
        The study YAML file.
    overrides : mapping, optional
        Deep-merged into the file's content before validation (e.g. execution
        settings from the command line).

    Returns
    -------
    Study

    Raises
    ------
    ConfigError
        Every problem found, each naming the file, key path, rule and value.
    """
    p = Path(path)
    src = str(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError([Problem(src, "", f"cannot read the study file: {exc}")]) from exc
    try:
        data = load_yaml(text, name=src)
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(src, *yaml_problem(exc))]) from exc
    if overrides:
        data = deep_merge(data if isinstance(data, dict) else {}, overrides)
    return study_from_dict(data, source=src, base_dir=p.resolve().parent)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``over`` into a copy of ``base`` (mappings merge, others replace)."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def study_from_dict(
    data: Any, *, source: str = "<dict>", base_dir: str | Path | None = None
) -> Study:
    """Validate a study given as plain data; see :func:`load_study`.

    Examples
    --------
    The minimal study of ``config/README.md`` (everything else takes its default):

    >>> study = study_from_dict({
    ...     "study": {"name": "minimal", "seed": 1},
    ...     "population": {"size": 4},
    ...     "model": {"pk": "pk_1cmt"},
    ...     "arms": [{"name": "single_dose", "regimen": {"route": "oral", "dose": 100}}],
    ... })
    >>> study.name, study.n_patients, study.arm_names, list(study.model.outputs)
    ('minimal', 4, ['single_dose'], ['CP'])

    Every problem is reported at once, with where it is and the value found:

    >>> study_from_dict({"study": {"name": "x", "seed": 1}, "population": {"size": -4},
    ...                  "model": {"pk": "pk_1cmt"}, "arms": []})
    Traceback (most recent call last):
    ...
    vtrial.errors.ConfigError: 2 problems found:
      - <dict>: arms: ...
      - <dict>: population.size: must be >= 1, got -4
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if not isinstance(data, Mapping):
        raise ConfigError(
            [Problem(source, "", f"a study must be a mapping, got {type(data).__name__}")]
        )
    validator = jsonschema.Draft202012Validator(_schema())
    errs = best_errors(list(validator.iter_errors(data)))
    problems = [
        Problem(source, key_path(e.absolute_path), schema_message(e))
        for e in sorted(errs, key=lambda e: [str(x) for x in e.absolute_path])
    ]
    problems += [
        Problem(source, where, f"must be a finite number, got {value}")
        for where, value in _non_finite(data, [])
    ]
    if problems:
        raise ConfigError(_dedupe(problems))
    model, model_problems = check_model_section(data["model"], base_dir=base)
    # model.from_fit: the fitted values are written into the study data (vtrial.study.fit)
    fit, fit_found = load_fit(data, model, source, base)
    problems += fit_found
    if fit is not None and model is not None:  # the model with the fitted typical values
        model, model_problems = check_model_section(with_fit(data, fit)["model"], base_dir=base)
    problems += [Problem(source, f"model.{w}" if w else "model", m) for w, m in model_problems]
    # population.dataset: the subjects give the size and (recorded doses) the arms
    found, subjects = dataset_inputs(data, model, source, base)
    if found or ("population" in data and "dataset" in data["population"] and model is None):
        raise ConfigError(_dedupe(problems + found))
    full = default_data(data, model, subjects)
    eff = with_fit(full, fit) if fit is not None else full
    if fit_found:  # the other keys are checked with the mapped names
        eff = stand_in(full, model)
    problems += _semantic_problems(eff, model, source, base_dir=base, subjects=subjects)
    if subjects is not None and model is not None:
        if full["population"]["dataset"]["doses"] == "recorded":
            problems += recorded_problems(eff, model, subjects, source)
        elif "twins" in full["outputs"]:  # the twins' estimator simulates the records
            problems += record_problems(model, subjects)
    if subjects is not None:
        problems += twin_parameter_problems(full, source)
    if subjects is not None and full["population"]["dataset"]["parameters"] == "fit":
        problems += fit_problems(full, fit, subjects, source)
    # trial design and parameter uncertainty (their modules import this one)

    problems += design_problems(eff, model, source, base)
    problems += uncertainty_problems(eff, model, source, base)
    if not problems and model is not None:
        # dose-modification rules and adherence read the model's outputs and the
        # adverse events' grading, so they are checked on the otherwise valid study
        gradings = threshold_gradings(adverse_events_from_data(eff["adverse_events"]))
        rules = rule_problems(eff["arms"], list(model.outputs), gradings)
        problems += [Problem(source, w, m) for w, m in rules]
    if problems:
        raise ConfigError(_dedupe(problems))
    return Study(data=full, source=source, base_dir=base, fit=fit)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def _semantic_problems(
    d: dict[str, Any],
    model: Model | None,
    src: str,
    base_dir: Path | None = None,
    subjects: Subjects | None = None,
) -> list[Problem]:
    out: list[Problem] = []

    def bad(where: str, msg: str) -> None:
        out.append(Problem(src, where, msg))

    # ---- population (vtrial.population.validate)
    pop_problems, categories, cov_names = population_problems(
        d, src, base_dir or Path.cwd(), dataset=subjects.dataset if subjects else None
    )
    out += pop_problems

    # ---- model parameters, covariate models, IIV and IOV (vtrial.population.sampling)
    if model is not None:
        out += variability_problems(d, model, src, cov_names, categories)

    # ---- arms and regimens
    arms = d["arms"]
    names_seen: set[str] = set()
    for i, arm in enumerate(arms):
        if arm["name"] in names_seen:
            bad(f"arms[{i}].name", f"arm names must be unique, {arm['name']!r} repeats")
        names_seen.add(arm["name"])
        reg = arm["regimen"]
        phases = [] if reg == "none" else ([reg] if isinstance(reg, Mapping) else list(reg))
        for j, ph in enumerate(phases):
            where = f"arms[{i}].regimen" + (f"[{j}]" if isinstance(reg, list) else "")
            for msg in phase_problems(ph, where):
                loc, _, rule = msg.partition(": ")
                bad(loc, rule)
            unit = ph.get("unit", "mg")
            if unit == "mg/kg" and "weight" not in cov_names:
                bad(f"{where}.unit", "mg/kg dosing needs a 'weight' covariate")
            if unit == "mg/m2" and "bsa" not in cov_names:
                bad(f"{where}.unit", "mg/m2 dosing needs the derived covariate 'bsa'")
            if unit not in DOSE_UNITS:  # pragma: no cover - schema guards
                bad(f"{where}.unit", f"unknown unit {unit!r}")
            if model is not None and ph["route"] not in model.routes():
                if not model.takes_doses:
                    bad(f"{where}.route", "the model has no PK macro or dosing section")
                else:
                    bad(
                        f"{where}.route",
                        f"the model takes {list(model.routes())} doses (its dosing section), "
                        f"got {ph['route']!r}",
                    )
            if model is not None and ph.get("steady_state") and model.pk_compartments is None:
                bad(
                    f"{where}.steady_state",
                    "a steady-state start needs a linear PK macro (exact); for ODE models "
                    "simulate a run-in phase instead",
                )
    control = d["study"]["control_arm"]
    if control is not None and control not in names_seen:
        bad(
            "study.control_arm",
            f"must be one of the arm names {sorted(names_seen)}, got {control!r}",
        )
    n_arms = len(arms)
    if d["population"]["size"] < n_arms:
        bad(
            "population.size",
            f"must be >= the number of arms ({n_arms}), got {d['population']['size']}",
        )

    # ---- simulation, outputs, events, endpoints
    sim = d["simulation"]
    end = float(sim["end"])
    if float(sim["grid"]) > end:
        bad("simulation.grid", f"must be <= simulation.end ({end}), got {sim['grid']}")
    if end / float(sim["grid"]) > 1_000_000:
        bad("simulation.grid", f"gives {end / float(sim['grid']):.0f} grid points (limit 1e6)")
    outputs = list(model.outputs) if model is not None else None
    tc = d["outputs"]["timecourse"]
    if float(tc["every"]) > end:
        bad("outputs.timecourse.every", f"must be <= simulation.end ({end}), got {tc['every']}")
    if end / float(tc["every"]) > 100_000:
        bad(
            "outputs.timecourse.every",
            f"gives {end / float(tc['every']):.0f} stored times per patient (limit 1e5), "
            f"got {tc['every']}",
        )
    if model is not None and outputs is not None:
        for i, o in enumerate(tc["outputs"]):
            if o not in outputs:
                bad(f"outputs.timecourse.outputs[{i}]", f"not a model output {outputs}, got {o!r}")
        exp_out = d["exposure"].get("output")
        if exp_out is not None and exp_out not in outputs:
            bad("exposure.output", f"not a model output {outputs}, got {exp_out!r}")
        for metric, (low, high) in d["exposure"].get("target", {}).items():
            if not low < high:
                bad(
                    f"exposure.target.{metric}",
                    f"must be [low, high] with low < high, got {[low, high]}",
                )
        for where, msg in adverse_event_problems(d["adverse_events"], model):
            bad(where, msg)
        for where, msg in endpoint_section_problems(d, model):
            bad(where, msg)

    ex = d["execution"]
    total = d["population"]["size"] * d["study"]["replicates"]
    if ex["shards"] > total:
        bad("execution.shards", f"must be <= the number of patients ({total}), got {ex['shards']}")
    if "cluster" in ex or "memory_limit" in ex:
        for where, msg in execution_problems(ex):
            bad(where, msg)
    outputs_or_none = list(model.outputs) if model is not None else None
    out += [Problem(src, w, m) for w, m in observation_problems(d, outputs_or_none)]
    out += [Problem(src, w, m) for w, m in twin_output_problems(d, model)]  # estimation
    # dropout, trial-layer endpoint keys, success criteria (vtrial.trial.endpoints)
    out += [Problem(src, w, m) for w, m in trial_problems(d, model)]
    out += [Problem(src, w, m) for w, m in success_problems(d)]
    if not out and model is not None and _needs_probe_grids(d):  # the rest is valid
        out += [Problem(src, w, m) for w, m in _probe_memory_problems(d, model)]
    return out


def _needs_probe_grids(d: dict[str, Any]) -> bool:
    """Whether the trial layer records outputs on grids (AUEC, survival, LOCF visits)."""
    end = float(d["simulation"]["end"])
    eps = endpoints_from_data(d["endpoints"])
    return bool(trial_probe_times(eps, dropout_from_data(d.get("dropout")), end))


def _probe_memory_problems(d: dict[str, Any], model: Model) -> list[tuple[str, str]]:
    """The kernel's probes of one Dask task must fit :data:`MAX_PROBE_BYTES`."""
    study = Study(d, "", Path())
    n_probe = len(study.probe_times())
    chunk = min(int(d["execution"]["chunk_size"]), study.n_patients)
    n_out = len(model.outputs)
    size = chunk * n_probe * n_out * 8
    if size <= MAX_PROBE_BYTES:
        return []
    return [
        (
            "execution.chunk_size",
            f"the kernel's probes take chunk_size x probe times x outputs x 8 bytes = "
            f"{chunk} x {n_probe} x {n_out} x 8 = {size / 2**20:.0f} MiB per Dask task "
            f"(limit {MAX_PROBE_BYTES / 2**20:.0f} MiB): use a coarser 'every' of the auec / "
            f"time_to_event endpoints or a smaller chunk_size, got {chunk}",
        )
    ]
