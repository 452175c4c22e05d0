"""Command line: ``vtrial validate|models|dataset|run|verify|describe|export|twin``.

- ``vtrial validate STUDY``: every problem of a study file at once (with
  ``outputs.twins``, also what keeps its twins from being estimated); exit 1 if any.
- ``vtrial models``: the built-in model library with references.
- ``vtrial dataset PATH [--column ITEM=COLUMN ...] [--simulate MODEL --out FILE
  [--parameters CSV] [--interpolation nocb|locf]]``: check a NONMEM-style dataset
  (:mod:`vtrial.data.dataset`), every problem at once, and optionally simulate every
  subject as recorded (``vtrial.simulate(model, data=...)``); prints counts and the file's
  SHA-256, never its records; exit 1 if any problem.
- ``vtrial run STUDY [--cores N] [snakemake args...]``: run the workflow on a study.
- ``vtrial verify RESULTS_DIR [--recompute [--shards K | --all]]``: check every
  output against ``manifest.json`` (row counts and content hashes), and recompute
  ``K`` shards (or all) from the recorded study (:mod:`vtrial.run.recompute`); exit 1
  naming each difference.
- ``vtrial describe RESULTS_DIR``: the key numbers of a finished study.
- ``vtrial export nonmem RESULTS_DIR [--out FILE] [--replicate R]``: doses and
  observations as a NONMEM/Monolix-style dataset (:mod:`vtrial.run.export`).
- ``vtrial twin fit STUDY [--out DIR] [--subjects ID ...] [--workers N]``: the twins
  of a dataset study's subjects (all, or those IDs): ``DIR/twins.parquet`` (the table
  of the workflow's ``twins/`` parts) and ``DIR/summary.parquet``, each with a CSV copy
  (:func:`vtrial.run.twin_stage.write_twin_fit`); every problem is reported before
  anything is estimated, with exit 1 and nothing written. ``twin`` is a group of
  subcommands; ``fit`` is the first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vtrial.analysis.design import describe_lines
from vtrial.analysis.success import describe_lines as success_lines
from vtrial.data.dataset import read_dataset
from vtrial.errors import ConfigError, DatasetError, ModelError, Problem, VtrialError
from vtrial.infra.hashing import file_sha256
from vtrial.model.spec import build_model, list_models
from vtrial.run.io import table_hash, write_text
from vtrial.run.twin_stage import twin_lines
from vtrial.study.config import load_study
from vtrial.trial.adverse import adverse_event_from_data


def _snakefile() -> Path:
    """The workflow's Snakefile (the checkout vtrial is installed from)."""
    return Path(__file__).resolve().parents[3] / "Snakefile"


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        study = load_study(args.study)
        if study.twins is not None:  # what the estimator needs beyond a valid study
            from vtrial.run.twin_stage import check_twins

            check_twins(study)
    except ConfigError as err:
        print(f"{args.study}: not valid\n{err}", file=sys.stderr)
        return 1
    print(
        f"{args.study}: valid study {study.name!r}: {study.n_patients} patients "
        f"({study.replicates} replicate(s) x {study.size}), arms {study.arm_names}, "
        f"model outputs {list(study.model.outputs)}"
    )
    for warning in study.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    """Check a NONMEM-style dataset; print its counts (never its records)."""
    columns = {}
    for pair in args.column or []:
        item, sep, column = pair.partition("=")
        if not sep or not item or not column:
            print(
                f"vtrial: --column: expected ITEM=COLUMN (e.g. DV=conc), got {pair!r}",
                file=sys.stderr,
            )
            return 2
        columns[item] = column
    if args.simulate and not args.out:
        print("vtrial: --simulate needs --out FILE (the outputs on every record)", file=sys.stderr)
        return 2
    try:
        dataset = read_dataset(args.path, columns=columns)
        if args.simulate:
            from vtrial.engine.api import simulate  # the engine (numba) only when asked

            model = build_model({"pk": args.simulate}, base_dir=Path.cwd())
            params = pd.read_csv(args.parameters) if args.parameters else None
            out = simulate(
                model, params, data=args.path, columns=columns, interpolation=args.interpolation
            )
    except (DatasetError, ModelError) as err:
        print(f"{args.path}: not valid\n{err}", file=sys.stderr)
        return 1
    s = dataset.summary()
    print(
        f"{args.path}: valid dataset (sha256 {s['sha256'][:16]}): {s['subjects']} subjects, "
        f"{s['records']} records, {s['doses']} doses, {s['observations']} observations; "
        f"covariates {s['covariates']} (varying over time: {s['time_varying']})"
    )
    if args.simulate:
        write_text(out.to_csv(index=False), args.out)
        failed = int(out.groupby("ID")["solver_status"].first().ne("ok").sum())
        print(
            f"{args.out}: {len(out)} records simulated as recorded with {args.simulate} "
            f"(outputs {list(model.outputs)}; {failed} subject(s) not solved)"
        )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    for m in list_models():
        print(f"{m['name']:12s} {m['title']}\n{'':12s} {m['reference']}")
    return 0


