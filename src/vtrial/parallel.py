"""Dask execution inside a stage.

By default each simulate job starts an in-process :class:`distributed.LocalCluster`
with one single-threaded worker *process* per thread the job was given (BLAS and
numba pinned to one thread each); ``execution.scheduler_address`` connects to an
existing scheduler instead. Tasks are chunks of patients, never single patients.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

from distributed import Client, LocalCluster

log = logging.getLogger("vtrial")

#: environment pinning every threaded library of a worker to one thread
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}


@contextlib.contextmanager
def dask_client(
    execution: Mapping[str, Any], *, threads: int, memory_limit: str | int = "auto"
) -> Iterator[Client]:
    """Yield a Dask client for one stage.

    Parameters
    ----------
    execution : mapping
        The study's ``execution`` section (``scheduler_address`` is used if set).
    threads : int
        Worker processes of the local cluster (the job's threads).
    memory_limit : str or int
        Memory limit per local worker (Dask syntax), ``"auto"`` splits the machine's.
    """
    address = execution.get("scheduler_address")
    if address:
        log.info("connecting to the Dask scheduler at %s", address)
        with Client(address, timeout="60s") as client:
            yield client
        return
    saved = {k: os.environ.get(k) for k in SINGLE_THREAD_ENV}
    os.environ.update(SINGLE_THREAD_ENV)  # inherited by the worker processes
    try:
        with (
            LocalCluster(
                n_workers=max(1, int(threads)),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                memory_limit=memory_limit,
                silence_logs=logging.WARNING,
            ) as cluster,
            Client(cluster) as client,
        ):
            log.info("local Dask cluster: %d single-threaded worker processes", threads)
            yield client
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
