"""Command line: ``vtrial validate|models|run|verify``.

- ``vtrial validate STUDY``: every problem of a study file at once; exit 1 if any.
- ``vtrial models``: the built-in model library with references.
- ``vtrial run STUDY [--cores N] [snakemake args...]``: run the workflow on a study.
- ``vtrial verify RESULTS_DIR``: check every output against ``manifest.json``
  (row counts and content hashes); exit 1 naming each difference.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from vtrial.config import load_study
from vtrial.errors import ConfigError, VtrialError
from vtrial.io import file_sha256, table_hash
from vtrial.models import list_models


def _snakefile() -> Path:
    """The workflow's Snakefile (the checkout vtrial is installed from)."""
    return Path(__file__).resolve().parents[2] / "Snakefile"


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        study = load_study(args.study)
    except ConfigError as err:
        print(f"{args.study}: not valid\n{err}", file=sys.stderr)
        return 1
    print(
        f"{args.study}: valid study {study.name!r}: {study.n_patients} patients "
        f"({study.replicates} replicate(s) x {study.size}), arms {study.arm_names}, "
        f"model outputs {list(study.model.outputs)}"
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    for m in list_models():
        print(f"{m['name']:12s} {m['title']}\n{'':12s} {m['reference']}")
    return 0


def cmd_run(args: argparse.Namespace, extra: Sequence[str]) -> int:
    snakefile = _snakefile()
    if not snakefile.exists():
        print(f"vtrial run: no Snakefile at {snakefile}", file=sys.stderr)
        return 2
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
    return subprocess.call(cmd)


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


def cmd_verify(args: argparse.Namespace) -> int:
    problems = verify(args.results)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"{args.results}: every output matches manifest.json")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vtrial`` command."""
    parser = argparse.ArgumentParser(prog="vtrial", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check a study file, report every problem")
    p.add_argument("study")
    sub.add_parser("models", help="list the built-in model library")
    p = sub.add_parser("run", help="run the workflow on a study (extra args go to snakemake)")
    p.add_argument("study")
    p.add_argument("--cores", type=int, default=2)
    p = sub.add_parser("verify", help="check a results folder against its manifest")
    p.add_argument("results")
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "validate":
            return cmd_validate(args)
        if args.command == "models":
            return cmd_models(args)
        if args.command == "run":
            return cmd_run(args, extra)
        return cmd_verify(args)
    except VtrialError as err:
        print(f"vtrial: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
