"""Tests for vtrial.study.config: loading study files, validation (schema, then
semantics), defaults.

Every refused study must raise one :class:`ConfigError` whose problems each name the
file, the key path, the rule broken and the value found. Studies are written to temp
YAML files and loaded with :func:`load_study`, so the messages are checked to name the
real file. Nothing here simulates: only loading, validation and the cheap ``Study``
helpers (grid, phases, grading) are exercised.

Tests marked ``xfail(strict=True)`` document known validation bugs (see their reasons);
they start failing (XPASS) as soon as the bug is fixed, and the marker must then go.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.conftest import small_study_data
from vtrial.errors import ConfigError
from vtrial.model.spec import library_path, list_models
from vtrial.model.syntax import ALLOWED_FUNCTIONS
from vtrial.population.derived import DERIVED
from vtrial.study.config import load_study, schema_path, study_from_dict
from vtrial.trial.adverse import GRADING_SCALES

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STUDY = ROOT / "config" / "config.yaml"
README = ROOT / "config" / "README.md"
DEFAULT_DATA: dict[str, Any] = yaml.safe_load(DEFAULT_STUDY.read_text())

MINIMAL: dict[str, Any] = {
    "study": {"name": "minimal", "seed": 1},
    "population": {"size": 100},
    "model": {"pk": "pk_1cmt"},
    "arms": [{"name": "single_dose", "regimen": {"route": "oral", "dose": 100}}],
}


class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()
_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def mutate(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``data`` with ``{"arms[1].regimen.dose": -5, "study.seed": DELETE}`` applied."""
    out = copy.deepcopy(data)
    for path, value in changes.items():
        keys: list[Any] = [int(i) if i else k for k, i in _TOKEN.findall(path)]
        node: Any = out
        for key in keys[:-1]:
            node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
        if value is DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = copy.deepcopy(value)
    return out


