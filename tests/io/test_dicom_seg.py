"""Masks from DICOM SEG and RT Structure Sets, and the DICOM SEG writer.

SEGs are written with highdicom directly (not with ctflow's writer) over the real 20-slice CT
series of TotalSegmentator's examples, with TotalSegmentator's own multi-label prediction for
that series as the labels; geometry is checked against SimpleITK's reading of the series. RT
structure sets are written with pydicom and their rasterisation is checked against
hand-computed voxel sets and a naive point-in-polygon test.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pack_bits
from pydicom.sr.codedict import codes
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

import ctflow as cf
from ctflow.errors import (
    CorruptFileError,
    InvalidParameterError,
    InvalidScanError,
    MissingDependencyError,
    UnsupportedFormatError,
)
from ctflow.geometry import Geometry, direction_from_sitk
from ctflow.io.dicom import (
    rasterize_contours,
    read_dicom_seg,
    read_rtstruct,
    write_dicom_seg,
)
from ctflow.io.dicom.seg import RT_STRUCTURE_SET_STORAGE, dicom_label_kind
from ctflow.io.dicom_writer import write_dicom_series
from ctflow.io.reader import read_scan
from ctflow.labels import labels_on_grid

try:
    import highdicom as hd
except ImportError:  # without the [seg] extra only the tests that write SEGs skip
    hd = None

TOTALSEG = "totalsegmentator_examples"


# -- the real series and its labels ------------------------------------------------------------


@pytest.fixture(scope="module")
def series(real_data, tmp_path_factory) -> Path:
    """The real CT series, with the UIDs its anonymisation emptied filled in.

    A SEG references its images by StudyInstanceUID, SeriesInstanceUID and SOP UIDs; the
    shipped copy has an empty SOPClassUID, StudyInstanceUID and SeriesInstanceUID.
    """
    if hd is None:
        pytest.skip("highdicom is not installed (pip install 'ctflow[seg]'): no SEG to read")
    src = real_data / TOTALSEG / "derived" / "example_ct_dicom_uncompressed"
    dst = tmp_path_factory.mktemp("series")
    study, uid = generate_uid(), generate_uid()
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(f)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, uid
        ds.save_as(dst / f.name)
    return dst


@pytest.fixture(scope="module")
def scan(series):
    return read_scan(series)


@pytest.fixture(scope="module")
def sitk_geometry(series) -> Geometry:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    img = reader.Execute()
    return Geometry(
        img.GetSpacing()[::-1], img.GetOrigin()[::-1], direction_from_sitk(img.GetDirection())
    )


@pytest.fixture(scope="module")
def organs(real_data, scan, series) -> np.ndarray:
    """TotalSegmentator's prediction for the series (NIfTI, stored y-flipped) on its grid.

    Checked against SimpleITK's nearest-neighbour resample of the NIfTI onto the series.
    """
    nii = real_data / TOTALSEG / "example_seg_dicom.nii.gz"
    stored = read_scan(nii)
    labels = labels_on_grid(stored.images, stored.geometry, scan.geometry, scan.shape)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    ct = reader.Execute()
    seg = sitk.ReadImage(str(nii))
    assert seg.GetDirection()[4] == -1.0  # stored with y reversed: the grids differ
    ref = sitk.Resample(seg, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    np.testing.assert_array_equal(labels, sitk.GetArrayFromImage(ref))
    assert labels.dtype == np.uint8 and len(np.unique(labels)) == 32  # background + 31 organs
    return labels


def _sources(folder: Path) -> list[Dataset]:
    """The series' headers sorted along the slice normal (z here), as highdicom wants them."""
    out = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.iterdir())]
    return sorted(out, key=lambda d: float(d.ImagePositionPatient[2]))


def _hd_seg(path, folder, pixels, names, seg_type="BINARY", **kw) -> Path:
    """Write a SEG with highdicom itself (segments 1..K named ``names``)."""
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i,
            segment_label=name,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Organ,
            algorithm_type="MANUAL",
        )
        for i, name in enumerate(names, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=_sources(folder),
        pixel_array=pixels,
        segmentation_type=seg_type,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=7,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
        **kw,
    )
    seg.save_as(path)
    return Path(path)


