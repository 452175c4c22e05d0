"""The ``execution`` section of a study: defaults of ``execution.cluster`` and the
checks its schema cannot express (memory sizes, walltimes, an installed
dask-jobqueue). Used by the study validation and by :mod:`vtrial.run.parallel`,
which starts the clusters."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: kinds of batch queue ``execution.cluster.type`` can start workers on
CLUSTER_TYPES = ("slurm", "pbs")
#: defaults of ``execution.cluster`` (``type`` has none)
CLUSTER_DEFAULTS: dict[str, Any] = {
    "cores": 1,
    "memory": "4GB",
    "walltime": "01:00:00",
    "jobs": 1,
    "queue": None,
    "account": None,
    "interface": None,
    "local_directory": None,
    "job_extra_directives": [],
    "job_script_prologue": [],
}
_WALLTIME = re.compile(r"^(\d+-)?\d{1,4}:\d{2}(:\d{2})?$")


def cluster_settings(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``execution.cluster`` with its defaults (:data:`CLUSTER_DEFAULTS`) filled in."""
    return {**CLUSTER_DEFAULTS, **dict(spec)}


def _memory_problem(value: Any) -> str | None:
    try:
        from dask.utils import parse_bytes  # imports dask: only when a size is given

        if parse_bytes(value) > 0:
            return None
    except (TypeError, ValueError):
        pass
    return f"must be a memory size such as '4GB' or '500MiB', got {value!r}"


def execution_problems(execution: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems of the Dask settings of a study that its schema cannot see.

    Parameters
    ----------
    execution : mapping
        The study's ``execution`` section (schema-valid).

    Returns
    -------
    list of (str, str)
        ``(key path, message)`` pairs, empty if the settings are usable.
    """
    out: list[tuple[str, str]] = []
    limit = execution.get("memory_limit")
    if limit is not None and limit != "auto" and (msg := _memory_problem(limit)):
        out.append(("execution.memory_limit", msg.replace("such as", "such as 'auto',")))
    spec = execution.get("cluster")
    if not spec:
        return out
    if execution.get("scheduler_address"):
        out.append(
            (
                "execution.cluster",
                "cannot be combined with execution.scheduler_address (set one of the two)",
            )
        )
    s = cluster_settings(spec)
    if msg := _memory_problem(s["memory"]):
        out.append(("execution.cluster.memory", msg))
    if not _WALLTIME.match(str(s["walltime"])):
        out.append(
            (
                "execution.cluster.walltime",
                f"must be [D-]HH:MM[:SS] (e.g. '02:00:00'), got {s['walltime']!r}",
            )
        )
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        out.append(
            (
                "execution.cluster",
                "needs the dask-jobqueue package: pip install -e '.[cluster]'",
            )
        )
    return out
