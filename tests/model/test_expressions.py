"""Tests for vtrial.model.expressions: whitelisting parser (vtrial.model.syntax), numpy
evaluator (vtrial.model.evaluator), code generator (vtrial.model.emitter).

Tolerances: ``evaluate`` is compared with the same numpy operations written by
hand, so results must agree to ``rtol=1e-15`` (in practice bit for bit).
Generated source runs the scalar ``math`` functions of libm, which may differ
from numpy's vectorized implementations by a few ulps; those comparisons use
``rtol=1e-12``.
"""

from __future__ import annotations

import ast
import inspect
import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from vtrial.errors import ExpressionError, VtrialError
from vtrial.model import emitter, evaluator, syntax
from vtrial.model import expressions as ex
from vtrial.model.expressions import (
    Expression,
    evaluate,
    names_in,
    parse_expression,
    to_source,
    topological_order,
)
from vtrial.model.syntax import ALLOWED_FUNCTIONS

WHERE = "study.yaml: arms[0].dose"
CATEGORIES: dict[str, list[str]] = {"sex": ["M", "F"], "cyp2c9": ["EM", "IM", "PM"]}

RNG = np.random.default_rng(20240611)
N = 16
X = RNG.uniform(0.5, 2.0, N)
Y = RNG.uniform(0.5, 2.0, N)
Z = RNG.uniform(-2.0, 2.0, N)
T = np.linspace(0.0, 48.0, N)
SEX = np.array(RNG.choice(CATEGORIES["sex"], N), dtype=str)
CYP = np.array(RNG.choice(CATEGORIES["cyp2c9"], N), dtype=object)
ENV: dict[str, Any] = {"x": X, "y": Y, "z": Z, "t": T, "sex": SEX, "cyp2c9": CYP}


def parse(text: str | int | float, **kwargs: Any) -> Expression:
    return parse_expression(text, where=WHERE, **kwargs)


def reason_of(text: Any, **kwargs: Any) -> str:
    with pytest.raises(ExpressionError) as info:
        parse_expression(text, where=WHERE, **kwargs)
    err = info.value
    assert err.where == WHERE
    assert WHERE in str(err)
    return err.reason


# ---------------------------------------------------------------------------
# Allowed constructs evaluate like hand-written numpy
# ---------------------------------------------------------------------------

