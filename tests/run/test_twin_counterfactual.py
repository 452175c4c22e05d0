"""Real patients' twins under counterfactual arms (``population.dataset.parameters:
twins`` with ``doses: arms``), on 4 patients of the vancomycin example
(config/studies/vancomycin_counterfactual.yaml, the plain pk_2cmt kernel): each
replicate's parameters are the typical values times exp of the MAP estimate (replicate
0) or of a draw from the Laplace posterior reproduced here from the stored estimate and
covariance; one twin's concentration under the loading arm is the closed form; the
tables are bit-identical with 1 or 2 shards (and the manifest, verify and recompute
cover them); bad inputs are named and a failed fit is not simulated; under their own
records (doses: recorded) the MAP twins predict the levels as the estimator does."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import special

from tests.conftest import ROOT
from tests.numerics.closed_forms import conc_events
from vtrial.analysis.design import design_tables
from vtrial.errors import ConfigError, DataError
from vtrial.population.sampling import sample_population
from vtrial.run import stages
from vtrial.run.chunk import simulate_chunk
from vtrial.run.cli import verify
from vtrial.run.io import read_parts, read_provenance, table_hash
from vtrial.run.recompute import recompute
from vtrial.run.twin_stage import estimate_twins, run_twins
from vtrial.study.config import Study, load_study, study_from_dict

EXAMPLE = ROOT / "config" / "studies" / "vancomycin_counterfactual.yaml"
DATA = ROOT / "config" / "studies" / "data" / "vancomycin_tdm.csv"
IDS = (1, 2, 21, 22)
NAMES = ("CL", "V1", "V2")
LOADING = [(0.0, 2000.0, 2.0), (12.0, 1000.0, 1.0)]  # (time h, mg, infusion h)


def cut_data(base: Path, **changes: Any) -> dict[str, Any]:
    """The example with 4 of its patients, 3 replicates, 24 h and two arms without dose
    rules, as data (its dataset written into ``base``)."""
    data = pd.read_csv(DATA, dtype=str)
    data[data["ID"].astype(int).isin(IDS)].to_csv(base / "tdm.csv", index=False)
    d = yaml.safe_load(EXAMPLE.read_text())
    d["study"].update(name="cf-cut", replicates=3)
    d["population"]["dataset"]["path"] = "tdm.csv"
    d["arms"] = [
        {"name": "standard", "regimen": {"route": "iv_infusion", "dose": 1000, "duration": 1,
                                         "interval": 12, "count": 2}},
        {"name": "loading", "regimen": [
            {"route": "iv_infusion", "dose": 2000, "duration": 2},
            {"route": "iv_infusion", "dose": 1000, "duration": 1, "start": 12}]},
    ]  # fmt: skip
    d["simulation"]["end"] = 24
    d["endpoints"] = {k: d["endpoints"][k] for k in ("auc_day1", "day1_on_target")}
    d["outputs"]["timecourse"] = {"every": 1, "outputs": ["CP"]}
    d["execution"] = {"shards": 1, "workers": 1, "chunk_size": 5}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        d[section][field] = value
    return d


def cut(base: Path, name: str = "cf.yaml", **changes: Any) -> Study:
    """:func:`cut_data` written to ``base / name`` and loaded."""
    path = base / name
    path.write_text(yaml.safe_dump(cut_data(base, **changes), sort_keys=False))
    return load_study(path)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    return cut(tmp_path_factory.mktemp("cf"))


@pytest.fixture(scope="module")
def twins(study: Study) -> pd.DataFrame:
    return estimate_twins(study)


def keyed_normals(seed: int, purpose: str, replicate: int, n: int, k: int) -> np.ndarray:
    """The keyed stream, written out: a Philox generator keyed by SeedSequence([seed,
    SHA-256 code of the purpose, replicate]), ``k`` uniforms per subject in subject
    order, turned into standard normals by the inverse CDF."""
    code = int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:8], "little")
    key = np.random.SeedSequence([seed, code, replicate]).generate_state(2, dtype=np.uint64)
    u = np.random.Generator(np.random.Philox(key=key)).random((n, k))
    return np.asarray(special.ndtri(np.where(u == 0.0, np.finfo(np.float64).tiny, u)))


def expected_etas(twins: pd.DataFrame, seed: int, replicate: int) -> np.ndarray:
    """Each subject's random effects in ``replicate``, from the stored estimate and the
    stored lower triangle of its Laplace covariance."""
    eta_hat = twins[[f"eta_{p}" for p in NAMES]].to_numpy()
    if replicate == 0:
        return eta_hat
    z = keyed_normals(seed, "twin:eta", replicate, len(twins), len(NAMES))
    out = np.empty_like(eta_hat)
    for i, row in enumerate(twins.itertuples(index=False)):
        cov = np.empty((3, 3))
        for a in range(3):
            for b in range(a + 1):
                cov[a, b] = cov[b, a] = getattr(row, f"cov_{NAMES[a]}_{NAMES[b]}")
        out[i] = eta_hat[i] + np.linalg.cholesky(cov) @ z[i]
    return out


def test_each_replicate_is_the_map_or_a_keyed_posterior_draw(
    study: Study, twins: pd.DataFrame
) -> None:
    assert (twins["status"] == "ok").all()
    assert twins["ID"].tolist() == list(IDS)
    pop = sample_population(study, twins=twins)
    assert len(pop) == len(IDS) * 3 * 2  # subjects x replicates x arms
    assert (pop["twin_status"] == "ok").all()
    base = pd.read_csv(DATA).groupby("ID").first().loc[list(IDS)]
    typical = {
        "CL": 4.6 * (base["CRCL"].to_numpy() / 80) ** 0.75,  # baseline covariates
        "V1": 30.0 * base["WT"].to_numpy() / 70,
        "V2": np.full(len(IDS), 40.0),
    }
    draws = []
    for r in range(3):
        for arm in ("standard", "loading"):  # a twin's rows share its parameters
            rows = pop[(pop["replicate"] == r) & (pop["arm"] == arm)]
            eta = expected_etas(twins, study.seed, r)
            got = rows[[f"eta_{p}" for p in NAMES]].to_numpy()
            if r == 0:
                assert np.array_equal(got, eta)  # the MAP itself
            np.testing.assert_allclose(got, eta, rtol=1e-13, atol=1e-15)
            for j, p in enumerate(NAMES):
                np.testing.assert_allclose(rows[p], typical[p] * np.exp(eta[:, j]), rtol=1e-13)
            assert (rows["Q2"] == 6.0).all()
        draws.append(eta)
    assert not np.allclose(draws[1], draws[2])  # replicates draw anew


def test_a_twin_under_the_loading_arm_is_the_closed_form(study: Study, twins: pd.DataFrame) -> None:
    pop = sample_population(study, twins=twins)
    one = pop[(pop["replicate"] == 1) & (pop["ID"] == "21") & (pop["arm"] == "loading")]
    patients, timecourse, _, _, _ = simulate_chunk(study, one.reset_index(drop=True))
    assert patients["solver_status"].tolist() == ["ok"]
    assert patients["twin_status"].tolist() == ["ok"]
    p = one.iloc[0]
    t = timecourse["time"].to_numpy(dtype=np.float64)
    assert t.tolist() == [float(h) for h in range(25)]
    ref = conc_events(t, LOADING, "iv_infusion", cl=p["CL"], v1=p["V1"], q2=p["Q2"], v2=p["V2"])
    # stored as float32
    np.testing.assert_allclose(timecourse["CP"], ref, rtol=1e-6, atol=1e-6)


def run_shards(study: Study, out: Path) -> dict[str, str]:
    """The twins, population and simulate stages over the study's shards (Dask
    replaced by this process) and the manifest; content hashes of the tables."""
    n = int(study.execution["shards"])
    parts = [out / "twins" / f"part-{s:05d}.parquet" for s in range(n)]
    for s, part in enumerate(parts):
        run_twins(study, s, part)
    population = out / "population.parquet"
    stages.run_sample_population(study, population, twins=parts)
    meta = read_provenance(population)["twins"]
    assert meta == {"parts": n, "content_sha256": table_hash(read_parts(parts))}
    kinds = ("patients", "timecourse", "bands")
    tables = {t: [out / t / f"part-{s:05d}.parquet" for s in range(n)] for t in kinds}
    for s in range(n):
        stages.run_simulate(study, population, s, *(tables[t][s] for t in kinds))
    files = [*parts, population, *(p for t in tables.values() for p in t)]
    stages.run_manifest(study, files, out / "manifest.json")
    return {
        "twins": table_hash(read_parts(parts)),
        "population": table_hash(pd.read_parquet(population)),
        "patients": table_hash(read_parts(tables["patients"])),
        "timecourse": table_hash(read_parts(tables["timecourse"])),
    }


def test_one_or_two_shards_give_identical_tables(
    study: Study, tmp_path: Path, sync_dask: None
) -> None:
    one = run_shards(study, tmp_path / "one")
    two = run_shards(cut(study.base_dir, "cf2.yaml", execution__shards=2), tmp_path / "two")
    assert one == two
    # the manifest covers every file; a recomputed shard (its twins re-estimated, the
    # population from the stored twins) matches
    assert verify(tmp_path / "two") == []
    assert recompute(tmp_path / "two", shards=[1]) == []
    damaged = pd.read_parquet(tmp_path / "two" / "twins" / "part-00001.parquet")
    damaged.loc[0, "cov_V2_CL"] += 1e-12
    damaged.to_parquet(tmp_path / "two" / "twins" / "part-00001.parquet")
    assert verify(tmp_path / "two") == [
        f"{tmp_path / 'two' / 'twins' / 'part-00001.parquet'}: content differs from the manifest"
    ]


def _messages(data: dict[str, Any], base: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        study_from_dict(data, source="cf.yaml", base_dir=base)
    return [f"{p.where}: {p.message}" for p in info.value.problems]


def test_bad_inputs_are_named(study: Study, twins: pd.DataFrame, tmp_path: Path) -> None:
    d = cut_data(tmp_path)
    del d["outputs"]["twins"]
    found = _messages(d, tmp_path)
    assert any(
        m.startswith("population.dataset.parameters: 'twins' takes each subject's random effects")
        and "add outputs.twins" in m
        for m in found
    ), found
    d = cut_data(tmp_path)
    d["study"]["uncertainty"] = {"omega_df": 50}
    assert any(m.startswith("study.uncertainty: with population.dataset.parameters: twins")
               for m in _messages(d, tmp_path))  # fmt: skip
    # the population stage without the twins, or with twins of other subjects
    with pytest.raises(DataError, match="needs the twins stage's part files"):
        stages.run_sample_population(study, tmp_path / "population.parquet")
    with pytest.raises(DataError, match="holds 3 subjects, not the dataset's 4 in file order"):
        sample_population(study, twins=twins.iloc[1:])
    with pytest.raises(DataError, match="not the dataset's 4 in file order"):
        sample_population(study, twins=twins.iloc[::-1])
    with pytest.raises(DataError, match=r"lacks the columns \['cov_CL_CL'"):
        sample_population(study, twins=twins.drop(columns=["cov_CL_CL"]))
    assert not (tmp_path / "population.parquet").exists()


def test_a_failed_fit_is_not_simulated(study: Study, twins: pd.DataFrame) -> None:
    """The subject keeps its rows in every table, with NaN random effects and
    parameters, its fit's status, solver_status invalid_initial, and its effects
    excluded (counted)."""
    bad = twins.copy()
    bad.loc[1, "status"] = "not converged: maximum iterations"
    pop = sample_population(study, twins=bad)
    failed = (pop["ID"] == "2").to_numpy()
    assert (pop.loc[failed, "twin_status"] == "not converged: maximum iterations").all()
    assert pop.loc[failed, ["eta_CL", "CL", "V1", "V2"]].isna().all().all()
    assert pop.loc[~failed, ["eta_CL", "CL"]].notna().all().all()
    assert (pop.loc[~failed, "twin_status"] == "ok").all()
    patients = simulate_chunk(study, pop)[0]
    assert (patients.loc[failed, "solver_status"] == "invalid_initial").all()
    assert (patients.loc[~failed, "solver_status"] == "ok").all()
    assert patients.loc[failed, "auc_day1"].isna().all()
    tables = design_tables(study, patients, pop)
    subject = tables["subject_effects"].set_index(["ID", "endpoint"])
    assert subject.loc[("2", "auc_day1"), "twin_status"] == "not converged: maximum iterations"
    assert np.isnan(subject.loc[("2", "auc_day1"), "map"])
    assert subject.loc[("2", "auc_day1"), ["n_draws", "n_excluded"]].tolist() == [0, 2]
    one = subject.loc[("1", "auc_day1")]
    assert one["n_draws"] == 2
    assert one["map"] > 0  # a loading dose raises day-1 AUC
    pooled = tables["individual_effects"]
    pooled = pooled[pooled["replicate"].isna() & (pooled["endpoint"] == "auc_day1")].iloc[0]
    assert (pooled["n"], pooled["n_excluded"]) == (9, 3)


def test_the_example_is_a_valid_counterfactual_study() -> None:
    from vtrial.run.twin_stage import check_twins

    ex = load_study(EXAMPLE)
    check_twins(ex)
    assert ex.arm_names == ["standard", "loading", "trough_guided"]
    assert not ex.recorded
    assert ex.population.dataset is not None
    assert ex.population.dataset.parameters == "twins"
    assert ex.size == 40


def test_with_recorded_doses_replicate_0_predicts_the_levels_as_the_estimator(
    study: Study, twins: pd.DataFrame, tmp_path: Path
) -> None:
    """The same twins simulated under their own records: replicate 0's predictions of
    the recorded levels are the estimator's predictions at the MAP estimates."""
    from vtrial.estimation.map import predict
    from vtrial.run.twins import twin_cohort

    d = cut_data(tmp_path)
    del d["arms"]
    d["population"]["dataset"]["doses"] = "recorded"
    d["study"].update(design="parallel", control_arm=None)
    d["simulation"]["end"] = 168
    d["endpoints"] = {}
    d["outputs"]["observations"] = {"outputs": ["CP"]}
    recorded = study_from_dict(d, source="rec.yaml", base_dir=tmp_path)
    pop = sample_population(recorded, twins=twins)
    obs = simulate_chunk(recorded, pop[pop["replicate"] == 0].reset_index(drop=True))[3]
    data, prior = twin_cohort(recorded)
    eta = twins[[f"eta_{p}" for p in prior.names]].to_numpy()
    for s in range(len(IDS)):
        f = predict(data, prior, s, eta[s][None, :])[0]
        np.testing.assert_allclose(obs[obs["patient_id"] == s + 1]["ipred"], f, rtol=1e-12)
