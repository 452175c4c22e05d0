"""Who the virtual patients are: covariate distributions and copulas
(:mod:`~vtrial.population.distributions`), resampled covariate tables
(:mod:`~vtrial.population.resample`), derived covariates
(:mod:`~vtrial.population.derived`), the keyed sampler of candidates and the inclusion
criteria (:mod:`~vtrial.population.covariates`) and the checks of all of these
(:mod:`~vtrial.population.validate`), trial design (allocation, randomisation, twin
crossover: :mod:`~vtrial.population.design`), parameter uncertainty between replicates
(:mod:`~vtrial.population.uncertainty`) and the keyed sampling of the population table
with individual parameters (:mod:`~vtrial.population.sampling`)."""