CASES: list[tuple[str, Callable[[], Any]]] = [
    ("x", lambda: X),
    ("3", lambda: np.full(N, 3.0)),
    ("2.5e-3 * x", lambda: 2.5e-3 * X),
    ("x + y", lambda: X + Y),
    ("x - y", lambda: X - Y),
    ("x * y", lambda: X * Y),
    ("x / y", lambda: X / Y),
    ("x ** y", lambda: X**Y),
    ("-x ** 2", lambda: -(X**2)),
    ("2 ** -x", lambda: 2.0 ** (-X)),
    ("+x", lambda: X),
    ("-(x - y)", lambda: -(X - Y)),
    ("x - y - z", lambda: (X - Y) - Z),
    ("x / y / 2", lambda: (X / Y) / 2.0),
    ("2 ** 3 ** 0.5", lambda: np.full(N, 2.0 ** (3.0**0.5))),
    ("(x / 70) ** 0.75", lambda: (X / 70.0) ** 0.75),
    ("exp(z)", lambda: np.exp(Z)),
    ("log(x)", lambda: np.log(X)),
    ("log10(x)", lambda: np.log10(X)),
    ("sqrt(x)", lambda: np.sqrt(X)),
    ("abs(z)", lambda: np.abs(Z)),
    ("floor(z)", lambda: np.floor(Z)),
    ("ceil(z)", lambda: np.ceil(Z)),
    ("sin(z)", lambda: np.sin(Z)),
    ("cos(z)", lambda: np.cos(Z)),
    ("tanh(z)", lambda: np.tanh(Z)),
    ("min(x, y)", lambda: np.minimum(X, Y)),
    ("max(x, y, z, 1)", lambda: np.maximum(np.maximum(np.maximum(X, Y), Z), 1.0)),
    ("pow(x, z)", lambda: np.power(X, Z)),
    ("logit(x / 3)", lambda: np.log((X / 3.0) / (1.0 - X / 3.0))),
    ("expit(z)", lambda: 1.0 / (1.0 + np.exp(-Z))),
    ("clip(z, -1, 0.5)", lambda: np.minimum(np.maximum(Z, -1.0), 0.5)),
    ("where(t < 24, 0, 2 * exp(-0.1 * t))", lambda: np.where(T < 24, 0.0, 2 * np.exp(-0.1 * T))),
    ("x if z > 0 else y", lambda: np.where(Z > 0, X, Y)),
    ("where(z, x, y)", lambda: np.where(Z != 0, X, Y)),
    ("1 if x > y else 2 if z > 0 else 3", lambda: np.where(X > Y, 1.0, np.where(Z > 0, 2.0, 3.0))),
    ("x < y", lambda: X < Y),
    ("x <= y", lambda: X <= Y),
    ("x > y", lambda: X > Y),
    ("x >= 1", lambda: X >= 1),
    ("x == x", lambda: np.ones(N, dtype=bool)),
    ("x != y", lambda: X != Y),
    ("0.7 < x <= y < 1.8", lambda: (X > 0.7) & (X <= Y) & (Y < 1.8)),
    ("x > 1 and y < 1", lambda: (X > 1) & (Y < 1)),
    ("x > 1 or y < 1 or z > 0", lambda: (X > 1) | (Y < 1) | (Z > 0)),
    ("not x > 1", lambda: ~(X > 1)),
    ("not (x > 1 and y > 1)", lambda: ~((X > 1) & (Y > 1))),
    ("(x > 1) * 2 + (y > 1)", lambda: (X > 1) * 2.0 + (Y > 1) * 1.0),
    ("(x > 1) + (y > 1)", lambda: (X > 1).astype(float) + (Y > 1).astype(float)),
    ("-(x > 1)", lambda: -((X > 1).astype(float))),
    ("sex == 'F'", lambda: SEX == "F"),
    ("'F' != sex", lambda: SEX != "F"),
    ("cyp2c9 == 'PM' or cyp2c9 == 'IM'", lambda: (CYP == "PM") | (CYP == "IM")),
    (
        "(x / 70) ** 0.75 * (0.6 if cyp2c9 == 'PM' else 1)",
        lambda: (X / 70.0) ** 0.75 * np.where(CYP == "PM", 0.6, 1.0),
    ),
    ("x * (sex == 'F') + y", lambda: X * (SEX == "F") + Y),
    ("z >= 0 and sex == 'M'", lambda: (Z >= 0) & (SEX == "M")),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_evaluate_matches_numpy(text: str, expected: Callable[[], Any]) -> None:
    expr = parse(text, categorical=CATEGORIES)
    result = evaluate(expr, ENV, size=N)
    want = np.asarray(expected())
    assert result.shape == (N,)
    if want.dtype == bool:
        assert result.dtype == np.bool_
        np.testing.assert_array_equal(result, want)
    else:
        assert result.dtype == np.float64
        np.testing.assert_allclose(result, want, rtol=1e-15, atol=0)


@pytest.mark.parametrize("name", sorted(ALLOWED_FUNCTIONS))
def test_every_allowed_function_evaluates_and_compiles(name: str) -> None:
    arity = ALLOWED_FUNCTIONS[name]
    n = arity if isinstance(arity, int) else arity[0]
    args = ", ".join(["0.25", "0.5", "0.75"][:n])
    expr = parse(f"{name}({args})")
    value = float(evaluate(expr, {}))
    source = to_source(expr, {})
    compiled = eval(compile(source, "<generated>", "eval"), {"math": math})
    assert math.isclose(float(compiled), value, rel_tol=1e-12)


def test_required_functions_present() -> None:
    required = {"exp", "log", "log10", "sqrt", "abs", "min", "max", "where", "pow"}
    required |= {"floor", "ceil", "logit", "expit", "clip"}
    assert required <= ALLOWED_FUNCTIONS.keys()
    assert ALLOWED_FUNCTIONS["where"] == 3
    assert ALLOWED_FUNCTIONS["clip"] == 3
    assert ALLOWED_FUNCTIONS["pow"] == 2
    assert ALLOWED_FUNCTIONS["min"][0] == 2  # type: ignore[index]
    for unsafe in ("eval", "exec", "open", "compile", "getattr", "__import__", "globals"):
        assert unsafe not in ALLOWED_FUNCTIONS


# ---------------------------------------------------------------------------
# Expression objects and numbers
# ---------------------------------------------------------------------------


def test_expression_fields() -> None:
    text = "KTR * PROL * (1 - EDRUG) * (CIRC0 / CIRC) ** GAMMA - KTR * PROL"
    expr = parse(text)
    assert expr.source == text
    assert isinstance(expr.tree, ast.Expression)
    assert expr.names == {"KTR", "PROL", "EDRUG", "CIRC0", "CIRC", "GAMMA"}
    assert expr.strings == frozenset()
    assert expr.where == WHERE
    assert not expr.is_constant()


def test_function_names_are_not_free_names_and_strings_are_collected() -> None:
    expr = parse("exp(x) * (2 if cyp2c9 == 'PM' or cyp2c9 != 'IM' else 1)")
    assert expr.names == {"x", "cyp2c9"}
    assert expr.strings == {"PM", "IM"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3.0), (0.75, 0.75), (-1.5, -1.5), (0, 0.0), (np.float64(2.5), 2.5), (np.int64(7), 7.0)],
)
def test_numbers_are_constant_expressions(value: Any, expected: float) -> None:
    expr = parse(value)
    assert expr.source == str(value)
    assert expr.is_constant()
    assert expr.names == frozenset()
    assert expr.constant_value() == expected
    np.testing.assert_array_equal(evaluate(expr, {}, size=3), np.full(3, expected))
    assert eval(to_source(expr, {})) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2 ** 10 + 1", 1025.0),
        ("-3 * (2 - 0.5)", -4.5),
        ("exp(0) + log(1)", 1.0),
        ("max(1, 5, 3) / 2", 2.5),
        ("1 < 2", 1.0),
        ("0.6 if 1 > 2 else 0.4", 0.4),
    ],
)
def test_constant_value_folds(text: str, expected: float) -> None:
    expr = parse(text)
    assert expr.is_constant()
    assert expr.constant_value() == pytest.approx(expected, rel=1e-15)


def test_constant_value_requires_no_names() -> None:
    with pytest.raises(ExpressionError, match="a constant is required here"):
        parse("2 * x").constant_value()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "true/false values are not allowed"),
        (np.bool_(False), "true/false values are not allowed"),
        (float("nan"), "is not finite"),
        (float("inf"), "is not finite"),
        (None, "got NoneType"),
        ([1, 2], "got list"),
        ({"a": 1}, "got dict"),
    ],
)
def test_bad_non_text_values(value: Any, reason: str) -> None:
    assert reason in reason_of(value)


