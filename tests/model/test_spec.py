"""Models as data: the library, user model files, composition and its errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import vtrial
from tests.study.test_config import assert_mutation_refused
from vtrial.engine.codegen import kernel_source, model_source
from vtrial.errors import ModelError
from vtrial.model.spec import compose, load_model

USER_MODEL = """
name: emax_direct
title: Direct sigmoid Emax effect
reference: Holford NH, Sheiner LB. Clin Pharmacokinet 1981;6:429-53.
inputs:
  DRUG: {unit: mg/L}
parameters:
  E0: {value: 100, unit: "%", description: baseline}
  EMAX: {value: -60, unit: "%"}
  EC50: {value: 1.5, unit: mg/L}
  HILL: {value: 2, unit: "1"}
outputs:
  EFFECT: {expr: "E0 + EMAX * DRUG ** HILL / (EC50 ** HILL + DRUG ** HILL)", unit: "%"}
"""


def test_library_lists_models_with_references() -> None:
    models = {m["name"]: m for m in vtrial.list_models()}
    assert {"pk_1cmt", "pk_2cmt", "pk_3cmt", "friberg", "tgi_claret"} <= set(models)
    assert all(m["reference"] for m in models.values())


def test_unknown_library_model() -> None:
    with pytest.raises(ModelError, match="unknown library model 'pk_9cmt'"):
        load_model("pk_9cmt")


def test_user_model_file_composes_and_simulates(tmp_path: Path) -> None:
    path = tmp_path / "emax.yaml"
    path.write_text(USER_MODEL)
    model = vtrial.build_model(
        {"pk": "pk_1cmt", "components": {"pd": {"model": str(path), "links": {"DRUG": "CP"}}}}
    )
    assert list(model.outputs) == ["CP", "EFFECT"]
    out = vtrial.simulate(
        model,
        pd.DataFrame({"CL": [5.0], "V1": [50.0]}),
        {"route": "iv_bolus", "dose": 150},
        [1.0, 5.0],
    )
    cp = 3.0 * np.exp(-0.1 * np.array([1.0, 5.0]))
    effect = 100 - 60 * cp**2 / (1.5**2 + cp**2)
    np.testing.assert_allclose(out["CP"], cp, rtol=1e-12)
    np.testing.assert_allclose(out["EFFECT"], effect, rtol=1e-12)


def test_malicious_model_file_is_rejected_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text(
        USER_MODEL.replace(
            '"E0 + EMAX * DRUG ** HILL / (EC50 ** HILL + DRUG ** HILL)"',
            "\"__import__('os').system('touch pwned')\"",
        )
    )
    with pytest.raises(ModelError) as err:
        load_model(str(path))
    assert str(path) in str(err.value)
    assert "outputs.EFFECT" in str(err.value)
    assert not (tmp_path / "pwned").exists()


def test_model_schema_problems_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\nparameters:\n  K: {value: fast}\nstates:\n  A: {init: 1, colour: red}\n"
    )
    with pytest.raises(ModelError) as err:
        load_model(str(path))
    msg = str(err.value)
    assert "parameters.K.value" in msg
    assert "states.A" in msg


def test_composition_errors() -> None:
    pk = load_model("pk_2cmt")
    friberg = load_model("friberg")
    with pytest.raises(ModelError, match="input 'DRUG' of friberg is not linked"):
        compose(pk, {"anc": (friberg, {})})
    with pytest.raises(ModelError, match="'CONC' is not an output"):
        compose(pk, {"anc": (friberg, {"DRUG": "CONC"})})
    with pytest.raises(ModelError, match="defined by both"):
        compose(pk, {"a": (friberg, {"DRUG": "CP"}), "b": (friberg, {"DRUG": "CP"})})


def test_generated_kernel_uses_only_validated_trees() -> None:
    model = vtrial.build_model(
        {"pk": "pk_2cmt", "components": {"anc": {"model": "friberg", "links": {"DRUG": "CP"}}}}
    )
    src = model_source(model)
    # positive states are integrated on the log scale; links are resolved to CP
    assert "s_PROL = math.exp(z[0])" in src
    assert "e_EDRUG = (p[10] * cp)" in src
    assert "cp" in src
    assert "__import__" not in kernel_source(model)


#: mistakes in the model section of config/config.yaml, each refused with one problem
#: naming the key path, the rule and the value (see tests/study/test_config.py)
REFUSED_SPEC = [
    pytest.param(
        {"model.pk": "pk_4cmt"},
        ["model.pk:", "unknown library model 'pk_4cmt'", "pk_1cmt, pk_2cmt, pk_3cmt"],
        id="unknown-library-model",
    ),
    pytest.param(
        {"model.components.tumour.model": "tgi_gompertz"},
        ["model.components.tumour.model:", "unknown library model 'tgi_gompertz'"],
        id="unknown-component-model",
    ),
    pytest.param(
        {"model.pk": "models/config_missing.yaml"},
        ["model.pk:", "model file not found", "models/config_missing.yaml"],
        id="missing-model-file",
    ),
    pytest.param(
        {"model.components.tumour.links": {"DRUG": "CONC"}},
        ["model.components.tumour.links.DRUG:", "'CONC' is not an output"],
        id="link-to-unknown-output",
    ),
    pytest.param(
        {"model.components.tumour.links": {"DRUG": "CP", "DOSE": "CP"}},
        ["model.components.tumour.links.DOSE:", "not an input of tgi_claret"],
        id="link-unknown-input",
    ),
    pytest.param(
        {"model.components.tumour.links": {}},
        ["model.components.tumour.links:", "input 'DRUG' of tgi_claret is not linked"],
        id="unlinked-input",
    ),
    pytest.param(
        {"model.components.pk_again": {"model": "pk_1cmt"}},
        ["model.components:", "only one component may take doses (a PK macro or a dosing section)"],
        id="two-pk-macros",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), REFUSED_SPEC)
def test_spec_mistakes_are_refused(
    tmp_path: Path, changes: dict[str, Any], expected: list[str]
) -> None:
    assert_mutation_refused(tmp_path, changes, expected)
