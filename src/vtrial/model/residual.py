"""Residual error models: observed values (DV) from true model values (IPRED).

A model output ``f`` (the individual prediction, IPRED) is observed as ``y`` (DV) by
adding a residual error drawn per observation, as NONMEM, mrgsolve and Simulx do. The
error model of an output is a mapping of one or two of these keys (the form of
``model.residual_error.<OUTPUT>`` in a study file):

=================  ======================================================================
``additive: a``     ``y = f + a * eps`` (``a`` in the output's unit)
``proportional: b`` ``y = f + b * |f| * eps`` (``b`` a fraction: 0.15 is a 15 % CV)
both (combined)     ``y = f + sqrt(a**2 + (b * f)**2) * eps``
``exponential: s``  ``y = f * exp(s * eps)`` (``s`` the SD on the log scale)
=================  ======================================================================

with ``eps ~ N(0, 1)``, one draw per observation. The combined model adds the
*variances* of its two parts (NONMEM's usual ``Y = F + SQRT(THETA(1)**2 +
THETA(2)**2 * F**2) * EPS(1)`` with SIGMA fixed to 1, Monolix ``combined2``); this is
the same distribution as ``Y = F + F * EPS(1) + EPS(2)`` with two independent epsilons
of variances ``b**2`` and ``a**2``. It is not the sum of the standard deviations
(``a + b * |f|``, Monolix ``combined1``). ``exponential`` cannot be combined with the
other two. It leaves ``f = 0`` at 0 (and keeps the sign of a negative ``f``, for
which the log-scale model is not defined).

An optional ``lloq`` (lower limit of quantification, the output's unit) flags
observations strictly below it as BLQ: the value is kept and a boolean flag is added,
no row is dropped. An entry with only ``lloq`` observes the output without error.

The standard normal draws are keyed like every other draw of vtrial
(:mod:`vtrial.infra.rng`): the patient with id ``i`` (1-based) of replicate ``r`` gets
``ndtri(keyed_uniforms(seed, "residual", r, n, k)[i - 1])`` for any ``n >= i``, one
row of ``k = T * O`` normals for ``T`` sampling times and ``O`` observed outputs, in
the order **time-major**: column ``t * O + o`` belongs to the ``t``-th sampling time
(ascending) and the ``o``-th observed output in **sorted name order**. A patient's
observations therefore do not depend on chunks, shards, workers or other patients;
they change if the sampling times or the set of observed outputs change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from vtrial.infra.rng import keyed_uniform_rows

#: most sampling times of ``outputs.observations.every`` (and of ``times``, by the schema)
MAX_OBSERVATION_TIMES = 10_000


#: purpose string of the residual-error draws (see :mod:`vtrial.infra.rng`)
PURPOSE = "residual"
#: error model keys; each takes a number > 0
ERROR_KEYS = ("additive", "proportional", "exponential")
#: every key of a residual error entry
SPEC_KEYS = (*ERROR_KEYS, "lloq")


@dataclass(frozen=True)
class ErrorModel:
    """Residual error model of one output (see the module docstring).

    Attributes
    ----------
    additive : float
        SD of the additive part, in the output's unit (0: none).
    proportional : float
        Coefficient of variation of the proportional part, a fraction (0: none).
    exponential : float
        SD on the log scale of the exponential model (0: none); not combined with
        the other two.
    lloq : float or None
        Lower limit of quantification: observations strictly below it are BLQ.
    """

    additive: float = 0.0
    proportional: float = 0.0
    exponential: float = 0.0
    lloq: float | None = None

    def __post_init__(self) -> None:
        for key in ERROR_KEYS:
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{key}: must be a finite number >= 0, got {value}")
        if self.exponential and (self.additive or self.proportional):
            raise ValueError("exponential: cannot be combined with additive or proportional")
        if self.lloq is not None and not math.isfinite(self.lloq):
            raise ValueError(f"lloq: must be a finite number, got {self.lloq}")

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> ErrorModel:
        """The error model of a (valid) mapping such as ``{proportional: 0.15}``."""
        lloq = spec.get("lloq")
        return cls(
            additive=float(spec.get("additive", 0.0)),
            proportional=float(spec.get("proportional", 0.0)),
            exponential=float(spec.get("exponential", 0.0)),
            lloq=None if lloq is None else float(lloq),
        )

    @property
    def kind(self) -> str:
        """``none``, ``additive``, ``proportional``, ``combined`` or ``exponential``."""
        if self.exponential:
            return "exponential"
        if self.additive and self.proportional:
            return "combined"
        if self.additive:
            return "additive"
        return "proportional" if self.proportional else "none"

    def sd(self, f: np.ndarray | float) -> np.ndarray:
        """SD of the residual where it is added: ``sqrt(a² + (b·f)²)``, or ``s`` (log scale)."""
        f = np.asarray(f, dtype=np.float64)
        if self.exponential:
            return np.full(f.shape, self.exponential)
        return np.hypot(self.additive, self.proportional * f)

    def observe(self, f: np.ndarray | float, eps: np.ndarray | float) -> np.ndarray:
        """Observations of true values ``f`` given standard normal draws ``eps``.

        NaN in ``f`` gives NaN (a failed solve stays visible).

        Examples
        --------
        >>> ErrorModel(additive=0.5).observe([10.0, 10.0], [0.0, 2.0]).tolist()
        [10.0, 11.0]
        >>> ErrorModel(additive=0.3, proportional=0.04).observe(10.0, 1.0).item()
        10.5
        """
        f = np.asarray(f, dtype=np.float64)
        eps = np.asarray(eps, dtype=np.float64)
        if self.exponential:
            with np.errstate(over="ignore", invalid="ignore"):
                out: np.ndarray = f * np.exp(self.exponential * eps)
            return out
        return f + self.sd(f) * eps

    def blq(self, dv: np.ndarray | float) -> np.ndarray:
        """``dv < lloq`` (False for NaN, and everywhere without an ``lloq``)."""
        dv = np.asarray(dv, dtype=np.float64)
        if self.lloq is None:
            return np.zeros(dv.shape, dtype=bool)
        return np.asarray(dv < self.lloq, dtype=bool)


#: columns of a study's observations table, in order (:mod:`vtrial.run.chunk`)
OBSERVATION_COLUMNS = ("replicate", "patient_id", "arm", "time", "output", "ipred", "dv", "blq")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def spec_problems(
    spec: Any, outputs: Sequence[str] | None = None, *, what: str = "a model output"
) -> list[tuple[str, str]]:
    """Every problem of a residual error specification ``{OUTPUT: {key: value}}``.

    Parameters
    ----------
    spec : mapping
        Output name -> mapping of :data:`SPEC_KEYS`.
    outputs : sequence of str, optional
        The allowed output names (not checked if None).
    what : str
        How the allowed names are called in messages.

    Returns
    -------
    list of (where, message)
        ``where`` is relative to the specification (``CP``, ``CP.additive``); the
        message names the rule and the value found.
    """
    if not isinstance(spec, Mapping):
        return [("", f"must be a mapping output -> error model, got {type(spec).__name__}")]
    out: list[tuple[str, str]] = []
    for name, entry in spec.items():
        if outputs is not None and name not in outputs:
            out.append((str(name), f"not {what} {list(outputs)}, got {name!r}"))
        if not isinstance(entry, Mapping):
            out.append((str(name), f"must be a mapping of {list(SPEC_KEYS)}, got {entry!r}"))
            continue
        unknown = sorted(str(k) for k in entry if k not in SPEC_KEYS)
        if unknown:
            out.append(
                (str(name), f"unknown error model(s) {unknown} (allowed: {list(SPEC_KEYS)})")
            )
        for key in ERROR_KEYS:
            if key in entry:
                v = entry[key]
                if not _is_number(v) or not math.isfinite(v) or not v > 0:
                    out.append((f"{name}.{key}", f"must be a finite number > 0, got {v!r}"))
        if "lloq" in entry:
            v = entry["lloq"]
            if not _is_number(v) or not math.isfinite(v):
                out.append((f"{name}.lloq", f"must be a finite number, got {v!r}"))
        if not any(k in entry for k in SPEC_KEYS):
            out.append((str(name), f"needs at least one of {list(SPEC_KEYS)}, got {dict(entry)}"))
        if "exponential" in entry and ("additive" in entry or "proportional" in entry):
            both = [k for k in ERROR_KEYS if k in entry]
            out.append(
                (
                    f"{name}.exponential",
                    f"cannot be combined with additive or proportional, got {both}",
                )
            )
    return out


def parse_spec(
    spec: Mapping[str, Mapping[str, Any]], outputs: Sequence[str] | None = None
) -> dict[str, ErrorModel]:
    """Validate a residual error specification and return output -> :class:`ErrorModel`.

    Raises
    ------
    ValueError
        Every problem, one per line, as ``residual_error.<where>: <rule>, got <value>``.
    """
    problems = spec_problems(spec, outputs)
    if problems:
        raise ValueError(
            "\n".join(f"residual_error{'.' + w if w else ''}: {m}" for w, m in problems)
        )
    return {str(name): ErrorModel.from_spec(entry) for name, entry in spec.items()}


def patient_normals(seed: int, replicate: int, patient_id: np.ndarray, k: int) -> np.ndarray:
    """Standard normal residual draws of patients of one replicate, shape (n, k).

    Row ``j`` is ``ndtri(keyed_uniforms(seed, "residual", replicate, m, k)[patient_id[j]
    - 1])`` for any ``m >= patient_id[j]``; only the rows from ``min(patient_id)`` to
    ``max(patient_id)`` are drawn. Ids may come in any order and repeat.
    """
    ids = np.asarray(patient_id, dtype=np.int64)
    if ids.size == 0:
        return np.empty((0, int(k)))
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 1:
        raise ValueError(f"patient_id: must be >= 1 (1-based), got {lo}")
    u = keyed_uniform_rows(seed, PURPOSE, replicate, lo - 1, hi, k)
    z: np.ndarray = special.ndtri(u[ids - lo])
    return z


def observe_probes(
    probes: np.ndarray,
    status: np.ndarray,
    probe_times: Sequence[float] | np.ndarray,
    outputs: Sequence[str],
    *,
    times: np.ndarray,
    observed: Sequence[str],
    errors: Mapping[str, ErrorModel],
    seed: int,
    replicate: np.ndarray,
    patient_id: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``ipred``, ``dv`` and ``blq`` (each (n, T, O)) of patients at sampling times.

    ``ipred`` is taken from the kernel's ``probes`` (n, probe times, outputs) at
    ``times`` (each one of `probe_times`) for the `observed` outputs (each one of
    `outputs`), NaN for a patient whose ``status`` is not 0; the residual draws are
    :func:`patient_normals` of each patient's replicate, so any chunk of patients gets
    the same observations; ``errors`` maps an output to its error model (outputs
    without one are observed exactly; :attr:`Observations.errors`).
    """
    t_idx = [list(probe_times).index(float(x)) for x in times]
    o_idx = [list(outputs).index(x) for x in observed]
    ipred = probes[:, t_idx, :][:, :, o_idx].astype(np.float64)
    ipred[status != 0] = np.nan
    k = len(t_idx) * len(o_idx)
    eps = np.empty((ipred.shape[0], k))
    for r in np.unique(replicate):
        rows = replicate == r
        eps[rows] = patient_normals(seed, int(r), patient_id[rows], k)
    models = [errors.get(x) for x in observed]
    dv, blq = observe_patients(ipred, models, eps)
    return ipred, dv, blq


