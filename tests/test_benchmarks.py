"""The benchmark suite: a tiny end-to-end run, and its agreement checks against known answers.

The smoke run goes through everything ``make bench`` does — data generation, one subprocess per
contender, peak-memory and bandwidth numbers, the agreement checks, ``latest.json`` and the
markdown report — on tiny scans and a few cheap contenders. The cases that used to be scripts of
their own (``pipeline_pairs``, ``memory``, ``parallel``, ``dask``) and the ``tuning`` case run
the same way at the tiny profile.
"""

from __future__ import annotations

import gc
import json
import mmap

import numpy as np
import pytest
from benchmarks.common import copy_bandwidth, peak_rss_mb, reset_peak_rss, rss_mb
from benchmarks.data import PROFILES
from benchmarks.harness import close, dice, exact, labels
from benchmarks.peers import geometry_from_ras, lungs_scipy, nodule_mask_numpy, ras_affine
from benchmarks.report import evaluate_targets, markdown, pairs_summary, tuning_summary
from benchmarks.run import _parse, _select, main
from scipy import ndimage as ndi

from ctflow.geometry import Geometry
from ctflow.ops.masks import create_mask


def test_quick_run_writes_results_and_every_output_agrees(tmp_path):
    out = tmp_path / "out"
    code = main(
        [
            "--quick",
            "--profile",
            "tiny",
            "--cases",
            "unify_spacing_mask,create_mask",
            "--tools",
            "numpy,scipy.ndimage",
            "--repeats",
            "2",
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    payload = json.loads((out / "latest.json").read_text())
    assert payload["profile"] == "tiny"
    assert payload["bandwidth_gb_s"]["copy_1t"] > 0
    for sc in payload["compute_scaling"].values():  # start and end of the run
        assert 0.5 < sc["ratio"] < 2.5 and sc["serial_s"] > 0 and sc["two_threads_s"] > 0
    assert "Thread-scaling ceiling" in (out / "benchmarks.md").read_text()
    cases = {c["name"]: c for c in payload["cases"]}
    assert set(cases) == {"unify_spacing_mask", "create_mask"}
    for case in cases.values():
        tools = {r["tool"] for r in case["rows"]}
        assert "ctflow" in tools and len(tools) >= 2, case["name"]
        for row in case["rows"]:
            assert row["agree"]["ok"], (case["name"], row["key"], row["agree"])
            assert len(row["times"]) == 2 and row["median"] > 0
            assert row["peak_rss_mb"] >= row["baseline_rss_mb"] > 0
    # ctflow resamples on 1 and 2 threads; every row is measured against the bandwidth bound
    resample = cases["unify_spacing_mask"]
    assert {r["n_threads"] for r in resample["rows"] if r["tool"] == "ctflow"} == {1, 2}
    assert all(r["bound_fraction"] > 0 for r in resample["rows"])
    assert {r["tool"] for r in resample["rows"]} == {"ctflow", "scipy.ndimage"}
    report = (out / "benchmarks.md").read_text()
    assert "## Targets (issues 5, 17 and 18)" in report and "### Nodule masks" in report


def test_run_lists_cases(capsys):
    assert main(["--list"]) == 0
    listing = capsys.readouterr().out
    names = listing.split()
    for name in ("load_mhd", "unify_spacing", "rotate", "segment_lungs", "pipeline"):
        assert name in names
    for name in ("pipeline_pairs", "tuning", "memory", "parallel", "dask"):
        assert name in names
    dask_line = next(line for line in listing.splitlines() if line.startswith("dask "))
    assert "[only with --cases]" in dask_line


def test_default_set_has_every_case_but_dask():
    default = {c.name for c in _select(_parse([]), PROFILES["full"])}
    assert {"pipeline", "pipeline_pairs", "tuning", "memory", "parallel"} <= default
    assert "dask" not in default
    named = _select(_parse(["--cases", "dask,parallel"]), PROFILES["tiny"])
    assert [c.name for c in named] == ["parallel", "dask"]
    with pytest.raises(SystemExit, match="unknown case"):
        _select(_parse(["--cases", "bench_dask"]), PROFILES["tiny"])


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-cache")


def _tiny_run(tmp_path, cache, cases, repeats=2):
    out = tmp_path / "out"
    args = ["--profile", "tiny", "--cases", cases, "--repeats", str(repeats)]
    code = main([*args, "--out", str(out), "--cache", str(cache)])
    payload = json.loads((out / "latest.json").read_text())
    return code, payload, (out / "benchmarks.md").read_text()


def test_folded_cases_and_tuning_run_in_the_harness(tmp_path, tiny_cache):
    code, payload, report = _tiny_run(tmp_path, tiny_cache, "pipeline_pairs,tuning,memory,parallel")
    assert code == 0
    cases = {c["name"]: c for c in payload["cases"]}
    assert set(cases) == {"pipeline_pairs", "tuning", "memory", "parallel"}
    for case in cases.values():
        for row in case["rows"]:
            assert row["agree"]["ok"], (case["name"], row["key"], row["agree"])
            assert row["median"] > 0 and all(t > 0 for t in row["times"])

    # pairs: both thread counts in one process, at least 7 rounds whatever --repeats says
    rows = cases["pipeline_pairs"]["rows"]
    assert {r["n_threads"] for r in rows} == {1, 2}
    assert all(len(r["times"]) == 7 and r["peak_extra_mb"] is None for r in rows)
    assert all(r["valid"]["ok"] for r in rows)
    pairs = pairs_summary(payload)
    assert pairs is not None and pairs["pairs"] == 7 and pairs["valid"]["ok"]
    assert pairs["ratio"] == pytest.approx(pairs["median_1"] / pairs["median_2"], rel=1e-3)
    scaling = next(t for t in payload["targets"] if t["target"].startswith("thread scaling"))
    assert "alternating pairs in one process" in scaling["measured"]
    assert "Whole pipeline in alternating pairs" in report

    # tuning: one worker process per setting, switches from its environment, own peak
    rows = {r["how"]: r for r in cases["tuning"]["rows"]}
    assert list(rows) == [
        "all tricks on",
        "defaults (pool, streaming stores)",
        "buffer pool off",
        "page moving off",
        "thread lending off",
        "streaming stores off",
        "all tricks off",
    ]
    assert rows["all tricks on"]["info"]["switches"] == (
        "buffer_pool, move_pages, lend_threads, streaming"
    )
    assert rows["buffer pool off"]["info"]["switches"] == "move_pages, lend_threads, streaming"
    assert rows["defaults (pool, streaming stores)"]["info"]["switches"] == (
        "buffer_pool, streaming"
    )
    assert rows["all tricks off"]["info"]["switches"] == "none"
    assert all(r["n_threads"] == 2 and r["peak_extra_mb"] is not None for r in rows.values())
    table = tuning_summary(payload)
    assert table is not None and table[0]["time_vs_on"] == pytest.approx(1.0)
    assert table[-1]["time_vs_off"] == pytest.approx(1.0)
    assert "## What each speed trick buys on the pipeline (`tuning`)" in report
    assert not any("tuning" in t["target"] or "trick" in t["target"] for t in payload["targets"])

    # memory: per-step peaks of the warm-up pass and of each timed pass
    (row,) = cases["memory"]["rows"]
    passes = row["info"]["passes"]
    assert len(passes) == 1 + len(row["times"])
    assert [st["action"] for st in passes[0]["steps"]] == [
        "load",
        "fetch_nodules",
        "unify_spacing",
        "normalize_hu",
        "create_mask",
        "sample_nodules",
        "dump",
    ]
    # the kernel folds each thread's RSS count into VmHWM lazily (up to 64 pages per thread), so
    # the high-water mark may read a little below the RSS read just after resetting it
    assert all(st["peak_extra_mb"] >= -2.0 for p in passes for st in p["steps"])
    assert "## Peak memory of each step (`memory`)" in report

    # parallel: a user's numba action on 1 and 2 item threads, identical outputs
    assert {r["n_threads"] for r in cases["parallel"]["rows"]} == {1, 2}
    assert "## A user's own numba action (`parallel`)" in report
    reported = {t["target"] for t in payload["targets"]}
    assert any("numba nogil item action" in t for t in reported)
    assert any("peak memory of each step" in t for t in reported)


@pytest.mark.slow
def test_dask_case_compares_engines_in_one_process(tmp_path, tiny_cache):
    code, payload, report = _tiny_run(tmp_path, tiny_cache, "dask", repeats=1)
    assert code == 0
    (case,) = payload["cases"]
    rows = {r["how"]: r for r in case["rows"]}
    assert list(rows) == [
        "local engine",
        "DaskEngine, 1 worker x 1 thread",
        "DaskEngine, 2 workers x 1 thread",
    ]
    for row in rows.values():
        assert row["agree"]["ok"] and row["agree"]["byte_identical"], row["agree"]
        assert row["info"]["empty_batch_ms"] > 0 and row["info"]["warmup_s"] > 0
    assert rows["DaskEngine, 2 workers x 1 thread"]["info"]["workers"] == 2
    target = next(t for t in payload["targets"] if t["target"].startswith("Dask engine"))
    assert target["met"] is True
    assert "## Dask engine (`dask`)" in report
    assert "Dumps byte-identical across engines: yes" in report


def test_fused_pipeline_case_agrees_with_the_script_durable_or_not(tmp_path, tiny_cache):
    code, payload, report = _tiny_run(tmp_path, tiny_cache, "pipeline_fused", repeats=1)
    assert code == 0
    (case,) = payload["cases"]
    rows = {r["how"]: r for r in case["rows"]}
    assert {r["tool"] for r in rows.values()} == {"ctflow", "SimpleITK"}
    assert len(rows) == 5 and any("fsynced" in how for how in rows)
    for row in rows.values():
        assert row["agree"]["ok"], (row["key"], row["agree"])
    (target,) = [t for t in payload["targets"] if t["target"].startswith("fused pipeline")]
    plain = rows["SimpleITK + numpy script, 2 scans in threads"]["median"]
    ours = rows["Pipeline (fused), dump(sync=False): no fsync, like the script"]["median"]
    assert target["value"] == round(plain / ours, 2)
    assert "when both fsync their files" in target["measured"]
    assert target["met"] is (plain / ours >= 8.0)
    assert target["measured"] in report


def test_label_cases_agree_and_score_the_issue_17_targets(tmp_path, tiny_cache):
    names = ("sample_crops_by_class", "invert_prediction", "predict_on_scan_gaussian")
    code, payload, report = _tiny_run(tmp_path, tiny_cache, ",".join(names))
    assert code == 0
    cases = {c["name"]: c for c in payload["cases"]}
    assert set(cases) == set(names)
    for case in cases.values():
        assert {r["tool"] for r in case["rows"]} == {"ctflow", "MONAI"}, case["name"]
        for row in case["rows"]:
            assert row["agree"]["ok"], (case["name"], row["key"], row["agree"])
            assert len(row["times"]) == 2 and row["median"] > 0
    assert "## Targets (issues 5, 17 and 18)" in report
    for name, peer in (
        ("sample_crops_by_class", "RandCropByLabelClassesd"),
        ("invert_prediction", "Invertd"),
    ):
        (target,) = [t for t in payload["targets"] if t["target"].startswith(f"{name} >= 5x")]
        assert target["target"] == f"{name} >= 5x faster than MONAI {peer}, 2 threads"
        rows = cases[name]["rows"]
        (ours,) = [r for r in rows if r["tool"] == "ctflow" and r["n_threads"] == 2]
        (monai,) = [r for r in rows if r["tool"] == "MONAI"]
        ratio = monai["median"] / ours["median"]  # ctflow on 2 threads against MONAI
        assert target["value"] == round(ratio, 2)
        assert target["met"] is (ratio >= 5.0)
        assert f"({monai['median']:.3f} s vs {ours['median']:.3f} s)" in target["measured"]
        assert f"| {target['target']} | {target['measured']} |" in report
    assert not [t for t in payload["targets"] if t["target"].startswith("predict_on_scan")]


def test_report_of_pairs_and_tuning_from_rows():
    def row(how, threads, times, peak=100.0):
        return {
            "key": f"ctflow|{how}|{threads}",
            "tool": "ctflow",
            "how": how,
            "threads": str(threads),
            "n_threads": threads,
            "times": times,
            "median": float(np.median(times)),
            "peak_rss_mb": 300.0,
            "peak_extra_mb": peak,
            "agree": {"ok": True},
            "valid": {"ok": True},
        }

    pairs = {
        "name": "pipeline_pairs",
        "title": "pairs",
        "items": 8,
        "rows": [row("p", 1, [4.0, 3.9, 4.1]), row("p", 2, [2.0, 2.1, 2.0])],
    }
    tuning = {
        "name": "tuning",
        "title": "tuning",
        "items": 8,
        "rows": [
            row("all tricks on", 2, [1.0], 200.0),
            row("buffer pool off", 2, [1.2], 260.0),
            row("all tricks off", 2, [1.5], 300.0),
        ],
    }
    payload = {
        "machine": {"cpu": "x", "cores": 2, "python": "3", "numpy": "2", "load_average": [0]},
        "when": "now",
        "profile": "full",
        "repeats": 3,
        "wall_time_s": 1.0,
        "bandwidth_gb_s": {"copy_1t": 10.0, "copy_2t": 18.0, "copy_fresh_1t": 4.0},
        "cases": [pairs, tuning],
    }
    summary = pairs_summary(payload)
    assert summary["pair_ratios"] == [2.0, pytest.approx(3.9 / 2.1, abs=1e-3), 2.05]
    assert summary["ratio"] == 2.0  # 4.0 / 2.0
    payload["targets"] = evaluate_targets(payload)
    scaling = next(t for t in payload["targets"] if t["target"].startswith("thread scaling"))
    assert scaling["met"] is True and scaling["value"] == 2.0
    off = {r["setting"]: r for r in tuning_summary(payload)}
    assert off["buffer pool off"]["time_vs_on"] == pytest.approx(1.2)
    assert off["buffer pool off"]["peak_vs_on_mb"] == pytest.approx(60.0)
    assert off["buffer pool off"]["peak_vs_off_mb"] == pytest.approx(-40.0)
    text = markdown(payload)
    assert "| buffer pool off | 1.200 | 1.20x | 0.80x | 260 | +60 | -40 | yes |" in text


# -- agreement checks ---------------------------------------------------------------------------
def test_close_catches_a_half_voxel_shift():
    rng = np.random.default_rng(0)
    ref = ndi.gaussian_filter(rng.normal(0, 300, (20, 40, 40)), 2).astype(np.float32)
    same = ref + np.float32(1e-3)
    shifted = ndi.shift(ref, (0, 0.5, 0), order=1, mode="nearest").astype(np.float32)
    check = close(max_mean=0.5, max_p999=1.0)
    assert check({"out": ref}, {"out": same})[0]
    ok, metrics = check({"out": ref}, {"out": shifted})
    assert not ok and metrics["mean_abs_diff"] > 0.5
    assert not check({"out": ref}, {"out": ref[:, :, :-1]})[0]  # shape mismatch


def test_labels_ignores_exact_ties_only():
    ref = np.zeros((4, 6, 6), np.uint8)
    ref[1:3, 2:4, 2:4] = 1
    ties = {
        "tie_z": np.array([0, 1, 0, 0], np.uint8),
        "tie_y": np.zeros(6, np.uint8),
        "tie_x": np.zeros(6, np.uint8),
    }
    other = ref.copy()
    other[1] = 0  # differs only on a tie slice
    check = labels(0.0, ties=True)
    assert check({"out": ref, **ties}, {"out": other})[0]
    other[2, 2, 2] = 0  # and one voxel off the tie
    assert not check({"out": ref, **ties}, {"out": other})[0]
    assert not labels(0.0)({"out": ref}, {"out": np.roll(ref, 1, axis=2)})[0]


def test_exact_and_dice():
    a = np.arange(24).reshape(2, 3, 4)
    assert exact()({"out": a}, {"out": a.copy()})[0]
    b = a.copy()
    b[0, 0, 0] = -1
    assert exact()({"out": a}, {"out": b}) == (False, {"differing_voxels": 1})
    m = np.zeros((4, 4, 4), bool)
    m[:2] = True
    n = np.zeros((4, 4, 4), bool)
    n[1:3] = True
    assert dice(m, m) == 1.0 and dice(m, n) == pytest.approx(0.5)


# -- peer plumbing ------------------------------------------------------------------------------
def test_ras_affine_round_trips_and_matches_voxel_to_world():
    d = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])  # (z, y, x), not the identity
    g = Geometry((2.5, 0.7, 0.8), (-300.0, -150.0, 20.0), d)
    aff = ras_affine(g)
    v = np.array([3.0, 5.0, 7.0])  # (z, y, x) voxel
    ras = aff @ np.r_[v[::-1], 1.0]
    lps_xyz = ras[:3] * np.array([-1, -1, 1])
    np.testing.assert_allclose(lps_xyz[::-1], g.voxel_to_world(v[None])[0])
    back = geometry_from_ras(aff)
    np.testing.assert_allclose(back.spacing, g.spacing)
    np.testing.assert_allclose(back.origin, g.origin)
    np.testing.assert_allclose(back.direction, g.direction)


