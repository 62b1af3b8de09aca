"""The "Uncertainty & raters" widget in a real napari viewer, on the phantom: maps, raters, review queue, compare."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from napari.layers import Labels
from qtpy.QtCore import Qt
from scipy import ndimage

from napari_segunc._qt._docks import open_dock
from napari_segunc._qt._layers import role_of
from napari_segunc._qt._view import camera_of, cell_size, grid_of
from napari_segunc._qt.uncertainty import NEXT_KEY, NONE, MapUnit, QueueMode
from napari_segunc.io._npe2 import as_rater, volume_layer_data
from napari_segunc.phantom import LABELS
from napari_segunc.roles import LayerRole
from napari_segunc.uncertainty import EnsembleAccumulator, find_regions
from napari_segunc.uncertainty.layers import ensemble_layers
from napari_segunc.volume import Volume, VolumeKind

pytestmark = [
    pytest.mark.gui,
    pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6 backend"),
    pytest.mark.filterwarnings("ignore:Conversion from CIE-LAB"),
]

LN6 = math.log(6)  # the phantom: background + 5 organs
ENTROPY, MI = "ensemble predictive entropy", "ensemble mutual information (epistemic)"


@pytest.fixture(scope="module")
def ensemble(phantom_study):
    """Ensemble maps without a network: each rater's one-hot labels, smoothed over 3×3×3 voxels, is a member."""
    acc = EnsembleAccumulator()
    values = [0, *LABELS.values()]
    for i, rater in enumerate(phantom_study.raters):
        p = ndimage.uniform_filter(np.stack([(rater.data == v).astype(np.float32) for v in values]), size=(1, 3, 3, 3))
        acc.add(p / p.sum(0, keepdims=True), name=f"rater{i + 1}")
    maps = acc.result()
    layers = ensemble_layers(maps, phantom_study.image, labels=LABELS)
    for _data, kwargs, _type in layers:
        kwargs["name"] = f"ensemble {kwargs['name']}"
    return maps, layers


@pytest.fixture
def review(open_study, wait_idle, ensemble, monkeypatch):
    """Factory: the phantom (CT + 3 raters) through Open study, the ensemble's layers, the widget docked."""
    shown: list[str] = []
    monkeypatch.setattr("napari_segunc._qt._jobs.show_error", shown.append)

    def factory(*, with_maps: bool = True, show: bool = False):
        viewer, opener = open_study(show=show)
        opener.load_phantom()
        wait_idle(opener)
        for data, kwargs, layer_type in ensemble[1] if with_maps else []:
            getattr(viewer, f"add_{layer_type}")(data, **kwargs)
        _, widget = open_dock(viewer, "Uncertainty & raters")
        return viewer, widget, shown

    return factory


def _raters(viewer) -> np.ndarray:
    return np.stack([np.asarray(viewer.layers[f"rater_{i}"].data) for i in (1, 2, 3)])


def test_maps_opacity_threshold_and_units(review, wait_idle, ensemble):
    maps = ensemble[0]
    viewer, widget, _ = review()
    box = widget.maps
    entropy, mi = viewer.layers[ENTROPY], viewer.layers[MI]
    assert box.map_combo.currentText() == ENTROPY
    assert [box.map_list.item(i).text() for i in range(box.map_list.count())] == [
        ENTROPY,
        "ensemble expected entropy (aleatoric)",
        MI,
    ]
    assert box.n_classes(entropy) == (6, "the labels of 'ensemble segmentation'")
    assert box.classes_spin.value() == 6 and box.threshold_spin.maximum() == pytest.approx(LN6, abs=1e-4)

    box.show_maps([ENTROPY])
    assert entropy.visible and not mi.visible and not viewer.layers["ensemble expected entropy (aleatoric)"].visible
    box.set_opacity(0.4)
    assert entropy.opacity == pytest.approx(0.4) and mi.opacity == pytest.approx(0.8)  # hidden maps keep theirs
    box.threshold_slider.setValue(500)  # half way: ln 6 / 2 nats
    assert box.threshold == pytest.approx(LN6 / 2, abs=1e-4)
    box.set_threshold(0.5)
    assert entropy.contrast_limits == pytest.approx([0.5, LN6])
    assert box.threshold_slider.value() == round(1000 * 0.5 / LN6)

    box.unit_combo.setCurrentIndex(box.unit_combo.findData(MapUnit.NORMALISED))  # as a click does
    wait_idle(widget)
    assert entropy.metadata["segunc_unit"] == "normalised" and entropy.metadata["segunc_classes"] == 6
    np.testing.assert_allclose(entropy.data, maps.entropy / LN6, rtol=1e-6)
    np.testing.assert_allclose(mi.data, maps.mutual_information / LN6, rtol=1e-6)
    assert entropy.contrast_limits == pytest.approx([0.5 / LN6, 1.0], abs=1e-6)
    assert box.threshold == pytest.approx(0.5 / LN6, abs=1e-4) and box.threshold_spin.maximum() == 1.0
    assert float(entropy.data.max()) == pytest.approx(float(maps.entropy.max()) / LN6, rel=1e-6)
    assert 0.5 < float(entropy.data.max()) < 1

    box.set_unit(MapUnit.NATS)
    wait_idle(widget)
    np.testing.assert_allclose(entropy.data, maps.entropy, atol=1e-6)
    assert entropy.contrast_limits == pytest.approx([0.5, LN6])
    assert box.unit_combo.currentData() is MapUnit.NATS


