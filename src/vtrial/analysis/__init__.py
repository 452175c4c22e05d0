"""Statistics across patients and replicates: the exposure, efficacy and safety summaries
(:mod:`~vtrial.analysis.exposure`, :mod:`~vtrial.analysis.efficacy`,
:mod:`~vtrial.analysis.safety`) built on the shared statistics of
:mod:`~vtrial.analysis.stats`, exact percentile bands (:mod:`~vtrial.analysis.bands`),
probability of success (:mod:`~vtrial.analysis.success`), individual treatment effects
of twin crossover studies (:mod:`~vtrial.analysis.effects`), mergeable percentile
sketches for bands (:mod:`~vtrial.analysis.sketch`) and the population summary
(:mod:`~vtrial.analysis.popsummary`). Tables in, tables out: no plotting, no files."""
