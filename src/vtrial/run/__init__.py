"""Running a study: the workflow stages that Snakemake's thin scripts call
(:mod:`~vtrial.run.stages`), the simulation of one chunk of patients
(:mod:`~vtrial.run.chunk`), Dask clusters (:mod:`~vtrial.run.parallel`), atomic
Parquet IO and provenance (:mod:`~vtrial.run.io`), recomputation for ``verify``
(:mod:`~vtrial.run.recompute`), dataset export (:mod:`~vtrial.run.export`) and the
command line (:mod:`~vtrial.run.cli`). The top layer: it may import every other."""
