"""The ``ctflow`` command, run as a subprocess like a user would."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import ctflow as cf
from ctflow.cli import find_benchmarks
from ctflow.io import store
from ctflow.io.metaimage import write_metaimage

pytestmark = pytest.mark.timeout(300)

COMMANDS = ("demo", "run", "info", "show", "convert", "bench")


def ctflow(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctflow.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=240,
    )


def test_help_for_every_command():
    top = ctflow("--help")
    assert top.returncode == 0
    for cmd in COMMANDS:
        assert re.search(rf"^\s+{cmd}\s+\S", top.stdout, re.M), cmd
        res = ctflow(cmd, "--help")
        assert res.returncode == 0, res.stderr
        assert "usage: ctflow " + cmd in res.stdout
    none = ctflow()
    assert none.returncode == 2 and "COMMAND" in none.stdout
    wrong = ctflow("frobnicate")
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr


def _scans(folder: Path, n: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        arr = np.full((4, 8, 8), -500 + k, np.int16)
        write_metaimage(folder / f"s{k}.mhd", arr, cf.Geometry((2.0, 1.0, 1.0), (k, 0.0, 0.0)))


PIPELINE = """
[dataset]
glob = "scans/*.mhd"

[run]
batch_size = 2
on_error = "skip"
seed = 0

[[actions]]
name = "load"

[[actions]]
name = "normalize_hu"
min_hu = -1000
max_hu = 400

[[actions]]
name = "dump"
dst = "out"
"""


def test_run_pipeline_file_with_a_failing_item(tmp_path):
    _scans(tmp_path / "scans")
    (tmp_path / "scans" / "s1.raw").write_bytes(b"\x00" * 10)  # truncated data: s1 must fail
    (tmp_path / "p.toml").write_text(PIPELINE)
    res = ctflow("run", "p.toml", "--quiet", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAILED s1: load: CorruptFileError" in res.stdout and "s1.raw" in res.stdout
    assert "done 2, failed 1, skipped (existing) 0" in res.stdout
    assert re.search(r"^\s+load\s+\d+\.\d+ s", res.stdout, re.M)  # time per action
    assert re.search(r"^\s+dump\s+\d+\.\d+ s", res.stdout, re.M)
    out_size = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file())
    n_files = sum(1 for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert f"out: 2 items, {n_files} files" in res.stdout
    assert f"{out_size / 1024:.1f} KiB" in res.stdout
    assert "1 item(s) failed" in res.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["s0", "s2"]
    item = store.read_item(tmp_path / "out" / "s2")
    np.testing.assert_allclose(item.components["images"], (-498 + 1000) / 1400, rtol=1e-6)
    ok = ctflow("run", "p.toml", "--quiet", "--allow-failures", cwd=tmp_path)
    assert ok.returncode == 0


def test_run_shows_progress_with_rate_and_eta_and_reports_skipped(tmp_path):
    _scans(tmp_path / "scans")
    (tmp_path / "p.yaml").write_text(
        "dataset:\n  glob: scans/*.mhd\nrun:\n  batch_size: 1\n"
        "actions:\n  - name: load\n  - name: dump\n    dst: out\n    skip_existing: true\n"
    )
    first = ctflow("run", "p.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # tqdm's bar: "3/3 [00:00<00:00, 12.3item/s]" = done/total [elapsed<ETA, rate]
    # (a rate below one item per second reads "1.52s/item")
    bar = r"3/3 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ ?(item/s|s/item)\]"
    assert re.search(bar, first.stderr), first.stderr
    again = ctflow("run", "p.yaml", "--quiet", cwd=tmp_path)
    assert again.returncode == 0
    assert "skipped (existing) 3" in again.stdout
    assert "skipped (already in the output): s0, s1, s2" in again.stdout


def test_malformed_pipeline_file_names_line_and_action(tmp_path):
    _scans(tmp_path / "scans", 1)
    (tmp_path / "bad.toml").write_text(
        """[dataset]
glob = "scans/*.mhd"

[[actions]]
name = "load"

