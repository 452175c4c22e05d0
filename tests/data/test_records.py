"""Dataset records as kernel events (:mod:`vtrial.data.records`) and the checks of
``vtrial.simulate(model, data=...)`` (:mod:`vtrial.engine.records`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vtrial import build_model, simulate
from vtrial.data.dataset import dataset_from_frame
from vtrial.data.records import END_MARGIN, dose_routes, record_events, unsupported_problems
from vtrial.engine.records import simulate_records
from vtrial.errors import ConfigError, DatasetError
from vtrial.protocol.codes import EventKind

OBS, ORAL, BOLUS, RATE, MARK = (
    int(k) for k in (EventKind.OBS, EventKind.ORAL, EventKind.BOLUS, EventKind.RATE, EventKind.MARK)
)


def frame(**cols: list) -> pd.DataFrame:
    return pd.DataFrame(cols)


def test_dose_routes_number_compartments_as_the_model() -> None:
    macro = dose_routes(build_model({"pk": "pk_2cmt"}))
    assert (macro.oral, macro.iv, macro.default) == (1, 2, 1)
    assert macro.names[3] == "peripheral 1"
    ode = dose_routes(build_model({"pk": "pk_mm_1cmt"}))
    assert (ode.oral, ode.iv) == (1, 2)
    assert ode.names == {1: "DEPOT", 2: "CENT"}


def test_boluses_go_into_any_compartment_but_log_scale_states() -> None:
    """PK macro compartments and ODE states take boluses; states integrated on the log
    scale (Friberg's, all positive) do not, and a dose there is refused by the reader."""
    model = build_model(
        {"pk": "pk_2cmt", "components": {"anc": {"model": "friberg", "links": {"DRUG": "CP"}}}}
    )
    routes = dose_routes(model)
    assert routes.names[4] == "PROL"
    assert routes.bolus == (1, 2, 3)
    data = frame(ID=[1, 1], TIME=[0.0, 1.0], EVID=[1, 0], AMT=[10.0, 0.0], CMT=[4, 0],
                 DV=[np.nan, 1.0])  # fmt: skip
    with pytest.raises(DatasetError, match="column CMT: not a compartment the model can dose"):
        simulate(model, data=data)


def test_events_per_subject_in_record_order() -> None:
    data = frame(
        ID=[5, 5, 5, 5, 2, 2],
        TIME=[0.0, 0.0, 12.0, 24.0, 0.0, 1.0],
        EVID=[0, 1, 0, 0, 1, 0],
        AMT=[0.0, 100.0, 0.0, 0.0, 60.0, 0.0],
        CMT=[0, 1, 0, 0, 2, 0],
        RATE=[0.0, 0.0, 0.0, 0.0, 20.0, 0.0],
        ADDL=[0, 2, 0, 0, 0, 0],
        II=[0.0, 12.0, 0.0, 0.0, 0.0, 0.0],
        DV=[1.0, np.nan, 2.0, 3.0, np.nan, 4.0],
    )
    ds = dataset_from_frame(data)
    ev = record_events(ds, dose_routes(build_model({"pk": "pk_1cmt"})))
    t = ev.table
    assert ev.subjects.tolist() == [5, 2]
    assert ev.row.tolist() == [0, 0, 0, 0, 1, 1]
    assert ev.row_subject.tolist() == [0, 1]
    assert ev.obs_row.tolist() == [0, -1, 1, 2, -1, 0]
    assert ev.n_obs == 3
    assert (ev.start, ev.end) == (0.0, 24.0 + END_MARGIN)
    # subject 5: pre-dose sample, dose, then each implied dose after the sample at its time;
    # the trough marker (ctrough) just before the last dose, after the sample there
    n0 = int(t.n[0])
    assert t.time[0, :n0].tolist() == [0.0, 0.0, 12.0, 12.0, 24.0, 24.0, 24.0]
    assert t.kind[0, :n0].tolist() == [OBS, ORAL, OBS, ORAL, OBS, MARK, ORAL]
    assert t.amount[0, :n0].tolist() == [0.0, 100.0, 1.0, 100.0, 2.0, 0.0, 100.0]
    # subject 2: a 3 h infusion (rate up, its pair the rate down), a sample during it
    n1 = int(t.n[1])
    assert t.time[1, :n1].tolist() == [0.0, 0.0, 1.0, 3.0]
    assert t.kind[1, :n1].tolist() == [MARK, RATE, OBS, RATE]
    assert t.amount[1, :n1].tolist() == [0.0, 20.0, 0.0, -20.0]
    assert t.pair[1, 1] == 3
    assert t.cmt is not None
    assert t.cmt[1, :n1].tolist() == [0, 1, 0, 1]  # the infusion's: central
    assert np.isinf(t.time[1, n1:]).all()  # padding
    assert t.n_slots == 0
    assert (t.slot == -1).all()


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (
            {"RATE": [-2.0, 0.0, 0.0], "CMT": [2, 0, 0]},
            "row 1, column RATE",
            "RATE -2 takes the infusion duration from D2: give D2 > 0",
        ),
        # the reader's check, given the model's dose compartments
        ({"CMT": [5, 0, 0]}, "row 1, column CMT", "not a compartment the model can dose"),
    ],
)
def test_unsupported_features_are_refused_naming_the_record(
    change: dict, where: str, message: str
) -> None:
    cols = {
        "ID": [1, 1, 1],
        "TIME": [0.0, 1.0, 2.0],
        "EVID": [1, 2, 0],
        "AMT": [100.0, 0.0, 0.0],
        "CMT": [1, 0, 0],
        "RATE": [0.0, 0.0, 0.0],
        "SS": [0, 0, 0],
        "II": [0.0, 0.0, 0.0],
        "DV": [np.nan, np.nan, 1.0],
    }
    cols.update(change)
    model = build_model({"pk": "pk_2cmt"})
    with pytest.raises(DatasetError) as err:
        simulate(model, data=pd.DataFrame(cols))
    assert any(p.where == where and message in p.message for p in err.value.problems), [
        str(p) for p in err.value.problems
    ]


