"""Evaluation of a validated expression tree on numpy arrays.

The :class:`Evaluator` behind :func:`vtrial.model.expressions.evaluate` walks the tree
node by node with numpy (no :func:`eval`, :func:`exec` or :func:`compile` of user
text): float64 arithmetic, bool conditions, category labels compared with ``==`` /
``!=``. Its semantics are those of the module :mod:`vtrial.model.expressions`; the
scalar code of :mod:`vtrial.model.emitter` computes the same values.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vtrial.errors import ExpressionError
from vtrial.model.syntax import format_names, is_condition, is_string, split_label

__all__ = ["BINOPS_NUMPY", "CMPOPS_NUMPY", "UNARY_NUMPY", "Evaluator"]


UNARY_NUMPY: dict[str, Callable[[NDArray[np.float64]], NDArray[Any]]] = {
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


BINOPS_NUMPY: dict[type[ast.operator], Callable[[Any, Any], NDArray[Any]]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
}


CMPOPS_NUMPY: dict[type[ast.cmpop], Callable[[Any, Any], NDArray[np.bool_]]] = {
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
}


class Evaluator:
    """Walks a validated tree with numpy.

    Parameters
    ----------
    where, source : str
        The expression's location and text, for error messages.
    names : collection of str
        The names the expression uses; each must be in `env`.
    env : mapping of str to array_like or float or str
        Values of the names (see :func:`vtrial.model.expressions.evaluate`).
    size : int or None
        Length of the result, or None for the common length of the arrays used.
    """

    def __init__(
        self,
        where: str,
        source: str,
        names: Collection[str],
        env: Mapping[str, ArrayLike | float | str],
        size: int | None,
    ) -> None:
        self.where = where
        self.source = source
        self.length = size
        self.raw: dict[str, NDArray[Any]] = {}
        self.numeric: dict[str, NDArray[np.float64]] = {}
        for name in sorted(names):
            if name not in env:
                raise self.fail(f"no value given for name '{name}' (given: {format_names(env)})")
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
        return ExpressionError(self.where, self.source, reason)

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
        if is_condition(node):
            return self.condition(node).astype(np.float64)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise self.fail(f"unsupported constant {node.value!r}")
            return np.asarray(float(node.value), dtype=np.float64)
        if isinstance(node, ast.Name):
            return self.name_value(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in BINOPS_NUMPY:
            func = BINOPS_NUMPY[type(node.op)]
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
        if name in UNARY_NUMPY and len(args) == 1:
            return UNARY_NUMPY[name](self.number(args[0]))
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
        if is_condition(node):
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
        func = CMPOPS_NUMPY.get(type(op))
        if func is None:
            raise self.fail(f"unsupported comparison {type(op).__name__}")
        if is_string(left) or is_string(right):
            _, label, other = split_label(left, right)
            if not isinstance(other, ast.Name) or not isinstance(op, ast.Eq | ast.NotEq):
                raise self.fail("unsupported comparison with a string")
            return np.asarray(func(self.labels(other.id), label), dtype=np.bool_)
        return np.asarray(func(self.number(left), self.number(right)), dtype=np.bool_)
