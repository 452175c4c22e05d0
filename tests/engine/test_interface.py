"""Host and kernel agree on every shared code and on the kernel's arguments.

The single declaration is :mod:`vtrial.engine.interface` (with the protocol codes of
:mod:`vtrial.protocol.codes`); the kernel template's constants and parameter lists
are generated from it, and :func:`vtrial.engine.interface.kernel_args` orders and
checks what the host passes.
"""

from __future__ import annotations

import ast
import inspect
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pandas as pd
import pytest

from vtrial import build_model, simulate
from vtrial.engine import _kernel_template as template
from vtrial.engine import api, codegen, host, numerics
from vtrial.engine.codegen import (
    codes_source,
    fill_codes,
    fill_interface,
    kernel_key,
    kernel_source,
    template_source,
)
from vtrial.engine.interface import (
    CODE_TABLES,
    DIMENSIONS,
    KERNEL_ARGS,
    METHODS,
    STATUS,
    KernelArgumentError,
    Method,
    Status,
    batch_parameters,
    kernel_args,
    kernel_constants,
)
from vtrial.protocol import dosing, rules
from vtrial.protocol.codes import ACTIONS, REASON_CODES, REASONS, Action, EventKind, Reason


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert len(found) == 1, name
    return found[0]


# ---- codes


def test_template_constants_equal_the_declared_codes() -> None:
    constants = kernel_constants()
    assert len(constants) == sum(len(t.codes) for t in CODE_TABLES)  # no name twice
    for name, value in constants.items():
        assert getattr(template, name) == value, name


def test_every_kernel_code_constant_is_declared() -> None:
    """No code constant of the template lives outside the generated block."""
    source = template_source()
    head, rest = source.split("# --- CODES BEGIN ---\n", 1)
    block, tail = rest.split("# --- CODES END ---\n", 1)
    assert block == "".join(f"{line}\n" for line in codes_source())
    prefixes = ("EV_", "ACT_", "R_")
    names = {*STATUS_NAMES, *METHOD_NAMES}
    for text in (head, tail):
        for name in re.findall(r"^([A-Z][A-Z0-9_]*) = ", text, re.MULTILINE):
            assert not name.startswith(prefixes), name
            assert name not in names, name


STATUS_NAMES = [s.name for s in Status]
METHOD_NAMES = [m.name for m in Method]


def test_code_tables_cover_every_shared_enum() -> None:
    enums = {t.codes for t in CODE_TABLES}
    assert enums == {Status, Method, EventKind, Action, Reason}
    for table in CODE_TABLES:
        values = [int(c) for c in table.codes]
        assert values == list(range(len(values))), table.title  # dense, from 0
        assert set(table.notes) <= set(table.codes)


def test_label_tables_agree_with_the_codes() -> None:
    assert {int(s): s.name.lower() for s in Status} == STATUS
    assert sorted(METHODS) == [int(m) for m in Method]
    assert sorted(REASONS) == [int(r) for r in Reason]
    assert {REASON_CODES[label] for label in REASONS.values()} == set(REASONS)
    assert {a.name.lower(): int(a) for a in Action if a is not Action.NONE} == ACTIONS
    # the host's and the protocol's names are the same objects, not copies
    assert api.STATUS is STATUS
    assert api.METHODS is METHODS
    assert rules.ACTIONS is ACTIONS
    assert rules.REASONS is REASONS


def test_host_labels_every_status_and_method() -> None:
    codes = np.array([int(s) for s in Status], dtype=np.int8)
    assert list(host.labels(codes, STATUS)) == [s.name.lower() for s in Status]
    used = np.array([int(m) for m in Method], dtype=np.int8)
    assert list(host.labels(used, METHODS)) == ["dopri5", "rosenbrock23", "dopri5+rosenbrock23"]


def test_event_tables_use_the_declared_kinds() -> None:
    phases = dosing.regimen_phases(
        [
            {"route": "oral", "dose": 10, "count": 2},
            {"route": "iv_infusion", "dose": 5, "duration": 1, "start": 48},
            {"route": "iv_bolus", "dose": 1, "start": 72},
        ]
    )
    table = dosing.event_table([phases], occasions=[[24.0]], decisions=[[0.0]])
    kinds = set(table.kind[0, : table.n[0]].tolist())
    # every kind but OBS, RESET, SS and INTO, which only dataset records make
    # (tests/data/test_records.py)
    record_only = {EventKind.OBS, EventKind.RESET, EventKind.SS, EventKind.INTO}
    assert kinds == {int(k) for k in EventKind if k not in record_only}
    events = dosing.arm_events(phases)
    assert all(type(e[1]) is int for e in events)  # plain ints leave the protocol layer


