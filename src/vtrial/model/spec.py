"""Models as data: loading, checking and composing PK/PD model specifications.

A model is a YAML file (see ``vtrial/schemas/model.schema.yaml``) with

- ``parameters``: name -> value, unit, description (declared once);
- ``pk``: an optional linear compartment macro (1-3 compartments) solved exactly;
  it provides the central concentration ``CP`` for every route (IV bolus,
  zero-order infusion, first-order oral absorption with ``TLAG`` and ``F``). With
  ``absorption: transit`` it expands to ODE states (a transit chain, Savic 2007);
- ``dosing``: for ODE models that take doses themselves (nonlinear PK such as
  Michaelis-Menten elimination or TMDD), the state receiving oral and IV doses; such a
  model defines ``CP`` as an output, and its exposure metrics are computed from it;
- ``inputs``: names read from another model's output (e.g. the drug
  concentration driving an effect), bound in the study by ``links``;
- ``derived``: per-patient constants (expressions of parameters and covariates);
- ``states`` with initial conditions, ``equations`` (time-varying intermediates)
  and ``odes`` (right-hand sides);
- ``outputs``: algebraic expressions reported in time courses and endpoints.

The built-in library is the folder ``vtrial/model/library``; :func:`list_models` lists it
and :func:`load_model` loads a library name or a user's file of the same form.
Models compose (:func:`compose`): a PK model plus PD/safety/efficacy components whose
inputs are linked to named outputs.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from vtrial.errors import ExpressionError, ModelError
from vtrial.infra.yamlsafe import load_yaml, package_schema, yaml_problem
from vtrial.model.expressions import Expression, parse_expression, topological_order
from vtrial.model.syntax import suggest
from vtrial.model.units import UnitMismatch, conversion

#: Symbol for time (hours) usable in every expression.
TIME = "t"
#: Output provided by the linear PK macro: central concentration (amount / V1).
PK_CONCENTRATION = "CP"
#: Parameters that every PK macro model declares (per number of compartments).
PK_PARAMETERS: dict[int, tuple[str, ...]] = {
    1: ("CL", "V1", "KA", "F", "TLAG"),
    2: ("CL", "V1", "Q2", "V2", "KA", "F", "TLAG"),
    3: ("CL", "V1", "Q2", "V2", "Q3", "V3", "KA", "F", "TLAG"),
}
_RESERVED = frozenset({TIME})
#: Dose routes of a model's ``dosing`` section -> regimen routes they receive.
DOSING_ROUTES = {"oral": ("oral",), "iv": ("iv_bolus", "iv_infusion")}


@dataclass(frozen=True)
class Parameter:
    """A model parameter: typical value, unit and meaning."""

    name: str
    value: float
    unit: str = ""
    description: str = ""


@dataclass(frozen=True)
class State:
    """An ODE state with its initial condition (an expression of parameters)."""

    name: str
    init: Expression
    unit: str = ""
    positive: bool = False
    description: str = ""


@dataclass(frozen=True)
class Output:
    """A reported quantity; ``expr`` is None for the PK macro's ``CP``."""

    name: str
    expr: Expression | None
    unit: str = ""
    description: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """One model file, checked but not yet linked to other models."""

    name: str
    source: str
    title: str = ""
    description: str = ""
    reference: str = ""
    pk_compartments: int | None = None
    solver: str = "auto"
    dosing: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, Parameter] = field(default_factory=dict)
    derived: dict[str, Expression] = field(default_factory=dict)
    states: dict[str, State] = field(default_factory=dict)
    equations: dict[str, Expression] = field(default_factory=dict)
    odes: dict[str, Expression] = field(default_factory=dict)
    outputs: dict[str, Output] = field(default_factory=dict)


