"""The "Open study" widget in a real napari viewer: layers, geometry in mm, windows, errors, and what is drawn."""

from __future__ import annotations

import os

import numpy as np
import pytest
from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from scipy import ndimage

from napari_segunc._qt.open_study import OpenStudyWidget
from napari_segunc.display import WindowPreset, contrast_limits
from napari_segunc.io import write_volume
from napari_segunc.volume import Volume, VolumeKind

pytestmark = [
    pytest.mark.gui,
    pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6 backend"),
    pytest.mark.filterwarnings("ignore:Conversion from CIE-LAB"),
]


def _camera(viewer):
    """The 2D camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def _labels(viewer) -> list[Labels]:
    return [layer for layer in viewer.layers if isinstance(layer, Labels)]


def _images(viewer) -> list[Image]:
    return [layer for layer in viewer.layers if isinstance(layer, Image)]


def test_open_image_file_and_rater_maps(open_study, wait_idle, qtbot, phantom_study, phantom_files):
    viewer, widget = open_study()
    rater_paths = [phantom_files[f"rater_{i + 1}"] for i in range(len(phantom_study.raters))]

    widget.open_image(phantom_files["image"])
    assert widget.busy and not widget.file_button.isEnabled()  # reading happens in a worker, inputs wait
    wait_idle(widget)
    assert widget.file_button.isEnabled() and widget.raters_button.isEnabled()
    widget.add_raters(rater_paths)
    wait_idle(widget)

    (image,) = _images(viewer)
    labels = _labels(viewer)
    assert len(viewer.layers) == 1 + len(phantom_study.raters)
    assert [layer.name for layer in labels] == [f"rater_{i + 1}" for i in range(len(phantom_study.raters))]
    for layer in (image, *labels):
        np.testing.assert_allclose(layer.scale, phantom_study.image.spacing, rtol=1e-6)
        np.testing.assert_allclose(layer.translate, phantom_study.image.origin, atol=1e-3)
        assert layer.metadata["segunc_geometry"]["source"]["path"]
    np.testing.assert_array_equal(image.data, phantom_study.image.data)
    np.testing.assert_array_equal(labels[0].data, phantom_study.raters[0].data)
    assert tuple(image.contrast_limits) == (-160.0, 240.0)  # CT opens with the abdomen window
    assert widget.preset is WindowPreset.ABDOMEN
    # The contrast slider still spans the data, not only the window.
    assert image.contrast_limits_range[0] <= phantom_study.image.data.min()
    assert "rater_" in widget.status.text()


def test_load_phantom_button(open_study, wait_idle, qtbot, phantom_study):
    viewer, widget = open_study()
    qtbot.mouseClick(widget.phantom_button, Qt.LeftButton)
    wait_idle(widget)
    assert [type(layer) for layer in viewer.layers] == [Image] + [Labels] * len(phantom_study.raters)
    image = viewer.layers[0]
    np.testing.assert_allclose(image.scale, phantom_study.image.spacing)
    np.testing.assert_allclose(image.translate, phantom_study.image.origin)
    assert tuple(image.contrast_limits) == (-160.0, 240.0)
    assert [layer.name for layer in _labels(viewer)] == [r.name for r in phantom_study.raters]
    assert all(layer.data.dtype.kind in "iu" for layer in _labels(viewer))


def test_window_preset_changes_contrast_limits_only(open_study, wait_idle, phantom_study):
    viewer, widget = open_study()
    widget.load_phantom()
    wait_idle(widget)
    image = widget.image_layer
    data = image.data
    before = data.copy()

    widget.preset_combo.setCurrentIndex(widget.preset_combo.findData(WindowPreset.LUNG))
    assert tuple(image.contrast_limits) == (-1350.0, 150.0)
    widget.preset_combo.setCurrentIndex(widget.preset_combo.findData(WindowPreset.BONE))
    assert tuple(image.contrast_limits) == (-500.0, 1300.0)  # wider than the phantom's values: range grows
    widget.apply_preset("percentile")
    assert tuple(image.contrast_limits) == pytest.approx(contrast_limits(WindowPreset.PERCENTILE, before))
    widget.apply_preset(WindowPreset.LIVER)
    assert tuple(image.contrast_limits) == (-45.0, 105.0)

    assert image.data is data  # same array, same HU values
    np.testing.assert_array_equal(image.data, before)
    assert len(viewer.layers) == 1 + len(phantom_study.raters)


def test_mismatched_rater_map_is_refused_with_a_message(
    open_study, wait_idle, errors, tmp_path, phantom_study, phantom_files
):
    viewer, widget = open_study()
    widget.open_image(phantom_files["image"])
    wait_idle(widget)
    # Same labels on a grid with another spacing: a common mix-up (map exported from a resampled image).
    rater = phantom_study.raters[0]
    coarse = Volume(
        rater.data,
        spacing=tuple(s * 2 for s in rater.spacing),
        origin=rater.origin,
        kind=VolumeKind.LABELS,
        name="wrong_grid",
    )
    bad = write_volume(coarse, tmp_path / "wrong_grid.nii.gz")

    widget.add_raters([bad, phantom_files["rater_1"]])
    wait_idle(widget)

    assert len(errors) == 1
    assert "wrong_grid.nii.gz" in errors[0] and "spacing" in errors[0] and "was not added" in errors[0]
    assert [layer.name for layer in _labels(viewer)] == ["rater_1"]  # the good one still comes in
    assert widget.file_button.isEnabled()


def test_unreadable_file_shows_an_error_and_the_gui_carries_on(open_study, wait_idle, errors, tmp_path):
    viewer, widget = open_study()
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    widget.open_image(broken)
    wait_idle(widget)
    assert len(errors) == 1 and "broken.nii.gz" in errors[0]
    assert len(viewer.layers) == 0 and widget.open_button.isEnabled()
    widget.add_raters([broken])  # no image yet
    assert "Open the image first" in errors[-1]


def test_dicom_folder_with_two_series_asks_which(open_study, wait_idle, qtbot, two_series_folder):
    viewer, widget = open_study()
    folder, shapes = two_series_folder
    widget.open_image(folder)
    wait_idle(widget)
    assert len(viewer.layers) == 0
    assert widget.series_combo.count() == 2 and not widget.series_combo.isHidden()
    assert "2 DICOM series" in widget.status.text()

    uid = list(shapes)[1]
    widget.series_combo.setCurrentIndex(widget.series_combo.findData(uid))
    qtbot.mouseClick(widget.open_button, Qt.LeftButton)
    wait_idle(widget)
    (image,) = viewer.layers
    assert image.data.shape == shapes[uid]
    np.testing.assert_allclose(image.scale, (2.0, 0.7, 0.7), rtol=1e-5)
    assert widget.series_combo.isHidden()


def test_widget_and_sample_through_napari_plugin_menus(make_napari_viewer, qtbot, phantom_study):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-segunc", "Open study")
    assert isinstance(widget, OpenStudyWidget)
    viewer.open_sample("napari-segunc", "phantom")
    assert [type(layer) for layer in viewer.layers] == [Image] + [Labels] * len(phantom_study.raters)
    # Rater maps can be checked against an image that came in through the menus.
    assert widget.use_image_layer() and widget.image_volume.shape == phantom_study.image.shape


def test_reader_through_napari_open(make_napari_viewer, phantom_files, phantom_study):
    viewer = make_napari_viewer()
    layers = viewer.open([str(phantom_files["image"]), str(phantom_files["rater_2"])], plugin="napari-segunc")
    assert [type(layer) for layer in layers] == [Image, Labels]
    np.testing.assert_allclose(layers[1].scale, phantom_study.image.spacing, rtol=1e-6)


# ------------------------------------------------------------------------------------------------ what is drawn
def _world_to_pixel(viewer, shot: np.ndarray, y_mm: np.ndarray, x_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Screenshot pixel (row, col) of world points in the 2D (y, x) view, from the camera's centre and zoom."""
    cy, cx = _camera(viewer).center[-2:]
    from qtpy.QtWidgets import QApplication

    zoom = _camera(viewer).zoom * QApplication.primaryScreen().devicePixelRatio()  # screenshot pixels per mm
    rows = np.round((y_mm - cy) * zoom + shot.shape[0] / 2).astype(int)
    cols = np.round((x_mm - cx) * zoom + shot.shape[1] / 2).astype(int)
    return rows, cols


