"""ctflow.viz: pictures put every voxel and every nodule at its world position.

References: SimpleITK's index -> physical point mapping for files written and re-oriented by
SimpleITK itself, numpy maxima for the MIP, hand-computed circle radii.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

import ctflow as cf
from ctflow.viz import show_item, show_scan, show_slice

SPACING_XYZ = (0.8, 0.7, 2.5)
ORIGIN_XYZ = (-40.0, -30.0, -100.0)


def _pixel_world(image_artist, row: int, col: int) -> tuple[float, float]:
    """World (horizontal, vertical) of pixel (row, col) of an imshow artist, from its extent."""
    arr = image_artist.get_array()
    left, right, bottom, top = image_artist.get_extent()
    n_rows, n_cols = arr.shape[:2]
    h = left + (col + 0.5) * (right - left) / n_cols
    if image_artist.origin == "upper":
        v = top + (row + 0.5) * (bottom - top) / n_rows
    else:
        v = bottom + (row + 0.5) * (top - bottom) / n_rows
    return h, v


def _marker_volume() -> tuple[sitk.Image, tuple[float, float, float]]:
    """A 12x20x24 (z, y, x) volume of -1000 HU with one 1000 HU voxel; its LPS (x, y, z)."""
    arr = np.full((12, 20, 24), -1000, np.int16)
    arr[7, 5, 17] = 1000
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(SPACING_XYZ)
    img.SetOrigin(ORIGIN_XYZ)
    return img, img.TransformIndexToPhysicalPoint((17, 5, 7))


@pytest.mark.parametrize(
    "reorient",
    [
        pytest.param(lambda im: im, id="LPS"),
        pytest.param(lambda im: sitk.Flip(im, [True, True, False]), id="RAS-like flip x,y"),
        pytest.param(lambda im: sitk.Flip(im, [False, False, True]), id="flip z"),
        pytest.param(lambda im: sitk.PermuteAxes(im, [2, 0, 1]), id="permuted axes"),
    ],
)
def test_every_view_puts_the_marker_at_its_world_position(tmp_path, reorient):
    img, (mx, my, mz) = _marker_volume()
    stored = reorient(img)
    path = tmp_path / "scan.nii.gz"
    sitk.WriteImage(stored, str(path))
    # SimpleITK says where the bright voxel is in the re-oriented file
    idx = np.unravel_index(np.argmax(sitk.GetArrayFromImage(stored)), stored.GetSize()[::-1])
    world = stored.TransformIndexToPhysicalPoint(tuple(int(i) for i in idx[::-1]))
    np.testing.assert_allclose(world, (mx, my, mz), atol=1e-6)

    scan = cf.read_scan(path)
    fig = show_scan(scan.images, scan.geometry, center=(mz, my, mx), window=None)
    axial, coronal, sagittal, mip = fig.axes
    expected = {axial: (mx, my), coronal: (mx, mz), sagittal: (my, mz), mip: (mx, my)}
    for ax, (h, v) in expected.items():
        artist = ax.images[0]
        arr = np.asarray(artist.get_array())
        row, col = np.unravel_index(np.argmax(arr), arr.shape)
        assert arr[row, col] == 1000, ax.get_title()
        np.testing.assert_allclose(_pixel_world(artist, row, col), (h, v), atol=1e-6)
    # radiological display: x grows to the right, anterior (small y) up, head (large z) up
    assert axial.get_xlim()[0] < axial.get_xlim()[1]
    assert axial.get_ylim()[0] > axial.get_ylim()[1]
    assert coronal.get_ylim()[0] < coronal.get_ylim()[1]
    assert axial.get_xlabel() == "x (mm, LPS)" and sagittal.get_xlabel() == "y (mm, LPS)"


def test_nodule_circles_are_where_the_sphere_cuts_each_plane():
    vol = np.zeros((30, 40, 40), np.int16)
    g = cf.Geometry((2.0, 1.0, 1.0), (10.0, -20.0, 5.0))
    nodule = (30.0, -2.0, 21.0, 10.0)  # z, y, x, diameter
    table = pd.DataFrame([nodule], columns=["z", "y", "x", "diameter"])
    # planes snap to voxel centres: z 33 -> slice 12 (z = 34), y = 1, x = 25
    fig = show_scan(vol, g, nodules=table, center=(33.0, 1.0, 25.0), mip_mm=4.0)
    axial, coronal, sagittal, mip = fig.axes
    r = nodule[3] / 2
    for ax, dist, xy in (
        (axial, 4.0, (21.0, -2.0)),  # (x, y)
        (coronal, 3.0, (21.0, 30.0)),  # (x, z)
        (sagittal, 4.0, (-2.0, 30.0)),  # (y, z)
    ):
        (circle,) = ax.patches
        np.testing.assert_allclose(circle.center, xy)
        np.testing.assert_allclose(circle.radius, np.sqrt(r * r - dist * dist))
    # the MIP slab covers slices 10..12 (z 29..35 mm): it holds the nodule's centre plane
    assert mip.get_title() == "axial MIP, z = 29.0 .. 35.0 mm"
    (circle,) = mip.patches
    np.testing.assert_allclose(circle.radius, r)
    # a plane beyond the radius shows no circle
    far = show_scan(vol, g, nodules=[nodule], center=(60.0, 1.0, 25.0))
    assert len(far.axes[0].patches) == 0


def test_mip_panel_is_the_max_over_the_slab_and_masks_are_overlaid(rng):
    vol = rng.integers(-1000, 400, size=(20, 16, 18)).astype(np.int16)
    masks = np.zeros(vol.shape, np.uint8)
    masks[8:11, 4:7, 5:9] = 1
    lungs = np.zeros(vol.shape, np.uint8)
    lungs[:, 2:14, 2:16] = 1
    g = cf.Geometry((1.5, 1.0, 1.0))
    fig = show_scan(vol, g, masks=masks, lungs=lungs, center=(15.0, 5.0, 6.0), mip_mm=6.0)
    axial, _, _, mip = fig.axes
    # centre z = 15 mm -> slice 10; slab 12..18 mm -> slices 8..12
    np.testing.assert_array_equal(np.asarray(mip.images[0].get_array()), vol[8:13].max(axis=0))
    np.testing.assert_array_equal(np.asarray(axial.images[0].get_array()), vol[10])
    # overlays: lungs then masks, drawn only where the mask is set
    lung_layer, mask_layer = (np.ma.getmaskarray(im.get_array()) for im in axial.images[1:])
    np.testing.assert_array_equal(~lung_layer, lungs[10].astype(bool))
    np.testing.assert_array_equal(~mask_layer, masks[10].astype(bool))
    mip_mask = np.ma.getmaskarray(mip.images[1].get_array())
    np.testing.assert_array_equal(~mip_mask, masks[8:13].max(axis=0).astype(bool))


def test_default_centre_is_the_largest_nodule_and_png_is_written(tmp_path):
    vol = np.zeros((20, 20, 20), np.int16)
    g = cf.Geometry((1.0, 1.0, 1.0))
    nods = [(5.0, 5.0, 5.0, 3.0), (12.0, 14.0, 9.0, 6.0)]
    fig = show_scan(vol, g, nodules=nods)
    assert fig.axes[0].get_title() == "axial z = 12.0 mm"
    assert fig.axes[1].get_title() == "coronal y = 14.0 mm"
    assert fig.axes[2].get_title() == "sagittal x = 9.0 mm"
    out = tmp_path / "scan.png"
    fig.savefig(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_oblique_scans_are_drawn_along_voxel_axes():
    c, s = np.cos(0.3), np.sin(0.3)
    direction = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    g = cf.Geometry((2.0, 1.0, 1.0), (0.0, 0.0, 0.0), direction)
    world = g.voxel_to_world([4.0, 6.0, 7.0])
    fig = show_scan(np.zeros((10, 12, 14), np.int16), g, nodules=[(*world, 4.0)])
    axial = fig.axes[0]
    assert axial.get_xlabel() == "x (mm, voxel axes)"
    # the nodule sits at voxel (4, 6, 7): 8 mm, 6 mm, 7 mm along the voxel axes
    assert axial.get_title() == "axial z = 8.0 mm"
    np.testing.assert_allclose(axial.patches[0].center, (7.0, 6.0), atol=1e-9)


def test_show_item_draws_a_batch_item():
    vol = np.zeros((16, 16, 16), np.int16)
    nodules = pd.DataFrame({"id": ["a"], "z": [8.0], "y": [7.0], "x": [6.0], "diameter": [4.0]})
    batch = cf.CTBatch.from_arrays([vol], ids=["a"], nodules=nodules).create_mask()
    fig = show_item(batch[0])
    assert fig.texts[0].get_text().startswith("a: (16, 16, 16) voxels")
    assert "nodule mask: red" in fig.texts[0].get_text()
    axial = fig.axes[0]
    np.testing.assert_allclose(axial.patches[0].center, (6.0, 7.0))
    assert len(axial.images) == 2  # the scan and its nodule mask


def test_bad_inputs_are_named():
    vol = np.zeros((4, 8, 8), np.int16)
    with pytest.raises(cf.InvalidParameterError, match=r"masks has shape \(4, 8, 9\)"):
        show_scan(vol, masks=np.zeros((4, 8, 9), np.uint8))
    with pytest.raises(cf.InvalidParameterError, match="images must be a non-empty"):
        show_scan(np.zeros((8, 8)))
    with pytest.raises(cf.InvalidParameterError, match="rows of"):
        show_scan(vol, nodules=[(1.0, 2.0, 3.0)])
    with pytest.raises(cf.InvalidParameterError, match="center must be"):
        show_scan(vol, center=(1.0, 2.0))
    with pytest.raises(cf.InvalidParameterError, match="z must be in"):
        show_slice(vol, z=9)


def test_show_slice_places_nodules_in_world_mm():
    g = cf.Geometry((2.0, 0.5, 0.5), (-10.0, 100.0, -50.0))
    vol = np.zeros((10, 40, 40), np.int16)
    fig = show_slice(vol, geometry=g, z=3, nodules=[(-4.0, 108.0, -42.0, 6.0)])
    (circle,) = fig.axes[0].patches
    np.testing.assert_allclose(circle.center, (-42.0, 108.0))
    np.testing.assert_allclose(circle.radius, 3.0)


# ------------------------------------------------------------------ label maps, probabilities
def _labelled_phantom() -> tuple[cf.Scan, np.ndarray]:
    """A phantom CT and its label map {0 outside, 1 body, 2 lungs, 5 nodules}."""
    from ctflow.synthetic import make_phantom, phantom_labels

    scan, _ = make_phantom((40, 112, 112), (2.5, 1.5, 1.5), n_nodules=2, seed=4)
    labels = phantom_labels(scan)  # 1 body, 2 / 3 right / left lung, 4 nodules
    labels[labels == 3] = 2
    labels[labels == 4] = 5
    return scan, labels


def _rendered(fig) -> np.ndarray:
    """The figure as the PNG would hold it: (rows, columns, RGB) floats in [0, 1]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(np.float64) / 255.0


