"""The "Metrics" widget in a real napari viewer on the phantom: its table equals the suite's, plots, copy, export."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from qtpy.QtGui import QImage
from qtpy.QtWidgets import QApplication, QFileDialog
from scipy import ndimage

from napari_segunc._qt._docks import open_dock
from napari_segunc._qt.metrics import LAYER, METADATA, NONE
from napari_segunc.metrics.compare import AGGREGATES
from napari_segunc.metrics.prediction import NO_PROBABILITIES, evaluate_prediction
from napari_segunc.metrics.suite import COLUMNS, evaluate_case
from napari_segunc.phantom import LABELS
from napari_segunc.uncertainty import EnsembleAccumulator
from napari_segunc.uncertainty.layers import segmentation_layer

pytestmark = [
    pytest.mark.gui,
    pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6 backend"),
    pytest.mark.filterwarnings("ignore:Conversion from CIE-LAB"),
]

RATERS = ["rater_1", "rater_2", "rater_3"]


@pytest.fixture(scope="module")
def probabilities(phantom_study) -> np.ndarray:
    """A cheap "model": the truth's one-hot blurred by 1 voxel, renormalised (C = 6, background first)."""
    truth = phantom_study.truth.data
    onehot = np.stack([(truth == c).astype(np.float32) for c in range(max(LABELS.values()) + 1)])
    blurred = np.stack([ndimage.gaussian_filter(ch, 1.0) for ch in onehot]) + 1e-4
    return (blurred / blurred.sum(axis=0, keepdims=True)).astype(np.float32)


@pytest.fixture
def metrics_widget(open_study, wait_idle, monkeypatch):
    """``(viewer, widget, errors)``: the phantom (CT + 3 raters) opened by Open study, plus the Metrics widget."""
    viewer, opener = open_study()
    opener.load_phantom()
    wait_idle(opener)
    errors: list[str] = []
    monkeypatch.setattr("napari_segunc._qt._jobs.show_error", errors.append)

    def factory():
        _, widget = open_dock(viewer, "Metrics")
        return widget

    return viewer, factory, errors


def _add_prediction(viewer, phantom_study, probabilities=None, *, name="prediction", member_voxels=None):
    data, kwargs, _ = segmentation_layer(
        phantom_study.truth.data,
        phantom_study.truth,
        name=name,
        labels=LABELS,
        probabilities=probabilities,
        member_voxels=member_voxels,
    )
    return viewer.add_labels(data, **kwargs)


def _raters(phantom_study, names=RATERS):
    return [r.data for r in phantom_study.raters if r.name in names]


def _suite(phantom_study, probabilities, mode):
    """`evaluate_case` called directly on the arrays the widget evaluates."""
    image = phantom_study.image
    return evaluate_case(
        probabilities,
        _raters(phantom_study),
        spacing=image.spacing,
        labels=LABELS,
        mode=mode,
        image=image.data,
        rater_names=RATERS,
        case="phantom_ct",
    )


def _same_row(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(_same(a[k], b[k]) if isinstance(a[k], float) else a[k] == b[k] for k in a)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _assert_table_equals(widget, rows) -> int:
    """Every aggregate row of the suite is the value of its (organ, metric) cell; returns the cells checked."""
    checked = 0
    for row in rows:
        if row["rater"] in AGGREGATES:
            got = widget.cell_value(str(row["organ"]), row["metric"])
            assert _same(got, row["value"]), (row, got)
            checked += 1
    return checked


def _non_white(widget) -> int:
    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    ptr = image.constBits()
    ptr.setsize(image.sizeInBytes())
    raw = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine())
    pixels = raw[:, : image.width() * 3].reshape(image.height(), image.width(), 3)
    return int(np.count_nonzero(pixels.min(axis=2) < 200))