@dataclass(frozen=True)
class Model:
    """A composed model ready for code generation.

    Attributes
    ----------
    parameters : dict
        Every structural parameter, in declaration order (PK first).
    derived : dict
        Per-patient constants, topologically ordered.
    states, odes : dict
        ODE states (non-PK) and their right-hand sides, same order.
    equations : dict
        Time-varying intermediates (links to inputs resolved), topologically ordered.
    outputs : dict
        Reported outputs; ``CP`` comes from the exact PK macro, or (for models with a
        ``dosing`` section) from its expression.
    dosing : dict
        Route (``oral``, ``iv``) -> ODE state receiving the doses; empty when doses go
        to the PK macro.
    """

    name: str
    components: tuple[ModelSpec, ...]
    pk_compartments: int | None
    parameters: dict[str, Parameter]
    derived: dict[str, Expression]
    states: dict[str, State]
    equations: dict[str, Expression]
    odes: dict[str, Expression]
    outputs: dict[str, Output]
    solver: str = "auto"
    dosing: dict[str, str] = field(default_factory=dict)

    @property
    def takes_doses(self) -> bool:
        """True if the model has a PK macro or ODE states that receive doses."""
        return self.pk_compartments is not None or bool(self.dosing)

    @property
    def ode_exposure(self) -> bool:
        """True if ``CP`` is an ODE output whose AUC and Cmax the kernel tracks."""
        out = self.outputs.get(PK_CONCENTRATION)
        return bool(self.dosing) and out is not None and out.expr is not None

    def routes(self) -> tuple[str, ...]:
        """Regimen routes this model accepts."""
        if self.pk_compartments is not None:
            return ("oral", "iv_bolus", "iv_infusion")
        return tuple(r for k in self.dosing for r in DOSING_ROUTES[k])

    @property
    def output_units(self) -> dict[str, str]:
        """Unit of every output."""
        return {k: o.unit for k, o in self.outputs.items()}

    def describe(self) -> str:
        """One line per component with its reference."""
        return "\n".join(f"{c.name}: {c.title} ({c.reference.strip()})" for c in self.components)


def _schema() -> dict[str, Any]:
    return package_schema("model")


def library_path() -> Path:
    """Folder holding the built-in model library."""
    return Path(str(resources.files("vtrial.model").joinpath("library")))


def list_models() -> list[dict[str, str]]:
    """List the built-in model library.

    Returns
    -------
    list of dict
        One dict per model with ``name``, ``title`` and ``reference``, sorted by name.

    Examples
    --------
    >>> names = [m["name"] for m in list_models()]
    >>> "pk_2cmt" in names and "friberg" in names
    True
    """
    out = []
    for path in sorted(library_path().glob("*.yaml")):
        spec = load_model(str(path))
        out.append({"name": spec.name, "title": spec.title, "reference": spec.reference.strip()})
    return out


def _resolve(name_or_path: str, base_dir: Path | None) -> Path:
    lib = library_path() / f"{name_or_path}.yaml"
    if "/" not in name_or_path and not name_or_path.endswith((".yaml", ".yml")):
        if lib.exists():
            return lib
        names = [p.stem for p in sorted(library_path().glob("*.yaml"))]
        hint = suggest(name_or_path, names)
        raise ModelError(
            f"unknown library model {name_or_path!r} ({hint}library: {', '.join(names)})"
        )
    path = Path(name_or_path)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    return path


def load_model(
    name_or_path: str,
    *,
    base_dir: str | Path | None = None,
    absorption: Mapping[str, Any] | None = None,
) -> ModelSpec:
    """Load and check one model spec.

    Parameters
    ----------
    name_or_path : str
        A library name (``"pk_2cmt"``) or the path of a YAML model file.
    base_dir : str or Path, optional
        Folder against which a relative path is resolved (the study file's folder).
    absorption : mapping, optional
        Changes to the model's PK macro, e.g. ``{"absorption": "transit",
        "transit_compartments": 3}`` (a study's ``model.pk: {model: ..., ...}``).

    Returns
    -------
    ModelSpec

    Raises
    ------
    ModelError
        Every problem in the file at once, each naming the file and key.

    Examples
    --------
    >>> spec = load_model("friberg")
    >>> sorted(spec.states)[:2], spec.inputs
    (['CIRC', 'PROL'], {'DRUG': 'mg/L'})
    """
    path = _resolve(name_or_path, Path(base_dir) if base_dir is not None else None)
    try:
        data = load_yaml(path.read_text(), name=str(path))
    except yaml.YAMLError as exc:
        where, message = yaml_problem(exc)
        raise ModelError(f"{path}: {where}: {message}") from exc
    if absorption:
        if not isinstance(data, Mapping) or not isinstance(data.get("pk"), Mapping):
            raise ModelError(f"{path}: absorption options need a model with a PK macro ('pk')")
        data = {**data, "pk": {**data["pk"], **absorption}}
    return spec_from_dict(data, source=str(path))