def write_study(tmp_path: Path, data: Any, name: str = "config_study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def refused(path: Path, **kwargs: Any) -> ConfigError:
    """Load ``path``, expect a ConfigError whose every problem names the file."""
    with pytest.raises(ConfigError) as info:
        load_study(path, **kwargs)
    err = info.value
    assert err.problems, "a ConfigError must list its problems"
    for p in err.problems:
        assert p.file == str(path), str(p)
        assert str(p).startswith(f"{path}: "), str(p)
    assert str(path) in str(err)
    return err


def assert_reported(err: ConfigError, expected: list[str]) -> None:
    """One problem line holds every expected substring (key path, rule, value)."""
    lines = [str(p) for p in err.problems]
    assert any(all(s in line for s in expected) for line in lines), (
        f"no problem contains all of {expected}:\n" + "\n".join(lines)
    )


def assert_mutation_refused(tmp_path: Path, changes: dict[str, Any], expected: list[str]) -> None:
    """config/config.yaml with ``changes`` (:func:`mutate`) is refused with one problem
    line holding every substring of ``expected``."""
    err = refused(write_study(tmp_path, mutate(DEFAULT_DATA, changes)))
    assert_reported(err, expected)


# ---------------------------------------------------------------------------
# Valid studies and defaults
# ---------------------------------------------------------------------------


def test_default_study_loads_with_defaults_filled() -> None:
    study = load_study(DEFAULT_STUDY)
    d = study.data
    assert study.source == str(DEFAULT_STUDY)
    assert study.name == "kinase-inhibitor-phase2"
    assert study.seed == 20261122
    assert study.replicates == 1
    assert study.size == 2400
    assert study.n_patients == 2400
    assert study.arm_names == ["placebo", "100mg_qd", "200mg_qd"]
    assert study.control_arm == "placebo"
    # given in the file
    assert study.execution == {
        "shards": 4,
        "workers": 2,
        "chunk_size": 2000,
        "scheduler_address": None,
    }
    assert d["simulation"]["end"] == 2016
    assert d["outputs"]["timecourse"] == {
        "every": 6,
        "outputs": ["CP", "ANC", "TUMOUR"],
        "patients": "all",
    }
    # filled in
    assert d["simulation"]["max_steps"] == 200_000
    assert d["model"]["iiv"]["distribution"] == {}
    assert [a["ratio"] for a in d["arms"]] == [1, 1, 1]
    assert d["exposure"] == {"output": "CP", "target": {"cmax": [1.0, 4.0]}}
    assert list(study.model.outputs) == ["CP", "ANC", "TUMOUR"]
    assert study.adverse_events["neutropenia"].grading() == ([2.0, 1.5, 1.0, 0.5], -1)
    assert study.endpoint_kinds() == {
        "tumour_change": "continuous",
        "objective_response": "binary",
    }
    assert study.probe_times() == [0.0, 2016.0]
    phases = study.arm_phases()
    assert [len(p) for p in phases] == [0, 1, 1]
    times = phases[1][0].dose_times()
    assert times.size == 14 * 4
    assert (times[13], times[14]) == (13 * 24, 21 * 24)  # 7 days off between cycles
    assert re.fullmatch(r"[0-9a-f]{64}", study.sha256)


def test_minimal_study_gets_every_default(tmp_path: Path) -> None:
    study = load_study(write_study(tmp_path, MINIMAL))
    assert study.data == {
        "study": {
            "name": "minimal",
            "seed": 1,
            "replicates": 1,
            "control_arm": None,
            "description": "",
        },
        "population": {"size": 100, "covariates": {}, "derived": []},
        "model": {
            "pk": "pk_1cmt",
            "parameters": {},
            "iiv": {"omega": {}, "correlations": {}, "distribution": {}},
        },
        "arms": [
            {"name": "single_dose", "regimen": {"route": "oral", "dose": 100}, "ratio": 1},
        ],
        "simulation": {"end": 168.0, "grid": 1.0, "rtol": 1e-6, "atol": 1e-9, "max_steps": 200_000},
        "exposure": {"output": "CP"},
        "adverse_events": {},
        "endpoints": {},
        "outputs": {"timecourse": {"every": 1.0, "outputs": ["CP"], "patients": "all"}},
        "execution": {"shards": 1, "workers": 2, "chunk_size": 2000, "scheduler_address": None},
    }
    assert study.base_dir == tmp_path.resolve()


@pytest.mark.parametrize(
    ("regimen", "end"),
    [
        pytest.param("none", 168.0, id="no-doses"),
        pytest.param(
            {"route": "oral", "dose": 1, "interval": 12, "count": 3}, 24.0 + 168, id="oral"
        ),
        pytest.param(
            {"route": "iv_infusion", "dose": 1, "duration": 2, "interval": 24, "count": 3},
            48.0 + 2 + 168,
            id="infusion-end",
        ),
        pytest.param(
            [
                {"route": "iv_bolus", "dose": 5},
                {
                    "route": "oral",
                    "dose": 1,
                    "start": 24,
                    "count": 2,
                    "cycles": {"length_days": 7, "count": 2},
                },
            ],
            24.0 + 168 + 24 + 168,
            id="phases-and-cycles",
        ),
    ],
)
def test_default_end_is_last_dose_plus_one_week(tmp_path: Path, regimen: Any, end: float) -> None:
    study = load_study(write_study(tmp_path, mutate(MINIMAL, {"arms[0].regimen": regimen})))
    assert study.data["simulation"]["end"] == end
    assert study.data["outputs"]["timecourse"]["every"] == max(1.0, end / 200)


FULL_STUDY = """\
study:
  name: full-feature.study+1
  description: every feature of a study file
  seed: 7
  replicates: 2
  control_arm: placebo
population:
  size: 60
  covariates:
    sex: {categorical: {F: 0.5, M: 0.5}, description: sex at birth}
    genotype: {categorical: {EM: 0.7, IM: 0.25, PM: 0.05}}
    age: {normal: {mean: 60, sd: 12}, bounds: [18, 90], unit: year}
    weight:
      lognormal: {median: {F: 65, M: 80}, cv: {F: 0.2, M: 0.18}}
      by: sex
      bounds: [35, 180]
      unit: kg
    height: {normal: {mean: {F: 162, M: 176}, sd: 7}, by: sex, bounds: [140, 210], unit: cm}
    scr: {lognormal: {median: 0.9, cv: 0.25}, bounds: [0, 4], unit: mg/dL}
    albumin: {uniform: {low: {F: 32, M: 34}, high: {F: 48, M: 50}}, by: sex, unit: g/L}
    site: {constant: 3}
  derived: [bmi, bsa, bsa_dubois, crcl, egfr, lbw]
model:
  pk: pk_1cmt
  components:
    anc: {model: friberg, links: {DRUG: CP}}
  parameters:
    CL:
      value: 4.0
      unit: L/h
      covariates: "(weight / 70) ** 0.75 * where(genotype == 'PM', 0.5, 1)"
    V1: {covariates: "lbw / 50"}
    F: {value: 0.7, description: oral bioavailability}
    KA: {value: 1.2, covariates: 1.1}
    CIRC0: {covariates: "clip(1 + 0.01 * (age - 60), 0.5, 1.5) if sex == 'F' else 1"}
    MTT: {covariates: "1 + 0 * (bmi + bsa + bsa_dubois + crcl + egfr + albumin + site + scr)"}
  iiv:
    omega: {CL: 0.09, V1: 0.04, F: 0.3, TLAG: 0.01, MTT: 0}
    correlations: {CL~V1: -0.4, V1~F: 0.2}
    distribution: {F: logit, TLAG: normal, CL: lognormal}
arms:
  - {name: placebo, regimen: none, description: control}
  - name: flat_mg
    ratio: 2
    regimen:
      - {route: oral, dose: 400}
      - {route: oral, dose: 200, start: 24, interval: 12, count: 13}
  - name: loading_mg_per_kg
    regimen:
      - {route: iv_infusion, dose: 4, unit: mg/kg, duration: 1.5}
      - {route: iv_infusion, dose: 2, unit: mg/kg, duration: 0.5, start: 168, interval: 168,
         count: 2}
  - name: bsa_cycles
    regimen:
      route: iv_bolus
      dose: 75
      unit: mg/m2
      interval: 24
      count: 5
      cycles: {length_days: 7, count: 3}
simulation: {end: 600, grid: 0.5, rtol: 1.0e-5, atol: 1.0e-8, max_steps: 5000}
exposure: {output: CP}
adverse_events:
  neutropenia: {output: ANC, grading: ctcae_v5_neutrophil_count_decreased, lln: 1.8}
  platelet_scale: {output: ANC, grading: ctcae_v5_platelet_count_decreased}
  high_exposure: {output: CP, thresholds: [5, 10, 20, 40], direction: above}
  low_anc: {output: ANC, thresholds: [3.0, 2.0]}
endpoints:
  anc_day7: {type: value_at, output: ANC, at: 168, description: ANC on day 8}
  anc_change: {type: change_from_baseline, output: ANC, at: 336}
  anc_pct: {type: percent_change_from_baseline, output: ANC, at: 600}
  anc_nadir: {type: minimum, output: ANC}
  cp_peak: {type: maximum, output: CP}
  nadir_below_1: {type: responder, endpoint: anc_nadir, below: 1.0}
  big_drop: {type: responder, endpoint: anc_pct, below_or_equal: -50}
  high_peak: {type: responder, endpoint: cp_peak, above: 10}
  no_fall: {type: responder, endpoint: anc_change, above_or_equal: 0}
outputs:
  timecourse: {every: 12, outputs: [ANC], patients: 20}
execution: {shards: 3, workers: 1, chunk_size: 7, scheduler_address: "tcp://127.0.0.1:8786"}
"""


def test_full_feature_study_loads(tmp_path: Path) -> None:
    path = tmp_path / "config_full.yaml"
    path.write_text(FULL_STUDY)
    study = load_study(path)
    assert study.n_patients == 120
    assert study.arm_names == ["placebo", "flat_mg", "loading_mg_per_kg", "bsa_cycles"]
    assert [a["ratio"] for a in study.data["arms"]] == [1, 2, 1, 1]
    phases = study.arm_phases()
    assert [len(p) for p in phases] == [0, 2, 2, 1]
    flat = np.concatenate([p.dose_times() for p in phases[1]])
    np.testing.assert_array_equal(flat, [0.0, *(24.0 + 12 * np.arange(13))])
    assert [(p.unit, p.duration) for p in phases[2]] == [("mg/kg", 1.5), ("mg/kg", 0.5)]
    np.testing.assert_array_equal(phases[2][1].dose_times(), [168.0, 336.0])
    cyc = phases[3][0].dose_times()
    np.testing.assert_array_equal(
        cyc, np.add.outer([0.0, 168.0, 336.0], 24.0 * np.arange(5)).ravel()
    )
    assert study.adverse_events["neutropenia"].grading() == ([1.8, 1.5, 1.0, 0.5], -1)
    assert study.adverse_events["platelet_scale"].grading() == ([150.0, 75.0, 50.0, 25.0], -1)
    assert study.adverse_events["high_exposure"].grading() == ([5.0, 10.0, 20.0, 40.0], 1)
    assert study.adverse_events["low_anc"].grading() == ([3.0, 2.0], -1)
    kinds = study.endpoint_kinds()
    assert [k for k, v in kinds.items() if v == "binary"] == [
        "nadir_below_1",
        "big_drop",
        "high_peak",
        "no_fall",
    ]
    assert study.probe_times() == [0.0, 168.0, 336.0, 600.0]
    np.testing.assert_array_equal(study.store_times(), 12.0 * np.arange(51))
    grid = study.grid()
    assert (grid[0], grid[-1], grid.size) == (0.0, 600.0, 1201)
    assert study.model.pk_compartments == 1
    assert list(study.model.outputs) == ["CP", "ANC"]
    assert study.model.parameters["F"].value == 0.7
    assert study.model.parameters["V1"].value == 50.0  # no value: library value kept
    assert re.fullmatch(r"[0-9a-f]{64}", study.sha256)


def test_relative_model_file_is_resolved_next_to_the_study(tmp_path: Path) -> None:
    lib = library_path()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "config_my_pk.yaml").write_text(
        (lib / "pk_1cmt.yaml").read_text().replace("name: pk_1cmt", "name: my_pk")
    )
    data = mutate(MINIMAL, {"model.pk": "models/config_my_pk.yaml"})
    study = load_study(write_study(tmp_path, data))
    assert study.model.components[0].name == "my_pk"