def test_native_and_curvas_table_plots_copy_export(
    metrics_widget, wait_idle, phantom_study, probabilities, tmp_path, monkeypatch
):
    viewer, make, errors = metrics_widget
    # two "members" (the blurred truth, one of them with the liver grown by a voxel), counted as an ensemble run
    # keeps them in its segmentation layer
    acc = EnsembleAccumulator()
    grown = probabilities.copy()
    liver = ndimage.binary_dilation(phantom_study.truth.data == LABELS["liver"])
    grown[:, liver] = np.eye(len(grown), dtype=np.float32)[LABELS["liver"]][:, None]
    for i, member in enumerate((probabilities, grown)):
        acc.add(member, name=f"m{i}")
    member_voxels = acc.result().member_voxels
    _add_prediction(viewer, phantom_study, probabilities, member_voxels=member_voxels)
    widget = make()
    # The defaults: the prediction with its own probabilities, the three raters, the CT, the phantom's organs.
    assert widget.prediction_combo.currentText() == "prediction"
    assert widget.probabilities_source == (METADATA, "prediction")
    assert widget.rater_names() == RATERS
    assert widget.image_combo.currentData() == "phantom_ct"
    assert widget.labels_mapping() == LABELS

    widget.evaluate()
    assert widget.busy and not widget.evaluate_button.isEnabled()
    wait_idle(widget)
    assert not errors, errors
    assert widget.evaluate_button.isEnabled()
    expected = _suite(phantom_study, probabilities, "native")
    assert _assert_table_equals(widget, expected.rows) > 50
    dice = widget.cell_value("liver", "dice_consensus")
    assert dice == expected.value("dice_consensus", "liver", "consensus") and 0.8 < dice <= 1.0
    assert widget.cell_value("all", "ece") == expected.value("ece", "all", "mean")
    assert widget.cell_value("all", "auroc") == expected.value("auroc", "all", "pooled")
    assert "native evaluation of 'phantom_ct': 5 organ(s), 3 rater(s)" in widget.status.text()
    # the Statistics tab: the prediction's organ statistics, as organ_statistics gives them on the same arrays
    from napari_segunc.metrics.stats import organ_statistics

    image = phantom_study.image
    stats = organ_statistics(
        phantom_study.truth.data,
        image.spacing,
        LABELS,
        image=image.data,
        probabilities=probabilities,
        members=[probabilities, grown],
        raters=_raters(phantom_study),
    )
    assert [s.organ for s in widget.stats] == list(LABELS)
    for ours, ref in zip(widget.stats, stats, strict=True):
        assert _same_row(ours.row(), ref.row())
    liver = stats[0].row()
    assert widget.stats_table.value("liver", "ml") == f"{liver['volume_ml']:.1f}"
    assert widget.stats_table.value("liver", "axes mm") == f"{liver['long_axis_mm']:.0f}×{liver['short_axis_mm']:.0f}"
    assert liver["members"] == 2 and liver["member_volume_max_ml"] > liver["member_volume_min_ml"] + 10
    shown = f"{liver['member_volume_min_ml']:.0f}–{liver['member_volume_max_ml']:.0f}"
    assert widget.stats_table.value("liver", "members") == shown
    item = widget.stats_table.item(0, 3)
    assert item.toolTip().startswith("2 member(s)") and "standard deviation" in item.toolTip()
    # double-clicking the liver's row shows the slice of its longest diameter
    widget.stats_table.cellDoubleClicked.emit(0, 5)
    assert viewer.dims.current_step[0] == liver["long_axis_slice"] and "Slice" in widget.status.text()
    assert widget.tabs.tabText(3) == "Statistics"
    # A NaN cell shows "n/a" with the suite's reason as its tooltip (one model: no member-based entropy).
    nan_rows = [r for r in expected.rows if r["rater"] in AGGREGATES and math.isnan(r["value"])]
    assert nan_rows
    metrics = widget.table.metrics
    organs = widget.table.organs
    item = widget.table.item(organs.index(str(nan_rows[0]["organ"])), metrics.index(nan_rows[0]["metric"]))
    assert item.text() == "n/a" and item.toolTip() == nan_rows[0]["reason"]
    assert organs == [*LABELS, "all"]
    assert metrics[:3] == ["dice_consensus", "dice", "hd95"] and "aurc" in metrics

    # Reliability diagram and risk–coverage curve are drawn in the dock.
    for index, canvas, n_axes in ((1, widget.reliability_canvas, 2), (2, widget.risk_canvas, 1)):
        widget.tabs.setCurrentIndex(index)
        canvas.resize(500, 420)
        axes = canvas.figure.axes
        assert len(axes) == n_axes and axes[0].lines and axes[0].get_xlim() == (0.0, 1.0)
        assert _non_white(canvas) > 2000
    assert widget.risk_canvas.figure.axes[0].lines[0].get_xdata().size > 10

    # Copy: TSV, header first, the same liver Dice as the table.
    text = widget.copy_table()
    assert QApplication.clipboard().text() == text
    lines = [line.split("\t") for line in text.splitlines()]
    assert lines[0] == ["organ", *metrics]
    liver = next(cells for cells in lines[1:] if cells[0] == "liver")
    assert float(liver[lines[0].index("dice_consensus")]) == dice

    # Export: the full tidy table; a second export never overwrites (next versioned name).
    first = widget.export_csv(tmp_path / "metrics.csv")
    assert first == tmp_path / "metrics.csv"
    with open(first, newline="", encoding="utf-8") as fh:
        back = list(csv.DictReader(fh))
    assert tuple(back[0]) == COLUMNS and len(back) == len(expected.rows)
    for got, want in zip(back, expected.rows, strict=True):
        assert _same(float(got["value"]), want["value"])
        assert got["organ"] == want["organ"] and got["metric"] == want["metric"] and got["rater"] == want["rater"]
        assert got["reason"] == (want["reason"] or "")
    before = first.read_bytes()
    second = widget.export_csv(tmp_path / "metrics.csv")
    assert second == tmp_path / "metrics_v2.csv" and first.read_bytes() == before
    assert "metrics.csv exists and was kept" in widget.status.text()
    # The button's dialog proposes a free name in the working folder and never asks to overwrite.
    asked = []
    monkeypatch.chdir(tmp_path)

    def dialog(_parent, _caption, proposal, _filter, **_options):
        asked.append(proposal)
        return str(tmp_path / "mine"), "CSV (*.csv)"

    monkeypatch.setattr(QFileDialog, "getSaveFileName", dialog)
    (tmp_path / "phantom_ct_metrics_native.csv").touch()
    assert widget.export_csv() == tmp_path / "mine.csv"
    assert asked == [str(tmp_path / "phantom_ct_metrics_native_v2.csv")]

    # CURVAS mode: the official metrics only (no HD95, one ECE per rater against the organ probabilities).
    widget.set_mode("curvas")
    widget.evaluate()
    wait_idle(widget)
    assert not errors, errors
    curvas = _suite(phantom_study, probabilities, "curvas")
    assert _assert_table_equals(widget, curvas.rows) > 10
    metrics = widget.table.metrics
    assert "hd95" not in metrics and "auroc" not in metrics and "ece" in metrics
    assert widget.cell_value("liver", "dice_consensus") != dice  # CURVAS' Dice leaves the disputed voxels out
    assert not widget.reliability_canvas.figure.axes  # curvas mode keeps no reliability data: a message instead
    assert "native mode" in widget.reliability_canvas.figure.texts[0].get_text()


