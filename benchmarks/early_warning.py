"""Score the early neutropenia warning on a virtual cohort
(:func:`vtrial.run.warning.evaluate_warning`).

``python benchmarks/early_warning.py [--n N] [--seed S] [--draws D] [--proposals M]
[--every H] [--threshold P] [--until T] [--study PATH] [--csv PATH]``

Each of ``N`` virtual patients (default 300) has the recorded cycle-1 history of a
subject of ``config/studies/neutropenia_warning.yaml`` (dose, BSA, sampling times of
the baseline, day-8 and day-15 counts; patient ``i`` copies subject ``i mod 48``),
random effects drawn from the study's OMEGA and counts observed with its 15 %
proportional error, all keyed by the seed. Its twin (MAP, then ``D`` SIR draws from
``M`` proposals) gives P(grade >= 3 neutropenia) over cycle 2 at the planned dose; the
truth is the grade of its true worst count over cycle 2 (its true random effects, no
residual error, the same grid of ``H`` hours). The script prints the prevalence, the
AUROC (Mann-Whitney) and the Brier score with the Brier score of predicting the
prevalence, the AUROC of the lowest observed count alone, the warnings
(P > threshold) against the truth, and the calibration table (deciles of predicted
risk). ``--until T`` drops the counts after ``T`` h (``--until 200``: baseline and day
8 only). ``--csv`` writes the per-patient table.

The model that simulates the truth is the twin's: the figures say what three noisy
counts tell about the next nadir when the model is right, not how right the model is.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from vtrial.run.warning import evaluate_warning
from vtrial.study.config import load_study

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "config" / "studies" / "neutropenia_warning.yaml"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="virtual patients")
    ap.add_argument("--seed", type=int, default=20261216, help="seed of the virtual cohort")
    ap.add_argument("--draws", type=int, default=500, help="posterior draws (SIR)")
    ap.add_argument("--proposals", type=int, default=2000, help="SIR proposals")
    ap.add_argument("--every", type=float, default=6.0, help="forecast grid (h)")
    ap.add_argument("--threshold", type=float, default=0.3, help="warn above this P")
    ap.add_argument("--until", type=float, default=None, help="drop counts after (h)")
    ap.add_argument("--study", type=Path, default=STUDY)
    ap.add_argument("--csv", type=Path, default=None, help="write the per-patient table")
    args = ap.parse_args(argv)

    study = load_study(args.study)
    t0 = time.perf_counter()
    ev = evaluate_warning(
        study,
        args.n,
        seed=args.seed,
        observe_until=args.until,
        n_draws=args.draws,
        n_proposal=args.proposals,
        every=args.every,
        threshold=args.threshold,
    )
    elapsed = time.perf_counter() - t0
    pt = ev.patients
    print(f"study: {args.study.name}; {args.n} virtual patients, seed {args.seed}")
    print(
        f"twin: MAP + SIR {args.draws} of {args.proposals}; forecast grid {args.every:g} h; "
        f"counts {'all' if args.until is None else f'up to {args.until:g} h'}"
    )
    print(f"time: {elapsed:.0f} s ({elapsed / args.n:.2f} s per patient)")
    print(f"patients without a prediction: {ev.n_failed}")
    flagged = int((pt["status"] != "ok").sum())
    print(f"patients whose status is not ok (low ESS, ...): {flagged}")
    print(f"prevalence of true grade >= 3 in cycle 2: {ev.prevalence:.3f}")
    print(f"AUROC: {ev.auroc:.3f}  (lowest observed count alone: {ev.auroc_worst_observed:.3f})")
    skill = 1.0 - ev.brier / ev.brier_reference
    print(
        f"Brier: {ev.brier:.4f}  (predicting the prevalence: {ev.brier_reference:.4f}; "
        f"skill {skill:.3f})"
    )
    w = ev.warn
    print(
        f"warnings (P > {args.threshold:g}): {w['warned']:.3f} of patients; sensitivity "
        f"{w['sensitivity']:.3f}, specificity {w['specificity']:.3f}, PPV {w['ppv']:.3f}, "
        f"NPV {w['npv']:.3f}"
    )
    print("calibration (deciles of predicted risk):")
    with pd.option_context("display.width", 120, "display.float_format", "{:.3f}".format):
        print(ev.calibration.to_string(index=False))
    if args.csv is not None:
        pt.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
