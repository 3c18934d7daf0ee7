"""Tests of ctflow.io.metaimage, the pure-numpy MetaImage reader/writer.

The reference is SimpleITK (ITK's own MetaImage IO): files written by SimpleITK must read back
with identical voxels and with world positions equal to ITK's
``TransformContinuousIndexToPhysicalPoint``; files written by ctflow must read in SimpleITK with
identical voxels and geometry, and carry the header keys, in order and value, that ITK writes.
Broken files are made from good ones in ``tmp_path``.
"""

from __future__ import annotations

import re
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctflow.errors import (
    CorruptFileError,
    CTFlowError,
    InvalidParameterError,
    InvalidScanError,
    UnsupportedFormatError,
)
from ctflow.geometry import Geometry, direction_from_sitk
from ctflow.io import metaimage, voxels
from ctflow.io.metaimage import read_metaimage, write_metaimage

pytestmark = pytest.mark.timeout(120)

SHAPE = (7, 11, 13)  # (z, y, x)
SPACING_XYZ = (0.7, 0.85, 2.5)
ORIGIN_XYZ = (-170.125, -181.5, -301.75)


def _direction_sitk() -> tuple[float, ...]:
    """A rotation about z by 0.4 rad combined with a flipped z axis (row-major, x y z)."""
    c, s = np.cos(0.4), np.sin(0.4)
    d = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, -1.0]])
    return tuple(d.ravel())


def _sitk_image(arr: np.ndarray) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(SPACING_XYZ)
    img.SetOrigin(ORIGIN_XYZ)
    img.SetDirection(_direction_sitk())
    return img


def _volume(dtype=np.int16, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 3000, size=SHAPE).astype(dtype)


def _header(path: Path) -> list[tuple[str, str]]:
    text = path.read_bytes().split(b"ElementDataFile")[0].decode() + "ElementDataFile = x"
    return [tuple(s.strip() for s in line.split("=", 1)) for line in text.splitlines()]


def _assert_geometry_matches_sitk(geometry: Geometry, img: sitk.Image, rng) -> None:
    np.testing.assert_array_equal(geometry.spacing, img.GetSpacing()[::-1])
    np.testing.assert_array_equal(geometry.origin, img.GetOrigin()[::-1])
    np.testing.assert_allclose(geometry.direction, direction_from_sitk(img.GetDirection()))
    size_zyx = np.array(img.GetSize()[::-1])
    idx = rng.uniform(-2, size_zyx + 2, size=(200, 3))  # continuous, some outside the grid
    ours = geometry.voxel_to_world(idx)
    ref = np.array(
        [img.TransformContinuousIndexToPhysicalPoint(tuple(map(float, v[::-1]))) for v in idx]
    )[:, ::-1]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