def test_fixed_numerics_have_the_declared_codes() -> None:
    """The fixed modules' codes (``numerics.py``'s CODES block) are generated too."""
    text = codegen.fixed_sources()["numerics.py"]
    assert fill_codes(text) == text
    for name, value in kernel_constants().items():
        assert getattr(numerics, name) == value, name


def test_kernel_key_covers_the_fixed_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """numba's cache of a generated kernel does not track the fixed modules it calls:
    a change in any of them must give new kernels (a new key), never stale code."""
    source = kernel_source(build_model({"pk": "pk_1cmt"}))
    key = kernel_key(source)
    assert set(codegen.fixed_sources()) == set(codegen.FIXED_MODULES)
    original = codegen.fixed_sources()
    for name in codegen.FIXED_MODULES:
        changed = {**original, name: original[name] + "\n# changed\n"}
        monkeypatch.setattr(codegen, "fixed_sources", lambda changed=changed: changed)
        assert kernel_key(source) != key, name
    monkeypatch.setattr(codegen, "fixed_sources", lambda: original)
    assert kernel_key(source) == key


def test_generated_kernel_imports_only_fixed_modules_of_the_key() -> None:
    """Every vtrial module a kernel imports is one of codegen.FIXED_MODULES."""
    tree = ast.parse(kernel_source(build_model({"pk": "pk_1cmt"})))
    imported = {
        n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module is not None
    }
    fixed = {f"vtrial.engine.{name.removesuffix('.py')}" for name in codegen.FIXED_MODULES}
    assert {m for m in imported if m.startswith("vtrial")} == fixed


def test_generated_kernel_is_cached() -> None:
    """numba stores the kernel's entry point in the kernel cache (it refuses to when the
    code holds an address of this process, e.g. a compiled function passed as a value),
    so a later process loads it instead of compiling it."""
    model = build_model(
        {"pk": "pk_1cmt", "components": {"n": {"model": "friberg", "links": {"DRUG": "CP"}}}}
    )
    simulate(model, pd.DataFrame({"CL": [5.0]}), {"route": "oral", "dose": 10}, [1.0, 2.0])
    key = kernel_key(kernel_source(model))
    # beside the kernel's source, or under NUMBA_CACHE_DIR (numba mirrors the source's
    # folder there) when that is set
    where = Path(numba.config.CACHE_DIR) if numba.config.CACHE_DIR else codegen.cache_dir()
    index = list(where.rglob(f"kernel_{key}.simulate_batch-*.nbi"))
    assert len(index) == 1


def test_model_steps_belong_to_their_kernel() -> None:
    """numba names compiled code by module and a per-process counter: each kernel's
    model steps must carry its own (unique) module name, or a kernel loaded from the
    cache could call the steps of another model compiled in this process."""
    model = build_model({"pk": "pk_1cmt"})
    kern = codegen.load_kernel(model)
    for name in ("record", "integration_step", "rk_step", "evaluate_rules"):
        assert getattr(kern._steps, name).py_func.__module__ == kern.__name__, name
    assert kern.__name__ == f"vtrial_kernel_{kernel_key(kernel_source(model))}"
    assert template._steps.record.py_func.__module__ == template.__name__


def test_generated_kernel_has_the_same_codes() -> None:
    source = kernel_source(build_model({"pk": "pk_1cmt"}))
    for name, value in kernel_constants().items():
        assert re.search(rf"^{name} = {value}\b", source, re.MULTILINE), name


# ---- arguments


def test_template_is_what_codegen_writes() -> None:
    """The shipped template's generated blocks equal the declaration (one source)."""
    text = template_source()
    assert fill_interface(text) == text


def test_features_are_constants_the_kernel_prunes() -> None:
    """The shipped template switches every optional feature on (it is a complete
    kernel, tested as such); a generated kernel gets only what its run uses, so a
    regimen study compiles none of the dataset-record code."""
    text = template_source()
    full = codegen.features_source(records=True, grid_after=True)
    assert codegen._fill_block(text, "FEATURES", full) == text
    lean = kernel_source(build_model({"pk": "pk_1cmt"}))
    assert "RECORDS = False" in lean
    assert "GRID_AFTER = False" in lean
    assert "RECORDS = True" in kernel_source(build_model({"pk": "pk_1cmt"}), records=True)


