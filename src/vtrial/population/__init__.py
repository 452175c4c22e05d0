"""Who the virtual patients are: covariate distributions, copulas, derived covariates,
inclusion criteria and resampled tables (:mod:`~vtrial.population.covariates`), trial
design (allocation, randomisation, twin crossover: :mod:`~vtrial.population.design`),
parameter uncertainty between replicates (:mod:`~vtrial.population.uncertainty`) and
the keyed sampling of the population table with individual parameters
(:mod:`~vtrial.population.sampling`)."""