def test_rater_analysis_layers_and_refusals(review, wait_idle, phantom_study):
    viewer, widget, shown = review()
    assert widget.rater_list.checked() == ["rater_1", "rater_2", "rater_3"]
    assert widget.segmentation_layer.name == "ensemble segmentation"
    n_before = len(viewer.layers)
    widget.analyse_raters()
    wait_idle(widget, timeout=60_000)
    names = [layer.name for layer in viewer.layers][n_before:]
    assert names == [
        "raters: rater vote entropy",
        "raters: consensus",
        "raters: dissensus",
        "raters: majority vote",
        "raters: STAPLE",
        "model vs raters",
    ]

    r = _raters(viewer)
    unanimous = (r[0] == r[1]) & (r[1] == r[2])
    majority = np.where(r[0] == r[1], r[0], np.where(r[0] == r[2], r[0], np.where(r[1] == r[2], r[1], r.min(0))))
    np.testing.assert_array_equal(viewer.layers["raters: majority vote"].data, majority)
    np.testing.assert_array_equal(viewer.layers["raters: consensus"].data, np.where(unanimous, r[0], 0))
    disputed = int(np.count_nonzero(viewer.layers["raters: dissensus"].data))
    assert disputed == int((~unanimous).sum()) > 1000
    assert f"they disagree on {disputed} voxels" in widget.status.text()
    two_one = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    vote_entropy = viewer.layers["raters: rater vote entropy"].data
    np.testing.assert_allclose(np.unique(vote_entropy), [0, two_one, math.log(3)], rtol=1e-6)
    assert viewer.layers["raters: rater vote entropy"].metadata["segunc_classes"] == 6
    seg = viewer.layers["ensemble segmentation"].data
    np.testing.assert_array_equal(
        viewer.layers["model vs raters"].data, np.where(unanimous, seg != majority, 2 + (seg == majority))
    )
    staple = viewer.layers["raters: STAPLE"].data
    assert np.mean(staple == majority) > 0.98
    for name in names:
        np.testing.assert_allclose(viewer.layers[name].scale, phantom_study.image.spacing)
        np.testing.assert_allclose(viewer.layers[name].translate, phantom_study.image.origin)

    # Running again replaces this widget's layers instead of piling up "[1]" copies.
    widget.seg_combo.setCurrentIndex(widget.seg_combo.findText(NONE))
    widget.staple_check.setChecked(False)
    widget.analyse_raters()
    wait_idle(widget, timeout=60_000)
    assert [layer.name for layer in viewer.layers][n_before:] == names[:4]

    # One rater: the core's message, shown and in the status line; nothing is added.
    n = len(viewer.layers)
    widget.analyse_raters(["rater_1"])
    wait_idle(widget)
    assert "at least 2 raters are needed" in shown[-1] and "rater_1" in shown[-1]
    assert widget.status.text() == shown[-1] and len(viewer.layers) == n and widget.raters_button.isEnabled()

    # A rater map on another grid (spacing doubled) is refused by name; nothing is added, nothing resampled.
    other = Volume(
        phantom_study.raters[0].data,
        spacing=tuple(2 * s for s in phantom_study.image.spacing),
        origin=phantom_study.image.origin,
        kind=VolumeKind.LABELS,
        name="expert_coarse",
    )
    data, kwargs, _ = as_rater(volume_layer_data(other), 3)  # a rater whatever its name (as Open study loads it)
    viewer.add_labels(data, **kwargs)
    assert "expert_coarse" in widget.rater_list.checked()
    n = len(viewer.layers)
    widget.analyse_raters()
    assert not widget.busy and len(viewer.layers) == n
    assert "'expert_coarse' is not on the image's grid" in shown[-1] and "spacing" in shown[-1]
    assert widget.status.text() == shown[-1]
    # ... and so is an uncertainty map on another grid, for the queue and for the compare view.
    coarse_map = other.with_data(ensemble_map := viewer.layers[ENTROPY].data, kind=VolumeKind.FLOAT_MAP)
    viewer.add_image(ensemble_map, **{**coarse_map.napari_kwargs(), "name": "coarse entropy"})
    widget.maps.map_combo.setCurrentIndex(widget.maps.map_combo.findText("coarse entropy"))
    widget.find_regions()
    assert "'coarse entropy' is not on the image's grid" in shown[-1] and widget.regions == []
    widget.set_compare(True, ["rater_1", "expert_coarse"])
    assert "'expert_coarse' is not on the image's grid" in shown[-1]
    assert not grid_of(viewer).enabled and not widget.compare_button.isChecked()


