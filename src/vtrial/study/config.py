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
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml

from vtrial.analysis.success import fill_success_defaults
from vtrial.analysis.success import spec_problems as success_problems
from vtrial.errors import ConfigError, ExpressionError, Problem
from vtrial.infra.yamlsafe import load_yaml, package_schema
from vtrial.model.expressions import parse_expression
from vtrial.model.residual import MAX_OBSERVATION_TIMES, observation_times
from vtrial.model.residual import spec_problems as residual_problems
from vtrial.model.spec import Model, build_model, check_model_section
from vtrial.population.covariates import DERIVED, covariate_problems, input_files, resampled_columns
from vtrial.population.design import design_problems
from vtrial.population.uncertainty import omega_matrix, uncertainty_problems
from vtrial.protocol.dosing import (
    DOSE_UNITS,
    EventTable,
    Phase,
    event_table,
    occasion_starts,
    phase_problems,
    regimen_phases,
)
from vtrial.protocol.rules import RuleProgram, rule_problems, rule_program
from vtrial.study.execution import execution_problems
from vtrial.trial.adverse import GRADING_SCALES
from vtrial.trial.endpoints import (
    MAX_PROBE_BYTES,
    TRIAL_TYPES,
    endpoint_kind,
    endpoint_problems,
    fill_defaults,
    trial_probe_times,
    trial_problems,
)
from vtrial.trial.kinds import EndpointKind
from vtrial.trial.recist import RESPONSE_CATEGORIES, assessment_times, schedule_problems

