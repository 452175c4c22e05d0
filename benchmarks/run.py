"""vtrial benchmark harness: throughput, accuracy, memory and compile time against peers.

Usage::

    .venv/bin/python benchmarks/run.py                     # full run (make bench)
    .venv/bin/python benchmarks/run.py --quick             # tiny batches, 1 repeat
    .venv/bin/python benchmarks/run.py --engines vtrial,rk45 --json out.json

The workload, the reference solution and the error definitions are in
``workload.py``; the peers in ``peers.py``; every engine is measured in a fresh
process (``worker.py``) so peak memory and compile time belong to that engine only.
See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import workload as W

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "latest.json"
ENGINES = ("vtrial", "lsoda", "rk45", "roadrunner", "numbalsoda")
#: patients per timed batch (enough for a few seconds of work on 2 cores)
BATCH = {"vtrial": 30_000, "lsoda": 200, "rk45": 5_000, "roadrunner": 2_000, "numbalsoda": 10_000}
BATCH_QUICK = {"vtrial": 400, "lsoda": 6, "rk45": 50, "roadrunner": 6, "numbalsoda": 50}
#: peers' tolerances: the loosest of a 1e-5, 3e-6, 1e-6, ... ladder (atol = rtol / 100)
#: whose worst error on the first 100 patients was <= 6e-5 on the development machine
PEER_TOL = {
    "lsoda": (3e-6, 3e-8),
    "rk45": (1e-5, 1e-7),
    "roadrunner": (3e-6, 3e-8),
    "numbalsoda": (3e-6, 3e-8),
}
SCALING = (10_000, 100_000)
SCALING_QUICK = (1_000, 4_000)
SCALING_CHUNK = 100_000
WORST_TARGET = 1e-4


def machine_info() -> dict[str, Any]:
    """CPU, OS and versions of everything measured."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("vtrial", "numpy", "scipy", "numba", "llvmlite", "libroadrunner", "numbalsoda"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gb = math.nan
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": cpu,
        "memory_gb": round(mem_gb, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def run_worker(
    tmp: Path, tag: str, args: list[str], env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run worker.py in a fresh process; return its JSON report (npz path under "npz")."""
    out = tmp / tag
    cmd = [sys.executable, str(HERE / "worker.py"), "--out", str(out), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    path = Path(f"{out}.json")
    if not path.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": f"worker exited with {proc.returncode}: {' | '.join(tail)}"}
    report = json.loads(path.read_text())
    if Path(f"{out}.npz").exists():
        report["npz"] = f"{out}.npz"
    return report


def compile_probe(cache: Path) -> dict[str, Any]:
    """First ``run_kernel`` call of a fresh process with ``cache`` as VTRIAL_CACHE_DIR."""
    env = {**os.environ, "VTRIAL_CACHE_DIR": str(cache)}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(HERE / "engine_vtrial.py")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    res: dict[str, Any] = json.loads(proc.stdout)
    res["process_wall_s"] = wall
    return res


def attach_errors(row: dict[str, Any], ref: W.Reference) -> None:
    """Accuracy of a worker's subset outputs against the reference (in place)."""
    npz = row.pop("npz", None)
    if npz is None:
        return
    with np.load(npz) as d:
        out = W.Outputs.from_arrays({k: d[k] for k in d.files})
    row["errors"] = W.errors(out, ref)
    row["cmax_kind"] = out.cmax_kind
    row["subset_failures"] = int(out.head(ref.size).failed().sum())


def fmt(x: Any, spec: str = ".2e") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def table(rows: list[dict[str, Any]]) -> str:
    """The terminal table of the engine rows."""
    head = (
        "engine",
        "setting",
        "batch",
        "patients/s",
        "vtrial/x",
        "CPU ms/pt",
        "cores",
        "cmax err",
        "auc err",
        "nadir err",
        "traj err",
        "fails",
        "peak MB",
        "setup s",
    )
    lines = []
    for r in rows:
        variant = r.get("variant")
        name = r["engine"] + (f" ({variant})" if variant in ("loose", "rules") else "")
        if "unavailable" in r or "error" in r:
            why = r.get("unavailable") or r.get("error")
            lines.append((name, f"unavailable ({why})" if "unavailable" in r else f"error ({why})"))
            continue
        e = r.get("errors", {})
        cmax = fmt(e.get("cmax")) + ("g" if r.get("cmax_kind") == "grid" else "")
        setup = fmt(r.get("compile_s", r.get("setup_s")), ".1f")
        lines.append(
            (
                name,
                r["setting"],
                str(r["batch"]),
                fmt(r["patients_per_s"], ",.0f"),
                fmt(r.get("ratio_vs_vtrial"), ".2f"),
                fmt(r.get("cpu_ms_per_patient"), ".3f"),
                fmt(r.get("cores_used"), ".2f"),
                cmax,
                fmt(e.get("auc")),
                fmt(e.get("nadir")),
                fmt(e.get("traj")),
                str(r["failures"]),
                fmt(r["peak_mb"], ",.0f"),
                setup,
            )
        )
    full = [ln for ln in lines if len(ln) == len(head)]
    widths = [max([len(h), *(len(ln[i]) for ln in full)]) for i, h in enumerate(head)]
    widths[0] = max([widths[0], *(len(ln[0]) for ln in lines)])
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    for ln in lines:
        if len(ln) == len(head):
            out.append("  ".join(c.ljust(w) for c, w in zip(ln, widths, strict=True)))
        else:
            out.append(f"{ln[0].ljust(widths[0])}  {ln[1]}")
    return "\n".join(out)


def parse_pairs(items: list[str], conv: Any) -> dict[str, Any]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        out[name.strip()] = conv(value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="vtrial benchmark: throughput, accuracy, memory, compile time vs peers"
    )
    ap.add_argument("--quick", action="store_true", help="tiny batches, 1 repeat (for tests)")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"subset of {','.join(ENGINES)}")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    ap.add_argument("--repeats", type=int, help="timed repeats per engine (default 3, quick 1)")
    ap.add_argument("--ref-patients", type=int, help="reference patients (default 50, quick 5)")
    ap.add_argument("--batch", action="append", default=[], metavar="ENGINE=N")
    ap.add_argument("--tol", action="append", default=[], metavar="ENGINE=RTOL,ATOL")
    ap.add_argument("--vtrial-loose", metavar="RTOL,ATOL", help="skip the search for it")
    ap.add_argument("--no-scaling", action="store_true", help="skip the scaling section")
    ap.add_argument(
        "--kernel-cache",
        type=Path,
        help="kernel cache to use (default: a new empty one, so compile time is measured)",
    )
    ap.add_argument("--scale-1m", action="store_true", help="add 1,000,000 patients to scaling")
    args = ap.parse_args(argv)

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        ap.error(f"unknown engines {unknown}; choose from {','.join(ENGINES)}")
    repeats = args.repeats or (1 if args.quick else 3)
    nref = args.ref_patients or (5 if args.quick else 50)
    batch = {**(BATCH_QUICK if args.quick else BATCH), **parse_pairs(args.batch, int)}
    tols: dict[str, tuple[float, float]] = {
        **PEER_TOL,
        **parse_pairs(args.tol, lambda v: tuple(float(x) for x in v.split(","))),
    }
    command = shlex.join([Path(sys.executable).name, "benchmarks/run.py", *sys.argv[1:]])
    started = time.time()
    result: dict[str, Any] = {
        "command": command,
        "quick": args.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "machine": machine_info(),
        "workload": {
            "model": "2-cmt oral PK (KA 1, CL 5, V1 50, Q2 10, V2 100, F 1) -> Friberg "
            "(CIRC0 5, MTT 100, GAMMA 0.17, SLOPE 0.5 L/mg)",
            "regimen": f"{W.DOSE:g} mg oral every {W.INTERVAL:g} h x {W.N_DOSES}",
            "outputs": "hourly CP and Circ, 0-1008 h; Cmax, AUC(0-1008 h), nadir of Circ",
            "iiv": f"log-normal omega^2 {W.OMEGA2} on {', '.join(W.IIV)}; seed {W.SEED}",
        },
        "repeats": repeats,
    }
    print(f"vtrial benchmark ({'quick' if args.quick else 'full'}): {command}", flush=True)
    print(f"machine: {result['machine']['cpu']} x{result['machine']['cpu_count']}", flush=True)

    tmp_ctx = tempfile.TemporaryDirectory(prefix="vtrial-bench-")
    tmp = Path(tmp_ctx.name)
    try:
        t0 = time.perf_counter()
        ref = W.reference(nref)
        result["reference"] = {
            "patients": nref,
            "method": "scipy DOP853 rtol 1e-12 atol 1e-14, dose to dose; exact Cmax by events",
            "seconds": time.perf_counter() - t0,
        }
        ref_path = tmp / "reference.npz"
        np.savez(ref_path, **ref.__dict__)
        print(f"reference: {nref} patients in {result['reference']['seconds']:.1f} s", flush=True)

        rows: list[dict[str, Any]] = []
        # an empty kernel cache, so the compile time is measured (--kernel-cache: reuse one)
        cache = args.kernel_cache or tmp / "vtrial-cache"
        vt_env = {**os.environ, "VTRIAL_CACHE_DIR": str(cache)}
        if "vtrial" in engines:
            print("vtrial: compile (fresh process, empty kernel cache) ...", flush=True)
            first = compile_probe(cache)
            cached = compile_probe(cache)
            result["vtrial_compile"] = {
                "empty_cache": first,
                "cached": cached,
                "note": "first run_kernel call (2 patients) of a fresh process; "
                "import_build_s is importing vtrial and building the model",
            }
            print(
                f"  first call {fmt(first.get('first_call_s'), '.1f')} s, "
                f"cached {fmt(cached.get('first_call_s'), '.2f')} s",
                flush=True,
            )
            if args.vtrial_loose:
                rt, at = (float(x) for x in args.vtrial_loose.split(","))
                sel: dict[str, Any] = {"rtol": rt, "atol": at, "given": True}
            else:
                sel_args = ["--engine", "vtrial", "--select-loose", str(ref_path)]
                sel = run_worker(tmp, "select", sel_args, vt_env)
            result["vtrial_loose_selection"] = sel
            variants: list[tuple[str, list[str]]] = [("default", [])]
            if sel.get("rtol"):
                variants.append(("loose", ["--rtol", str(sel["rtol"]), "--atol", str(sel["atol"])]))
            # the same workload with dose-modification rules decided before every dose
            variants.append(("rules", ["--rules"]))
            for variant, extra in variants:
                print(f"vtrial ({variant}): {batch['vtrial']} patients x {repeats} ...", flush=True)
                row = run_worker(
                    tmp,
                    f"vtrial-{variant}",
                    [
                        "--engine",
                        "vtrial",
                        "--batch",
                        str(max(batch["vtrial"], nref)),
                        "--repeats",
                        str(repeats),
                        "--subset",
                        str(nref),
                        *extra,
                    ],
                    vt_env,
                )
                row.update(engine="vtrial", variant=variant)
                if variant == "default":
                    row["compile_s"] = first.get("first_call_s")
                    row["cached_load_s"] = cached.get("first_call_s")
                rows.append(row)
        for name in engines:
            if name == "vtrial":
                continue
            rt, at = tols[name]
            print(f"{name}: {batch[name]} patients x {repeats} ...", flush=True)
            row = run_worker(
                tmp,
                name,
                [
                    "--engine",
                    name,
                    "--batch",
                    str(max(batch[name], nref)),
                    "--repeats",
                    str(repeats),
                    "--subset",
                    str(nref),
                    "--rtol",
                    str(rt),
                    "--atol",
                    str(at),
                ],
            )
            row["engine"] = name
            rows.append(row)
        base = next(
            (r for r in rows if r.get("variant") == "default" and "patients_per_s" in r), None
        )
        for r in rows:
            if r.get("variant") != "rules":  # the rules change the doses: no reference
                attach_errors(r, ref)
            if base is not None and "patients_per_s" in r:
                r["ratio_vs_vtrial"] = base["patients_per_s"] / r["patients_per_s"]
        result["engines"] = rows

        scaling = []
        if "vtrial" in engines and not args.no_scaling:
            sizes = list(SCALING_QUICK if args.quick else SCALING)
            if args.scale_1m:
                sizes.append(1_000_000)
            for n in sizes:
                reps = 1 if (args.quick or n > 20_000) else repeats
                print(f"scaling: vtrial {n} patients ...", flush=True)
                row = run_worker(
                    tmp,
                    f"scale-{n}",
                    [
                        "--engine",
                        "vtrial",
                        "--batch",
                        str(n),
                        "--chunk",
                        str(SCALING_CHUNK),
                        "--repeats",
                        str(reps),
                        "--subset",
                        "1",
                    ],
                    vt_env,
                )
                row.pop("npz", None)
                row["patients"] = n
                scaling.append(row)
        result["scaling"] = scaling
    finally:
        tmp_ctx.cleanup()

    result["seconds"] = time.time() - started
    print()
    print(table(result["engines"]))
    notes = [
        "patients/s: median of the repeats (compile and process start excluded)",
        "vtrial/x: vtrial (default) patients/s divided by the engine's patients/s",
        "CPU ms/pt: CPU time of all threads and processes per patient (median repeat)",
        "cores: CPU time / wall time (about 2 for a 2-core engine on an idle machine; "
        "lower when other work competes for the cores)",
        f"errors: worst relative error over the first {nref} patients vs the DOP853 "
        "reference (traj: scaled by each patient's maximum)",
        "g: Cmax taken on the hourly grid, compared with the reference's grid maximum "
        "(vtrial's Cmax is exact, compared with the exact maximum)",
        "peak MB: resident set of the engine's process tree",
        "setup s: first call in a fresh process (vtrial default: empty kernel cache)",
    ]
    print("\n" + "\n".join(notes))
    rules_row = next((r for r in result["engines"] if r.get("variant") == "rules"), None)
    base_row = next((r for r in result["engines"] if r.get("variant") == "default"), None)
    if rules_row is not None and base_row is not None and "patients_per_s" in rules_row:
        print(
            f"vtrial with rules (a decision before each of the {W.N_DOSES} doses, hold "
            f"and reduce): {rules_row['patients_per_s']:,.0f} patients/s vs "
            f"{base_row['patients_per_s']:,.0f} without (speed ratio "
            f"{rules_row['patients_per_s'] / base_row['patients_per_s']:.2f}); CPU per "
            f"patient {rules_row['cpu_ms_per_patient'] / base_row['cpu_ms_per_patient']:.2f}x"
        )
    vc = result.get("vtrial_compile")
    if vc:
        print(
            f"vtrial compile: {fmt(vc['empty_cache'].get('first_call_s'), '.1f')} s first call "
            f"with an empty cache; {fmt(vc['cached'].get('first_call_s'), '.2f')} s from "
            f"numba's on-disk cache (import + model build "
            f"{fmt(vc['cached'].get('import_build_s'), '.2f')} s)"
        )
    sel = result.get("vtrial_loose_selection")
    if sel and not sel.get("rtol"):
        print("vtrial (loose): no setting of the ladder met the worst-error target")
    if result["scaling"]:
        print("\nscaling (vtrial default tolerances, one process, 2 threads)")
        cols = ("patients", "chunk", "seconds", "patients/s", "CPU ms/pt", "cores", "peak MB")
        print("  ".join(f"{c:>10}" for c in cols) + "  fails")
        for s in result["scaling"]:
            if "median_s" not in s:
                print(f"{s['patients']:>10}  error: {s.get('error') or s.get('unavailable')}")
                continue
            print(
                f"{s['patients']:>10,}  {min(s['chunk'], s['patients']):>10,}  "
                f"{s['median_s']:>10.2f}  {s['patients_per_s']:>10,.0f}  "
                f"{s['cpu_ms_per_patient']:>10.3f}  {s['cores_used']:>10.2f}  "
                f"{s['peak_mb']:>10,.0f}  {s['failures']}"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    print(f"\nresults: {args.json} ({result['seconds']:.0f} s)")
    for r in result["engines"]:
        worst = r.get("errors", {}).get("worst", 0.0)
        if r["engine"] == "vtrial" and not worst <= WORST_TARGET:
            print(f"WARNING: vtrial ({r.get('variant')}) worst error {worst:.2e} > 1e-4")
    return 0


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x).__name__)


if __name__ == "__main__":
    sys.exit(main())