[[actions]]
name = "unify_spacng"
spacing = [1, 1, 1]
"""
    )
    res = ctflow("run", "bad.toml", cwd=tmp_path)
    assert res.returncode == 1
    assert "bad.toml:7: action #2 'unify_spacng'" in res.stderr
    assert "unknown action" in res.stderr and "unify_spacing" in res.stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "bad_args.toml").write_text(
        '[dataset]\nglob = "scans/*.mhd"\n\n[[actions]]\nname = "load"\n\n'
        '[[actions]]\nname = "normalize_hu"\nmin_hu = -1000\nmax_hu = 400\nlevel = 3\n'
    )
    res = ctflow("run", "bad_args.toml", cwd=tmp_path)
    assert res.returncode == 1
    assert "bad_args.toml:7: action #2 'normalize_hu'" in res.stderr and "level" in res.stderr
    (tmp_path / "bad2.toml").write_text(
        '[dataset]\nglob = "scans/*.mhd"\n[run]\nbatch_size = "four"\n'
    )
    res = ctflow("run", "bad2.toml", cwd=tmp_path)
    assert res.returncode == 1 and "bad2.toml:4: [run] batch_size must be int" in res.stderr
    (tmp_path / "bad3.toml").write_text("[dataset\n")
    res = ctflow("run", "bad3.toml", cwd=tmp_path)
    assert res.returncode == 1 and "invalid TOML" in res.stderr
    (tmp_path / "bad4.yaml").write_text(
        "dataset:\n  glob: nothing/*.mhd\nactions:\n  - name: load\n"
    )
    res = ctflow("run", "bad4.yaml", cwd=tmp_path)
    assert res.returncode == 1 and "bad4.yaml:2:" in res.stderr and "no files match" in res.stderr
    (tmp_path / "bad5.yaml").write_text(
        "dataset:\n  glob: scans/*.mhd\nactions:\n  - name: load\n"
        "  - name: flip\n    axis: 7\n  - name: dump\n    dst: out\n"
    )
    res = ctflow("run", "bad5.yaml", cwd=tmp_path)
    assert res.returncode == 1, res.stdout
    assert "bad5.yaml:5: action #2 'flip'" in res.stderr and "axis" in res.stderr


def test_info_prints_geometry_range_and_dicom_series(tmp_path):
    _scans(tmp_path, 1)
    res = ctflow("info", str(tmp_path / "s0.mhd"))
    assert res.returncode == 0, res.stderr
    assert "(4, 8, 8) (z, y, x), int16" in res.stdout
    assert "spacing:     (2.0, 1.0, 1.0)" in res.stdout and "orientation LPS" in res.stdout
    assert "min -500 max -500" in res.stdout
    missing = ctflow("info", str(tmp_path / "nope.mhd"))
    assert missing.returncode == 1 and "nope.mhd" in missing.stderr

    from pydicom.data import get_testdata_file

    folder = tmp_path / "dicom"
    folder.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "slice1")
    (folder / "notes.txt").write_text("not a DICOM file")
    res = ctflow("info", str(folder))
    assert res.returncode == 0, res.stderr
    assert "series:      1 found" in res.stdout and "1 files, modality CT, 128x128" in res.stdout
    assert "skipped:     1 files" in res.stdout and "notes.txt:" in res.stdout
    ref = sitk.ReadImage(str(folder / "slice1"))
    assert f"(1, {ref.GetSize()[1]}, {ref.GetSize()[0]}) (z, y, x), int16" in res.stdout


def _phantom(tmp_path: Path) -> tuple[Path, Path]:
    from ctflow.synthetic import make_dataset

    paths, csv = make_dataset(tmp_path / "ph", n_scans=1, shape=(40, 96, 96), seed=3)
    return Path(paths[0]), Path(csv)


def test_show_writes_a_png_with_overlays(tmp_path):
    scan, csv = _phantom(tmp_path)
    out = tmp_path / "pics" / "scan.png"
    res = ctflow("show", str(scan), "--annotations", str(csv), "--lungs", "--out", str(out))
    assert res.returncode == 0, res.stderr
    n_nodules = int((cf.read_annotations(csv)["id"] == scan.stem).sum())
    assert f"{n_nodules} annotated nodule(s)" in res.stdout and "lungs:" in res.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other = ctflow("show", str(scan), "--annotations", str(csv), "--id", "nobody", cwd=tmp_path)
    assert other.returncode == 0 and "no nodule for id 'nobody'" in other.stderr
    assert (tmp_path / "nobody.png").is_file()
    bad = ctflow("show", str(scan), "--mask", str(tmp_path / "missing.mhd"))
    assert bad.returncode == 1 and "missing.mhd" in bad.stderr
    # a ctflow dump item brings its own masks and nodules
    table = cf.read_annotations(csv)
    batch = cf.Dataset.from_paths([scan]).create_batch([scan.stem]).load()
    batch = batch.fetch_nodules(table).create_mask().dump(tmp_path / "dump")
    item = tmp_path / "dump" / scan.stem
    res = ctflow("show", str(item), "--out", str(tmp_path / "item.png"))
    assert res.returncode == 0, res.stderr
    n_voxels = int(batch.masks.sum())
    assert f"{n_nodules} stored nodule(s); stored masks: {n_voxels} voxels" in res.stdout


def test_show_on_the_real_chest_ct(tmp_path, real_data):
    folder = real_data / "pyradiomics_lung"
    out = tmp_path / "lung1.png"
    res = ctflow(
        "show",
        str(folder / "derived" / "lung1.mhd"),
        "--annotations",
        str(folder / "derived" / "lesions_from_labels.csv"),
        "--mask",
        str(folder / "derived" / "lung1_label.mhd"),
        "--lungs",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    # the lesion label has 837 voxels (SOURCE.md); both lungs of an adult: 2-7 litres
    assert "1 annotated nodule(s); mask: 837 voxels; lungs:" in res.stdout
    ml = float(re.search(r"lungs: (\d+) mL", res.stdout).group(1))
    assert 2000 < ml < 7000
    assert out.stat().st_size > 50_000


def test_convert_between_formats_keeps_voxels_and_geometry(tmp_path, rng):
    arr = rng.integers(-1024, 2000, size=(6, 10, 12)).astype(np.int16)
    direction = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])  # RAS-stored, like NIfTI
    g = cf.Geometry((2.5, 0.7, 0.8), (-100.0, 20.0, 30.0), direction)
    src = write_metaimage(tmp_path / "a.mhd", arr, g)
    for name in ("b.nii.gz", "c.nrrd", "d.mha"):
        res = ctflow("convert", str(src), str(tmp_path / name))
        assert res.returncode == 0, res.stderr
        ref = sitk.ReadImage(str(tmp_path / name))  # SimpleITK is the reference reader
        np.testing.assert_array_equal(sitk.GetArrayFromImage(ref), arr)
        np.testing.assert_allclose(ref.GetSpacing(), g.spacing[::-1], rtol=1e-6)
        np.testing.assert_allclose(ref.GetOrigin(), g.origin[::-1], atol=1e-4)
        np.testing.assert_allclose(
            np.reshape(ref.GetDirection(), (3, 3)), direction[::-1, ::-1], atol=1e-6
        )
    # to the ctflow format and back to a file
    res = ctflow("convert", str(tmp_path / "b.nii.gz"), str(tmp_path / "dump" / "item1"))
    assert res.returncode == 0, res.stderr
    item = store.read_item(tmp_path / "dump" / "item1")
    np.testing.assert_array_equal(item.components["images"], arr)
    np.testing.assert_allclose(item.geometry.origin, g.origin, atol=1e-4)
    np.testing.assert_allclose(item.geometry.direction, direction, atol=1e-6)
    res = ctflow("convert", str(tmp_path / "dump" / "item1"), str(tmp_path / "back.mhd"))
    assert res.returncode == 0, res.stderr
    back = sitk.ReadImage(str(tmp_path / "back.mhd"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), arr)
    res = ctflow("convert", str(src), str(tmp_path / "e.mhd"), "--compress")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "e.zraw").is_file() and not (tmp_path / "e.raw").exists()
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "e.mhd"))), arr
    )
    res = ctflow("convert", str(src), str(tmp_path / "x.mhd"), "--component", "masks")
    assert res.returncode == 1 and "no component 'masks'" in res.stderr
    res = ctflow("convert", str(src), str(tmp_path / "y.png"), "--to", "file")
    assert res.returncode == 1 and "y.png" in res.stderr


def test_bench_runs_the_checkouts_suite(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    assert find_benchmarks(repo / "src" / "ctflow" / "cli.py") == repo
    assert find_benchmarks(tmp_path / "site-packages" / "ctflow" / "cli.py") is None
    # arguments after `bench` go to benchmarks.run (its --list is quick)
    listed = ctflow("bench", "--list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    assert names and all(re.fullmatch(r"[a-z0-9_]+", n) for n in names)


def test_convert_orient_equals_dicomorient_and_bad_codes_fail_early(tmp_path, rng):
    arr = rng.integers(-1024, 2000, size=(5, 7, 9)).astype(np.int16)
    direction = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])  # stored RAS
    g = cf.Geometry((2.5, 0.7, 0.8), (-100.0, 20.0, 30.0), direction)
    src = write_metaimage(tmp_path / "a.mhd", arr, g)
    for code in ("LPS", "ASL"):
        res = ctflow("convert", str(src), str(tmp_path / f"{code}.nii.gz"), "--orient", code)
        assert res.returncode == 0, res.stderr
        ours = sitk.ReadImage(str(tmp_path / f"{code}.nii.gz"))
        ref = sitk.DICOMOrient(sitk.ReadImage(str(src)), code)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(ref))
        np.testing.assert_allclose(ours.GetOrigin(), ref.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(ours.GetDirection(), ref.GetDirection(), atol=1e-6)
    res = ctflow("convert", str(src), str(tmp_path / "x.mhd"), "--orient", "LPX")
    assert res.returncode == 1 and "one of R/L, one of A/P, one of S/I" in res.stderr
    assert not (tmp_path / "x.mhd").exists()


def test_allow_uneven_reads_a_series_with_a_gap_and_warns(tmp_path):
    from ctflow.io.dicom_writer import write_dicom_series

    vol = np.random.default_rng(0).integers(-1000, 400, (6, 10, 12)).astype(np.int16)
    write_dicom_series(tmp_path / "s", vol, cf.Geometry((2.0, 0.7, 0.7)), skip=[2])
    refused = ctflow("info", str(tmp_path / "s"))
    assert refused.returncode == 1 and "allow_uneven=True" in refused.stdout + refused.stderr
    info = ctflow("info", str(tmp_path / "s"), "--allow-uneven")
    assert info.returncode == 0, info.stderr
    assert "(6, 10, 12)" in info.stdout and "missing slice" in info.stdout
    res = ctflow("convert", str(tmp_path / "s"), str(tmp_path / "s.mhd"), "--allow-uneven")
    assert res.returncode == 0, res.stderr
    assert "warning: missing slice" in res.stderr
    out = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "s.mhd")))
    np.testing.assert_array_equal(out[[0, 1, 3, 4, 5]], vol[[0, 1, 3, 4, 5]])
    shown = ctflow("show", str(tmp_path / "s"), "--allow-uneven", "--out", str(tmp_path / "s.png"))
    assert shown.returncode == 0, shown.stderr
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_show_draws_a_label_map_with_named_labels(tmp_path):
    from ctflow.synthetic import make_phantom, phantom_labels

    scan, _ = make_phantom((32, 96, 96), (2.5, 1.5, 1.5), n_nodules=1, seed=4)
    labels = phantom_labels(scan)
    labels[labels == 3] = 2
    labels[labels == 4] = 5
    write_metaimage(tmp_path / "scan.mhd", scan.images, scan.geometry)
    write_metaimage(tmp_path / "labels.mhd", labels, scan.geometry)
    out = tmp_path / "labels.png"
    res = ctflow(
        "show",
        str(tmp_path / "scan.mhd"),
        "--mask",
        str(tmp_path / "labels.mhd"),
        "--label-names",
        "1=body,2=lung",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    counts = {v: int((labels == v).sum()) for v in (1, 2, 5)}
    per = ", ".join(f"{v}: {n}" for v, n in counts.items())
    assert f"mask: {sum(counts.values())} voxels in labels {{{per}}}" in res.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the labels were drawn, not binarised: label 5's colour is in the picture
    import matplotlib.image
    from matplotlib.colors import to_rgb

    from ctflow.viz_panels import LABEL_ALPHA, label_color

    rgb = matplotlib.image.imread(out)[..., :3].astype(np.float64)
    for value in (1, 2, 5):
        tint = LABEL_ALPHA * np.asarray(to_rgb(label_color(value)))
        rest = rgb - tint  # what is left must be grey (the CT under the label)
        grey = np.abs(rest - rest.mean(axis=-1, keepdims=True)).max(axis=-1) < 0.02
        assert grey.sum() > 20, value
    bad = ctflow("show", str(tmp_path / "scan.mhd"), "--label-names", "body", "--out", str(out))
    assert bad.returncode == 1 and "--label-names must be VALUE=NAME" in bad.stderr


# -- URLs: sources and destinations on object storage (the S3 server of tests/conftest.py) --------

PNG = b"\x89PNG\r\n\x1a\n"


def in_process(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``ctflow ARGS`` in this process; return the exit code, stdout and stderr.

    ``--storage-options`` become fsspec's configuration of the process (as in a ``ctflow``
    process): it is put back as it was afterwards.
    """
    import copy

    import fsspec.config

    from ctflow.cli import main

    before = copy.deepcopy(fsspec.config.conf)
    try:
        code = main(list(args))
    finally:
        fsspec.config.conf.clear()
        fsspec.config.conf.update(before)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture()
