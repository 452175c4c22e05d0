"""Residual error models (vtrial.model.residual) and the observations they produce.

Moments are checked on n = 200,000 keyed standard normal draws: sample means within
4 standard errors (SE = sd / sqrt(n)) and sample SDs within 4 standard errors of an
SD (SE = sd / sqrt(2 (n - 1))) of the stated formulas; a false failure has
probability about 6e-5 per check. The study tests at the end run the compiled kernel
of the default model on a few dozen patients.
"""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import special

from tests.conftest import small_study_data
from vtrial.engine.api import simulate
from vtrial.errors import ConfigError
from vtrial.infra.rng import keyed_uniforms
from vtrial.model.residual import (
    ErrorModel,
    add_observations,
    observe_patients,
    parse_spec,
    patient_normals,
)
from vtrial.model.spec import build_model
from vtrial.population.sampling import sample_population
from vtrial.run import stages as pipeline
from vtrial.run.chunk import OBSERVATION_COLUMNS, run_population, simulate_chunk
from vtrial.run.io import read_provenance
from vtrial.study.config import Study, study_from_dict

N = 200_000
RESIDUAL = {
    "CP": {"proportional": 0.15, "additive": 0.05, "lloq": 0.05},
    "ANC": {"exponential": 0.1},
}
OBSERVATIONS = {"outputs": ["CP", "ANC"], "times": [0.5, 1, 2, 4, 24], "every": 168, "from": 168}
#: sampling times of OBSERVATIONS in the small study (end 504 h)
TIMES = [0.5, 1.0, 2.0, 4.0, 24.0, 168.0, 336.0, 504.0]


def _eps(seed: int = 7) -> np.ndarray:
    """N keyed standard normals (patients 1..N/4 of replicate 0, k = 4)."""
    z = patient_normals(seed, 0, np.arange(1, N // 4 + 1), 4)
    return z.ravel()


def _close(x: np.ndarray, mean: float, sd: float) -> None:
    """Sample mean and SD of x agree with (mean, sd) within 4 standard errors."""
    n = x.size
    assert abs(x.mean() - mean) <= 4 * sd / math.sqrt(n), (x.mean(), mean)
    assert abs(x.std(ddof=1) - sd) <= 4 * sd / math.sqrt(2 * (n - 1)), (x.std(ddof=1), sd)


# ---------------------------------------------------------------------------
# Error models
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "f", "sd"),
    [
        ({"additive": 0.5}, 10.0, 0.5),
        ({"additive": 0.5}, 0.0, 0.5),
        ({"proportional": 0.15}, 10.0, 1.5),
        ({"proportional": 0.15}, -4.0, 0.6),  # sd = cv * |f|
        # combined: variances add, sqrt(1.0^2 + (0.1 * 10)^2) = 1.414 (not 1.0 + 1.0)
        ({"additive": 1.0, "proportional": 0.1}, 10.0, math.sqrt(2.0)),
        ({"additive": 0.05, "proportional": 0.15}, 2.0, math.hypot(0.05, 0.3)),
    ],
)
def test_normal_scale_models_mean_and_sd(spec: dict[str, float], f: float, sd: float) -> None:
    m = ErrorModel.from_spec(spec)
    y = m.observe(np.full(N, f), _eps())
    _close(y, f, sd)
    assert np.allclose(m.sd(np.array([f])), sd)


def test_combined_adds_variances_not_sds() -> None:
    m = ErrorModel(additive=1.0, proportional=0.1)
    assert m.kind == "combined"
    y = m.observe(np.full(N, 10.0), _eps(3))
    var = y.var(ddof=1)
    # Var = 1 + 1 = 2; the SD-sum convention would give (1 + 1)^2 = 4
    se_var = 2.0 * math.sqrt(2.0 / (N - 1))
    assert abs(var - 2.0) <= 4 * se_var
    assert abs(var - 4.0) > 100 * se_var


def test_exponential_on_log_scale() -> None:
    m = ErrorModel(exponential=0.1)
    f = 3.0
    y = m.observe(np.full(N, f), _eps(5))
    assert (y > 0).all()
    _close(np.log(y / f), 0.0, 0.1)
    # median f; mean f exp(s^2 / 2) (log-normal), within 4 SE of the log-normal SD
    sd_y = f * math.sqrt((math.exp(0.01) - 1) * math.exp(0.01))
    _close(y, f * math.exp(0.005), sd_y)
    assert m.observe(np.array([0.0, -2.0]), np.array([1.0, 1.0])).tolist() == [
        0.0,
        -2.0 * math.exp(0.1),
    ]


