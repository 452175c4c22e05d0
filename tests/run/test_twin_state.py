"""A twin over time (vtrial.run.twin_state): created, updated with new records warm-started
from its last estimate, rebuilt bit for bit; bad updates are refused, naming file, row
and rule, and leave the twin as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.run.test_forecast import DATA, STUDY
from vtrial.errors import ConfigError
from vtrial.estimation.map import fit_subject, objective
from vtrial.run.twin_state import create_twin, load_twin, rebuild_twin, update_twin
from vtrial.run.twins import twin_cohort
from vtrial.study.config import load_study

HEADER = DATA.splitlines()[0]
#: a third dose at 24 h and a level before it
UPDATE = HEADER + "\n1,24,1,1000,2,1000,0,0,.,1,80,55\n1,35.5,0,.,2,.,.,.,11.2,0,80,55\n"


@pytest.fixture
def study(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "d.csv").write_text(DATA)
    (tmp_path / "s.yaml").write_text(STUDY.format(data=tmp_path / "d.csv"))
    return load_study(tmp_path / "s.yaml")


def test_update_is_the_fit_of_all_records_and_rebuilds_bit_for_bit(study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    twin = tmp_path / "twin"
    state = create_twin(study, 1, twin)
    assert state["steps"][0]["status"] == "ok"
    (tmp_path / "u.csv").write_text(UPDATE)
    state = update_twin(study, twin, tmp_path / "u.csv")
    step = state["steps"][1]
    assert step["added"]["records"] == 2
    assert step["start"] == state["steps"][0]["eta"]
    assert step["records"] == 5
    # the same estimate as a dataset holding every record, fitted from scratch
    (tmp_path / "all.csv").write_text(DATA + UPDATE.split("\n", 1)[1])
    (tmp_path / "all.yaml").write_text(STUDY.format(data=tmp_path / "all.csv"))
    data, prior = twin_cohort(load_study(tmp_path / "all.yaml"))
    ref = fit_subject(data, prior, 0)
    np.testing.assert_allclose(step["eta"], ref.eta, atol=1e-6)
    z = np.linalg.solve(prior.chol, np.asarray(step["eta"]))
    assert objective(data, prior, 0, z[None, :])[0] == pytest.approx(step["ofv"], rel=1e-12)
    # rebuilt from the folder: same records, same bits
    assert rebuild_twin(study, twin) == [
        {"step": 0, "records_match": True, "identical": True, "ofv": state["steps"][0]["ofv"]},
        {"step": 1, "records_match": True, "identical": True, "ofv": step["ofv"]},
    ]
    # a stored update that changed is found
    copy = twin / step["added"]["copy"]
    copy.write_text(UPDATE.replace("11.2", "11.3"))
    with pytest.raises(ConfigError, match="changed since step 1 stored it"):
        rebuild_twin(study, twin)


def test_bad_updates_are_refused_and_change_nothing(study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    twin = tmp_path / "twin"
    create_twin(study, 1, twin)
    before = (twin / "twin.json").read_bytes()
    bad = HEADER + "\n2,24,1,1000,2,1000,0,0,.,1,80,55\n1,10,0,.,2,.,.,.,11.2,0,80,55\n"
    (tmp_path / "u.csv").write_text(bad)
    with pytest.raises(ConfigError) as err:
        update_twin(study, twin, tmp_path / "u.csv")
    text = str(err.value)
    assert (
        "u.csv: row 1 (line 2), column ID: an update holds the twin's subject only (1), got 2"
        in text
    )
    assert (
        "row 2 (line 3), column TIME: an update's records come after the twin's last record "
        "(13.5 h), got 10" in text
    )
    (tmp_path / "u.csv").write_text(HEADER + "\n1,24,0,.,2,.,.,.,.,0,80,55\n")
    with pytest.raises(
        ConfigError, match=r"row 1 \(line 2\), column DV: an observation record .* needs a DV"
    ):
        update_twin(study, twin, tmp_path / "u.csv")
    assert (twin / "twin.json").read_bytes() == before
    assert not (twin / "updates").exists()
    # another study (here: the file edited) is refused
    src = Path(study.source)
    src.write_text(src.read_text().replace("seed: 1", "seed: 2"))
    with pytest.raises(ConfigError, match="is not the study the twin"):
        update_twin(load_study(src), twin, tmp_path / "u.csv")
    with pytest.raises(ConfigError, match="already holds a twin"):
        create_twin(study, 1, twin)
    with pytest.raises(ConfigError, match=r"subject: no subject with this ID .* got 7"):
        create_twin(study, 7, tmp_path / "other")
    assert json.loads(before)["format"] == load_twin(twin)["format"]