def test_template_signature_equals_the_declaration() -> None:
    batch = list(inspect.signature(template.simulate_batch.py_func).parameters)
    assert batch == batch_parameters() == [a.name for a in KERNEL_ARGS]


def test_batch_calls_no_per_patient_function() -> None:
    """The patient's solve is written out in ``simulate_batch`` (see the template's
    docstring): a kernel-module function called from it would be optimised twice."""
    tree = ast.parse(template_source())
    batch = _function(tree, "simulate_batch")
    local = {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name != "simulate_batch"
    }
    called = {
        node.func.id
        for node in ast.walk(batch)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert called & local <= {"_to_internal", "_f"}


def test_declaration_is_consistent() -> None:
    names = [a.name for a in KERNEL_ARGS]
    assert len(set(names)) == len(names)
    for arg in KERNEL_ARGS:
        np.dtype(arg.dtype)  # a real dtype
        assert arg.ndim == len(arg.shape)
        for sym in arg.shape:
            assert isinstance(sym, int) or sym in DIMENSIONS, (arg.name, sym)
        assert arg.doc
        assert "\n" not in arg.doc
    # outputs come last, so the inputs read as one block
    first_out = next(i for i, a in enumerate(KERNEL_ARGS) if a.output)
    assert all(a.output for a in KERNEL_ARGS[first_out:])


def test_run_kernel_passes_every_argument_as_declared(monkeypatch: pytest.MonkeyPatch) -> None:
    """What run_kernel hands to simulate_batch matches the declaration, in order."""
    seen: list[tuple[Any, ...]] = []

    class Kernel:
        @staticmethod
        def simulate_batch(*args: Any) -> None:
            seen.append(args)

    monkeypatch.setattr(host, "load_kernel", lambda *a, **k: Kernel)
    model = build_model({"pk": "pk_1cmt"})
    params = pd.DataFrame({"CL": [5.0, 4.0], "V1": [50.0, 40.0]})
    events = dosing.event_table([dosing.regimen_phases({"route": "oral", "dose": 100})])
    host.run_kernel(
        model,
        {c: params[c].to_numpy() for c in params},
        n=2,
        events=events,
        arm=np.zeros(2, dtype=np.int64),
        dose_scale=np.ones((2, 3)),
        grid=np.array([0.0, 1.0, 2.0]),
        store_times=np.array([1.0]),
        store_outputs=["CP"],
        ledger=True,
        threads=1,  # one slice of both patients: one call
    )
    (args,) = seen
    assert len(args) == len(KERNEL_ARGS)
    for arg, value in zip(KERNEL_ARGS, args, strict=True):
        if arg.ndim == 0:
            assert type(value) is {"float64": float, "int64": int}[arg.dtype], arg.name
        else:
            assert value.dtype == np.dtype(arg.dtype), arg.name
            assert value.ndim == arg.ndim, arg.name


def test_first_call_says_the_kernel_compiles(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A kernel not yet compiled in this process is called inside a heartbeat that logs
    its start and end (and every 10 s between); an already compiled one is not."""

    class Batch:
        def __init__(self) -> None:
            self.signatures: list[str] = []

        def __call__(self, *args: Any) -> None:
            self.signatures.append("compiled")

    class Kernel:
        simulate_batch = Batch()

    monkeypatch.setattr(host, "load_kernel", lambda *a, **k: Kernel)
    model = build_model({"pk": "pk_1cmt"})
    events = dosing.event_table([dosing.regimen_phases({"route": "oral", "dose": 100})])

    def run() -> None:
        host.run_kernel(
            model,
            {"CL": np.array([5.0]), "V1": np.array([50.0])},
            n=1,
            events=events,
            arm=np.zeros(1, dtype=np.int64),
            dose_scale=np.ones((1, 3)),
            grid=np.array([0.0, 1.0]),
            store_times=np.array([1.0]),
            store_outputs=["CP"],
        )

    with caplog.at_level(logging.INFO, logger="vtrial"):
        run()
    said = [r.getMessage() for r in caplog.records if "kernel of model pk_1cmt" in r.getMessage()]
    assert said[0].endswith("compiling on first use, or loading it from the kernel cache: started")
    assert said[-1].startswith("kernel of model pk_1cmt: compiling")
    assert "done in" in said[-1]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vtrial"):
        run()  # compiled now: nothing to say
    assert not [r for r in caplog.records if "kernel of model" in r.getMessage()]


# ---- the checking helper


def _valid_values(n: int = 2) -> dict[str, Any]:
    """A consistent set of kernel arguments (sizes: every symbol 2, fixed sizes as declared)."""
    out: dict[str, Any] = {}
    for arg in KERNEL_ARGS:
        if arg.ndim == 0:
            out[arg.name] = 1.0 if arg.dtype == "float64" else 1
        else:
            shape = tuple(s if isinstance(s, int) else n for s in arg.shape)
            out[arg.name] = np.zeros(shape, dtype=arg.dtype)
    return out


def test_kernel_args_orders_by_name() -> None:
    values = _valid_values()
    shuffled: Mapping[str, Any] = dict(reversed(list(values.items())))
    got = kernel_args(shuffled, {"n": 2})
    assert all(g is values[a.name] for g, a in zip(got, KERNEL_ARGS, strict=True))


def test_wrong_dtype_is_named() -> None:
    values = _valid_values()
    values["ev_kind"] = values["ev_kind"].astype(np.float64)  # swapped with ev_amt, say
    with pytest.raises(KernelArgumentError, match=r"'ev_kind'.*int64.*got dtype float64"):
        kernel_args(values)
    with pytest.raises(TypeError):  # also a TypeError for callers that catch those
        kernel_args(values)


def test_wrong_ndim_is_named() -> None:
    values = _valid_values()
    values["lam_all"] = np.zeros((2, 2))
    with pytest.raises(KernelArgumentError, match=r"'lam_all'.*2 dimensions"):
        kernel_args(values)


def test_wrong_scalar_type_is_named() -> None:
    values = _valid_values()
    values["method0"] = Method.DOPRI5  # numba would compile an IntEnum as another type
    with pytest.raises(KernelArgumentError, match=r"'method0'.*must be a scalar of type int"):
        kernel_args(values)
    values = _valid_values()
    values["rtol"] = np.float32(1e-6)
    with pytest.raises(KernelArgumentError, match=r"'rtol'.*float32"):
        kernel_args(values)
    values = _valid_values()
    values["arm"] = [0, 0]
    with pytest.raises(KernelArgumentError, match=r"'arm'.*must be an ndarray"):
        kernel_args(values)


def test_inconsistent_sizes_are_named() -> None:
    values = _valid_values()
    values["cm_all"] = np.zeros((2, 2, 3))  # M disagrees with lam_all
    with pytest.raises(KernelArgumentError, match=r"'cm_all'.*\(M\) has size 3.*'lam_all'"):
        kernel_args(values)
    values = _valid_values()
    values["pk_metrics"] = np.zeros((2, 5))
    with pytest.raises(KernelArgumentError, match=r"'pk_metrics'.*axis 1 must be 4"):
        kernel_args(values)
    with pytest.raises(KernelArgumentError, match=r"'pmat'.*\(n\) has size 2.*the caller"):
        kernel_args(_valid_values(), {"n": 3})


def test_missing_and_unknown_arguments_are_named() -> None:
    values = _valid_values()
    del values["jit"]
    values["jitter"] = np.zeros((2, 2))
    with pytest.raises(KernelArgumentError, match=r"missing \['jit'\], unknown \['jitter'\]"):
        kernel_args(values)


def test_threads_split_patients_into_slices_with_identical_results() -> None:
    """run_kernel runs contiguous slices of the patients on threads; the results are
    the same bits as one slice (each patient writes only its own rows)."""
    model = build_model({"pk": "pk_1cmt"})
    rng = np.random.default_rng(3)
    n = 37
    params = {"CL": 5.0 * np.exp(rng.normal(0, 0.3, n)), "V1": 50.0 * np.exp(rng.normal(0, 0.3, n))}
    events = dosing.event_table([dosing.regimen_phases({"route": "oral", "dose": 100})])

    def run(threads: int) -> Any:
        return host.run_kernel(
            model,
            params,
            n=n,
            events=events,
            arm=np.zeros(n, dtype=np.int64),
            dose_scale=np.ones((n, 3)),
            grid=np.linspace(0.0, 48.0, 49),
            store_times=np.array([1.0, 12.0, 24.0]),
            store_outputs=["CP"],
            threads=threads,
        )

    assert host._patient_slices(n, 2) == [(a, min(a + 5, n)) for a in range(0, n, 5)]
    one, two = run(1), run(2)
    for name in ("status", "nsteps", "omin", "omax", "probes", "store", "pk"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name), err_msg=name)
