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

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from vtrial.infra.rng import patient_uniforms

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


__all__ = ["drawn_grades", "event_uniforms", "probability_event_columns"]


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