def _relabel(labels):
    """Labels -> segment numbers 1..K (in value order) and the values."""
    values = np.unique(labels)[1:]
    lut = np.zeros(int(values.max()) + 1, np.uint8)
    lut[values] = np.arange(1, len(values) + 1)
    return lut[labels], values


def _assert_geometry(got: Geometry, want: Geometry) -> None:
    np.testing.assert_allclose(got.spacing, want.spacing, rtol=1e-6)
    np.testing.assert_allclose(got.origin, want.origin, atol=1e-4)
    np.testing.assert_allclose(got.direction, want.direction, atol=1e-6)


def _shuffle(path: Path, out: Path, seed: int = 0, drop_spacing: bool = False) -> Path:
    """Rewrite a BINARY SEG with its frames (pixels + functional groups) in random order."""
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    order = np.random.default_rng(seed).permutation(len(frames))
    groups = list(ds.PerFrameFunctionalGroupsSequence)
    ds.PerFrameFunctionalGroupsSequence = [groups[i] for i in order]
    ds.PixelData = pack_bits(frames[order])
    if drop_spacing:
        del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices
    ds.save_as(out)
    return out


# -- reading SEGs written by highdicom ---------------------------------------------------------


def test_a_highdicom_seg_of_the_real_series_reads_back_its_labels_on_sitk_geometry(
    series, organs, sitk_geometry, tmp_path
):
    numbers, values = _relabel(organs)
    names = [f"organ {v}" for v in values]
    path = _hd_seg(tmp_path / "organs.dcm", series, numbers, names)
    out = read_dicom_seg(path)
    assert out.labels.dtype == np.uint8 and out.labels.shape == (20, 512, 512)
    np.testing.assert_array_equal(out.labels, numbers)  # every slice has organs: full extent
    _assert_geometry(out.geometry, sitk_geometry)
    assert [s.number for s in out.segments] == list(range(1, 32))
    assert [s.value for s in out.segments] == list(range(1, 32))  # not ctflow's: numbers
    assert out.names == tuple(names) and out.segments[0].property_type == "Organ"
    assert out.segments[0].category == "Tissue" and out.segments[0].algorithm_type == "MANUAL"
    assert out.info["segmentation_type"] == "BINARY" and out.info["referenced_instances"] == 20
    assert out.info["z_spacing_source"] == "SpacingBetweenSlices" and out.warnings == []
    # on the series as reference: the same
    again = read_dicom_seg(path, reference=series)
    np.testing.assert_array_equal(again.labels, numbers)
    assert again.info["placed"] == "on the reference grid"


def test_sparse_shuffled_frames_are_placed_by_position(series, scan, sitk_geometry, tmp_path):
    labels = np.zeros(scan.shape, np.uint8)
    labels[3:5, 100:180, 200:300] = 1
    labels[9, 300:320, 50:90] = 2
    labels[15, 400:402, 400:500] = 3
    labels[4, 150:160, 210:220] = 0
    written = _hd_seg(tmp_path / "sparse.dcm", series, labels, ["a", "b", "c"])
    assert pydicom.dcmread(written).NumberOfFrames == 4  # only the planes with content
    path = _shuffle(written, tmp_path / "shuffled.dcm", seed=3)
    order = [
        float(g.PlanePositionSequence[0].ImagePositionPatient[2])
        for g in pydicom.dcmread(path).PerFrameFunctionalGroupsSequence
    ]
    assert order != sorted(order)
    # highdicom still reads the shuffled file the same way
    seg = hd.seg.segread(path)
    uids = [d.SOPInstanceUID for d in _sources(series)]
    hd_pixels = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    np.testing.assert_array_equal(hd_pixels, labels)
    # on the series' grid
    full = read_dicom_seg(path, reference=series)
    np.testing.assert_array_equal(full.labels, labels)
    _assert_geometry(full.geometry, sitk_geometry)
    # on the frames' own grid: slices 3 .. 15 of the series
    alone = read_dicom_seg(path)
    np.testing.assert_array_equal(alone.labels, labels[3:16])
    _assert_geometry(alone.geometry, sitk_geometry.shifted((3, 0, 0)))
    # without SpacingBetweenSlices the step is inferred from the gaps (2, 10, 12 mm) and said so
    bare = read_dicom_seg(_shuffle(written, tmp_path / "bare.dcm", seed=4, drop_spacing=True))
    np.testing.assert_array_equal(bare.labels, labels[3:16])
    _assert_geometry(bare.geometry, sitk_geometry.shifted((3, 0, 0)))
    assert bare.info["z_spacing_source"] == "frames"
    assert "inferred from the frame positions" in bare.warnings[0]
    # with a Scan or a (geometry, shape) pair as the reference
    on_scan = read_dicom_seg(path, reference=scan)
    np.testing.assert_array_equal(on_scan.labels, labels)
    pair = read_dicom_seg(path, reference=(scan.geometry, scan.shape))
    np.testing.assert_array_equal(pair.labels, labels)