def test_screenshot_shows_the_abdomen_and_the_rater_labels(open_study, wait_idle, phantom_study, tmp_path):
    viewer, widget = open_study(show=True)
    widget.load_phantom()
    wait_idle(widget)
    image = phantom_study.image
    k = image.shape[0] // 2  # middle axial slice
    viewer.dims.ndisplay = 2
    viewer.dims.set_point(0, image.origin[0] + k * image.spacing[0])
    viewer.reset_view()
    raters = _labels(viewer)
    for layer in raters:
        layer.visible = False
    bare = viewer.screenshot(canvas_only=True, flash=False)
    raters[0].visible = True
    drawn = viewer.screenshot(canvas_only=True, flash=False)
    if os.environ.get("SEGUNC_KEEP_SCREENSHOTS"):
        import imageio.v3 as iio

        iio.imwrite(tmp_path / "bare.png", bare)
        iio.imwrite(tmp_path / "drawn.png", drawn)

    gray = bare[..., :3].astype(float)
    assert gray.std() > 10, "the canvas is blank"
    assert np.allclose(gray[..., 0], gray[..., 2])  # the CT is drawn in gray

    def pixels(mask2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        j, i = np.nonzero(ndimage.binary_erosion(mask2d, iterations=2))
        y_mm = image.origin[1] + j * image.spacing[1]
        x_mm = image.origin[2] + i * image.spacing[2]
        return _world_to_pixel(viewer, bare, y_mm, x_mm)

    # The liver (soft tissue, abdomen window) is brighter than the fat around the organs and the air outside.
    truth = phantom_study.truth.data[k]
    liver = phantom_study.labels["liver"]
    body = image.data[k] > -500
    liver_rows, liver_cols = pixels(truth == liver)
    fat_rows, fat_cols = pixels(body & ~ndimage.binary_dilation(truth > 0, iterations=3))
    assert liver_rows.size > 50 and fat_rows.size > 50
    liver_gray = gray[liver_rows, liver_cols, 0].mean()
    fat_gray = gray[fat_rows, fat_cols, 0].mean()
    assert liver_gray > fat_gray + 30, (liver_gray, fat_gray)
    assert gray[2, 2, 0] < 10  # a corner of the canvas: air or background

    # Rater 1's organs appear in their label colours, blended over the CT with the layer's opacity.
    rater = phantom_study.raters[0].data[k]
    layer = raters[0]
    shown = 0
    for value in np.unique(rater[rater > 0]):
        rows, cols = pixels(rater == value)
        if rows.size < 20:
            continue
        colour = np.asarray(layer.get_color(int(value)))[:3] * 255
        expected = layer.opacity * colour + (1 - layer.opacity) * gray[rows, cols]
        got = drawn[rows, cols, :3].astype(float)
        assert np.median(np.abs(got - expected)) < 12, (value, got.mean(0), expected.mean(0))
        shown += 1
    assert shown >= 3, "fewer than three organs of rater 1 visible on the middle slice"
    changed = np.any(drawn[..., :3] != bare[..., :3], axis=-1)
    assert changed.sum() > 0.5 * (rater > 0).sum() * (_camera(viewer).zoom * image.spacing[2]) ** 2