def test_numpy_nodule_masks_equal_ctflow():
    g = Geometry((1.0, 1.0, 1.0), (-20.0, 5.0, 3.0))
    centers = np.array([[-10.0, 20.0, 18.5], [-19.5, 10.0, 10.0]])
    diameters = np.array([9.0, 5.0])
    ours = create_mask((30, 40, 40), g, centers, diameters)
    np.testing.assert_array_equal(nodule_mask_numpy((30, 40, 40), g, centers, diameters), ours)


def test_scipy_lung_baseline_keeps_two_lungs_and_drops_outside_air():
    vol = np.full((20, 64, 64), -1000, np.int16)
    y, x = np.ogrid[:64, :64]
    vol[:, (y - 32) ** 2 + (x - 32) ** 2 < 29**2] = 40  # body
    for cx in (20, 44):
        vol[:, ((y - 32) / 12.0) ** 2 + ((x - cx) / 8.0) ** 2 < 1] = -850  # two lungs
    mask = lungs_scipy(vol, (2.0, 1.0, 1.0), min_ml=0.1)
    assert mask.dtype == np.uint8
    assert mask[:, 32, 20].all() and mask[:, 32, 44].all()
    assert not mask[:, 2, 2].any() and not mask[:, 32, 32].any()


def test_memory_and_bandwidth_helpers():
    assert rss_mb() > 0
    gc.collect()  # nothing else frees memory between the reset and the allocation
    assert reset_peak_rss()  # Linux >= 4.0
    before = rss_mb()
    # 64 MiB of fresh pages, touched (malloc may reuse resident free heap memory instead)
    region = mmap.mmap(-1, 64 * 2**20)
    block = np.frombuffer(region, np.uint8)
    block[::4096] = 1
    assert peak_rss_mb() >= rss_mb() >= before + 60
    del block
    region.close()
    bw = copy_bandwidth(4 * 2**20, repeat=3)
    assert bw["copy_1t"] > 0 and bw["copy_2t"] > 0 and bw["copy_fresh_1t"] > 0


# -- the performance fixes keep ctflow's results --------------------------------------------------
@pytest.mark.parametrize(("lo", "hi"), [(-1000, 400), (-1024, 3071), (-160, 240), (-3, 7)])
def test_division_free_normalize_is_exact_for_every_int16(lo, hi):
    """normalize_hu's integer path multiplies by 1/(hi - lo); it must equal the division."""
    from ctflow.ops.intensity import normalize_hu

    every = np.arange(-32768, 32768, dtype=np.int16)
    expected = ((np.clip(every.astype(np.float64), lo, hi) - lo) / (hi - lo)).astype(np.float32)
    np.testing.assert_array_equal(normalize_hu(every, lo, hi), expected)
    np.testing.assert_array_equal(normalize_hu(every.astype(np.int32), lo, hi), expected)