def observe_patients(
    ipred: np.ndarray, models: Sequence[ErrorModel | None], eps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Observations of ``ipred`` (n, T, O) with draws ``eps`` (n, T * O) in time-major order.

    ``models[o]`` is the error model of output ``o`` (None: observed without error).
    Returns ``dv`` (n, T, O) float64 and ``blq`` (n, T, O) bool.
    """
    ipred = np.asarray(ipred, dtype=np.float64)
    n, t, o = ipred.shape
    if len(models) != o:
        raise ValueError(f"models: need one per output ({o}), got {len(models)}")
    e = np.asarray(eps, dtype=np.float64).reshape(n, t, o)
    dv = ipred.copy()
    blq = np.zeros(ipred.shape, dtype=bool)
    for j, m in enumerate(models):
        if m is None:
            continue
        dv[:, :, j] = m.observe(ipred[:, :, j], e[:, :, j])
        blq[:, :, j] = m.blq(dv[:, :, j])
    return dv, blq


def add_observations(
    df: pd.DataFrame,
    residual_error: Mapping[str, Mapping[str, Any]],
    *,
    seed: int = 0,
    replicate: int = 0,
    outputs: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Add observed values to a tidy time-course table (:func:`vtrial.engine.api.simulate`).

    Parameters
    ----------
    df : DataFrame
        Columns ``patient_id`` (integers >= 1), ``time`` (h) and one column per output.
    residual_error : mapping
        Output -> error model, as ``model.residual_error`` of a study file, e.g.
        ``{"CP": {"proportional": 0.15, "additive": 0.05, "lloq": 0.01}}``.
    seed : int
        Seed of the keyed draws.
    replicate : int
        Replicate of the keyed draws.
    outputs : sequence of str, optional
        Output columns that may take an error model (default: every numeric column
        other than ``patient_id`` and ``time``).

    Returns
    -------
    DataFrame
        A copy of ``df`` with ``<OUTPUT>_obs`` (float64) for every output of
        ``residual_error`` and ``<OUTPUT>_blq`` (bool) for those with an ``lloq``.
        Draws are keyed as in the study pipeline (module docstring): ``T`` is the
        number of distinct times of ``df`` and ``O`` the number of outputs of
        ``residual_error``, in sorted name order; the result does not depend on the
        order of the rows nor on the other patients.

    Examples
    --------
    >>> df = pd.DataFrame({"patient_id": [1, 1], "time": [1.0, 2.0], "CP": [2.0, 1.0]})
    >>> out = add_observations(df, {"CP": {"proportional": 0.1, "lloq": 1.0}}, seed=1)
    >>> list(out.columns)
    ['patient_id', 'time', 'CP', 'CP_obs', 'CP_blq']
    """
    if outputs is None:
        outputs = [
            str(c)
            for c in df.columns
            if c not in ("patient_id", "time") and pd.api.types.is_numeric_dtype(df[c])
        ]
    models = parse_spec(residual_error, outputs)
    names = sorted(models)
    ids = df["patient_id"].to_numpy()
    if not np.issubdtype(ids.dtype, np.integer) or (ids.size and ids.min() < 1):
        raise ValueError(
            "patient_id: residual errors are keyed by integer patient ids >= 1, "
            f"got dtype {ids.dtype}" + (f", minimum {ids.min()}" if ids.size else "")
        )
    time = df["time"].to_numpy(dtype=np.float64)
    times = np.unique(time)
    t_idx = np.searchsorted(times, time)
    uid, inverse = np.unique(ids, return_inverse=True)
    eps = patient_normals(seed, replicate, uid, times.size * len(names))
    out = df.copy()
    for j, name in enumerate(names):
        z = eps[inverse, t_idx * len(names) + j] if eps.size else np.zeros(len(df))
        m = models[name]
        dv = m.observe(df[name].to_numpy(dtype=np.float64), z)
        out[f"{name}_obs"] = dv
        if m.lloq is not None:
            out[f"{name}_blq"] = m.blq(dv)
    return out


def observation_times(observations: Mapping[str, Any] | None, end: float) -> np.ndarray:
    """Sampling times (h) of an ``outputs.observations`` section, sorted, unique.

    ``times`` plus ``from, from + every, ...`` up to ``to`` (a last time within 1e-9
    steps of ``to`` is taken as ``to``); empty without observations. ``end`` is
    ``simulation.end``, the default of ``to``.
    """
    if not observations:
        return np.empty(0)
    pts = [np.asarray(observations.get("times", []), dtype=np.float64)]
    if "every" in observations:
        lo, hi = float(observations.get("from", 0.0)), float(observations.get("to", end))
        step = float(observations["every"])
        if hi >= lo:
            m = int(np.floor((hi - lo) / step + 1e-9))
            pts.append(np.minimum(lo + step * np.arange(m + 1), hi))
    return np.unique(np.concatenate(pts))


@dataclass(frozen=True, eq=False)
class Observations:
    """The typed ``outputs.observations`` and ``model.residual_error`` of a study.

    Attributes
    ----------
    times : ndarray
        Sampling times (h), sorted, unique (:func:`observation_times`); empty without
        observations.
    outputs : tuple of str
        Observed outputs in sorted name order (the order of the residual draws).
    errors : mapping of str to ErrorModel
        Output -> its residual error model (outputs without one are observed exactly).
    """

    times: np.ndarray
    outputs: tuple[str, ...]
    errors: Mapping[str, ErrorModel]

    @classmethod
    def from_data(
        cls,
        observations: Mapping[str, Any] | None,
        residual_error: Mapping[str, Mapping[str, Any]],
        end: float,
    ) -> Observations:
        """The :class:`Observations` of validated study sections (``end``:
        ``simulation.end``)."""
        times = observation_times(observations, end)
        times.setflags(write=False)
        outs = tuple(sorted(str(o) for o in observations["outputs"])) if observations else ()
        errors = {str(k): ErrorModel.from_spec(v) for k, v in residual_error.items()}
        return cls(times, outs, MappingProxyType(errors))


def observation_problems(
    d: Mapping[str, Any], outputs: Sequence[str] | None
) -> list[tuple[str, str]]:
    """Problems of ``model.residual_error`` and ``outputs.observations`` of a study
    (defaults filled); ``outputs``: the model's outputs (None if the model is invalid).

    Returns
    -------
    list of (where, message)
    """
    out: list[tuple[str, str]] = []

    def bad(where: str, msg: str) -> None:
        out.append((where, msg))

    res: dict[str, Any] = d["model"].get("residual_error", {})
    for where, msg in spec_problems(res, outputs):
        bad("model.residual_error" + (f".{where}" if where else ""), msg)
    obs = d["outputs"].get("observations")
    if obs is None:
        # the twins' estimator (outputs.twins) reads the residual error of the dataset's
        # observations: the likelihood of each subject's levels
        if res and "twins" not in d["outputs"]:
            bad(
                "model.residual_error",
                "applies to outputs.observations (and to the twins' estimator, "
                f"outputs.twins), neither is set, got entries {sorted(res)}",
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
        dataset = d["population"].get("dataset") or {}
        if not obs["times"] and dataset.get("doses") != "recorded":  # records: the times
            bad(here, "needs sampling 'times' or 'every' (with optional 'from' and 'to')")
    return out
