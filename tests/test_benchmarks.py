"""The benchmark harness runs end to end and reports what it promises (no timing checks).

``benchmarks/run.py --quick`` with vtrial and the stacked RK45 peer, in a subprocess
(the harness starts its own worker processes and compiles vtrial's kernel into a
temporary cache); the JSON must hold every engine row with finite throughput and
error fields, and vtrial must meet its accuracy target (worst error <= 1e-4).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vtrial.engine.codegen import cache_dir

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"
ERROR_KEYS = ("cmax", "auc", "nadir", "traj", "worst")

# end to end (benchmark scripts in subprocesses, one through Snakemake): make test-workflow
pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.workflow]


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--quick",
            "--engines",
            "vtrial,rk45",
            "--json",
            str(out),
            # the kernels the other tests compile (the workload's model is theirs)
            "--kernel-cache",
            str(cache_dir().parent),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,  # a guard against a hang, not a performance check
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "patients/s" in proc.stdout  # the table was printed
    return dict(json.loads(out.read_text()))


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def positive(x: Any) -> bool:
    return finite(x) and x > 0


def test_machine_info(quick_results: dict[str, Any]) -> None:
    m = quick_results["machine"]
    assert m["cpu_count"] >= 1
    assert m["platform"]
    assert m["versions"]["numpy"]
    assert m["versions"]["numba"]
    assert quick_results["quick"] is True
    assert quick_results["reference"]["patients"] >= 1


def test_engine_rows(quick_results: dict[str, Any]) -> None:
    rows = quick_results["engines"]
    assert {r["engine"] for r in rows} == {"vtrial", "rk45"}
    assert {r.get("variant") for r in rows if r["engine"] == "vtrial"} == {
        "default",
        "loose",
        "rules",
    }
    for r in rows:
        assert "error" not in r, r
        assert "unavailable" not in r, r
        assert positive(r["patients_per_s"])
        assert positive(r["ratio_vs_vtrial"])
        assert positive(r["peak_mb"])
        assert r["failures"] == 0
        assert len(r["times_s"]) == quick_results["repeats"]
        if r.get("variant") == "rules":  # the rules change the doses: no reference errors
            assert "errors" not in r
            assert r["setting"].endswith("+ rules")
            continue
        assert r["subset_failures"] == 0
        for key in ERROR_KEYS:
            assert finite(r["errors"][key]), (r["engine"], key)
    rk45 = next(r for r in rows if r["engine"] == "rk45")
    assert rk45["cmax_kind"] == "grid"


def test_vtrial_accuracy_and_compile(quick_results: dict[str, Any]) -> None:
    rows = [
        r
        for r in quick_results["engines"]
        if r["engine"] == "vtrial" and r.get("variant") != "rules"
    ]
    for r in rows:
        assert r["cmax_kind"] == "exact"
        assert r["errors"]["worst"] <= 1e-4, r
    default = next(r for r in rows if r["variant"] == "default")
    assert default["setting"].startswith("rtol=")
    assert math.isclose(default["ratio_vs_vtrial"], 1.0)
    comp = quick_results["vtrial_compile"]
    assert finite(comp["empty_cache"]["first_call_s"])
    assert finite(comp["cached"]["first_call_s"])


def test_scaling_section(quick_results: dict[str, Any]) -> None:
    scaling = quick_results["scaling"]
    assert [s["patients"] for s in scaling] == sorted(s["patients"] for s in scaling)
    assert len(scaling) >= 2
    for s in scaling:
        assert positive(s["median_s"])
        assert positive(s["patients_per_s"])
        assert positive(s["peak_mb"])
        assert s["failures"] == 0


def test_unknown_engine_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, str(RUN), "--engines", "vtrial,nosuch"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "nosuch" in proc.stderr


def test_dataset_reader_benchmark_runs() -> None:
    """``benchmarks/dataset_reader.py`` generates its dataset, reads it and simulates it
    as recorded (no timing)."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "dataset_reader.py"),
            "--subjects",
            "30",
            "--no-workflow",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dataset reader: 30 subjects, 600 records checked in" in proc.stdout
    assert "dataset simulation (pk_2cmt, 20 occasions each): 30 subjects in" in proc.stdout


def test_dataset_study_benchmark_runs_the_workflow() -> None:
    """The workflow case of ``benchmarks/dataset_reader.py``: a dataset study of 60
    subjects through Snakemake, with the engine peer (no timing; one size, to keep
    ``make test`` short: the linearity line needs two)."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "dataset_reader.py"),
            "--workflow-only",
            "--workflow",
            "60",
            "--warmup",
            "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "dataset study through the workflow (snakemake --cores 2" in proc.stdout
    assert re.search(r"^\s+60\s+\S+\s+\S+\s+[\d.]+", proc.stdout, re.M), proc.stdout
    assert "linearity" not in proc.stdout
    assert "stages at 60 subjects (seconds / peak MB): snakemake " in proc.stdout