def test_blq_flags_keep_values_and_nan_propagates() -> None:
    m = ErrorModel(additive=0.1, lloq=1.0)
    f = np.array([0.5, 1.0, 2.0, np.nan])
    dv = m.observe(f, np.zeros(4))
    assert dv[:3].tolist() == [0.5, 1.0, 2.0]
    assert np.isnan(dv[3])
    assert m.blq(dv).tolist() == [True, False, False, False]  # strictly below; NaN not BLQ
    assert ErrorModel(additive=0.1).blq(dv).tolist() == [False] * 4
    only_lloq = ErrorModel.from_spec({"lloq": 1.0})
    assert only_lloq.kind == "none"
    assert only_lloq.observe(f[:3], np.ones(3)).tolist() == f[:3].tolist()


def test_observe_patients_time_major_order() -> None:
    ipred = np.arange(2 * 3 * 2, dtype=float).reshape(2, 3, 2) + 1.0
    eps = np.arange(12, dtype=float).reshape(2, 6)  # column t * O + o
    models = [ErrorModel(additive=1.0), None]
    dv, blq = observe_patients(ipred, models, eps)
    assert np.array_equal(dv[:, :, 1], ipred[:, :, 1])  # no error model: dv = ipred
    assert np.array_equal(dv[:, :, 0], ipred[:, :, 0] + eps[:, 0::2])
    assert not blq.any()


# ---------------------------------------------------------------------------
# Keyed draws
# ---------------------------------------------------------------------------


def test_patient_normals_are_keyed_rows() -> None:
    ids = np.array([5, 2, 9, 2, 30])
    z = patient_normals(11, 3, ids, 7)
    expected = special.ndtri(keyed_uniforms(11, "residual", 3, 30, 7)[ids - 1])
    assert np.array_equal(z, expected)
    assert np.array_equal(patient_normals(11, 3, ids, 7), z)  # deterministic
    assert not np.array_equal(patient_normals(11, 4, ids, 7), z)  # replicate is a key
    assert not np.array_equal(patient_normals(12, 3, ids, 7), z)  # so is the seed


@pytest.mark.parametrize("k", [1, 3, 8])
def test_patient_normals_do_not_depend_on_chunks(k: int) -> None:
    ids = np.arange(1, 101)
    whole = patient_normals(1, 0, ids, k)
    for bounds in ([0, 37, 100], [0, 1, 2, 50, 99, 100], [0, 100]):
        parts = [patient_normals(1, 0, ids[a:b], k) for a, b in itertools.pairwise(bounds)]
        assert np.array_equal(np.concatenate(parts), whole)
    with pytest.raises(ValueError, match="patient_id: must be >= 1"):
        patient_normals(1, 0, np.array([0, 1]), k)


def test_add_observations_independent_of_row_order_and_other_patients() -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "patient_id": np.repeat(np.arange(1, 6), 4),
            "time": np.tile([0.0, 1.0, 2.0, 8.0], 5),
            "CP": rng.uniform(0.1, 3.0, 20),
            "ANC": rng.uniform(1.0, 5.0, 20),
        }
    )
    out = add_observations(df, RESIDUAL, seed=3)
    assert list(out.columns) == [*df.columns, "ANC_obs", "CP_obs", "CP_blq"]
    assert out["CP_blq"].dtype == bool
    assert (out["CP_blq"] == (out["CP_obs"] < 0.05)).all()
    # draws: row patient_id - 1, column t * O + o with outputs in name order (ANC, CP)
    z = special.ndtri(keyed_uniforms(3, "residual", 0, 5, 4 * 2))
    t_idx = np.searchsorted([0.0, 1.0, 2.0, 8.0], df["time"])
    z_cp = z[df["patient_id"] - 1, t_idx * 2 + 1]
    assert np.array_equal(out["CP_obs"], df["CP"] + np.hypot(0.05, 0.15 * df["CP"]) * z_cp)
    shuffled = add_observations(df.sample(frac=1.0, random_state=1), RESIDUAL, seed=3)
    pd.testing.assert_frame_equal(shuffled.sort_index(), out)
    subset = add_observations(df[df["patient_id"].isin([2, 5])], RESIDUAL, seed=3)
    pd.testing.assert_frame_equal(subset, out[df["patient_id"].isin([2, 5])])
    with pytest.raises(ValueError, match="integer patient ids"):
        add_observations(df.assign(patient_id=df["patient_id"].astype(str)), RESIDUAL)


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def test_parse_spec_reports_every_problem() -> None:
    with pytest.raises(ValueError, match="residual_error") as info:
        parse_spec(
            {
                "CPX": {"additive": 1.0},
                "CP": {"additive": -0.5, "lognormal": 0.2},
                "ANC": {"exponential": 0.1, "proportional": 0.1},
                "TUMOUR": {},
            },
            ["CP", "ANC", "TUMOUR"],
        )
    text = str(info.value)
    assert "residual_error.CPX: not a model output ['CP', 'ANC', 'TUMOUR'], got 'CPX'" in text
    assert "residual_error.CP.additive: must be a finite number > 0, got -0.5" in text
    assert "residual_error.CP: unknown error model(s) ['lognormal']" in text
    assert "residual_error.ANC.exponential: cannot be combined" in text
    assert "residual_error.TUMOUR: needs at least one of" in text
    assert parse_spec(RESIDUAL)["CP"] == ErrorModel(additive=0.05, proportional=0.15, lloq=0.05)