def test_expression_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="attribute access") as info:
        parse("x.real")
    assert isinstance(info.value, VtrialError)
    assert info.value.expression == "x.real"


# ---------------------------------------------------------------------------
# Rejections
# ---------------------------------------------------------------------------

REJECTED: list[tuple[str, str]] = [
    ("__import__('os').system('ls')", "attribute access ('.system') is not allowed"),
    ("__import__('os')", "function '__import__' is not allowed"),
    ("().__class__", "attribute access ('.__class__') is not allowed"),
    ("x.real", "attribute access ('.real') is not allowed"),
    ("exp.__globals__", "attribute access ('.__globals__') is not allowed"),
    ("lambda: 1", "lambda functions are not allowed"),
    ("(lambda: 1)()", "lambda functions are not allowed"),
    ("[i for i in x]", "comprehensions are not allowed"),
    ("{i for i in x}", "comprehensions are not allowed"),
    ("{i: 1 for i in x}", "comprehensions are not allowed"),
    ("exp(i for i in x)", "comprehensions are not allowed"),
    ("x[0]", "indexing and subscripts are not allowed"),
    ("x[1:2]", "indexing and subscripts are not allowed"),
    ("f(x=1)", "keyword arguments are not allowed"),
    ("exp(x=1)", "keyword arguments are not allowed"),
    ("exp(*x)", "'*' unpacking is not allowed"),
    ("open('f')", "function 'open' is not allowed (allowed: abs, ceil, clip,"),
    ("eval('1')", "function 'eval' is not allowed"),
    ("exec('1')", "function 'exec' is not allowed"),
    ("compile('1', 'f', 'eval')", "function 'compile' is not allowed"),
    ("getattr(x, 'real')", "function 'getattr' is not allowed"),
    ("system('ls')", "function 'system' is not allowed"),
    ("Exp(x)", "function 'Exp' is not allowed"),
    ("exp(x)(y)", "only the allowed functions can be called"),
    ("(x)(y)", "function 'x' is not allowed"),
    ("_x", "names starting with '_' are not allowed: '_x'"),
    ("__builtins__", "names starting with '_' are not allowed"),
    ("x + _y", "names starting with '_' are not allowed: '_y'"),
    ("'a'", "the string 'a' is only allowed in == or != comparisons"),
    ("x + 'a'", "the string 'a' is only allowed in == or != comparisons"),
    ("exp('1')", "the string '1' is only allowed in == or != comparisons"),
    ("'a' == 'a'", "can only be compared with a categorical name"),
    ("x + 1 == 'a'", "can only be compared with a categorical name"),
    ("sex < 'M'", "can only be compared with == or !="),
    ("exp(x, y)", "function 'exp' takes 1 argument, got 2"),
    ("where(x > 1, 2)", "function 'where' takes 3 arguments, got 2"),
    ("clip(x, 1)", "function 'clip' takes 3 arguments, got 2"),
    ("pow(x)", "function 'pow' takes 2 arguments, got 1"),
    ("min(x)", "function 'min' takes 2 to 64 arguments, got 1"),
    ("max()", "function 'max' takes 2 to 64 arguments, got 0"),
    ("True", "true/false constants (True) are not allowed"),
    ("x * False", "true/false constants (False) are not allowed"),
    ("None", "None is not allowed"),
    ("b'x'", "bytes constants are not allowed"),
    ("1j", "complex numbers are not allowed"),
    ("...", "the constant Ellipsis is not allowed"),
    ("1e999", "the number inf is not finite"),
    ("f'{x}'", "f-strings are not allowed"),
    ("(y := 1)", "assignment expressions (:=) are not allowed"),
    ("[x, y]", "list literals are not allowed"),
    ("(x, y)", "tuples are not allowed"),
    ("{x}", "set literals are not allowed"),
    ("{'a': x}", "dict literals are not allowed"),
    ("x // 2", "operator '//' is not allowed"),
    ("x % 2", "operator '%' is not allowed"),
    ("x @ y", "operator '@' is not allowed"),
    ("x ^ 2", "use ** for powers"),
    ("x | y", "operator '|' is not allowed"),
    ("x & y", "operator '&' is not allowed"),
    ("x << 2", "operator '<<' is not allowed"),
    ("~x", "operator '~' is not allowed"),
    ("x in y", "comparison 'in' is not allowed"),
    ("x not in y", "comparison 'not in' is not allowed"),
    ("x is y", "comparison 'is' is not allowed"),
    ("x is not y", "comparison 'is not' is not allowed"),
    ("not x", "the operand of 'not' must be a condition"),
    ("x and y > 1", "the operands of 'and' must be conditions"),
    ("x > 1 or 2", "the operands of 'or' must be conditions"),
    ("await x", "'await' is not allowed"),
    ("x = 1", "syntax error at column"),
    ("import os", "syntax error at column"),
    ("x; y", "syntax error at column"),
]