def spec_from_dict(data: Any, *, source: str = "<dict>") -> ModelSpec:
    """Check a model given as a mapping (the parsed YAML) and build a :class:`ModelSpec`."""
    if not isinstance(data, Mapping):
        raise ModelError(f"{source}: a model file must be a mapping, got {type(data).__name__}")
    validator = jsonschema.Draft202012Validator(_schema())
    problems = [
        f"{source}: {_path(e.absolute_path)}: {e.message}"
        for e in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path)))
    ]
    if problems:
        raise ModelError("\n".join(problems))
    data = dict(data)
    pk = data.get("pk")
    ncmt = int(pk["compartments"]) if pk else None
    transit_errors: list[str] = []
    if pk and pk.get("absorption", "first_order") == "transit":
        data, transit_errors = _expand_transit(data, source)
        ncmt = None
    elif pk and "transit_compartments" in pk:
        transit_errors.append(
            f"{source}: pk.transit_compartments: only with absorption: transit "
            f"(absorption is {pk.get('absorption', 'first_order')})"
        )
    params = {
        k: Parameter(k, float(v["value"]), v.get("unit", ""), v.get("description", ""))
        for k, v in data["parameters"].items()
    }
    inputs = {k: v.get("unit", "") for k, v in (data.get("inputs") or {}).items()}
    states_raw = data.get("states") or {}
    odes_raw = data.get("odes") or {}
    derived_raw = data.get("derived") or {}
    eq_raw = data.get("equations") or {}
    outputs_raw = data.get("outputs") or {}
    errors: list[str] = list(transit_errors)
    dosing = dict(data.get("dosing") or {})

    if ncmt is not None:
        missing = [p for p in PK_PARAMETERS[ncmt] if p not in params]
        if missing:
            errors.append(f"{source}: parameters: the {ncmt}-compartment PK macro needs {missing}")
    # name clashes between sections
    seen: dict[str, str] = {}
    sections: list[tuple[str, Sequence[str]]] = [
        ("parameters", list(params)),
        ("inputs", list(inputs)),
        ("derived", list(derived_raw)),
        ("states", list(states_raw)),
        ("equations", list(eq_raw)),
    ]
    for sec, names in sections:
        for n in names:
            if n in _RESERVED:
                errors.append(f"{source}: {sec}.{n}: {n!r} is reserved (time)")
            if n in seen:
                errors.append(f"{source}: {sec}.{n}: name already used in {seen[n]}")
            seen.setdefault(n, sec)
    if ncmt is not None and PK_CONCENTRATION in seen:
        errors.append(f"{source}: {seen[PK_CONCENTRATION]}.CP: CP is provided by the PK macro")
    if set(odes_raw) != set(states_raw):
        errors.append(
            f"{source}: odes: every state needs exactly one ode: states without one "
            f"{sorted(set(states_raw) - set(odes_raw))}, odes without a state "
            f"{sorted(set(odes_raw) - set(states_raw))}"
        )
    for name, o in outputs_raw.items():
        if "expr" not in o and not (ncmt is not None and name == PK_CONCENTRATION):
            errors.append(f"{source}: outputs.{name}: needs 'expr'")
    if dosing and ncmt is not None:
        errors.append(f"{source}: dosing: a PK macro model takes its doses itself; remove dosing")
    for route, state in dosing.items():
        if state not in states_raw:
            errors.append(
                f"{source}: dosing.{route}: must name a state {sorted(states_raw)}, got {state!r}"
            )
        elif states_raw[state].get("positive", False):
            errors.append(
                f"{source}: dosing.{route}: state {state!r} receives doses, so it cannot be "
                "'positive' (integrated on the log scale, where a dose into 0 is undefined)"
            )
    if dosing and PK_CONCENTRATION not in outputs_raw:
        errors.append(
            f"{source}: outputs: a model with a dosing section must define the central "
            f"concentration output {PK_CONCENTRATION!r} (its exposure metrics use it)"
        )
    if errors:
        raise ModelError("\n".join(errors))

    static = set(params) | set(inputs) | set(derived_raw)
    dynamic = static | set(states_raw) | set(eq_raw) | {TIME}
    if ncmt is not None:
        dynamic.add(PK_CONCENTRATION)

    def parse(text: Any, where: str, known: set[str]) -> Expression | None:
        try:
            return parse_expression(text, where=f"{source}: {where}", known_names=sorted(known))
        except ExpressionError as exc:
            errors.append(str(exc))
            return None

    derived = {k: parse(v, f"derived.{k}", (static - {k})) for k, v in derived_raw.items()}
    states = {}
    for k, v in states_raw.items():
        init = parse(v["init"], f"states.{k}.init", set(params) | set(derived_raw))
        states[k] = (init, v)
    equations = {k: parse(v, f"equations.{k}", dynamic - {k}) for k, v in eq_raw.items()}
    odes = {k: parse(v, f"odes.{k}", dynamic) for k, v in odes_raw.items()}
    outputs = {}
    for k, v in outputs_raw.items():
        expr = parse(v["expr"], f"outputs.{k}.expr", dynamic) if "expr" in v else None
        outputs[k] = (expr, v)
    if errors:
        raise ModelError("\n".join(errors))
    try:
        topological_order(
            {k: v for k, v in derived.items() if v is not None}, where=f"{source}: derived"
        )
        topological_order(
            {k: v for k, v in equations.items() if v is not None}, where=f"{source}: equations"
        )
    except ExpressionError as exc:
        raise ModelError(str(exc)) from exc

    out_specs = {
        k: Output(k, e, v.get("unit", ""), v.get("description", ""))
        for k, (e, v) in outputs.items()
    }
    if ncmt is not None and PK_CONCENTRATION not in out_specs:
        out_specs = {PK_CONCENTRATION: Output(PK_CONCENTRATION, None, "mg/L"), **out_specs}
    return ModelSpec(
        name=str(data["name"]),
        source=source,
        title=str(data.get("title", "")),
        description=str(data.get("description", "")),
        reference=str(data.get("reference", "")),
        pk_compartments=ncmt,
        solver=str(data.get("solver", "auto")),
        dosing=dosing,
        inputs=inputs,
        parameters=params,
        derived={k: v for k, v in derived.items() if v is not None},
        states={
            k: State(
                k, e, v.get("unit", ""), bool(v.get("positive", False)), v.get("description", "")
            )
            for k, (e, v) in states.items()
            if e is not None
        },
        equations={k: v for k, v in equations.items() if v is not None},
        odes={k: v for k, v in odes.items() if v is not None},
        outputs=out_specs,
    )


