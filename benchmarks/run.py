"""Run the benchmark suite: ``python -m benchmarks.run`` (what ``make bench`` runs).

It generates (or finds in its cache) LUNA16-sized synthetic scans, measures the machine's copy
bandwidth, then runs every case: each contender (ctflow on 1 and 2 threads, each peer) in its
own subprocess (:mod:`benchmarks.worker`) on the same cached data, medians of ``--repeats``
timed calls after a warm-up. Outputs are compared with ctflow's (the agreement checks), and the
results go to ``latest.json`` and a markdown report (``docs/benchmarks.md`` by default).

Options::

    --quick            small scans and 2 repeats: a smoke test of the whole suite (~minutes)
    --cases A,B        only these cases (see --list)
    --tools T,U        only contenders of these tools (ctflow is always kept)
    --repeats N        timed calls per contender (default 5; at least 5 for a real run)
    --out DIR          write DIR/latest.json and DIR/benchmarks.md
    --list             print the cases and exit

Every benchmark is a case of the same harness (``--list`` names them all). A case is run
without ``--cases`` unless it says otherwise: ``dask`` (a Dask ``LocalCluster`` of this
machine) runs only when named. ``pipeline_pairs`` times ctflow's pipeline on 1 and 2 threads in
alternating pairs inside one process (an interleaved case:
:class:`benchmarks.harness.Interleave`); ``tuning`` runs the pipeline once per setting of
:mod:`ctflow.tuning`, each in a worker process with its own environment.

Examples
--------
``python -m benchmarks.run --quick --cases normalize_hu --out /tmp/bench``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import compute_scaling, copy_bandwidth, machine
from benchmarks.data import PROFILES, BenchData
from benchmarks.harness import THREAD_ENV, Case, Contender
from benchmarks.report import case_summary, evaluate_targets, markdown

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON_DIR = ROOT / "benchmarks" / "results"
DEFAULT_DOC = ROOT / "docs" / "benchmarks.md"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small scans, 2 repeats (smoke test)")
    p.add_argument("--profile", choices=sorted(PROFILES), help="data sizes (default full/quick)")
    p.add_argument("--cases", help="comma-separated case names (default: all)")
    p.add_argument("--tools", help="comma-separated peer tools to keep (ctflow always runs)")
    p.add_argument("--repeats", type=int, help="timed calls per contender (default 5, quick 2)")
    p.add_argument("--out", type=Path, help="folder for latest.json and benchmarks.md")
    p.add_argument("--cache", type=Path, help="data cache folder ($CTFLOW_BENCH_CACHE)")
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds per contender")
    p.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="seconds of timed calls per contender; slower contenders make fewer calls (>= 3)",
    )
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    return p.parse_args(argv)


def _wanted(args: argparse.Namespace) -> list[str]:
    return [c.strip() for c in (args.cases or "").split(",") if c.strip()]


def _select(args: argparse.Namespace, profile: Any) -> list[Case]:
    from benchmarks.cases import all_cases

    cases = [c for c in all_cases() if c.when is None or c.when(profile)]
    if not args.cases:
        return [c for c in cases if c.in_default]
    wanted = _wanted(args)
    known = {c.name for c in cases}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {sorted(known)}")
    return [c for c in cases if c.name in wanted]


def _keep(contender: Contender, tools: set[str] | None) -> bool:
    return tools is None or contender.is_ctflow or contender.tool in tools


def _environment(contenders: list[Contender]) -> dict[str, str]:
    """The worker's environment: thread counts (the most any contender uses), then the
    contenders' own variables (None unsets one)."""
    env = dict(os.environ)
    threads = max(c.threads for c in contenders)
    for key in THREAD_ENV:
        env[key] = str(threads)
    own: dict[str, str | None] = {}
    for c in contenders:
        for key, value in (c.env or {}).items():
            if key in own and own[key] != value:
                raise ValueError(f"contenders of one process disagree on {key}")
            own[key] = value
    for key, value in own.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _spawn(
    spec: dict[str, Any], contenders: list[Contender], work: Path, timeout: float
) -> dict[str, Any]:
    """Run one worker process on ``spec``; its result JSON (or why there is none)."""
    name = f"{spec['case']}-{spec['index']}"
    spec_path = work / f"{name}.json"
    result_path = work / f"{name}.result.json"
    spec["result"] = str(result_path)
    spec_path.write_text(json.dumps(spec))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.worker", str(spec_path)],
            cwd=ROOT,
            env=_environment(contenders),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    if not result_path.is_file():
        tail = (proc.stderr or "").strip().splitlines()[-5:]
        return {"error": f"worker exited with {proc.returncode}: {' | '.join(tail)}"}
    result: dict[str, Any] = json.loads(result_path.read_text())
    result["wall_s"] = round(wall, 1)
    return result