def _observed_data(**changes: Any) -> dict[str, Any]:
    d = small_study_data()
    d["model"]["residual_error"] = copy.deepcopy(RESIDUAL)
    d["outputs"]["observations"] = copy.deepcopy(OBSERVATIONS)
    for key, value in changes.items():
        section, _, field = key.partition("__")
        node = d["model"] if section == "model" else d["outputs"]
        node[field] = value
    return d


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        study_from_dict(data, source="obs.yaml")
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"model__residual_error": {"CPX": {"additive": 0.1}}},
            "obs.yaml: model.residual_error.CPX: not a model output "
            "['CP', 'ANC', 'TUMOUR'], got 'CPX'",
        ),
        (
            {"model__residual_error": {"CP": {"additive": -0.1}}},
            "obs.yaml: model.residual_error.CP.additive: must be > 0, got -0.1",
        ),
        (
            {"model__residual_error": {"CP": {"proportional": 0}}},
            "obs.yaml: model.residual_error.CP.proportional: must be > 0, got 0",
        ),
        (
            {"model__residual_error": {"CP": {"lognormal": 0.1}}},
            "obs.yaml: model.residual_error.CP: unknown key(s) ['lognormal'] "
            "(allowed: ['additive', 'exponential', 'lloq', 'proportional'])",
        ),
        (
            {"model__residual_error": {"ANC": {"exponential": 0.1, "additive": 0.2}}},
            "obs.yaml: model.residual_error.ANC.exponential: cannot be combined with "
            "additive or proportional, got ['additive', 'exponential']",
        ),
        (
            {"model__residual_error": {"TUMOUR": {"additive": 1.0}}},
            "obs.yaml: model.residual_error.TUMOUR: is not observed: add it to "
            "outputs.observations.outputs ['CP', 'ANC'], got 'TUMOUR'",
        ),
        (
            {"outputs__observations": {"outputs": ["CP", "FOO"], "times": [1]}},
            "obs.yaml: outputs.observations.outputs[1]: not a model output "
            "['CP', 'ANC', 'TUMOUR'], got 'FOO'",
        ),
        (
            {"outputs__observations": {"outputs": ["CP", "ANC"], "times": [1, 600]}},
            "obs.yaml: outputs.observations.times[1]: must be <= simulation.end (504.0), got 600",
        ),
        (
            {"outputs__observations": {"outputs": ["CP", "ANC"], "times": [-1]}},
            "obs.yaml: outputs.observations.times[0]: must be >= 0, got -1",
        ),
        (
            {"outputs__observations": {"outputs": ["CP", "ANC"], "times": [1, 2, 1]}},
            "obs.yaml: outputs.observations.times[2]: repeats times[0], got 1",
        ),
        (
            {"outputs__observations": {"outputs": ["CP", "ANC"], "every": 24, "to": 600}},
            "obs.yaml: outputs.observations.to: must be <= simulation.end (504.0), got 600",
        ),
        (
            {
                "outputs__observations": {
                    "outputs": ["CP", "ANC"],
                    "every": 24,
                    "from": 100,
                    "to": 50,
                }
            },
            "obs.yaml: outputs.observations.from: must be <= to (50), got 100",
        ),
        (
            {"outputs__observations": {"outputs": ["CP", "ANC"], "every": 0.01}},
            "obs.yaml: outputs.observations.every: gives 50401 sampling times (limit 10000), "
            "got 0.01",
        ),
        (
            {"outputs__observations": {"outputs": ["CP", "ANC"], "times": [1], "from": 2}},
            "obs.yaml: outputs.observations.from: only applies with 'every', got 2",
        ),
        (
            {"outputs__observations": {"outputs": ["CP", "ANC"]}},
            "obs.yaml: outputs.observations: needs sampling 'times' or 'every'",
        ),
        (
            {"outputs__observations": {"outputs": ["CP"], "times": [1], "at": [2]}},
            "obs.yaml: outputs.observations: unknown key(s) ['at']",
        ),
    ],
)
def test_invalid_residual_error_or_observations_refused(
    changes: dict[str, Any], expected: str
) -> None:
    problems = _problems(_observed_data(**changes))
    assert any(p.startswith(expected) for p in problems), "\n".join(problems)


