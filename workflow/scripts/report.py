"""Snakemake adapter of rule report: calls vtrial.pipeline.run_report."""

from vtrial.config import load_study
from vtrial.pipeline import SUMMARY_TABLES, run_report, setup_logging

# Dask starts worker processes with "spawn", which re-imports this script: guard it.
if __name__ == "__main__":
    sm = snakemake  # type: ignore[name-defined]  # noqa: F821 - injected by Snakemake
    setup_logging(sm.log[0])
    run_report(
        load_study(sm.params.study, overrides=sm.params.overrides),
        {name: sm.input[name] for name in SUMMARY_TABLES},
        list(sm.input.patients),
        sm.params.outdir,
    )
