"""Measure one engine in a fresh process (started by ``run.py``; not meant for users).

Writes ``<out>.json`` (timings, peak memory, failures, setting) and ``<out>.npz``
(outputs of the first ``--subset`` patients, for the accuracy comparison). A missing
optional dependency is reported as ``{"unavailable": reason}``.

Peak memory is the high-water resident set of this process and its children (the
peers' process pools): sampled with psutil every 20 ms (sum over the process tree),
and never below this process's own ``getrusage`` maximum.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import workload as W

#: looser vtrial settings tried by --select-loose, loosest first (atol = rtol / 1000,
#: the ratio of vtrial's defaults)
LOOSE_LADDER = (1e-4, 3e-5, 1e-5, 5e-6, 3e-6, 2e-6, 1.5e-6)


class PeakMemory:
    """Background sampler of the resident set of this process tree (MB)."""

    def __init__(self, interval: float = 0.02):
        self.peak = 0.0
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import psutil

            self._proc: Any = psutil.Process()
        except ImportError:
            self._proc = None

    def sample(self) -> None:
        if self._proc is None:
            return
        total = 0
        try:
            total = self._proc.memory_info().rss
            for child in self._proc.children(recursive=True):
                with contextlib.suppress(Exception):  # a child may exit while sampled
                    total += child.memory_info().rss
        except Exception:
            return
        self.peak = max(self.peak, total / 2**20)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        self_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        self.peak = max(self.peak, self_max)


def tree_cpu_s() -> float:
    """CPU seconds (user + system, all threads) of this process and its live children."""
    try:
        import psutil
    except ImportError:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime
    proc = psutil.Process()
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        with contextlib.suppress(Exception):
            total += sum(child.cpu_times()[:2])
    return total


def make_engine(name: str, rtol: float | None, atol: float | None, rules: bool = False) -> Any:
    if name == "vtrial":
        from engine_vtrial import VtrialEngine

        return VtrialEngine(rtol, atol, rules=rules)
    import peers

    opts = None if rtol is None or atol is None else (rtol, atol)
    return peers.make(name, opts)


def select_loose(ref_path: Path) -> dict[str, Any]:
    """Loosest rtol of :data:`LOOSE_LADDER` whose worst error on the reference is <= 1e-4."""
    from engine_vtrial import VtrialEngine

    d = np.load(ref_path)
    ref = W.Reference(**{k: d[k] for k in d.files})
    params = W.patients(ref.size)
    tried = []
    for rtol in LOOSE_LADDER:
        eng = VtrialEngine(rtol, rtol * 1e-3)
        err = W.errors(eng.run(params), ref)
        tried.append({"rtol": rtol, "atol": rtol * 1e-3, "worst": err["worst"]})
        if err["worst"] <= 1e-4:
            return {"rtol": rtol, "atol": rtol * 1e-3, "tried": tried}
    return {"rtol": None, "atol": None, "tried": tried}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    n, chunk = args.batch, args.chunk or args.batch
    params = W.patients(n)
    report: dict[str, Any] = {"engine": args.engine, "batch": n, "chunk": chunk}
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        try:
            eng = make_engine(args.engine, args.rtol, args.atol, args.rules)
        except (ImportError, OSError) as exc:  # missing package or its shared library
            return {"engine": args.engine, "unavailable": f"{type(exc).__name__}: {exc}"}
        eng.run(W.patients(2))  # compile / load / start the process pool
        report["setup_s"] = time.perf_counter() - t0
        report["setting"] = eng.setting
        times = []
        cpu = []
        failures = 0
        head: W.Outputs | None = None
        extra: dict[str, float] = {}
        for rep in range(args.repeats):
            failures = 0
            c = tree_cpu_s()
            t = time.perf_counter()
            for a in range(0, n, chunk):
                sub = {k: v[a : a + chunk] for k, v in params.items()}
                out = eng.run(sub)
                if rep == args.repeats - 1:
                    failures += int(out.failed().sum())
                    if a == 0:
                        head = out.head(args.subset)
                    nsteps = getattr(eng, "nsteps", None)
                    if nsteps is not None and a == 0:
                        extra["mean_steps"] = float(np.mean(nsteps))
                del out
            times.append(time.perf_counter() - t)
            cpu.append(tree_cpu_s() - c)
        eng.close()
    med = float(np.median(times))
    report.update(
        times_s=times,
        cpu_s=cpu,
        cpu_ms_per_patient=1e3 * float(np.median(cpu)) / n,
        cores_used=float(np.median(np.array(cpu) / np.array(times))),
        load_average=list(os.getloadavg()),
        median_s=med,
        patients_per_s=n / med,
        failures=failures,
        peak_mb=mem.peak,
        **extra,
    )
    if head is not None:
        np.savez(f"{args.out}.npz", **head.to_arrays())
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--rtol", type=float)
    ap.add_argument("--atol", type=float)
    ap.add_argument("--rules", action="store_true", help="vtrial with dose-modification rules")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=0, help="patients per engine call (0: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--subset", type=int, default=20)
    ap.add_argument("--select-loose", type=Path, help="reference .npz: pick vtrial's loose rtol")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    try:
        if args.select_loose:
            report = select_loose(args.select_loose)
        else:
            report = measure(args)
    except Exception as exc:  # reported to run.py, which shows it
        report = {"engine": args.engine, "error": f"{type(exc).__name__}: {exc}"}
        traceback.print_exc()
    Path(f"{args.out}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
