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
from napari_segunc.io import read_volume, write_volume
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
    assert "Resample maps onto the image" in errors[0] and "segunc resample" in errors[0]  # the two fixes
    assert [layer.name for layer in _labels(viewer)] == ["rater_1"]  # the good one still comes in
    assert widget.file_button.isEnabled()

    # the offer taken: the map is resampled onto the image's grid (nearest neighbour) and added, with a warning
    from napari_segunc.io.resample import resample_like

    widget.resample_check.setChecked(True)
    widget.add_raters([bad])
    wait_idle(widget)
    assert len(errors) == 1  # nothing refused this time
    layer = viewer.layers["wrong_grid"]
    expected = resample_like(read_volume(bad, kind="labels"), phantom_study.image).data
    assert np.array_equal(np.asarray(layer.data), expected) and layer.data.shape == phantom_study.image.shape
    assert any("resampled onto the image's grid" in w for w in layer.metadata.get("segunc_read_warnings", []))
    assert "⚠ wrong_grid.nii.gz was resampled" in widget.status.text()


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

    # Rater 1 is drawn as outlines in its own colour (cyan, opaque): inside its organs the CT shows unchanged, and
    # around every organ there is a ring of that colour.
    rater = phantom_study.raters[0].data[k]
    layer = raters[0]
    assert layer.contour == 1 and layer.opacity == 1.0
    colour = np.asarray(layer.get_color(1))[:3] * 255
    assert np.allclose(colour, [0, 229, 255], atol=1)  # organs.RATER_COLORS[0]
    drawn_rgb = drawn[..., :3].astype(float)
    shown = 0
    for value in np.unique(rater[rater > 0]):
        organ = rater == value
        rows, cols = pixels(organ)  # inside (eroded by 2 voxels): the CT itself
        if rows.size < 20:
            continue
        assert np.median(np.abs(drawn_rgb[rows, cols] - gray[rows, cols])) < 3, value
        j, i = np.nonzero(organ & ~ndimage.binary_erosion(organ))  # its border voxels
        ring_rows, ring_cols = _world_to_pixel(
            viewer, bare, image.origin[1] + j * image.spacing[1], image.origin[2] + i * image.spacing[2]
        )
        near = np.abs(drawn_rgb[ring_rows, ring_cols] - colour).max(axis=-1) < 40
        assert near.mean() > 0.5, (value, near.mean())
        shown += 1
    assert shown >= 3, "fewer than three organs of rater 1 visible on the middle slice"
    cyan = (np.abs(drawn_rgb - colour).max(axis=-1) < 40).sum()
    assert cyan > 200 and not (np.abs(gray - colour).max(axis=-1) < 40).any()


