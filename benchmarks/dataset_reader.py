"""Time vtrial's dataset reader, a dataset simulated as recorded, and a dataset study.

``python benchmarks/dataset_reader.py [--subjects N]`` writes N subjects (default
100,000) of 20 records each (10 oral doses every 12 h whose amounts change from dose to
dose, a sparse sample after each, a weight that changes at every record and with it the
clearance column ``CL = 5 (WT/70)^0.75``) to a temporary CSV, then times
:func:`vtrial.data.dataset.read_dataset` on it and ``vtrial.simulate(pk_2cmt,
data=...)`` on the records (every subject with its own doses, its samples and its
time-varying clearance: 20 occasions each), and the simulation of a tenth of the
subjects, to show that the cost is linear in subjects. It prints seconds, subjects per
second and the process's peak resident set. The dataset is generated here, from a
seed: no real data.

Then (``--workflow SIZES``, default 1,000, 25,000 and 100,000 subjects, after an
untabled warm-up run of ``--warmup`` 200; ``--no-workflow`` to skip, ``--workflow-only``
to run only this part) a dataset *study* runs through the whole Snakemake workflow for
each size: :func:`write_histories` writes individual dosing
histories (oral every 12 or 24 h through ``ADDL``/``II``, some with a missed or a changed
dose, 3 to 6 samples at random times, the weight changing once in 40 % of subjects) as
Parquet, :func:`write_study` a study of it (``population.dataset: {doses: recorded}``,
``pk_1cmt`` with ``CL = 5 (WT/70)^0.75``, IIV, residual error, the observations at the
observation records; 1 shard, a local Dask cluster of ``--cores`` workers, chunks of
10,000), and ``snakemake --cores N --config study=... results=...`` runs in a temporary
folder while psutil samples the resident set of its whole process tree (Snakemake, each
rule's script, the Dask workers). It prints wall time, CPU time, the tree's peak and each
stage's seconds and peak, and the marginal cost per subject between sizes (linear cost:
equal). The peer, side by side: the same records simulated by ``vtrial.simulate(pk_1cmt,
data=...)`` in a fresh process (the engine alone: read and check, then simulate, with
the typical clearance of each record's weight as a column; no IIV, no residual error,
no files written), so ``workflow/engine`` is the workflow's overhead.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from vtrial import build_model, simulate
from vtrial.data.dataset import read_dataset

PER_SUBJECT = 20
ROOT = Path(__file__).resolve().parents[1]
#: subjects of the workflow case: the smallest shows the fixed cost of a run, the
#: marginal cost per subject between sizes whether the cost is linear
WORKFLOW_SIZES = (1_000, 25_000, 100_000)
WORKFLOW_CHUNK = 10_000
WARMUP_SUBJECTS = 200
#: the workflow case's model: clearance on the (time-varying) weight, with IIV
WORKFLOW_MODEL = {
    "pk": "pk_1cmt",
    "parameters": {"CL": {"value": 5, "covariates": "(WT / 70) ** 0.75"}},
    "iiv": {"omega": {"CL": 0.09, "V1": 0.04, "KA": 0.16}},
    "residual_error": {"CP": {"proportional": 0.15, "additive": 0.01}},
}
STAGES = ("snakemake", "sample_population", "simulate", "aggregate", "report", "manifest")


def write_dataset(path: Path, subjects: int, seed: int = 1) -> None:
    """``subjects`` x 20 records: dose, sample, dose, sample, ... every 12 h."""
    rng = np.random.default_rng(seed)
    n = subjects * PER_SUBJECT
    evid = np.tile(np.array([1, 0] * (PER_SUBJECT // 2)), subjects)
    frame = pd.DataFrame(
        {
            "ID": np.repeat(np.arange(1, subjects + 1), PER_SUBJECT),
            "TIME": np.tile(np.arange(PER_SUBJECT) * 12.0, subjects),
            "EVID": evid,
            "AMT": np.where(evid == 1, 100.0, 0.0),
            "CMT": np.where(evid == 1, 1, 2),
            "MDV": 1 - (evid == 0),
            "DV": np.where(evid == 0, rng.lognormal(size=n).round(3), np.nan),
            "WT": np.round(70 + rng.normal(size=n), 1),
        }
    )
    frame["AMT"] *= np.where(evid == 1, rng.choice([0.5, 1.0, 1.5], size=n), 1.0)
    frame["CL"] = np.round(5.0 * (frame["WT"] / 70.0) ** 0.75, 4)
    frame.to_csv(path, index=False, na_rep=".")


def write_histories(path: Path, subjects: int, seed: int = 2) -> pd.DataFrame:
    """Individual dosing histories of ``subjects`` subjects (seeded), written as Parquet.

    Each subject: oral doses (``CMT`` 1) of 50, 100 or 200 mg every 12 h (14-28 doses)
    or 24 h (7-14 doses) as one dose record with ``ADDL``/``II``; 15 % miss one dose
    and 15 % change the amount (x0.5 or x1.5) from some dose on (a second dose record);
    3 to 6 samples (``CMT`` 2) at random times up to one interval after the last dose;
    the weight (median 70 kg, 20 % CV) changes once, by a 6 % SD, in 40 % of subjects
    (on every record from a random time on). Returns the records.
    """
    rng = np.random.default_rng(seed)
    n = subjects
    ids = np.arange(1, n + 1)
    ii = np.where(rng.random(n) < 0.5, 12.0, 24.0)
    doses = np.where(ii == 12.0, rng.integers(14, 29, n), rng.integers(7, 15, n))
    amt = rng.choice([50.0, 100.0, 200.0], n)
    kind = rng.choice(3, n, p=[0.7, 0.15, 0.15])  # as planned, one missed, a changed amount
    k = 1 + (rng.random(n) * (doses - 2)).astype(np.int64)  # doses before the event
    two = kind > 0
    start2 = np.where(kind == 1, k + 1, k) * ii
    n2 = np.where(kind == 1, doses - k - 1, doses - k)
    amt2 = np.where(kind == 1, amt, amt * np.where(rng.random(n) < 0.5, 0.5, 1.5))
    end = np.where(two, start2 + (n2 - 1) * ii, (doses - 1) * ii) + ii
    m = rng.integers(3, 7, n)
    wt = np.round(70.0 * np.exp(0.2 * rng.standard_normal(n)), 1)
    changes = rng.random(n) < 0.4
    t_change = rng.random(n) * end
    wt2 = np.round(wt * (1 + 0.06 * rng.standard_normal(n)), 1)

    def doses_at(at: np.ndarray, time: np.ndarray, amount: np.ndarray, count: np.ndarray):
        return pd.DataFrame(
            {
                "ID": ids[at],
                "TIME": time,
                "EVID": 1,
                "AMT": amount,
                "CMT": 1,
                "II": ii[at],
                "ADDL": count - 1,
                "ORDER": 0,
            }
        )

    first = doses_at(np.arange(n), np.zeros(n), amt, np.where(two, k, doses))
    s2 = np.flatnonzero(two)
    second = doses_at(s2, start2[s2], amt2[s2], n2[s2])
    subj = np.repeat(np.arange(n), m)
    samples = pd.DataFrame(
        {
            "ID": ids[subj],
            "TIME": np.round(0.5 + rng.random(subj.size) * (end[subj] - 0.5), 2),
            "EVID": 0,
            "AMT": 0.0,
            "CMT": 2,
            "II": 0.0,
            "ADDL": 0,
            "ORDER": 1,  # a sample at a dose time comes after the dose record
        }
    )
    frame = pd.concat([first, second, samples], ignore_index=True)
    frame = frame.sort_values(["ID", "TIME", "ORDER"], kind="stable", ignore_index=True)
    frame = frame.drop(columns="ORDER")
    s = frame["ID"].to_numpy() - 1
    frame["WT"] = np.where(changes[s] & (frame["TIME"].to_numpy() >= t_change[s]), wt2[s], wt[s])
    evid = frame["EVID"].to_numpy()
    frame["MDV"] = (evid != 0).astype(np.int64)
    frame["DV"] = np.where(evid == 0, np.round(rng.lognormal(size=len(frame)), 3), np.nan)
    frame.to_parquet(path, index=False)
    return frame


def write_study(folder: Path, data: str, workers: int) -> Path:
    """The study of the workflow case: the subjects of ``data`` (a file in ``folder``)
    simulated as recorded."""
    study = {
        "study": {"name": "bench_dataset", "seed": 1},
        "population": {"dataset": {"path": data, "doses": "recorded"}},
        "model": WORKFLOW_MODEL,
        "outputs": {"observations": {"outputs": ["CP"]}},
        "execution": {"shards": 1, "workers": workers, "chunk_size": WORKFLOW_CHUNK},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


class TreeMemory:
    """Samples (psutil, every ``interval`` s) the resident set of a process and its
    descendants: the peak of the sum over the tree, and of each stage (a Snakemake
    rule's script with its descendants; ``snakemake`` for the main process), with the
    times a stage was first and last seen. Without psutil: nothing (see ``available``)."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.peak_mb = 0.0
        self.stages: dict[str, list[float]] = {}  # stage -> [first s, last s, peak MB]
        self._interval = interval
        self._stop = threading.Event()
        self._labels: dict[int, str] = {}
        self._t0 = time.perf_counter()
        try:
            import psutil

            self._root: Any = psutil.Process(pid)
        except Exception:  # no psutil, or the process has exited
            self._root = None
        self.available = self._root is not None
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _label(self, proc: Any) -> str:
        label = self._labels.get(proc.pid)
        if label is None:
            found = re.search(r"\.(\w+)\.py$", " ".join(proc.cmdline()))
            label = found.group(1) if found else self._labels.get(proc.ppid(), "snakemake")
            self._labels[proc.pid] = label
        return label

    def sample(self) -> None:
        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except Exception:  # the tree has exited
            return
        now = time.perf_counter() - self._t0
        per: dict[str, int] = {}
        for proc in procs:  # parents before children (psutil lists them so)
            with contextlib.suppress(Exception):  # a process may exit while sampled
                rss = proc.memory_info().rss
                label = self._label(proc)
                per[label] = per.get(label, 0) + rss
        self.peak_mb = max(self.peak_mb, sum(per.values()) / 2**20)
        for label, rss in per.items():
            seen = self.stages.setdefault(label, [now, now, 0.0])
            seen[1] = now
            seen[2] = max(seen[2], rss / 2**20)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def __enter__(self) -> TreeMemory:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()


def children_cpu_s() -> float:
    """CPU seconds of this process's finished (waited-for) descendants."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def snakemake_command() -> list[str]:
    exe = Path(sys.executable).parent / "snakemake"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "snakemake"]


def run_workflow(folder: Path, subjects: int, cores: int) -> dict[str, Any]:
    """Generate ``subjects`` histories in ``folder``, run their study through Snakemake
    there and measure it; also the engine peer on the same records."""
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    frame = write_histories(folder / "data.parquet", subjects)
    written_s = time.perf_counter() - t0
    study = write_study(folder, "data.parquet", cores)
    results = folder / "results"
    cmd = [
        *snakemake_command(),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(folder),
        "--cores",
        str(cores),
        "--config",
        f"study={study}",
        f"results={results}",
    ]
    log = folder / "snakemake.log"
    cpu0 = children_cpu_s()
    with log.open("w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        with TreeMemory(proc.pid) as mem:
            rc = proc.wait()
        seconds = time.perf_counter() - t0
    cpu = children_cpu_s() - cpu0
    if rc != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"{shlex.join(cmd)} exited with {rc}:\n{tail}")
    sim_log = (results / "bench_dataset" / "logs" / "simulate" / "part-00000.log").read_text()
    shard = re.search(r"shard \d+: \d+ patients in ([\d.]+) s", sim_log)
    kernel = re.search(r"kernel of model .*: done in ([\d.]+) s", sim_log)
    obs = pd.read_parquet(results / "bench_dataset" / "observations" / "part-00000.parquet")
    # the peer's records: the same, with the typical clearance of each record's weight
    peer_path = folder / "peer.parquet"
    frame.assign(CL=5.0 * (frame["WT"] / 70.0) ** 0.75).to_parquet(peer_path, index=False)
    row = {
        "subjects": subjects,
        "records": len(frame),
        "observations": len(obs),
        "generated_s": written_s,
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_mb": mem.peak_mb if mem.available else resource_peak_children_mb(),
        "peak_kind": "tree" if mem.available else "largest process",
        "stages": dict(mem.stages),
        "shard_s": float(shard.group(1)) if shard else float("nan"),
        "kernel_s": float(kernel.group(1)) if kernel else float("nan"),
        "engine": run_peer(peer_path),
    }
    return row


def resource_peak_children_mb() -> float:
    """Largest resident set of any finished descendant (without psutil)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def run_peer(path: Path) -> dict[str, Any]:
    """The engine alone on the records of ``path``, in a fresh process (``--peer``)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--peer", str(path)]
    cpu0 = children_cpu_s()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited with {proc.returncode}:\n{proc.stderr}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(process_s=wall, cpu_s=children_cpu_s() - cpu0)
    return out


def peer(path: Path) -> None:
    """``--peer PATH``: read and check ``path``, then ``vtrial.simulate(pk_1cmt,
    data=...)`` of every record; prints one JSON line (seconds, peak resident set)."""
    model = build_model({"pk": "pk_1cmt"})
    t0 = time.perf_counter()
    ds = read_dataset(path)
    read_s = time.perf_counter() - t0
    simulate(model, data=dataclasses.replace(ds, records=ds.records.head(40)))  # the kernel
    t0 = time.perf_counter()
    out = simulate(model, data=ds)
    simulate_s = time.perf_counter() - t0
    assert (out["solver_status"] == "ok").all()
    print(json.dumps({"read_s": read_s, "simulate_s": simulate_s, "peak_mb": own_peak_mb()}))


def own_peak_mb() -> float:
    """This process's peak resident set since it started its program (``VmHWM``; the
    ``getrusage`` maximum of a child process also counts the parent it was forked from)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report_workflow(
    rows: list[dict[str, Any]], cores: int, warm: dict[str, Any] | None = None
) -> None:
    """The workflow case's table, stages and linearity, in the style of ``run.py``."""
    print(
        f"\ndataset study through the workflow (snakemake --cores {cores}: 1 shard, "
        f"{cores} Dask workers, chunks of {WORKFLOW_CHUNK:,}; pk_1cmt, CL = 5 (WT/70)^0.75 "
        "on the recorded weight, IIV on CL, V1 and KA, residual error on CP at every "
        "observation record)"
    )
    cols = (
        "subjects",
        "records",
        "obs",
        "wall s",
        "subjects/s",
        "cores",
        "peak MB",
        "shard s",
        "engine s",
        "wf/engine",
        "engine MB",
    )
    print("  ".join(f"{c:>10}" for c in cols))
    for r in rows:
        e = r["engine"]
        engine_s = e["read_s"] + e["simulate_s"]
        print(
            f"{r['subjects']:>10,}  {r['records']:>10,}  {r['observations']:>10,}  "
            f"{r['seconds']:>10.1f}  {r['subjects'] / r['seconds']:>10,.0f}  "
            f"{r['cpu_s'] / r['seconds']:>10.2f}  {r['peak_mb']:>10,.0f}  "
            f"{r['shard_s']:>10.1f}  {engine_s:>10.1f}  {r['seconds'] / engine_s:>10.1f}  "
            f"{e['peak_mb']:>10,.0f}"
        )
    notes = [
        "wall s: the whole `snakemake` run (5 rules) from start to exit; cores: CPU time of "
        "the process tree / wall time",
        f"peak MB: resident set of the {rows[0]['peak_kind']} (Snakemake, every rule's "
        "script and its Dask workers; sampled every 50 ms)",
        "shard s: the simulate rule's own figure for its shard (from its log)",
        "engine s: vtrial.simulate(pk_1cmt, data=...) of the same records in a fresh "
        "process, read and check + simulate (typical CL from each record's weight, no "
        "IIV, no residual error, nothing written); wf/engine = wall s / engine s",
    ]
    print("\n".join(notes))
    big = rows[-1]
    if big["stages"]:
        parts = []
        for name in STAGES:
            if name in big["stages"]:
                first, last, mb = big["stages"][name]
                span = big["seconds"] if name == "snakemake" else last - first
                parts.append(f"{name} {span:.1f} s / {mb:,.0f} MB")
        print(f"stages at {big['subjects']:,} subjects (seconds / peak MB): " + ", ".join(parts))
    e = big["engine"]
    print(
        f"engine at {big['subjects']:,} subjects: read and check {e['read_s']:.1f} s, "
        f"simulate {e['simulate_s']:.1f} s ({big['subjects'] / e['simulate_s']:,.0f} "
        f"subjects/s)"
    )
    if warm is not None:
        print(
            f"warm-up run before the table ({warm['subjects']:,} subjects): "
            f"{warm['seconds']:.1f} s, of which loading or compiling the kernel "
            f"{warm['kernel_s']:.1f} s"
        )
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        per = (b["seconds"] / b["subjects"]) / (a["seconds"] / a["subjects"])
        line = f"linearity: cost per subject {b['subjects']:,} / {a['subjects']:,} = {per:.2f}"
        marginal_b = (b["seconds"] - a["seconds"]) / (b["subjects"] - a["subjects"])
        line += (
            f"; marginal cost {a['subjects']:,} -> {b['subjects']:,}: "
            f"{marginal_b * 1e3:.3f} ms/subject"
        )
        if len(rows) >= 3:
            z = rows[-3]
            marginal_a = (a["seconds"] - z["seconds"]) / (a["subjects"] - z["subjects"])
            fixed = z["seconds"] - z["subjects"] * marginal_a
            line += (
                f", {z['subjects']:,} -> {a['subjects']:,}: {marginal_a * 1e3:.3f} ms/subject "
                f"(ratio {marginal_b / marginal_a:.2f}); fixed cost about {fixed:.0f} s"
            )
            # CPU time is less sensitive than wall time to other work on the machine
            cpu_b = (b["cpu_s"] - a["cpu_s"]) / (b["subjects"] - a["subjects"])
            cpu_a = (a["cpu_s"] - z["cpu_s"]) / (a["subjects"] - z["subjects"])
            line += (
                f"; marginal CPU {cpu_b * 1e3:.3f} and {cpu_a * 1e3:.3f} ms/subject "
                f"(ratio {cpu_b / cpu_a:.2f})"
            )
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=100_000)
    ap.add_argument("--no-simulate", action="store_true", help="time the reader only")
    ap.add_argument(
        "--workflow",
        default=",".join(str(n) for n in WORKFLOW_SIZES),
        metavar="N,N,...",
        help="subjects of the dataset studies run through Snakemake (smallest first)",
    )
    ap.add_argument(
        "--warmup",
        type=int,
        default=WARMUP_SUBJECTS,
        metavar="N",
        help="subjects of a first, untabled workflow run (loads or compiles the kernel, "
        "warms the file cache); 0: none",
    )
    ap.add_argument("--no-workflow", action="store_true", help="skip the workflow case")
    ap.add_argument("--workflow-only", action="store_true", help="only the workflow case")
    ap.add_argument("--cores", type=int, default=2, help="snakemake --cores and Dask workers")
    ap.add_argument("--json", type=Path, help="write the workflow case's figures here")
    ap.add_argument(
        "--keep", type=Path, metavar="DIR", help="run the workflow case in DIR and keep it"
    )
    ap.add_argument("--peer", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer is not None:
        peer(args.peer)
        return
    if not args.workflow_only:
        reader_and_engine(args.subjects, args.no_simulate)
    if args.no_workflow:
        return
    sizes = [int(x) for x in args.workflow.split(",") if x.strip()]
    rows = []
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            where = args.keep.resolve()
        else:
            where = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vtrial-wf-")))
        warm = None
        if sizes and args.warmup > 0:
            print(f"workflow: warm-up, dataset study of {args.warmup:,} subjects ...", flush=True)
            warm = run_workflow(where / "warmup", args.warmup, args.cores)
        for n in sizes:
            print(f"workflow: dataset study of {n:,} subjects ...", flush=True)
            rows.append(run_workflow(where / f"n{n}", n, args.cores))
    if rows:
        report_workflow(rows, args.cores, warm)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"workflow": rows}, indent=2) + "\n")