# -- files written by SimpleITK ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "compress"), [("a.mhd", False), ("b.mha", False), ("c.mhd", True), ("d.mha", True)]
)
def test_reads_sitk_files_with_identical_voxels_and_world_positions(tmp_path, name, compress, rng):
    arr = _volume()
    img = _sitk_image(arr)
    path = tmp_path / name
    sitk.WriteImage(img, str(path), useCompression=compress)
    if name.endswith(".mhd"):
        assert (tmp_path / ("c.zraw" if compress else "a.raw")).is_file()

    scan = read_metaimage(path)

    assert scan.images.dtype == np.int16
    assert scan.images.shape == SHAPE
    np.testing.assert_array_equal(scan.images, sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
    np.testing.assert_array_equal(scan.images, arr)
    _assert_geometry_matches_sitk(scan.geometry, sitk.ReadImage(str(path)), rng)
    assert scan.source == str(path)
    assert scan.info["compressed"] is compress
    assert scan.info["element_type"] == "MET_SHORT"


def test_transform_matrix_is_read_as_itk_does_for_non_symmetric_direction(tmp_path, rng):
    # a permutation + flip whose matrix is not symmetric: transposing it would be visible
    d = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    img = sitk.GetImageFromArray(_volume())
    img.SetSpacing(SPACING_XYZ)
    img.SetOrigin(ORIGIN_XYZ)
    img.SetDirection(tuple(d.ravel()))
    sitk.WriteImage(img, str(tmp_path / "p.mhd"))
    scan = read_metaimage(tmp_path / "p.mhd")
    ref = sitk.ReadImage(str(tmp_path / "p.mhd"))
    assert ref.GetDirection() == tuple(d.ravel())
    _assert_geometry_matches_sitk(scan.geometry, ref, rng)


@pytest.mark.parametrize(
    ("dtype", "values", "expected"),
    [
        (np.uint8, (0, 255), np.int16),
        (np.int8, (-128, 127), np.int16),
        (np.uint16, (0, 32767), np.int16),
        (np.uint16, (0, 65535), np.float32),
        (np.int32, (-1024, 3071), np.int16),
        (np.int32, (-70000, 70000), np.float32),
        (np.uint32, (0, 40000), np.float32),
        (np.int64, (-5, 5), np.int16),
        (np.float32, (-1024.5, 3000.25), np.float32),
        (np.float64, (-1024.5, 3000.25), np.float32),
    ],
)
def test_voxel_types_convert_losslessly(tmp_path, dtype, values, expected):
    rng = np.random.default_rng(3)
    arr = rng.uniform(values[0], values[1], size=SHAPE).astype(dtype)
    arr.flat[0], arr.flat[1] = values
    sitk.WriteImage(_sitk_image(arr), str(tmp_path / "t.mhd"))
    scan = read_metaimage(tmp_path / "t.mhd")
    assert scan.images.dtype == expected
    np.testing.assert_array_equal(scan.images, arr.astype(expected))
    if dtype != np.float64:  # every other conversion is exact
        np.testing.assert_array_equal(scan.images.astype(np.float64), arr.astype(np.float64))


def test_values_beyond_int16_and_float32_precision_are_refused(tmp_path):
    arr = np.zeros(SHAPE, np.int32)
    arr[0, 0, 0] = 2**24 + 1
    sitk.WriteImage(_sitk_image(arr), str(tmp_path / "big.mhd"))
    with pytest.raises(InvalidScanError, match=r"big\.mhd.*int16.*float32"):
        read_metaimage(tmp_path / "big.mhd")


def test_big_endian_data_is_byte_swapped(tmp_path):
    arr = _volume()
    sitk.WriteImage(_sitk_image(arr), str(tmp_path / "le.mhd"))
    text = (tmp_path / "le.mhd").read_text()
    (tmp_path / "be.mhd").write_text(
        text.replace("BinaryDataByteOrderMSB = False", "BinaryDataByteOrderMSB = True").replace(
            "le.raw", "be.raw"
        )
    )
    arr.astype(">i2").tofile(tmp_path / "be.raw")
    scan = read_metaimage(tmp_path / "be.mhd")
    assert scan.images.dtype == np.int16 and scan.info["byte_order_msb"] is True
    np.testing.assert_array_equal(scan.images, arr)
    # ElementByteOrderMSB is the older spelling of the same flag
    (tmp_path / "be2.mhd").write_text(
        text.replace("BinaryDataByteOrderMSB = False", "ElementByteOrderMSB = True").replace(
            "le.raw", "be.raw"
        )
    )
    np.testing.assert_array_equal(read_metaimage(tmp_path / "be2.mhd").images, arr)


def test_header_size_skips_bytes_and_minus_one_reads_the_tail(tmp_path):
    arr = _volume()
    sitk.WriteImage(_sitk_image(arr), str(tmp_path / "h.mhd"))
    text = (tmp_path / "h.mhd").read_text()
    junk = b"\x00\x01preamble" * 5
    (tmp_path / "h2.raw").write_bytes(junk + arr.tobytes())
    for size in (str(len(junk)), "-1"):
        (tmp_path / "h2.mhd").write_text(
            text.replace("ElementType", f"HeaderSize = {size}\nElementType").replace(
                "h.raw", "h2.raw"
            )
        )
        np.testing.assert_array_equal(read_metaimage(tmp_path / "h2.mhd").images, arr)


def test_alternative_key_spellings(tmp_path, rng):
    arr = _volume()
    sitk.WriteImage(_sitk_image(arr), str(tmp_path / "k.mhd"))
    text = (tmp_path / "k.mhd").read_text()
    alt = (
        text.replace("TransformMatrix", "Rotation")
        .replace("Offset", "Origin")
        .replace("ElementSpacing", "ElementSize")
    )
    (tmp_path / "k2.mhd").write_text(alt)
    scan = read_metaimage(tmp_path / "k2.mhd")
    np.testing.assert_array_equal(scan.images, arr)
    _assert_geometry_matches_sitk(scan.geometry, sitk.ReadImage(str(tmp_path / "k.mhd")), rng)


def test_missing_optional_keys_default_like_itk(tmp_path):
    arr = _volume()
    arr.tofile(tmp_path / "m.raw")
    (tmp_path / "m.mhd").write_text(
        "NDims = 3\nDimSize = 13 11 7\nElementSpacing = 1 1 2\nElementType = MET_SHORT\n"
        "ElementDataFile = m.raw\n"
    )
    scan = read_metaimage(tmp_path / "m.mhd")
    ref = sitk.ReadImage(str(tmp_path / "m.mhd"))
    np.testing.assert_array_equal(scan.images, sitk.GetArrayFromImage(ref))
    np.testing.assert_array_equal(scan.geometry.origin, ref.GetOrigin()[::-1])
    np.testing.assert_array_equal(scan.geometry.direction, np.eye(3))
    np.testing.assert_array_equal(scan.geometry.spacing, ref.GetSpacing()[::-1])


# -- files written by ctflow ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["w.mhd", "w.mha"])
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.int32, np.float64])
def test_sitk_reads_what_we_write(tmp_path, name, compress, dtype, rng):
    arr = _volume(dtype)
    geometry = Geometry(SPACING_XYZ[::-1], ORIGIN_XYZ[::-1], direction_from_sitk(_direction_sitk()))
    path = write_metaimage(tmp_path / name, arr, geometry, compress=compress)
    assert path == tmp_path / name
    img = sitk.ReadImage(str(path))
    back = sitk.GetArrayFromImage(img)
    assert back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)
    assert img.GetSpacing() == SPACING_XYZ
    assert img.GetOrigin() == ORIGIN_XYZ
    np.testing.assert_allclose(img.GetDirection(), _direction_sitk(), rtol=0, atol=1e-15)
    _assert_geometry_matches_sitk(geometry, img, rng)
    expected_files = {name}
    if name.endswith(".mhd"):
        expected_files.add("w.zraw" if compress else "w.raw")
    assert {p.name for p in tmp_path.iterdir()} == expected_files  # no temporary files left