@pytest.mark.parametrize(("text", "reason"), REJECTED, ids=[r[0] for r in REJECTED])
def test_rejected(text: str, reason: str) -> None:
    assert reason in reason_of(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("x + y.real", "(at column 5)"),
        ("exp(x) + open('f')", "(at column 10)"),
        ("éé + x.real", "(at column 6)"),
        ("  x + y.real", "(at column 7)"),
        ("(x +\n y[0])", "(at line 2, column 2)"),
    ],
)
def test_rejection_reports_column(text: str, reason: str) -> None:
    assert reason in reason_of(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a b", "syntax error at column 3: invalid syntax"),
        ("x + )", "syntax error at column 5: unmatched ')'"),
        ("  a b", "syntax error at column 5"),
        ("exp(", "syntax error at column 4: '(' was never closed"),
        ("x +", "syntax error at column 4 (end of expression)"),
        ("1 if x else", "syntax error at column 12 (end of expression)"),
        ("(a +\n b +)", "syntax error at line 2, column 5"),
        ("x $ 1", "syntax error at column 3"),
        ("'abc", "syntax error at column 1: unterminated string literal"),
        ("x\x00", "syntax error"),
    ],
)
def test_syntax_errors_report_column(text: str, reason: str) -> None:
    assert reason in reason_of(text)


@pytest.mark.parametrize("text", ["", " ", "\n\t"])
def test_empty_rejected(text: str) -> None:
    assert reason_of(text) == "the expression is empty"


def test_length_limit() -> None:
    ok = "x" + " + x" * ((syntax.MAX_LENGTH - 1) // 4)
    assert len(ok) <= syntax.MAX_LENGTH
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse(ok)  # long sums are deep; the length check alone passes
    assert parse("(" + " " * (syntax.MAX_LENGTH - 3) + "x)").names == {"x"}
    too_long = "x" + " " * syntax.MAX_LENGTH
    reason = reason_of(too_long)
    assert f"too long ({syntax.MAX_LENGTH + 1} characters, at most {syntax.MAX_LENGTH})" in reason


@pytest.mark.parametrize(
    ("depth", "allowed"),
    [(syntax.MAX_DEPTH, True), (syntax.MAX_DEPTH + 1, False), (200, False)],
)
def test_depth_limit(depth: int, allowed: bool) -> None:
    text = "exp(" * (depth - 1) + "x" + ")" * (depth - 1)
    if allowed:
        assert parse(text).names == {"x"}
    else:
        assert f"nested too deeply (depth {depth}, at most {syntax.MAX_DEPTH})" in reason_of(text)


@pytest.mark.parametrize(
    "text",
    ["-" * 1999 + "x", "1+" * 999 + "1", "(" * 150 + "x" + ")" * 150, "x" + "**x" * 600],
)
def test_pathological_input_fails_cleanly(text: str) -> None:
    assert len(text) <= syntax.MAX_LENGTH
    if text.startswith("((("):  # parentheses alone do not nest nodes
        assert parse(text).names == {"x"}
    else:
        assert "nested too deeply" in reason_of(text)


def test_parentheses_do_not_count_as_depth() -> None:
    assert parse("((((((((x))))))))").names == {"x"}


# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------


def test_known_names_accept() -> None:
    expr = parse("CL / V1 * exp(-t)", known_names=["CL", "V1", "t"])
    assert expr.names == {"CL", "V1", "t"}


def test_unknown_name_lists_known_names() -> None:
    reason = reason_of("foo + CL", known_names={"V1", "CL", "KA"})
    assert reason.startswith("unknown name 'foo' (known: CL, KA, V1)")


def test_unknown_name_suggests_close_match() -> None:
    reason = reason_of("cl / V1", known_names=["CL", "V1"])
    assert "unknown name 'cl' (did you mean 'CL'? known: CL, V1)" in reason


def test_unknown_name_list_is_truncated() -> None:
    known = [f"P{i:03d}" for i in range(50)]
    reason = reason_of("Q", known_names=known)
    assert "P000, P001" in reason
    assert "P019, ... (30 more)" in reason
    assert "P020" not in reason


def test_no_known_names() -> None:
    assert "no names are defined here" in reason_of("x", known_names=[])


def test_function_name_call_needs_no_known_name() -> None:
    assert parse("exp(x)", known_names=["x"]).names == {"x"}
    assert "unknown name 'exp'" in reason_of("exp + x", known_names=["x"])


def test_categorical_names_count_as_known() -> None:
    expr = parse("x * (sex == 'F')", known_names=["x"], categorical=CATEGORIES)
    assert expr.names == {"x", "sex"}


# ---------------------------------------------------------------------------
# Categorical names
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "cyp2c9 == 'PM'",
        "'PM' == cyp2c9",
        "cyp2c9 != 'EM' and sex == 'F'",
        "0.6 if cyp2c9 == 'PM' else 1",
        "where(cyp2c9 == 'IM', 0.8, 1)",
    ],
)
def test_categorical_accepted(text: str) -> None:
    assert parse(text, categorical=CATEGORIES).strings <= {"PM", "EM", "IM", "F"}


def test_unknown_category_label() -> None:
    reason = reason_of("cyp2c9 == 'XX'", categorical=CATEGORIES)
    assert "'XX' is not a category of cyp2c9 (categories: EM, IM, PM)" in reason


def test_category_labels_listed_sorted_when_unordered() -> None:
    reason = reason_of("g == 'x'", categorical={"g": {"b", "a"}})
    assert "(categories: a, b)" in reason


def test_string_compared_with_non_categorical_name() -> None:
    reason = reason_of("x == 'PM'", categorical=CATEGORIES)
    assert "'x' is not categorical, so it cannot be compared with the string 'PM'" in reason
    assert "(categorical names: cyp2c9, sex)" in reason


