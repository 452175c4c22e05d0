"""Dask execution inside a stage.

By default each simulate job starts an in-process :class:`distributed.LocalCluster`
with one single-threaded worker *process* per thread the job was given (BLAS and
numba pinned to one thread each); ``execution.scheduler_address`` connects to an
existing scheduler instead, and ``execution.cluster`` starts the workers as batch
jobs of a SLURM or PBS queue through dask-jobqueue (:func:`jobqueue_cluster`).
Tasks are chunks of patients, never single patients.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from dask.utils import parse_bytes
from distributed import Client, LocalCluster, as_completed
from distributed.worker_memory import parse_memory_limit

from vtrial.study.execution import CLUSTER_TYPES, cluster_settings

log = logging.getLogger("vtrial")

#: environment pinning every threaded library of a worker to one thread
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}
#: HTTP server (dashboard, metrics) of the schedulers vtrial starts: a free port on the
#: loopback interface (``None`` would mean Dask's default port 8787, which another
#: scheduler on the machine may hold: Dask then warns, or fails under ``-W error``)
DASHBOARD_ADDRESS = "127.0.0.1:0"


def jobqueue_cluster(spec: Mapping[str, Any], **kwargs: Any) -> Any:
    """A dask-jobqueue cluster for ``execution.cluster``; no job is submitted yet.

    Each batch job runs ``cores`` single-threaded worker processes (BLAS, OpenMP and
    numba pinned to one thread by the job script) sharing the job's ``memory``, so a
    worker's memory limit is ``memory / cores``. ``cluster.job_script()`` shows the
    script; ``cluster.scale(jobs=n)`` submits ``n`` jobs.

    Parameters
    ----------
    spec : mapping
        ``execution.cluster``: ``type`` (``slurm`` or ``pbs``) and the keys of
        :data:`CLUSTER_DEFAULTS`.
    **kwargs
        Passed on to the dask-jobqueue cluster class (e.g. ``scheduler_options``).

    Returns
    -------
    dask_jobqueue.SLURMCluster or dask_jobqueue.PBSCluster
    """
    import dask_jobqueue

    s = cluster_settings(spec)
    classes = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}
    if s["type"] not in classes:
        raise ValueError(
            f"execution.cluster.type: must be one of {CLUSTER_TYPES}, got {s['type']!r}"
        )
    prologue = [f"export {k}={v}" for k, v in SINGLE_THREAD_ENV.items()]
    kwargs.setdefault("scheduler_options", {"dashboard_address": DASHBOARD_ADDRESS})
    return classes[s["type"]](
        cores=int(s["cores"]),
        processes=int(s["cores"]),  # one single-threaded worker process per core
        memory=str(s["memory"]),
        walltime=str(s["walltime"]),
        queue=s["queue"],
        account=s["account"],
        interface=s["interface"],
        local_directory=s["local_directory"],
        job_name="vtrial-worker",
        job_extra_directives=[str(x) for x in s["job_extra_directives"]],
        job_script_prologue=prologue + [str(x) for x in s["job_script_prologue"]],
        **kwargs,
    )


def worker_memory_limit(execution: Mapping[str, Any]) -> int | None:
    """Memory limit (bytes) of one Dask worker of ``execution``, known before it starts.

    ``execution.cluster``: the job's memory divided by its worker processes; a local
    cluster: ``execution.memory_limit`` (Dask's ``"auto"`` by default: the machine's
    memory divided by its cores). ``None`` for an external scheduler (see
    :func:`client_memory_limit`) or without a limit.
    """
    if execution.get("scheduler_address"):
        return None
    spec = execution.get("cluster")
    if spec:
        s = cluster_settings(spec)
        return int(parse_bytes(s["memory"]) // max(1, int(s["cores"])))
    return parse_memory_limit(execution.get("memory_limit", "auto"), 1, logger=log)


def client_memory_limit(client: Any) -> int | None:
    """Smallest memory limit (bytes) of the workers connected to ``client``.

    ``None`` if no worker is connected yet, if none has a limit, or if ``client``
    cannot tell (a stand-in without ``scheduler_info``).
    """
    info = getattr(client, "scheduler_info", None)
    if info is None:
        return None
    limits = [w.get("memory_limit") for w in info()["workers"].values()]
    known = [int(x) for x in limits if x]
    return min(known) if known else None


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
        Memory limit per local worker (Dask syntax), ``"auto"`` splits the machine's;
        ``execution.memory_limit`` takes precedence.
    """
    address = execution.get("scheduler_address")
    if address:
        log.info("connecting to the Dask scheduler at %s", address)
        with Client(address, timeout="60s") as client:
            yield client
        return
    spec = execution.get("cluster")
    if spec:
        jobs = int(cluster_settings(spec)["jobs"])
        with jobqueue_cluster(spec) as jq, Client(jq) as client:
            log.info("dask-jobqueue cluster, job script:\n%s", jq.job_script())
            jq.scale(jobs=jobs)
            log.info(
                "submitted %d %s job(s) of %d single-threaded worker(s)",
                jobs,
                spec["type"],
                int(cluster_settings(spec)["cores"]),
            )
            yield client
        return
    memory_limit = execution.get("memory_limit") or memory_limit
    saved = {k: os.environ.get(k) for k in SINGLE_THREAD_ENV}
    os.environ.update(SINGLE_THREAD_ENV)  # inherited by the worker processes
    try:
        with (
            LocalCluster(
                n_workers=max(1, int(threads)),
                threads_per_worker=1,
                processes=True,
                dashboard_address=DASHBOARD_ADDRESS,
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


def in_completion_order(futures: Sequence[Any]) -> Iterator[tuple[int, Any]]:
    """``(index, future)`` of Dask futures in the order they finish (``index`` is the
    position in `futures`), so that progress is reported as work completes while the
    results can still be put back in submission order."""
    index = {fut.key: k for k, fut in enumerate(futures)}
    for fut in as_completed(futures):
        yield index[fut.key], fut