@pytest.mark.parametrize("compress", [False, True])
def test_header_keys_and_values_equal_itks(tmp_path, compress):
    arr = _volume()
    sitk.WriteImage(_sitk_image(arr), str(tmp_path / "itk.mhd"), useCompression=compress)
    geometry = Geometry(SPACING_XYZ[::-1], ORIGIN_XYZ[::-1], direction_from_sitk(_direction_sitk()))
    write_metaimage(tmp_path / "ours.mhd", arr, geometry, compress=compress)
    itk, ours = _header(tmp_path / "itk.mhd"), _header(tmp_path / "ours.mhd")
    assert [k for k, _ in ours] == [k for k, _ in itk]
    skip = {"CompressedDataSize", "ElementDataFile"}  # zlib level may differ; names differ
    assert [kv for kv in ours if kv[0] not in skip] == [kv for kv in itk if kv[0] not in skip]


@pytest.mark.parametrize(
    "d_sitk",
    [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1), (0, 1, 0, 1, 0, 0, 0, 0, -1)],
)
def test_anatomical_orientation_equals_itks(tmp_path, d_sitk):
    img = sitk.GetImageFromArray(np.zeros((2, 3, 4), np.uint8))
    img.SetDirection(d_sitk)
    sitk.WriteImage(img, str(tmp_path / "itk.mhd"))
    write_metaimage(
        tmp_path / "ours.mhd",
        np.zeros((2, 3, 4), np.uint8),
        Geometry((1, 1, 1), direction=direction_from_sitk(d_sitk)),
    )
    itk = dict(_header(tmp_path / "itk.mhd"))["AnatomicalOrientation"]
    assert dict(_header(tmp_path / "ours.mhd"))["AnatomicalOrientation"] == itk