@pytest.mark.parametrize(
    ("seg_type", "syntax"),
    [("BINARY", JPEG2000Lossless), ("LABELMAP", RLELossless), ("LABELMAP", JPEGLSLossless)],
)
def test_compressed_and_labelmap_segs(series, scan, seg_type, syntax, tmp_path):
    labels = np.zeros(scan.shape, np.uint8)
    labels[3:9, 100:200, 100:300] = 1
    labels[10:12, 300:400, 50:100] = 2
    path = _hd_seg(
        tmp_path / "c.dcm", series, labels, ["a", "b"], seg_type, transfer_syntax_uid=syntax
    )
    out = read_dicom_seg(path, reference=series)
    np.testing.assert_array_equal(out.labels, labels)
    assert out.info["segmentation_type"] == seg_type


def test_a_seg_goes_onto_a_flipped_grid_exactly(series, scan, tmp_path):
    labels = np.zeros(scan.shape, np.uint8)
    labels[2:6, 10:60, 300:420] = 1
    path = _hd_seg(tmp_path / "s.dcm", series, labels, ["a"])
    g = scan.geometry
    flipped = Geometry(g.spacing, g.voxel_to_world((0, 511, 0)), g.direction @ np.diag([1, -1, 1]))
    out = read_dicom_seg(path, reference=(flipped, scan.shape))
    assert out.info["placed"].startswith("resampled onto the reference grid")
    np.testing.assert_array_equal(out.labels, labels[:, ::-1])


def test_fractional_frames_are_thresholded_at_half_the_maximum(series, scan, tmp_path):
    rng = np.random.default_rng(0)
    prob = rng.choice(np.array([0.0, 0.2, 0.45, 0.55, 0.9], np.float32), size=scan.shape)
    prob[:, :, 256:] = 0
    path = _hd_seg(tmp_path / "frac.dcm", series, prob, ["p"], seg_type="FRACTIONAL")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.SegmentationType == "FRACTIONAL" and ds.MaximumFractionalValue == 255
    out = read_dicom_seg(path)
    np.testing.assert_array_equal(out.labels, (prob >= 0.5).astype(np.uint8))


def test_overlapping_segments_are_refused_unless_asked_how(series, scan, tmp_path):
    masks = np.zeros((*scan.shape, 2), bool)
    masks[5:8, 100:200, 100:200, 0] = True
    masks[6:10, 150:250, 150:250, 1] = True
    written = _hd_seg(tmp_path / "o.dcm", series, masks, ["liver", "tumour"])
    path = _shuffle(written, tmp_path / "overlap.dcm", seed=1)
    with pytest.raises(InvalidScanError, match="overlap") as err:
        read_dicom_seg(path)
    assert str(path) in str(err.value) and "'liver'" in str(err.value)
    assert "'tumour'" in str(err.value) and "overlap='channels'" in str(err.value)
    both = masks[..., 0] & masks[..., 1]
    first = read_dicom_seg(path, series, overlap="first").labels
    last = read_dicom_seg(path, series, overlap="last").labels
    assert (first[both] == 1).all() and (last[both] == 2).all()
    for out in (first, last):
        np.testing.assert_array_equal(out[masks[..., 0] & ~both], 1)
        np.testing.assert_array_equal(out[masks[..., 1] & ~both], 2)
        assert (out[~masks.any(-1)] == 0).all()
    channels = read_dicom_seg(path, series, overlap="channels")
    assert channels.labels.shape == (2, *scan.shape) and channels.labels.dtype == np.uint8
    np.testing.assert_array_equal(channels.labels, np.moveaxis(masks, -1, 0))
    with pytest.raises(InvalidParameterError, match="overlap must be one of"):
        read_dicom_seg(path, overlap="max")