def _run_one(
    case: Case,
    contender: Contender,
    profile: str,
    cache: Path | None,
    repeats: int,
    work: Path,
    timeout: float,
    index: int,
    budget: float | None = None,
) -> dict[str, Any]:
    spec = {
        "case": case.name,
        "index": index,
        "contender": contender.key,
        "profile": profile,
        "cache": str(cache) if cache else None,
        "repeats": repeats,
        "warmup": 1,
        "output": str(work / f"{case.name}-{index}.npz"),
        "budget_s": budget,
    }
    return _spawn(spec, [contender], work, timeout)


def _run_together(
    case: Case,
    contenders: list[Contender],
    profile: str,
    cache: Path | None,
    rounds: int,
    work: Path,
    timeout: float,
) -> list[dict[str, Any]]:
    """Run the contenders of an interleaved case in one worker; one result per contender."""
    spec = {
        "case": case.name,
        "index": "all",
        "contenders": [c.key for c in contenders],
        "profile": profile,
        "cache": str(cache) if cache else None,
        "repeats": rounds,
        "warmup": 1,
        "outputs": [str(work / f"{case.name}-{i}.npz") for i in range(len(contenders))],
    }
    res = _spawn(spec, contenders, work, timeout * len(contenders))
    if "results" in res:
        for r in res["results"]:
            r["wall_s"] = res["wall_s"]
        return list(res["results"])
    return [dict(res) for _ in contenders]


def _load_output(path: str) -> dict[str, np.ndarray]:
    with np.load(path, mmap_mode="r") as z:
        return {k: np.asarray(z[k]) for k in z.files}


