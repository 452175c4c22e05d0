"""Safe YAML of study and model files: YAML 1.2 numbers, duplicate keys, and syntax
errors named by file, line and column on one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vtrial.errors import ConfigError, ModelError
from vtrial.infra.yamlsafe import load_yaml
from vtrial.model.spec import load_model
from vtrial.study.config import load_study


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1.0e6", 1.0e6),
        ("1e6", 1.0e6),
        ("-2.5E-3", -2.5e-3),
        ("3.0e+2", 300.0),
        (".5e1", 5.0),
        ("1.5", 1.5),  # the YAML 1.1 forms are unchanged
        ("10", 10),
        ("1e", "1e"),  # not a number
        ("e6", "e6"),
        ("'1e6'", "1e6"),  # quoted: text
    ],
)
def test_numbers_in_scientific_notation(text: str, value: object) -> None:
    got = load_yaml(f"x: {text}")["x"]
    assert got == value
    assert type(got) is type(value)


def test_a_model_file_with_scientific_notation_loads(tmp_path: Path) -> None:
    """The new user's receptor model: ``B0: {value: 1.0e6}`` was refused as text."""
    path = tmp_path / "receptor.yaml"
    path.write_text("name: receptor\nparameters:\n  B0: {value: 1.0e6, unit: '1/mL'}\n")
    assert load_model(str(path)).parameters["B0"].value == 1.0e6


def test_duplicate_keys_are_refused_with_their_line() -> None:
    with pytest.raises(yaml.YAMLError, match="found duplicate key 'a'") as err:
        load_yaml("a: 1\nb: 2\na: 3\n", name="s.yaml")
    assert 's.yaml", line 3' in str(err.value)


def test_syntax_errors_name_the_file_and_line_once(tmp_path: Path) -> None:
    """One problem, on one line, with the file, line and column (it said
    ``"<unicode string>"`` over several lines that read like two problems)."""
    path = tmp_path / "study.yaml"
    path.write_text("study:\n  name: x\n  bad: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load_study(path)
    (problem,) = err.value.problems
    assert problem.file == str(path)
    assert problem.where == "line 4, column 1"
    assert problem.message.startswith("not valid YAML: while parsing a flow sequence;")
    assert "\n" not in problem.message
    assert str(err.value).startswith("1 problem found:")
    model = tmp_path / "m.yaml"
    model.write_text("name: m\nparameters:\n  B0: {value: 1.0e6\n")
    with pytest.raises(ModelError, match=rf"{model}: line 4, column 1: not valid YAML"):
        load_model(str(model))
