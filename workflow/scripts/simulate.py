"""Snakemake adapter of rule simulate: calls vtrial.run.stages.run_simulate for one shard."""

from vtrial.run.stages import run_simulate, setup_logging
from vtrial.study.config import load_study

# Dask starts worker processes with "spawn", which re-imports this script: guard it.
if __name__ == "__main__":
    sm = snakemake  # type: ignore[name-defined]  # noqa: F821 - injected by Snakemake
    setup_logging(sm.log[0])
    run_simulate(
        load_study(sm.params.study, overrides=sm.params.overrides),
        sm.input.population,
        int(sm.wildcards.shard.removeprefix("part-")),
        sm.output.patients,
        sm.output.timecourse,
        sm.output.bands,
        threads=sm.threads,
        out_observations=sm.output.get("observations"),  # only with outputs.observations
        out_doses=sm.output.get("doses"),  # only with dose modification or adherence
    )