def s3_cli(s3_server, tmp_path):
    """The bucket folder of one test, and ``--storage-options @FILE`` with the credentials."""
    options = tmp_path / "storage.json"
    options.write_text(json.dumps(s3_server.options))
    return f"{s3_server.bucket}/cli-{tmp_path.name}", ["--storage-options", f"@{options}"]


def _upload_mhd(fs, path: Path, root: str) -> None:
    fs.put_file(str(path), f"{root}/{path.name}")
    fs.put_file(str(path.with_suffix(".raw")), f"{root}/{path.with_suffix('.raw').name}")


def test_info_convert_and_show_read_and_write_s3_urls(s3_server, s3_cli, tmp_path, rng, capsys):
    fs, (root, opts) = s3_server.fs, s3_cli
    url = f"s3://{root}"
    arr = rng.integers(-1024, 2000, size=(6, 10, 12)).astype(np.int16)
    direction = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])
    g = cf.Geometry((2.5, 0.7, 0.8), (-100.0, 20.0, 30.0), direction)
    src = write_metaimage(tmp_path / "a.mhd", arr, g)
    _upload_mhd(fs, src, root)
    said: list[str] = []
    # info: what it says of the local file, with the URL in place of the folder
    code, out, err = in_process(capsys, "info", f"{url}/a.mhd", *opts)
    assert code == 0, err
    _, local_out, _ = in_process(capsys, "info", str(src))
    assert out == local_out.replace(str(tmp_path), url)
    assert f"data_file:   {url}/a.raw" in out
    said += [out, err]
    # convert: S3 -> S3 scan files (the data file uploaded beside its header), read by SimpleITK
    for name in ("b.nii.gz", "c.mhd"):
        code, out, err = in_process(capsys, "convert", f"{url}/a.mhd", f"{url}/out/{name}", *opts)
        assert code == 0, err
        assert f"{url}/a.mhd (mhd) -> {url}/out/{name}" in out
        said += [out, err]
    fs.invalidate_cache()
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{root}/out")) == [
        "b.nii.gz", "c.mhd", "c.raw",
    ]  # fmt: skip
    fs.get(f"{root}/out/", str(tmp_path / "down"), recursive=True)
    for name in ("b.nii.gz", "c.mhd"):
        ref = sitk.ReadImage(str(tmp_path / "down" / name))  # SimpleITK is the reference reader
        np.testing.assert_array_equal(sitk.GetArrayFromImage(ref), arr)
        np.testing.assert_allclose(ref.GetOrigin(), g.origin[::-1], atol=1e-4)
        np.testing.assert_allclose(ref.GetSpacing(), g.spacing[::-1], rtol=1e-6)
    # convert: S3 -> a ctflow item on S3 (its manifest names the source URL, no credentials)
    code, out, err = in_process(capsys, "convert", f"{url}/a.mhd", f"{url}/items/a", *opts)
    assert code == 0, err
    said += [out, err]
    fs.get(f"{root}/items/a/", str(tmp_path / "item"), recursive=True)
    item = store.read_item(tmp_path / "item")
    np.testing.assert_array_equal(item.components["images"], arr)
    np.testing.assert_allclose(item.geometry.direction, direction, atol=1e-6)
    meta = fs.cat_file(f"{root}/items/a/meta.json").decode()
    assert json.loads(meta)["source"] == f"{url}/a.mhd" and s3_server.secret not in meta
    # ... and from the item on S3 back to a local file
    code, out, err = in_process(
        capsys, "convert", f"{url}/items/a", str(tmp_path / "back.nrrd"), *opts
    )
    assert code == 0, err
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "back.nrrd"))), arr
    )
    # show: scan and annotations from S3, the PNG to S3
    centre = g.voxel_to_world(np.array([3.0, 5.0, 6.0]))
    (tmp_path / "ann.csv").write_text(
        f"seriesuid,coordX,coordY,coordZ,diameter_mm\na,{centre[2]},{centre[1]},{centre[0]},4\n"
    )
    fs.put_file(str(tmp_path / "ann.csv"), f"{root}/ann.csv")
    code, out, err = in_process(
        capsys, "show", f"{url}/a.mhd", "--annotations", f"{url}/ann.csv",
        "--out", f"{url}/pics/a.png", "--auto-window", *opts,
    )  # fmt: skip
    assert code == 0, err
    assert f"wrote {url}/pics/a.png (1 annotated nodule(s))" in out
    assert fs.cat_file(f"{root}/pics/a.png")[:8] == PNG
    said += [out, err]
    assert not any(s3_server.secret in text for text in said)