def test_command_line_overrides_are_merged_and_validated(tmp_path: Path) -> None:
    study = load_study(DEFAULT_STUDY, overrides={"execution": {"shards": 8, "workers": 3}})
    assert study.execution == {
        "shards": 8,
        "workers": 3,
        "chunk_size": 2000,
        "scheduler_address": None,
    }
    assert study.data["population"] == load_study(DEFAULT_STUDY).data["population"]
    err = refused(DEFAULT_STUDY, overrides={"execution": {"shards": 0}})
    assert_reported(err, ["execution.shards", "must be >= 1", "got 0"])
    err = refused(DEFAULT_STUDY, overrides={"execution": {"shards": 2401}})
    assert_reported(err, ["execution.shards", "number of patients (2400)", "got 2401"])


def test_study_from_dict_names_its_source() -> None:
    with pytest.raises(ConfigError) as info:
        study_from_dict(mutate(MINIMAL, {"population.size": 0}), source="inline-study")
    assert str(info.value.problems[0]) == "inline-study: population.size: must be >= 1, got 0"
    assert study_from_dict(MINIMAL).source == "<dict>"


# ---------------------------------------------------------------------------
# Refused studies: one problem each, naming file, key path, rule and value
# ---------------------------------------------------------------------------

# (changes to config/config.yaml, substrings expected in one problem line)
DEFAULT_CASES = [
    pytest.param(
        {"colour": "blue"}, ["(top level)", "unknown key(s) ['colour']"], id="unknown-top"
    ),
    pytest.param({"study.nmae": "x"}, ["study:", "unknown key(s) ['nmae']"], id="unknown-study"),
    pytest.param(
        {"simulation.end": "2016 h"},
        ["simulation.end", "must be of type number", '"2016 h"'],
        id="string-end",
    ),
    pytest.param({"study.seed": -1}, ["study.seed", "must be >= 0", "got -1"], id="neg-seed"),
    pytest.param(
        {"study.replicates": 0}, ["study.replicates", "must be >= 1", "got 0"], id="zero-replicates"
    ),
    pytest.param(
        {"study.name": "my study"}, ["study.name", "must match", '"my study"'], id="name-pattern"
    ),
    pytest.param(
        {"simulation.rtol": 0.5}, ["simulation.rtol", "must be <= 0.1", "got 0.5"], id="rtol-range"
    ),
    pytest.param(
        {"simulation.max_steps": 5},
        ["simulation.max_steps", "must be >= 10", "got 5"],
        id="max-steps",
    ),
    pytest.param(
        {"outputs.timecourse.patients": -1},
        ["outputs.timecourse.patients", "must be >= 0", "got -1"],
        id="timecourse-patients",
    ),
    pytest.param({"study.seed": DELETE}, ["study:", "'seed' is required"], id="missing-seed"),
    pytest.param(
        {"study.control_arm": "Placebo"},
        ["study.control_arm", "must be one of the arm names", "got 'Placebo'"],
        id="control-not-an-arm",
    ),
    pytest.param(
        {"simulation.grid": 5000},
        ["simulation.grid", "must be <= simulation.end (2016.0)", "got 5000"],
        id="grid-beyond-end",
    ),
    pytest.param(
        {"simulation.grid": 0.001},
        ["simulation.grid", "2016000 grid points (limit 1e6)"],
        id="grid-too-fine",
    ),
    pytest.param(
        {"outputs.timecourse.every": 3000},
        ["outputs.timecourse.every", "must be <= simulation.end (2016.0)", "got 3000"],
        id="every-beyond-end",
    ),
    pytest.param(
        {"outputs.timecourse.outputs": ["CP", "PLT"]},
        ["outputs.timecourse.outputs[1]", "not a model output", "got 'PLT'"],
        id="timecourse-unknown-output",
    ),
    pytest.param(
        {"exposure.output": "AUC"},
        ["exposure.output", "not a model output ['CP', 'ANC', 'TUMOUR']", "got 'AUC'"],
        id="exposure-unknown-output",
    ),
    pytest.param(
        {"exposure.target": {"cmax": [4, 1]}},
        ["exposure.target.cmax", "must be [low, high] with low < high", "got [4, 1]"],
        id="exposure-target-reversed",
    ),
    pytest.param(
        {"exposure.target": {"ctrough": [1, 2]}},
        ["exposure.target", "ctrough"],
        id="exposure-target-unknown-metric",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), DEFAULT_CASES)