def test_frames_oblique_to_the_scan_are_a_typed_error(series, scan, tmp_path):
    labels = np.zeros(scan.shape, np.uint8)
    labels[4, 200:220, 200:220] = 1
    path = _hd_seg(tmp_path / "seg.dcm", series, labels, ["a"])
    ds = pydicom.dcmread(path)
    a = np.deg2rad(30)
    orientation = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
    orientation.ImageOrientationPatient = [np.cos(a), np.sin(a), 0, -np.sin(a), np.cos(a), 0]
    ds.save_as(path)
    with pytest.raises(InvalidScanError, match="disagree with the orientation") as err:
        read_dicom_seg(path, reference=series)
    assert str(path) in str(err.value)
    ds = cf.Dataset.from_paths({"ct": {"images": series, "masks": path}})
    with pytest.raises(InvalidScanError, match="disagree with the orientation"):
        ds.create_batch(["ct"]).load()
    # frames between the scan's slices are refused too
    ds = pydicom.dcmread(path)
    ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient = [
        1, 0, 0, 0, 1, 0
    ]  # fmt: skip
    position = ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    position.ImagePositionPatient[2] = float(position.ImagePositionPatient[2]) + 1.0
    ds.save_as(path)
    with pytest.raises(InvalidScanError, match="between the voxels"):
        read_dicom_seg(path, reference=scan)


def test_non_seg_files_are_typed_errors_naming_the_file(series, tmp_path):
    ct_slice = sorted(series.iterdir())[0]
    with pytest.raises(UnsupportedFormatError, match="CT Image Storage") as err:
        read_dicom_seg(ct_slice)
    assert str(ct_slice) in str(err.value)
    text = tmp_path / "notes.dcm"
    text.write_text("not DICOM")
    with pytest.raises(UnsupportedFormatError, match="not a DICOM file"):
        read_dicom_seg(text)
    assert dicom_label_kind(text) is None and dicom_label_kind(series) is None
    ds = cf.Dataset.from_paths({"ct": {"images": series, "masks": ct_slice}})
    with pytest.raises(UnsupportedFormatError, match="not a DICOM SEG or RT Structure Set") as err:
        ds.create_batch(["ct"]).load()
    assert str(ct_slice) in str(err.value)
    labels = np.zeros((20, 512, 512), np.uint8)
    labels[4, :9, :9] = 1
    data = _hd_seg(tmp_path / "seg.dcm", series, labels, ["a"]).read_bytes()
    for n_bytes in (len(data) - 20, 3000):  # cut in the pixel data / in the header
        cut = tmp_path / f"cut{n_bytes}.dcm"
        cut.write_bytes(data[:n_bytes])
        with pytest.raises(CorruptFileError, match=r"truncated|pixel data") as err:
            read_dicom_seg(cut)
        assert str(cut) in str(err.value)


# -- ctflow's writer ---------------------------------------------------------------------------