def test_url_errors_are_typed_name_the_url_and_print_no_credentials(
    s3_server, s3_cli, tmp_path, capsys
):
    root, opts = s3_cli
    _scans(tmp_path / "scans", 1)
    scan = str(tmp_path / "scans" / "s0.mhd")
    relative_out = RUN_FROM_URL.format(scans=tmp_path / "scans", out="out")
    s3_server.fs.pipe_file(f"{root}/relative.toml", relative_out.encode())
    said: list[str] = []
    cases = [
        (("info", f"s3://{root}/nope.mhd", *opts), f"s3://{root}/nope.mhd: no such object"),
        (("show", "s3://no-such-bucket-cli/a.mhd", *opts), "s3://no-such-bucket-cli/a.mhd"),
        (
            ("convert", scan, "s3://no-such-bucket-cli/out/a.nii.gz", *opts),
            "s3://no-such-bucket-cli/out/a.nii.gz: cannot be written",
        ),
        (
            (
                "info",
                f"s3://{root}/a.mhd",
                "--storage-options",
                f'{{"secret": "{s3_server.secret}"',
            ),
            "--storage-options is not valid JSON",
        ),
        (("info", f"s3://{root}/a.mhd", "--storage-options", "[1]"), "must be a JSON object"),
        (
            ("info", f"s3://{root}/a.mhd", "--storage-options", f"@{tmp_path / 'none.json'}"),
            "none.json cannot be read",
        ),
        (("demo", "--out", f"s3://{root}/demo"), "--out must be a local folder"),
        (
            ("run", f"s3://{root}/relative.toml", *opts),
            f"s3://{root}/relative.toml: a pipeline file read from a URL must name its sources "
            "and outputs by absolute paths or URLs; relative: out",
        ),
    ]
    for args, message in cases:
        code, out, err = in_process(capsys, *args)
        assert code == 1, (args, out, err)
        assert err.startswith("ctflow: error: ") and message in err, err
        said += [out, err]
    assert not any(s3_server.secret in text for text in said)


