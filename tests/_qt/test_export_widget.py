"""The "Export" widget in a real napari viewer: a reviewed phantom case exported and every file read back (labels in
the source geometry, the entropy map, boxes.json, the metrics CSV, the PNG report), a second export under ``_v2``
names leaving the first untouched, the source geometry of an image opened from an RAS-oriented NRRD file, and
clear messages (no folder, unusable folder, nothing to export) with the GUI carrying on."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
from PIL import Image

from napari_segunc._qt._docks import open_dock
from napari_segunc._qt._session import review_for
from napari_segunc.io import read_volume
from napari_segunc.io._npe2 import volume_layer_data
from napari_segunc.metrics.prediction import evaluate_prediction
from napari_segunc.metrics.stats import organ_statistics
from napari_segunc.prompts import load_prompts, prompts_from_mask
from napari_segunc.report import PAGE_PIXELS
from napari_segunc.uncertainty.layers import map_layer

pytestmark = [
    pytest.mark.gui,
    pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6 backend"),
]
ACCEPTED = {"liver": 1, "kidney_right": 2, "spleen": 4}


@pytest.fixture
def shown(monkeypatch) -> list[str]:
    """Messages the widget showed with napari's ``show_error``."""
    errors: list[str] = []
    monkeypatch.setattr("napari_segunc._qt._jobs.show_error", errors.append)
    return errors