def test_default_study_mutation_is_refused(
    tmp_path: Path, changes: dict[str, Any], expected: list[str]
) -> None:
    assert_mutation_refused(tmp_path, changes, expected)


MINIMAL_CASES = [
    pytest.param(
        {"arms[0].regimen.unit": "mg/kg"},
        ["arms[0].regimen.unit", "mg/kg dosing needs a 'weight' covariate"],
        id="mg-kg-without-weight",
    ),
    pytest.param(
        {"model": {}},
        ["model:", "needs a 'pk' model or at least one component"],
        id="empty-model",
    ),
    pytest.param(
        {"model": {"components": {"anc": {"model": "friberg", "links": {"DRUG": "ANC"}}}}},
        ["arms[0].regimen.route", "the model has no PK macro or dosing section"],
        id="doses-without-pk-macro",
    ),
    pytest.param(
        {"study.replicates": 3, "execution.shards": 301},
        ["execution.shards", "number of patients (300)", "got 301"],
        id="shards-times-replicates",
    ),
    pytest.param(
        {"endpoints.peak": {"type": "maximum", "output": "CP"}, "simulation.end": 0},
        ["simulation.end", "must be > 0", "got 0"],
        id="zero-end",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), MINIMAL_CASES)
def test_minimal_study_mutation_is_refused(
    tmp_path: Path, changes: dict[str, Any], expected: list[str]
) -> None:
    err = refused(write_study(tmp_path, mutate(MINIMAL, changes)))
    assert_reported(err, expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("study: {name: x\n", "not valid YAML", id="unclosed-flow"),
        pytest.param("study:\n  name: x\n seed: 1\n", "not valid YAML", id="bad-indent"),
        pytest.param("study: [a, b\n", "not valid YAML", id="unclosed-list"),
        pytest.param("\t- a\n", "not valid YAML", id="tab"),
        pytest.param("- a\n- b\n", "a study must be a mapping, got list", id="list"),
        pytest.param("", "a study must be a mapping, got NoneType", id="empty"),
        pytest.param("just text\n", "a study must be a mapping, got str", id="scalar"),
    ],
)
def test_invalid_yaml_text_is_refused(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "config_bad.yaml"
    path.write_text(text)
    err = refused(path)
    assert len(err.problems) == 1
    assert expected in str(err.problems[0])


def test_missing_file_is_refused(tmp_path: Path) -> None:
    err = refused(tmp_path / "config_nowhere.yaml")
    assert_reported(err, ["cannot read the study file"])


# ---------------------------------------------------------------------------
# Several problems at once; no code ever runs
# ---------------------------------------------------------------------------


def test_schema_problems_are_all_reported_together(tmp_path: Path) -> None:
    data = mutate(
        DEFAULT_DATA,
        {
            "colour": "blue",
            "study.seed": DELETE,
            "population.size": "many",
            "arms[1].regimen.dose": -5,
            "arms[2].regimen.dosee": 200,
            "simulation.grid": 0,
            "execution.workers": "two",
        },
    )
    err = refused(write_study(tmp_path, data))
    assert len(err.problems) >= 3
    for expected in (
        ["(top level)", "'colour'"],
        ["study:", "'seed' is required"],
        ["population.size", '"many"'],
        ["arms[1].regimen.dose", "got -5"],
        ["arms[2].regimen:", "unknown key(s) ['dosee']"],
        ["simulation.grid", "must be > 0"],
        ["execution.workers", '"two"'],
    ):
        assert_reported(err, expected)
    assert str(err).startswith(f"{len(err.problems)} problems found:")


def test_semantic_problems_are_all_reported_together(tmp_path: Path) -> None:
    data = mutate(
        DEFAULT_DATA,
        {
            "study.control_arm": "pbo",
            "population.covariates.sex.categorical": {"F": 0.5, "M": 0.6},
            "population.covariates.height.by": "age",
            "model.iiv.omega.VMAX": 0.1,
            "model.parameters.CL.covariates": "__import__('os').system('x')",
            "arms[2].name": "placebo",
            "arms[1].regimen.route": "iv_infusion",
            "endpoints.tumour_change.at": 5000,
            "execution.shards": 5000,
        },
    )
    err = refused(write_study(tmp_path, data))
    assert len(err.problems) >= 3
    for expected in (
        ["study.control_arm", "'pbo'"],
        ["population.covariates.sex.categorical", "got 1.1"],
        ["population.covariates.height.by", "'age'"],
        ["model.iiv.omega.VMAX"],
        ["model.parameters.CL.covariates", "not allowed"],
        ["arms[2].name", "'placebo' repeats"],
        ["arms[1].regimen.duration", "iv_infusion"],
        ["endpoints.tumour_change.at", "got 5000"],
        ["execution.shards", "got 5000"],
    ):
        assert_reported(err, expected)
    assert len(err.problems) == len(set(err.problems)), "problems are reported once"


def test_expressions_and_yaml_tags_never_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "config_pwned"
    expr = f"__import__('pathlib').Path('{marker}').touch()"
    err = refused(
        write_study(tmp_path, mutate(DEFAULT_DATA, {"model.parameters.CL.covariates": expr}))
    )
    assert_reported(err, ["model.parameters.CL.covariates", "not allowed"])
    path = tmp_path / "config_tag.yaml"
    path.write_text(
        DEFAULT_STUDY.read_text()
        + "\nextra: !!python/object/apply:pathlib.Path.touch"
        + f" [!!python/object/apply:pathlib.Path ['{marker}']]\n"
    )
    err = refused(path)
    assert_reported(err, ["not valid YAML"])
    assert not marker.exists()


# ---------------------------------------------------------------------------
# config/README.md documents every key
# ---------------------------------------------------------------------------


def _schema_words(node: Any, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        for key in ("properties",):
            out.update(node.get(key, {}))
        for value in node.get("enum", []):
            if isinstance(value, str):
                out.add(value)
        if isinstance(node.get("const"), str):
            out.add(node["const"])
        for value in node.values():
            _schema_words(value, out)
    elif isinstance(node, list):
        for value in node:
            _schema_words(value, out)
    return out


def test_readme_documents_every_key_and_name() -> None:
    text = README.read_text()
    words = _schema_words(yaml.safe_load(schema_path().read_text()), set())
    words |= set(ALLOWED_FUNCTIONS) | set(GRADING_SCALES) | set(DERIVED)
    words |= {m["name"] for m in list_models()}
    words -= {"$schema", "$id"}
    missing = sorted(w for w in words if not re.search(rf"(?<![\w/]){re.escape(w)}(?![\w/])", text))
    assert not missing, f"config/README.md does not mention {missing}"


def test_readme_examples_make_valid_studies(tmp_path: Path) -> None:
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)]
    *sections, minimal = blocks
    assert load_study(write_study(tmp_path, minimal)).data["simulation"]["end"] == 168.0
    study: dict[str, Any] = {}
    for block in sections:
        if "resample" in block.get("population", {}):
            continue  # needs its covariate table: tests/test_covariates.py loads it
        if "dataset" in block.get("population", {}):
            continue  # a whole study: tests/study/test_dataset_study.py loads it
        if "from_fit" in block.get("model", {}):
            continue  # needs its fitted files: tests/study/test_from_fit.py writes them
        for key, value in block.items():
            if key in ("parameters", "iiv", "iov"):  # indented fragments of `model`
                study.setdefault("model", {})[key] = value
            elif key == "model":
                study.setdefault("model", {}).update(value)
            else:
                assert key not in study, f"two README examples of {key!r}"
                study[key] = value
    loaded = load_study(write_study(tmp_path, study, "config_readme.yaml"))
    assert loaded.arm_names == ["placebo", "100mg_qd", "loading_then_weekly", "75mg_m2_q3w"]


