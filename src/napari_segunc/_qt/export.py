"""The "Export" dock widget: a reviewed case's label map, uncertainty maps, box prompts, metrics and PNG report.

Choose the image, an output folder (nothing is written until one is chosen: never beside the source by surprise)
and a case name, tick what to write, then Export. What is exported:

* the corrected labels: the image's working annotation (`_session.find_review`), or the labels layer chosen
  instead; in the image's source geometry and format (`napari_segunc.io.write_volume`);
* every uncertainty map of the image (float image layers with ``metadata["segunc_map"]`` on its grid), float32
  NIfTI in the source geometry;
* the MedSAM2 box prompts of the review session (``boxes.json`` format);
* the open Metrics widget's last table (`MetricsWidget.result`) or `ExportWidget.rows_provider`'s rows, as CSV, and
  its organ statistics (`MetricsWidget.stats`: volumes, HU, the members' and raters' volume spread, RECIST axes);
* the one-page PNG report (`napari_segunc.report.write_case_report`), with the statistics' volume ranges;
* a DICOM SEG when the image came from a DICOM series (`napari_segunc.io.dicom_seg`).

The files are named ``<case>_labels.nii.gz``, ``<case>_<map>.nii.gz``, ``<case>_boxes.json``,
``<case>_metrics.csv``, ``<case>_statistics.csv``, ``<case>_report.png`` and ``<case>_seg.dcm``; when any exists,
the whole set gets ``_v2`` (``_v3``...), so nothing is ever overwritten. The writes run in a worker
(`napari_segunc.report.case.write_case_files`); `ExportWidget.export` is what the button calls, and tests call it
directly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import GeometryMismatch, InvalidInput, SegUncError
from ..organs import layer_labels
from ..progress import Progress
from ..report.case import CaseExport, describe, plan_case_files, write_case_files
from ..settings import get_setting, set_setting
from ..volume import Volume, VolumeKind, check_same_grid
from ._jobs import DockJob
from ._layers import same_layer
from ._session import annotation_layer, find_review, image_volume
from ._widgets import layer_combo
from ._worker import status_label

if TYPE_CHECKING:
    import napari

__all__ = ["ExportWidget"]


FOLDER_SETTING = "export_folder"
Rows = list[dict[str, Any]]


def _grid(layer: Any, kind: VolumeKind) -> Volume | None:
    geometry = layer.metadata.get("segunc_geometry")
    if not geometry or layer.ndim != 3:
        return None
    return Volume.from_geometry_dict(np.asarray(layer.data), geometry, kind=kind, name=layer.name)


def _on_grid(layer: Any, image: Volume, kind: VolumeKind) -> bool:
    grid = _grid(layer, kind)
    if grid is None:
        return False
    try:
        check_same_grid(image, grid)
    except GeometryMismatch:
        return False
    return True


def _is_map(layer: Any, image: Volume) -> bool:
    if not isinstance(layer, Image) or "segunc_map" not in layer.metadata:
        return False
    return np.asarray(layer.data).dtype.kind == "f" and _on_grid(layer, image, VolumeKind.FLOAT_MAP)


def _merge_names(*sources: dict[str, int]) -> dict[str, int]:
    """Organ names of every label value, from the first source (highest priority) naming it."""
    by_value: dict[int, str] = {}
    for source in sources:
        for name, value in source.items():
            by_value.setdefault(int(value), str(name))
    return {name: value for value, name in sorted(by_value.items())}


class ExportWidget(QWidget):
    """Write a case's corrected labels, uncertainty maps, prompts, metrics and one-page report to a folder."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        #: Called for the metrics rows instead of looking for the Metrics widget (scripts, tests).
        self.rows_provider: Callable[[], Rows | None] | None = None
        self.written: dict[str, Path] = {}
        self._case_typed = False
        self._notes: list[str] = []
        self._target: Path | None = None

        self.image_combo, self.labels_combo = layer_combo(), layer_combo()
        self.folder_edit = QLineEdit(get_setting(FOLDER_SETTING, "") or "")
        self.folder_edit.setPlaceholderText("choose the output folder")
        self.browse_button = QPushButton("Browse…")
        self.case_edit = QLineEdit()
        self.labels_check = QCheckBox("corrected labels")
        self.maps_check = QCheckBox("uncertainty maps")
        self.prompts_check = QCheckBox("box prompts (boxes.json)")
        self.metrics_check = QCheckBox("metrics table (CSV)")
        self.report_check = QCheckBox("one-page PNG report")
        self.dicom_seg_check = QCheckBox("DICOM SEG (the image's DICOM series)")
        self.dicom_seg_check.setToolTip("The labels as a DICOM Segmentation referencing the source series, for a PACS")
        for box in self.checks:
            box.setChecked(True)
        self.dicom_seg_check.setChecked(False)  # offered (ticked) when the image came from a DICOM series
        self.dicom_seg_check.setEnabled(False)
        self.export_button = QPushButton("Export")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = status_label("Choose the image and an output folder, then Export.")
        self.job = DockJob(
            self,
            inputs=lambda: self.inputs,
            status=self.status,
            progress=self.progress,
            busy_message="The export is still running; wait for it to finish.",
        )

        form = QFormLayout()
        form.addRow("Image:", self.image_combo)
        form.addRow("Labels:", self.labels_combo)
        row = QHBoxLayout()
        row.addWidget(self.folder_edit)
        row.addWidget(self.browse_button)
        form.addRow("Folder:", row)
        form.addRow("Case name:", self.case_edit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for box in self.checks:
            layout.addWidget(box)
        layout.addWidget(self.export_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.browse_button.clicked.connect(self._browse)
        self.export_button.clicked.connect(lambda: self.export())
        self.case_edit.textEdited.connect(self._case_edited)
        self.image_combo.currentIndexChanged.connect(self._image_changed)
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self._refresh()

    # -------------------------------------------------------------------------------- state
    @property
    def checks(self) -> list[QCheckBox]:
        return [
            self.labels_check,
            self.maps_check,
            self.prompts_check,
            self.metrics_check,
            self.report_check,
            self.dicom_seg_check,
        ]

    @property
    def inputs(self) -> list[QWidget]:
        return [
            self.image_combo,
            self.labels_combo,
            self.folder_edit,
            self.browse_button,
            self.case_edit,
            *[box for box in self.checks if box is not self.dicom_seg_check],  # enabled by the image's source
            self.export_button,
        ]

    @property
    def busy(self) -> bool:
        return self.job.busy

    def image_layer(self) -> Image:
        name = self.image_combo.currentText()
        if name not in self.viewer.layers:
            raise InvalidInput("Open an image first (Open study, File ▸ Open with napari-segunc, or the phantom).")
        return self.viewer.layers[name]

    def labels_layer(self) -> Labels | None:
        """The labels layer to export: the chosen one (by default the image's working annotation, also when it
        was started after the list was filled)."""
        name = self.labels_combo.currentData()
        if name and name in self.viewer.layers:
            return self.viewer.layers[name]
        try:
            return annotation_layer(self.viewer, self.image_layer())
        except InvalidInput:
            return None

    def map_layers(self, image: Volume) -> list[Image]:
        """The uncertainty map layers on `image`'s grid (float image layers with ``segunc_map``)."""
        return [layer for layer in self.viewer.layers if _is_map(layer, image)]

    # -------------------------------------------------------------------------------- refresh
    def _refresh(self, _event: Any = None) -> None:
        current = self.image_combo.currentText()
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        for layer in self.viewer.layers:
            if (
                isinstance(layer, Image)
                and layer.ndim == 3
                and layer.metadata.get("segunc_geometry")
                and "segunc_map" not in layer.metadata
            ):
                self.image_combo.addItem(layer.name)
        self.image_combo.setCurrentIndex(max(self.image_combo.findText(current), 0))
        self.image_combo.blockSignals(False)
        self._image_changed()

    def _image_changed(self, _index: int = 0) -> None:
        name = self.image_combo.currentText()
        if not self._case_typed:
            self.case_edit.setText(name)
        keep = self.labels_combo.currentData()
        self.labels_combo.clear()
        try:
            image_layer = self.image_layer()
            image = image_volume(image_layer)
        except InvalidInput:
            self.labels_combo.addItem("(no image)", "")
            self.maps_check.setText("uncertainty maps")
            self.dicom_seg_check.setEnabled(False)
            self.dicom_seg_check.setChecked(False)
            return
        from_dicom = (
            image.source is not None and image.source.format is not None and image.source.format.value == "dicom"
        )
        if from_dicom != self.dicom_seg_check.isEnabled():
            self.dicom_seg_check.setEnabled(from_dicom)
            self.dicom_seg_check.setChecked(from_dicom)
        annotation = annotation_layer(self.viewer, image_layer)
        if annotation is not None:
            self.labels_combo.addItem(f"{annotation.name} (working annotation)", annotation.name)
        else:
            self.labels_combo.addItem("(none: choose a labels layer)", "")
        for layer in self.viewer.layers:  # every other labels layer on the grid, other annotations included
            if (
                isinstance(layer, Labels)
                and not same_layer(layer, annotation)
                and _on_grid(layer, image, VolumeKind.LABELS)
            ):
                self.labels_combo.addItem(layer.name, layer.name)
        if keep:
            self.labels_combo.setCurrentIndex(max(self.labels_combo.findData(keep), 0))
        self.maps_check.setText(f"uncertainty maps ({len(self.map_layers(image))} on this image)")

    def _case_edited(self, text: str) -> None:
        self._case_typed = bool(text.strip())

    def _browse(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Export to folder", self.folder_edit.text())
        if chosen:
            self.folder_edit.setText(chosen)

    # -------------------------------------------------------------------------------- inputs (GUI thread)
    def _metrics_widget(self) -> Any:
        """The Metrics dock with an evaluation, or None."""
        from ..metrics.prediction import PredictionEvaluation

        window = self.viewer.window
        docks = getattr(window, "dock_widgets", None)
        widgets = (
            list(docks.values())
            if docks is not None
            else [d.widget() for d in getattr(window, "_wrapped_dock_widgets", {}).values()]
        )
        for widget in widgets:
            result = getattr(widget, "result", None)
            if isinstance(result, PredictionEvaluation) and result.rows:
                return widget
        return None

    def metrics_rows(self) -> tuple[Rows | None, dict[str, int]]:
        """The metrics table to export (rows, organ labels): `rows_provider`'s, else the Metrics widget's last."""
        if self.rows_provider is not None:
            rows = self.rows_provider()
            return (list(rows) if rows else None), {}
        widget = self._metrics_widget()
        if widget is None:
            return None, {}
        return list(widget.result.rows), dict(widget.result.labels)

    def statistics_rows(self) -> list[dict] | None:
        """The Metrics widget's last organ statistics (`OrganStats.row`), or None."""
        widget = self._metrics_widget()
        stats = getattr(widget, "stats", None) if widget is not None else None
        return [s.row() for s in stats] if stats else None

    def _folder(self, folder: str | Path | None) -> Path:
        if folder is not None:
            self.folder_edit.setText(str(folder))
        text = self.folder_edit.text().strip()
        if not text:
            raise InvalidInput(
                "Choose an output folder first (Browse…): the export is never written beside the image by default."
            )
        return Path(text).expanduser()

    @staticmethod
    def _make_folder(path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInput(
                f"Cannot use {path} as the output folder ({exc.strerror or exc}); choose another."
            ) from None
        if not path.is_dir():
            raise InvalidInput(f"{path} is a file, not a folder; choose a folder to export to.")

    def _gather(self) -> tuple[CaseExport, list[str]]:
        image_layer = self.image_layer()
        image = image_volume(image_layer)
        state = find_review(self.viewer, image_layer)
        notes: list[str] = []
        labels, names = None, {}
        if self.labels_check.isChecked() or self.report_check.isChecked() or self.dicom_seg_check.isChecked():
            layer = self.labels_layer()
            if layer is None:
                raise InvalidInput(
                    f"'{image_layer.name}' has no working annotation and no labels layer is chosen: "
                    "accept a result (MedSAM2) or choose the labels layer to export."
                )
            if not _on_grid(layer, image, VolumeKind.LABELS):
                raise GeometryMismatch(f"The labels layer '{layer.name}' is not on the grid of '{image_layer.name}'.")
            labels = np.array(layer.data, copy=True)  # a snapshot: the review may go on while the files are written
            names = layer_labels(layer.metadata)
        maps, units = {}, {}
        for layer in self.map_layers(image):
            maps[layer.name] = np.asarray(layer.data)
            units[layer.name] = f"{layer.name} ({layer.metadata.get('segunc_unit', 'a.u.')})"
        if self.maps_check.isChecked() and not maps:
            notes.append("no uncertainty map of this image (skipped)")
        prompts = state.prompts if state is not None and self.prompts_check.isChecked() else None
        if self.prompts_check.isChecked() and prompts is None:
            notes.append("no box prompts in the review session (skipped)")
        rows, metric_names = (
            self.metrics_rows() if self.metrics_check.isChecked() or self.report_check.isChecked() else (None, {})
        )
        if self.metrics_check.isChecked() and rows is None:
            notes.append("no metrics table: evaluate in the Metrics widget first (skipped)")
        wants_stats = self.metrics_check.isChecked() or self.report_check.isChecked()
        statistics = self.statistics_rows() if wants_stats else None
        prompt_names = {o.name: o.label for o in prompts.organs} if prompts is not None else {}
        image_names = layer_labels(image_layer.metadata)  # the image's own organ table (the phantom's, say)
        entropy = [n for n in maps if self.viewer.layers[n].metadata.get("segunc_map") == "entropy"]
        export = CaseExport(
            image=image,
            case=self.case_edit.text().strip() or image_layer.name,
            labels=labels,
            maps=maps,
            map_units=units,
            prompts=prompts,
            metrics_rows=rows,
            statistics=statistics,
            label_names=_merge_names(names, metric_names, prompt_names, image_names),
            write_labels=self.labels_check.isChecked(),
            write_maps=self.maps_check.isChecked(),
            write_metrics=self.metrics_check.isChecked(),
            write_report=self.report_check.isChecked(),
            report_map=(entropy or list(maps) or [None])[0],
            write_dicom_seg=self.dicom_seg_check.isChecked(),
        )
        return export, notes

    # -------------------------------------------------------------------------------- actions
    def export(self, folder: str | Path | None = None) -> dict[str, Path]:
        """Start writing the ticked outputs to `folder` (default: the folder box) in a worker.

        Returns the planned ``{what: path}`` (keys ``"labels"``, ``"map:<layer name>"``, ``"prompts"``,
        ``"metrics"``, ``"report"``), or an empty dict when nothing was started (the error is shown). When the
        worker is done, `written` holds what was written.
        """
        if self.job.refuse_if_busy():
            return {}
        try:
            path = self._folder(folder)
            export, notes = self._gather()
            self._make_folder(path)
            files = plan_case_files(export, path)
        except SegUncError as exc:
            self._error(str(exc))
            return {}
        self.written, self._notes, self._target = {}, notes, path
        self.job.start(
            write_case_files,
            export,
            files,
            starting=f"Exporting {len(files)} file(s) to {path}…",
            steps=len(files),
            on_progress=self._progress,
            on_returned=self._done,
            description=f"Exporting '{export.case}'",
        )
        return files

    # -------------------------------------------------------------------------------- results (GUI thread)
    def _progress(self, report: Progress) -> None:
        self.job.report(report, f"{report.message.capitalize()}…")

    def _done(self, written: dict[str, Path]) -> None:
        self.written = dict(written)
        set_setting(FOLDER_SETTING, str(self._target))
        lines = [f"{describe(key)}: {path.name}" for key, path in written.items()]
        msg = f"Wrote {len(written)} file(s) to {self._target}: " + "; ".join(lines) + "."
        if self._notes:
            msg += " Note: " + "; ".join(self._notes) + "."
        self.status.setText(msg)
        show_info(msg)

    def _error(self, message: str) -> None:
        self.job.error(message)