def run_case(
    case: Case,
    data: BenchData,
    repeats: int,
    work: Path,
    tools: set[str] | None,
    timeout: float,
    budget: float | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Run every contender of ``case`` and check their outputs against the reference."""
    data.prepare(case.parts)
    reps = repeats if case.max_repeats is None else min(repeats, max(case.max_repeats, 5))
    reps = max(reps, case.min_repeats or 0)
    kept = [c for c in case.contenders if _keep(c, tools)]
    cache = data.dir.parent
    if case.interleave is not None:
        results = _run_together(case, kept, data.profile.name, cache, reps, work, timeout)
    else:
        results = [
            _run_one(case, c, data.profile.name, cache, reps, work, timeout, i, budget)
            for i, c in enumerate(kept)
        ]
    rows: list[dict[str, Any]] = []
    for contender, res in zip(kept, results, strict=True):
        row = {
            "key": contender.key,
            "tool": contender.tool,
            "how": contender.how,
            "threads": contender.threads_label or str(contender.threads),
            "n_threads": contender.threads,
            **{k: v for k, v in res.items() if k not in ("case", "contender")},
        }
        rows.append(row)
        if "error" in res:
            log(f"  {contender.key:<70} ERROR {res['error']}")
        else:
            extra = res["peak_extra_mb"]
            peak = "(one process)" if extra is None else f"peak +{extra} MiB"
            log(f"  {contender.key:<70} {res['median']:8.4f} s  {peak}")
    _check(case, rows)
    for row in rows:
        out = row.pop("output", None)
        if out and Path(out).exists():
            Path(out).unlink()
    return {
        "name": case.name,
        "title": case.title,
        "note": case.note,
        "items": case.n_items(data.profile),
        "reference": case.reference_key(),
        "rows": rows,
    }


def _check(case: Case, rows: list[dict[str, Any]]) -> None:
    ref_key = case.reference_key()
    ref_row = next((r for r in rows if r["key"] == ref_key and "output" in r), None)
    if ref_row is None:
        for r in rows:
            r["agree"] = {"ok": False, "why": f"reference {ref_key} did not run"}
        return
    ref = _load_output(ref_row["output"])
    if case.validate is not None:
        ok, metrics = case.validate(ref)
        ref_row["valid"] = {"ok": bool(ok), **metrics}
    for r in rows:
        if "output" not in r:
            r["agree"] = {"ok": False, "why": r.get("error", "no output")}
            continue
        out = ref if r is ref_row else _load_output(r["output"])
        try:
            ok, metrics = case.check(ref, out)
            if case.validate is not None and r is not ref_row:
                vok, vmetrics = case.validate(out)
                r["valid"] = {"ok": bool(vok), **vmetrics}
                ok = ok and vok
        except Exception as exc:  # a malformed output is a failed check, not a crash
            ok, metrics = False, {"why": f"{type(exc).__name__}: {exc}"}
        r["agree"] = {"ok": bool(ok), **metrics}


def _derive(case_result: dict[str, Any], bandwidth: dict[str, float]) -> None:
    rows = [r for r in case_result["rows"] if "median" in r]
    peers = [r for r in rows if r["tool"] != "ctflow" and r.get("agree", {}).get("ok")]
    fastest = min(peers, key=lambda r: r["median"]) if peers else None
    case_result["fastest_peer"] = fastest["key"] if fastest else None
    for r in rows:
        r["scans_per_s"] = round(case_result["items"] / r["median"], 3)
        if fastest is not None:
            r["x_fastest_peer"] = round(r["median"] / fastest["median"], 3)
        if r.get("bytes"):
            gbps = r["bytes"] / r["median"] / 1e9
            bw = bandwidth["copy_2t"] if r["n_threads"] >= 2 else bandwidth["copy_1t"]
            r["gb_per_s"] = round(gbps, 2)
            r["bound_fraction"] = float(f"{gbps / bw:.3g}")  # 3 significant digits, never 0
    ours = [r for r in rows if r["tool"] == "ctflow"]
    if ours and fastest is not None:
        best = min(ours, key=lambda r: r["median"])
        case_result["ctflow_best"] = best["key"]
        case_result["speedup_vs_fastest_peer"] = round(fastest["median"] / best["median"], 2)


def main(argv: list[str] | None = None) -> int:
    """Run the suite; returns 0 when every agreement check passed, 1 otherwise."""
    args = _parse(argv)
    from benchmarks.cases import all_cases

    profile = PROFILES[args.profile or ("quick" if args.quick else "full")]
    if args.list:
        for c in all_cases():
            if c.when is None or c.when(profile):
                only = "" if c.in_default else "  [only with --cases]"
                print(f"{c.name:<24} {c.title}{only}")
        return 0
    repeats = args.repeats or (2 if args.quick else 5)
    tools = {t.strip() for t in args.tools.split(",")} if args.tools else None
    cases = _select(args, profile)
    data = BenchData(profile, args.cache)
    json_dir = args.out or (DEFAULT_JSON_DIR / "quick" if args.quick else DEFAULT_JSON_DIR)
    doc = (
        args.out / "benchmarks.md"
        if args.out
        else (json_dir / "benchmarks.md" if args.quick else DEFAULT_DOC)
    )
    t_start = time.perf_counter()
    print(f"ctflow benchmarks: profile {profile.name}, {repeats} repeats, data in {data.dir}")
    bw = copy_bandwidth(64 * 2**20 if profile.name != "full" else 512 * 2**20)
    print(f"copy bandwidth: {bw['copy_1t']} GB/s (1 thread), {bw['copy_2t']} GB/s (2 threads)")
    spin = 100_000_000 if profile.name == "full" else 10_000_000
    scaling = {"start": compute_scaling(spin)}
    print(f"pure compute: 2 threads do 2 jobs {scaling['start']['ratio']}x faster than 1 thread")
    work = Path(tempfile.mkdtemp(prefix="ctflow-bench-"))
    results = []
    try:
        for case in cases:
            print(f"== {case.name}: {case.title}")
            res = run_case(case, data, repeats, work, tools, args.timeout, args.budget)
            _derive(res, bw)
            results.append(res)
            for line in case_summary(res):
                print(f"  {line}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    scaling["end"] = compute_scaling(spin)  # the host's load changes over a run

    payload = {
        "machine": machine(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "profile": profile.name,
        "repeats": repeats,
        "budget_s": args.budget,
        "bandwidth_gb_s": bw,
        "compute_scaling": scaling,
        "wall_time_s": round(time.perf_counter() - t_start, 1),
        "cases": results,
    }
    payload["targets"] = evaluate_targets(payload)
    json_dir.mkdir(parents=True, exist_ok=True)
    (json_dir / "latest.json").write_text(json.dumps(payload, indent=1, default=str))
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(markdown(payload))
    failed = [
        (c["name"], r["key"])
        for c in results
        for r in c["rows"]
        if not r.get("agree", {}).get("ok")
    ]
    print(f"wrote {json_dir / 'latest.json'} and {doc} in {payload['wall_time_s']} s")
    for name, key in failed:
        print(f"FAILED agreement: {name}: {key}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