# ------------------------------------------------------------------------------------------------ probability maps
def _smoothed_one_hot(truth: np.ndarray, n_classes: int, sigma: float) -> np.ndarray:
    """(C, Z, Y, X) float32 probabilities: each class's indicator smoothed, then normalised per voxel."""
    probs = np.stack([ndimage.gaussian_filter((truth == c).astype(np.float32), sigma) for c in range(n_classes)])
    probs = np.clip(probs, 0, None)
    return (probs / probs.sum(axis=0, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def members(phantom_study, phantom_files, tmp_path_factory):
    """Three ensemble members of the phantom as 4D NIfTI (smoothed truth, more smoothing each): (paths, arrays)."""
    from napari_segunc.io import read_volume, write_probabilities

    folder = tmp_path_factory.mktemp("members")
    reference = read_volume(phantom_files["image"])
    n_classes = 1 + max(phantom_study.labels.values())
    arrays = [_smoothed_one_hot(phantom_study.truth.data, n_classes, s) for s in (0.8, 1.5, 2.5)]
    paths = [write_probabilities(a, reference, folder / f"member_{i + 1}.nii.gz") for i, a in enumerate(arrays)]
    return paths, arrays


def _by_map(viewer, name: str):
    (layer,) = [lay for lay in viewer.layers if lay.metadata.get("segunc_map") == name]
    return layer


def test_add_probability_maps_as_an_ensemble(open_study, wait_idle, errors, tmp_path, phantom_files, members):
    from napari_segunc.io import write_probabilities
    from napari_segunc.uncertainty import EnsembleAccumulator

    paths, arrays = members
    viewer, widget = open_study()
    widget.open_image(phantom_files["image"])
    wait_idle(widget)
    widget.add_probabilities(paths)
    assert widget.busy and not widget.probabilities_button.isEnabled()
    wait_idle(widget)
    assert errors == []

    acc = EnsembleAccumulator()
    for i, a in enumerate(arrays):
        acc.add(a, name=str(i))
    expected = acc.result()
    for name in ("entropy", "expected_entropy", "mutual_information"):
        layer = _by_map(viewer, name)
        assert layer.name.startswith("probabilities: ")
        np.testing.assert_allclose(layer.data, getattr(expected, name), atol=1e-6, err_msg=name)
        np.testing.assert_allclose(layer.scale, widget.image_volume.spacing)
    assert _by_map(viewer, "mutual_information").data.max() > 0  # members disagree at the organs' borders
    (seg,) = [lay for lay in _labels(viewer) if lay.name == "probabilities: segmentation"]
    mean = np.mean(np.stack(arrays).astype(np.float64), axis=0)
    np.testing.assert_array_equal(seg.data, np.argmax(mean, axis=0))
    np.testing.assert_allclose(seg.metadata["segunc_probabilities"], mean, atol=1e-6)  # for the Metrics widget
    n_layers = len(viewer.layers)
    assert n_layers == 1 + 4

    # A member on another grid is refused by name; nothing is added.
    other = Volume(np.zeros((8, 16, 20), np.int16), spacing=(3.0, 2.5, 2.5), name="other")
    odd = write_probabilities(np.full((2, 8, 16, 20), 0.5, np.float32), other, tmp_path / "other_grid.nii.gz")
    widget.add_probabilities([paths[0], odd])
    wait_idle(widget)
    assert len(errors) == 1 and "other_grid.nii.gz" in errors[0] and "No probability map was added" in errors[0]
    assert "Resample maps onto the image" in errors[0]  # the offer
    assert len(viewer.layers) == n_layers
    # A broken member (NaN) gets the core's message.
    broken = arrays[0].copy()
    broken[:, 3, 40, 50] = np.nan
    nan_path = write_probabilities(broken, widget.image_volume, tmp_path / "broken.nii.gz")
    widget.add_probabilities([nan_path])
    wait_idle(widget)
    assert len(errors) == 2 and "broken.nii.gz" in errors[1] and "NaN" in errors[1]
    assert len(viewer.layers) == n_layers and widget.probabilities_button.isEnabled()

    # The offer taken: a member predicted at half the in-plane resolution is resampled onto the image's grid
    # (linear, renormalised) and added, with a note; the same as resampling it directly.
    from napari_segunc.io import read_probabilities
    from napari_segunc.io.resample import resample_probabilities_like

    image = widget.image_volume
    coarse = Volume(
        np.zeros(arrays[0][0, :, ::2, ::2].shape, np.int16),
        spacing=(image.spacing[0], image.spacing[1] * 2, image.spacing[2] * 2),
        origin=image.origin,
        direction=image.direction,
        name="coarse",
    )
    half = write_probabilities(np.ascontiguousarray(arrays[0][:, :, ::2, ::2]), coarse, tmp_path / "half.nii.gz")
    for layer in list(viewer.layers)[1:]:
        viewer.layers.remove(layer)
    widget.resample_check.setChecked(True)
    widget.add_probabilities([half])
    wait_idle(widget)
    assert len(errors) == 2, errors[2:]
    (seg,) = [lay for lay in _labels(viewer) if lay.name == "probabilities: segmentation"]
    own = read_probabilities(half)
    expected = resample_probabilities_like(own.data, own.grid, image).data
    np.testing.assert_allclose(seg.metadata["segunc_probabilities"], expected, atol=1e-6)
    np.testing.assert_allclose(expected.sum(axis=0), 1.0, atol=1e-5)
    liver, truth = seg.data == 1, np.argmax(arrays[0], axis=0) == 1
    assert 2 * (liver & truth).sum() / (liver.sum() + truth.sum()) > 0.95
    assert "half.nii.gz was resampled onto the image's grid" in widget.status.text()
    assert any("resampled" in w for w in seg.metadata["segunc_read_warnings"])


def test_add_nnunet_npz_member_with_the_image_as_reference(
    open_study, wait_idle, errors, tmp_path, monkeypatch, phantom_study, members
):
    import pickle

    import SimpleITK as sitk

    from napari_segunc.uncertainty import EnsembleAccumulator
    from napari_segunc.volume import array_to_source

    # The phantom CT stored RAS-like (x and y reversed in the file), as many NIfTI files are: nnU-Net's array order
    # then differs from the canonical one.
    direction = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    ct = sitk.GetImageFromArray(np.ascontiguousarray(phantom_study.image.data[:, ::-1, ::-1]))
    ct.SetSpacing(phantom_study.image.spacing[::-1])
    ct.SetDirection(direction)
    sitk.WriteImage(ct, str(tmp_path / "case.nii.gz"))
    viewer, widget = open_study()
    widget.open_image(tmp_path / "case.nii.gz")
    wait_idle(widget)
    np.testing.assert_array_equal(widget.image_volume.data, phantom_study.image.data)
    src = widget.image_volume.source
    probs = members[1][0]
    # nnU-Net's layout: (C, z, y, x) in SimpleITK's array order of the image file, geometry in the .pkl beside it.
    np.savez_compressed(tmp_path / "case.npz", probabilities=array_to_source(probs, src.direction))
    with open(tmp_path / "case.pkl", "wb") as fh:
        pickle.dump({"sitk_stuff": {"spacing": src.spacing, "origin": src.origin, "direction": src.direction}}, fh)

    unpickled = []
    real_load = pickle.load

    def load(fh, *args, **kwargs):  # numba's cache also unpickles: count only the nnU-Net properties file
        unpickled.extend([1] if str(getattr(fh, "name", "")).endswith("case.pkl") else [])
        return real_load(fh, *args, **kwargs)

    monkeypatch.setattr(pickle, "load", load)
    assert not widget.trust_pickle_check.isChecked()
    widget.add_probabilities([tmp_path / "case.npz"])
    wait_idle(widget)
    assert errors == [] and unpickled == []  # the image gave the geometry: the .pkl was not touched
    acc = EnsembleAccumulator()
    acc.add(probs, name="case")
    np.testing.assert_allclose(_by_map(viewer, "entropy").data, acc.result().entropy, atol=1e-6)
    assert not _by_map(viewer, "mutual_information").data.any()  # one member: MI = 0
    (seg,) = [lay for lay in _labels(viewer) if lay.name == "probabilities: segmentation"]
    np.testing.assert_array_equal(seg.data, np.argmax(probs, axis=0))

    # Trusting the .pkl: its geometry is read and checked against the image.
    widget.add_probabilities([tmp_path / "case.npz"], trust_pickle=True)
    wait_idle(widget)
    assert errors == [] and unpickled == [1] and len(viewer.layers) == 1 + 2 * 4


# ------------------------------------------------------------------------------------------------ rater folder
def test_add_rater_folder(open_study, wait_idle, errors, tmp_path, phantom_study, phantom_files):
    import shutil

    folder = tmp_path / "raters"
    folder.mkdir()
    for i in range(len(phantom_study.raters)):
        shutil.copy(phantom_files[f"rater_{i + 1}"], folder)
    rater = phantom_study.raters[0]
    coarse = Volume(rater.data[::2], spacing=(rater.spacing[0] * 2, *rater.spacing[1:]), kind=VolumeKind.LABELS)
    write_volume(coarse, folder / "other_grid.nii.gz")
    (folder / "labels.json").write_text("{}")  # not a label map: ignored
    viewer, widget = open_study()
    widget.open_image(phantom_files["image"])
    wait_idle(widget)

    widget.add_rater_folder(folder)
    wait_idle(widget)
    labels = _labels(viewer)
    assert [layer.name for layer in labels] == [f"rater_{i + 1}" for i in range(len(phantom_study.raters))]
    for layer, truth in zip(labels, phantom_study.raters, strict=True):
        np.testing.assert_array_equal(layer.data, truth.data)
        assert layer.metadata["segunc_geometry"]["source"]["path"]
    assert len(errors) == 1 and "other_grid.nii.gz" in errors[0] and "was not added" in errors[0]

    (tmp_path / "empty").mkdir()
    widget.add_rater_folder(tmp_path / "empty")
    wait_idle(widget)
    assert len(errors) == 2 and "holds no label maps" in errors[1] and len(_labels(viewer)) == 3


# ------------------------------------------------------------------------------------------------ restore on reopen
def test_reopening_an_image_offers_its_autosaved_session(open_study, wait_idle, phantom_study, phantom_files):
    from napari_segunc._qt._session import find_review
    from napari_segunc.io import read_volume
    from napari_segunc.prompts import prompts_from_mask
    from napari_segunc.review import SessionStore, WorkingAnnotation

    asked = []

    def opened(answer: bool):
        viewer, widget = open_study()
        widget.ask_restore = lambda store: asked.append(store) or answer
        widget.open_image(phantom_files["image"])
        wait_idle(widget)
        return viewer, widget

    viewer, _widget = opened(True)  # no saved session: nothing is asked, no annotation layer
    assert asked == [] and len(viewer.layers) == 1

    image = read_volume(phantom_files["image"])
    store = SessionStore.for_image(image)
    truth = phantom_study.truth.data
    prompts = prompts_from_mask(truth, phantom_study.labels)
    store.save(WorkingAnnotation(image, truth), prompts)
    store.close()

    viewer, widget = opened(True)
    assert len(asked) == 1 and asked[0].folder == store.folder
    state = find_review(viewer, widget.image_layer)
    assert state is not None and state.layer in viewer.layers
    np.testing.assert_array_equal(state.layer.data, truth)
    assert state.prompts == prompts
    assert "Restored" in widget.status.text()

    viewer, widget = opened(False)
    assert len(asked) == 2
    state = find_review(viewer, widget.image_layer)
    assert not state.annotation.data.any() and state.prompts is None  # a fresh annotation, nothing restored
    assert not store.exists()  # the declined session was moved aside, not left to be overwritten
    kept = [p for p in store.folder.parent.iterdir() if p.name.startswith(store.folder.name + "-")]
    assert len(kept) == 1 and np.array_equal(SessionStore(kept[0]).load(image)[0], truth)


def test_nan_voxels_refused_naming_the_check_box_then_read_as_zero_when_ticked(
    open_study, wait_idle, qtbot, errors, tmp_path
):
    import nibabel as nib

    a = np.arange(1, 6 * 8 * 10 + 1, dtype=np.float32).reshape(10, 8, 6)  # nibabel: (x, y, z); no zero
    a[3, 4, 5] = np.nan
    a[1, 2, 3] = np.inf
    path = tmp_path / "nan_ct.nii.gz"
    nib.save(nib.Nifti1Image(a, np.eye(4)), path)
    viewer, widget = open_study()

    widget.open_image(path)
    wait_idle(widget)
    assert len(viewer.layers) == 0 and len(errors) == 1
    assert "nan_ct.nii.gz holds 2 NaN or infinite voxel(s)" in errors[0]
    assert "tick “Read NaN/Inf voxels as 0” in Open study" in errors[0] and "--replace" not in errors[0]
    assert widget.nonfinite_check.text() == "Read NaN/Inf voxels as 0"  # the box the message names

    qtbot.mouseClick(widget.nonfinite_check, Qt.LeftButton)
    assert widget.nonfinite_check.isChecked()
    widget.open_image(path)
    wait_idle(widget)
    (image,) = viewer.layers
    assert len(errors) == 1  # no new error
    assert np.isfinite(image.data).all() and int((image.data == 0).sum()) == 2
    # every other voxel keeps its value (the RAS file is shown in LPS, so compare the sorted values)
    np.testing.assert_array_equal(np.sort(image.data[image.data != 0]), np.sort(a[np.isfinite(a)]))
    status = widget.status.text()
    assert status.startswith("Opened nan_ct.nii.gz") and "⚠" in status
    assert "2 NaN or infinite voxel(s) read as 0" in status
    assert image.metadata["segunc_read_warnings"] == [f"{path}: 2 NaN or infinite voxel(s) read as 0, as asked."]


def test_dicom_gap_refused_naming_the_gap_then_read_when_ticked(open_study, wait_idle, qtbot, errors, tmp_path):
    from .conftest import _write_dicom_series

    folder = tmp_path / "gap"
    data = np.random.default_rng(1).integers(-1000, 200, size=(6, 12, 10))
    _write_dicom_series(folder, data, series_uid="1.2.826.0.1.3680043.2.1125.9.7", description="gap")
    (folder / "7_003.dcm").unlink()  # slice 4 of 6 (z = 6 mm) is lost
    viewer, widget = open_study()

    widget.open_image(folder)
    wait_idle(widget)
    assert len(viewer.layers) == 0 and len(errors) == 1
    assert "has a gap of 4.00 mm" in errors[0] and "tick “Accept DICOM slice gaps” in Open study" in errors[0]

    widget.gaps_check.setChecked(True)
    widget.open_image(folder)
    wait_idle(widget)
    (image,) = viewer.layers
    assert image.data.shape == (5, 12, 10) and len(errors) == 1
    assert "⚠" in widget.status.text() and "gap of 4.00 mm" in widget.status.text()
    assert "read anyway, as asked" in widget.status.text()


def test_organ_names_from_a_known_table(open_study, wait_idle, totalseg):
    """A TotalSegmentator segmentation opened as a rater: with "Organ names: TotalSegmentator v2" its organs are
    named in the layer's (and the image's) label table, so every dock shows liver, not label 5."""
    viewer, widget = open_study()
    widget.open_image(totalseg / "example_ct_sm.nii.gz")
    wait_idle(widget)
    widget.add_raters([totalseg / "example_seg.nii.gz"])
    wait_idle(widget)
    layer = _labels(viewer)[0]
    assert "segunc_labels" not in layer.metadata or not layer.metadata["segunc_labels"]
    widget.table_combo.setCurrentIndex(widget.table_combo.findData("totalsegmentator"))
    values = {int(v) for v in np.unique(np.asarray(layer.data))} - {0}
    names = layer.metadata["segunc_labels"]
    assert names["liver"] == 5 and names["kidney_left"] == 3 and set(names.values()) == values
    assert viewer.layers["example_ct_sm"].metadata["segunc_labels"] == names
    assert "Organ names from TotalSegmentator v2" in widget.status.text()
    # a map added later is named too
    widget.add_raters([totalseg / "example_seg_fast.nii.gz"])
    wait_idle(widget)
    assert _labels(viewer)[1].metadata["segunc_labels"].get("spleen") == 1