def _option(extra: Sequence[str], *names: str) -> str | None:
    """The value of a Snakemake option among the extra arguments (``--x v``, ``--x=v``)."""
    for i, arg in enumerate(extra):
        for name in names:
            if arg == name and i + 1 < len(extra):
                return extra[i + 1]
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
    return None


def cmd_run(args: argparse.Namespace, extra: Sequence[str]) -> int:
    """Validate the study, run the workflow, then print where the results and the report
    are and the key numbers (:func:`describe`); Snakemake's own exit code otherwise."""
    snakefile = _snakefile()
    if not snakefile.exists():
        print(f"vtrial run: no Snakefile at {snakefile}", file=sys.stderr)
        return 2
    try:  # every problem at once, before Snakemake starts
        study = load_study(args.study)
    except ConfigError as err:
        print(f"{args.study}: not valid\n{err}", file=sys.stderr)
        return 1
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(snakefile),
        "--cores",
        str(args.cores),
        "--rerun-incomplete",
        "--config",
        f"study={Path(args.study).resolve()}",
        *extra,
    ]
    code = subprocess.call(cmd)
    dry = any(a in ("-n", "--dry-run", "--dryrun") for a in extra)
    if code != 0 or dry or _option(extra, "--report") is not None:
        return code
    workdir = Path(_option(extra, "--directory", "-d") or ".")
    results = workdir / "results" / study.name
    if (results / "manifest.json").exists():
        print(f"\nresults: {results}\n")
        print(describe(results))
    return code


def verify(results: str | Path) -> list[str]:
    """Differences between a results folder and its ``manifest.json`` (empty if none)."""
    root = Path(results)
    manifest_path = root / "manifest.json"
    if not manifest_path.exists():
        return [f"{manifest_path}: missing"]
    manifest = json.loads(manifest_path.read_text())
    problems = []
    for entry in manifest["outputs"]:
        path = root / entry["path"]
        if not path.exists():
            problems.append(f"{path}: missing (listed in the manifest)")
            continue
        try:
            if "content_sha256" in entry:
                df = pd.read_parquet(path)
                if len(df) != entry["rows"]:
                    problems.append(f"{path}: {len(df)} rows, manifest says {entry['rows']}")
                elif table_hash(df) != entry["content_sha256"]:
                    problems.append(f"{path}: content differs from the manifest")
            elif file_sha256(path) != entry["file_sha256"]:
                problems.append(f"{path}: file differs from the manifest")
        except (OSError, ValueError) as exc:  # unreadable, truncated Parquet
            problems.append(f"{path}: unreadable ({exc})")
    return problems


def _clean(x: float, scale: float) -> float:
    """``x`` with rounding noise at the scale of the numbers around it set to 0 (a CI
    bound of exactly 0 computed as 4.3e-19)."""
    return 0.0 if abs(x) <= 1e-12 * max(abs(scale), 1e-300) else x


