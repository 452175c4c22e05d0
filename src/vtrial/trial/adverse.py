"""Adverse-event grades drawn from model probabilities (proportional odds, logistic).

An adverse event given as ``probabilities: [P_GE1, ..., P_GEK]`` (model outputs, the
probability of grade >= k, e.g. from the library model ``ae_proportional_odds``) is
graded by one keyed uniform draw per patient: with ``p_k`` the maximum over the
simulated time course of output k (the worst exposure),

    grade = number of k with u < p_k,   u ~ U(0, 1),

so that P(grade >= k) = p_k when the p_k decrease with k (they are made
non-increasing by a running minimum first: P(grade >= k) = min(p_1, ..., p_k)).
The uniform of a patient is row ``patient_id - 1`` of the stream keyed by
``(study seed, "ae:<event>", replicate)`` (:mod:`vtrial.infra.rng`), so a patient's grade
does not depend on chunks, shards, workers or the other patients.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from vtrial.infra.rng import patient_uniforms

if TYPE_CHECKING:
    from vtrial.model.spec import Model

#: Built-in CTCAE v5 grading scales: ``lln`` is the grade-1 limit and ``thresholds``
#: the limits of grades 2.. (entry 0 is None, replaced by ``lln``), in ``unit``. For a
#: ``below`` scale ``lln`` is the lower limit of normal (the study may override it);
#: for an ``above`` scale it is a fixed upper limit (QTc > 450 ms).
GRADING_SCALES: dict[str, dict[str, Any]] = {
    "ctcae_v5_neutrophil_count_decreased": {
        "direction": "below",
        "lln": 2.0,
        "thresholds": [None, 1.5, 1.0, 0.5],
        "unit": "10^9/L",
    },
    "ctcae_v5_platelet_count_decreased": {
        "direction": "below",
        "lln": 150.0,
        "thresholds": [None, 75.0, 50.0, 25.0],
        "unit": "10^9/L",
    },
    # grade 1: average QTc 450-480 ms, grade 2: 481-500 ms, grade 3: >= 501 ms (or a
    # change > 60 ms: grade a change output with custom thresholds); grade 4
    # (torsade de pointes, serious arrhythmia) is not a QTc level
    "ctcae_v5_electrocardiogram_qt_corrected_interval_prolonged": {
        "direction": "above",
        "lln": 450.0,
        "thresholds": [None, 480.0, 500.0],
        "unit": "ms",
    },
}


__all__ = [
    "AdverseEvent",
    "adverse_events_from_data",
    "drawn_grades",
    "event_uniforms",
    "probability_event_columns",
]


@dataclass(frozen=True)
class AdverseEvent:
    """One adverse event of a study (typed ``adverse_events.<name>``).

    Either graded from thresholds on a model output (``output``, ``thresholds`` of
    grades 1.., ``direction`` -1 below / +1 above; a ``grading`` scale is resolved
    into its thresholds, with the study's ``lln``), or drawn from model probabilities
    (``probabilities``: the outputs P(grade >= 1), P(grade >= 2), ...).
    """

    name: str
    output: str | None = None
    thresholds: tuple[float, ...] = ()
    direction: int = -1
    probabilities: tuple[str, ...] | None = None

    @property
    def n_grades(self) -> int:
        """The grades the event defines: one per threshold, or per probability."""
        return len(self.probabilities) if self.probabilities is not None else len(self.thresholds)

    @property
    def drawn(self) -> bool:
        """Whether the grade is drawn from ``probabilities`` (no thresholds)."""
        return self.probabilities is not None

    def grading(self) -> tuple[list[float], int]:
        """Thresholds of grades 1.. and direction (-1 below, +1 above).

        Raises ValueError for an event graded from ``probabilities``.
        """
        if self.drawn:
            raise ValueError(f"adverse event {self.name!r} is graded from probabilities")
        return list(self.thresholds), self.direction


def adverse_event_from_data(name: str, spec: Mapping[str, Any]) -> AdverseEvent:
    """The typed form of one validated ``adverse_events`` entry."""
    if "probabilities" in spec:
        return AdverseEvent(name, probabilities=tuple(str(p) for p in spec["probabilities"]))
    if "grading" in spec:
        scale = GRADING_SCALES[spec["grading"]]
        lln = float(spec.get("lln", scale["lln"]))
        thr = (lln, *(float(x) for x in scale["thresholds"][1:]))
        direction = -1 if scale["direction"] == "below" else 1
    else:
        thr = tuple(float(x) for x in spec["thresholds"])
        direction = -1 if spec.get("direction", "below") == "below" else 1
    return AdverseEvent(name, str(spec["output"]), thr, direction)


def adverse_events_from_data(events: Mapping[str, Any]) -> Mapping[str, AdverseEvent]:
    """The typed ``adverse_events`` section (name -> event, read-only), in study order."""
    return MappingProxyType({name: adverse_event_from_data(name, s) for name, s in events.items()})


def grade_references(
    events: Mapping[str, AdverseEvent],
) -> dict[str, list[tuple[float, str]]]:
    """Output -> the grade 3 and 4 thresholds of the events graded on it, as the band
    plots draw them: ``(value, "<event> grade 3")``.

    Examples
    --------
    >>> ev = adverse_event_from_data("neutropenia", {"output": "ANC",
    ...     "grading": "ctcae_v5_neutrophil_count_decreased"})
    >>> grade_references({"neutropenia": ev})
    {'ANC': [(1.0, 'neutropenia grade 3'), (0.5, 'neutropenia grade 4')]}
    """
    out: dict[str, list[tuple[float, str]]] = {}
    for e in events.values():
        if e.output is None or e.drawn:
            continue
        for grade in (3, 4):
            if len(e.thresholds) >= grade:
                out.setdefault(e.output, []).append(
                    (e.thresholds[grade - 1], f"{e.name} grade {grade}")
                )
    return out


def threshold_grades(
    worst: npt.ArrayLike, thresholds: tuple[float, ...] | list[float], direction: int
) -> npt.NDArray[np.int64]:
    """The grade of each worst value: the number of grade limits it is strictly beyond
    (below each limit for ``direction`` -1, above for +1), CTCAE's convention (an ANC
    of 0.99 x 10^9/L is grade 3, 1.0 is grade 2); 0 for NaN.

    Examples
    --------
    >>> threshold_grades([2.0, 1.0, 0.99, 0.3], (1.5, 1.5, 1.0, 0.5), -1).tolist()
    [0, 2, 3, 4]
    """
    w = np.asarray(worst, dtype=np.float64)
    thr = np.asarray(thresholds, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        if direction < 0:
            beyond = w[..., None] < thr
        else:
            beyond = w[..., None] > thr
    return np.asarray(beyond.sum(axis=-1), dtype=np.int64)


def threshold_gradings(
    events: Mapping[str, AdverseEvent],
) -> dict[str, tuple[tuple[float, ...], int, str]]:
    """Threshold-graded events as the dose rules read them: name -> (thresholds,
    direction, output) (:data:`vtrial.protocol.rules.Gradings`)."""
    return {
        e.name: (e.thresholds, e.direction, e.output)
        for e in events.values()
        if e.output is not None and not e.drawn
    }


def event_uniforms(
    seed: int, event: str, replicate: npt.ArrayLike, patient_id: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """The grading uniform of each patient of an adverse event.

    Parameters
    ----------
    seed : int
        Study seed.
    event : str
        Adverse-event name (the purpose of the stream is ``"ae:<event>"``).
    replicate, patient_id : array_like of int, shape (n,)
        The patients (``patient_id`` 1-based within its replicate).

    Returns
    -------
    ndarray, shape (n,)
        ``keyed_uniforms(seed, f"ae:{event}", r, max_id, 1)[patient_id - 1, 0]`` for
        each patient, computed per replicate from the rows the patients need only.
    """
    return patient_uniforms(seed, f"ae:{event}", replicate, patient_id)


def drawn_grades(probabilities: npt.ArrayLike, u: npt.ArrayLike) -> npt.NDArray[np.int8]:
    """Grades from worst probabilities of grade >= 1..K and one uniform per patient.

    Parameters
    ----------
    probabilities : array_like, shape (n, K)
        Column k-1: probability of grade >= k (the maximum over time).
    u : array_like, shape (n,)
        Uniforms in (0, 1).

    Returns
    -------
    ndarray of int8, shape (n,)
        The number of k with ``u < min(p_1, ..., p_k)`` (0..K); a NaN probability
        counts as not reached.

    Examples
    --------
    >>> drawn_grades([[0.5, 0.2, 0.1], [0.5, 0.2, 0.1], [0.3, 0.4, 0.0]],
    ...              [0.15, 0.6, 0.35]).tolist()
    [2, 0, 0]
    """
    p = np.minimum.accumulate(np.asarray(probabilities, dtype=np.float64), axis=1)
    uu = np.asarray(u, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.asarray((uu[:, None] < p).sum(axis=1), dtype=np.int8)


def probability_event_columns(
    seed: int,
    event: str,
    worst: npt.NDArray[np.float64],
    replicate: npt.ArrayLike,
    patient_id: npt.ArrayLike,
    ok: npt.NDArray[np.bool_],
) -> dict[str, Any]:
    """Patients-table columns of an adverse event graded from probabilities.

    Parameters
    ----------
    seed : int
        Study seed.
    event : str
        Event name ``E``.
    worst : ndarray, shape (n, K)
        Maximum over the evaluation grid of each probability output, grade order.
    replicate, patient_id : array_like of int, shape (n,)
    ok : ndarray of bool, shape (n,)
        Solves that succeeded (others get a null grade).

    Returns
    -------
    dict
        ``ae_E_grade`` (nullable Int8), ``ae_E_worst`` (the worst probability of
        grade >= 1) and ``ae_E_time_grade3`` (NaN: a drawn grade has no onset time).
    """
    u = event_uniforms(seed, event, replicate, patient_id)
    grade = drawn_grades(worst, u)
    graded = pd.array(np.where(ok, grade, 0).astype(np.int8), dtype="Int8")
    graded[~ok] = pd.NA
    return {
        f"ae_{event}_grade": graded,
        f"ae_{event}_worst": np.asarray(worst[:, 0], dtype=np.float64).copy(),
        f"ae_{event}_time_grade3": np.full(len(u), np.nan),
    }


def adverse_event_problems(events: Mapping[str, Any], model: Model) -> list[tuple[str, str]]:
    """Problems of the ``adverse_events`` section: outputs, grading scale or
    thresholds (monotone), ``direction``, ``lln``, and events graded from
    probabilities (:func:`probability_event_problems`).

    Returns
    -------
    list of (where, message)
    """
    outputs = list(model.outputs)
    out: list[tuple[str, str]] = []

    def bad(where: str, msg: str) -> None:
        out.append((where, msg))

    for ev, spec in events.items():
        where = f"adverse_events.{ev}"
        if "probabilities" in spec:  # grade drawn from model probabilities
            for key, msg in probability_event_problems(spec, model):
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
                bad(f"{where}.thresholds", f"must be strictly {order} for grades 1.., got {thr}")
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
    return out


def probability_event_problems(
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
