"""The contract between the host and the compiled kernel, declared once.

Two things cross the boundary between :mod:`vtrial.engine.host` and the compiled
kernel (:mod:`vtrial.engine._kernel_template`), and both are declared here:

- **integer codes**: solver status (:class:`Status`), integration method
  (:class:`Method`), and, from the lower protocol layer
  (:mod:`vtrial.protocol.codes`), event kinds, rule actions and dose-ledger reasons.
  :data:`CODE_TABLES` lists them with the names they have in the kernel;
  :func:`vtrial.engine.codegen.codes_source` emits the kernel's constant block from it.
- **the kernel's arguments**: :data:`KERNEL_ARGS`, in call order, each with its dtype,
  number of dimensions, shape (in the symbols of :data:`DIMENSIONS`) and meaning.
  :mod:`vtrial.engine.codegen` writes the parameter list of ``simulate_batch`` from
  it, and :func:`vtrial.engine.host.run_kernel`
  passes its arguments through :func:`kernel_args`, which orders them by name and
  checks each one against its declaration.

``tests/engine/test_interface.py`` checks that the shipped template equals what code
generation makes of it, so the template's constants and signatures are these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from vtrial.errors import VtrialError
from vtrial.protocol.codes import (
    ACTION_NOTES,
    EVENT_NOTES,
    REASON_NOTES,
    Action,
    EventKind,
    Reason,
)


class Status(IntEnum):
    """Per-patient solver status written by the kernel (``solver_status`` column)."""

    OK = 0
    MAX_STEPS = 1
    STEP_UNDERFLOW = 2
    NONFINITE = 3
    INVALID_INITIAL = 4
    STIFF = 5
    NO_STEADY_STATE = 6


#: one-line meaning of each status (the kernel's comments)
STATUS_NOTES: dict[Status, str] = {
    Status.OK: "solved",
    Status.MAX_STEPS: "more attempted steps than max_steps",
    Status.STEP_UNDERFLOW: "the step size became negligible against the time",
    Status.NONFINITE: "the states became non-finite at every step size",
    Status.INVALID_INITIAL: "set on the host: unusable parameters or initial states",
    Status.STIFF: "Dormand-Prince detected stiffness: the patient is re-solved with Rosenbrock",
    Status.NO_STEADY_STATE: "an SS record's dose pattern did not converge to a steady state",
}
#: kernel status code -> ``solver_status`` label
STATUS: dict[int, str] = {int(s): s.name.lower() for s in Status}


class Method(IntEnum):
    """Integration method: the one asked for, and the one used (``solver`` column)."""

    DOPRI5 = 0
    ROSENBROCK23 = 1
    DOPRI5_ROSENBROCK23 = 2


#: one-line meaning of each method code (the kernel's comments)
METHOD_NOTES: dict[Method, str] = {
    Method.DOPRI5: "Dormand-Prince 5(4)",
    Method.ROSENBROCK23: "Rosenbrock 2(3)",
    Method.DOPRI5_ROSENBROCK23: "used: Dormand-Prince failed or was stiff, Rosenbrock retry",
}
#: kernel method code -> ``solver`` label
METHODS: dict[int, str] = {
    Method.DOPRI5: "dopri5",
    Method.ROSENBROCK23: "rosenbrock23",
    Method.DOPRI5_ROSENBROCK23: "dopri5+rosenbrock23",
}


@dataclass(frozen=True)
class CodeTable:
    """One table of integer codes as the kernel sees it.

    Attributes
    ----------
    title : str
        Comment line above the table in the kernel.
    codes : type of IntEnum
        The codes; the kernel constant of member ``X`` is ``prefix + "X"``.
    prefix : str
        Prefix of the kernel constants (``""`` for status and method codes).
    notes : mapping
        Member -> one-line meaning, written as the constant's comment.
    """

    title: str
    codes: type[IntEnum]
    prefix: str
    notes: Mapping[Any, str]

    def constants(self) -> dict[str, int]:
        """Kernel constant name -> value, in code order."""
        return {f"{self.prefix}{c.name}": int(c) for c in self.codes}


#: every code table shared by host and kernel, in the order of the kernel's block
CODE_TABLES: tuple[CodeTable, ...] = (
    CodeTable("solver status", Status, "", STATUS_NOTES),
    CodeTable("integration methods", Method, "", METHOD_NOTES),
    CodeTable("event kinds", EventKind, "EV_", EVENT_NOTES),
    CodeTable("rule actions", Action, "ACT_", ACTION_NOTES),
    CodeTable("dose-ledger reasons", Reason, "R_", REASON_NOTES),
)


def kernel_constants() -> dict[str, int]:
    """Every kernel code constant (name -> value) of :data:`CODE_TABLES`."""
    out: dict[str, int] = {}
    for table in CODE_TABLES:
        out.update(table.constants())
    return out


#: shape symbols of :data:`KERNEL_ARGS` -> meaning
DIMENSIONS: dict[str, str] = {
    "n": "patients of the batch (those simulated)",
    "n_occ": "occasions (1 without inter-occasion variability)",
    "P": "parameter columns: parameters then derived constants",
    "S": "model states (the kernel adds one for the AUC of an ODE exposure)",
    "M": "PK modes (depot and compartments; 0 without a PK macro)",
    "A": "arms (rows of the event table)",
    "E": "event columns (padded)",
    "L": "dose levels (padded with NaN)",
    "R": "dose-modification rules (padded)",
    "n_adh": "administrations with adherence draws (0 without adherence)",
    "K": "assay-error draws per patient (evaluations beyond reuse the last)",
    "Q": "outputs measured with assay error",
    "G": "evaluation grid points",
    "O": "model outputs",
    "n_stored": "stored outputs",
    "n_store_times": "stored times",
    "n_probes": "probe times",
    "n_mon": "monitored threshold crossings",
    "n_slots": "dose-ledger rows per patient (0 without a ledger or adherence)",
    "D": "dose-summary columns (5 with a ledger, 0 without)",
    "NSS": "steady-state records per row of the event table (padded, at least 1)",
    "n_obs": "observation rows per patient (EventKind.OBS events; 0 without a dataset)",
}


@dataclass(frozen=True)
class KernelArg:
    """One argument of the kernel's entry point ``simulate_batch``.

    Attributes
    ----------
    name : str
        Parameter name in the kernel (and key of :func:`kernel_args`'s mapping).
    dtype : str
        NumPy dtype name of the array, or of the scalar (``ndim == 0``).
    shape : tuple of str or int
        Shape in :data:`DIMENSIONS` symbols or fixed sizes; ``()`` for a scalar.
    doc : str
        One-line meaning.
    output : bool
        Written by the kernel.
    """

    name: str
    dtype: str
    shape: tuple[str | int, ...]
    doc: str
    output: bool = False

    @property
    def ndim(self) -> int:
        """Number of dimensions (0 for a scalar)."""
        return len(self.shape)

    @property
    def shape_text(self) -> str:
        """The shape as written in documentation, e.g. ``(n, n_occ, P)``."""
        if not self.shape:
            return "scalar"
        inner = ", ".join(str(s) for s in self.shape)
        return f"({inner},)" if len(self.shape) == 1 else f"({inner})"


def _a(name: str, dtype: str, shape: tuple[str | int, ...], doc: str, **kw: bool) -> KernelArg:
    return KernelArg(name, dtype, shape, doc, **kw)


F8, I8 = "float64", "int64"
#: the arguments of ``simulate_batch``, in call order
KERNEL_ARGS: tuple[KernelArg, ...] = (
    # per patient
    _a("pmat", F8, ("n", "n_occ", "P"), "parameters and derived constants per occasion"),
    _a("y0", F8, ("n", "S"), "initial states"),
    _a("arm", I8, ("n",), "row of the event table"),
    _a("dose_scale", F8, ("n", 3), "dose multipliers of mg, mg/kg and mg/m2 doses"),
    _a("lam_all", F8, ("n", "n_occ", "M"), "PK eigenvalues (1/h) per occasion"),
    _a("cm_all", F8, ("n", "n_occ", "M"), "CP = cm @ modes, per occasion"),
    _a("vinv_all", F8, ("n", "n_occ", "M", "M"), "V^-1: amounts to modes, per occasion"),
    _a("vec_all", F8, ("n", "n_occ", "M", "M"), "V: modes to amounts, per occasion"),
    # per arm: events
    _a("ev_time", F8, ("A", "E"), "nominal event time (h)"),
    _a("ev_amt", F8, ("A", "E"), "amount (mg, mg/h for rates; occasion index) before scaling"),
    _a("ev_kind", I8, ("A", "E"), "event kind (EventKind)"),
    _a("ev_unit", I8, ("A", "E"), "column of dose_scale"),
    _a("ev_n", I8, ("A",), "number of valid events"),
    _a("ss_spec", F8, ("A", 4), "steady-state start: interval, kind, amount, duration"),
    _a("ss_unit", I8, ("A",), "column of dose_scale of the steady-state dose"),
    _a("tlag_idx", I8, (), "column of TLAG in pmat (-1: none)"),
    _a("f_idx", I8, (), "column of F in pmat (-1: none)"),
    _a("ev_slot", I8, ("A", "E"), "administration number of a dose event (-1: other)"),
    _a("ev_pair", I8, ("A", "E"), "column of an infusion start's rate decrease (-1: other)"),
    _a(
        "ss_ev",
        F8,
        ("A", "NSS", 8),
        "SS events: interval, kind, amount or rate, duration, SS, "
        "lag, compartment, F scales the rate",
    ),
    _a(
        "ev_cmt",
        I8,
        ("A", "E"),
        "compartment of an INTO bolus or a record's infusion: PK compartment, then ODE state",
    ),
    # per arm: dose modification; per patient: adherence and assay error
    _a("levels", F8, ("A", "L"), "dose levels, ascending, NaN-padded"),
    _a("start_level", I8, ("A",), "index of the planned dose in levels (-1: none)"),
    _a("rule_par", F8, ("A", "R", 4), "per rule: action, recheck (h), levels moved, max hold"),
    _a("adh", F8, ("n", "n_adh"), "dose multiplier per administration (0 missed, 2 doubled)"),
    _a("jit", F8, ("n", "n_adh"), "dosing-time jitter per administration (h)"),
    _a("meas_eps", F8, ("n", "K", "Q"), "assay errors (normals times sd) per evaluation"),
    # what to record
    _a("t_grid", F8, ("G",), "evaluation grid (h), strictly increasing"),
    _a("store_pos", I8, ("G",), "row of store per grid point (-1: not stored)"),
    _a("store_out", I8, ("n_stored",), "output index of each stored column"),
    _a("probe_pos", I8, ("G",), "row of probes per grid point (-1: not a probe)"),
    _a("mon_out", I8, ("n_mon",), "output index of each monitor"),
    _a("mon_thr", F8, ("n_mon",), "threshold of each monitor"),
    _a("mon_dir", I8, ("n_mon",), "-1: first time below, +1: above"),
    # integration controls
    _a("rtol", F8, (), "relative tolerance"),
    _a("atol", F8, (), "absolute tolerance"),
    _a("max_steps", I8, (), "attempted steps allowed per patient"),
    _a("h_max", F8, (), "largest step (h)"),
    _a("method0", I8, (), "method to start with (Method)"),
    # results
    _a("status", "int8", ("n",), "solver status (Status)", output=True),
    _a("nsteps", "int32", ("n",), "accepted steps", output=True),
    _a("omin", F8, ("n", "O"), "minimum of each output on the grid", output=True),
    _a("omax", F8, ("n", "O"), "maximum of each output on the grid", output=True),
    _a("targmin", F8, ("n", "O"), "time of the minimum (h)", output=True),
    _a("targmax", F8, ("n", "O"), "time of the maximum (h)", output=True),
    _a("probes", F8, ("n", "n_probes", "O"), "every output at the probe times", output=True),
    _a("cross", F8, ("n", "n_mon"), "first crossing time (h), NaN if never", output=True),
    _a("store", F8, ("n", "n_store_times", "n_stored"), "stored time courses", output=True),
    _a("obs", F8, ("n", "n_obs", "O"), "every output at each observation event", output=True),
    _a("pk_metrics", F8, ("n", 4), "exact cmax, tmax, auc, ctrough", output=True),
    _a("ledger", F8, ("n", "n_slots", 4), "time, planned, given, reason", output=True),
    _a("dsum", F8, ("n", "D"), "dose summary (vtrial.protocol.rules.DOSE_SUMMARY)", output=True),
    _a("method_used", "int8", ("n",), "method used (Method)", output=True),
)


def batch_parameters() -> list[str]:
    """Parameter names of ``simulate_batch``, in order."""
    return [a.name for a in KERNEL_ARGS]


_SCALAR_TYPES: dict[str, tuple[type, ...]] = {
    "float64": (float, np.float64),
    "int64": (int, np.int64),
}


_DTYPE = {a.dtype: np.dtype(a.dtype) for a in KERNEL_ARGS}


def _where(arg: KernelArg) -> str:
    """An argument as its errors name it (built only for an error: the estimator calls
    the kernel thousands of times per second)."""
    return f"kernel argument {arg.name!r} {arg.shape_text} {arg.dtype}"


class KernelArgumentError(VtrialError, TypeError):
    """An argument for the kernel is missing, unknown or not as declared."""


def kernel_args(
    values: Mapping[str, Any], dims: Mapping[str, int] | None = None
) -> tuple[Any, ...]:
    """The kernel's arguments in declared order, each checked against its declaration.

    Parameters
    ----------
    values : mapping
        Argument name -> array (or scalar), one for every name of :data:`KERNEL_ARGS`.
    dims : mapping, optional
        Sizes of shape symbols known to the caller (e.g. ``{"n": 10, "O": 3}``).

    Returns
    -------
    tuple
        The values in the order of ``simulate_batch``'s parameters.

    Raises
    ------
    KernelArgumentError
        Naming the argument: missing or unknown name, wrong dtype, wrong number of
        dimensions, or a size that disagrees with a fixed size, with ``dims``, or with
        another argument sharing the same shape symbol.
    """
    declared = {a.name for a in KERNEL_ARGS}
    missing = [a.name for a in KERNEL_ARGS if a.name not in values]
    unknown = sorted(set(values) - declared)
    if missing or unknown:
        raise KernelArgumentError(f"kernel arguments: missing {missing}, unknown {unknown}")
    seen: dict[str, tuple[int, str]] = {k: (int(v), "the caller") for k, v in (dims or {}).items()}
    out = []
    for arg in KERNEL_ARGS:
        value = values[arg.name]
        if arg.ndim == 0:
            # exactly these types: numba compiles others (bool, an IntEnum member,
            # float32) as a different kernel signature
            if type(value) not in _SCALAR_TYPES[arg.dtype]:
                raise KernelArgumentError(
                    f"{_where(arg)}: must be a scalar of type "
                    f"{' or '.join(t.__name__ for t in _SCALAR_TYPES[arg.dtype])}, "
                    f"got {type(value).__name__} {value!r}"
                )
            out.append(value)
            continue
        if not isinstance(value, np.ndarray):
            raise KernelArgumentError(
                f"{_where(arg)}: must be an ndarray, got {type(value).__name__}"
            )
        if value.dtype != _DTYPE[arg.dtype]:
            raise KernelArgumentError(f"{_where(arg)}: got dtype {value.dtype}")
        if value.ndim != arg.ndim:
            raise KernelArgumentError(f"{_where(arg)}: got {value.ndim} dimensions {value.shape}")
        for axis, (sym, size) in enumerate(zip(arg.shape, value.shape, strict=True)):
            if isinstance(sym, int):
                if size != sym:
                    raise KernelArgumentError(
                        f"{_where(arg)}: axis {axis} must be {sym}, got {size}"
                    )
                continue
            first = seen.setdefault(sym, (size, f"argument {arg.name!r}"))
            if first[0] != size:
                raise KernelArgumentError(
                    f"{_where(arg)}: axis {axis} ({sym}) has size {size}, but {sym} is {first[0]} "
                    f"for {first[1]}"
                )
        out.append(value)
    return tuple(out)