def efficacy_line(r: Mapping[str, Any], units: Mapping[str, str]) -> str:
    """One efficacy row of ``vtrial describe``: estimate, CI and the difference from
    control. Proportions are shown in %, and a difference of proportions or of percent
    changes in percentage points (pp); a time to event as a median (h) with its hazard
    ratio.

    Examples
    --------
    >>> efficacy_line({"endpoint": "orr", "kind": "binary", "estimate": 0.42,
    ...                "ci_low": 0.3, "ci_high": 0.55, "diff": 0.12, "p_value": 0.01}, {})
    '  orr: 42.0 % (95 % CI 30.0 to 55.0), vs control +12.0 pp, p=0.01'
    """
    binary = r["kind"] == "binary"
    tte = r["kind"] == "time_to_event"  # KM median (h), hazard ratio
    own = units.get(str(r["endpoint"]), "")
    own = f" {own}" if own and not tte else ""  # times to event are in h below
    scale, unit, fmt = (100.0, " %", ".1f") if binary else (1.0, own, ".3g")
    size = max(abs(r["estimate"]), abs(r["ci_low"]), abs(r["ci_high"]))
    est, lo, hi = (scale * _clean(r[k], size) for k in ("estimate", "ci_low", "ci_high"))
    text = (
        f"  {r['endpoint']}: {'median ' if tte else ''}{est:{fmt}}"
        f"{' h' if tte else unit} (95 % CI {lo:{fmt}} to {hi:{fmt}})"
    )
    if np.isfinite(r["diff"]):
        p = r["p_value"]
        ptext = "p=n/a" if not np.isfinite(p) else f"p={p:.2g}" if p > 0 else "p<1e-300"
        if tte:
            text += f", hazard ratio vs control {r['diff']:.3g}, {ptext}"
        else:
            points = binary or unit.strip() == "%"  # a difference of percents
            diff_unit = " pp" if points else unit
            text += f", vs control {scale * _clean(r['diff'], size):+{fmt}}{diff_unit}, {ptext}"
    return text


def reported_grade(event: Mapping[str, Any]) -> int:
    """The grade ``vtrial describe`` reports an adverse event at: 3, or the event's
    highest grade when it defines fewer (two thresholds: grade >= 2)."""
    if not event:
        return 3
    n = adverse_event_from_data("event", event).n_grades
    return min(3, n) if n else 3


def describe(results: str | Path) -> str:
    """The key numbers of a finished study, as text for the terminal."""
    root = Path(results)
    manifest = json.loads((root / "manifest.json").read_text())
    patients = pd.read_parquet(root / "patients")
    exposure = pd.read_parquet(root / "summary" / "exposure.parquet")
    safety = pd.read_parquet(root / "summary" / "safety.parquet")
    efficacy = pd.read_parquet(root / "summary" / "efficacy.parquet")
    failed = int((patients["solver_status"] != "ok").sum())
    sha = manifest["study_sha256"][:12]
    lines = [
        f"study {manifest['study']} (seed {manifest['seed']}, sha256 {sha})",
        f"{len(patients)} patients, {failed} solver failure(s)",
        "",
    ]
    units = manifest.get("units", {})
    conc = units.get(manifest.get("config", {}).get("exposure", {}).get("output") or "CP", "")
    metric_units = {"cmax": conc, "auc": f"{conc}·h" if conc else ""}
    rep0 = exposure["replicate"].min()
    ae_config = manifest.get("config", {}).get("adverse_events", {})
    for arm in dict.fromkeys(exposure["arm"]):
        lines.append(f"{arm}:")
        ex = exposure[(exposure["arm"] == arm) & (exposure["replicate"] == rep0)]
        for metric in ("cmax", "auc"):
            row = ex[ex["metric"] == metric]
            if len(row) and np.isfinite(row["gmean"].iloc[0]):
                r = row.iloc[0]
                u = f" {metric_units[metric]}" if metric_units[metric] else ""
                lines.append(
                    f"  {metric:8s} geometric mean {r['gmean']:.4g}{u} (CV {r['gcv']:.0f} %), "
                    f"5th to 95th percentile {r['p5']:.4g} to {r['p95']:.4g}{u}"
                )
        sf = safety[(safety["arm"] == arm) & (safety["replicate"] == rep0)]
        for event in dict.fromkeys(sf["event"]):
            grade = reported_grade(ae_config.get(event, {}))
            for _, r in sf[(sf["event"] == event) & (sf["grade"] == f">={grade}")].iterrows():
                lines.append(
                    f"  {r['event']} grade >= {grade}: {100 * r['incidence']:.1f} % "
                    f"(95 % CI {100 * r['ci_low']:.1f} to {100 * r['ci_high']:.1f}), n={r['n']}"
                )
        ef = efficacy[(efficacy["arm"] == arm) & (efficacy["replicate"] == rep0)]
        for _, r in ef.iterrows():
            lines.append(efficacy_line(r, units))
    lines += describe_lines(root / "summary")  # individual effects, parameter draws
    lines += success_lines(root / "summary")  # probability of success
    lines += twin_lines(root / "summary")  # twins of the dataset's subjects
    html = root / "report.html"
    lines += ["", f"report: {root / 'report'} (plots and pages)", f"tables: {root / 'summary'}"]
    if html.exists():
        lines.append(f"HTML report: {html}")
    else:
        lines.append(f"HTML report: make report, or add --report {html} to the run command")
    return "\n".join(lines)