def test_review_queue_jump_and_keys(review, wait_idle, qtbot, phantom_study):
    viewer, widget, _ = review()
    entropy, seg = viewer.layers[ENTROPY], viewer.layers["ensemble segmentation"]
    assert widget.mode_combo.currentData() is QueueMode.QUANTILE  # the default: the top 1 %
    widget.mode_combo.setCurrentIndex(widget.mode_combo.findData(QueueMode.THRESHOLD))
    widget.maps.set_threshold(0.8)
    widget.find_regions()
    wait_idle(widget)
    image = phantom_study.image
    expected = find_regions(
        entropy.data,
        spacing=image.spacing,
        origin=image.origin,
        threshold=0.8,
        segmentation=seg.data,
        labels=LABELS,
        min_voxels=widget.min_voxels_spin.value(),
    )
    assert widget.regions == expected and len(expected) == 3
    table = [[widget.table.item(row, col).text() for col in range(6)] for row in range(widget.table.rowCount())]
    assert table == [
        [str(r.rank), r.structure, str(r.n_voxels), f"{r.volume_ml:.2f}", str(r.peak_slice), f"{r.total:.4g}"]
        for r in expected
    ]
    assert table[0][1] == "kidney_left" and "3 region(s)" in widget.status.text()
    mask = viewer.layers["review mask"]
    assert isinstance(mask, Labels) and mask.contour == 2  # white outlines, unlike any rater or organ colour
    assert np.allclose(mask.get_color(1)[:3], 1.0)
    assert int(np.count_nonzero(mask.data)) == int((entropy.data > 0.8).sum())

    widget.jump_to(0)
    first = expected[0]
    assert viewer.dims.current_step[0] == first.peak_slice
    assert viewer.dims.point[0] == pytest.approx(image.origin[0] + first.peak_slice * image.spacing[0])
    camera = camera_of(viewer)
    assert camera.center[-2:] == pytest.approx(first.centroid_mm[1:])
    z0, y0, x0, z1, y1, x1 = first.bbox
    h, w = cell_size(viewer)
    box_mm = (max((y1 - y0 + 1) * image.spacing[1], 20), max((x1 - x0 + 1) * image.spacing[2], 20))
    assert camera.zoom == pytest.approx(0.5 * min(h / box_mm[0], w / box_mm[1]))
    assert widget.current_row == 0 and "Region 1 of 3: kidney_left" in widget.status.text()

    canvas = viewer.window._qt_viewer.canvas.native  # the keys as a person presses them on the canvas
    canvas.setFocus()
    qtbot.keyClick(canvas, Qt.Key_N)
    assert widget.current_row == 1 and viewer.dims.current_step[0] == expected[1].peak_slice
    assert camera.center[-2:] == pytest.approx(expected[1].centroid_mm[1:])
    qtbot.keyClick(canvas, Qt.Key_N)
    qtbot.keyClick(canvas, Qt.Key_N)  # stays on the last region
    assert widget.current_row == 2
    qtbot.keyClick(canvas, Qt.Key_N, Qt.ShiftModifier)
    assert widget.current_row == 1
    qtbot.mouseClick(widget.previous_button, Qt.LeftButton)
    assert widget.current_row == 0 and viewer.dims.current_step[0] == first.peak_slice
    widget.table.setCurrentCell(2, 3)  # a click on a row
    assert viewer.dims.current_step[0] == expected[2].peak_slice

    widget.mode_combo.setCurrentIndex(widget.mode_combo.findData(QueueMode.QUANTILE))
    widget.find_regions()
    wait_idle(widget)
    top = find_regions(
        entropy.data,
        spacing=image.spacing,
        origin=image.origin,
        quantile=0.99,
        segmentation=seg.data,
        labels=LABELS,
        min_voxels=10,
    )
    assert widget.regions == top and widget.table.rowCount() == len(top) == 5
    assert len([layer for layer in viewer.layers if layer.name.startswith("review mask")]) == 1

    assert {"N", "Shift+N"} <= {str(key) for key in viewer.keymap} and NEXT_KEY == "N"
    viewer.window.remove_dock_widget(widget)  # what napari's close button does: the keys are given back
    assert not {"N", "Shift+N"} & {str(key) for key in viewer.keymap}
    n = len(viewer.layers)
    viewer.add_labels(np.zeros((2, 3, 4), np.uint8))  # and the widget no longer follows the layers
    assert len(viewer.layers) == n + 1 and widget.seg_combo.findText("Labels") == -1