@pytest.mark.parametrize(
    "text", ["cyp2c9 + 1", "exp(sex)", "sex", "sex > 1", "where(sex, 1, 2)", "sex == 1"]
)
def test_categorical_name_used_as_number(text: str) -> None:
    reason = reason_of(text, categorical=CATEGORIES)
    assert "categorical name" in reason
    assert "can only be compared with == or != to one of its categories" in reason


def test_categorical_inferred_without_mapping() -> None:
    expr = parse("g == 'a' or g != 'b'")
    assert expr.strings == {"a", "b"}
    reason = reason_of("g == 'a' and g + 1 > 2")
    assert "categorical name 'g' can only be compared" in reason
    assert "(at column 14)" in reason


# ---------------------------------------------------------------------------
# boolean=True
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["crcl >= 30 and age < 80", "age < 80", "not age < 18", "sex == 'F' or crcl > 60"],
)
def test_boolean_accepts_conditions(text: str) -> None:
    expr = parse(text, boolean=True, categorical=CATEGORIES)
    result = evaluate(
        expr, {"crcl": np.array([20.0, 40.0]), "age": [70, 90], "sex": np.array(["F", "M"])}
    )
    assert result.dtype == np.bool_


@pytest.mark.parametrize("text", ["crcl", "crcl - 30", "where(age < 80, 1, 0)", "1 if x else 0"])
def test_boolean_rejects_values(text: str) -> None:
    assert "a condition is required here" in reason_of(text, boolean=True)


@pytest.mark.parametrize("value", [1, 0.5])
def test_boolean_rejects_numbers(value: float) -> None:
    assert "a condition is required here" in reason_of(value, boolean=True)


# ---------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------


def test_scalars_broadcast_to_array_length() -> None:
    result = evaluate(parse("a * b + c"), {"a": 2.0, "b": np.arange(4.0), "c": 1})
    np.testing.assert_array_equal(result, [1.0, 3.0, 5.0, 7.0])


def test_size_broadcasts_scalars_and_constants() -> None:
    np.testing.assert_array_equal(evaluate(parse("a + 1"), {"a": 2.0}, size=3), [3.0] * 3)
    np.testing.assert_array_equal(evaluate(parse("a > 1"), {"a": 2.0}, size=2), [True, True])
    assert evaluate(parse("a + 1"), {"a": 2.0}, size=0).shape == (0,)


def test_all_scalars_give_zero_d_result() -> None:
    result = evaluate(parse("a + 1"), {"a": 2.0})
    assert result.shape == ()
    assert result.dtype == np.float64
    assert float(result) == 3.0


def test_lists_and_integers_become_float() -> None:
    result = evaluate(parse("a / b"), {"a": [1, 2, 3], "b": 2})
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, [0.5, 1.0, 1.5])


def test_bool_columns_are_numbers() -> None:
    result = evaluate(parse("1 + flag"), {"flag": np.array([True, False])})
    np.testing.assert_array_equal(result, [2.0, 1.0])


def test_result_is_a_new_array() -> None:
    a = np.arange(3.0)
    result = evaluate(parse("a"), {"a": a})
    result[0] = 99.0
    assert a[0] == 0.0


def test_extra_env_names_are_ignored() -> None:
    result = evaluate(parse("a"), {"a": np.ones(2), "b": np.ones(5), "s": "text"})
    np.testing.assert_array_equal(result, [1.0, 1.0])


def test_missing_name() -> None:
    with pytest.raises(ExpressionError, match=r"no value given for name 'b' \(given: a\)"):
        evaluate(parse("a + b"), {"a": 1.0})


def test_length_mismatch() -> None:
    with pytest.raises(ExpressionError, match="has 3 values, expected 2"):
        evaluate(parse("a + b"), {"a": np.ones(2), "b": np.ones(3)})
    with pytest.raises(ExpressionError, match="has 2 values, expected 5"):
        evaluate(parse("a"), {"a": np.ones(2)}, size=5)


def test_two_dimensional_value_rejected() -> None:
    with pytest.raises(ExpressionError, match=r"scalar or a 1-D array, got shape \(2, 2\)"):
        evaluate(parse("a"), {"a": np.ones((2, 2))})


@pytest.mark.parametrize("size", [-1, 1.5, True])
def test_bad_size(size: Any) -> None:
    with pytest.raises(ValueError, match="size must be a non-negative integer"):
        evaluate(parse("1"), {}, size=size)


def test_text_where_number_needed() -> None:
    with pytest.raises(ExpressionError, match="holds text values where a number is needed"):
        evaluate(parse("a + 1"), {"a": np.array(["1.5"])})
    with pytest.raises(ExpressionError, match="holds values that are not numbers"):
        evaluate(parse("a + 1"), {"a": np.array([1.0, "x"], dtype=object)})


def test_numbers_where_labels_needed() -> None:
    with pytest.raises(ExpressionError, match="categorical name 'g' must hold labels"):
        evaluate(parse("g == 'a'"), {"g": np.array([0, 1])})


@pytest.mark.parametrize("labels", [["EM", "PM", "IM"], ("EM", "PM", "IM")])
def test_categorical_str_object_and_scalar_inputs(labels: Any) -> None:
    expr = parse("2 if g == 'PM' else 1", categorical={"g": ["EM", "IM", "PM"]})
    want = [1.0, 2.0, 1.0]
    np.testing.assert_array_equal(evaluate(expr, {"g": np.array(labels)}), want)
    np.testing.assert_array_equal(evaluate(expr, {"g": np.array(labels, dtype=object)}), want)
    np.testing.assert_array_equal(evaluate(expr, {"g": list(labels)}), want)
    np.testing.assert_array_equal(evaluate(expr, {"g": "PM"}, size=2), [2.0, 2.0])