def test_round_trip_non_contiguous_bool_and_big_endian_inputs(tmp_path):
    g = Geometry((2.0, 1.0, 0.5), (1.0, 2.0, 3.0))
    base = _volume()
    view = base[:, ::-1, ::2]  # not contiguous
    write_metaimage(tmp_path / "v.mhd", view, g)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "v.mhd"))), view
    )
    mask = base > 0
    write_metaimage(tmp_path / "b.mha", mask, g)
    back = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b.mha")))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, mask.astype(np.uint8))
    write_metaimage(tmp_path / "e.mhd", base.astype(">i2"), g)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "e.mhd"))), base
    )


def test_overwrite_and_dotted_names(tmp_path):
    g = Geometry((1, 1, 1))
    name = "1.3.6.1.4.1.14519.5.2.1.6279.6001.123.mhd"
    write_metaimage(tmp_path / name, np.zeros((2, 2, 2), np.int16), g)
    write_metaimage(tmp_path / name, np.ones((3, 2, 2), np.int16), g)
    assert (tmp_path / "1.3.6.1.4.1.14519.5.2.1.6279.6001.123.raw").is_file()
    back = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name)))
    np.testing.assert_array_equal(back, np.ones((3, 2, 2), np.int16))


def test_failed_write_leaves_no_temporary_or_final_files(tmp_path, monkeypatch):
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        raise OSError("disk full")

    monkeypatch.setattr(metaimage.writer.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_metaimage(tmp_path / "f.mhd", np.zeros((2, 2, 2), np.int16), Geometry((1, 1, 1)))
    assert calls and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("path", "images", "geometry", "match"),
    [
        ("x.nii", np.zeros((2, 2, 2), np.int16), Geometry((1, 1, 1)), r"\.mhd or \.mha"),
        ("x.mhd", np.zeros((2, 2), np.int16), Geometry((1, 1, 1)), r"\(Z, Y, X\)"),
        ("x.mhd", np.zeros((2, 2, 2), np.complex64), Geometry((1, 1, 1)), "complex64"),
        ("x.mhd", np.zeros((2, 2, 2), np.int16), (1, 1, 1), "Geometry"),
    ],
)
def test_writer_rejects_bad_arguments(tmp_path, path, images, geometry, match):
    with pytest.raises(InvalidParameterError, match=match):
        write_metaimage(tmp_path / path, images, geometry)
    assert list(tmp_path.iterdir()) == []


# -- broken files ----------------------------------------------------------------------------------
@pytest.fixture()
def good(tmp_path) -> Path:
    sitk.WriteImage(_sitk_image(_volume()), str(tmp_path / "good.mhd"))
    return tmp_path / "good.mhd"


def _edit(good: Path, name: str, old: str, new: str) -> Path:
    text = good.read_text()
    if old.startswith("^"):  # a regex for a whole line
        edited = re.sub(old, new, text, count=1, flags=re.MULTILINE)
    else:
        edited = text.replace(old, new)
    assert edited != text
    out = good.with_name(name)
    out.write_text(edited)
    return out