# ---------------------------------------------------------------------------
# Known validation bugs (strict xfail: remove the marker once fixed)
# ---------------------------------------------------------------------------


def test_bug_uniform_per_category_missing_category_crashes(tmp_path: Path) -> None:
    data = mutate(
        DEFAULT_DATA,
        {"population.covariates.alb": {"uniform": {"low": {"F": 30}, "high": 50}, "by": "sex"}},
    )
    err = refused(write_study(tmp_path, data))
    assert_reported(err, ["population.covariates.alb.uniform.low", "every category of sex"])


@pytest.mark.parametrize("lln", [1.0, 1.5])
def test_bug_lln_must_exceed_grade2_limit(tmp_path: Path, lln: float) -> None:
    data = mutate(DEFAULT_DATA, {"adverse_events.neutropenia.lln": lln})
    err = refused(write_study(tmp_path, data))
    assert_reported(err, ["adverse_events.neutropenia.lln", str(lln)])


@pytest.mark.parametrize("name", ["patient_id", "solver_status", "n_steps", "ae_neutropenia_grade"])
def test_bug_endpoint_names_clash_with_columns(tmp_path: Path, name: str) -> None:
    data = mutate(DEFAULT_DATA, {f"endpoints.{name}": {"type": "maximum", "output": "CP"}})
    err = refused(write_study(tmp_path, data))
    assert_reported(err, ["endpoints", name])


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("arms[1].regimen.dose", math.inf, id="dose-inf"),
        pytest.param("model.parameters.CL.value", math.nan, id="value-nan"),
        pytest.param("model.iiv.omega.CL", math.inf, id="omega-inf"),
        pytest.param("adverse_events.neutropenia.lln", math.inf, id="lln-inf"),
    ],
)
def test_bug_non_finite_numbers_are_refused(tmp_path: Path, key: str, value: float) -> None:
    err = refused(write_study(tmp_path, mutate(DEFAULT_DATA, {key: value})))
    assert_reported(err, [key])