def test_categorical_missing_values_compare_false() -> None:
    expr = parse("g == 'a'")
    result = evaluate(expr, {"g": np.array(["a", None, "b"], dtype=object)})
    np.testing.assert_array_equal(result, [True, False, False])


def test_pandas_inputs() -> None:
    pd = pytest.importorskip("pandas")
    expr = parse("w * (0.5 if g == 'PM' else 1)", categorical={"g": ["EM", "PM"]})
    env = {"w": pd.Series([10.0, 20.0, 30.0]), "g": pd.Categorical(["PM", "EM", "PM"])}
    np.testing.assert_array_equal(evaluate(expr, env), [5.0, 20.0, 15.0])
    env["g"] = pd.Series(["EM", "PM", "EM"], dtype="category")
    np.testing.assert_array_equal(evaluate(expr, env), [10.0, 10.0, 30.0])
    env["g"] = pd.Series(["EM", "PM", "EM"])
    np.testing.assert_array_equal(evaluate(expr, env), [10.0, 10.0, 30.0])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("log(x)", -np.inf),
        ("1 / x", np.inf),
        ("sqrt(x - 1)", np.nan),
        ("exp(1000 + x)", np.inf),
        ("logit(x)", -np.inf),
        ("x / x", np.nan),
        ("(x - 1) ** 0.5", np.nan),
        ("expit(-1000 + x)", 0.0),
    ],
)
def test_floating_point_problems_do_not_warn(text: str, expected: float) -> None:
    # filterwarnings = error: any RuntimeWarning would fail this test.
    result = evaluate(parse(text), {"x": np.array([0.0])})
    np.testing.assert_array_equal(result, [expected])


def test_nan_condition_is_true_like_python() -> None:
    result = evaluate(parse("where(c, 1, 2)"), {"c": np.array([np.nan, 0.0, -1.0])})
    np.testing.assert_array_equal(result, [1.0, 2.0, 1.0])


def test_spec_examples() -> None:
    expr = parse("(weight / 70) ** 0.75 * (0.6 if cyp2c9 == 'PM' else 1)", categorical=CATEGORIES)
    result = evaluate(expr, {"weight": [70.0, 35.0], "cyp2c9": ["PM", "EM"]})
    np.testing.assert_allclose(result, [0.6, 0.5**0.75], rtol=1e-15)

    expr = parse("where(t < 24, 0, KD0 * exp(-LAMBDA * t))")
    result = evaluate(expr, {"t": np.array([0.0, 24.0, 48.0]), "KD0": 2.0, "LAMBDA": 0.1})
    np.testing.assert_allclose(result, [0.0, 2 * np.exp(-2.4), 2 * np.exp(-4.8)], rtol=1e-15)

    expr = parse("crcl >= 30 and age < 80", boolean=True)
    result = evaluate(expr, {"crcl": np.array([29.9, 30.0, 90.0]), "age": np.array([50, 79, 80])})
    np.testing.assert_array_equal(result, [False, True, False])


# ---------------------------------------------------------------------------
# to_source
# ---------------------------------------------------------------------------

NAME_MAP = {"x": "v[0]", "y": "v[1]", "z": "v[2]", "t": "t", "sex": "c[0]", "cyp2c9": "c[1]"}


def compile_kernel(source: str) -> Callable[..., Any]:
    """Compile GENERATED text (never user text) into a scalar kernel."""
    code = f"def kernel(v, t, c):\n    return {source}\n"
    namespace: dict[str, Any] = {"math": math}
    exec(compile(code, "<generated>", "exec"), namespace)
    kernel: Callable[..., Any] = namespace["kernel"]
    return kernel


def run_kernel(expr: Expression) -> np.ndarray:
    kernel = compile_kernel(to_source(expr, NAME_MAP, categories=CATEGORIES))
    codes = np.column_stack(
        [
            [float(CATEGORIES["sex"].index(s)) for s in SEX],
            [float(CATEGORIES["cyp2c9"].index(s)) for s in CYP],
        ]
    )
    return np.array([kernel(np.array([X[i], Y[i], Z[i]]), float(T[i]), codes[i]) for i in range(N)])


HAND_WRITTEN = [
    "(x / 70) ** 0.75 * (0.6 if cyp2c9 == 'PM' else 1)",
    "x * y * (1 - expit(z)) * (y / x) ** 0.5 - x * y",
    "where(t < 24, 0, 2 * exp(-0.1 * t))",
    "-x ** 2 + 2 ** -y - -z",
    "logit(x / 3) + log10(y) + tanh(z)",
    "floor(z * 3) + ceil(z) + abs(z)",
    "clip(z, -1, 0.5) * sin(z) + cos(t)",
    "min(x, y, z, 1.5) - max(x, y)",
    "pow(x, z) + sqrt(y)",
    "1 if x > y else 2 if z > 0 else 3",
    "0.7 < x <= y < 1.8",
    "'M' == sex and not (z > 0 or x < 1)",
    "cyp2c9 != 'EM' or sex != 'F'",
    "(x > 1) + (y > 1) * 2 - (sex == 'F')",
    "where(z, x, y) + (x if z else y)",
    "x - y - z + x / y / 2",
    "2 ** 3 ** 0.5 * x",
    "+x * -y",
    "exp(-t / 10) * (1 + (cyp2c9 == 'IM') * 0.5)",
    "max(x > y, 0.25)",
]