def test_write_dicom_seg_round_trips_and_highdicom_reads_it(series, scan, organs, tmp_path):
    values = [int(v) for v in np.unique(organs)[1:]]
    names = {v: f"organ {v}" for v in values}
    path = write_dicom_seg(
        tmp_path / "out" / "organs.dcm", organs, series, names, geometry=scan.geometry
    )
    back = read_dicom_seg(path)
    np.testing.assert_array_equal(back.labels, organs)  # the label values, not 1..K
    _assert_geometry(back.geometry, scan.geometry)
    assert [s.value for s in back.segments] == values and back.names == tuple(names.values())
    assert [s.number for s in back.segments] == list(range(1, len(values) + 1))
    # highdicom reads it: each segment's pixels are the label's voxels
    seg = hd.seg.segread(path)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == scan.info["series_uid"]
    assert seg.Manufacturer == "ctflow" and seg.SoftwareVersions == cf.__version__
    algorithm = seg.get_segment_description(1).algorithm_identification[0]
    assert algorithm.AlgorithmName == "ctflow" and algorithm.AlgorithmVersion == cf.__version__
    uids = [d.SOPInstanceUID for d in _sources(series)]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=seg.segment_numbers)
    assert pixels.shape == (*scan.shape, len(values))
    for k, value in enumerate(values):
        np.testing.assert_array_equal(pixels[..., k], organs == value)
    # a LABELMAP SEG: segment number = label value
    lm = write_dicom_seg(tmp_path / "lm.dcm", organs, series, segmentation_type="LABELMAP")
    back = read_dicom_seg(lm)
    np.testing.assert_array_equal(back.labels, organs)
    assert back.info["segmentation_type"] == "LABELMAP"
    assert [s.number for s in back.segments] == values
    assert hd.seg.segread(lm).segmentation_type.value == "LABELMAP"


def test_write_dicom_seg_checks_its_inputs(series, scan, real_data, tmp_path, monkeypatch):
    labels = np.zeros(scan.shape, np.uint8)
    labels[3, 10:20, 10:20] = 4
    with pytest.raises(InvalidScanError, match="shape of the series"):
        write_dicom_seg(tmp_path / "a.dcm", labels[:10], series)
    with pytest.raises(InvalidScanError, match="the series' grid"):
        write_dicom_seg(
            tmp_path / "a.dcm", labels, series, geometry=scan.geometry.shifted((1, 0, 0))
        )
    with pytest.raises(InvalidParameterError, match="nothing to write"):
        write_dicom_seg(tmp_path / "a.dcm", labels * 0, series)
    with pytest.raises(InvalidParameterError, match="one name per label value"):
        write_dicom_seg(tmp_path / "a.dcm", labels, series, ["a", "b"])
    anonymised = real_data / TOTALSEG / "derived" / "example_ct_dicom_uncompressed"
    with pytest.raises(InvalidScanError, match="no StudyInstanceUID"):
        write_dicom_seg(tmp_path / "a.dcm", labels, anonymised)
    assert not (tmp_path / "a.dcm").exists()
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'ctflow\[seg\]'"):
        write_dicom_seg(tmp_path / "a.dcm", labels, series)


# -- loading -----------------------------------------------------------------------------------


def test_load_puts_seg_masks_on_the_scan(series, scan, organs, tmp_path):
    few = np.where(np.isin(organs, [1, 5, 6, 52, 117]), organs, 0)  # five organs: faster
    numbers, _ = _relabel(few)
    sparse = numbers.copy()
    sparse[:4] = 0  # frames from slice 4 on: still on the series' grid
    path = _hd_seg(tmp_path / "organs.dcm", series, sparse, [f"o{i}" for i in range(1, 6)])
    ds = cf.Dataset.from_paths({"ct": {"images": series, "masks": path}})
    batch = ds.create_batch(["ct"]).load()
    assert batch[0].masks.dtype == np.uint8 and set(np.unique(sparse)) == {0, 1, 2, 3, 4, 5}
    np.testing.assert_array_equal(batch[0].masks, sparse)
    np.testing.assert_array_equal(batch[0].images, scan.images)
    ours = write_dicom_seg(tmp_path / "ours.dcm", few, series)
    ds = cf.Dataset.from_paths({"ct": {"images": series, "masks": ours}})
    np.testing.assert_array_equal(ds.create_batch(["ct"]).load()[0].masks, few)


# -- RT Structure Sets -------------------------------------------------------------------------

