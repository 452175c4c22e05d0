"""vtrial on the benchmark workload, through its public engine API.

Run as a script, it times the first ``run_kernel`` call of a fresh process (the
compile probe of ``run.py``): with an empty ``VTRIAL_CACHE_DIR`` that is code
generation plus numba compilation; with a populated one, loading from numba's
on-disk cache.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import workload as W

#: the workload's model: library pk_2cmt + friberg, typical values of the issue
MODEL_SECTION = {
    "pk": "pk_2cmt",
    "components": {"anc": {"model": "friberg", "links": {"DRUG": "CP"}}},
    "parameters": {k: {"value": v} for k, v in W.TYPICAL.items()},
}
REGIMEN = {"route": "oral", "dose": W.DOSE, "interval": W.INTERVAL, "count": W.N_DOSES}
#: the "rules" variant: the protocol re-decides before every dose (issue: adaptive
#: dosing), holding while ANC < 1.5 and reducing one level after grade >= 3
MODIFICATION = {
    "decide_at": "doses",
    "levels": [W.DOSE / 2, W.DOSE * 3 / 4, W.DOSE],
    "rules": [
        {"when": "ANC < 1.5", "action": "hold", "recheck": 24, "max_hold": 336},
        {"when": "grade_neutropenia >= 3", "action": "reduce"},
    ],
}


def rules_study() -> Any:
    """A one-arm study of the workload with :data:`MODIFICATION` (for its rules)."""
    from vtrial.study.config import study_from_dict

    return study_from_dict(
        {
            "study": {"name": "bench-rules", "seed": W.SEED},
            "population": {"size": 1},
            "model": MODEL_SECTION,
            "arms": [{"name": "rules", "regimen": REGIMEN, "modification": MODIFICATION}],
            "simulation": {"end": float(W.GRID[-1]), "grid": 1.0},
            "adverse_events": {
                "neutropenia": {
                    "output": "ANC",
                    "grading": "ctcae_v5_neutrophil_count_decreased",
                }
            },
            "endpoints": {},
            "outputs": {"timecourse": {"every": 24, "outputs": ["CP"]}},
        },
        source="benchmarks/engine_vtrial.py",
    )


class VtrialEngine:
    """``vtrial.engine.host.run_kernel`` with hourly storage of CP and ANC (= Circ)."""

    name = "vtrial"

    def __init__(
        self,
        rtol: float | None = None,
        atol: float | None = None,
        threads: int = 2,
        rules: bool = False,
    ):
        from vtrial import build_model
        from vtrial.engine.host import Tolerances
        from vtrial.protocol.dosing import event_table, regimen_phases

        self.model = build_model(MODEL_SECTION)
        self.events = event_table([regimen_phases(REGIMEN)])
        self.rules = None
        if rules:
            study = rules_study()
            self.rules = study.rule_program
            self.events = study.events()
        default = Tolerances()
        self.tolerances = Tolerances(
            rtol=default.rtol if rtol is None else rtol,
            atol=default.atol if atol is None else atol,
        )
        self.threads = threads
        self.anc = list(self.model.outputs).index("ANC")
        self.setting = f"rtol={self.tolerances.rtol:g} atol={self.tolerances.atol:g}"
        if rules:
            self.setting += " + rules"
        self.nsteps: np.ndarray | None = None

    def run(self, params: Mapping[str, np.ndarray]) -> W.Outputs:
        from vtrial.engine.host import run_kernel

        n = len(next(iter(params.values())))
        res = run_kernel(
            self.model,
            {k: params[k] for k in W.IIV},
            n=n,
            events=self.events,
            arm=np.zeros(n, dtype=np.int64),
            dose_scale=np.ones((n, 3)),
            grid=W.GRID,
            store_times=W.GRID,
            store_outputs=["CP", "ANC"],
            tolerances=self.tolerances,
            threads=self.threads,
            rules=self.rules,
            ledger=self.rules is not None,
        )
        self.nsteps = res.nsteps
        return W.Outputs(
            cp=res.store[:, :, 0],
            circ=res.store[:, :, 1],
            cmax=res.pk[:, 0],
            auc=res.pk[:, 2],
            nadir=res.omin[:, self.anc],
            ok=res.status == 0,
            cmax_kind="exact",
        )

    def close(self) -> None:
        pass


def compile_probe() -> dict[str, float]:
    """Seconds to import vtrial and for the first (2-patient) ``run_kernel`` call."""
    t0 = time.perf_counter()
    eng = VtrialEngine()
    t1 = time.perf_counter()
    eng.run(W.patients(2))
    t2 = time.perf_counter()
    return {"import_build_s": t1 - t0, "first_call_s": t2 - t1}


if __name__ == "__main__":
    json.dump(compile_probe(), sys.stdout)