def test_infusion_into_an_ode_state_other_than_the_iv_one_is_refused() -> None:
    """An ODE model takes infusions into its IV dosing state only (a PK macro into any
    of its compartments)."""
    data = frame(ID=[1, 1], TIME=[0.0, 2.0], EVID=[1, 0], AMT=[100.0, 0.0], CMT=[1, 0],
                 RATE=[10.0, 0.0], DV=[np.nan, 1.0])  # fmt: skip
    with pytest.raises(DatasetError) as err:
        simulate(build_model({"pk": "pk_mm_1cmt"}), data=data)
    (problem,) = err.value.problems
    assert problem.where == "row 1, column RATE"
    assert "IV dosing state only; infuse into 2 (CENT)" in problem.message
    out = simulate(build_model({"pk": "pk_2cmt"}), data=data)  # into the depot
    assert (out["solver_status"] == "ok").all()


def test_steady_state_is_refused_where_not_simulated() -> None:
    """Every SS record is simulated for a PK macro (here an oral dose with TLAG >= II:
    the doses still pending land after the record); a model with ODE states takes SS
    doses into its oral and IV compartments (tests/numerics/test_engine_ode_steady_state.py),
    not into another state."""
    data = frame(ID=[1, 1], TIME=[0.0, 2.0], EVID=[1, 0], AMT=[100.0, 0.0], CMT=[1, 0],
                 SS=[1, 0], II=[12.0, 0.0], DV=[np.nan, 1.0])  # fmt: skip
    mm = build_model({"pk": "pk_mm_1cmt"})
    assert unsupported_problems(dataset_from_frame(data), dose_routes(mm)) == []
    out = simulate(build_model({"pk": "pk_1cmt"}), pd.DataFrame({"TLAG": [12.0]}), data=data)
    assert (out["solver_status"] == "ok").all()
    pm = build_model(
        {"pk": "pk_2cmt", "components": {"r": {"model": "idr1", "links": {"DRUG": "CP"}}}}
    )
    into_peripheral = data.assign(CMT=[3, 0])  # a bolus may go there, a steady state not
    with pytest.raises(DatasetError) as err:
        simulate(pm, data=into_peripheral)
    (problem,) = err.value.problems
    assert problem.where == "row 1, column SS"
    assert "oral or IV dosing compartment only" in problem.message


def test_parameters_by_id_and_from_constant_columns() -> None:
    model = build_model({"pk": "pk_1cmt"})
    data = frame(ID=[1, 1, 2, 2], TIME=[0.0, 2.0, 0.0, 2.0], AMT=[100.0, 0, 100.0, 0],
                 CMT=[2, 2, 2, 2], DV=[np.nan, 1.0, np.nan, 1.0],
                 V1=[40.0, 40.0, 80.0, 80.0])  # fmt: skip
    out = simulate(model, pd.DataFrame({"ID": [2, 1], "CL": [4.0, 8.0]}), data=data)
    cp = out.loc[out["EVID"] == 0, "CP"].to_numpy()
    expected = [100 / 40 * np.exp(-8.0 / 40 * 2), 100 / 80 * np.exp(-4.0 / 80 * 2)]
    np.testing.assert_allclose(cp, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="no row for 1 of the dataset's 2 subjects"):
        simulate(model, pd.DataFrame({"ID": [2], "CL": [4.0]}), data=data)
    with pytest.raises(ValueError, match="give an ID column"):
        simulate(model, pd.DataFrame({"CL": [4.0, 5.0]}), data=data)