@pytest.mark.parametrize("text", HAND_WRITTEN)
def test_to_source_matches_evaluate_hand_written(text: str) -> None:
    expr = parse(text, categorical=CATEGORIES)
    want = evaluate(expr, ENV, size=N)
    got = run_kernel(expr)
    if want.dtype == np.bool_:
        assert all(isinstance(value, bool | np.bool_) for value in got)
        np.testing.assert_array_equal(got.astype(bool), want)
    else:
        np.testing.assert_allclose(got.astype(float), want, rtol=1e-12, atol=0)


def random_condition(rng: random.Random, depth: int) -> str:
    kind = rng.randrange(7 if depth > 0 else 3)
    if kind == 0:
        return f"{random_value(rng, depth - 1)} < {random_value(rng, depth - 1)}"
    if kind == 1:
        return f"sex {rng.choice(['==', '!='])} '{rng.choice(CATEGORIES['sex'])}'"
    if kind == 2:
        a, b, c = (random_value(rng, depth - 1) for _ in range(3))
        return f"{a} <= {b} < {c}"
    if kind == 3:
        return f"({random_condition(rng, depth - 1)} and {random_condition(rng, depth - 1)})"
    if kind == 4:
        return f"({random_condition(rng, depth - 1)} or {random_condition(rng, depth - 1)})"
    if kind == 5:
        return f"not ({random_condition(rng, depth - 1)})"
    return f"cyp2c9 == '{rng.choice(CATEGORIES['cyp2c9'])}'"


def random_value(rng: random.Random, depth: int) -> str:
    """A random expression that is positive for positive x and y (safe for CPython math)."""
    if depth <= 0 or rng.random() < 0.2:
        return rng.choice(["x", "y", f"{rng.uniform(0.5, 2.0):.4g}"])
    a, b, c = (random_value(rng, depth - 1) for _ in range(3))
    forms = [
        f"({a} + {b})",
        f"({a} * {b})",
        f"({a} / {b})",
        f"sqrt({a})",
        f"log(1 + {a})",
        f"exp(-{a})",
        f"min({a}, {b})",
        f"max({a}, {b}, {c})",
        f"({a} if {random_condition(rng, depth - 1)} else {b})",
        f"where({random_condition(rng, depth - 1)}, {a}, {b})",
        f"({a}) ** 0.5",
        f"pow({a}, 1.5)",
        f"(abs({a} - {b}) + 0.1)",
        f"expit({a})",
        f"clip({a}, 0.7, 1.3)",
        f"(({random_condition(rng, depth - 1)}) + 0.5)",
        f"floor({a}) + 1",
    ]
    return rng.choice(forms)


RANDOM_SEEDS = list(range(25))


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_to_source_matches_evaluate_random(seed: int) -> None:
    rng = random.Random(seed)
    text = random_value(rng, 4) if seed % 5 else random_condition(rng, 3)
    expr = parse(text, categorical=CATEGORIES)
    want = evaluate(expr, ENV, size=N)
    got = run_kernel(expr)
    if want.dtype == np.bool_:
        np.testing.assert_array_equal(got.astype(bool), want)
    else:
        np.testing.assert_allclose(got.astype(float), want, rtol=1e-12, atol=0)


def test_to_source_exact_text() -> None:
    expr = parse("(weight / 70) ** 0.75 * (0.6 if cyp2c9 == 'PM' else 1)", categorical=CATEGORIES)
    source = to_source(expr, {"weight": "p[0]", "cyp2c9": "c[1]"}, categories=CATEGORIES)
    assert source == "(((p[0] / 70.0) ** 0.75) * (0.6 if (c[1] == 2.0) else 1.0))"

    expr = parse("where(t < 24, 0, KD0 * exp(-LAMBDA * t))")
    source = to_source(expr, {"t": "t", "KD0": "p[1]", "LAMBDA": "p[2]"})
    assert source == "(0.0 if (t < 24.0) else (p[1] * math.exp(((-p[2]) * t))))"


@pytest.mark.parametrize(
    ("text", "source"),
    [
        ("logit(a)", "math.log(a / (1.0 - a))"),
        ("expit(a)", "(1.0 / (1.0 + math.exp(-a)))"),
        ("clip(a, 0, 1)", "min(max(a, 0.0), 1.0)"),
        ("floor(a)", "float(math.floor(a))"),
        ("pow(a, 2)", "(a ** 2.0)"),
        ("max(a, 1, 2)", "max(a, 1.0, 2.0)"),
        ("abs(a)", "abs(a)"),
        ("a < 1 < 2", "((a < 1.0) and (1.0 < 2.0))"),
        ("not a > 1", "(not (a > 1.0))"),
        ("a > 1 or a < 0", "((a > 1.0) or (a < 0.0))"),
        ("(a > 1) * 2", "((1.0 if (a > 1.0) else 0.0) * 2.0)"),
        ("a if a else 1", "(a if (a != 0.0) else 1.0)"),
        ("1e-5", "1e-05"),
        ("1e22", "1e+22"),
    ],
)
def test_to_source_forms(text: str, source: str) -> None:
    assert to_source(parse(text), {"a": "a"}) == source


def test_to_source_negative_constant_is_parenthesized() -> None:
    source = to_source(parse(-2.0), {})
    assert source == "(-2.0)"


