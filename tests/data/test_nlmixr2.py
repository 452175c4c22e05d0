"""Readers of an nlmixr2 fit's CSV exports (:mod:`vtrial.data.nlmixr2`) and of named
square matrices (nlmixr2's ``omega.csv``/``cov.csv``, Monolix's covariance of the
estimates). Every file is synthetic, written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vtrial.data.monolix import read_monolix_covariance
from vtrial.data.nlmixr2 import read_nlmixr2_fixef, read_nlmixr2_matrix, read_nlmixr2_ranef
from vtrial.errors import DatasetError


def _problems(fn, path: Path) -> list[str]:  # type: ignore[no-untyped-def]
    with pytest.raises(DatasetError) as info:
        fn(path)
    return [str(p) for p in info.value.problems]


def test_fixef_with_name_and_value_columns_or_r_row_names(tmp_path: Path) -> None:
    a = tmp_path / "fixef.csv"
    a.write_text('"name","value"\n"tcl",1.5\n"add.sd",0.25\n')
    assert dict(read_nlmixr2_fixef(a).values) == {"tcl": 1.5, "add.sd": 0.25}
    b = tmp_path / "fixef_rownames.csv"
    b.write_text('"","x"\n"tcl",1.5\n"add.sd",0.25\n')  # write.csv(fixef(fit), ...)
    assert dict(read_nlmixr2_fixef(b).values) == {"tcl": 1.5, "add.sd": 0.25}


def test_fixef_problems_name_the_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "fixef.csv"
    p.write_text('"name","value"\n"tcl",1.5\n"tv",abc\n"tcl",2\n')
    found = _problems(read_nlmixr2_fixef, p)
    assert any("row 2 (line 3), column value: must be a number, got 'abc'" in s for s in found)
    assert any("row 3 (line 4), column name: a name may appear once, got 'tcl'" in s for s in found)
    p.write_text("a,b,c\n1,2,3\n")
    assert any("needs a 'name' and a 'value' column" in s for s in _problems(read_nlmixr2_fixef, p))


def test_named_matrices_with_and_without_a_header(tmp_path: Path) -> None:
    r = tmp_path / "omega.csv"
    r.write_text('"","eta.cl","eta.v"\n"eta.cl",0.1,0.02\n"eta.v",0.02,0.2\n')
    m = read_nlmixr2_matrix(r)
    assert m.names == ("eta.cl", "eta.v")
    np.testing.assert_array_equal(m.matrix, [[0.1, 0.02], [0.02, 0.2]])
    mlx = tmp_path / "covarianceEstimatesSA.txt"
    mlx.write_text("Cl_pop,0.01,0.002\nomega_Cl,0.002,0.0004\n")
    m = read_monolix_covariance(mlx)
    assert m.names == ("Cl_pop", "omega_Cl")
    assert m.matrix[1, 0] == 0.002


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"","a","b"\n"a",1,0.5\n"b",0.4,1\n', "must be symmetric: (a, b) is 0.5 and (b, a) 0.4"),
        ('"","a","c"\n"a",1,0\n"b",0,1\n', "line 1, column 3: the column names must be the row"),
        ('"","a","b"\n"a",1,0\n', "must be a square matrix"),
        ('"","a","b"\n"a",1,0\n"b",0,x1\n', "row 2 (line 3), column b: must be a number, got 'x1'"),
        ('"","a","b"\n"a",1,0\n"a",0,1\n', "a name may appear once, got 'a' again"),
    ],
    ids=["asymmetric", "header", "not square", "cell", "duplicate"],
)
def test_named_matrix_problems(tmp_path: Path, text: str, expected: str) -> None:
    p = tmp_path / "m.csv"
    p.write_text(text)
    found = _problems(read_nlmixr2_matrix, p)
    assert any(expected in s for s in found), found


def test_ranef_by_id_and_its_problems(tmp_path: Path) -> None:
    p = tmp_path / "ranef.csv"
    p.write_text('"","ID","eta.cl"\n"1",1,0.1\n"2",7,-0.2\n')  # R's row names ignored
    r = read_nlmixr2_ranef(p)
    assert list(r.etas.columns) == ["eta.cl"]
    assert list(r.etas.index) == [1, 7]
    p.write_text('"ID","eta.cl"\n1,0.1\n1,-0.2\n2,\n')
    found = _problems(read_nlmixr2_ranef, p)
    assert any("row 2 (line 3), column ID: an ID may appear once" in s for s in found)
    assert any("row 3 (line 4), column eta.cl: missing value" in s for s in found)
    p.write_text('"subject","eta.cl"\n1,0.1\n')
    assert any("no 'ID' column" in s for s in _problems(read_nlmixr2_ranef, p))
