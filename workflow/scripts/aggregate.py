"""Snakemake adapter of rule aggregate: calls vtrial.run.stages.run_aggregate."""

from vtrial.analysis.design import summary_tables
from vtrial.analysis.success import table_names
from vtrial.run.stages import SUMMARY_TABLES, run_aggregate, setup_logging
from vtrial.study.config import load_study

# Dask starts worker processes with "spawn", which re-imports this script: guard it.
if __name__ == "__main__":
    sm = snakemake  # type: ignore[name-defined]  # noqa: F821 - injected by Snakemake
    setup_logging(sm.log[0])
    study = load_study(sm.params.study, overrides=sm.params.overrides)
    run_aggregate(
        study,
        list(sm.input.patients),
        list(sm.input.bands),
        {
            name: sm.output[name]
            for name in (*SUMMARY_TABLES, *summary_tables(study), *table_names(study.success))
        },
        population=sm.input.get("population"),
    )
