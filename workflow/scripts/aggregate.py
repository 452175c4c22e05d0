"""Snakemake adapter of rule aggregate: calls vtrial.pipeline.run_aggregate."""

from vtrial.config import load_study
from vtrial.pipeline import SUMMARY_TABLES, run_aggregate, setup_logging

# Dask starts worker processes with "spawn", which re-imports this script: guard it.
if __name__ == "__main__":
    sm = snakemake  # type: ignore[name-defined]  # noqa: F821 - injected by Snakemake
    setup_logging(sm.log[0])
    run_aggregate(
        load_study(sm.params.study, overrides=sm.params.overrides),
        list(sm.input.patients),
        list(sm.input.bands),
        {name: sm.output[name] for name in SUMMARY_TABLES},
    )