def test_segmentation_only_and_a_probability_layer(metrics_widget, wait_idle, phantom_study, probabilities):
    viewer, make, errors = metrics_widget
    widget = make()
    # rater_1 as the "prediction", raters 2 and 3 as raters, no probabilities.
    widget.prediction_combo.setCurrentText("rater_1")
    assert widget.rater_names() == ["rater_2", "rater_3"]
    assert widget.probabilities_source == (NONE, "")
    widget.evaluate()
    wait_idle(widget)
    assert not errors, errors
    assert "Segmentation only" in widget.status.text()
    raters = _raters(phantom_study, ["rater_2", "rater_3"])
    expected = evaluate_prediction(
        phantom_study.raters[0].data,
        raters,
        spacing=phantom_study.image.spacing,
        labels=LABELS,
        rater_names=["rater_2", "rater_3"],
        case="phantom_ct",
    )
    _assert_table_equals(widget, expected.rows)
    assert 0.7 < widget.cell_value("liver", "dice") < 1.0
    assert math.isnan(widget.cell_value("all", "ece"))
    organs = widget.table.organs
    metrics = widget.table.metrics
    assert widget.table.item(organs.index("all"), metrics.index("ece")).toolTip() == NO_PROBABILITIES
    assert not widget.reliability_canvas.figure.axes and not widget.risk_canvas.figure.axes

    # The probabilities as a 4D (C, z, y, x) image layer on the same grid.
    grid = phantom_study.image
    viewer.add_image(
        probabilities,
        name="probabilities",
        scale=(1.0, *grid.spacing),
        translate=(0.0, *grid.origin),
        metadata={"segunc_geometry": grid.geometry_dict()},
    )
    _add_prediction(viewer, phantom_study, name="truth as prediction")
    widget.prediction_combo.setCurrentText("truth as prediction")
    widget.set_probabilities(LAYER, "probabilities")
    widget.set_raters(RATERS)
    widget.evaluate()
    wait_idle(widget)
    assert not errors, errors
    expected = _suite(phantom_study, probabilities, "native")
    _assert_table_equals(widget, expected.rows)
    assert widget.cell_value("all", "ece") == expected.value("ece")
    assert widget.reliability_canvas.figure.axes


def test_refusals_keep_the_gui_alive(metrics_widget, wait_idle, phantom_study):
    viewer, make, errors = metrics_widget
    widget = make()
    widget.prediction_combo.setCurrentText("rater_1")

    widget.set_raters([])  # no rater
    widget.evaluate()
    assert not widget.busy and widget.result is None
    assert errors[-1] == widget.status.text() and "at least one rater" in errors[-1]

    widget.set_raters(["rater_2"])  # bad organ labels
    widget.labels_edit.setText("liver:1")
    widget.evaluate()
    assert "Organ labels" in errors[-1] and "liver:1" in errors[-1]
    widget.labels_edit.clear()

    # A prediction on another grid (every other slice: twice the slice spacing) is refused, naming the problem.
    coarse = phantom_study.truth.data[::2]
    viewer.add_labels(
        coarse,
        name="coarse prediction",
        scale=(6.0, *phantom_study.image.spacing[1:]),
        translate=phantom_study.image.origin,
    )
    widget.prediction_combo.setCurrentText("coarse prediction")
    widget.set_raters(["rater_2"])
    widget.evaluate()
    assert not widget.busy and widget.result is None
    assert "does not match the grid" in errors[-1] and "spacing" in errors[-1], errors[-1]

    # Copy / export before any evaluation say so; the widget still works afterwards.
    assert widget.copy_table() == "" and "Evaluate first" in errors[-1]
    assert widget.export_csv("never.csv") is None
    widget.prediction_combo.setCurrentText("rater_1")
    widget.evaluate()
    wait_idle(widget)
    assert widget.result is not None and 0.7 < widget.cell_value("liver", "dice") < 1.0