RUN_FROM_URL = """
[dataset]
glob = "{scans}/*.mhd"

[run]
batch_size = 2

[[actions]]
name = "load"

[[actions]]
name = "normalize_hu"
min_hu = -1000
max_hu = 400

[[actions]]
name = "dump"
dst = "{out}"
"""


def test_run_a_pipeline_file_on_s3_with_fsspec_environment_config(s3_server, tmp_path):
    fs, bucket = s3_server.fs, s3_server.bucket
    root = f"{bucket}/cli-run-{tmp_path.name}"
    _scans(tmp_path / "scans")
    text = RUN_FROM_URL.format(scans=tmp_path / "scans", out=tmp_path / "out")
    fs.pipe_file(f"{root}/p.toml", text.encode())
    fs.pipe_file(f"{root}/relative.toml", RUN_FROM_URL.format(scans="scans", out="o").encode())
    _upload_mhd(fs, tmp_path / "scans" / "s1.mhd", f"{root}/scans")
    # the endpoint and credentials as a user gives them to fsspec: its environment config
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FSSPEC_", "AWS_"))}
    env["FSSPEC_S3"] = json.dumps(s3_server.options)
    res = ctflow("run", f"s3://{root}/p.toml", "--quiet", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"ctflow run s3://{root}/p.toml: 3 items" in res.stdout
    assert f"output: {tmp_path / 'out'}: 3 items" in res.stdout
    item = store.read_item(tmp_path / "out" / "s2")
    np.testing.assert_allclose(item.components["images"], (-498 + 1000) / 1400, rtol=1e-6)
    info = ctflow("info", f"s3://{root}/scans/s1.mhd", env=env, cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "min -499 max -499" in info.stdout
    relative = ctflow("run", f"s3://{root}/relative.toml", env=env, cwd=tmp_path)
    assert relative.returncode == 1
    assert "must name its sources and outputs by absolute paths or URLs" in relative.stderr
    # no credentials anywhere: a typed error naming the URL (not a traceback)
    bare = {
        **env,
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "FSSPEC_S3": json.dumps({"client_kwargs": s3_server.options["client_kwargs"]}),
    }
    anonymous = ctflow("info", f"s3://{root}/scans/s1.mhd", env=bare, cwd=tmp_path)
    assert anonymous.returncode == 1, anonymous.stdout
    assert anonymous.stderr.startswith(f"ctflow: error: s3://{root}/scans/s1.mhd: ")
    assert "Traceback" not in anonymous.stderr and "credentials" in anonymous.stderr
    for done in (res, info, relative):
        assert s3_server.secret not in done.stdout + done.stderr


def test_run_a_pipeline_file_whose_sources_and_dump_are_on_s3(s3_server, s3_cli, tmp_path, capsys):
    fs, (root, opts) = s3_server.fs, s3_cli
    _scans(tmp_path / "scans")
    for k in range(3):
        _upload_mhd(fs, tmp_path / "scans" / f"s{k}.mhd", f"{root}/scans")
    text = RUN_FROM_URL.format(scans=f"s3://{root}/scans", out=f"s3://{root}/out")
    (tmp_path / "p.toml").write_text(text)
    code, out, err = in_process(capsys, "run", str(tmp_path / "p.toml"), "--quiet", *opts)
    assert code == 0, out + err
    assert f"output: s3://{root}/out: 3 items" in out
    fs.get(f"{root}/out/s2/", str(tmp_path / "s2"), recursive=True)
    item = store.read_item(tmp_path / "s2")
    np.testing.assert_allclose(item.components["images"], (-498 + 1000) / 1400, rtol=1e-6)
