"""Adaptive dosing and adherence: protocols as they are really run.

An arm may declare ``modification`` (dose-modification rules evaluated at decision
times from the simulated patient) and ``adherence`` (missed doses and dosing-time
jitter). Both run inside the compiled kernel:

- the decision times are events of the arm's event table (``EventKind.DECIDE``); at
  each one the kernel evaluates the outputs from the state at that time (an output at
  a dose time is pre-dose, so ``CP`` at a decision on a dose day is the trough),
  optionally with assay error, and calls ``_decide``, generated here from the rules:
  the first rule whose ``when`` holds acts;
- ``hold`` delays the decision and every later event of the arm by ``recheck`` hours
  (an infusion already running still ends on time), then re-evaluates the rules (the
  planned schedule shifts, as a cycle delay does);
  holding longer than ``max_hold`` hours at one decision discontinues;
- ``reduce``/``escalate`` move along the declared dose ``levels`` (bounded by the
  lowest and highest); ``discontinue`` stops every later dose; ``give`` gives as
  planned (useful before a lower-priority rule);
- every planned administration gets one row in the dose ledger (time, planned and
  given amount, reason), and the kernel returns per-patient summaries: relative dose
  intensity, holds, reductions, time of discontinuation, hours held.

Adherence draws (missed doses, jitter) are made on the host, keyed by (seed,
replicate, patient, administration number) and not by arm, so a patient misses the
same doses in every arm (paired comparisons). They apply to oral doses only (IV
doses are given in the clinic).

Names usable in ``when``: the model's outputs (with assay error if declared in
``measure``), ``grade_<E>`` (worst CTCAE grade of adverse event E since the previous
decision), ``max_grade_<E>`` (since the start), ``reductions``, ``holds``, ``held``
(hours held at this decision so far), ``dose`` (current dose, in the regimen's unit)
and ``t`` (h).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import special

from vtrial.errors import ExpressionError
from vtrial.infra.rng import patient_uniforms
from vtrial.model.expressions import parse_expression, to_source
from vtrial.protocol.codes import ACTIONS, REASONS, EventKind
from vtrial.protocol.dosing import EventTable, Phase, regimen_phases, schedule_starts

if TYPE_CHECKING:
    from vtrial.protocol.arms import Adherence, Arm, Modification

#: threshold-graded adverse events the rules can read: name -> (thresholds of grades
#: 1.., direction -1 below / +1 above, output)
#: (:func:`vtrial.trial.adverse.threshold_gradings`)
Gradings = Mapping[str, tuple[Sequence[float], int, str]]


# ACTIONS (rule action -> kernel code) and REASONS (dose-ledger reason code -> label)
# are defined in vtrial.protocol.codes, shared with the kernel
#: columns of the per-patient dose summary joined into the patients table
DOSE_SUMMARY = (
    "relative_dose_intensity",
    "n_holds",
    "n_reductions",
    "time_discontinued",
    "hours_held",
)
#: assay-error draws per patient and measured output (evaluations beyond reuse the last)
MAX_EVALUATIONS = 64
_NO_LIMIT = 1e300
_COUNTERS = ("reductions", "holds", "held", "dose")


@dataclass(frozen=True)
class RuleProgram:
    """Kernel inputs of a study's dose-modification rules.

    Attributes
    ----------
    source : str
        Generated ``N_MEAS`` and ``_decide`` (replaces the kernel template's block).
    levels : ndarray, shape (n_arms, L)
        Dose levels of each arm, ascending, padded with NaN (one NaN column if none).
    start_level : ndarray of int64, shape (n_arms,)
        Index of the arm's planned dose in its levels (-1: no levels).
    decisions : list of list of float
        Decision times (h) of each arm.
    measured : list of (output, kind, sd)
        Outputs measured with assay error, in the order of the kernel's ``eps``.
    params : ndarray, shape (n_arms, R, 4)
        Per arm and rule: action code (:data:`ACTIONS`), recheck delay (h), levels
        moved, maximum hold (h).
    """

    source: str
    levels: np.ndarray
    start_level: np.ndarray
    decisions: list[list[float]]
    measured: list[tuple[str, str, float]]
    params: np.ndarray


def decision_times(mod: Modification, phases: Sequence[Phase], end: float) -> list[float]:
    """Decision times (h) of one arm: ``doses``, ``cycles`` or ``(every, start)``.

    Examples
    --------
    >>> from vtrial.protocol.arms import arms_from_data
    >>> (arm,) = arms_from_data([{"name": "a", "regimen": {"route": "oral", "dose": 1},
    ...     "modification": {"decide_at": {"every": 336}, "rules": [
    ...         {"when": "t > 0", "action": "discontinue"}]}}])
    >>> decision_times(arm.modification, arm.phases, 1000)
    [0.0, 336.0, 672.0]
    """
    at = mod.decide_at
    if isinstance(at, str):  # doses, cycles
        times = schedule_starts(phases, at)
    else:
        every, start = at
        times = [float(t) for t in np.arange(start, end, every)]
    return [t for t in times if 0.0 <= t < end]


def _names(
    outputs: Sequence[str], gradings: Gradings
) -> tuple[dict[str, int], dict[str, tuple[Sequence[float], int, int]]]:
    """Model outputs -> index; threshold-graded adverse events -> (thresholds, dir, output)."""
    outs = {o: j for j, o in enumerate(outputs)}
    graded = {ev: (thr, d, outs[out]) for ev, (thr, d, out) in gradings.items()}
    return outs, graded


def rule_problems(
    arms: Sequence[Mapping[str, Any]], outputs: Sequence[str], gradings: Gradings
) -> list[tuple[str, str]]:
    """Semantic problems of every arm's ``modification`` and ``adherence`` (where, rule).

    ``arms``: the schema-checked ``arms`` section; ``outputs``: the model's outputs;
    ``gradings``: the study's threshold-graded adverse events.
    """
    problems: list[tuple[str, str]] = []
    outs, graded = _names(outputs, gradings)
    known = [*outs, *(f"grade_{e}" for e in graded), *(f"max_grade_{e}" for e in graded)]
    known += [*_COUNTERS, "t"]
    measured_as: dict[str, tuple[int, tuple[str, float]]] = {}
    for i, arm in enumerate(arms):
        mod = arm.get("modification")
        where = f"arms[{i}].modification"
        phases = regimen_phases(arm["regimen"])
        if mod:
            if not phases:
                problems.append((where, "an arm without doses has nothing to modify"))
                continue
            doses = {ph.dose for ph in phases}
            levels = mod.get("levels")
            if levels is not None:
                if len(doses) != 1:
                    problems.append(
                        (
                            f"{where}.levels",
                            f"dose levels need one planned dose per arm, got {sorted(doses)}",
                        )
                    )
                elif next(iter(doses)) not in levels:
                    problems.append(
                        (
                            f"{where}.levels",
                            f"must contain the arm's planned dose {next(iter(doses)):g}, "
                            f"got {levels}",
                        )
                    )
                if len(set(levels)) != len(levels):
                    problems.append((f"{where}.levels", f"repeats a level: {levels}"))
            for out, err in (mod.get("measure") or {}).items():
                if out not in outs:
                    problems.append(
                        (f"{where}.measure.{out}", f"not a model output {sorted(outs)}")
                    )
                first = measured_as.setdefault(out, (i, _error(err)))
                if first[1] != _error(err):
                    problems.append(
                        (
                            f"{where}.measure.{out}",
                            f"must be the same assay error in every arm: arms[{first[0]}] "
                            f"has {first[1][0]} {first[1][1]:g}, got {_error(err)[0]} "
                            f"{_error(err)[1]:g}",
                        )
                    )
            for j, rule in enumerate(mod["rules"]):
                rw = f"{where}.rules[{j}]"
                try:
                    parse_expression(rule["when"], where=rw, known_names=known, boolean=True)
                except ExpressionError as exc:
                    problems.append((f"{rw}.when", f"{exc.reason} in {exc.expression!r}"))
                action = rule["action"]
                if action in ("reduce", "escalate") and levels is None:
                    problems.append((f"{rw}.action", f"{action} needs the arm's dose levels"))
                if action == "hold" and "recheck" not in rule:
                    problems.append((f"{rw}.recheck", "a hold needs recheck (h) > 0"))
                if action != "hold":
                    for key in ("recheck", "max_hold"):
                        if key in rule:
                            problems.append((f"{rw}.{key}", f"only a hold has {key}"))
                if "max_hold" in rule and "recheck" in rule and rule["max_hold"] < rule["recheck"]:
                    problems.append(
                        (
                            f"{rw}.max_hold",
                            f"must be >= recheck ({rule['recheck']}), got {rule['max_hold']}",
                        )
                    )
        adh = arm.get("adherence")
        if adh:
            wa = f"arms[{i}].adherence"
            if not any(ph.route == "oral" for ph in phases):
                problems.append((wa, "adherence applies to oral doses; the arm has none"))
            if adh.get("model", "bernoulli") == "markov" and "p_stay_missing" not in adh:
                problems.append((f"{wa}.p_stay_missing", "the markov model needs it"))
    return problems


def rules_source(arms: Sequence[Arm], outputs: Sequence[str], gradings: Gradings) -> str | None:
    """``N_MEAS`` and ``_decide`` generated from the arms' rules (None if none)."""
    if not any(a.modification for a in arms):
        return None
    outs, graded = _names(outputs, gradings)
    measured = _measured(arms)
    meas_index = {(m[0]): k for k, m in enumerate(measured)}
    ind = "    "
    lines = [
        f"N_MEAS = {len(measured)}  # outputs measured with assay error at decisions",
        "",
        "",
        '@njit(cache=True, nogil=True, error_model="numpy")',
        "def _decide(a, t, o, wmin, wmax, omin, omax, eps, st, act):  # pragma: no cover",
        f'{ind}"""Dose-modification rules of the study (generated by vtrial.protocol.rules)."""',
        f"{ind}v_reductions = st[1]",
        f"{ind}v_holds = st[2]",
        f"{ind}v_held = st[3]",
        f"{ind}v_dose = st[4]",
    ]
    for ev, (thr, direction, j) in graded.items():
        for prefix, lo, hi in (("g", "wmin", "wmax"), ("mg", "omin", "omax")):
            arr = lo if direction < 0 else hi
            op = "<" if direction < 0 else ">"
            terms = " + ".join(f"(1.0 if {arr}[{j}] {op} {float(x)!r} else 0.0)" for x in thr)
            lines.append(f"{ind}{prefix}_{ev} = {terms or '0.0'}")
    for a, arm in enumerate(arms):
        mod = arm.modification
        if mod is None:
            continue
        lines.append(f"{ind}if a == {a}:")
        names: dict[str, str] = {"t": "t", **{c: f"v_{c}" for c in _COUNTERS}}
        for out, j in outs.items():
            names[out] = f"o[{j}]"
        for m in mod.measure:
            out, kind = m.output, m.kind
            k = meas_index[out]
            val = f"o[{outs[out]}]"
            # eps arrives scaled by the error's sd (assay_normals): the sd is data
            if kind == "additive":
                text = f"{val} + eps[{k}]"
            elif kind == "proportional":
                text = f"{val} * (1.0 + eps[{k}])"
            else:
                text = f"{val} * math.exp(eps[{k}])"
            lines.append(f"{ind * 2}m_{a}_{out} = {text}")
            names[out] = f"m_{a}_{out}"
        for ev in graded:
            names[f"grade_{ev}"] = f"g_{ev}"
            names[f"max_grade_{ev}"] = f"mg_{ev}"
        for r, rule in enumerate(mod.rules):
            expr = parse_expression(
                rule.when, where=f"arms[{a}].rules[{r}]", known_names=list(names), boolean=True
            )
            # only the conditions are code: the action and its numbers are data
            # (RuleProgram.params), so studies that differ in them share a kernel
            lines += [
                f"{ind * 2}if {to_source(expr, names)}:",
                f"{ind * 3}act[0] = 1.0",
                f"{ind * 3}act[4] = {float(r)!r}",
                f"{ind * 3}return",
            ]
    lines += [f"{ind}act[0] = 0.0", f"{ind}return", "", ""]
    return "\n".join(lines) + "\n"


def _error(err: Mapping[str, float]) -> tuple[str, float]:
    (kind, sd), *_ = err.items()
    return str(kind), float(sd)


def _measured(arms: Sequence[Arm]) -> list[tuple[str, str, float]]:
    out: dict[str, tuple[str, str, float]] = {}
    for arm in arms:
        for m in arm.modification.measure if arm.modification else ():
            out.setdefault(m.output, (m.output, m.kind, m.sd))
    return list(out.values())


def rule_program(
    arms: Sequence[Arm], outputs: Sequence[str], gradings: Gradings, end: float
) -> RuleProgram | None:
    """The kernel inputs of the arms' rules, None if no arm declares any.

    ``outputs``: the model's outputs; ``gradings``: the study's threshold-graded
    adverse events; ``end``: the end of the simulation (h).
    """
    source = rules_source(arms, outputs, gradings)
    if source is None:
        return None
    mods = [a.modification for a in arms]
    width = max([1, *(len(m.levels or ()) for m in mods if m is not None)])
    levels = np.full((len(arms), width), np.nan)
    start = np.full(len(arms), -1, dtype=np.int64)
    n_rules = max(len(m.rules) for m in mods if m is not None)
    params = np.zeros((len(arms), n_rules, 4))
    decisions: list[list[float]] = []
    for a, arm in enumerate(arms):
        mod = arm.modification
        if mod is None:
            decisions.append([])
            continue
        for r, rule in enumerate(mod.rules):
            params[a, r] = (
                ACTIONS[rule.action],
                rule.recheck,
                float(rule.by),
                rule.max_hold if rule.max_hold is not None else _NO_LIMIT,
            )
        decisions.append(decision_times(mod, arm.phases, end))
        if mod.levels:
            ordered = sorted(mod.levels)
            levels[a, : len(ordered)] = ordered
            start[a] = ordered.index(arm.phases[0].dose)
    return RuleProgram(source, levels, start, decisions, _measured(arms), params)


def assay_normals(
    seed: int, program: RuleProgram | None, replicate: np.ndarray, patient_id: np.ndarray
) -> np.ndarray:
    """Assay errors: keyed standard normals times each measured output's ``sd``.

    Shape (n, MAX_EVALUATIONS, n_measured); the kernel uses ``o + e`` (additive),
    ``o (1 + e)`` (proportional) or ``o exp(e)`` (exponential).
    """
    n = replicate.size
    if program is None or not program.measured:
        return np.zeros((n, 1, 0))
    k = len(program.measured)
    out = np.empty((n, MAX_EVALUATIONS, k))
    u = patient_uniforms(seed, "assay", replicate, patient_id, MAX_EVALUATIONS * k)
    out[:] = special.ndtri(u).reshape(n, MAX_EVALUATIONS, k)
    sd = np.array([m[2] for m in program.measured])
    return out * sd  # scaled by each output's assay sd (the kernel adds or multiplies)


def adherence_arrays(
    seed: int,
    arms: Sequence[Arm],
    events: EventTable,
    arm_index: np.ndarray,
    replicate: np.ndarray,
    patient_id: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-patient dose multipliers (0 missed, 1 taken, 2 doubled) and time jitter (h).

    Shape (n, n_slots) each, None if no arm declares adherence. Draws are keyed by
    (seed, replicate, patient, administration number), not by arm. A jittered dose
    time is not before 0, the start of the simulation.
    """
    if not any(a.adherence for a in arms):
        return None
    n = arm_index.size
    slots = max(events.n_slots, 1)
    mult = np.ones((n, slots))
    jitter = np.zeros((n, slots))
    u_miss = patient_uniforms(seed, "adherence", replicate, patient_id, slots)
    z_jit = special.ndtri(patient_uniforms(seed, "jitter", replicate, patient_id, slots))
    for a, arm in enumerate(arms):
        adh = arm.adherence
        rows = np.flatnonzero(arm_index == a)
        if adh is None or rows.size == 0:
            continue
        oral = np.zeros(slots, dtype=bool)
        nominal = np.zeros(slots)
        cols = np.flatnonzero(events.slot[a, : events.n[a]] >= 0)
        for c in cols:
            oral[events.slot[a, c]] = events.kind[a, c] == EventKind.ORAL
            nominal[events.slot[a, c]] = events.time[a, c]
        missed = _missed(adh, u_miss[rows]) & oral[None, :]
        m = np.where(missed, 0.0, 1.0)
        policy = adh.missed_dose
        if policy == "double_next":
            nxt = np.zeros_like(missed)
            for k in range(slots - 1):  # the next oral dose after a miss is doubled
                later = np.flatnonzero(oral[k + 1 :])
                if later.size:
                    j = k + 1 + later[0]
                    nxt[:, j] |= missed[:, k] & ~missed[:, j]
            m = np.where(nxt, 2.0, m)
        # a dose is not taken before the simulation starts (time 0): the kernel would
        # give it at 0 while the ledger said earlier
        jit = np.maximum(adh.jitter * z_jit[rows] * oral[None, :], -nominal[None, :])
        if policy == "late":
            jit = jit + np.where(missed, adh.late_by, 0.0)
            m = np.where(missed, 1.0, m)
        mult[rows] = m
        jitter[rows] = jit
    return mult, jitter


def _missed(adh: Adherence, u: np.ndarray) -> np.ndarray:
    """Missed-dose indicator per administration (vectorised over patients)."""
    p = adh.p_miss
    if adh.model == "bernoulli":
        return u < p
    assert adh.p_stay_missing is not None  # checked by rule_problems
    stay = adh.p_stay_missing
    out = np.zeros(u.shape, dtype=bool)
    # two-state Markov chain (adherent / holiday), started from its stationary law
    pi = p / (p + 1.0 - stay) if p + 1.0 - stay > 0 else 1.0
    out[:, 0] = u[:, 0] < pi
    for k in range(1, u.shape[1]):
        out[:, k] = np.where(out[:, k - 1], u[:, k] < stay, u[:, k] < p)
    return out


def summary_columns(dsum: np.ndarray) -> dict[str, np.ndarray]:
    """Per-patient dose summary (kernel ``dsum``) as named columns."""
    return {name: dsum[:, j] for j, name in enumerate(DOSE_SUMMARY)}


def ledger_table(
    ledger: np.ndarray,
    replicate: np.ndarray,
    patient_id: np.ndarray,
    arm: np.ndarray,
    n_slots: np.ndarray,
) -> dict[str, np.ndarray]:
    """Long dose ledger: one row per planned administration of every patient."""
    counts = np.asarray(n_slots, dtype=np.int64)
    rows = np.repeat(np.arange(ledger.shape[0]), counts)
    k = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)  # 0.. per patient
    labels = np.array([REASONS[c] for c in range(len(REASONS))], dtype=object)
    return {
        "replicate": replicate[rows].astype(np.int32),
        "patient_id": patient_id[rows].astype(np.int64),
        "arm": np.asarray(arm, dtype=object)[rows],
        "dose_number": (k + 1).astype(np.int32),
        "time": ledger[rows, k, 0],
        "planned": ledger[rows, k, 1],
        "given": ledger[rows, k, 2],
        "reason": labels[ledger[rows, k, 3].astype(np.int64)],
    }
