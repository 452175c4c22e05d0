"""Safe math expressions for study and model files.

Study and model files are *data*: the expressions they contain (covariate
effects, ODE right-hand sides, inclusion criteria, ...) must never be able to
run code.  This module

* parses expression text with :func:`ast.parse` (``mode="eval"``) and accepts
  only a small whitelist of syntax (numbers, names, ``+ - * / **``, unary
  ``- + not``, comparisons, ``and``/``or``, ``a if c else b`` and calls of the
  functions in :data:`~vtrial.model.syntax.ALLOWED_FUNCTIONS`), see
  :func:`parse_expression` (the whitelist and its check: :mod:`vtrial.model.syntax`);
* evaluates a validated tree on numpy arrays by walking it node by node
  (no :func:`eval`, :func:`exec` or :func:`compile` of user text), see
  :func:`evaluate` (the walker: :mod:`vtrial.model.evaluator`);
* generates Python source text for scalar numba kernels from a validated tree,
  built only from the validated nodes and caller-provided name mappings, see
  :func:`to_source` (the walker: :mod:`vtrial.model.emitter`);
* orders named assignments by their dependencies, see
  :func:`topological_order`.

This module is the entry point: :class:`Expression` and the functions above are
what the rest of vtrial calls.

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
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vtrial.errors import ExpressionError
from vtrial.model.emitter import Emitter
from vtrial.model.evaluator import Evaluator
from vtrial.model.syntax import (
    MAX_DEPTH,
    MAX_LENGTH,
    Validator,
    check_number,
    format_names,
    is_condition,
    parse_syntax,
    tree_depth,
)

__all__ = [
    "Expression",
    "evaluate",
    "names_in",
    "parse_expression",
    "to_source",
    "topological_order",
]


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
                f"a constant is required here, but the expression uses {format_names(self.names)}",
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
    tree = parse_syntax(text, body, shift, where)
    validator = Validator(text, shift, where, known_names, categorical)
    depth = tree_depth(tree)
    if depth > MAX_DEPTH:
        raise ExpressionError(
            where, text, f"the expression is nested too deeply (depth {depth}, at most {MAX_DEPTH})"
        )
    validator.validate(tree.body)
    if boolean and not is_condition(tree.body):
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
    check_number(number, where, source, None)
    if boolean:
        raise ExpressionError(where, source, "a condition is required here, got a number")
    body = ast.Constant(value=number)
    tree = ast.fix_missing_locations(ast.Expression(body=body))
    return Expression(source=source, tree=tree, names=frozenset(), strings=frozenset(), where=where)


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


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
    walker = Evaluator(expr.where, expr.source, expr.names, env, size)
    condition = is_condition(expr.tree.body)
    with np.errstate(all="ignore"):
        result: NDArray[Any]
        if condition:
            result = walker.condition(expr.tree.body)
        else:
            result = walker.number(expr.tree.body)
    shape = () if walker.length is None else (walker.length,)
    dtype = np.bool_ if condition else np.float64
    return np.array(np.broadcast_to(result, shape), dtype=dtype)


# ---------------------------------------------------------------------------
# Code generation
# ---------------------------------------------------------------------------


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
    emitter = Emitter(expr.where, expr.source, name_map, categories)
    body = expr.tree.body
    if is_condition(body):
        return emitter.condition(body)
    return emitter.number(body)


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
