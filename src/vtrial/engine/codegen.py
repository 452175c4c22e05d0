"""Generate, cache and load the compiled kernel of a model.

The generated source is the kernel template (:mod:`vtrial.engine._kernel_template`) with its
model block replaced by functions emitted from the *validated* expression trees of a
:class:`~vtrial.model.spec.Model` (never from the user's raw text). The file is written
once, atomically, to the kernel cache under a name derived from its content, so
numba's on-disk cache (``cache=True``) is shared by every process and every rerun.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import ModuleType

import numba

from vtrial.model.expressions import to_source
from vtrial.model.spec import PK_CONCENTRATION, TIME, Model

_BEGIN = "# --- MODEL BEGIN ---"
_END = "# --- MODEL END ---"
_RULES_BEGIN = "# --- RULES BEGIN ---"
_RULES_END = "# --- RULES END ---"
_LOCK = threading.Lock()
_LOADED: dict[str, ModuleType] = {}


@dataclass(frozen=True)
class Layout:
    """Where each model symbol lives in the kernel's arrays.

    Attributes
    ----------
    param_names : tuple of str
        Columns of the per-patient parameter matrix: parameters then derived constants.
    state_names : tuple of str
        ODE states, in integration order.
    output_names : tuple of str
        Outputs, in the order of the kernel's output vector.
    """

    param_names: tuple[str, ...]
    state_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def param_index(self, name: str) -> int:
        """Column of ``name`` in the parameter matrix, -1 if absent."""
        try:
            return self.param_names.index(name)
        except ValueError:
            return -1


def layout(model: Model) -> Layout:
    """Array layout of ``model`` (see :class:`Layout`)."""
    return Layout(
        param_names=(*model.parameters, *model.derived),
        state_names=tuple(model.states),
        output_names=tuple(model.outputs),
    )


def cache_dir() -> Path:
    """Folder of generated kernels: ``$VTRIAL_CACHE_DIR`` or ``~/.cache/vtrial/kernels``."""
    env = os.environ.get("VTRIAL_CACHE_DIR")
    base = Path(env) if env else Path.home() / ".cache" / "vtrial"
    return base / "kernels"


def _name_map(model: Model, lay: Layout) -> dict[str, str]:
    names: dict[str, str] = {TIME: "t", PK_CONCENTRATION: "cp"}
    for i, p in enumerate(lay.param_names):
        names[p] = f"p[{i}]"
    for s in lay.state_names:
        names[s] = f"s_{s}"
    for e in model.equations:
        names[e] = f"e_{e}"
    return names


def _prologue(model: Model, lay: Layout, names: dict[str, str], ind: str) -> list[str]:
    lines = []
    for i, s in enumerate(lay.state_names):
        if model.states[s].positive:
            lines.append(f"{ind}s_{s} = math.exp(z[{i}])")
        else:
            lines.append(f"{ind}s_{s} = z[{i}]")
    for e, expr in model.equations.items():
        lines.append(f"{ind}e_{e} = {to_source(expr, names)}")
    return lines


def output_states(model: Model) -> list[str]:
    """States the outputs depend on, directly or through equations (in state order)."""
    need: set[str] = set()
    todo = [n for o in model.outputs.values() if o.expr is not None for n in o.expr.names]
    while todo:
        name = todo.pop()
        if name in need:
            continue
        need.add(name)
        if name in model.equations:
            todo.extend(model.equations[name].names)
    return [s for s in model.states if s in need]


def model_source(model: Model) -> str:
    """Source of the model block: ``NS``, ``NO``, ``_to_internal``, ``_rhs``, ``_outputs``."""
    lay = layout(model)
    names = _name_map(model, lay)
    ind = "    "
    ns = len(lay.state_names)
    dec = '@njit(cache=True, nogil=True, error_model="numpy")'
    auc = model.ode_exposure  # one more state: the AUC of the ODE output CP
    flags = ", ".join([*(str(model.states[s].positive) for s in lay.state_names), *["False"] * auc])
    used = ", ".join(str(lay.state_names.index(s)) for s in output_states(model))

    def state_index(route: str) -> int:
        target = model.dosing.get(route)
        return lay.state_names.index(target) if target is not None else -1

    lines = [
        f"NS = {ns + auc}",
        f"NO = {len(lay.output_names)}",
        f"LOGSCALE = np.array([{flags}], dtype=np.bool_)",
        f"OUT_STATES = np.array([{used}], dtype=np.int64)",
        f"DOSE_ORAL = {state_index('oral')}  # state receiving oral doses (-1: PK macro)",
        f"DOSE_IV = {state_index('iv')}  # state receiving IV doses and infusions (-1: PK macro)",
        f"CP_OUT = {lay.output_names.index(PK_CONCENTRATION) if auc else -1}"
        "  # output whose Cmax/AUC/trough are tracked (-1: PK macro CP)",
        f"AUC_STATE = {ns if auc else -1}  # state integrating CP_OUT",
        "",
        "",
    ]
    lines += [dec, "def _to_internal(y, z):  # pragma: no cover - compiled"]
    for i, s in enumerate(lay.state_names):
        if model.states[s].positive:
            lines.append(f"{ind}z[{i}] = math.log(y[{i}])")
        else:
            lines.append(f"{ind}z[{i}] = y[{i}]")
    if auc:
        lines.append(f"{ind}z[{ns}] = 0.0")
    lines.append(f"{ind}return")
    lines += ["", "", dec, "def _rhs(t, z, p, cp, dz):  # pragma: no cover - compiled"]
    lines += _prologue(model, lay, names, ind)
    for i, s in enumerate(lay.state_names):
        rhs = to_source(model.odes[s], names)
        if model.states[s].positive:
            lines.append(f"{ind}dz[{i}] = ({rhs}) / s_{s}")
        else:
            lines.append(f"{ind}dz[{i}] = {rhs}")
    if auc:
        cp_expr = model.outputs[PK_CONCENTRATION].expr
        assert cp_expr is not None
        lines.append(f"{ind}dz[{ns}] = {to_source(cp_expr, names)}")
    lines.append(f"{ind}return")
    lines += ["", "", dec, "def _outputs(t, z, p, cp, o):  # pragma: no cover - compiled"]
    lines += _prologue(model, lay, names, ind)
    for j, (oname, out) in enumerate(model.outputs.items()):
        if out.expr is None:
            if oname != PK_CONCENTRATION:  # pragma: no cover - guarded by models.compose
                raise AssertionError(oname)
            lines.append(f"{ind}o[{j}] = cp")
        else:
            lines.append(f"{ind}o[{j}] = {to_source(out.expr, names)}")
    lines.append(f"{ind}return")
    return "\n".join(lines) + "\n\n\n"


def kernel_source(model: Model, rules_source: str | None = None) -> str:
    """Complete kernel module source for ``model``.

    ``rules_source`` replaces the template's rules block (``N_MEAS`` and ``_decide``,
    generated by :func:`vtrial.protocol.rules.rules_source` from a study's dose-modification
    rules); without it the template's no-op block stays, so studies without rules
    share one kernel per model.
    """
    template = resources.files("vtrial.engine").joinpath("_kernel_template.py").read_text()
    head, rest = template.split(_BEGIN, 1)
    _, tail = rest.split(_END, 1)
    text = f"{head}{_BEGIN}\n{model_source(model)}{_END}{tail}"
    if rules_source is not None:
        head, rest = text.split(_RULES_BEGIN, 1)
        _, tail = rest.split(_RULES_END, 1)
        text = f"{head}{_RULES_BEGIN}\n{rules_source}{_RULES_END}{tail}"
    return text


def kernel_key(source: str) -> str:
    """Content key of a kernel: its source and the numba version that compiles it."""
    h = hashlib.sha256(source.encode())
    h.update(numba.__version__.encode())
    return h.hexdigest()[:20]


def _write_once(path: Path, text: str) -> None:
    """Create ``path`` with ``text`` atomically; never modify an existing file.

    A hard link from a complete temporary file either creates the final name or fails
    because another process already did, so the file's timestamp (part of numba's
    cache index) never changes after creation.
    """
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def load_kernel(model: Model, rules_source: str | None = None) -> ModuleType:
    """Generate (once), import and return the compiled kernel module of ``model``.

    Compilation happens on first call of ``simulate_batch`` and is cached on disk by
    numba next to the generated file, so other processes and later runs reuse it.
    ``rules_source``: see :func:`kernel_source`.
    """
    source = kernel_source(model, rules_source)
    key = kernel_key(source)
    with _LOCK:
        mod = _LOADED.get(key)
        if mod is not None:
            return mod
        path = cache_dir() / f"kernel_{key}.py"
        _write_once(path, source)
        name = f"vtrial_kernel_{key}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:  # pragma: no cover - defensive
            raise ImportError(f"cannot load kernel {path}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        _LOADED[key] = mod
        return mod