def test_to_source_categorical_on_left() -> None:
    expr = parse("'PM' != cyp2c9", categorical=CATEGORIES)
    assert to_source(expr, {"cyp2c9": "g"}, categories=CATEGORIES) == "(2.0 != g)"


def test_to_source_uses_only_name_map_text() -> None:
    expr = parse("secret_param * 2 + other")
    source = to_source(expr, {"secret_param": "p[0]", "other": "y[3]"})
    assert source == "((p[0] * 2.0) + y[3])"
    assert "secret" not in source


def test_to_source_parenthesizes_complex_targets() -> None:
    source = to_source(parse("a * 2"), {"a": "p[0] + p[1]"})
    assert source == "((p[0] + p[1]) * 2.0)"


def test_to_source_rejects_bad_target() -> None:
    with pytest.raises(ValueError, match="is not a Python expression"):
        to_source(parse("a"), {"a": "p[0"})


def test_to_source_missing_name() -> None:
    with pytest.raises(ExpressionError, match=r"name 'b' is not available in compiled code"):
        to_source(parse("a + b"), {"a": "p[0]"})


def test_to_source_needs_categories() -> None:
    expr = parse("g == 'a'")
    with pytest.raises(ExpressionError, match="the categories of 'g' are needed"):
        to_source(expr, {"g": "c[0]"})
    with pytest.raises(ExpressionError, match="the categories of 'g' are needed"):
        to_source(expr, {"g": "c[0]"}, categories={"h": ["a"]})
    with pytest.raises(ExpressionError, match=r"'a' is not a category of g \(categories: b, c\)"):
        to_source(expr, {"g": "c[0]"}, categories={"g": ["b", "c"]})


def test_to_source_compiles_with_numba() -> None:
    numba = pytest.importorskip("numba")
    texts = [HAND_WRITTEN[i] for i in (0, 3, 5, 6, 7, 9, 13, 14, 19)]
    condition = parse("'M' == sex and not (z > 0 or x < 1)", categorical=CATEGORIES)
    body = " + ".join(
        f"({to_source(parse(t, categorical=CATEGORIES), NAME_MAP, categories=CATEGORIES)})"
        for t in texts
    )
    cond = to_source(condition, NAME_MAP, categories=CATEGORIES)
    code = f"def kernel(v, t, c):\n    return ({body}) if {cond} else -1.0\n"
    namespace: dict[str, Any] = {"math": math}
    exec(compile(code, "<generated>", "exec"), namespace)
    jitted = numba.njit(namespace["kernel"])
    v, c = np.array([1.2, 0.8, -0.3]), np.array([0.0, 2.0])
    env = {"x": 1.2, "y": 0.8, "z": -0.3, "t": 30.0, "sex": "M", "cyp2c9": "PM"}
    want = sum(float(evaluate(parse(t, categorical=CATEGORIES), env)) for t in texts)
    assert bool(evaluate(condition, env))
    assert jitted(v, 30.0, c) == pytest.approx(want, rel=1e-12)
    assert namespace["kernel"](v, 30.0, c) == pytest.approx(want, rel=1e-12)


# ---------------------------------------------------------------------------
# names_in and topological_order
# ---------------------------------------------------------------------------


def test_names_in() -> None:
    exprs = [parse("a + b"), parse("exp(c) * a"), parse(2)]
    assert names_in(exprs) == {"a", "b", "c"}
    assert names_in([]) == frozenset()


def defs(**texts: str) -> dict[str, Expression]:
    return {name: parse(text) for name, text in texts.items()}


def test_topological_order_dependencies_first() -> None:
    assignments = defs(
        CL="TVCL * exp(ETA)", TVCL="THETA * (WT / 70) ** 0.75", V="THETA2", K="CL / V"
    )
    order = topological_order(assignments, where=WHERE)
    assert sorted(order) == sorted(assignments)
    for name, expr in assignments.items():
        for dep in expr.names & assignments.keys():
            assert order.index(dep) < order.index(name)
    assert order == ["TVCL", "CL", "V", "K"]


def test_topological_order_keeps_given_order_when_independent() -> None:
    assert topological_order(defs(c="1", a="x", b="y"), where=WHERE) == ["c", "a", "b"]
    assert topological_order({}, where=WHERE) == []


def test_topological_order_long_chain() -> None:
    assignments = {f"v{i}": parse(f"v{i + 1} + 1") for i in range(3000)}
    order = topological_order(assignments, where=WHERE)
    assert order[0] == "v2999"
    assert order[-1] == "v0"


def test_topological_order_cycle() -> None:
    assignments = defs(a="b + c", b="c * 2", c="a - x", d="1")
    with pytest.raises(ExpressionError, match=r"circular definition: a -> b -> c -> a") as info:
        topological_order(assignments, where=WHERE)
    assert info.value.where == WHERE


def test_topological_order_self_reference() -> None:
    with pytest.raises(ExpressionError, match=r"circular definition: k -> k"):
        topological_order(defs(j="1", k="k + 1"), where=WHERE)


# ---------------------------------------------------------------------------
# The modules themselves never evaluate text
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("module", [ex, syntax, evaluator, emitter], ids=lambda m: m.__name__)
def test_module_does_not_call_eval_exec_or_compile(module: Any) -> None:
    tree = ast.parse(inspect.getsource(module))
    called = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not called & {"eval", "exec", "compile", "__import__", "getattr"}
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert "literal_eval" not in attributes
