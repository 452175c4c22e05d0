"""NONMEM-style dataset reader: conventions, records and every problem reported at once."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vtrial.data.dataset import (
    STANDARD_ITEMS,
    Dataset,
    check_dataset,
    dataset_from_frame,
    read_dataset,
)
from vtrial.errors import DatasetError

HEADER = "id,time,evid,amt,cmt,rate,ss,ii,addl,mdv,conc,wt,sex"
#: two subjects: an SS infusion with ADDL, a comment record, a time-varying weight,
#: '.' in the NONMEM way, an observation after a reset at an earlier time
GOOD = [
    HEADER + ",C",
    "1,0,1,100,1,0,0,24,2,1,.,70,F,",
    "1,0,0,.,2,.,.,.,.,0,0,70,F,",
    "1,2,0,.,2,.,.,.,.,0,3.2,70,F,",
    "1,2,0,.,2,.,.,.,.,0,3.3,70,F,C",  # comment record: left out
    "1,48,2,.,.,.,.,.,.,1,.,72.5,F,",
    "1,50,0,.,2,.,.,.,.,0,1.1,72.5,F,",
    "2,0,1,500,2,250,1,12,0,1,.,81,M,",
    "2,11.5,0,.,2,.,.,.,.,0,9.5,81,M,",
    "2,12,3,.,.,.,.,.,.,1,.,81,M,",
    "2,1,4,200,2,0,0,0,0,1,.,81,M,",  # reset and dose: time may go back
    "2,3,0,.,2,.,.,.,.,0,2.0,81,M,",
    "2,4,1,0,2,10,1,0,0,1,.,81,M,",  # constant infusion at steady state
]


def _write(tmp_path: Path, lines: list[str], name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _problems(tmp_path: Path, lines: list[str], **kw: object) -> list[str]:
    path = _write(tmp_path, lines)
    dataset, problems = check_dataset(path, columns={"DV": "conc"}, **kw)  # type: ignore[arg-type]
    assert dataset is None
    assert problems
    return [str(p) for p in problems]


def test_reads_records_in_nonmem_conventions(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    ds = read_dataset(path, columns={"dv": "CONC"})
    r = ds.records
    assert isinstance(ds, Dataset)
    assert list(r.columns) == ["REC", *STANDARD_ITEMS, "wt", "sex"]
    assert r["REC"].tolist() == [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12]  # row 4: comment
    assert r["ID"].dtype == np.int64
    assert r["ID"].tolist() == [1] * 5 + [2] * 6
    assert r["EVID"].tolist() == [1, 0, 0, 2, 0, 1, 0, 3, 4, 0, 1]
    assert r["AMT"].tolist() == [100, 0, 0, 0, 0, 500, 0, 0, 200, 0, 0]  # '.' is 0
    assert r["RATE"].tolist()[5] == 250.0
    assert r["SS"].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    assert np.isnan(r["DV"].iloc[0])
    assert r["DV"].iloc[2] == 3.2
    assert np.isnan(r["LLOQ"]).all()
    assert (r["BLQ"] == 0).all()
    assert (r["DVID"] == 1).all()
    assert ds.covariates == ("wt", "sex")
    assert ds.varying == ("wt",)
    assert r["sex"].tolist() == ["F"] * 5 + ["M"] * 6
    assert ds.columns["DV"] == "conc"
    assert ds.columns["ID"] == "id"
    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ds.summary() == {
        "dataset": str(path),
        "sha256": ds.sha256,
        "subjects": 2,
        "records": 11,
        "doses": 4,
        "observations": 5,
        "covariates": ["wt", "sex"],
        "time_varying": ["wt"],
    }


def test_evid_and_mdv_are_derived_without_their_columns(tmp_path: Path) -> None:
    lines = ["ID,TIME,AMT,RATE,DV", "1,0,100,0,.", "1,1,.,.,4.5", "1,2,.,.,.", "1,3,50,-2,."]
    ds = read_dataset(_write(tmp_path, lines))
    # a dose (AMT > 0 or RATE != 0), an observation (a DV), an other-type event
    assert ds.records["EVID"].tolist() == [1, 0, 2, 1]
    assert ds.records["MDV"].tolist() == [1, 0, 1, 1]


def test_parquet_and_frame_give_the_same_records(tmp_path: Path) -> None:
    csv = read_dataset(_write(tmp_path, GOOD), columns={"DV": "conc"})
    frame = pd.read_csv(_write(tmp_path, GOOD), dtype=str, keep_default_na=False)
    via_frame = dataset_from_frame(frame, columns={"DV": "conc"})
    pd.testing.assert_frame_equal(via_frame.records, csv.records)
    numeric = frame.drop(columns=["sex", "C"]).replace(".", np.nan).astype(float)
    numeric["sex"] = frame["sex"]
    numeric["C"] = frame["C"]
    numeric.to_parquet(tmp_path / "data.parquet")
    via_parquet = read_dataset(tmp_path / "data.parquet", columns={"DV": "conc"})
    pd.testing.assert_frame_equal(via_parquet.records, csv.records)


def test_text_ids_and_declared_covariates(tmp_path: Path) -> None:
    lines = [
        "USUBJID,TIME,AMT,DV,WT,CRCL",
        "A-01,0,10,.,70,90",
        "A-01,1,.,2,70,91",
        "B-7,0,10,.,60,80",
    ]
    ds = read_dataset(_write(tmp_path, lines), columns={"ID": "usubjid"}, covariates=["crcl"])
    assert ds.records["ID"].tolist() == ["A-01", "A-01", "B-7"]
    assert ds.covariates == ("CRCL",)
    assert "WT" not in ds.records
    assert ds.varying == ("CRCL",)


def test_log_names_the_hash_not_the_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="vtrial.data.dataset"):
        ds = read_dataset(_write(tmp_path, GOOD), columns={"DV": "conc"})
    text = caplog.text
    assert ds.sha256[:16] in text
    assert "2 subjects" in text
    assert "3.2" not in text
    assert "72.5" not in text


# ---- problems: file, row (line), column, rule, value


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # time going backwards within an ID
        (
            "1,1,0,.,2,.,.,.,.,0,5,70,F",
            "row 3 (line 4), column time: time goes backwards within an ID (previous record "
            "at 2; only a reset, EVID 3 or 4, may go back), got '1'",
        ),
        # EVID 1 with AMT 0 and no rate
        (
            "1,3,1,0,1,0,0,0,0,1,.,70,F",
            "row 3 (line 4), column amt: a dose record (EVID 1 or 4) with AMT 0 and no RATE "
            "gives nothing, got '0'",
        ),
        # SS with II 0 and no rate
        (
            "1,3,1,50,1,0,1,0,0,1,.,70,F",
            "row 3 (line 4), column ss: steady state (SS 1 or 2) needs II > 0, unless it is a "
            "constant infusion (SS=1, II=0, AMT 0, RATE > 0), got '1'",
        ),
        # text in a numeric column
        (
            "1,3,0,.,2,.,.,.,.,0,high,70,F",
            "row 3 (line 4), column conc: must be a number, got 'high'",
        ),
        # a missing ID
        ("  ,3,0,.,2,.,.,.,.,0,1,70,F", "row 3 (line 4), column id: missing ID, got '  '"),
        # a duplicate record
        (
            "1,2,0,.,2,.,.,.,.,0,3.2,70,F",
            "row 3 (line 4), column id: duplicate record: equal in every column to row 2, got '1'",
        ),
        # EVID out of range
        ("1,3,5,.,2,.,.,.,.,1,.,70,F", "row 3 (line 4), column evid: must be 0-4, got '5'"),
        # a dose marked as an observation
        (
            "1,3,1,10,1,0,0,0,0,0,.,70,F",
            "row 3 (line 4), column mdv: must be 1 on a record that is not an observation "
            "(EVID 1-4), got '0'",
        ),
        # ADDL without II
        (
            "1,3,1,10,1,0,0,0,3,1,.,70,F",
            "row 3 (line 4), column addl: additional doses (ADDL > 0) need II > 0, got '3'",
        ),
        # AMT on an observation
        (
            "1,3,0,10,2,.,.,.,.,0,1,70,F",
            "row 3 (line 4), column amt: only a dose record (EVID 1 or 4) carries AMT; this "
            "record is not one, got '10'",
        ),
        # RATE neither >= 0 nor -1/-2
        (
            "1,3,1,10,1,-3,0,0,0,1,.,70,F",
            "row 3 (line 4), column rate: must be >= 0, -1 or -2, got '-3'",
        ),
        # an infusion with AMT 0 that is not a constant infusion
        (
            "1,3,1,0,1,5,0,0,0,1,.,70,F",
            "row 3 (line 4), column rate: an infusion with AMT 0 is allowed only at steady "
            "state (SS=1, II=0: a constant infusion), got '5'",
        ),
        # observation without a DV
        (
            "1,3,0,.,2,.,.,.,.,0,.,70,F",
            "row 3 (line 4), column conc: an observation record (EVID 0, MDV 0) needs a DV, "
            "got '.'",
        ),
        # a whole-number item with a fraction
        (
            "1,3,1,10,1.5,0,0,0,0,1,.,70,F",
            "row 3 (line 4), column cmt: must be a whole number, got '1.5'",
        ),
        # a missing covariate
        (
            "1,3,0,.,2,.,.,.,.,0,1,,F",
            "row 3 (line 4), column wt: missing covariate value (needed on every record), got ''",
        ),
        # missing TIME
        (
            "1,.,0,.,2,.,.,.,.,0,1,70,F",
            "row 3 (line 4), column time: missing value (required on every record), got '.'",
        ),
    ],
)
def test_each_rule_names_file_row_line_column_and_value(
    tmp_path: Path, row: str, expected: str
) -> None:
    lines = [HEADER, "1,0,1,100,1,0,0,24,0,1,.,70,F", "1,2,0,.,2,.,.,.,.,0,3.2,70,F", row]
    problems = _problems(tmp_path, lines)
    assert problems == [f"{tmp_path / 'data.csv'}: {expected}"]


def test_cmt_must_be_dosable_in_the_model(tmp_path: Path) -> None:
    lines = [HEADER, "1,0,1,100,3,0,0,0,0,1,.,70,F", "1,1,1,100,0,0,0,0,0,1,.,70,F"]
    problems = _problems(tmp_path, lines, dose_compartments=(1, 2))
    assert problems == [
        f"{tmp_path / 'data.csv'}: row 1 (line 2), column cmt: not a compartment the model "
        "can dose (allowed: [0, 1, 2]), got '3'"
    ]


def test_ids_must_be_contiguous(tmp_path: Path) -> None:
    lines = [
        HEADER,
        "1,0,1,100,1,0,0,0,0,1,.,70,F",
        "2,0,1,100,1,0,0,0,0,1,.,70,F",
        "1,5,0,.,2,.,.,.,.,0,1,70,F",
    ]
    problems = _problems(tmp_path, lines)
    assert problems == [
        f"{tmp_path / 'data.csv'}: row 3 (line 4), column id: the records of one ID must be "
        "contiguous; this ID's records also start at row 1, got '1'"
    ]


def test_every_problem_at_once_and_capped_per_rule(tmp_path: Path) -> None:
    bad = [f"1,{t},0,.,2,.,.,.,.,0,x{t},70,F" for t in range(1, 26)]
    lines = [HEADER, "1,0,1,100,1,0,0,24,0,1,.,70,F", *bad, "1,30,7,.,2,.,.,.,.,1,.,70,F"]
    path = _write(tmp_path, lines)
    with pytest.raises(DatasetError) as err:
        read_dataset(path, columns={"DV": "conc"})
    problems = [str(p) for p in err.value.problems]
    # 20 listed for the text cells, a count of the other 5, and the EVID problem
    assert len(problems) == 22
    assert problems[0].endswith("column evid: must be 0-4, got '7'")
    assert problems[-1] == (
        f"{path}: column conc: 5 more row(s) with: must be a number (not listed; rows 22 to 26)"
    )
    assert str(err.value).startswith("22 problems found:")


def test_header_and_mapping_problems(tmp_path: Path) -> None:
    path = _write(tmp_path, ["SUBJ,Time,time,AMT", "1,0,0,1"])
    _, problems = check_dataset(path, columns={"DOSE": "AMT", "DV": "conc"}, source="study.yaml")
    text = [str(p) for p in problems]
    assert (
        "study.yaml: header: columns ['Time', 'time'] differ only in case ('TIME'): rename one"
        in text
    )
    assert (
        "study.yaml: population.dataset.columns.DOSE: not a data item " + str(list(STANDARD_ITEMS))
        in text
    )
    assert (
        "study.yaml: population.dataset.columns.DV: not a column of the dataset, got 'conc'" in text
    )
    assert any("no ID column (columns: ['SUBJ', 'Time', 'time', 'AMT'])" in t for t in text)


def test_unreadable_file_and_empty_dataset(tmp_path: Path) -> None:
    _, problems = check_dataset(tmp_path / "nope.csv", source="study.yaml")
    assert [str(p) for p in problems] == [
        f"study.yaml: population.dataset: cannot read the dataset {tmp_path / 'nope.csv'}: "
        "No such file or directory"
    ]
    _, problems = check_dataset(_write(tmp_path, ["ID,TIME"]))
    assert [p.message for p in problems] == ["the dataset has no records"]


def test_frame_problems_have_rows_without_lines() -> None:
    frame = pd.DataFrame({"ID": [1, 1], "TIME": [0.0, -1.0], "AMT": [10.0, 0.0]})
    with pytest.raises(DatasetError) as err:
        dataset_from_frame(frame)
    assert [str(p) for p in err.value.problems] == [
        "<DataFrame>: row 2, column TIME: time goes backwards within an ID (previous record "
        "at 0; only a reset, EVID 3 or 4, may go back), got -1.0"
    ]


@pytest.mark.parametrize(
    ("name", "sep"), [("data.dat", "  "), ("data.txt", ";"), ("data.tsv", "\t")]
)
def test_space_semicolon_and_tab_separated_files(tmp_path: Path, name: str, sep: str) -> None:
    rows = [
        ["ID", "TIME", "AMT", "DV", "WT"],
        ["1", "0", "100", ".", "70"],
        ["1", "2", ".", "3.5", "71"],
    ]
    path = _write(tmp_path, [sep.join(r) for r in rows], name)
    ds = read_dataset(path)
    assert ds.records["EVID"].tolist() == [1, 0]
    assert ds.records["DV"].iloc[1] == 3.5
    assert ds.covariates == ("WT",)


def test_ids_are_read_as_the_fit_readers_read_them(tmp_path: Path) -> None:
    """Whole numbers -> int64, other numbers -> float64, anything else -> text (one rule,
    vtrial.data.tables.subject_ids, for datasets, .phi and Monolix tables)."""
    lines = ["ID,TIME,AMT", "1.5,0,10", " 1.5 ,1,.", "2,0,10"]
    ids = read_dataset(_write(tmp_path, lines)).records["ID"]
    assert ids.dtype == np.float64
    assert ids.tolist() == [1.5, 1.5, 2.0]
    lines = ["ID,TIME,AMT", "01,0,10", "1,1,.", "2,0,10"]
    ids = read_dataset(_write(tmp_path, lines)).records["ID"]
    assert ids.dtype == np.int64
    assert ids.tolist() == [1, 1, 2]


def test_duplicate_records_with_a_missing_cell_are_reported() -> None:
    """Two equal records whose rows hold a missing cell (NaN DV on the dose) are found as
    duplicates, not a crash: pandas' str dtype keeps NaN through astype(str)."""
    frame = pd.DataFrame(
        {"ID": 1, "TIME": [0.0, 0.0, 1.0], "AMT": [100.0, 100.0, 0.0], "DV": [None, None, 2.0]}
    )
    with pytest.raises(DatasetError) as err:
        dataset_from_frame(frame)
    (problem,) = err.value.problems
    assert problem.where == "row 2, column ID"
    assert problem.message.startswith("duplicate record: equal in every column to row 1")