@pytest.mark.parametrize(
    ("old", "new", "error", "match"),
    [
        ("DimSize = 13 11 7\n", "", InvalidScanError, "no DimSize"),
        ("ElementType = MET_SHORT\n", "", InvalidScanError, "no ElementType"),
        ("NDims = 3\n", "", InvalidScanError, "no NDims"),
        (
            "ElementSpacing = 0.69999999999999996 0.84999999999999998 2.5\n",
            "",
            InvalidScanError,
            "no ElementSpacing or ElementSize",
        ),
        ("NDims = 3", "NDims = 2", InvalidScanError, "NDims must be 3"),
        ("NDims = 3", "NDims = three", InvalidScanError, "NDims must be 1 integers"),
        ("DimSize = 13 11 7", "DimSize = 13 0 7", InvalidScanError, "positive"),
        ("DimSize = 13 11 7", "DimSize = 13 -11 7", InvalidScanError, "positive"),
        ("DimSize = 13 11 7", "DimSize = 13 11", InvalidScanError, "3 integers"),
        (
            "ElementSpacing = 0.69999999999999996",
            "ElementSpacing = 0",
            InvalidScanError,
            "positive",
        ),
        (
            "ElementSpacing = 0.69999999999999996",
            "ElementSpacing = -0.7",
            InvalidScanError,
            "positive",
        ),
        (
            "ElementSpacing = 0.69999999999999996",
            "ElementSpacing = nan",
            InvalidScanError,
            "finite",
        ),
        ("Offset = -170.125", "Offset = inf", InvalidScanError, "finite"),
        (
            r"^TransformMatrix = .*$",
            "TransformMatrix = 2 0 0 0 1 0 0 0 1",
            InvalidScanError,
            "orthonormal",
        ),
        (r"^TransformMatrix = .*$", "TransformMatrix = 1 2", InvalidScanError, "9 finite"),
        ("MET_SHORT", "MET_FOO", UnsupportedFormatError, "ElementType must be one of"),
        ("ObjectType = Image", "ObjectType = Mesh", UnsupportedFormatError, "ObjectType"),
        (
            "NDims = 3",
            "NDims = 3\nElementNumberOfChannels = 3",
            UnsupportedFormatError,
            "ElementNumberOfChannels must be 1",
        ),
        ("BinaryData = True", "BinaryData = False", UnsupportedFormatError, "ASCII"),
        ("BinaryData = True", "BinaryData = maybe", InvalidScanError, "True or False"),
        (
            "ElementDataFile = good.raw",
            "ElementDataFile = LIST",
            UnsupportedFormatError,
            "slice lists",
        ),
        (
            "ElementDataFile = good.raw",
            "ElementDataFile = missing.raw",
            CorruptFileError,
            "missing.raw.*does not exist",
        ),
        (
            "DimSize = 13 11 7",
            "DimSize = 13 11 8",
            CorruptFileError,
            r"expected 2288 bytes, got 2002 \(truncated",
        ),
        (
            "DimSize = 13 11 7",
            "DimSize = 13 11 6",
            CorruptFileError,
            r"expected 1716 bytes, got 2002 \(sizes disagree",
        ),
        (
            "DimSize = 13 11 7",
            "DimSize = 100000 100000 100000",
            InvalidScanError,
            "MAX_VOXELS_BYTES",
        ),
    ],
)
def test_broken_headers_raise_typed_errors_naming_the_file(good, old, new, error, match):
    bad = _edit(good, "bad_header.mhd", old, new)
    with pytest.raises(error, match=r"bad_header\.mhd.*" + match):
        read_metaimage(bad)


def test_giant_volume_is_refused_before_allocating(good, monkeypatch):
    bad = _edit(good, "giant.mhd", "DimSize = 13 11 7", "DimSize = 2048 2048 600")
    # 2048*2048*600*2 bytes = 4.7 GiB > MAX_VOXELS_BYTES; numpy must never be asked for it
    monkeypatch.setattr(metaimage.reader.np, "empty", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(InvalidScanError, match=r"giant\.mhd.*5033164800 bytes.*MAX_VOXELS_BYTES"):
        read_metaimage(bad)
    # a lower limit applies at call time (the one knob, ctflow.io.voxels.MAX_VOXELS_BYTES)
    monkeypatch.setattr(voxels, "MAX_VOXELS_BYTES", 1000)
    with pytest.raises(InvalidScanError, match=r"good\.mhd.*MAX_VOXELS_BYTES = 1000"):
        read_metaimage(good)


def test_truncated_and_padded_data_files(good):
    raw = good.with_suffix(".raw")
    data = raw.read_bytes()
    raw.write_bytes(data[:-3])
    with pytest.raises(
        CorruptFileError, match=r"good\.mhd.*good\.raw.*expected 2002 bytes, got 1999"
    ):
        read_metaimage(good)
    raw.write_bytes(data + b"\0")
    with pytest.raises(CorruptFileError, match=r"good\.mhd.*expected 2002 bytes, got 2003"):
        read_metaimage(good)


def test_truncated_mha(tmp_path):
    sitk.WriteImage(_sitk_image(_volume()), str(tmp_path / "t.mha"))
    data = (tmp_path / "t.mha").read_bytes()
    (tmp_path / "t.mha").write_bytes(data[:-10])
    with pytest.raises(CorruptFileError, match=r"t\.mha.*data after the header.*truncated"):
        read_metaimage(tmp_path / "t.mha")


@pytest.fixture()
def good_z(tmp_path) -> Path:
    sitk.WriteImage(_sitk_image(_volume()), str(tmp_path / "gz.mhd"), useCompression=True)
    return tmp_path / "gz.mhd"


def test_corrupt_zlib_data(good_z):
    zraw = good_z.with_suffix(".zraw")
    data = bytearray(zraw.read_bytes())
    data[10:30] = bytes(20)
    zraw.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=r"gz\.mhd.*gz\.zraw.*corrupt"):
        read_metaimage(good_z)


