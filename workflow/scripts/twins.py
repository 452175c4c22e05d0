"""Snakemake adapter of rule twins: calls vtrial.run.twin_stage.run_twins for one shard."""

from vtrial.run.stages import setup_logging
from vtrial.run.twin_stage import run_twins
from vtrial.study.config import load_study

# Dask starts worker processes with "spawn", which re-imports this script: guard it.
if __name__ == "__main__":
    sm = snakemake  # type: ignore[name-defined]  # noqa: F821 - injected by Snakemake
    setup_logging(sm.log[0])
    run_twins(
        load_study(sm.params.study, overrides=sm.params.overrides),
        int(sm.wildcards.shard.removeprefix("part-")),
        sm.output.twins,
        threads=sm.threads,
    )
