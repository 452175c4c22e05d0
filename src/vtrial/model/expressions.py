"""Safe math expressions for study and model files.

Study and model files are *data*: the expressions they contain (covariate
effects, ODE right-hand sides, inclusion criteria, ...) must never be able to
run code.  This module

* parses expression text with :func:`ast.parse` (``mode="eval"``) and accepts
  only a small whitelist of syntax (numbers, names, ``+ - * / **``, unary
  ``- + not``, comparisons, ``and``/``or``, ``a if c else b`` and calls of the
  functions in :data:`ALLOWED_FUNCTIONS`), see :func:`parse_expression`;
* evaluates a validated tree on numpy arrays by walking it node by node
  (no :func:`eval`, :func:`exec` or :func:`compile` of user text), see
  :func:`evaluate`;
* generates Python source text for scalar numba kernels from a validated tree,
  built only from the validated nodes and caller-provided name mappings, see
  :func:`to_source`;
* orders named assignments by their dependencies, see
  :func:`topological_order`.

Semantics shared by :func:`evaluate` and :func:`to_source`
-----------------------------------------------------------
* All arithmetic is float64; a condition (comparison, ``and``, ``or``,
  ``not``) used as a number counts as ``1.0`` (true) or ``0.0`` (false).
* The condition of ``a if c else b`` and ``where(c, a, b)`` may be a number,
  which is true when it is non-zero (NaN counts as true, like in Python).
* The operands of ``and``, ``or`` and ``not`` must themselves be conditions.
* A categorical name (e.g. a genotype column) may only appear in ``==`` or
  ``!=`` comparisons with one of its labels: ``cyp2c9 == 'PM'``.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vtrial.errors import ExpressionError

__all__ = [
    "ALLOWED_FUNCTIONS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "Expression",
    "evaluate",
    "names_in",
    "parse_expression",
    "to_source",
    "topological_order",
]

#: Longest accepted expression text, in characters.
MAX_LENGTH = 2000

#: Deepest accepted nesting of expression nodes (``x`` has depth 1,
#: ``exp(x + 1)`` has depth 3).
MAX_DEPTH = 50

#: Functions that may be called, mapped to their number of arguments
#: (or the inclusive range ``(min, max)``).
ALLOWED_FUNCTIONS: dict[str, int | tuple[int, int]] = {
    "abs": 1,
    "ceil": 1,
    "clip": 3,
    "cos": 1,
    "exp": 1,
    "expit": 1,
    "floor": 1,
    "log": 1,
    "log10": 1,
    "logit": 1,
    "max": (2, 64),
    "min": (2, 64),
    "pow": 2,
    "sin": 1,
    "sqrt": 1,
    "tanh": 1,
    "where": 3,
}

_BINOPS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Pow: "**",
}

_FORBIDDEN_BINOPS: dict[type[ast.operator], str] = {
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
}

_CMPOPS: dict[type[ast.cmpop], str] = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
}

_FORBIDDEN_CMPOPS: dict[type[ast.cmpop], str] = {
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is",
    ast.IsNot: "is not",
}

_FORBIDDEN_NODES: dict[type[ast.AST], str] = {
    ast.Subscript: "indexing and subscripts are not allowed",
    ast.Slice: "slices are not allowed",
    ast.Lambda: "lambda functions are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.Starred: "'*' unpacking is not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.List: "list literals are not allowed",
    ast.Set: "set literals are not allowed",
    ast.Tuple: "tuples are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.Await: "'await' is not allowed",
    ast.Yield: "'yield' is not allowed",
    ast.YieldFrom: "'yield' is not allowed",
}

_MAX_LISTED_NAMES = 20


# ---------------------------------------------------------------------------
# Expression object
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """A parsed and validated expression.

    Create instances with :func:`parse_expression`; the tree of an instance
    built any other way is not guaranteed to be safe.

    Parameters
    ----------
    source : str
        The original text (``str(number)`` if a number was given).
    tree : ast.Expression
        The validated syntax tree.
    names : frozenset of str
        Free variable names referenced (function names are not included).
    strings : frozenset of str
        String constants referenced (category labels).
    where : str
        Where the expression comes from, used in error messages.
    """

    source: str
    tree: ast.Expression = field(repr=False, compare=False)
    names: frozenset[str]
    strings: frozenset[str]
    where: str

    def is_constant(self) -> bool:
        """Return whether the expression references no names.

        Returns
        -------
        bool
            ``True`` if the value does not depend on any input.
        """
        return not self.names

    def constant_value(self) -> float:
        """Fold a constant expression to a number.

        Returns
        -------
        float
            The value (a condition gives ``1.0`` or ``0.0``).

        Raises
        ------
        ExpressionError
            If the expression references names.
        """
        if not self.is_constant():
            raise ExpressionError(
                self.where,
                self.source,
                f"a constant is required here, but the expression uses {_list(self.names)}",
            )
        return float(evaluate(self, {}))


# ---------------------------------------------------------------------------
# Parsing and validation
# ---------------------------------------------------------------------------


def parse_expression(
    text: str | int | float,
    *,
    where: str,
    known_names: Collection[str] | None = None,
    categorical: Mapping[str, Collection[str]] | None = None,
    boolean: bool = False,
) -> Expression:
    """Parse and validate an expression from a study or model file.

    Parameters
    ----------
    text : str or int or float
        The expression text, or a number (``bool`` is rejected).
    where : str
        Location for error messages, e.g. ``"models/friberg.yaml: odes.PROL"``.
    known_names : collection of str, optional
        If given, every variable name must be one of these (or a key of
        `categorical`).  If ``None``, any name not starting with ``_`` is
        accepted.
    categorical : mapping of str to collection of str, optional
        Categorical names and their labels.  If given, a string may only be
        compared (``==``/``!=``) with one of these names and must be one of
        its labels.  If ``None``, a name compared with a string is taken to be
        categorical and labels are not checked.  Either way, a categorical
        name may not be used as a number.
    boolean : bool, default False
        Require a condition at the top level (a comparison, ``and``, ``or``
        or ``not``), e.g. for inclusion criteria.

    Returns
    -------
    Expression
        The validated expression.

    Examples
    --------
    >>> import numpy as np
    >>> e = parse_expression("CL * (weight / 70) ** 0.75", where="doc")
    >>> evaluate(e, {"CL": 5.0, "weight": np.array([70.0, 140.0])}).round(4)
    array([5.   , 8.409])

    Anything but arithmetic, comparisons and whitelisted functions is refused:

    >>> parse_expression("__import__('os').system('ls')", where="my_model.yaml: odes.A")
    Traceback (most recent call last):
    ...
    vtrial.errors.ExpressionError: my_model.yaml: odes.A: attribute access ('.system')...

    Raises
    ------
    ExpressionError
        If the text is empty, too long, too deeply nested, not valid syntax,
        uses anything outside the whitelist, or breaks the name rules.
    """
    if isinstance(text, bool | np.bool_):
        raise ExpressionError(
            where, str(text), "true/false values are not allowed; write a number or an expression"
        )
    if isinstance(text, int | float | np.integer | np.floating):
        return _parse_number(text, where=where, boolean=boolean)
    if not isinstance(text, str):
        raise ExpressionError(
            where,
            repr(text),
            f"expected an expression (text) or a number, got {type(text).__name__}",
        )
    if not text.strip():
        raise ExpressionError(where, text, "the expression is empty")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            where,
            text[:80] + "...",
            f"the expression is too long ({len(text)} characters, at most {MAX_LENGTH})",
        )
    body = text.lstrip(" \t")
    shift = len(text) - len(body)
    tree = _parse_syntax(text, body, shift, where)
    validator = _Validator(text, shift, where, known_names, categorical)
    depth = _depth(tree)
    if depth > MAX_DEPTH:
        raise ExpressionError(
            where, text, f"the expression is nested too deeply (depth {depth}, at most {MAX_DEPTH})"
        )
    validator.validate(tree.body)
    if boolean and not _is_condition(tree.body):
        raise ExpressionError(
            where,
            text,
            "a condition is required here (a comparison such as 'crcl >= 30', "
            "possibly combined with and/or/not)",
        )
    return Expression(
        source=text,
        tree=tree,
        names=frozenset(validator.names),
        strings=frozenset(validator.strings),
        where=where,
    )


def _parse_number(value: int | float | np.number[Any], *, where: str, boolean: bool) -> Expression:
    source = str(value)
    number: int | float = int(value) if isinstance(value, int | np.integer) else float(value)
    _check_number(number, where, source, None)
    if boolean:
        raise ExpressionError(where, source, "a condition is required here, got a number")
    body = ast.Constant(value=number)
    tree = ast.fix_missing_locations(ast.Expression(body=body))
    return Expression(source=source, tree=tree, names=frozenset(), strings=frozenset(), where=where)


def _parse_syntax(text: str, body: str, shift: int, where: str) -> ast.Expression:
    try:
        return ast.parse(body, mode="eval")
    except SyntaxError as exc:
        lines = body.split("\n")
        lineno = exc.lineno if exc.lineno is not None and exc.lineno >= 1 else 1
        lineno = min(lineno, len(lines))
        line_text = lines[lineno - 1]
        msg = exc.msg or "invalid syntax"
        if exc.offset is None or exc.offset < 1:
            column = len(line_text) + 1 + (shift if lineno == 1 else 0)
            at = _at(lineno, column) + " (end of expression)"
        else:
            column = exc.offset + (shift if lineno == 1 else 0)
            at = _at(lineno, column)
        raise ExpressionError(where, text, f"syntax error {at}: {msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ExpressionError(where, text, f"syntax error: {exc}") from None


def _at(lineno: int, column: int) -> str:
    if lineno == 1:
        return f"at column {column}"
    return f"at line {lineno}, column {column}"


def _depth(tree: ast.Expression) -> int:
    """Deepest nesting of expression nodes, computed without recursion."""
    deepest = 0
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                stack.append((child, depth + 1))
            else:  # keyword, comprehension, ... : look inside at the same depth
                stack.append((child, depth))
    return deepest


def _is_condition(node: ast.AST) -> bool:
    """Whether a validated node has a true/false value."""
    return isinstance(node, ast.Compare | ast.BoolOp) or (
        isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
    )


def _is_string(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _split_label(left: ast.expr, right: ast.expr) -> tuple[ast.Constant, str, ast.expr]:
    """For a comparison with a string: ``(string node, string, other operand)``."""
    label_node, other = (left, right) if _is_string(left) else (right, left)
    if not isinstance(label_node, ast.Constant) or not isinstance(label_node.value, str):
        raise TypeError("neither operand is a string constant")
    return label_node, label_node.value, other


def _check_number(value: int | float, where: str, source: str, location: str | None) -> None:
    try:
        finite = math.isfinite(float(value))
    except OverflowError:
        finite = False
    if not finite:
        suffix = f" ({location})" if location else ""
        raise ExpressionError(where, source, f"the number {value!r} is not finite{suffix}")


def _list(items: Iterable[str], limit: int = _MAX_LISTED_NAMES) -> str:
    ordered = sorted(items)
    shown = ", ".join(ordered[:limit])
    if len(ordered) > limit:
        shown += f", ... ({len(ordered) - limit} more)"
    return shown


def _suggest(name: str, candidates: Collection[str]) -> str:
    """A "did you mean" hint (case-insensitive), or ``""``."""
    by_lower: dict[str, str] = {}
    for candidate in sorted(candidates):
        by_lower.setdefault(candidate.lower(), candidate)
    close = difflib.get_close_matches(name.lower(), by_lower, n=1)
    return f"did you mean '{by_lower[close[0]]}'? " if close else ""


def _labels(labels: Collection[str]) -> str:
    ordered = list(labels) if isinstance(labels, Sequence) else sorted(labels)
    return ", ".join(ordered)


class _Validator:
    """Checks a parsed tree against the whitelist and collects names."""

    def __init__(
        self,
        text: str,
        shift: int,
        where: str,
        known_names: Collection[str] | None,
        categorical: Mapping[str, Collection[str]] | None,
    ) -> None:
        self.text = text
        self.shift = shift
        self.where = where
        self.categorical = (
            None
            if categorical is None
            else {
                k: (tuple(v) if isinstance(v, Sequence) else tuple(sorted(v)))
                for k, v in categorical.items()
            }
        )
        if known_names is None:
            self.known: frozenset[str] | None = None
        else:
            self.known = frozenset(known_names) | frozenset(self.categorical or ())
        self.names: set[str] = set()
        self.strings: set[str] = set()
        self.numeric_uses: dict[str, ast.Name] = {}
        self.categorical_uses: dict[str, ast.Name] = {}
        self.labels_seen: dict[str, set[str]] = {}

    # -- helpers ------------------------------------------------------------

    def _location(self, node: ast.expr) -> str:
        lineno, col_offset = node.lineno, node.col_offset
        lines = self.text[self.shift :].split("\n")
        if not 1 <= lineno <= len(lines):
            return ""
        # col_offset counts UTF-8 bytes; report characters, 1-based.
        prefix = lines[lineno - 1].encode("utf-8")[:col_offset].decode("utf-8", "ignore")
        column = len(prefix) + 1 + (self.shift if lineno == 1 else 0)
        return _at(lineno, column)

    def fail(self, node: ast.expr, reason: str) -> ExpressionError:
        location = self._location(node)
        if location:
            reason = f"{reason} ({location})"
        return ExpressionError(self.where, self.text, reason)

    # -- entry point --------------------------------------------------------

    def validate(self, node: ast.expr) -> None:
        self.visit(node)
        if self.categorical is not None:
            categorical_names: Collection[str] = self.categorical
        else:
            categorical_names = self.categorical_uses
        for name in sorted(self.numeric_uses):
            if name in categorical_names:
                if self.categorical is not None:
                    labels: Sequence[str] = self.categorical[name]
                else:
                    labels = sorted(self.labels_seen.get(name, ()))
                example = f"{name} == {labels[0]!r}" if labels else f"{name} == 'label'"
                raise self.fail(
                    self.numeric_uses[name],
                    f"categorical name '{name}' can only be compared with == or != "
                    f"to one of its categories (e.g. {example}), not used as a number",
                )

    # -- nodes --------------------------------------------------------------

    def visit(self, node: ast.expr) -> None:
        """Validate `node` used as a value (number or condition)."""
        if isinstance(node, ast.Constant):
            self.visit_constant(node)
        elif isinstance(node, ast.Name):
            self.visit_name(node, numeric=True)
        elif isinstance(node, ast.BinOp):
            self.visit_binop(node)
        elif isinstance(node, ast.UnaryOp):
            self.visit_unaryop(node)
        elif isinstance(node, ast.BoolOp):
            self.visit_boolop(node)
        elif isinstance(node, ast.Compare):
            self.visit_compare(node)
        elif isinstance(node, ast.IfExp):
            self.visit(node.test)
            self.visit(node.body)
            self.visit(node.orelse)
        elif isinstance(node, ast.Call):
            self.visit_call(node)
        elif isinstance(node, ast.Attribute):
            raise self.fail(node, f"attribute access ('.{node.attr}') is not allowed")
        elif type(node) in _FORBIDDEN_NODES:
            raise self.fail(node, _FORBIDDEN_NODES[type(node)])
        else:
            raise self.fail(node, f"{type(node).__name__} is not allowed")

    def visit_constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            raise self.fail(node, f"true/false constants ({value}) are not allowed")
        if isinstance(value, str):
            raise self.fail(
                node,
                f"the string {value!r} is only allowed in == or != comparisons "
                "with a categorical name (e.g. genotype == 'PM')",
            )
        if value is None:
            raise self.fail(node, "None is not allowed")
        if isinstance(value, bytes):
            raise self.fail(node, "bytes constants are not allowed")
        if isinstance(value, complex):
            raise self.fail(node, "complex numbers are not allowed")
        if not isinstance(value, int | float):
            raise self.fail(node, f"the constant {value!r} is not allowed")
        _check_number(value, self.where, self.text, self._location(node))

    def visit_name(self, node: ast.Name, *, numeric: bool) -> None:
        name = node.id
        if not isinstance(node.ctx, ast.Load):
            raise self.fail(node, f"assigning to '{name}' is not allowed")
        if name.startswith("_"):
            raise self.fail(node, f"names starting with '_' are not allowed: '{name}'")
        if self.known is not None and name not in self.known:
            if self.known:
                hint = _suggest(name, self.known)
                known = f"({hint}known: {_list(self.known)})"
            else:
                known = "(no names are defined here)"
            raise self.fail(node, f"unknown name '{name}' {known}")
        self.names.add(name)
        if numeric:
            self.numeric_uses.setdefault(name, node)
        else:
            self.categorical_uses.setdefault(name, node)

    def visit_binop(self, node: ast.BinOp) -> None:
        op = type(node.op)
        if op not in _BINOPS:
            symbol = _FORBIDDEN_BINOPS.get(op, op.__name__)
            hint = "; use ** for powers" if op is ast.BitXor else ""
            raise self.fail(node, f"operator '{symbol}' is not allowed (allowed: + - * / **){hint}")
        self.visit(node.left)
        self.visit(node.right)

    def visit_unaryop(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            if not _is_condition(node.operand):
                raise self.fail(
                    node, "the operand of 'not' must be a condition (a comparison, and, or, not)"
                )
        elif not isinstance(node.op, ast.USub | ast.UAdd):
            raise self.fail(node, "operator '~' is not allowed (allowed: -, +, not)")
        self.visit(node.operand)

    def visit_boolop(self, node: ast.BoolOp) -> None:
        word = "and" if isinstance(node.op, ast.And) else "or"
        for value in node.values:
            if not _is_condition(value):
                raise self.fail(
                    value,
                    f"the operands of '{word}' must be conditions (comparisons, and, or, not)",
                )
            self.visit(value)

    def visit_compare(self, node: ast.Compare) -> None:
        operands = [node.left, *node.comparators]
        for op in node.ops:
            if type(op) not in _CMPOPS:
                symbol = _FORBIDDEN_CMPOPS.get(type(op), type(op).__name__)
                raise self.fail(
                    node,
                    f"comparison '{symbol}' is not allowed (allowed: < <= > >= == !=)",
                )
        for i, op in enumerate(node.ops):
            left, right = operands[i], operands[i + 1]
            if _is_string(left) or _is_string(right):
                self.visit_label_comparison(node, left, op, right)
            else:
                self.visit(left)
                self.visit(right)

    def visit_label_comparison(
        self, node: ast.Compare, left: ast.expr, op: ast.cmpop, right: ast.expr
    ) -> None:
        label_node, label, other = _split_label(left, right)
        if not isinstance(op, ast.Eq | ast.NotEq):
            raise self.fail(
                node, f"the string {label!r} can only be compared with == or !=, not with <, > etc."
            )
        if not isinstance(other, ast.Name):
            raise self.fail(
                node,
                f"the string {label!r} can only be compared with a categorical name "
                "(e.g. genotype == 'PM')",
            )
        self.visit_name(other, numeric=False)
        name = other.id
        if self.categorical is not None:
            if name not in self.categorical:
                declared = _list(self.categorical) if self.categorical else "none"
                raise self.fail(
                    other,
                    f"'{name}' is not categorical, so it cannot be compared with the string "
                    f"{label!r} (categorical names: {declared})",
                )
            labels = self.categorical[name]
            if label not in labels:
                raise self.fail(
                    label_node,
                    f"{label!r} is not a category of {name} (categories: {_labels(labels)})",
                )
        self.strings.add(label)
        self.labels_seen.setdefault(name, set()).add(label)

    def visit_call(self, node: ast.Call) -> None:
        if node.keywords:
            raise self.fail(node, "keyword arguments are not allowed in function calls")
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise self.fail(node, "'*' unpacking is not allowed")
        if not isinstance(node.func, ast.Name):
            # Report the most specific problem (e.g. attribute access) first.
            self.visit(node.func)
            raise self.fail(node, "only the allowed functions can be called, by plain name")
        name = node.func.id
        if name not in ALLOWED_FUNCTIONS:
            raise self.fail(
                node,
                f"function '{name}' is not allowed (allowed: {_list(ALLOWED_FUNCTIONS, 100)})",
            )
        arity = ALLOWED_FUNCTIONS[name]
        lo, hi = (arity, arity) if isinstance(arity, int) else arity
        n = len(node.args)
        if not lo <= n <= hi:
            if lo == hi:
                wanted = f"{lo} argument{'s' if lo != 1 else ''}"
            else:
                wanted = f"{lo} to {hi} arguments"
            raise self.fail(node, f"function '{name}' takes {wanted}, got {n}")
        for arg in node.args:
            self.visit(arg)


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------

_UNARY_NUMPY: dict[str, Callable[[NDArray[np.float64]], NDArray[Any]]] = {
    "abs": np.abs,
    "ceil": np.ceil,
    "cos": np.cos,
    "exp": np.exp,
    "floor": np.floor,
    "log": np.log,
    "log10": np.log10,
    "sin": np.sin,
    "sqrt": np.sqrt,
    "tanh": np.tanh,
}

_BINOPS_NUMPY: dict[type[ast.operator], Callable[[Any, Any], NDArray[Any]]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
}

_CMPOPS_NUMPY: dict[type[ast.cmpop], Callable[[Any, Any], NDArray[np.bool_]]] = {
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
}


def evaluate(
    expr: Expression,
    env: Mapping[str, ArrayLike | float | str],
    *,
    size: int | None = None,
) -> np.ndarray:
    """Evaluate an expression on numpy arrays.

    The validated tree is walked node by node; nothing is compiled.

    Parameters
    ----------
    expr : Expression
        A parsed expression.
    env : mapping of str to array_like or float or str
        Values of the names: scalars or 1-D arrays of equal length (scalars
        are broadcast).  Categorical names hold labels (arrays of ``str`` or
        ``object``, pandas ``Categorical`` or ``Series``, or a single ``str``).
    size : int, optional
        Length of the result.  If ``None``, the common length of the arrays
        in `env` used by the expression; a 0-d array if all are scalars.

    Returns
    -------
    numpy.ndarray
        A new float64 array, or a bool array if the expression is a condition
        (comparison, ``and``, ``or``, ``not``).  Floating-point problems give
        ``inf``/``nan`` without warnings (e.g. ``log(0)`` is ``-inf``).

    Raises
    ------
    ExpressionError
        If a name is missing from `env`, has the wrong length or shape, or
        holds the wrong kind of values.
    """
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ValueError(f"size must be a non-negative integer, got {size!r}")
    walker = _Evaluator(expr, env, size)
    is_condition = _is_condition(expr.tree.body)
    with np.errstate(all="ignore"):
        result: NDArray[Any]
        if is_condition:
            result = walker.condition(expr.tree.body)
        else:
            result = walker.number(expr.tree.body)
    shape = () if walker.length is None else (walker.length,)
    dtype = np.bool_ if is_condition else np.float64
    return np.array(np.broadcast_to(result, shape), dtype=dtype)


class _Evaluator:
    """Walks a validated tree with numpy."""

    def __init__(
        self, expr: Expression, env: Mapping[str, ArrayLike | float | str], size: int | None
    ) -> None:
        self.expr = expr
        self.length = size
        self.raw: dict[str, NDArray[Any]] = {}
        self.numeric: dict[str, NDArray[np.float64]] = {}
        for name in sorted(expr.names):
            if name not in env:
                raise self.fail(f"no value given for name '{name}' (given: {_list(env)})")
            value = np.asarray(env[name])
            if value.ndim > 1:
                raise self.fail(
                    f"name '{name}' must be a scalar or a 1-D array, got shape {value.shape}"
                )
            if value.ndim == 1:
                if self.length is None:
                    self.length = value.shape[0]
                elif value.shape[0] != self.length:
                    raise self.fail(
                        f"name '{name}' has {value.shape[0]} values, expected {self.length}"
                    )
            self.raw[name] = value

    def fail(self, reason: str) -> ExpressionError:
        return ExpressionError(self.expr.where, self.expr.source, reason)

    # -- values -------------------------------------------------------------

    def name_value(self, name: str) -> NDArray[np.float64]:
        if name not in self.numeric:
            raw = self.raw[name]
            if raw.dtype.kind in "USV":
                raise self.fail(f"name '{name}' holds text values where a number is needed")
            try:
                self.numeric[name] = np.asarray(raw, dtype=np.float64)
            except (TypeError, ValueError):
                raise self.fail(
                    f"name '{name}' holds values that are not numbers (dtype {raw.dtype})"
                ) from None
        return self.numeric[name]

    def labels(self, name: str) -> NDArray[Any]:
        raw = self.raw[name]
        if raw.dtype.kind not in "USO":
            raise self.fail(
                f"categorical name '{name}' must hold labels (text), got {raw.dtype} values"
            )
        return raw

    def number(self, node: ast.AST) -> NDArray[np.float64]:
        """Value of `node` as float64."""
        if _is_condition(node):
            return self.condition(node).astype(np.float64)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise self.fail(f"unsupported constant {node.value!r}")
            return np.asarray(float(node.value), dtype=np.float64)
        if isinstance(node, ast.Name):
            return self.name_value(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS_NUMPY:
            func = _BINOPS_NUMPY[type(node.op)]
            return func(self.number(node.left), self.number(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return np.negative(self.number(node.operand))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
            return self.number(node.operand)
        if isinstance(node, ast.IfExp):
            return np.where(self.truth(node.test), self.number(node.body), self.number(node.orelse))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self.call(node.func.id, node.args)
        raise self.fail(f"unsupported syntax {type(node).__name__}")

    def call(self, name: str, args: list[ast.expr]) -> NDArray[np.float64]:
        if name in _UNARY_NUMPY and len(args) == 1:
            return _UNARY_NUMPY[name](self.number(args[0]))
        values = [self.number(arg) for arg in args]
        if name in ("min", "max") and len(values) >= 2:
            reduce = np.minimum if name == "min" else np.maximum
            result = values[0]
            for value in values[1:]:
                result = reduce(result, value)
            return result
        if name == "where" and len(args) == 3:
            return np.where(self.truth(args[0]), values[1], values[2])
        if name == "pow" and len(values) == 2:
            return np.power(values[0], values[1])
        if name == "logit" and len(values) == 1:
            return np.log(values[0] / (1.0 - values[0]))
        if name == "expit" and len(values) == 1:
            return 1.0 / (1.0 + np.exp(-values[0]))
        if name == "clip" and len(values) == 3:
            return np.minimum(np.maximum(values[0], values[1]), values[2])
        raise self.fail(f"unsupported call of '{name}' with {len(args)} arguments")

    def truth(self, node: ast.AST) -> NDArray[np.bool_]:
        """Value of `node` used as a condition (numbers: non-zero is true)."""
        if _is_condition(node):
            return self.condition(node)
        return np.not_equal(self.number(node), 0.0)

    def condition(self, node: ast.AST) -> NDArray[np.bool_]:
        """Value of a condition node as bool."""
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            result = self.compare(operands[0], node.ops[0], operands[1])
            for i in range(1, len(node.ops)):
                pair = self.compare(operands[i], node.ops[i], operands[i + 1])
                result = np.logical_and(result, pair)
            return result
        if isinstance(node, ast.BoolOp):
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            values = [self.condition(value) for value in node.values]
            combined = values[0]
            for value in values[1:]:
                combined = combine(combined, value)
            return combined
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return np.logical_not(self.condition(node.operand))
        raise self.fail(f"unsupported condition {type(node).__name__}")

    def compare(self, left: ast.expr, op: ast.cmpop, right: ast.expr) -> NDArray[np.bool_]:
        func = _CMPOPS_NUMPY.get(type(op))
        if func is None:
            raise self.fail(f"unsupported comparison {type(op).__name__}")
        if _is_string(left) or _is_string(right):
            _, label, other = _split_label(left, right)
            if not isinstance(other, ast.Name) or not isinstance(op, ast.Eq | ast.NotEq):
                raise self.fail("unsupported comparison with a string")
            return np.asarray(func(self.labels(other.id), label), dtype=np.bool_)
        return np.asarray(func(self.number(left), self.number(right)), dtype=np.bool_)


# ---------------------------------------------------------------------------
# Code generation
# ---------------------------------------------------------------------------

_SIMPLE_TARGET = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[0-9]+\])?")

_MATH_FUNCTIONS = {
    "ceil": "math.ceil",
    "cos": "math.cos",
    "exp": "math.exp",
    "floor": "math.floor",
    "log": "math.log",
    "log10": "math.log10",
    "sin": "math.sin",
    "sqrt": "math.sqrt",
    "tanh": "math.tanh",
}


def to_source(
    expr: Expression,
    name_map: Mapping[str, str],
    *,
    categories: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """Generate Python source text for a scalar (numba ``@njit``) kernel.

    The text is built only from the validated nodes, numbers formatted with
    ``repr(float(value))`` and the values of `name_map`; the user's text is
    never copied into it.  It is fully parenthesized, uses ``math.*``
    functions and builtin ``abs``, ``min`` and ``max`` (so the kernel's
    namespace needs ``math``) and computes the same values as
    :func:`evaluate` on float64 scalars, except where CPython raises on
    domain errors (e.g. ``math.log(0.0)``) where numba returns ``inf``/``nan``.

    Parameters
    ----------
    expr : Expression
        A parsed expression.
    name_map : mapping of str to str
        Python expression text for each name, e.g. ``{"CL": "p[3]",
        "PROL": "y[0]", "t": "t"}``; written by the caller, not the user.
    categories : mapping of str to sequence of str, optional
        Labels of the categorical names; a comparison ``cyp2c9 == 'PM'`` is
        emitted as a comparison of the name's value with the index of
        ``'PM'`` in ``categories['cyp2c9']`` (as a float, e.g. ``2.0``).

    Returns
    -------
    str
        A Python expression; a condition gives a ``bool``, anything else a
        ``float``.

    Raises
    ------
    ExpressionError
        If a name is missing from `name_map`, or a categorical name or label
        is missing from `categories`.
    ValueError
        If a value of `name_map` is not a Python expression.
    """
    emitter = _Emitter(expr, name_map, categories)
    body = expr.tree.body
    if _is_condition(body):
        return emitter.condition(body)
    return emitter.number(body)


class _Emitter:
    """Builds source text from a validated tree.

    Every fragment returned is atomic: a number, a simple target like
    ``p[3]``, a call, or a parenthesized expression, so it can be used as an
    operand without changing precedence.
    """

    def __init__(
        self,
        expr: Expression,
        name_map: Mapping[str, str],
        categories: Mapping[str, Sequence[str]] | None,
    ) -> None:
        self.expr = expr
        self.name_map = name_map
        self.categories = categories

    def fail(self, reason: str) -> ExpressionError:
        return ExpressionError(self.expr.where, self.expr.source, reason)

    def name(self, name: str) -> str:
        if name not in self.name_map:
            raise self.fail(
                f"name '{name}' is not available in compiled code "
                f"(available: {_list(self.name_map) or 'none'})"
            )
        target = self.name_map[name]
        if not isinstance(target, str):
            raise TypeError(f"name_map[{name!r}] must be a str, got {type(target).__name__}")
        if _SIMPLE_TARGET.fullmatch(target):
            return target
        try:
            ast.parse(target, mode="eval")
        except SyntaxError:
            raise ValueError(
                f"name_map[{name!r}] = {target!r} is not a Python expression"
            ) from None
        return f"({target})"

    def constant(self, node: ast.Constant) -> str:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"unsupported constant {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise self.fail(f"the number {value!r} is not finite")
        text = repr(number)
        return f"({text})" if number < 0 or text.startswith("-") else text

    def number(self, node: ast.AST) -> str:
        """Fragment computing `node` as a float."""
        if _is_condition(node):
            return f"(1.0 if {self.condition(node)} else 0.0)"
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            symbol = _BINOPS[type(node.op)]
            return f"({self.number(node.left)} {symbol} {self.number(node.right)})"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return f"(-{self.number(node.operand)})"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
            return f"(+{self.number(node.operand)})"
        if isinstance(node, ast.IfExp):
            body, orelse = self.number(node.body), self.number(node.orelse)
            return f"({body} if {self.truth(node.test)} else {orelse})"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self.call(node.func.id, node.args)
        raise self.fail(f"unsupported syntax {type(node).__name__}")

    def call(self, name: str, args: list[ast.expr]) -> str:
        if name == "where" and len(args) == 3:
            body, orelse = self.number(args[1]), self.number(args[2])
            return f"({body} if {self.truth(args[0])} else {orelse})"
        values = [self.number(arg) for arg in args]
        if name in ("floor", "ceil") and len(values) == 1:
            # math.floor/ceil return integers; keep every value a float.
            return f"float({_MATH_FUNCTIONS[name]}({values[0]}))"
        if name in _MATH_FUNCTIONS and len(values) == 1:
            return f"{_MATH_FUNCTIONS[name]}({values[0]})"
        if name == "abs" and len(values) == 1:
            return f"abs({values[0]})"
        if name in ("min", "max") and len(values) >= 2:
            return f"{name}({', '.join(values)})"
        if name == "pow" and len(values) == 2:
            return f"({values[0]} ** {values[1]})"
        if name == "logit" and len(values) == 1:
            x = values[0]
            return f"math.log({x} / (1.0 - {x}))"
        if name == "expit" and len(values) == 1:
            return f"(1.0 / (1.0 + math.exp(-{values[0]})))"
        if name == "clip" and len(values) == 3:
            return f"min(max({values[0]}, {values[1]}), {values[2]})"
        raise self.fail(f"unsupported call of '{name}' with {len(args)} arguments")

    def truth(self, node: ast.AST) -> str:
        """Fragment for `node` used as a condition (numbers: non-zero is true)."""
        if _is_condition(node):
            return self.condition(node)
        return f"({self.number(node)} != 0.0)"

    def condition(self, node: ast.AST) -> str:
        """Fragment computing a condition node as a bool."""
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            pairs = [
                self.compare(operands[i], op, operands[i + 1]) for i, op in enumerate(node.ops)
            ]
            return pairs[0] if len(pairs) == 1 else f"({' and '.join(pairs)})"
        if isinstance(node, ast.BoolOp):
            word = " and " if isinstance(node.op, ast.And) else " or "
            return f"({word.join(self.condition(value) for value in node.values)})"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return f"(not {self.condition(node.operand)})"
        raise self.fail(f"unsupported condition {type(node).__name__}")

    def compare(self, left: ast.expr, op: ast.cmpop, right: ast.expr) -> str:
        symbol = _CMPOPS.get(type(op))
        if symbol is None:
            raise self.fail(f"unsupported comparison {type(op).__name__}")
        if _is_string(left) or _is_string(right):
            if not isinstance(op, ast.Eq | ast.NotEq):
                raise self.fail("unsupported comparison with a string")
            _, label, other = _split_label(left, right)
            if not isinstance(other, ast.Name):
                raise self.fail("unsupported comparison with a string")
            code = self.label_code(other.id, label)
            value = self.name(other.id)
            if _is_string(left):
                return f"({code} {symbol} {value})"
            return f"({value} {symbol} {code})"
        return f"({self.number(left)} {symbol} {self.number(right)})"

    def label_code(self, name: str, label: str) -> str:
        if self.categories is None or name not in self.categories:
            raise self.fail(
                f"the categories of '{name}' are needed to compile the comparison with {label!r}"
            )
        labels = list(self.categories[name])
        if label not in labels:
            raise self.fail(
                f"{label!r} is not a category of {name} (categories: {', '.join(labels)})"
            )
        return repr(float(labels.index(label)))


# ---------------------------------------------------------------------------
# Utilities
# ---------------------------------------------------------------------------


def names_in(exprs: Iterable[Expression]) -> frozenset[str]:
    """Return all names referenced by some expressions.

    Parameters
    ----------
    exprs : iterable of Expression
        Parsed expressions.

    Returns
    -------
    frozenset of str
        The union of their :attr:`Expression.names`.
    """
    names: set[str] = set()
    for expr in exprs:
        names |= expr.names
    return frozenset(names)


def topological_order(assignments: Mapping[str, Expression], *, where: str) -> list[str]:
    """Order named assignments so that each comes after the names it uses.

    Names that are not keys of `assignments` are external inputs and impose
    no order.  The order is deterministic: dependencies first, otherwise the
    order of `assignments`.

    Parameters
    ----------
    assignments : mapping of str to Expression
        ``name = expression`` definitions, e.g. derived parameters.
    where : str
        Location for error messages.

    Returns
    -------
    list of str
        The keys of `assignments`, each after all keys it depends on.

    Raises
    ------
    ExpressionError
        If the definitions are circular; the message names the cycle
        (``A -> B -> A``).
    """
    order: list[str] = []
    done: set[str] = set()
    for root in assignments:
        if root in done:
            continue
        # Iterative depth-first search; `path` is the chain being explored.
        path: list[str] = [root]
        on_path: set[str] = {root}
        pending: list[list[str]] = [sorted(assignments[root].names & assignments.keys())]
        while path:
            if pending[-1]:
                dep = pending[-1].pop(0)
                if dep in done:
                    continue
                if dep in on_path:
                    cycle = [*path[path.index(dep) :], dep]
                    raise ExpressionError(
                        where,
                        assignments[path[-1]].source,
                        f"circular definition: {' -> '.join(cycle)}",
                    )
                path.append(dep)
                on_path.add(dep)
                pending.append(sorted(assignments[dep].names & assignments.keys()))
            else:
                name = path.pop()
                pending.pop()
                on_path.discard(name)
                done.add(name)
                order.append(name)
    return order