def _expand_transit(data: dict[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
    """ODE form of a PK macro with transit absorption (Savic et al. 2007).

    The dose enters ``ABS0`` and passes ``n = transit_compartments`` further
    compartments ``ABS1..n``, each emptying with ``KTR_ABS = (n + 1) / MTT_ABS``, into the
    depot (``DEPOT``, emptying with ``KA``), then ``CENT`` (and peripherals ``PERI2``,
    ``PERI3``). Amounts in mg; ``CP = CENT / V1``. IV doses go to ``CENT``. The amount
    in ``ABSn`` is the closed form ``D (KTR_ABS t)^n exp(-KTR_ABS t) / n!`` of Savic's
    paper (checked in the tests).
    """
    pk = data["pk"]
    ncmt = int(pk["compartments"])
    n = int(pk.get("transit_compartments", 3))
    errors = []
    params = data.get("parameters") or {}
    missing = [p for p in PK_PARAMETERS[ncmt] if p not in params]
    if "MTT_ABS" not in params:  # a library macro switched to transit absorption in a study
        data = {
            **data,
            "parameters": {
                **params,
                "MTT_ABS": {
                    "value": 1.0,
                    "unit": "h",
                    "description": "mean transit time (Savic 2007)",
                },
            },
        }
    if missing:
        errors.append(
            f"{source}: parameters: the {ncmt}-compartment PK macro with transit absorption "
            f"needs {missing}"
        )
    chain = [f"ABS{j}" for j in range(n + 1)]
    states: dict[str, Any] = {}
    odes: dict[str, Any] = {}
    for j, name in enumerate(chain):
        desc = "dosing compartment of the transit chain" if j == 0 else f"transit compartment {j}"
        states[name] = {"init": 0, "unit": "mg", "description": desc}
        odes[name] = f"-KTR_ABS * {name}" if j == 0 else f"KTR_ABS * ({chain[j - 1]} - {name})"
    states["DEPOT"] = {"init": 0, "unit": "mg", "description": "absorption compartment"}
    odes["DEPOT"] = f"KTR_ABS * {chain[-1]} - KA * DEPOT"
    states["CENT"] = {"init": 0, "unit": "mg", "description": "central compartment"}
    cent = "KA * DEPOT - CL / V1 * CENT"
    for j in range(2, ncmt + 1):
        peri = f"PERI{j}"
        states[peri] = {"init": 0, "unit": "mg", "description": f"peripheral compartment {j}"}
        odes[peri] = f"Q{j} / V1 * CENT - Q{j} / V{j} * {peri}"
        cent += f" - Q{j} / V1 * CENT + Q{j} / V{j} * {peri}"
    odes["CENT"] = cent
    for section in ("states", "odes", "dosing"):
        if data.get(section):
            errors.append(f"{source}: {section}: not allowed with a PK macro (transit absorption)")
    taken = {"KTR_ABS", *states} & set((data.get("derived") or {}) | (data.get("equations") or {}))
    if taken:
        errors.append(f"{source}: names {sorted(taken)} are defined by the transit PK macro")
    outputs = dict(data.get("outputs") or {})
    cp = dict(outputs.get(PK_CONCENTRATION) or {"unit": "mg/L"})
    cp["expr"] = "CENT / V1"
    outputs = {PK_CONCENTRATION: cp, **{k: v for k, v in outputs.items() if k != "CP"}}
    out = dict(data)
    out["derived"] = {"KTR_ABS": f"{n + 1} / MTT_ABS", **(data.get("derived") or {})}
    out["states"] = states
    out["odes"] = odes
    out["outputs"] = outputs
    out["dosing"] = {"oral": chain[0], "iv": "CENT"}
    return out, errors


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


class _Rename(ast.NodeTransformer):
    def __init__(self, mapping: Mapping[str, str]):
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.Name:
        return ast.copy_location(
            ast.Name(id=self.mapping.get(node.id, node.id), ctx=node.ctx), node
        )


def rename(expr: Expression, mapping: Mapping[str, str]) -> Expression:
    """Return ``expr`` with free names replaced according to ``mapping``."""
    if not (expr.names & set(mapping)):
        return expr
    tree = _Rename(mapping).visit(copy.deepcopy(expr.tree))
    names = frozenset(mapping.get(n, n) for n in expr.names)
    return dataclasses.replace(expr, tree=tree, names=names)


def _where(label: str) -> str:
    """Location of a component in a study's model section."""
    return "pk" if label == "pk" else f"components.{label}"


def compose(
    pk: ModelSpec | None,
    components: Mapping[str, tuple[ModelSpec, Mapping[str, str]]],
    *,
    name: str = "model",
) -> Model:
    """Compose a PK model and linked PD/safety/efficacy components into one model.

    Parameters
    ----------
    pk : ModelSpec or None
        The PK model (with a ``pk`` macro or its own ODEs), or None.
    components : mapping
        Component label -> (spec, links) where ``links`` maps each of the spec's
        ``inputs`` to an output name of another component (e.g. ``{"DRUG": "CP"}``).
    name : str
        Name of the composed model.

    Returns
    -------
    Model

    Raises
    ------
    ModelError
        Unlinked inputs, links to unknown outputs, or names defined twice.

    Examples
    --------
    >>> m = compose(load_model("pk_2cmt"), {"anc": (load_model("friberg"), {"DRUG": "CP"})})
    >>> list(m.outputs)
    ['CP', 'ANC']
    """
    specs: list[tuple[str, ModelSpec, Mapping[str, str]]] = []
    if pk is not None:
        specs.append(("pk", pk, {}))
    specs.extend((label, spec, links) for label, (spec, links) in components.items())
    errors: list[tuple[str, str]] = []
    owner: dict[str, str] = {}
    outputs: dict[str, Output] = {}
    pk_cmt = [s.pk_compartments for _, s, _ in specs if s.pk_compartments is not None]
    dosed = [label for label, s, _ in specs if s.pk_compartments is not None or s.dosing]
    if len(dosed) > 1:
        errors.append(
            (
                "components",
                f"only one component may take doses (a PK macro or a dosing section), got {dosed}",
            )
        )
    for label, spec, _ in specs:
        names = [
            *spec.parameters,
            *spec.derived,
            *spec.states,
            *spec.equations,
            *(o for o, v in spec.outputs.items() if v.expr is not None or o != PK_CONCENTRATION),
        ]
        for n in dict.fromkeys(names):
            if n in owner and owner[n] != label:
                errors.append(
                    (
                        _where(label),
                        f"{n!r} is defined by both {owner[n]!r} and {label!r} "
                        f"({spec.source}); rename it in one of the model files",
                    )
                )
            owner.setdefault(n, label)
        for o, out in spec.outputs.items():
            outputs.setdefault(o, out)
    for label, spec, links in specs:
        unknown = sorted(set(links) - set(spec.inputs))
        for inp in unknown:
            errors.append(
                (f"{_where(label)}.links.{inp}", f"not an input of {spec.name} {list(spec.inputs)}")
            )
        for inp in spec.inputs:
            target = links.get(inp)
            if target is None:
                errors.append(
                    (
                        f"{_where(label)}.links",
                        f"input {inp!r} of {spec.name} is not linked "
                        f"(add {inp}: <output>; outputs: {sorted(outputs)})",
                    )
                )
            elif target not in outputs:
                errors.append(
                    (
                        f"{_where(label)}.links.{inp}",
                        f"{target!r} is not an output (outputs: {sorted(outputs)})",
                    )
                )
    if errors:
        raise ModelError("\n".join(f"{w}: {m}" for w, m in errors), errors)

    parameters: dict[str, Parameter] = {}
    derived: dict[str, Expression] = {}
    states: dict[str, State] = {}
    equations: dict[str, Expression] = {}
    odes: dict[str, Expression] = {}
    out_all: dict[str, Output] = {}
    link_eqs: dict[str, Expression] = {}
    for _label, spec, links in specs:
        mapping = dict(links)
        parameters.update(spec.parameters)
        derived.update({k: rename(v, mapping) for k, v in spec.derived.items()})
        for k, s in spec.states.items():
            states[k] = dataclasses.replace(s, init=rename(s.init, mapping))
        equations.update({k: rename(v, mapping) for k, v in spec.equations.items()})
        odes.update({k: rename(v, mapping) for k, v in spec.odes.items()})
        for k, spec_out in spec.outputs.items():
            expr = rename(spec_out.expr, mapping) if spec_out.expr is not None else None
            out_all[k] = dataclasses.replace(spec_out, expr=expr)
        for target in links.values():
            out = outputs[target]
            if out.expr is not None and target not in spec.outputs:
                link_eqs[target] = out.expr
    # outputs used as inputs of another component become equations (time-varying),
    # unless the name already is a symbol (an output named like its state, e.g. CE)
    symbols = set(parameters) | set(derived) | set(states) | set(equations)
    for k, v in link_eqs.items():
        if k not in symbols:
            equations[k] = v
    pk_out = out_all.pop(PK_CONCENTRATION, None)
    if pk_out is not None:
        out_all = {PK_CONCENTRATION: pk_out, **out_all}
    try:
        eq_order = topological_order(equations, where=f"{name}: equations")
        der_order = topological_order(derived, where=f"{name}: derived")
    except ExpressionError as exc:
        raise ModelError(str(exc)) from exc
    return Model(
        name=name,
        components=tuple(s for _, s, _ in specs),
        pk_compartments=pk_cmt[0] if pk_cmt else None,
        parameters=parameters,
        derived={k: derived[k] for k in der_order},
        states=states,
        equations={k: equations[k] for k in eq_order},
        odes={k: odes[k] for k in states},
        outputs=out_all,
        solver="stiff" if any(s.solver == "stiff" for _, s, _ in specs) else "auto",
        dosing=next((dict(s.dosing) for _, s, _ in specs if s.dosing), {}),
    )


def build_model(
    section: Mapping[str, Any], *, base_dir: str | Path | None = None, source: str = "<dict>"
) -> Model:
    """Build the composed model of a study's ``model`` section.

    Parameters
    ----------
    section : mapping
        ``{"pk": <library name or file>, "components": {label: {"model": ...,
        "links": {INPUT: OUTPUT}}}, "parameters": {NAME: {"value": ...}}}``; ``pk`` and
        ``components`` are optional (but not both absent). ``parameters`` override the
        typical values of the model files (other keys of each entry, such as
        ``covariates``, are used by the population sampler).
    base_dir : str or Path, optional
        Folder for relative model file paths (the study file's folder).
    source : str
        Name of the study file, for error messages.

    Returns
    -------
    Model

    Examples
    --------
    >>> m = build_model({"pk": "pk_2cmt", "parameters": {"CL": {"value": 7.5}}})
    >>> m.parameters["CL"].value, m.parameters["V1"].unit
    (7.5, 'L')
    """
    model, problems = check_model_section(section, base_dir=base_dir)
    if problems or model is None:
        text = "\n".join(f"{source}: model{'.' + w if w else ''}: {m}" for w, m in problems)
        raise ModelError(text, problems)
    return model


def check_model_section(
    section: Mapping[str, Any], *, base_dir: str | Path | None = None
) -> tuple[Model | None, list[tuple[str, str]]]:
    """Build a study's model, collecting every problem instead of stopping at the first.

    Returns
    -------
    model : Model or None
        The model (with valid overrides applied), None if it cannot be built.
    problems : list of (where, message)
        ``where`` is relative to the model section (``pk``, ``components.anc.model``,
        ``parameters.CLX``, ...).
    """
    problems: list[tuple[str, str]] = []
    pk = None
    pk_name = section.get("pk")
    if pk_name:
        # a library name or file, or {model: ..., absorption: transit, transit_compartments: n}
        options = None
        if isinstance(pk_name, Mapping):
            options = {k: v for k, v in pk_name.items() if k != "model"}
            pk_name = pk_name["model"]
        try:
            pk = load_model(pk_name, base_dir=base_dir, absorption=options)
        except ModelError as exc:
            problems.append(("pk", str(exc)))
    comps: dict[str, tuple[ModelSpec, Mapping[str, str]]] = {}
    for label, comp in (section.get("components") or {}).items():
        try:
            comps[label] = (load_model(comp["model"], base_dir=base_dir), comp.get("links") or {})
        except ModelError as exc:
            problems.append((f"components.{label}.model", str(exc)))
    if not pk_name and not section.get("components"):
        problems.append(("", "needs a 'pk' model or at least one component"))
    if problems:
        return None, problems
    try:
        model = compose(pk, comps, name=str(section.get("name", "model")))
    except ModelError as exc:
        return None, exc.problems or [("", str(exc))]
    params = dict(model.parameters)
    for name, ov in (section.get("parameters") or {}).items():
        if name not in params:
            problems.append(
                (
                    f"parameters.{name}",
                    f"not a parameter of the model (parameters: {sorted(model.parameters)})",
                )
            )
            continue
        factor = 1.0
        if "unit" in ov and params[name].unit and ov["unit"] != params[name].unit:
            try:  # an equivalent unit is converted to the model's (mL/min -> L/h)
                factor = conversion(str(ov["unit"]), params[name].unit)
            except UnitMismatch as exc:
                problems.append(
                    (
                        f"parameters.{name}.unit",
                        f"the model declares {params[name].unit!r}, got {ov['unit']!r}: {exc}",
                    )
                )
        if "value" in ov:
            params[name] = dataclasses.replace(params[name], value=float(ov["value"]) * factor)
    return dataclasses.replace(model, parameters=params), problems
