"""The dataset example of config/studies: the shipped dataset is what its generator
script writes, and the study runs its subjects as recorded."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from vtrial.population.sampling import sample_population
from vtrial.run.chunk import simulate_chunk
from vtrial.study.config import load_study

ROOT = Path(__file__).resolve().parents[2]
STUDY = ROOT / "config" / "studies" / "vancomycin_tdm.yaml"
DATA = ROOT / "config" / "studies" / "data"


def _generator(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The generator script as a module (registered while the test runs: its
    dataclass needs it)."""
    spec = importlib.util.spec_from_file_location("make_tdm_dataset", DATA / "make_tdm_dataset.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_dataset_is_what_the_script_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "vancomycin_tdm.csv"
    assert _generator(monkeypatch).main([str(out)]) == 0
    assert out.read_bytes() == (DATA / "vancomycin_tdm.csv").read_bytes()


def test_the_dataset_has_what_the_example_shows() -> None:
    d = pd.read_csv(DATA / "vancomycin_tdm.csv", na_values=".")
    assert d["ID"].nunique() == 40
    assert DATA.joinpath("vancomycin_tdm.csv").stat().st_size < 100_000
    doses = d[d["EVID"] == 1]
    assert (doses["RATE"] > 0).all()
    assert (doses["CMT"] == 2).all()
    assert (doses["ADDL"] > 0).any()
    assert set(doses["II"]) >= {0, 12, 24}
    assert doses.groupby("ID")["AMT"].nunique().max() > 1  # dose changes
    assert (d["EVID"] == 2).any()
    for c in ("WT", "CRCL"):  # time-varying covariates
        by_id = d.groupby("ID")[c]
        assert (by_id.max() > by_id.min()).all()
    obs = d[d["EVID"] == 0]
    assert obs["DV"].notna().all()
    assert (obs["DV"] > 0.5).all()
    assert set(d["ARM"]) == {"standard", "loading"}


def test_the_study_simulates_the_recorded_levels() -> None:
    s = load_study(STUDY)
    assert s.recorded
    assert s.size == 40
    assert s.arm_names == ["loading", "standard"]
    d = pd.read_csv(DATA / "vancomycin_tdm.csv", na_values=".")
    pop = sample_population(s)
    one = pop[pop["replicate"] == 0].reset_index(drop=True)
    assert one["ID"].tolist() == [str(i) for i in range(1, 41)]
    patients, _, _, obs, _ = simulate_chunk(s, one)
    assert (patients["solver_status"] == "ok").all()
    recorded = d[d["EVID"] == 0]
    assert len(obs) == len(recorded)
    np.testing.assert_array_equal(obs["time"].to_numpy(), recorded["TIME"].to_numpy())
    # the recorded levels lie within the simulated ones: no level far off its prediction
    ratio = recorded["DV"].to_numpy() / obs["ipred"].to_numpy()
    assert 0.5 < np.median(ratio) < 2.0