def reader_and_engine(subjects: int, no_simulate: bool) -> None:
    """The reader on ``subjects`` x 20 records, then ``vtrial.simulate(pk_2cmt, data=)``
    of all of them and of a tenth."""
    with tempfile.TemporaryDirectory(prefix="vtrial-dataset-") as tmp:
        path = Path(tmp) / "dataset.csv"
        write_dataset(path, subjects)
        t0 = time.perf_counter()
        ds = read_dataset(path)
        seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = ds.summary()["subjects"]
    print(
        f"dataset reader: {n:,} subjects, {len(ds.records):,} records "
        f"checked in {seconds:.1f} s; peak resident set {peak_mb:,.0f} MB",
        flush=True,
    )
    if no_simulate:
        return
    model = build_model({"pk": "pk_2cmt"})
    tenth = dataclasses.replace(ds, records=ds.records[ds.records["ID"] <= max(1, n // 10)])
    simulate(model, data=dataclasses.replace(ds, records=ds.records.head(40)))  # compile first
    timings = {}
    for label, part in (("a tenth", tenth), ("all", ds)):
        t0 = time.perf_counter()
        out = simulate(model, data=part)
        timings[label] = (time.perf_counter() - t0, part.records["ID"].nunique())
        assert (out["solver_status"] == "ok").all()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (t10, n10), (t_all, n_all) = timings["a tenth"], timings["all"]
    print(
        f"dataset simulation (pk_2cmt, 20 occasions each): {n_all:,} subjects in "
        f"{t_all:.1f} s ({n_all / t_all:,.0f} subjects/s); a tenth ({n10:,}) in {t10:.1f} s: "
        f"cost per subject all / tenth = {(t_all / n_all) / (t10 / n10):.2f}; "
        f"peak resident set {peak_mb:,.0f} MB",
        flush=True,
    )


if __name__ == "__main__":
    main()