def test_bug_cycle_last_dose_collides_with_next_cycle(tmp_path: Path) -> None:
    data = mutate(DEFAULT_DATA, {"arms[1].regimen.count": 22})
    err = refused(write_study(tmp_path, data))
    assert_reported(err, ["arms[1].regimen.cycles.length_days", "22 doses"])


def test_bug_timecourse_every_has_a_size_limit(tmp_path: Path) -> None:
    data = mutate(DEFAULT_DATA, {"outputs.timecourse.every": 1e-4})
    err = refused(write_study(tmp_path, data))
    assert_reported(err, ["outputs.timecourse.every"])


def test_bug_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "config_dup.yaml"
    path.write_text(
        DEFAULT_STUDY.read_text().replace("  seed: 20261122", "  seed: 20261122\n  seed: 1")
    )
    err = refused(path)
    assert_reported(err, ["seed", "duplicate"])


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        pytest.param({"model.pk": "pk_4cmt"}, "model.pk", id="unknown-pk"),
        pytest.param({"model.parameters.CLL": {"value": 1}}, "model.parameters.CLL", id="override"),
        pytest.param({"model.parameters.CL.unit": "mg"}, "model.parameters.CL.unit", id="unit"),
        pytest.param(
            {"model.components.tumour.links": {"DRUG": "CONC"}},
            "model.components.tumour.links.DRUG",
            id="link",
        ),
    ],
)
def test_bug_model_problems_have_precise_key_paths(
    tmp_path: Path, changes: dict[str, Any], where: str
) -> None:
    path = write_study(tmp_path, mutate(DEFAULT_DATA, changes))
    err = refused(path)
    assert [p.where for p in err.problems] == [where]
    assert str(err.problems[0]).count(str(path)) == 1


