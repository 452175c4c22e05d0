"""Python source text of a validated expression, for scalar (numba) kernels.

The :class:`Emitter` behind :func:`vtrial.model.expressions.to_source` builds the text
only from the validated nodes, numbers formatted with ``repr(float(value))`` and the
caller's name mappings: the user's text is never copied into generated code. Its
fragments compute, on float64 scalars, the values :mod:`vtrial.model.evaluator`
computes on arrays.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping, Sequence

from vtrial.errors import ExpressionError
from vtrial.model.syntax import (
    BINOPS,
    CMPOPS,
    format_names,
    is_condition,
    is_string,
    split_label,
)

__all__ = ["MATH_FUNCTIONS", "SIMPLE_TARGET", "Emitter"]


SIMPLE_TARGET = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[0-9]+\])?")


MATH_FUNCTIONS = {
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


class Emitter:
    """Builds source text from a validated tree.

    Every fragment returned is atomic: a number, a simple target like
    ``p[3]``, a call, or a parenthesized expression, so it can be used as an
    operand without changing precedence.

    Parameters
    ----------
    where, source : str
        The expression's location and text, for error messages.
    name_map : mapping of str to str
        Python expression text of each name (see
        :func:`vtrial.model.expressions.to_source`).
    categories : mapping of str to sequence of str, or None
        Labels of the categorical names.
    """

    def __init__(
        self,
        where: str,
        source: str,
        name_map: Mapping[str, str],
        categories: Mapping[str, Sequence[str]] | None,
    ) -> None:
        self.where = where
        self.source = source
        self.name_map = name_map
        self.categories = categories

    def fail(self, reason: str) -> ExpressionError:
        return ExpressionError(self.where, self.source, reason)

    def name(self, name: str) -> str:
        if name not in self.name_map:
            raise self.fail(
                f"name '{name}' is not available in compiled code "
                f"(available: {format_names(self.name_map) or 'none'})"
            )
        target = self.name_map[name]
        if not isinstance(target, str):
            raise TypeError(f"name_map[{name!r}] must be a str, got {type(target).__name__}")
        if SIMPLE_TARGET.fullmatch(target):
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
        if is_condition(node):
            return f"(1.0 if {self.condition(node)} else 0.0)"
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in BINOPS:
            symbol = BINOPS[type(node.op)]
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
            return f"float({MATH_FUNCTIONS[name]}({values[0]}))"
        if name in MATH_FUNCTIONS and len(values) == 1:
            return f"{MATH_FUNCTIONS[name]}({values[0]})"
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
        if is_condition(node):
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
        symbol = CMPOPS.get(type(op))
        if symbol is None:
            raise self.fail(f"unsupported comparison {type(op).__name__}")
        if is_string(left) or is_string(right):
            if not isinstance(op, ast.Eq | ast.NotEq):
                raise self.fail("unsupported comparison with a string")
            _, label, other = split_label(left, right)
            if not isinstance(other, ast.Name):
                raise self.fail("unsupported comparison with a string")
            code = self.label_code(other.id, label)
            value = self.name(other.id)
            if is_string(left):
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
