"""Real data in: readers that turn outside files into checked, typed tables.

NONMEM/Monolix-style datasets of dosing, observation and covariate records
(:mod:`~vtrial.data.dataset`), fitted population models (NONMEM ``.ext``/``.cov``/``.phi``
tables: :mod:`~vtrial.data.nonmem`, their file format in
:mod:`~vtrial.data._nonmem_table`; Monolix estimates: :mod:`~vtrial.data.monolix`; the
declared THETA/ETA/SIGMA -> model parameter mapping: :mod:`~vtrial.data.fitted`) and the
cell-level checks they share with the resampled covariate tables
(:mod:`~vtrial.data.tables`). A reader reports every problem of a file at once, naming
the file, row (and line), column, rule and value (:class:`vtrial.errors.DatasetError`),
and never logs a patient's records: a file is identified by its SHA-256. Below the
population layer (which resamples covariate tables through :mod:`~vtrial.data.tables`);
uses only the model and protocol layers.
"""