def test_bug_model_error_hides_other_problems(tmp_path: Path) -> None:
    data = mutate(
        DEFAULT_DATA,
        {"model.parameters.CLL": {"value": 1}, "endpoints.tumour_change.output": "TUMOR"},
    )
    err = refused(write_study(tmp_path, data))
    assert_reported(err, ["model.parameters", "CLL"])
    assert_reported(err, ["endpoints.tumour_change.output", "TUMOR"])


def test_bug_expression_message_shows_the_expression(tmp_path: Path) -> None:
    expr = "__import__('os').system('x')"
    err = refused(
        write_study(tmp_path, mutate(DEFAULT_DATA, {"model.parameters.CL.covariates": expr}))
    )
    assert_reported(err, ["model.parameters.CL.covariates", expr])


def test_bug_duplicate_correlation_pair(tmp_path: Path) -> None:
    data = mutate(DEFAULT_DATA, {"model.iiv.correlations": {"CL~V1": 0.3, "V1~CL": -0.3}})
    err = refused(write_study(tmp_path, data))
    assert_reported(err, ["model.iiv.correlations", "V1~CL"])


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        pytest.param(
            "alb", {"uniform": {"low": 0, "high": 10}, "bounds": [0, 1]}, id="uniform-bounds"
        ),
        pytest.param("site", {"constant": 5, "bounds": [0, 1]}, id="constant-bounds"),
        pytest.param("site", {"constant": 5, "by": "sex"}, id="constant-by"),
    ],
)
def test_bug_ignored_covariate_keys_are_refused(
    tmp_path: Path, name: str, spec: dict[str, Any]
) -> None:
    data = mutate(DEFAULT_DATA, {f"population.covariates.{name}": spec})
    err = refused(write_study(tmp_path, data))
    assert_reported(err, [f"population.covariates.{name}"])


def test_misspelled_keys_and_model_names_get_a_suggestion() -> None:
    """``regimem`` and ``pk_1cpt`` (a new user's slips) name what was meant."""
    d = small_study_data()
    d["arms"][1]["regimem"] = d["arms"][1].pop("regimen")
    key = re.escape("unknown key(s) ['regimem'] (did you mean 'regimen'? allowed:")
    with pytest.raises(ConfigError, match=key):
        study_from_dict(d, source="s.yaml")
    d = small_study_data()
    d["model"]["pk"] = "pk_1cpt"
    name = re.escape("unknown library model 'pk_1cpt' (did you mean 'pk_1cmt'? library:")
    with pytest.raises(ConfigError, match=name):
        study_from_dict(d, source="s.yaml")
