"""Estimation: the likelihood of a patient's observations, MAP estimates of their
random effects (NONMEM's POSTHOC objective) and the posterior around them; the
basis of twins of real patients."""