def test_resets_start_new_rows_and_changes_start_occasions() -> None:
    """EVID 4 (time going back) starts a new kernel row with a reset first; a change
    of a varying column starts an occasion: after the previous record (NOCB) or before
    its own record (LOCF)."""
    data = frame(
        ID=[1, 1, 1, 1, 1],
        TIME=[0.0, 2.0, 4.0, 0.0, 3.0],
        EVID=[1, 0, 0, 4, 0],
        AMT=[100.0, 0.0, 0.0, 50.0, 0.0],
        CMT=[2, 2, 2, 2, 2],
        DV=[np.nan, 1.0, 2.0, np.nan, 3.0],
        CL=[5.0, 5.0, 8.0, 8.0, 9.0],
    )
    ds = dataset_from_frame(data)
    routes = dose_routes(build_model({"pk": "pk_1cmt"}))
    nocb = record_events(ds, routes, varying=["CL"])
    assert nocb.row.tolist() == [0, 0, 0, 1, 1]
    assert nocb.row_subject.tolist() == [0, 0]
    assert nocb.occasion.tolist() == [0, 0, 1, 0, 1]
    assert nocb.occasion_record.tolist() == [[0, 2], [3, 4]]
    t = nocb.table
    assert t.n_occ == 2
    OCC, RESET = int(EventKind.OCC), int(EventKind.RESET)
    # row 0: (trough marker) dose, sample at 2, CL changes right after it (NOCB), sample at 4
    assert t.kind[0, : t.n[0]].tolist() == [MARK, BOLUS, OBS, OCC, OBS]
    assert t.time[0, : t.n[0]].tolist() == [0.0, 0.0, 2.0, 2.0, 4.0]
    # row 1: the reset, its dose, the change at the reset's time, the sample at 3
    assert t.kind[1, : t.n[1]].tolist() == [RESET, MARK, BOLUS, OCC, OBS]
    assert t.time[1, : t.n[1]].tolist() == [0.0, 0.0, 0.0, 0.0, 3.0]
    locf = record_events(ds, routes, varying=["CL"], interpolation="locf").table
    assert locf.kind[0, : locf.n[0]].tolist() == [MARK, BOLUS, OBS, OCC, OBS]
    assert locf.time[0, : locf.n[0]].tolist() == [0.0, 0.0, 2.0, 4.0, 4.0]
    with pytest.raises(ValueError, match="interpolation"):
        record_events(ds, routes, interpolation="linear")


def test_data_and_a_regimen_are_exclusive() -> None:
    model = build_model({"pk": "pk_1cmt"})
    data = frame(ID=[1, 1], TIME=[0.0, 1.0], AMT=[10.0, 0.0], DV=[np.nan, 1.0])
    with pytest.raises(ValueError, match="not both"):
        simulate(model, regimen={"route": "oral", "dose": 1}, data=data)


def test_simulate_checks_a_regimen_as_a_study_file() -> None:
    """A steady-state infusion longer than its interval was simulated without a word
    (and wrongly); now the study file's rule refuses it, as does a bad dose."""
    model = build_model({"pk": "pk_1cmt"})
    params = pd.DataFrame({"CL": [5.0]})
    bad = {"route": "iv_infusion", "dose": 100, "duration": 30, "interval": 24,
           "count": 3, "steady_state": True}  # fmt: skip
    with pytest.raises(ConfigError, match=r"regimen\.duration: a steady-state infusion must"):
        simulate(model, params, bad, [1.0])
    with pytest.raises(ConfigError, match=r"regimen\.dose"):
        simulate(model, params, {"route": "oral", "dose": -5}, [1.0])


def test_chunks_give_the_same_bits_and_problems_come_at_once() -> None:
    """Subjects simulated one at a time or all together give identical results (one
    span for all); problems of subjects in different chunks (an infusion into the
    depot over a modelled duration without D1, a modelled rate) are reported together,
    before anything is simulated."""
    model = build_model({"pk": "pk_2cmt"})
    rng = np.random.default_rng(3)
    frames = []
    for i in range(1, 8):
        t_obs = np.sort(rng.uniform(0.5, 30.0, 4)).round(2)
        frames.append(
            pd.DataFrame(
                {"ID": i, "TIME": [0.0, 12.0, *t_obs], "EVID": [1, 1, 0, 0, 0, 0],
                 "AMT": [100.0 * i, 50.0, 0, 0, 0, 0], "CMT": [1, 2, 0, 0, 0, 0],
                 "DV": [np.nan, np.nan, 1.0, 2.0, 3.0, 4.0]}
            ).sort_values("TIME", kind="stable")
        )  # fmt: skip
    data = pd.concat(frames, ignore_index=True)
    params = pd.DataFrame({"ID": range(1, 8), "CL": rng.uniform(2.0, 9.0, 7)})
    whole = simulate(model, params, data=data)
    ones = simulate_records(model, data, params, chunk_size=1)
    pd.testing.assert_frame_equal(whole, ones)
    assert whole["CP"].notna().sum() == 28
    bad = data.copy()
    bad["RATE"] = 0.0
    bad.loc[(bad["ID"] == 1) & (bad["EVID"] == 1) & (bad["TIME"] == 0.0), "RATE"] = -2
    bad.loc[(bad["ID"] == 7) & (bad["EVID"] == 1) & (bad["TIME"] == 12.0), "RATE"] = -1
    with pytest.raises(DatasetError) as err:
        simulate_records(model, bad, params, chunk_size=1)
    assert len(err.value.problems) == 2