def test_truncated_zlib_data(good_z):
    zraw = good_z.with_suffix(".zraw")
    data = zraw.read_bytes()
    text = good_z.read_text()
    n = int(re.search(r"CompressedDataSize = (\d+)", text).group(1))
    zraw.write_bytes(data[:-20])
    with pytest.raises(CorruptFileError, match=r"gz\.mhd.*truncated"):
        read_metaimage(good_z)
    # without CompressedDataSize the stream itself is found to end early
    good_z.write_text(text.replace(f"CompressedDataSize = {n}\n", ""))
    with pytest.raises(CorruptFileError, match=r"gz\.mhd.*truncated"):
        read_metaimage(good_z)


def test_compressed_data_longer_than_the_header_says(good_z):
    arr = np.zeros((8, 11, 13), np.int16)  # one slice more than DimSize says
    comp = zlib.compress(arr.tobytes())
    good_z.with_suffix(".zraw").write_bytes(comp)
    text = re.sub(
        r"CompressedDataSize = \d+", f"CompressedDataSize = {len(comp)}", good_z.read_text()
    )
    good_z.write_text(text)
    with pytest.raises(CorruptFileError, match=r"gz\.mhd.*more voxel bytes.*sizes disagree"):
        read_metaimage(good_z)


def test_bytes_after_the_zlib_stream_are_ignored_like_itk(good_z):
    """Without CompressedDataSize, junk after the end of the zlib stream is ignored (as ITK
    does); this once made the reader loop forever."""
    text = re.sub(r"CompressedDataSize = \d+\n", "", good_z.read_text())
    good_z.write_text(text)
    with open(good_z.with_suffix(".zraw"), "ab") as fh:
        fh.write(b"trailing junk")
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(good_z)))
    np.testing.assert_array_equal(read_metaimage(good_z).images, ref)


def test_float_nan_and_inf_voxels_are_refused(tmp_path):
    for dtype in (np.float32, np.float64):
        arr = np.zeros(SHAPE, dtype)
        arr[3, 4, 5] = np.nan
        arr[1, 1, 1] = np.inf
        name = f"nan_{np.dtype(dtype).name}.mhd"
        sitk.WriteImage(_sitk_image(arr), str(tmp_path / name))
        with pytest.raises(InvalidScanError, match=re.escape(name) + ".*2 NaN or Inf"):
            read_metaimage(tmp_path / name)
    arr = np.zeros(SHAPE, np.float64)
    arr[0, 0, 0] = 1e300  # does not fit float32
    sitk.WriteImage(_sitk_image(arr), str(tmp_path / "huge.mhd"))
    with pytest.raises(InvalidScanError, match=r"huge\.mhd.*NaN or Inf"):
        read_metaimage(tmp_path / "huge.mhd")


