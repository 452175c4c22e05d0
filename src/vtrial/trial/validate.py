"""Defaults and validation of the trial-layer keys: endpoints, dropout, observed endpoints.

The checks of the ``endpoints`` and ``dropout`` sections of a study (with defaults
filled, :func:`fill_defaults`), called by the study loader
(:mod:`vtrial.study.config`); the computations they guard are in
:mod:`vtrial.trial.endpoints`. Each check returns ``(key path, rule broken and value
found)`` pairs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vtrial.model.residual import MAX_OBSERVATION_TIMES, observation_times
from vtrial.model.spec import PK_CONCENTRATION, Model
from vtrial.trial.adverse import GRADING_SCALES
from vtrial.trial.endpoints import (
    AT_TYPES,
    DROPOUT_COLUMN,
    MAX_SERIES_POINTS,
    TESTS,
    TRIAL_TYPES,
)
from vtrial.trial.recist import RESPONSE_CATEGORIES, assessment_times, schedule_problems
from vtrial.trial.spec import endpoint_kind


def fill_defaults(d: dict[str, Any]) -> None:
    """Defaults of the trial-layer keys (in place; only where the keys are used).

    ``auec``: ``from`` 0, ``to`` ``simulation.end``, ``every`` ``simulation.grid``,
    ``above_baseline`` false; a survival ``time_to_event``: ``every``
    ``simulation.grid``; ``dropout``: ``censoring: missing``, an
    ``adverse_event.grade`` of 3; ``success`` criteria: see :mod:`vtrial.analysis.success`.
    """
    sim = d.get("simulation", {})
    for ep in (d.get("endpoints") or {}).values():
        if not isinstance(ep, dict):
            continue
        if ep.get("type") == "auec":
            ep.setdefault("from", 0.0)
            ep.setdefault("to", sim.get("end"))
            ep.setdefault("every", sim.get("grid"))
            ep.setdefault("above_baseline", False)
        elif ep.get("type") == "time_to_event" and "below" not in ep and "above" not in ep:
            ep.setdefault("every", sim.get("grid"))
    drop = d.get("dropout")
    if isinstance(drop, dict):
        drop.setdefault("censoring", "missing")
        if isinstance(drop.get("adverse_event"), dict):
            drop["adverse_event"].setdefault("grade", 3)


def endpoint_problems(
    ep: Mapping[str, Any], d: Mapping[str, Any], model: Model | None
) -> list[tuple[str, str]]:
    """Problems of an ``auec`` or ``time_to_event`` endpoint (keys relative to it)."""
    out: list[tuple[str, str]] = []
    typ = ep["type"]
    end = float(d["simulation"]["end"])
    outputs = list(model.outputs) if model is not None else None
    if outputs is not None and ep.get("output") not in outputs:
        out.append((".output", f"not a model output {outputs}, got {ep.get('output')!r}"))
    # keys of the other endpoint types (others, e.g. of the trial design, are theirs)
    forbidden = {
        "at",
        "endpoint",
        "in",
        "below_or_equal",
        "above_or_equal",
        "first",
        "by",
        "times",
        "complete_below",
        "min_increase",
        "observed",
    }
    if typ == "auec":
        forbidden |= {"below", "above"}
        lo, hi = float(ep["from"]), float(ep["to"])
        if hi > end:
            out.append((".to", f"must be <= simulation.end ({end}), got {ep['to']}"))
        if not lo < hi:
            out.append((".from", f"must be < to ({ep['to']}), got {ep['from']}"))
        elif (hi - lo) / float(ep["every"]) + 1 > MAX_SERIES_POINTS:
            count = int((hi - lo) / float(ep["every"])) + 1
            out.append(
                (
                    ".every",
                    f"gives {count} grid times (limit {MAX_SERIES_POINTS}), got {ep['every']}",
                )
            )
    else:
        forbidden |= {"from", "to", "above_baseline"}
        keys = [k for k in ("below", "above") if k in ep]
        if len(keys) > 1:
            out.append(("", f"takes at most one of 'below' and 'above', got {keys}"))
        if keys:
            forbidden.add("every")
        else:
            if end / float(ep["every"]) + 1 > MAX_SERIES_POINTS:
                count = int(end / float(ep["every"])) + 1
                out.append(
                    (
                        ".every",
                        f"gives {count} grid times (limit {MAX_SERIES_POINTS}), got {ep['every']}",
                    )
                )
            if model is not None and ep.get("output") in model.outputs:
                unit = model.output_units.get(ep["output"], "")
                if unit not in ("", "1"):
                    out.append(
                        (
                            ".output",
                            "a survival output is a probability (unit 1); give 'below' or "
                            f"'above' for a threshold crossing, got {ep['output']} in {unit}",
                        )
                    )
    extra = sorted(k for k in ep if k in forbidden)
    if extra:
        out.append(("", f"keys {extra} do not apply to type {typ}"))
    return out


def _exact_exposure(d: Mapping[str, Any], model: Model) -> bool:
    exp_out = d["exposure"].get("output")
    return exp_out == PK_CONCENTRATION and (
        model.pk_compartments is not None or bool(model.ode_exposure)
    )


def _dropout_problems(d: Mapping[str, Any], model: Model | None) -> list[tuple[str, str]]:
    spec = d["dropout"]
    here = "dropout"
    out: list[tuple[str, str]] = []
    end = float(d["simulation"]["end"])
    needs = {"constant": ["rate_per_year"], "weibull": ["scale_days", "shape"]}[spec["hazard"]]
    other = [k for k in ("rate_per_year", "scale_days", "shape") if k not in needs and k in spec]
    missing = [k for k in needs if k not in spec]
    if missing:
        out.append((here, f"a {spec['hazard']} hazard needs {needs}, missing {missing}"))
    if other:
        out.append((here, f"a {spec['hazard']} hazard takes {needs}, not {other}"))
    if "exposure" in spec:
        metric = spec["exposure"]["metric"]
        if not d["exposure"].get("output"):
            out.append((f"{here}.exposure", "needs exposure.output (the drug concentration)"))
        elif metric != "cmax" and model is not None and not _exact_exposure(d, model):
            out.append(
                (
                    f"{here}.exposure.metric",
                    f"{metric} is only computed for exposure.output {PK_CONCENTRATION} of a PK "
                    f"macro or an ODE model with a dosing section; use cmax, got {metric}",
                )
            )
    if "adverse_event" in spec:
        ae = spec["adverse_event"]
        events = d["adverse_events"]
        ev, grade = ae["event"], int(ae["grade"])
        if ev not in events:
            out.append(
                (
                    f"{here}.adverse_event.event",
                    f"not an adverse event {sorted(events)}, got {ev!r}",
                )
            )
        elif "probabilities" in events[ev]:
            out.append(
                (
                    f"{here}.adverse_event.event",
                    f"{ev!r} is graded from probabilities (no onset time); use an event graded "
                    f"from an output, got {ev!r}",
                )
            )
        else:
            if "grading" in events[ev]:
                n_limits = len(GRADING_SCALES[events[ev]["grading"]]["thresholds"])
            else:
                n_limits = len(events[ev].get("thresholds", []))
            if grade > n_limits:
                out.append(
                    (
                        f"{here}.adverse_event.grade",
                        f"{ev!r} has {n_limits} grade limit(s), got grade {grade}",
                    )
                )
    if spec["censoring"] == "locf":
        if "visits" not in spec:
            out.append(
                (
                    f"{here}.visits",
                    "censoring locf needs the visits whose last value is carried forward",
                )
            )
        else:
            for key, msg in schedule_problems(spec["visits"], end, noun="visits"):
                out.append((f"{here}.visits{key}", msg))
    elif "visits" in spec:
        out.append((f"{here}.visits", "only applies with censoring: locf, got censoring: missing"))
    return out


def trial_problems(d: Mapping[str, Any], model: Model | None) -> list[tuple[str, str]]:
    """Every problem of the trial-layer keys of a study with defaults filled.

    Endpoint keys ``observed``, ``test``, ``from``, ``to``, ``above_baseline`` on the
    older endpoint types, responders of a time to event, column name clashes, the
    and the ``dropout`` section. (The ``success`` section and the memory of the probes
    per Dask task are checked by :mod:`vtrial.study.config`.)

    Returns
    -------
    list of (where, message)
        ``where`` is the key path in the study.
    """
    out: list[tuple[str, str]] = []
    eps: Mapping[str, Any] = d["endpoints"]
    obs = d["outputs"].get("observations")
    observed_outputs = list(obs["outputs"]) if obs else []
    obs_times = _observation_times(d)  # None: unknown (too many, refused elsewhere)
    for name, ep in eps.items():
        where = f"endpoints.{name}"
        typ = ep["type"]
        kind = endpoint_kind(ep)
        if typ not in TRIAL_TYPES:
            extra = [k for k in ("from", "to", "above_baseline") if k in ep]
            if extra:
                out.append((where, f"keys {extra} only apply to type auec"))
        if "test" in ep and ep["test"] not in TESTS[kind]:
            out.append(
                (
                    f"{where}.test",
                    f"a {kind} endpoint takes {list(TESTS[kind])}, got {ep['test']!r}",
                )
            )
        if ep.get("observed"):
            if typ not in AT_TYPES:
                out.append(
                    (f"{where}.observed", f"only applies to types {list(AT_TYPES)}, got type {typ}")
                )
            elif ep.get("output") not in observed_outputs:
                out.append(
                    (
                        f"{where}.observed",
                        f"{ep.get('output')!r} is not in outputs.observations.outputs "
                        f"{observed_outputs}",
                    )
                )
            elif obs_times is not None:
                need = [float(ep["at"])] + ([0.0] if typ != "value_at" else [])
                off = [t for t in need if t not in obs_times]
                if off:
                    out.append(
                        (
                            f"{where}.observed",
                            f"needs sampling times (outputs.observations) at {off} h",
                        )
                    )
        if typ == "responder":
            ref = ep.get("endpoint")
            if ref in eps and eps[ref]["type"] == "time_to_event":
                out.append(
                    (
                        f"{where}.endpoint",
                        f"{ref!r} is a time to event (censored); a responder needs a "
                        "continuous endpoint",
                    )
                )
        if typ == "time_to_event":
            col = f"{name}_event"
            if col in eps:
                out.append((f"endpoints.{col}", f"clashes with the event column of {name!r}"))
    if DROPOUT_COLUMN in eps:
        out.append(("endpoints", f"name {DROPOUT_COLUMN!r} is reserved for the dropout time"))
    if d.get("dropout"):
        out += _dropout_problems(d, model)
        spec = d["dropout"]
        if spec["censoring"] == "locf" and "visits" in spec:
            visits = assessment_times(spec["visits"], float(d["simulation"]["end"]))
            for name, ep in eps.items():
                if ep.get("observed") and ep["type"] in AT_TYPES and obs_times is not None:
                    off = [v for v in [0.0, *visits] if v not in obs_times]
                    if off:
                        out.append(
                            (
                                f"endpoints.{name}.observed",
                                "locf carries observations forward: the baseline 0 and "
                                f"dropout.visits must be sampling times "
                                f"(outputs.observations), missing {off} h",
                            )
                        )
    return out


def _observation_times(d: Mapping[str, Any]) -> set[float] | None:
    """Sampling times of ``outputs.observations`` (empty without), or None when their
    number is over the limit (reported by the validation of ``outputs.observations``)."""
    obs = d["outputs"].get("observations")
    if not obs:
        return set()
    if "every" in obs:
        lo, hi, step = float(obs["from"]), float(obs["to"]), float(obs["every"])
        if (hi - lo) / step + 1 > MAX_OBSERVATION_TIMES:
            return None
    return {float(t) for t in observation_times(obs, float(d["simulation"]["end"]))}


_RESPONDER_KEYS = ("below", "below_or_equal", "above", "above_or_equal")
#: keys of a best_response endpoint besides type, output and description
_ASSESSMENT_KEYS = ("every", "first", "by", "times", "complete_below", "min_increase")


def endpoint_section_problems(d: Mapping[str, Any], model: Model) -> list[tuple[str, str]]:
    """Problems of the ``endpoints`` section of a study (defaults filled): outputs,
    ``at`` times, responders and the endpoint they threshold, best-response
    schedules, the trial-layer types (:func:`endpoint_problems`) and names reserved
    for patient-table columns. (:func:`trial_problems` checks the keys shared by the
    types.)

    Returns
    -------
    list of (where, message)
    """
    outputs = list(model.outputs)
    end = float(d["simulation"]["end"])
    out: list[tuple[str, str]] = []

    def bad(where: str, msg: str) -> None:
        out.append((where, msg))

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
                bad(f"{where}.output", f"not a model output {outputs}, got {ep.get('output')!r}")
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
    return out
