"""What an expression may contain: the whitelist of syntax and the check of a parsed tree.

:func:`vtrial.model.expressions.parse_expression` parses expression text with
:func:`ast.parse` (:func:`parse_syntax`), bounds its nesting (:func:`tree_depth`,
:data:`MAX_DEPTH`) and walks the tree with a :class:`Validator`, which accepts only
numbers, names, ``+ - * / **``, unary ``- + not``, comparisons, ``and``/``or``,
``a if c else b`` and calls of the functions in :data:`ALLOWED_FUNCTIONS`, and collects
the names and category labels used. Anything else is refused with a message saying
where and why. The tree predicates and message helpers shared by the evaluator
(:mod:`vtrial.model.evaluator`) and the code generator (:mod:`vtrial.model.emitter`)
live here too. A new function or operator is added here first (then to both of them).
"""

from __future__ import annotations

import ast
import difflib
import math
from collections.abc import Collection, Iterable, Mapping, Sequence

from vtrial.errors import ExpressionError

__all__ = [
    "ALLOWED_FUNCTIONS",
    "BINOPS",
    "CMPOPS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "Validator",
    "check_number",
    "format_names",
    "is_condition",
    "is_string",
    "parse_syntax",
    "split_label",
    "tree_depth",
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


BINOPS: dict[type[ast.operator], str] = {
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


CMPOPS: dict[type[ast.cmpop], str] = {
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
# Parsing
# ---------------------------------------------------------------------------


def parse_syntax(text: str, body: str, shift: int, where: str) -> ast.Expression:
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


def tree_depth(tree: ast.Expression) -> int:
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


# ---------------------------------------------------------------------------
# Tree predicates and messages
# ---------------------------------------------------------------------------


def is_condition(node: ast.AST) -> bool:
    """Whether a validated node has a true/false value."""
    return isinstance(node, ast.Compare | ast.BoolOp) or (
        isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
    )


def is_string(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def split_label(left: ast.expr, right: ast.expr) -> tuple[ast.Constant, str, ast.expr]:
    """For a comparison with a string: ``(string node, string, other operand)``."""
    label_node, other = (left, right) if is_string(left) else (right, left)
    if not isinstance(label_node, ast.Constant) or not isinstance(label_node.value, str):
        raise TypeError("neither operand is a string constant")
    return label_node, label_node.value, other


def check_number(value: int | float, where: str, source: str, location: str | None) -> None:
    try:
        finite = math.isfinite(float(value))
    except OverflowError:
        finite = False
    if not finite:
        suffix = f" ({location})" if location else ""
        raise ExpressionError(where, source, f"the number {value!r} is not finite{suffix}")


def format_names(items: Iterable[str], limit: int = _MAX_LISTED_NAMES) -> str:
    ordered = sorted(items)
    shown = ", ".join(ordered[:limit])
    if len(ordered) > limit:
        shown += f", ... ({len(ordered) - limit} more)"
    return shown


def suggest(name: str, candidates: Collection[str]) -> str:
    """A "did you mean" hint (case-insensitive), or ``""``.

    Examples
    --------
    >>> suggest("regimem", ["regimen", "ratio", "name"])
    "did you mean 'regimen'? "
    """
    by_lower: dict[str, str] = {}
    for candidate in sorted(candidates):
        by_lower.setdefault(candidate.lower(), candidate)
    close = difflib.get_close_matches(name.lower(), by_lower, n=1)
    return f"did you mean '{by_lower[close[0]]}'? " if close else ""


def _labels(labels: Collection[str]) -> str:
    ordered = list(labels) if isinstance(labels, Sequence) else sorted(labels)
    return ", ".join(ordered)


# ---------------------------------------------------------------------------
# The whitelist check
# ---------------------------------------------------------------------------


class Validator:
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
        check_number(value, self.where, self.text, self._location(node))

    def visit_name(self, node: ast.Name, *, numeric: bool) -> None:
        name = node.id
        if not isinstance(node.ctx, ast.Load):
            raise self.fail(node, f"assigning to '{name}' is not allowed")
        if name.startswith("_"):
            raise self.fail(node, f"names starting with '_' are not allowed: '{name}'")
        if self.known is not None and name not in self.known:
            if self.known:
                hint = suggest(name, self.known)
                known = f"({hint}known: {format_names(self.known)})"
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
        if op not in BINOPS:
            symbol = _FORBIDDEN_BINOPS.get(op, op.__name__)
            hint = "; use ** for powers" if op is ast.BitXor else ""
            raise self.fail(node, f"operator '{symbol}' is not allowed (allowed: + - * / **){hint}")
        self.visit(node.left)
        self.visit(node.right)

    def visit_unaryop(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            if not is_condition(node.operand):
                raise self.fail(
                    node, "the operand of 'not' must be a condition (a comparison, and, or, not)"
                )
        elif not isinstance(node.op, ast.USub | ast.UAdd):
            raise self.fail(node, "operator '~' is not allowed (allowed: -, +, not)")
        self.visit(node.operand)

    def visit_boolop(self, node: ast.BoolOp) -> None:
        word = "and" if isinstance(node.op, ast.And) else "or"
        for value in node.values:
            if not is_condition(value):
                raise self.fail(
                    value,
                    f"the operands of '{word}' must be conditions (comparisons, and, or, not)",
                )
            self.visit(value)

    def visit_compare(self, node: ast.Compare) -> None:
        operands = [node.left, *node.comparators]
        for op in node.ops:
            if type(op) not in CMPOPS:
                symbol = _FORBIDDEN_CMPOPS.get(type(op), type(op).__name__)
                raise self.fail(
                    node,
                    f"comparison '{symbol}' is not allowed (allowed: < <= > >= == !=)",
                )
        for i, op in enumerate(node.ops):
            left, right = operands[i], operands[i + 1]
            if is_string(left) or is_string(right):
                self.visit_label_comparison(node, left, op, right)
            else:
                self.visit(left)
                self.visit(right)

    def visit_label_comparison(
        self, node: ast.Compare, left: ast.expr, op: ast.cmpop, right: ast.expr
    ) -> None:
        label_node, label, other = split_label(left, right)
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
                declared = format_names(self.categorical) if self.categorical else "none"
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
            allowed = format_names(ALLOWED_FUNCTIONS, 100)
            raise self.fail(node, f"function '{name}' is not allowed (allowed: {allowed})")
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