def test_residual_error_without_observations_refused() -> None:
    data = _observed_data()
    del data["outputs"]["observations"]
    assert _problems(data) == [
        "obs.yaml: model.residual_error: applies to outputs.observations (and to the twins' "
        "estimator, outputs.twins), neither is set, got entries ['ANC', 'CP']"
    ]


def test_sampling_times_join_probe_times_and_grid() -> None:
    study = study_from_dict(_observed_data())
    assert study.observation_times().tolist() == TIMES
    assert study.observations.outputs == ("ANC", "CP")
    assert set(TIMES) <= set(study.probe_times())
    assert set(TIMES) <= set(study.grid().tolist())
    assert study.data["outputs"]["observations"]["to"] == 504.0  # default: simulation.end
    compact = _observed_data(
        outputs__observations={"outputs": ["CP", "ANC"], "every": 0.1, "from": 500, "to": 501}
    )
    times = study_from_dict(compact).observation_times()
    assert times.size == 11
    assert times[0] == 500.0
    assert times[-1] == 501.0
    plain = study_from_dict(small_study_data())
    assert plain.observation_times().size == 0
    assert plain.observations.outputs == ()
    assert "observations" not in plain.data["outputs"]  # no defaults: same sha256 as before


# ---------------------------------------------------------------------------
# A small study through the trial and pipeline functions (compiled kernel)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def observed() -> tuple[Study, pd.DataFrame]:
    d = _observed_data()
    d["population"]["size"] = 12
    d["execution"]["chunk_size"] = 5
    study = study_from_dict(d)
    pop = sample_population(study)
    pop.loc[3, "CL"] = np.nan  # one failed solve (invalid_initial): rows kept, NaN values
    return study, pop


