"""Snakemake adapter of rule manifest: calls vtrial.run.stages.run_manifest."""

from vtrial.run.stages import run_manifest, setup_logging
from vtrial.study.config import load_study

# Dask starts worker processes with "spawn", which re-imports this script: guard it.
if __name__ == "__main__":
    sm = snakemake  # type: ignore[name-defined]  # noqa: F821 - injected by Snakemake
    setup_logging(sm.log[0])
    run_manifest(
        load_study(sm.params.study, overrides=sm.params.overrides), list(sm.input), sm.output[0]
    )