def test_not_a_metaimage(tmp_path):
    rng = np.random.default_rng(5)
    (tmp_path / "garbage.mhd").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptFileError, match=r"garbage\.mhd.*not a MetaImage"):
        read_metaimage(tmp_path / "garbage.mhd")
    (tmp_path / "text.mhd").write_text("hello = world\nfoo = bar\n")
    with pytest.raises(UnsupportedFormatError, match=r"text\.mhd.*not a MetaImage header"):
        read_metaimage(tmp_path / "text.mhd")
    (tmp_path / "prose.mhd").write_text("just some words\n")
    with pytest.raises(CorruptFileError, match=r"prose\.mhd.*not 'Key = Value'"):
        read_metaimage(tmp_path / "prose.mhd")
    (tmp_path / "empty.mhd").write_bytes(b"")
    with pytest.raises(CorruptFileError, match=r"empty\.mhd.*empty"):
        read_metaimage(tmp_path / "empty.mhd")
    with pytest.raises(CorruptFileError, match=r"absent\.mhd.*no such file"):
        read_metaimage(tmp_path / "absent.mhd")
    with pytest.raises(CorruptFileError, match="folder"):
        read_metaimage(tmp_path)


# -- fuzzing ---------------------------------------------------------------------------------------
_GOOD_LINES = [
    "ObjectType = Image",
    "NDims = 3",
    "BinaryData = True",
    "BinaryDataByteOrderMSB = False",
    "CompressedData = False",
    "TransformMatrix = 1 0 0 0 1 0 0 0 1",
    "Offset = -1 2.5 3",
    "ElementSpacing = 0.7 0.7 2.5",
    "DimSize = 4 3 2",
    "ElementType = MET_SHORT",
    "ElementDataFile = fz.raw",
]
_KEYS = [line.split(" = ")[0] for line in _GOOD_LINES] + [
    "HeaderSize",
    "CompressedDataSize",
    "ElementNumberOfChannels",
    "ElementSize",
    "Position",
    "Rotation",
]
_VALUE = st.one_of(
    st.text(max_size=30),
    st.lists(
        st.one_of(
            st.integers(-(2**40), 2**40),
            st.floats(allow_nan=True, allow_infinity=True),
        ),
        max_size=10,
    ).map(lambda xs: " ".join(map(str, xs))),
    st.sampled_from(["LOCAL", "LIST", "MET_FLOAT", "MET_DOUBLE", "MET_UCHAR", "True", "-1"]),
)
_MUTATION = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(_KEYS), _VALUE),
    st.tuples(st.just("drop"), st.integers(0, len(_GOOD_LINES) - 1), st.just("")),
    st.tuples(st.just("raw"), st.integers(0, len(_GOOD_LINES)), st.binary(max_size=40)),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(_MUTATION, min_size=1, max_size=4), data_len=st.integers(0, 60))
def test_fuzzed_headers_only_raise_ctflow_errors(mutations, data_len):
    lines: list[bytes] = [line.encode() for line in _GOOD_LINES]
    for kind, where, what in mutations:
        if kind == "set":
            keys = [ln.split(b" = ")[0] for ln in lines]
            new = f"{where} = {what}".encode("utf-8", "surrogatepass")
            if where.encode() in keys:
                lines[keys.index(where.encode())] = new
            else:
                lines.insert(max(0, len(lines) - 1), new)
        elif kind == "drop" and lines:
            lines.pop(min(where, len(lines) - 1))
        elif kind == "raw":
            lines.insert(min(where, len(lines)), what)
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        (folder / "fz.mhd").write_bytes(b"\n".join(lines) + b"\n" + bytes(data_len))
        (folder / "fz.raw").write_bytes(np.arange(24, dtype=np.int16).tobytes()[:data_len])
        try:
            scan = read_metaimage(folder / "fz.mhd")
        except CTFlowError as exc:
            assert "fz.mhd" in str(exc)
        else:
            assert scan.images.ndim == 3 and scan.images.dtype in (np.int16, np.float32)
            assert np.all(scan.geometry.spacing > 0)


# -- real data -------------------------------------------------------------------------------------
def test_real_invesalius_cranium_equals_sitk(real_data, rng):
    path = real_data / "invesalius_cranium" / "cranium.mhd"
    scan = read_metaimage(path)
    ref = sitk.ReadImage(str(path))
    assert scan.shape == (108, 256, 256)
    assert scan.images.dtype == np.int16
    np.testing.assert_array_equal(scan.images, sitk.GetArrayFromImage(ref))
    _assert_geometry_matches_sitk(scan.geometry, ref, rng)
    assert int(scan.images.min()) == -1024 and int(scan.images.max()) == 2986
