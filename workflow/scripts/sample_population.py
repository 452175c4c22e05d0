"""Snakemake adapter of rule sample_population: calls vtrial.run.stages.run_sample_population."""

from vtrial.run.stages import run_sample_population, setup_logging
from vtrial.study.config import load_study

# Dask starts worker processes with "spawn", which re-imports this script: guard it.
if __name__ == "__main__":
    sm = snakemake  # type: ignore[name-defined]  # noqa: F821 - injected by Snakemake
    setup_logging(sm.log[0])
    run_sample_population(
        load_study(sm.params.study, overrides=sm.params.overrides),
        sm.output.population,
        summary=sm.output.summary,
        twins=sm.input.get("twins"),  # only with population.dataset.parameters: twins
    )
