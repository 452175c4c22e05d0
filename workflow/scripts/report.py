"""Snakemake adapter of rule report: calls vtrial.run.stages.run_report."""

from vtrial.analysis.success import table_names
from vtrial.run.stages import SUMMARY_TABLES, page_tables, run_pages, run_report, setup_logging
from vtrial.study.config import load_study

# Dask starts worker processes with "spawn", which re-imports this script: guard it.
if __name__ == "__main__":
    sm = snakemake  # type: ignore[name-defined]  # noqa: F821 - injected by Snakemake
    setup_logging(sm.log[0])
    study = load_study(sm.params.study, overrides=sm.params.overrides)
    run_report(
        study,
        {name: sm.input[name] for name in (*SUMMARY_TABLES, *table_names(study.success))},
        list(sm.input.patients),
        sm.params.outdir,
    )
    # pages: every summary table and the study file, shown inline by the HTML report
    run_pages(study, {name: sm.input[name] for name in page_tables(study)}, sm.params.outdir)