def test_observations_table_from_kernel_probes(observed: tuple[Study, pd.DataFrame]) -> None:
    study, pop = observed
    patients, _, _, obs, _ = simulate_chunk(study, pop)
    n, t, o = len(pop), len(TIMES), 2
    assert len(obs) == n * t * o == 24 * 8 * 2
    assert tuple(obs.columns) == OBSERVATION_COLUMNS
    assert obs["replicate"].dtype == np.int32
    assert obs["patient_id"].dtype == np.int64
    assert obs["blq"].dtype == bool
    keys = obs[["replicate", "patient_id", "time", "output"]]
    assert keys.equals(keys.sort_values(list(keys.columns)).reset_index(drop=True))
    assert not keys.duplicated().any()
    # ipred is the kernel's value of each output at each sampling time
    res = run_population(study, pop)
    probe_t = study.probe_times()
    outs = list(study.model.outputs)
    ipred = obs["ipred"].to_numpy().reshape(n, t, o)
    for j, name in enumerate(["ANC", "CP"]):
        for i, time in enumerate(TIMES):
            expected = res.probes[:, probe_t.index(time), outs.index(name)].copy()
            expected[res.status != 0] = np.nan
            np.testing.assert_array_equal(ipred[:, i, j], expected)
    failed = patients["solver_status"] != "ok"
    assert failed.sum() == 1
    bad = obs["patient_id"].eq(patients.loc[failed, "patient_id"].iloc[0]) & obs["replicate"].eq(0)
    assert bad.sum() == t * o
    assert obs.loc[bad, ["ipred", "dv"]].isna().all().all()
    assert not obs.loc[~bad, ["ipred", "dv"]].isna().any().any()
    # dv from the keyed draws: exponential for ANC, combined for CP, blq below lloq
    eps = np.concatenate(
        [
            patient_normals(study.seed, r, pop.loc[pop["replicate"] == r, "patient_id"], t * o)
            for r in (0, 1)
        ]
    ).reshape(n, t, o)
    dv = obs["dv"].to_numpy().reshape(n, t, o)
    np.testing.assert_array_equal(dv[:, :, 0], ipred[:, :, 0] * np.exp(0.1 * eps[:, :, 0]))
    cp_sd = np.hypot(0.05, 0.15 * ipred[:, :, 1])
    np.testing.assert_array_equal(dv[:, :, 1], ipred[:, :, 1] + cp_sd * eps[:, :, 1])
    cp = obs[obs["output"] == "CP"]
    assert (cp["blq"] == (cp["dv"] < 0.05)).all()
    assert cp["blq"].any()  # placebo: CP = 0, additive noise straddles the lloq
    # the same rows in other chunks give the same observations
    split = pd.concat(
        [simulate_chunk(study, pop.iloc[a:b])[3] for a, b in ((0, 7), (7, 13), (13, 24))],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(split, obs, check_exact=True)


@pytest.mark.usefixtures("sync_dask")
def test_run_simulate_writes_observation_parts(tmp_path: Path) -> None:
    """Shards and chunks of the pipeline give the observations of the whole population."""
    d = _observed_data()
    d["population"]["size"] = 12
    d["execution"].update(shards=2, chunk_size=5)
    study = study_from_dict(d)
    pipeline.run_sample_population(study, tmp_path / "population.parquet")
    parts = []
    for shard in range(2):
        out = {k: tmp_path / k / f"part-0000{shard}.parquet" for k in ("p", "t", "b", "o")}
        pipeline.run_simulate(
            study,
            tmp_path / "population.parquet",
            shard,
            out["p"],
            out["t"],
            out["b"],
            out_observations=out["o"],
        )
        parts.append(out["o"])
        prov = read_provenance(out["o"])
        assert prov["shard"] == shard
        assert prov["study_sha256"] == study.sha256
        assert prov["stage"] == "simulate"
    obs = pd.read_parquet(tmp_path / "o")
    whole = simulate_chunk(study, sample_population(study))[3]
    pd.testing.assert_frame_equal(obs, whole, check_exact=True, check_dtype=False)
    schema = pq.read_schema(parts[0])
    assert [str(schema.field(c).type) for c in OBSERVATION_COLUMNS] == [
        "int32",
        "int64",
        "string",
        "double",
        "string",
        "double",
        "double",
        "bool",
    ]
    with pytest.raises(ValueError, match="out_observations: required"):
        pipeline.run_simulate(
            study, tmp_path / "population.parquet", 0, *(tmp_path / f"x_{k}" for k in "ptb")
        )
    # a study without observations: an empty file with the same columns and types
    plain_data = small_study_data()
    plain_data["population"]["size"] = 12
    plain_data["execution"].update(shards=2, chunk_size=5)
    plain = study_from_dict(plain_data)
    pipeline.run_sample_population(plain, tmp_path / "plain.parquet")
    target = tmp_path / "plain_obs.parquet"
    pipeline.run_simulate(
        plain,
        tmp_path / "plain.parquet",
        1,
        *(tmp_path / f"plain_{k}.parquet" for k in "ptb"),
        out_observations=target,
    )
    assert pq.read_schema(target).names == list(OBSERVATION_COLUMNS)
    assert pq.read_schema(target).types == schema.types
    assert pq.ParquetFile(target).metadata.num_rows == 0


def test_engine_simulate_adds_observed_columns() -> None:
    m = build_model({"pk": "pk_1cmt"})
    params = pd.DataFrame({"CL": [5.0, 4.0, 6.0], "V1": [50.0, 40.0, 60.0]})
    regimen = {"route": "iv_bolus", "dose": 100}
    times = [0.0, 1.0, 10.0, 24.0]
    spec = {"CP": {"proportional": 0.2, "lloq": 0.1}}
    plain = simulate(m, params, regimen, times)
    out = simulate(m, params, regimen, times, residual_error=spec, seed=4)
    pd.testing.assert_frame_equal(out[plain.columns], plain)
    pd.testing.assert_frame_equal(out, add_observations(plain, spec, seed=4))
    assert list(out.columns[-2:]) == ["CP_obs", "CP_blq"]
    assert (out.loc[out["time"] == 0.0, "CP_obs"] == 0.0).all()  # proportional: 0 stays 0
    assert not out["CP_obs"].equals(
        simulate(m, params, regimen, times, residual_error=spec)["CP_obs"]
    )
    with pytest.raises(ValueError, match=r"residual_error\.ANC: not a model output \['CP'\]"):
        simulate(m, params, regimen, times, residual_error={"ANC": {"additive": 1.0}})