GRID = Geometry((2.5, 0.8, 0.7), (-40.0, 20.0, -30.0))
SHAPE = (8, 40, 48)


def _world(g: Geometry, zyx) -> np.ndarray:
    """Voxel (z, y, x) points -> DICOM (x, y, z) world points."""
    return g.voxel_to_world(np.asarray(zyx, float))[:, ::-1]


def _square(z, y0, y1, x0, x1) -> np.ndarray:
    return _world(GRID, [(z, y0, x0), (z, y0, x1), (z, y1, x1), (z, y1, x0)])


def _circle(z, centre_mm, radius_mm, n=720) -> np.ndarray:
    """A circle in world mm (on slice z), as a polygon of n points (x, y, z)."""
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    world_z = GRID.voxel_to_world((z, 0, 0))[0]
    return np.column_stack(
        [
            centre_mm[1] + radius_mm * np.cos(a),
            centre_mm[0] + radius_mm * np.sin(a),
            np.full(n, world_z),
        ]
    )


def _rtstruct(path: Path, rois: dict, series_uid: str = "") -> Path:
    """Write an RT Structure Set with pydicom: ``rois`` = {(number, name): [(type, xyz)]}."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality = "RTSTRUCT"
    ds.StructureSetLabel = "test"
    frame_uid = generate_uid()
    referenced = Dataset()
    referenced.FrameOfReferenceUID = frame_uid
    if series_uid:
        study, ser = Dataset(), Dataset()
        ser.SeriesInstanceUID = series_uid
        study.RTReferencedSeriesSequence = [ser]
        referenced.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [referenced]
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = [], [], []
    for (number, name), contours in rois.items():
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = number, name, frame_uid
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber, observation.RTROIInterpretedType = number, "ORGAN"
        ds.RTROIObservationsSequence.append(observation)
        if contours is None:
            continue  # an ROI without a ROIContourSequence item
        item = Dataset()
        item.ReferencedROINumber = number
        item.ContourSequence = []
        for kind, points in contours:
            contour = Dataset()
            contour.ContourGeometricType = kind
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [f"{v:.10g}" for v in np.ravel(points)]
            item.ContourSequence.append(contour)
        ds.ROIContourSequence.append(item)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _naive_inside(polygons_yx, shape_yx) -> np.ndarray:
    """Even-odd ray casting (+x ray) from every voxel centre, plus centres on an edge."""
    yy, xx = np.mgrid[: shape_yx[0], : shape_yx[1]].astype(float)
    odd = np.zeros(shape_yx, bool)
    on = np.zeros(shape_yx, bool)
    for poly in polygons_yx:
        for (ya, xa), (yb, xb) in zip(poly, np.roll(poly, -1, axis=0)):
            straddles = (ya > yy) != (yb > yy)
            with np.errstate(divide="ignore", invalid="ignore"):
                x_cross = xa + (yy - ya) * (xb - xa) / (yb - ya)
            odd ^= straddles & (xx < x_cross)
            # distance from the centre to the segment
            d = np.array([yb - ya, xb - xa])
            t = np.clip(((yy - ya) * d[0] + (xx - xa) * d[1]) / max(d @ d, 1e-300), 0, 1)
            on |= np.hypot(yy - (ya + t * d[0]), xx - (xa + t * d[1])) <= 1e-3
    return odd | on


def _yx(points_xyz, g=GRID):
    return g.world_to_voxel(points_xyz[:, ::-1])[:, 1:]


@pytest.fixture()
def rois():
    """A square on slices 2-3, a ring (circle with a hole) on slices 5-6, a triangle through
    voxel centres on slice 0, a point, an ROI without contours and a contour off the grid."""
    centre = GRID.voxel_to_world((0, 20.5, 30.13))[1:]  # (y, x) mm, off the voxel lattice
    ring = [("CLOSED_PLANAR", _circle(z, centre, r)) for z in (5, 6) for r in (8.0, 3.0)]
    triangle = _world(GRID, [(0, 2, 2), (0, 2, 30), (0, 20, 11)])
    return (
        {
            (10, "box"): [("CLOSED_PLANAR", _square(z, 5.5, 12.5, 10.5, 20.5)) for z in (2, 3)]
            + [("CLOSED_PLANAR", _square(20, 5.5, 12.5, 10.5, 20.5))],  # slice 20: off the grid
            (20, "ring"): ring,
            (30, "empty"): None,
            (40, "tri"): [("CLOSED_PLANAR", triangle), ("POINT", triangle[:1])],
        },
        centre,
    )


def test_rtstruct_rasterisation_matches_hand_computed_voxels(rois, tmp_path):
    table, centre = rois
    path = _rtstruct(tmp_path / "rs.dcm", table)
    out = read_rtstruct(path, GRID, SHAPE)
    assert out.names == ("box", "ring", "empty", "tri")
    assert [(s.number, s.value) for s in out.segments] == [(10, 1), (20, 2), (30, 3), (40, 4)]
    assert out.segments[0].property_type == "ORGAN" and out.segments[0].algorithm_type == "MANUAL"
    labels = out.labels
    assert labels.dtype == np.uint8 and labels.shape == SHAPE
    # the square: voxel centres y 6..12, x 11..20 on slices 2 and 3
    box = np.zeros(SHAPE, bool)
    box[2:4, 6:13, 11:21] = True
    np.testing.assert_array_equal(labels == 1, box)
    # the ring: 3 mm < distance in mm from the centre < 8 mm, on slices 5 and 6
    yy, xx = np.mgrid[: SHAPE[1], : SHAPE[2]]
    world = GRID.voxel_to_world(np.column_stack([np.zeros(yy.size), yy.ravel(), xx.ravel()]))
    dist = np.hypot(world[:, 1] - centre[0], world[:, 2] - centre[1]).reshape(yy.shape)
    assert min(np.abs(dist - 8.0).min(), np.abs(dist - 3.0).min()) > 0.01  # no centre on an edge
    ring = np.zeros(SHAPE, bool)
    ring[5:7] = (dist > 3.0) & (dist < 8.0)
    assert ring[5].sum() > 100 and not ring[5][dist < 3.0].any()
    np.testing.assert_array_equal(labels == 2, ring)
    # the triangle through voxel centres: the naive point-in-polygon test (edges inside)
    tri = table[(40, "tri")][0][1]
    expected = _naive_inside([_yx(tri)], SHAPE[1:])
    np.testing.assert_array_equal(labels[0] == 4, expected)
    assert expected[2, 2:31].all() and expected[20, 11]  # its edge and apex are inside
    assert (labels[1] == 0).all() and (labels[4] == 0).all() and (labels[7] == 0).all()
    # the naive test agrees on every slice of every closed ROI
    for value, (_, contours) in enumerate(list(table.items())[:2], start=1):
        for z in range(SHAPE[0]):
            polys = [
                _yx(p) for _, p in contours if np.rint(GRID.world_to_voxel(p[0, ::-1])[0]) == z
            ]
            np.testing.assert_array_equal(labels[z] == value, _naive_inside(polys, SHAPE[1:]))
    assert out.warnings == [
        "ROI 10 'box': 1 contour(s) on no slice of the grid and left out",
        "ROI 30 'empty' has no contour: label 3 is empty",
        "ROI 40 'tri': 1 POINT contour(s) enclose no area and were left out",
    ]


def test_rtstruct_maps_contours_by_world_position(rois, tmp_path):
    table, _ = rois
    path = _rtstruct(tmp_path / "rs.dcm", table)
    plain = read_rtstruct(path, GRID, SHAPE).labels
    # the same world grid stored with y and z reversed: the same voxels, reversed
    g = GRID
    flipped = Geometry(g.spacing, g.voxel_to_world((7, 39, 0)), g.direction @ np.diag([-1, -1, 1]))
    out = read_rtstruct(path, flipped, SHAPE)
    np.testing.assert_array_equal(out.labels, plain[::-1, ::-1])
    # a grid half a slice off: contours between slices are drawn on the nearest, and said so
    shifted = read_rtstruct(path, g.shifted((0.4, 0, 0)), SHAPE)
    np.testing.assert_array_equal(shifted.labels, plain)
    assert any("between slices (drawn on the nearest)" in w for w in shifted.warnings)
    # a grid cut in-plane: contours reaching outside are clipped, and said so
    cut = read_rtstruct(path, g.shifted((0, 8, 0)), SHAPE)
    np.testing.assert_array_equal(cut.labels[:, :-8], plain[:, 8:])
    assert any("reaching outside the grid in-plane (clipped)" in w for w in cut.warnings)


def test_rtstruct_rois_pick_and_overlap(rois, tmp_path):
    table, _ = rois
    table[(50, "big")] = [("CLOSED_PLANAR", _square(2, 0.5, 30.5, 0.5, 40.5))]
    path = _rtstruct(tmp_path / "rs.dcm", table)
    with pytest.raises(InvalidScanError, match="ROIs 10 'box' and 50 'big' overlap") as err:
        read_rtstruct(path, GRID, SHAPE)
    assert str(path) in str(err.value)
    picked = read_rtstruct(path, GRID, SHAPE, rois=["RING", 10])
    assert picked.names == ("ring", "box") and set(np.unique(picked.labels)) == {0, 1, 2}
    last = read_rtstruct(path, GRID, SHAPE, rois=["box", "big"], overlap="last").labels
    first = read_rtstruct(path, GRID, SHAPE, rois=["box", "big"], overlap="first").labels
    assert (last[2, 6:13, 11:21] == 2).all() and (first[2, 6:13, 11:21] == 1).all()
    assert (last[3, 6:13, 11:21] == 1).all()  # "big" is on slice 2 only
    channels = read_rtstruct(path, GRID, SHAPE, rois=["box", "big"], overlap="channels").labels
    assert channels.shape == (2, *SHAPE) and channels[0, 2, 6:13, 11:21].all()
    with pytest.raises(InvalidParameterError, match=r"no ROI 'liver'.*10 'box'"):
        read_rtstruct(path, GRID, SHAPE, rois=["liver"])
    with pytest.raises(UnsupportedFormatError, match="not an RT Structure Set"):
        read_rtstruct(get_testdata_file("CT_small.dcm"), GRID, SHAPE)


def test_rasterize_contours_even_odd_holes_and_islands():
    g = Geometry((1, 1, 1))
    outer = _world(g, [(0, 0.5, 0.5), (0, 0.5, 9.5), (0, 9.5, 9.5), (0, 9.5, 0.5)])
    hole = _world(g, [(0, 2.5, 2.5), (0, 2.5, 7.5), (0, 7.5, 7.5), (0, 7.5, 2.5)])
    island = _world(g, [(0, 4.5, 4.5), (0, 4.5, 5.5), (0, 5.5, 5.5), (0, 5.5, 4.5)])
    mask = rasterize_contours([outer, hole, island], g, (1, 11, 11))[0]
    want = np.zeros((11, 11), bool)
    want[1:10, 1:10] = True
    want[3:8, 3:8] = False
    want[5, 5] = True
    np.testing.assert_array_equal(mask, want)
    problems: Counter[str] = Counter()
    tilted = outer.copy()
    tilted[2, 2] += 1.0  # one point a slice off: not in a plane of the grid
    assert not rasterize_contours([tilted], g, (2, 11, 11), problems=problems).any()
    assert problems == {"not in a slice plane of the grid (oblique)": 1}


def test_load_puts_rtstruct_masks_on_the_scan(rois, tmp_path):
    table, _ = rois
    folder = tmp_path / "ct"
    write_dicom_series(folder, np.zeros(SHAPE, np.int16), GRID)
    path = _rtstruct(tmp_path / "rs.dcm", table)
    ds = cf.Dataset.from_paths({"p": {"images": folder, "masks": path}})
    batch = ds.create_batch(["p"]).load()
    np.testing.assert_array_equal(batch[0].masks, read_rtstruct(path, GRID, SHAPE).labels)
    assert "ROI 30 'empty' has no contour: label 3 is empty" in batch.info[0]["label_warnings"]