def _colour_residual(pixel: np.ndarray, colour: str, alpha: float) -> float:
    """How far ``pixel`` is from ``colour`` at ``alpha`` over some grey (the CT underneath)."""
    from matplotlib.colors import to_rgb

    rest = pixel - alpha * np.asarray(to_rgb(colour))  # = (1 - alpha) * grey * (1, 1, 1)
    return float(np.linalg.norm(rest - rest.mean()))


def test_label_maps_get_one_colour_per_label_and_a_legend(tmp_path):
    from matplotlib.colors import to_rgba

    from ctflow.viz_panels import LABEL_ALPHA, label_color

    scan, labels = _labelled_phantom()
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 5}
    fig = show_scan(
        scan.images, scan.geometry, masks=labels, label_names={1: "body", 2: "lung"}, dpi=150
    )
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["1: body", "2: lung", "5"]
    for handle, value in zip(legend.legend_handles, (1, 2, 5), strict=True):
        np.testing.assert_allclose(handle.get_facecolor()[:3], to_rgba(label_color(value))[:3])
    assert "label map: 3 label(s)" in fig.texts[0].get_text()
    out = tmp_path / "labels.png"
    fig.savefig(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the planes cross on the rarest label (a nodule), so every label shows in every slice
    axial = fig.axes[0]
    layer = axial.images[1]
    plane = np.ma.getdata(layer.get_array())
    assert set(np.unique(plane).tolist()) == {0, 1, 2, 5}
    # sample the rendered pixels at the centres of voxels deep inside each region
    rgb = _rendered(fig)
    height = rgb.shape[0]
    centre = [float(line.get_xydata()[0, k]) for line, k in zip(axial.lines, (1, 0), strict=True)]
    palette = {v: label_color(v) for v in (1, 2, 5)}
    checked = dict.fromkeys((0, 1, 2, 5), 0)
    rows, cols = plane.shape
    inner = np.ones(plane.shape, bool)  # voxels whose 3x3 neighbours share their label
    inner[[0, -1], :] = inner[:, [0, -1]] = False
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            inner[1:-1, 1:-1] &= (
                plane[1 + dr : rows - 1 + dr, 1 + dc : cols - 1 + dc] == plane[1:-1, 1:-1]
            )
    for r, c in np.argwhere(inner):
        value = int(plane[r, c])
        h, v = _pixel_world(layer, r, c)
        if abs(v - centre[0]) < 3 or abs(h - centre[1]) < 3:
            continue  # the cyan lines where the other planes cut
        x_px, y_px = axial.transData.transform((h, v))
        pixel = rgb[round(height - y_px), round(x_px)]
        if value == 0:  # no label: the CT's grey, untinted
            assert np.ptp(pixel) < 0.02, pixel
        else:
            residual = {k: _colour_residual(pixel, col, LABEL_ALPHA) for k, col in palette.items()}
            assert min(residual, key=residual.get) == value, (r, c, value, pixel, residual)
            assert residual[value] < 0.03
        checked[value] += 1
        if checked[value] >= 200 and min(checked.values()) >= 200:
            break
    assert min(checked.values()) >= 4, checked
    # a label keeps its colour whatever else is present
    only5 = np.where(labels == 5, 5, 0).astype(np.uint8)
    lone = show_scan(scan.images, scan.geometry, masks=only5).axes[0].images[1]
    np.testing.assert_allclose(lone.cmap(lone.norm(5))[:3], to_rgba(label_color(5))[:3])
    np.testing.assert_allclose(layer.cmap(layer.norm(5))[:3], to_rgba(label_color(5))[:3])


def test_binary_masks_look_as_before_and_probabilities_get_a_heat_map_and_contour():
    scan, labels = _labelled_phantom()
    binary = (labels == 5).astype(np.uint8)
    fig = show_scan(scan.images, scan.geometry, masks=binary)
    assert fig.legends == [] and "nodule mask: red" in fig.texts[0].get_text()
    layer = fig.axes[0].images[1]
    assert layer.cmap.colors == ["red"] and layer.get_alpha() == 0.45
    # float probabilities: opacity grows with p, one contour at 0.5
    z, y, x = np.indices(labels.shape)
    dist = np.sqrt(((z - 20) * 2.5) ** 2 + ((y - 55) * 1.5) ** 2 + ((x - 40) * 1.5) ** 2)
    prob = np.clip(1.0 - dist / 40.0, 0.0, 1.0).astype(np.float32)
    fig = show_scan(
        scan.images,
        scan.geometry,
        masks=prob,
        center=(float(scan.geometry.voxel_to_world([20, 55, 40])[0]), 0, 0),
    )
    axial = fig.axes[0]
    heat = axial.images[1]
    shown = heat.get_array()
    np.testing.assert_allclose(
        np.ma.getdata(shown)[~np.ma.getmaskarray(shown)].max(), prob.max(), rtol=1e-6
    )
    lo, hi = heat.cmap(0.0)[3], heat.cmap(1.0)[3]
    assert lo == 0.0 and 0.5 < hi <= 0.6
    (contour,) = [c for c in axial.collections if hasattr(c, "levels")]
    assert list(contour.levels) == [0.5]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "probability (opacity)",
        "probability 0.5",
    ]
    with pytest.raises(cf.InvalidParameterError, match=r"probabilities in \[0, 1\]"):
        show_scan(scan.images, masks=prob * 3 - 1)
    with pytest.raises(cf.InvalidParameterError, match="label_names"):
        show_scan(scan.images, masks=labels, label_names={"lung": 2})


def test_show_slice_draws_label_maps_with_a_legend():
    scan, labels = _labelled_phantom()
    fig = show_slice(scan.images, masks=labels, geometry=scan.geometry, label_names={5: "nodule"})
    ax = fig.axes[0]
    z = int(ax.get_title().rsplit("=", 1)[1])
    assert np.any(labels[z] == 5)  # the slice through the rarest label
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["1", "2", "5: nodule"]
    np.testing.assert_array_equal(np.ma.getdata(ax.images[1].get_array()), labels[z])


def test_normalised_images_are_drawn_over_0_1_and_hu_over_the_window(rng):
    hu = rng.integers(-1000, 400, size=(6, 16, 16)).astype(np.int16)
    normalised = ((hu.astype(np.float32) + 1000) / 1400).clip(0, 1)
    for images, expected in ((hu, (-1000.0, 400.0)), (normalised, (0.0, 1.0))):
        fig = show_scan(images)
        assert fig.axes[0].images[0].get_clim() == expected
        assert show_slice(images).axes[0].images[0].get_clim() == expected
    # an explicit window is kept
    assert show_scan(normalised, window=(0.2, 0.8)).axes[0].images[0].get_clim() == (0.2, 0.8)