def cmd_describe(args: argparse.Namespace) -> int:
    print(describe(args.results))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    problems = verify(args.results)
    if args.recompute and not Path(args.results, "manifest.json").exists():
        args.recompute = False  # the missing manifest is reported
    if args.recompute:
        from vtrial.run.recompute import choose_shards, recompute, recorded_study

        n = int(recorded_study(args.results).execution["shards"])
        chosen = choose_shards(n, None if args.all else args.shards, seed=args.seed)
        print(f"recomputing shard(s) {chosen} of {n} from the recorded study")
        problems += recompute(args.results, shards=chosen, workers=args.workers)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    what = " and the recomputed shards" if args.recompute else ""
    print(f"{args.results}: every output matches manifest.json{what}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from vtrial.run.export import write_nonmem

    out = Path(args.out) if args.out else Path(args.results) / "export" / "nonmem.csv"
    n = write_nonmem(args.results, out, replicate=args.replicate)
    print(
        f"{out}: {n['records']} records of {n['subjects']} subjects ({n['doses']} doses, "
        f"{n['observations']} observations); keys in {out.stem}_dvid.csv, {out.stem}_arms.csv, "
        f"{out.stem}_categories.csv"
    )
    if n["observations"] == 0:
        print(
            "warning: no observation records: the study samples nothing (add "
            "outputs.observations to it); the dataset holds doses only",
            file=sys.stderr,
        )
    return 0


def cmd_twin_fit(args: argparse.Namespace) -> int:
    """``vtrial twin fit``: estimate the twins, write them; exit 1 naming every problem
    (nothing written)."""
    from vtrial.run.stages import setup_logging
    from vtrial.run.twin_stage import write_twin_fit

    try:
        study = load_study(args.study)
        out = Path(args.out) if args.out else Path("results") / study.name / "twin_fit"
        setup_logging()
        paths = write_twin_fit(study, out, subjects=args.subjects, workers=args.workers)
    except ConfigError as err:
        print(f"{args.study}: no twins estimated, nothing written\n{err}", file=sys.stderr)
        return 1
    table = pd.read_parquet(paths["twins"])
    summary = pd.read_parquet(paths["summary"])
    ok = int((table["status"] == "ok").sum())
    shrink = ", ".join(
        f"{p} {100 * x:.0f} %" if np.isfinite(x) else f"{p} n/a"
        for p, x in zip(summary["parameter"], summary["shrinkage"], strict=True)
    )
    method = study.twins.method if study.twins is not None else "map"
    print(
        f"{paths['twins']}: {len(table)} subject(s) estimated ({method}), "
        f"{ok} ok, {len(table) - ok} not; eta-shrinkage {shrink}\n"
        f"{paths['summary']}: by random effect (also .csv)"
    )
    return 0


def _one_twin(args: argparse.Namespace) -> tuple[Any, Any, Any, int]:
    """The study, the twin's records (or None: the dataset's), the start of its last
    estimate and its subject index, from ``--subject ID`` or ``--twin DIR``."""
    from vtrial.run.twin_stage import check_twins, subject_indices
    from vtrial.run.twin_state import twin_now

    study = load_study(args.study)
    check_twins(study)
    if args.twin:
        records, start, subject = twin_now(study, args.twin)
        return study, records, start, subject
    if not args.subject:
        raise ConfigError([Problem(args.study, "--subject", "give --subject ID or --twin DIR")])
    return study, None, None, subject_indices(study, [args.subject])[0]


def cmd_twin_forecast(args: argparse.Namespace) -> int:
    """``vtrial twin forecast|recommend``: one patient's twin under the study's candidate
    regimens (``outputs.twins.forecast``), and for ``recommend`` the regimen that meets
    ``outputs.twins.target`` (:func:`vtrial.run.twin_report.patient_twin`)."""
    from vtrial.run.stages import setup_logging
    from vtrial.run.twin_report import patient_twin

    study, records, start, subject = _one_twin(args)
    spec = study.twins
    assert spec is not None  # check_twins
    need = ["forecast"] + (["target"] if args.twin_command == "recommend" else [])
    missing = [k for k in need if getattr(spec, k) is None]
    if missing:
        raise ConfigError(
            [
                Problem(
                    study.source,
                    f"outputs.twins.{k}",
                    f"vtrial twin {args.twin_command} needs it (see config/README.md), got none",
                )
                for k in missing
            ]
        )
    fc = spec.forecast
    assert fc is not None
    setup_logging()
    out = Path(args.out) if args.out else Path("results") / study.name / "twin"
    folder = patient_twin(
        study,
        subject,
        out,
        candidates=fc.candidates,
        target=spec.target,
        records=records,
        method=spec.posterior,
        n=spec.samples,
        n_proposal=spec.proposals,
        start_eta=start,
        forecast_start=fc.start,
        horizon=fc.horizon,
        every=fc.every,
    )
    table = pd.read_parquet(folder / "candidates.parquet")
    print(f"{folder}: report.html, report.png and the tables of {len(table)} candidate(s)")
    if spec.target is not None:
        rec = table[table["recommended"]]
        if len(rec):
            r = rec.iloc[0]
            print(
                f"recommended: {r['regimen']} from {r['start']:g} h (P(target) {r['p_target']:.2f})"
            )
        else:
            print("no candidate meets the target: see each candidate's reason in report.html")
    return 0


def cmd_twin_create(args: argparse.Namespace) -> int:
    """``vtrial twin create``: a patient's twin folder (:mod:`vtrial.run.twin_state`)."""
    from vtrial.run.twin_stage import check_twins, subject_indices
    from vtrial.run.twin_state import create_twin

    study = load_study(args.study)
    check_twins(study)
    subject = subject_indices(study, [args.subject])[0]
    assert study.subjects is not None
    assert study.subjects.dataset is not None
    sid = study.subjects.dataset.subjects[subject]
    state = create_twin(study, sid.item() if hasattr(sid, "item") else sid, args.twin)
    step = state["steps"][0]
    print(
        f"{args.twin}: twin of subject {state['subject']}, {step['records']} records, "
        f"{step['status']}"
    )
    return 0


def cmd_twin_update(args: argparse.Namespace) -> int:
    """``vtrial twin update``: append a records file to a twin and re-estimate it."""
    from vtrial.run.twin_state import update_twin

    state = update_twin(load_study(args.study), args.twin, args.records)
    step = state["steps"][-1]
    print(
        f"{args.twin}: step {step['step']}, {step['added']['records']} new record(s) "
        f"(sha256 {step['added']['sha256'][:12]}...), {step['status']}"
    )
    return 0


def cmd_twin_rebuild(args: argparse.Namespace) -> int:
    """``vtrial twin rebuild``: recompute every step of a twin; exit 1 unless each one's
    estimate is bit-identical."""
    from vtrial.run.twin_state import rebuild_twin

    rows = rebuild_twin(load_study(args.study), args.twin)
    bad = [r for r in rows if not (r["records_match"] and r["identical"])]
    for r in rows:
        same = "identical" if r["records_match"] and r["identical"] else "DIFFERENT"
        print(f"step {r['step']}: {same} (objective {r['ofv']:.6f})")
    return 1 if bad else 0


#: subcommands of ``vtrial twin``
TWIN_COMMANDS = {
    "fit": cmd_twin_fit,
    "forecast": cmd_twin_forecast,
    "recommend": cmd_twin_forecast,
    "create": cmd_twin_create,
    "update": cmd_twin_update,
    "rebuild": cmd_twin_rebuild,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vtrial`` command."""
    parser = argparse.ArgumentParser(prog="vtrial", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check a study file, report every problem")
    p.add_argument("study")
    sub.add_parser("models", help="list the built-in model library")
    p = sub.add_parser("dataset", help="check a NONMEM-style dataset, report every problem")
    p.add_argument("path")
    p.add_argument(
        "--column",
        action="append",
        metavar="ITEM=COLUMN",
        help="the file's column for a NONMEM item (e.g. DV=conc); repeatable",
    )
    p.add_argument(
        "--simulate",
        metavar="MODEL",
        help="simulate every subject as recorded with MODEL (library name or model file)",
    )
    p.add_argument("--parameters", metavar="CSV", help="individual parameters: ID + columns")
    p.add_argument("--interpolation", choices=["nocb", "locf"], default="nocb")
    p.add_argument("--out", metavar="FILE", help="with --simulate: CSV of the outputs")
    p = sub.add_parser("run", help="run the workflow on a study (extra args go to snakemake)")
    p.add_argument("study")
    p.add_argument("--cores", type=int, default=2)
    p = sub.add_parser("verify", help="check a results folder against its manifest")
    p.add_argument("results")
    p.add_argument(
        "--recompute",
        action="store_true",
        help="also recompute shards from the recorded study and compare their tables",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--shards", type=int, default=1, metavar="K", help="shards to recompute")
    g.add_argument("--all", action="store_true", help="recompute every shard")
    p.add_argument("--workers", type=int, default=1, help="local Dask workers to recompute on")
    p.add_argument("--seed", type=int, default=None, help="seed of the choice of shards")
    p = sub.add_parser("describe", help="the key numbers of a finished study")
    p.add_argument("results")
    p = sub.add_parser("export", help="export doses and observations (NONMEM/Monolix dataset)")
    p.add_argument("format", choices=["nonmem"])
    p.add_argument("results")
    p.add_argument("--out", help="CSV file (default: <results>/export/nonmem.csv)")
    p.add_argument("--replicate", type=int, help="only this replicate trial")
    p = sub.add_parser("twin", help="twins of a dataset study's real patients")
    twin = p.add_subparsers(dest="twin_command", required=True)
    q = twin.add_parser("fit", help="estimate the twins (MAP) of a dataset study's subjects")
    q.add_argument("study")
    q.add_argument(
        "--out", metavar="DIR", help="folder of twins.parquet (default results/<study>/twin_fit)"
    )
    q.add_argument("--subjects", nargs="+", metavar="ID", help="only these subjects (dataset IDs)")
    q.add_argument("--workers", type=int, default=1, help="local Dask worker processes")
    for name, what in (
        ("forecast", "one patient's twin under the study's candidate regimens, with its report"),
        ("recommend", "the candidate regimen that meets the study's target, with the report"),
    ):
        q = twin.add_parser(name, help=what)
        q.add_argument("study")
        g = q.add_mutually_exclusive_group(required=True)
        g.add_argument("--subject", metavar="ID", help="the dataset's subject")
        g.add_argument("--twin", metavar="DIR", help="a twin folder (vtrial twin create)")
        q.add_argument("--out", metavar="DIR", help="default results/<study>/twin")
    q = twin.add_parser("create", help="a patient's twin folder, to update as data arrive")
    q.add_argument("study")
    q.add_argument("--subject", metavar="ID", required=True)
    q.add_argument("--twin", metavar="DIR", required=True)
    q = twin.add_parser("update", help="append new records to a twin and re-estimate it")
    q.add_argument("study")
    q.add_argument("--twin", metavar="DIR", required=True)
    q.add_argument("--records", metavar="FILE", required=True, help="in the dataset's format")
    q = twin.add_parser("rebuild", help="recompute every step of a twin, bit for bit")
    q.add_argument("study")
    q.add_argument("--twin", metavar="DIR", required=True)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "validate":
            return cmd_validate(args)
        if args.command == "models":
            return cmd_models(args)
        if args.command == "dataset":
            return cmd_dataset(args)
        if args.command == "run":
            return cmd_run(args, extra)
        if args.command == "describe":
            return cmd_describe(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "twin":
            return TWIN_COMMANDS[args.twin_command](args)
        return cmd_verify(args)
    except VtrialError as err:
        print(f"vtrial: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