_DISTRIBUTIONS = ("categorical", "normal", "lognormal", "uniform", "empirical", "constant")
_RESPONDER_KEYS = ("below", "below_or_equal", "above", "above_or_equal")
#: keys of a best_response endpoint besides type, output and description
_ASSESSMENT_KEYS = ("every", "first", "by", "times", "complete_below", "min_increase")


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
    """

    data: dict[str, Any]
    source: str
    base_dir: Path

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
        return int(self.data["population"]["size"])

    @property
    def n_patients(self) -> int:
        """Patients in the whole study (all replicates)."""
        return self.size * self.replicates

    @property
    def arm_names(self) -> list[str]:
        return [a["name"] for a in self.data["arms"]]

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
        return build_model(self.data["model"], base_dir=self.base_dir, source=self.source)

    def arm_phases(self) -> list[list[Phase]]:
        """Dosing phases of every arm, in arm order."""
        return [regimen_phases(a["regimen"]) for a in self.data["arms"]]

    def arm_occasions(self) -> list[list[float]]:
        """Start times (h) of occasions 1, 2, ... of every arm (none without IOV)."""
        iov = self.data["model"].get("iov")
        if not iov:
            return [[] for _ in self.data["arms"]]
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
        return rule_program(self)

    @property
    def exposure_targets(self) -> dict[str, list[float]]:
        """``exposure.target``: metric (``cmax``, ``auc``) -> ``[low, high]``."""
        return dict(self.data["exposure"].get("target", {}))

    @property
    def has_dose_ledger(self) -> bool:
        """True if an arm declares dose modification or adherence (doses/ output)."""
        return any(a.get("modification") or a.get("adherence") for a in self.data["arms"])

    @cached_property
    def sha256(self) -> str:
        """Hash of the canonical study (defaults filled), of every model file used and
        of the covariance file of ``study.uncertainty`` (if it names one) and of the
        covariate table of ``population.resample``."""
        h = hashlib.sha256(canonical_json(self.data).encode())
        for comp in self.model.components:
            h.update(Path(comp.source).read_bytes())
        for path in self.data_files:
            h.update(path.read_bytes())
        return h.hexdigest()

    @property
    def data_files(self) -> list[Path]:
        """Data files the study reads besides its model files, in hashing order: the
        covariance CSV of ``study.uncertainty.theta`` (if it names one) and the
        covariate table of ``population.resample``."""
        cov = (self.data["study"].get("uncertainty") or {}).get("theta", {}).get("covariance")
        files = [self.base_dir / cov] if isinstance(cov, str) else []
        return files + input_files(self.data, self.base_dir)

    def grid(self) -> np.ndarray:
        """Evaluation grid (h): regular grid, stored time points and endpoint times."""
        sim = self.data["simulation"]
        end = float(sim["end"])
        step = float(sim["grid"])
        pts = [np.arange(0.0, end, step), [end], self.store_times()]
        pts.append(np.array(self.probe_times()))
        g = np.unique(np.concatenate([np.asarray(p, dtype=np.float64) for p in pts]))
        return g[(g >= 0.0) & (g <= end)]

    def store_times(self) -> np.ndarray:
        """Time points of the stored time courses (h)."""
        end = float(self.data["simulation"]["end"])
        every = float(self.data["outputs"]["timecourse"]["every"])
        t = np.arange(0.0, end + 1e-9 * end, every)
        return np.unique(np.append(t[t <= end], end))

    @property
    def residual_error(self) -> dict[str, dict[str, float]]:
        """``model.residual_error``: output -> error model (see :mod:`vtrial.model.residual`)."""
        return {k: dict(v) for k, v in self.data["model"].get("residual_error", {}).items()}

    @property
    def observed_outputs(self) -> list[str]:
        """Outputs of ``outputs.observations`` in sorted name order (the draw order)."""
        obs = self.data["outputs"].get("observations")
        return sorted(obs["outputs"]) if obs else []

    def observation_times(self) -> np.ndarray:
        """Sampling times of ``outputs.observations`` (h), sorted, unique; empty if none
        (:func:`vtrial.model.residual.observation_times`)."""
        return observation_times(
            self.data["outputs"].get("observations"), float(self.data["simulation"]["end"])
        )

    def probe_times(self) -> list[float]:
        """Times at which every output is recorded for endpoints (baseline 0 first)."""
        times = {0.0}
        for ep in self.data["endpoints"].values():
            if "at" in ep:
                times.add(float(ep["at"]))
            if ep["type"] == "best_response":  # tumour assessments
                times.update(assessment_times(ep, float(self.data["simulation"]["end"])))
        times.update(float(t) for t in self.observation_times())  # sampling times
        times.update(trial_probe_times(self.data))  # auec, survival grids, locf visits
        return sorted(times)

    def grading(self, event: str) -> tuple[list[float], int]:
        """Thresholds of grades 1.. and direction (-1 below, +1 above) of an AE.

        Raises ValueError for an event graded from ``probabilities`` (no thresholds).
        """
        spec = self.data["adverse_events"][event]
        if "probabilities" in spec:
            raise ValueError(f"adverse event {event!r} is graded from probabilities")
        if "grading" in spec:
            scale = GRADING_SCALES[spec["grading"]]
            lln = float(spec.get("lln", scale["lln"]))
            thr = [lln, *(float(x) for x in scale["thresholds"][1:])]
            return thr, -1 if scale["direction"] == "below" else 1
        return [float(x) for x in spec["thresholds"]], (
            -1 if spec.get("direction", "below") == "below" else 1
        )

    def endpoint_kinds(
        self,
    ) -> dict[str, EndpointKind]:
        """Endpoint name -> ``"continuous"``, ``"binary"`` (responders),
        ``"categorical"`` (``best_response``) or ``"time_to_event"``."""
        return {k: endpoint_kind(v) for k, v in self.data["endpoints"].items()}

    def endpoint_units(self) -> dict[str, str]:
        """Endpoint name -> unit of its patient-table value: ``%`` for a percent
        change, the output's unit for a value, change, minimum or maximum, the output's
        unit times ``h`` for an ``auec``, ``h`` for a time to event, ``""`` for a
        responder or a response category."""
        units = self.model.output_units
        out = {}
        for name, ep in self.data["endpoints"].items():
            typ, unit = ep["type"], units.get(str(ep.get("output", "")), "")
            if typ == "percent_change_from_baseline":
                out[name] = "%"
            elif typ == "auec":
                out[name] = f"{unit}·h" if unit else "h"
            elif typ == "time_to_event":
                out[name] = "h"
            elif typ in ("responder", "best_response"):
                out[name] = ""
            else:
                out[name] = unit
        return out


def _non_finite(data: Any, path: list[Any]) -> list[tuple[str, float]]:
    """Key paths of non-finite numbers (.inf, .nan) anywhere in plain data."""
    out: list[tuple[str, float]] = []
    if isinstance(data, float) and not np.isfinite(data):
        out.append((_path(path), data))
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


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _schema_message(err: jsonschema.ValidationError) -> str:
    v: Any = err.instance
    shown = json.dumps(v, default=str) if not isinstance(v, Mapping | list) else None
    schema: Mapping[str, Any] = err.schema if isinstance(err.schema, Mapping) else {}
    if err.validator == "additionalProperties":
        props: Mapping[str, Any] = schema.get("properties") or {}
        extra = sorted(set(v) - set(props))
        allowed = sorted(props)
        return f"unknown key(s) {extra} (allowed: {allowed})"
    if err.validator == "required":
        return err.message.replace("is a required property", "is required")
    if err.validator == "type":
        return f"must be of type {err.validator_value}, got {shown if shown else type(v).__name__}"
    if err.validator == "oneOf":
        form = f" ({schema['description']})" if "description" in schema else ""
        got = shown if shown else json.dumps(v, default=str)[:200]
        return f"must be {form.strip(' ()') or 'one of the allowed forms'}, got {got}"
    if err.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {
            "minimum": ">=",
            "exclusiveMinimum": ">",
            "maximum": "<=",
            "exclusiveMaximum": "<",
        }[str(err.validator)]
        return f"must be {op} {err.validator_value}, got {shown}"
    if err.validator == "enum":
        return f"must be one of {err.validator_value}, got {shown}"
    if err.validator == "pattern":
        return f"must match {err.validator_value!r}, got {shown}"
    return f"{err.message}"


def _best_errors(errors: list[jsonschema.ValidationError]) -> list[jsonschema.ValidationError]:
    """Replace oneOf errors by their most specific sub-errors where one branch fits better."""
    out: list[jsonschema.ValidationError] = []
    for e in errors:
        if e.validator == "oneOf" and e.context:
            # errors of the branches whose form (type/const) the value does not have at all
            # are noise; if the value has the form of some branches, report their errors
            wrong_form = {
                c.relative_schema_path[0]
                for c in e.context
                if c.validator in ("type", "const") and len(c.relative_schema_path) <= 2
            }
            fitting = [c for c in e.context if c.relative_schema_path[0] not in wrong_form]
            if fitting:
                out.extend(_best_errors(fitting))
                continue
        out.append(e)
    return out


def default_data(data: Mapping[str, Any], model: Model | None) -> dict[str, Any]:
    """Fill in defaults (documented in config/README.md)."""
    d = copy.deepcopy(dict(data))
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
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(src, "", f"not valid YAML: {exc}")]) from exc
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
    errs = _best_errors(list(validator.iter_errors(data)))
    problems = [
        Problem(source, _path(e.absolute_path), _schema_message(e))
        for e in sorted(errs, key=lambda e: [str(x) for x in e.absolute_path])
    ]
    problems += [
        Problem(source, where, f"must be a finite number, got {value}")
        for where, value in _non_finite(data, [])
    ]
    if problems:
        raise ConfigError(_dedupe(problems))
    model, model_problems = check_model_section(data["model"], base_dir=base)
    problems += [Problem(source, f"model.{w}" if w else "model", m) for w, m in model_problems]
    full = default_data(data, model)
    problems += _semantic_problems(full, model, source, base_dir=base)
    # trial design and parameter uncertainty (their modules import this one)

    problems += design_problems(full, model, source, base)
    problems += uncertainty_problems(full, model, source, base)
    if not problems and model is not None:
        # dose-modification rules and adherence read the model's outputs and the
        # adverse events' grading, so they are checked on the otherwise valid study
        tentative = Study(data=full, source=source, base_dir=base)
        problems += [Problem(source, w, m) for w, m in rule_problems(tentative)]
    if problems:
        raise ConfigError(_dedupe(problems))
    return Study(data=full, source=source, base_dir=base)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def _semantic_problems(
    d: dict[str, Any], model: Model | None, src: str, base_dir: Path | None = None
) -> list[Problem]:
    out: list[Problem] = []

    def bad(where: str, msg: str) -> None:
        out.append(Problem(src, where, msg))

    # ---- population
    covs: dict[str, Any] = d["population"]["covariates"]
    base = base_dir if base_dir is not None else Path.cwd()
    resampled = resampled_columns(d, src, base)  # population.resample: a covariate table
    out += resampled.problems
    categories: dict[str, list[str]] = dict(resampled.categories)
    have = set(covs) | set(resampled.columns)
    for name, spec in covs.items():
        where = f"population.covariates.{name}"
        kinds = [k for k in _DISTRIBUTIONS if k in spec]
        if len(kinds) != 1:
            bad(where, f"needs exactly one distribution of {list(_DISTRIBUTIONS)}, got {kinds}")
            continue
        kind = kinds[0]
        if kind == "categorical":
            freq = spec["categorical"]
            total = sum(freq.values())
            if abs(total - 1.0) > 1e-6:
                bad(f"{where}.categorical", f"frequencies must sum to 1, got {total:g}")
            categories[name] = list(freq)
            if "by" in spec or "bounds" in spec:
                bad(where, "a categorical covariate takes no 'by' or 'bounds'")
    for name, spec in covs.items():
        where = f"population.covariates.{name}"
        kinds = [k for k in _DISTRIBUTIONS if k in spec]
        if len(kinds) != 1 or kinds[0] == "categorical":
            continue
        by = spec.get("by")
        if by is not None and by not in categories:
            bad(
                f"{where}.by", f"must name a categorical covariate {sorted(categories)}, got {by!r}"
            )
            continue
        if kinds[0] in ("uniform", "constant") and "bounds" in spec:
            bad(f"{where}.bounds", f"a {kinds[0]} covariate takes no 'bounds'")
        if kinds[0] == "constant" and by is not None:
            bad(f"{where}.by", "a constant covariate takes no 'by'")
        params = spec[kinds[0]] if isinstance(spec[kinds[0]], Mapping) else {}
        complete = True
        for key, val in params.items():
            if isinstance(val, Mapping):
                if by is None:
                    bad(f"{where}.{kinds[0]}.{key}", "a per-category value needs 'by'")
                    complete = False
                elif set(val) != set(categories[by]):
                    bad(
                        f"{where}.{kinds[0]}.{key}",
                        f"needs a value for every category of {by} {categories[by]}, "
                        f"got {sorted(val)}",
                    )
                    complete = False
        if not complete:
            continue
        if "bounds" in spec:
            lo, hi = spec["bounds"]
            if not lo < hi:
                bad(f"{where}.bounds", f"lower bound must be < upper bound, got [{lo}, {hi}]")
            if kinds[0] == "lognormal" and lo < 0:
                bad(f"{where}.bounds", f"a log-normal covariate is > 0, got lower bound {lo}")
        if kinds[0] == "uniform":
            lo_v, hi_v = params.get("low"), params.get("high")
            for c in categories.get(by, [None]) if by else [None]:
                lv = lo_v[c] if isinstance(lo_v, Mapping) and c is not None else lo_v
                hv = hi_v[c] if isinstance(hi_v, Mapping) and c is not None else hi_v
                if isinstance(lv, int | float) and isinstance(hv, int | float) and not lv < hv:
                    bad(f"{where}.uniform", f"low must be < high, got [{lv}, {hv}]")
    derived = d["population"]["derived"]
    for i, name in enumerate(derived):
        needs, _ = DERIVED[name]
        missing = [c for c in needs if c not in have]
        if missing:
            bad(f"population.derived[{i}]", f"{name} needs covariate(s) {missing}")
        if name in covs:
            bad(f"population.derived[{i}]", f"{name} is also a sampled covariate")
        sex_labels = categories.get("sex")
        if "sex" in needs and "sex" in have and set(sex_labels or ()) != {"F", "M"}:
            bad(
                f"population.derived[{i}]",
                f"{name} needs sex with categories F and M, "
                f"got {sex_labels if sex_labels is not None else 'a numeric covariate'}",
            )
    cov_names = set(covs) | set(derived) | set(resampled.columns)
    # correlations, empirical distributions, inclusion/exclusion (with a pilot draw)
    out += covariate_problems(d, src, base, categories, pilot=not out)

    # ---- model parameters, covariate models and IIV
    if model is not None:
        clash = sorted(cov_names & set(model.parameters))
        if clash:
            bad("population.covariates", f"names {clash} are also model parameters")
        for pname, spec in d["model"]["parameters"].items():
            if "covariates" in spec:
                try:
                    parse_expression(
                        spec["covariates"],
                        where=f"{src}: model.parameters.{pname}.covariates",
                        known_names=sorted(cov_names),
                        categorical=categories,
                    )
                except ExpressionError as exc:
                    bad(
                        f"model.parameters.{pname}.covariates",
                        f"{exc.reason} in expression {exc.expression!r}",
                    )
        iiv = d["model"]["iiv"]
        omega: dict[str, float] = iiv["omega"]
        for k in omega:
            if k not in model.parameters:
                bad(
                    f"model.iiv.omega.{k}",
                    f"not a model parameter (parameters: {sorted(model.parameters)})",
                )
        for k, dist in iiv["distribution"].items():
            if k not in omega:
                bad(f"model.iiv.distribution.{k}", "has no omega (variance) entry")
            elif dist == "logit" and k in model.parameters:
                v = model.parameters[k].value
                if not 0 < v < 1:
                    bad(f"model.iiv.distribution.{k}", f"logit needs a value in (0, 1), got {v}")
        for k in omega:
            lognormal = iiv["distribution"].get(k, "lognormal") == "lognormal"
            if lognormal and k in model.parameters and model.parameters[k].value <= 0:
                value = model.parameters[k].value
                bad(
                    f"model.iiv.omega.{k}", f"log-normal IIV needs a typical value > 0, got {value}"
                )
        names = list(omega)
        seen_pairs: dict[frozenset[str], str] = {}
        for pair in iiv["correlations"]:
            a, b = pair.split("~")
            key = frozenset((a, b))
            if key in seen_pairs:
                bad(f"model.iiv.correlations.{pair}", f"repeats {seen_pairs[key]}")
            seen_pairs.setdefault(key, pair)
            for x in (a, b):
                if x not in omega:
                    bad(f"model.iiv.correlations.{pair}", f"{x} has no omega (variance) entry")
            if a == b:
                bad(f"model.iiv.correlations.{pair}", "a correlation needs two different names")
        if not any(p.where.startswith("model.iiv") for p in out) and names:
            om = omega_matrix(iiv)
            w = np.linalg.eigvalsh(om)
            if w.min() < -1e-10 * max(1.0, float(w.max())):
                bad(
                    "model.iiv",
                    f"OMEGA must be positive semi-definite, smallest eigenvalue {w.min():.3g}",
                )
        iov = d["model"].get("iov")
        if iov:
            for k in iov["omega"]:
                if k not in model.parameters:
                    bad(
                        f"model.iov.omega.{k}",
                        f"not a model parameter (parameters: {sorted(model.parameters)})",
                    )
                elif (
                    iiv["distribution"].get(k, "lognormal") == "lognormal"
                    and model.parameters[k].value <= 0
                ):
                    bad(
                        f"model.iov.omega.{k}",
                        f"log-normal IOV needs a typical value > 0, "
                        f"got {model.parameters[k].value}",
                    )
            occ = iov["occasions"]
            if isinstance(occ, list):
                end = float(d["simulation"]["end"])
                if any(b <= a for a, b in itertools.pairwise(occ)):
                    bad("model.iov.occasions", f"start times must increase strictly, got {occ}")
                if occ and not (min(occ) >= 0 and max(occ) < end):
                    bad(
                        "model.iov.occasions",
                        f"start times must be in [0, simulation.end={end:g}), got {occ}",
                    )

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
    if outputs is not None:
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
        for ev, spec in d["adverse_events"].items():
            where = f"adverse_events.{ev}"
            if "probabilities" in spec:  # grade drawn from model probabilities
                for key, msg in _probability_event_problems(spec, model):
                    bad(f"{where}{key}", msg)
                continue
            if spec["output"] not in outputs:
                bad(f"{where}.output", f"not a model output {outputs}, got {spec['output']!r}")
            has_g, has_t = "grading" in spec, "thresholds" in spec
            if has_g == has_t:
                bad(where, "needs exactly one of 'grading' (a built-in scale) or 'thresholds'")
            if has_t:
                thr = spec["thresholds"]
                below = spec.get("direction", "below") == "below"
                mono = all((a > b) if below else (a < b) for a, b in itertools.pairwise(thr))
                if not mono:
                    order = "decreasing" if below else "increasing"
                    bad(
                        f"{where}.thresholds", f"must be strictly {order} for grades 1.., got {thr}"
                    )
            if has_g and "direction" in spec:
                bad(f"{where}.direction", "is set by the built-in grading scale")
            if "lln" in spec and not has_g:
                bad(f"{where}.lln", "only applies to a built-in grading scale")
            if "lln" in spec and has_g:
                scale = GRADING_SCALES[spec["grading"]]
                g2 = float(scale["thresholds"][1])
                low = scale["direction"] == "below"
                if not low:
                    bad(
                        f"{where}.lln",
                        f"{spec['grading']} has fixed limits (grade 1 above {scale['lln']}); "
                        f"use 'thresholds' with direction above for others, got {spec['lln']}",
                    )
                elif not spec["lln"] > g2:
                    bad(
                        f"{where}.lln",
                        f"must be > the grade-2 limit {g2} of {spec['grading']}, got {spec['lln']}",
                    )
        seen_ep: list[str] = []
        for name, ep in d["endpoints"].items():
            where = f"endpoints.{name}"
            typ = ep["type"]
            if typ in TRIAL_TYPES:  # auec, time_to_event (vtrial.trial.endpoints)
                for key, msg in endpoint_problems(ep, d, model):
                    bad(f"{where}{key}", msg)
                seen_ep.append(name)
                continue
            if typ == "responder":
                ref = ep.get("endpoint")
                if ref is None or ref not in seen_ep:
                    bad(
                        f"{where}.endpoint",
                        f"a responder needs an endpoint defined before it {seen_ep}, got {ref!r}",
                    )
                elif d["endpoints"][ref]["type"] == "responder":
                    bad(
                        f"{where}.endpoint",
                        f"{ref!r} is binary; a responder needs a continuous one",
                    )
                keys = [k for k in (*_RESPONDER_KEYS, "in") if k in ep]
                ref_type = d["endpoints"][ref]["type"] if ref in seen_ep else None
                if len(keys) != 1:
                    bad(where, f"needs exactly one of {[*_RESPONDER_KEYS, 'in']}, got {keys}")
                elif ref_type == "best_response" and keys != ["in"]:
                    bad(
                        f"{where}.{keys[0]}",
                        f"{ref!r} is a best_response (categories {list(RESPONSE_CATEGORIES)}): "
                        f"use 'in' (e.g. in: [CR, PR]), got {keys[0]}: {ep[keys[0]]}",
                    )
                elif keys == ["in"] and ref_type not in (None, "best_response"):
                    bad(
                        f"{where}.in",
                        f"only applies to a best_response endpoint, {ref!r} is {ref_type}; "
                        f"got {ep['in']}",
                    )
                if "output" in ep or "at" in ep:
                    bad(where, "a responder takes 'endpoint' and a threshold, not 'output'/'at'")
                extra = [k for k in _ASSESSMENT_KEYS if k in ep]
                if extra:
                    bad(where, f"keys {extra} only apply to type best_response")
            else:
                if ep.get("output") not in outputs:
                    bad(
                        f"{where}.output", f"not a model output {outputs}, got {ep.get('output')!r}"
                    )
                needs_at = typ in (
                    "value_at",
                    "change_from_baseline",
                    "percent_change_from_baseline",
                )
                if needs_at and "at" not in ep:
                    bad(where, f"type {typ} needs 'at' (h)")
                if not needs_at and "at" in ep:
                    bad(f"{where}.at", f"type {typ} takes no 'at'")
                if "at" in ep and float(ep["at"]) > end:
                    bad(f"{where}.at", f"must be <= simulation.end ({end}), got {ep['at']}")
                extra = [k for k in (*_RESPONDER_KEYS, "endpoint", "in") if k in ep]
                if extra:
                    bad(where, f"keys {extra} only apply to type responder")
                if typ == "best_response":
                    for key, msg in schedule_problems(ep, end, noun="assessments"):
                        bad(f"{where}{key}", msg)
                else:
                    extra = [k for k in _ASSESSMENT_KEYS if k in ep]
                    if extra:
                        bad(where, f"keys {extra} only apply to type best_response")
            seen_ep.append(name)
        reserved = {
            "replicate",
            "patient_id",
            "arm",
            "arm_index",
            "solver_status",
            "n_steps",
            "cmax",
            "tmax",
            "auc",
            "ctrough",
        }
        clash = sorted(set(d["endpoints"]) & reserved)
        clash += sorted(n for n in d["endpoints"] if n.startswith("ae_"))
        if clash:
            bad("endpoints", f"names {clash} are reserved for patient-table columns")

    ex = d["execution"]
    total = d["population"]["size"] * d["study"]["replicates"]
    if ex["shards"] > total:
        bad("execution.shards", f"must be <= the number of patients ({total}), got {ex['shards']}")
    if "cluster" in ex or "memory_limit" in ex:
        for where, msg in execution_problems(ex):
            bad(where, msg)
    out += _observation_problems(d, model, src)
    # dropout, trial-layer endpoint keys, success criteria (vtrial.trial.endpoints)
    out += [Problem(src, w, m) for w, m in trial_problems(d, model)]
    out += [Problem(src, w, m) for w, m in success_problems(d)]
    if not out and model is not None and trial_probe_times(d):  # the rest is valid
        out += [Problem(src, w, m) for w, m in _probe_memory_problems(d, model)]
    return out


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


def _observation_problems(d: dict[str, Any], model: Model | None, src: str) -> list[Problem]:
    """``model.residual_error`` and ``outputs.observations`` (see :mod:`vtrial.model.residual`)."""
    out: list[Problem] = []

    def bad(where: str, msg: str) -> None:
        out.append(Problem(src, where, msg))

    outputs = list(model.outputs) if model is not None else None
    res: dict[str, Any] = d["model"].get("residual_error", {})
    for where, msg in residual_problems(res, outputs):
        bad("model.residual_error" + (f".{where}" if where else ""), msg)
    obs = d["outputs"].get("observations")
    if obs is None:
        if res:
            bad(
                "model.residual_error",
                f"applies to outputs.observations, which is not set, got entries {sorted(res)}",
            )
        return out
    here = "outputs.observations"
    end = float(d["simulation"]["end"])
    if outputs is not None:
        for i, o in enumerate(obs["outputs"]):
            if o not in outputs:
                bad(f"{here}.outputs[{i}]", f"not a model output {outputs}, got {o!r}")
    for name in res:
        if name not in obs["outputs"] and (outputs is None or name in outputs):
            bad(
                f"model.residual_error.{name}",
                f"is not observed: add it to {here}.outputs {obs['outputs']}, got {name!r}",
            )
    seen: dict[float, int] = {}
    for i, t in enumerate(obs["times"]):
        if t > end:
            bad(f"{here}.times[{i}]", f"must be <= simulation.end ({end}), got {t}")
        if t in seen:
            bad(f"{here}.times[{i}]", f"repeats times[{seen[t]}], got {t}")
        seen.setdefault(t, i)
    if "every" in obs:
        lo, hi, step = float(obs["from"]), float(obs["to"]), float(obs["every"])
        for key, v in (("from", lo), ("to", hi)):
            if v > end:
                bad(f"{here}.{key}", f"must be <= simulation.end ({end}), got {obs[key]}")
        if lo > hi:
            bad(f"{here}.from", f"must be <= to ({obs['to']}), got {obs['from']}")
        elif (hi - lo) / step + 1 > MAX_OBSERVATION_TIMES:
            count = int((hi - lo) / step) + 1
            bad(
                f"{here}.every",
                f"gives {count} sampling times (limit {MAX_OBSERVATION_TIMES}), got {obs['every']}",
            )
    else:
        for key in ("from", "to"):
            if key in obs:
                bad(f"{here}.{key}", f"only applies with 'every', got {obs[key]}")
        if not obs["times"]:
            bad(here, "needs sampling 'times' or 'every' (with optional 'from' and 'to')")
    return out


def _probability_event_problems(
    spec: Mapping[str, Any], model: Model | None
) -> list[tuple[str, str]]:
    """Problems of an adverse event graded from ``probabilities`` (key relative to it)."""
    out: list[tuple[str, str]] = []
    probs = list(spec["probabilities"])
    extra = [k for k in ("output", "grading", "thresholds", "direction", "lln") if k in spec]
    if extra:
        out.append(("", f"'probabilities' (a drawn grade) takes no {extra}"))
    outputs = list(model.outputs) if model is not None else []
    for i, name in enumerate(probs):
        if name not in outputs:
            out.append((f".probabilities[{i}]", f"not a model output {outputs}, got {name!r}"))
    # names that differ only by a grade number (P_GE1, P_GE2, ...) must be in grade order
    split = [re.fullmatch(r"(.*?)(\d+)", str(name)) for name in probs]
    if all(split) and len({m.group(1) for m in split if m}) == 1:
        numbers = [int(m.group(2)) for m in split if m]
        if numbers != sorted(numbers):
            out.append(
                (
                    ".probabilities",
                    f"must be in grade order (P(grade >= 1) first), got {probs}",
                )
            )
    if model is not None:
        for comp in model.components:
            if comp.name != "ae_proportional_odds":
                continue
            names = [f"B{k}" for k in range(1, 5)]
            values = [model.parameters[b].value for b in names if b in model.parameters]
            if len(values) == 4 and not all(a > b for a, b in itertools.pairwise(values)):
                out.append(
                    (
                        "",
                        "ae_proportional_odds needs decreasing intercepts B1 > B2 > B3 > B4 "
                        f"(model.parameters), got {dict(zip(names, values, strict=True))}",
                    )
                )
    return out