def test_compare_view_on_the_phantom(review, wait_idle, qtbot, phantom_study, tmp_path):
    viewer, widget, _ = review(with_maps=False, show=True)  # no model: the CT and the 3 raters
    before = [(layer.name, layer.visible) for layer in viewer.layers]
    k = phantom_study.image.shape[0] // 2
    viewer.dims.set_point(0, phantom_study.image.origin[0] + k * phantom_study.image.spacing[0])
    assert widget.compare_list.checked() == ["rater_1", "rater_2", "rater_3"]
    qtbot.mouseClick(widget.compare_button, Qt.LeftButton)
    grid = grid_of(viewer)
    assert grid.enabled and grid.stride == 2 and widget.compare_button.isChecked()
    cells = [(pos, idx) for pos, idx in grid.iter_viewboxes(viewer.layers) if idx]
    assert len(cells) == 3 and "3 layers side by side" in widget.status.text()
    names = [layer.name for layer in viewer.layers]
    for _pos, idx in cells:  # each cell: an image (the CT or a copy sharing its voxels) under one rater
        under, over = (viewer.layers[i] for i in idx)
        assert under.data is viewer.layers["phantom_ct"].data and over.name.startswith("rater_")
    assert sum(role_of(layer) is LayerRole.COMPARE_COPY for layer in viewer.layers) == 2
    assert names[:6] == [
        "phantom_ct",
        "rater_1",
        "phantom_ct (compare 2)",
        "rater_2",
        "phantom_ct (compare 3)",
        "rater_3",
    ]

    qtbot.wait(50)
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    if os.environ.get("SEGUNC_KEEP_SCREENSHOTS"):
        import imageio.v3 as iio

        iio.imwrite(tmp_path / "compare.png", shot.astype(np.uint8))
    rows, cols = grid.actual_shape(viewer.layers)
    h, w = shot.shape[0] / rows, shot.shape[1] / cols
    colours = {x.name: np.asarray(x.get_color(1))[:3] * 255 for x in viewer.layers if x.name.startswith("rater_")}
    assert len({tuple(c) for c in colours.values()}) == 3  # one outline colour per rater
    rater_1 = phantom_study.raters[0].data[k]
    border = sum(  # border voxels of rater 1's organs on this slice
        np.count_nonzero((rater_1 == v) & ~ndimage.binary_erosion(rater_1 == v)) for v in np.unique(rater_1) if v
    )
    zoom = camera_of(viewer).zoom * phantom_study.image.spacing[2]  # screen pixels per voxel
    for (row, col), idx in cells:
        cell = shot[int(row * h) : int((row + 1) * h), int(col * w) : int((col + 1) * w)]
        gray = cell.max(-1) - cell.min(-1) < 8
        assert gray.mean() > 0.2, "no CT in this cell"
        rater = viewer.layers[idx[1]]
        for name, colour in colours.items():  # this cell's rater outlines its organs; the other raters are absent
            near = np.all(np.abs(cell - colour) < 40, axis=-1).sum()
            if name == rater.name:
                assert near > 0.3 * border * zoom, f"no {name} outlines in cell {row, col}: {near} px"
            else:
                assert near < 0.02 * border * zoom, f"{name} drawn in the cell of {rater.name}"

    widget.set_compare(False)
    assert not grid.enabled and not widget.compare_button.isChecked()
    assert [(layer.name, layer.visible) for layer in viewer.layers] == before
