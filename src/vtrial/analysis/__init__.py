"""Statistics across patients and replicates: exposure, efficacy and safety summaries
(:mod:`~vtrial.analysis.stats`), probability of success
(:mod:`~vtrial.analysis.success`), individual treatment effects of twin crossover
studies (:mod:`~vtrial.analysis.effects`), mergeable percentile sketches for bands
(:mod:`~vtrial.analysis.sketch`) and the population summary
(:mod:`~vtrial.analysis.popsummary`). Tables in, tables out: no plotting, no files."""