def _review(viewer, image_layer, truth: np.ndarray):
    """A review session with three organs accepted and box prompts, as the MedSAM2 widget leaves it."""
    state = review_for(viewer, image_layer, autosave=False)
    for name, value in ACCEPTED.items():
        state.annotation.set_organ(truth == value, value, description=f"accept {name}")
    state.prompts = prompts_from_mask(state.annotation.data, ACCEPTED, source="test")
    return state


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_a_reviewed_case_and_read_every_file_back(make_napari_viewer, phantom_study, wait_idle, tmp_path):
    viewer = make_napari_viewer()
    image = phantom_study.image
    data, kwargs, _ = volume_layer_data(image)
    image_layer = viewer.add_image(data, **kwargs)
    state = _review(viewer, image_layer, phantom_study.truth.data)
    entropy = np.random.default_rng(0).uniform(0, np.log(6), image.shape).astype(np.float32)
    data, kwargs, _ = map_layer("entropy", entropy, image, n_classes=6)
    map_name = viewer.add_image(data, **kwargs).name
    _, metrics = open_dock(viewer, "Metrics")
    metrics.result = evaluate_prediction(
        state.annotation.data,
        [r.data for r in phantom_study.raters],
        spacing=image.spacing,
        labels=ACCEPTED,
        case="phantom_ct",
    )
    metrics.stats = organ_statistics(  # what its Evaluate leaves in the Statistics tab
        state.annotation.data, image.spacing, ACCEPTED, raters=[r.data for r in phantom_study.raters]
    )
    _, widget = open_dock(viewer, "Export")
    assert widget.image_combo.currentText() == "phantom_ct"
    assert widget.labels_combo.currentData() == state.layer.name  # the working annotation by default
    assert widget.case_edit.text() == "phantom_ct"
    assert "1 on this image" in widget.maps_check.text()

    out = tmp_path / "export"
    planned = widget.export(out)
    wait_idle(widget)
    assert widget.written == planned
    assert set(planned) == {"labels", f"map:{map_name}", "prompts", "metrics", "statistics", "report"}
    names = {key: path.name for key, path in planned.items()}
    assert names["labels"] == "phantom_ct_labels.nii.gz" and names["report"] == "phantom_ct_report.png"
    for name in names.values():
        assert name in widget.status.text()

    labels = read_volume(planned["labels"], kind="labels")
    np.testing.assert_array_equal(labels.data, state.annotation.data)
    for attribute in ("spacing", "origin", "direction"):
        assert getattr(labels, attribute) == pytest.approx(getattr(image, attribute), abs=1e-5)
    written_map = read_volume(planned[f"map:{map_name}"], kind="float_map")
    assert written_map.data.dtype == np.float32
    np.testing.assert_array_equal(written_map.data, entropy)
    assert load_prompts(planned["prompts"]) == state.prompts
    with open(planned["metrics"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(metrics.result.rows) and {r["organ"] for r in rows} >= set(ACCEPTED)
    with open(planned["statistics"], newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert [r["organ"] for r in table] == list(ACCEPTED) and table[0]["raters"] == str(len(phantom_study.raters))
    for row, ours in zip(table, metrics.stats, strict=True):
        assert float(row["rater_volume_max_ml"]) == pytest.approx(max(ours.rater_volumes_ml))
    with Image.open(planned["report"]) as png:
        png.load()
        assert png.format == "PNG" and png.size == PAGE_PIXELS

    # a second export: every name gets _v2, the first files stay byte-identical
    first = {key: _digest(path) for key, path in planned.items()}
    state.annotation.set_organ(phantom_study.truth.data == 3, 3, description="accept kidney_left")
    again = widget.export()
    wait_idle(widget)
    assert widget.written == again
    assert {key: path.name for key, path in again.items()} == {
        key: name.replace(".", "_v2.", 1) for key, name in names.items()
    }
    assert {key: _digest(path) for key, path in planned.items()} == first
    np.testing.assert_array_equal(read_volume(again["labels"], kind="labels").data, state.annotation.data)


def test_labels_keep_the_geometry_of_the_source_file(open_study, wait_idle, phantom_files, phantom_study, tmp_path):
    import SimpleITK as sitk

    source = tmp_path / "ras_ct.nrrd"  # another orientation and format than the package's canonical grid
    sitk.WriteImage(sitk.DICOMOrient(sitk.ReadImage(str(phantom_files["image"])), "RAS"), str(source))
    viewer, opener = open_study()
    opener.open_image(source)
    wait_idle(opener)
    image_layer = viewer.layers["ras_ct"]
    state = _review(viewer, image_layer, phantom_study.truth.data)
    _, widget = open_dock(viewer, "Export")
    for box in (widget.maps_check, widget.prompts_check, widget.metrics_check, widget.report_check):
        box.setChecked(False)
    widget.case_edit.setText("patient 7/ct")  # typed: kept, made file-safe
    planned = widget.export(tmp_path / "out")
    wait_idle(widget)
    assert set(widget.written) == {"labels"}
    written = widget.written["labels"]
    assert written.name == "patient_7_ct_labels.nrrd"  # the source's format

    header, src = sitk.ReadImage(str(written)), sitk.ReadImage(str(source))
    assert header.GetSpacing() == src.GetSpacing()
    assert header.GetOrigin() == src.GetOrigin()
    assert header.GetDirection() == src.GetDirection()
    assert header.GetSize() == src.GetSize()
    assert planned == widget.written
    np.testing.assert_array_equal(read_volume(written, kind="labels").data, state.annotation.data)


def test_errors_are_shown_and_the_widget_carries_on(make_napari_viewer, phantom_study, wait_idle, shown, tmp_path):
    viewer = make_napari_viewer()
    data, kwargs, _ = volume_layer_data(phantom_study.image)
    viewer.add_image(data, **kwargs)
    _, widget = open_dock(viewer, "Export")
    widget.folder_edit.setText("")

    assert widget.export() == {}
    assert "Choose an output folder" in shown[-1]
    assert widget.export(tmp_path / "out") == {}  # no working annotation, no labels layer chosen
    assert "no working annotation" in shown[-1] and widget.status.text() == shown[-1]
    assert not (tmp_path / "out").exists()

    data, kwargs, _ = volume_layer_data(phantom_study.truth)
    kwargs["name"] = "truth"
    viewer.add_labels(data, **kwargs)
    widget.labels_combo.setCurrentIndex(widget.labels_combo.findData("truth"))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert widget.export(blocker / "sub") == {}
    assert "Cannot use" in shown[-1] and "sub" in shown[-1]
    planned = widget.export(tmp_path / "out")
    wait_idle(widget)
    assert set(widget.written) == {"labels", "report"} and widget.export_button.isEnabled()
    assert "no box prompts" in widget.status.text() and "no metrics table" in widget.status.text()
    np.testing.assert_array_equal(read_volume(planned["labels"], kind="labels").data, phantom_study.truth.data)


def test_an_annotation_started_after_the_dock_opened_is_its_default(
    make_napari_viewer, phantom_study, wait_idle, tmp_path, shown
):
    """The workspace path: every dock tabbed open from the start, the first Accept comes later."""
    viewer = make_napari_viewer()
    data, kwargs, _ = volume_layer_data(phantom_study.image)
    image_layer = viewer.add_image(data, **kwargs)
    _, widget = open_dock(viewer, "Export")
    assert widget.labels_combo.currentData() == ""  # nothing to export yet
    state = _review(viewer, image_layer, phantom_study.truth.data)
    assert widget.labels_combo.currentData() == state.layer.name
    widget.prompts_check.setChecked(False)
    widget.metrics_check.setChecked(False)
    widget.report_check.setChecked(False)
    planned = widget.export(tmp_path / "late")
    wait_idle(widget)
    assert not shown and set(widget.written) == {"labels"} == set(planned)
    assert np.array_equal(read_volume(planned["labels"], kind="labels").data, state.annotation.data)


def test_the_canvas_legend_follows_what_is_shown(make_napari_viewer, phantom_study, qtbot):
    from napari_segunc._qt._layers import add_layer
    from napari_segunc.io._npe2 import rater_layer_data
    from napari_segunc.uncertainty.layers import segmentation_layer

    viewer = make_napari_viewer()
    data, kwargs, _ = volume_layer_data(phantom_study.image)
    viewer.add_image(data, **kwargs)
    raters = [add_layer(viewer, rater_layer_data(r, i)) for i, r in enumerate(phantom_study.raters)]
    entropy = np.random.default_rng(0).uniform(0, np.log(6), phantom_study.image.shape).astype(np.float32)
    entropy_layer = add_layer(viewer, map_layer("entropy", entropy, phantom_study.image, n_classes=6))
    seg = add_layer(viewer, segmentation_layer(phantom_study.truth.data, phantom_study.image, name="model"))
    text = viewer.canvas.overlays["text"]
    qtbot.waitUntil(lambda: "colour bar" in text.text, timeout=5_000)
    assert viewer.layers.selection.active.name == entropy_layer.name  # its controls, not the last layer's
    assert raters[1].name + " magenta" in text.text and "organ colours: model" in text.text
    raters[1].visible = False
    entropy_layer.visible = False
    seg.visible = False
    assert raters[1].name not in text.text and raters[0].name in text.text
    assert "colour bar" not in text.text and "organ colours" not in text.text
    for layer in raters:
        layer.visible = False
    assert not text.visible


def test_dicom_seg_is_offered_for_a_dicom_image_and_round_trips(open_study, wait_idle, totalseg, tmp_path):
    """An image opened from its DICOM series: the dock offers (and ticks) DICOM SEG; the exported SEG read back with
    highdicom equals the working annotation voxel for voxel. A NIfTI image: DICOM SEG is not offered."""
    from napari_segunc.io.dicom_seg import read_dicom_seg_labels

    viewer, opener = open_study()
    opener.open_image(totalseg / "example_ct_sm.nii.gz")
    wait_idle(opener)
    _, widget = open_dock(viewer, "Export")
    assert not widget.dicom_seg_check.isEnabled() and not widget.dicom_seg_check.isChecked()

    opener.open_image(totalseg / "example_ct_dicom")
    wait_idle(opener)
    name = next(la.name for la in viewer.layers if la.name.startswith("example_ct_dicom"))
    widget.image_combo.setCurrentText(name)
    assert widget.dicom_seg_check.isEnabled() and widget.dicom_seg_check.isChecked()
    image_layer = viewer.layers[name]
    labels = read_volume(totalseg / "example_seg_dicom.nii.gz", kind="labels").data
    state = review_for(viewer, image_layer, autosave=False)
    organs = {"spleen": 1, "liver": 5}
    image_layer.metadata["segunc_labels"] = organs  # the organ names the image's label table gives
    for organ, value in organs.items():
        state.annotation.set_organ(labels == value, value, description=f"accept {organ}")
    for box in (widget.maps_check, widget.prompts_check, widget.metrics_check, widget.report_check):
        box.setChecked(False)
    widget.export(tmp_path / "out")
    wait_idle(widget, timeout=60_000)
    assert set(widget.written) == {"labels", "dicom_seg"} and widget.written["dicom_seg"].suffix == ".dcm"
    back, segments = read_dicom_seg_labels(widget.written["dicom_seg"], image_volume_of(image_layer))
    expected = np.zeros(labels.shape, np.uint16)
    for number, value in enumerate(sorted(organs.values()), start=1):
        expected[labels == value] = number
    assert np.array_equal(back, expected) and set(segments) == {"spleen", "liver"}


def image_volume_of(layer):
    from napari_segunc._qt._session import image_volume

    return image_volume(layer)
