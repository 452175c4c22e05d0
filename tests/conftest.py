"""Shared fixtures: small studies derived from the default study; the test order."""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STUDY = ROOT / "config" / "config.yaml"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with end-to-end workflow runs (marked ``workflow``) and the benchmark
    harness first, the rest in their usual order. ``make test`` spreads whole files over
    the cores (``--dist loadfile``) in this order: the longest files go first so that
    the short ones fill the gaps, instead of one core running a long file at the end."""
    slow = {
        item.nodeid.split("::")[0]
        for item in items
        if item.get_closest_marker("workflow") or item.nodeid.startswith("tests/test_benchmarks")
    }
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)


def default_study_data() -> dict[str, Any]:
    """The default study as plain data."""
    return dict(yaml.safe_load(DEFAULT_STUDY.read_text()))


def small_study_data(**changes: Any) -> dict[str, Any]:
    """The default study, small and short (same model, so the same compiled kernel)."""
    d = copy.deepcopy(default_study_data())
    d["study"]["name"] = "small"
    d["population"]["size"] = 150
    d["study"]["replicates"] = 2
    for arm in d["arms"]:
        if isinstance(arm["regimen"], dict):
            arm["regimen"]["cycles"]["count"] = 1
    d["simulation"]["end"] = 504
    d["endpoints"]["tumour_change"]["at"] = 504
    d["execution"] = {"shards": 1, "workers": 1, "chunk_size": 64}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        d[section][field] = value
    return d


@pytest.fixture
def write_study(tmp_path: Path) -> Callable[[dict[str, Any], str], Path]:
    """Write a study dict to a YAML file in tmp_path and return its path."""

    def write(data: dict[str, Any], name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


class _Done:
    """A finished task of :class:`_SyncClient`."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


class _SyncClient:
    """Stands in for a Dask client: runs each task at submit time."""

    def submit(self, fn: Callable[..., Any], *args: Any, pure: bool = True) -> _Done:
        return _Done(fn(*args))


@contextlib.contextmanager
def sync_client(execution: Any, *, threads: int) -> Iterator[_SyncClient]:
    """Stands in for :func:`vtrial.run.parallel.dask_client` (see :func:`sync_dask`)."""
    yield _SyncClient()


@pytest.fixture
def sync_dask(monkeypatch: pytest.MonkeyPatch) -> None:
    """``vtrial.run.stages.run_simulate`` without Dask: chunks run in this process, at
    submit time, and are collected in submission order."""
    from vtrial.run import stages as pipeline

    monkeypatch.setattr(pipeline, "dask_client", sync_client)
    monkeypatch.setattr(pipeline, "in_completion_order", enumerate)


def snakemake_cmd(
    workdir: Path, study: Path, *extra: str, cores: int = 1, config: Sequence[str] = ()
) -> list[str]:
    """Command line of a Snakemake run of the workflow on ``study`` in ``workdir``:
    ``extra`` (options, targets) before ``--config``, ``config`` items after it."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        str(cores),
        *extra,
        "--config",
        f"study={study}",
        *config,
    ]
