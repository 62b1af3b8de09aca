"""The "Metrics" dock widget: evaluate a prediction against raters; per-organ table, reliability and risk–coverage.

Inputs are napari layers on one grid: the prediction (a labels layer), its class probabilities (optional: the
prediction's ``metadata["segunc_probabilities"]``, which `uncertainty.layers.segmentation_layer` sets, or a 4D
``(C, z, y, x)`` image layer, background first, channel i = i-th organ in increasing label value), one or more rater
labels layers, the CT (optional; curvas mode crops to CT > 0 with it) and the organ labels (a typed
``name=value`` list, else the prediction's, a rater's or the CT's ``metadata["segunc_labels"]``). Evaluate runs
`napari_segunc.metrics.prediction.evaluate_prediction` (the suite of ``segunc evaluate``) in a napari worker; without
probabilities only overlap, surface and volume metrics get values. `MetricsWidget.evaluate`, `copy_table` and
`export_csv` are what the buttons call; tests and scripts call them directly.

One responsibility, the Metrics dock (its inputs, table and plots); kept in one module past 400 lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Image, Labels
from napari.utils.notifications import show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QApplication,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..errors import InvalidInput, SegUncError
from ..io.writers import versioned_path, write_csv
from ..labels import parse_labels
from ..metrics.plots import draw_reliability, draw_risk_coverage
from ..metrics.prediction import PredictionEvaluation, evaluate_prediction
from ..metrics.suite import COLUMNS, Mode
from ..organs import layer_labels
from ..roles import MEMBER_VOXELS, PROBABILITIES
from ..volume import check_same_grid
from ._jobs import DockJob
from ._layers import LayerRole, layers_with_role, role_of, volume_of
from ._metrics_table import MetricsTable, StatsTable
from ._widgets import layer_combo
from ._worker import status_label

if TYPE_CHECKING:
    import napari

__all__ = ["MetricsWidget"]


NONE, METADATA, LAYER = "none", "metadata", "layer"  # kinds of probabilities source
_MODES = {Mode.NATIVE: "native (docs/metrics.md)", Mode.CURVAS: "CURVAS 2024 (official evaluation)"}


def _message(fig: Figure, text: str) -> None:
    fig.clear()
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True, color="#555555")


def evaluate_and_measure(**job: Any) -> tuple[PredictionEvaluation, list]:
    """Worker body: the evaluation (`evaluate_prediction`) and the organs' statistics of the prediction
    (`napari_segunc.metrics.stats.organ_statistics`: volumes, HU, soft volume, the members' and the raters' volumes,
    RECIST axes). ``job["member_voxels"]`` (popped before the evaluation) are the ensemble members' label maps counted
    per class, from the prediction layer's metadata."""
    from ..metrics.stats import organ_statistics

    member_voxels = list(job.pop("member_voxels", None) or ())
    result = evaluate_prediction(**job)
    probabilities = job.get("probabilities")
    if probabilities is not None and np.shape(probabilities)[0] != len(result.labels) + 1:
        probabilities = None  # organ channels only: the soft volume needs background first
    member_voxels = [c for c in member_voxels if len(c) == len(result.labels) + 1]  # other classes: not comparable
    stats = organ_statistics(
        job["segmentation"],
        job["spacing"],
        result.labels,
        image=job.get("image"),
        probabilities=probabilities,
        member_voxels=member_voxels,
        raters=job["raters"],
    )
    return result, stats


class MetricsWidget(QWidget):
    """Choose a prediction, its probabilities and raters; Evaluate fills the per-organ table and the plots."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.result: PredictionEvaluation | None = None
        self.stats: list = []  # `organ_statistics` of the last evaluation
        self._returned = False
        self._checked: dict[str, bool] = {}  # rater ticks by layer name, kept across refreshes

        self.prediction_combo = layer_combo()
        self.probabilities_combo = layer_combo()
        self.image_combo = layer_combo()
        self.raters_list = QListWidget()
        self.raters_list.setMaximumHeight(110)
        self.labels_edit = QLineEdit()
        self.labels_edit.setPlaceholderText("liver=1,spleen=4 — default: the layers' labels (phantom: its organs)")
        self.mode_combo = QComboBox()
        for mode, text in _MODES.items():
            self.mode_combo.addItem(text, mode)
        self.evaluate_button = QPushButton("Evaluate")
        self.copy_button = QPushButton("Copy table")
        self.export_button = QPushButton("Export CSV…")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = status_label("Choose the prediction and the raters, then Evaluate.")
        self.job = DockJob(
            self,
            inputs=lambda: self.inputs,
            status=self.status,
            progress=self.progress,
            busy_message="The evaluation is still running; wait for it to finish.",
        )
        self.table = MetricsTable()
        self.reliability_canvas = FigureCanvasQTAgg(Figure(figsize=(5.0, 5.6), dpi=90, layout="constrained"))
        self.risk_canvas = FigureCanvasQTAgg(Figure(figsize=(5.0, 4.2), dpi=90, layout="constrained"))
        for canvas in (self.reliability_canvas, self.risk_canvas):
            canvas.setMinimumHeight(320)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.table, "Table")
        self.tabs.addTab(self.reliability_canvas, "Reliability")
        self.tabs.addTab(self.risk_canvas, "Risk–coverage")
        self.stats_table = StatsTable()
        self.stats_table.slice_chosen.connect(self.go_to_slice)
        self.tabs.addTab(self.stats_table, "Statistics")

        form = QFormLayout()
        form.addRow("Prediction:", self.prediction_combo)
        form.addRow("Probabilities:", self.probabilities_combo)
        form.addRow("Raters:", self.raters_list)
        form.addRow("Image (CT):", self.image_combo)
        form.addRow("Organ labels:", self.labels_edit)
        form.addRow("Mode:", self.mode_combo)
        buttons = QHBoxLayout()
        for b in (self.evaluate_button, self.copy_button, self.export_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.tabs, 1)

        self.evaluate_button.clicked.connect(lambda: self.evaluate())
        self.copy_button.clicked.connect(lambda: self.copy_table())
        self.export_button.clicked.connect(lambda: self.export_csv())
        self.prediction_combo.currentIndexChanged.connect(self._prediction_changed)
        self._prediction_picked = False  # until the user picks one, the prediction follows the newest model output
        self.prediction_combo.activated.connect(lambda _i: setattr(self, "_prediction_picked", True))
        self.raters_list.itemChanged.connect(self._rater_ticked)
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self._refresh()
        self._show_plots()

    # -------------------------------------------------------------------------------- state
    @property
    def inputs(self) -> list[QWidget]:
        combos = [self.prediction_combo, self.probabilities_combo, self.image_combo, self.mode_combo]
        return [*combos, self.raters_list, self.labels_edit, self.evaluate_button, self.copy_button, self.export_button]

    @property
    def busy(self) -> bool:
        return self.job.busy

    @property
    def mode(self) -> Mode:
        return self.mode_combo.currentData()

    def set_mode(self, mode: Mode | str) -> None:
        self.mode_combo.setCurrentIndex(self.mode_combo.findData(Mode(mode)))

    def rater_names(self) -> list[str]:
        """The ticked rater layers, in the list's order."""
        items = [self.raters_list.item(i) for i in range(self.raters_list.count())]
        return [it.text() for it in items if it.checkState() == Qt.CheckState.Checked]

    def set_raters(self, names: list[str]) -> None:
        """Tick exactly these rater layers."""
        for i in range(self.raters_list.count()):
            item = self.raters_list.item(i)
            item.setCheckState(Qt.CheckState.Checked if item.text() in names else Qt.CheckState.Unchecked)

    @property
    def probabilities_source(self) -> tuple[str, str]:
        """(kind, layer name): ``("none", "")``, ``("metadata", labels layer)`` or ``("layer", 4D image layer)``."""
        kind, _, name = (self.probabilities_combo.currentData() or NONE).partition(":")
        return kind, name

    def set_probabilities(self, kind: str, name: str = "") -> None:
        """Choose the probabilities source (see `probabilities_source`)."""
        index = self.probabilities_combo.findData(f"{kind}:{name}" if kind != NONE else NONE)
        if index < 0:
            raise InvalidInput(f"No probabilities source {kind} {name!r}.")
        self.probabilities_combo.setCurrentIndex(index)

    def _layers(self, kind: type, ndim: int) -> list[Any]:
        return [layer for layer in self.viewer.layers if isinstance(layer, kind) and layer.ndim == ndim]

    def _refresh(self, _event: Any = None) -> None:
        labels = self._layers(Labels, 3)
        names = [layer.name for layer in labels]
        roles = {layer.name: role_of(layer) for layer in labels}
        models = [n for n in names if roles[n] is LayerRole.SEGMENTATION]  # the ensemble's or MedSAM2's output
        preferred = [n for n in models if PROBABILITIES in self.viewer.layers[n].metadata] + models
        preferred += [n for n in names if roles[n] not in (LayerRole.RATER, LayerRole.RATER_ANALYSIS)]
        current = self.prediction_combo.currentText() if self._prediction_picked else ""
        self._fill(
            self.prediction_combo,
            [(n, n) for n in names],
            current if current in names else (preferred or names or [""])[0],
        )
        sources = [("none (segmentation only)", NONE)]
        sources += [
            (f"{n} (its probabilities)", f"{METADATA}:{n}")
            for n in names
            if "segunc_probabilities" in self.viewer.layers[n].metadata
        ]
        sources += [(layer.name, f"{LAYER}:{layer.name}") for layer in self._layers(Image, 4)]
        self._fill(self.probabilities_combo, sources, self.probabilities_combo.currentData())
        images = layers_with_role(self.viewer.layers, LayerRole.IMAGE)
        with_grid = [layer.name for layer in images if layer.metadata.get("segunc_geometry")]
        chosen = self.image_combo.currentData() or self.image_combo.count() > 1  # "(none)" picked on purpose
        self._fill(
            self.image_combo,
            [("(none)", ""), *((layer.name, layer.name) for layer in images)],
            self.image_combo.currentData() if chosen else (with_grid or [""])[0],
        )
        self._prediction_changed()

    @staticmethod
    def _fill(combo: QComboBox, items: list[tuple[str, Any]], keep: Any) -> None:
        combo.blockSignals(True)
        combo.clear()
        for text, data in items:
            combo.addItem(text, data)
        combo.setCurrentIndex(max(combo.findData(keep), 0))
        combo.blockSignals(False)

    def _prediction_changed(self, _index: int = 0) -> None:
        prediction = self.prediction_combo.currentText()
        kind, name = self.probabilities_source
        own = self.probabilities_combo.findData(f"{METADATA}:{prediction}")
        if own >= 0:
            self.probabilities_combo.setCurrentIndex(own)
        elif kind == METADATA and name != prediction:
            self.probabilities_combo.setCurrentIndex(0)
        self.raters_list.blockSignals(True)
        self.raters_list.clear()
        for layer in self._layers(Labels, 3):
            if layer.name == prediction:
                continue
            item = QListWidgetItem(layer.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            ticked = self._checked.get(layer.name, role_of(layer) is LayerRole.RATER)
            item.setCheckState(Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked)
            self.raters_list.addItem(item)
        self.raters_list.blockSignals(False)

    def _rater_ticked(self, item: QListWidgetItem) -> None:
        self._checked[item.text()] = item.checkState() == Qt.CheckState.Checked

    # -------------------------------------------------------------------------------- inputs (GUI thread)
    def labels_mapping(self) -> dict[str, int] | None:
        """The organs: the typed list, else the prediction's, a rater's or the CT's ``segunc_labels``."""
        text = self.labels_edit.text().strip()
        if text:
            try:
                return parse_labels(text)
            except InvalidInput as exc:
                raise InvalidInput(f"Organ labels: {exc}") from None
        names = [self.prediction_combo.currentText(), *self.rater_names()]
        for layer in (self.viewer.layers[n] for n in names if n in self.viewer.layers):
            if layer.metadata.get("segunc_labels"):
                return {str(k): int(v) for k, v in layer.metadata["segunc_labels"].items()}
        image = self.image_combo.currentData()
        if image in self.viewer.layers and layer_labels(self.viewer.layers[image].metadata):
            return layer_labels(self.viewer.layers[image].metadata)  # the image's own table (the phantom's, say)
        return None

    def _gather(self) -> dict[str, Any]:
        """`evaluate_prediction`'s arguments, from the layers (references to their arrays, no copies)."""
        name = self.prediction_combo.currentText()
        if name not in self.viewer.layers:
            raise InvalidInput("Choose the prediction: a labels layer (e.g. the Ensemble's segmentation).")
        prediction = self.viewer.layers[name]
        grid = volume_of(prediction)
        raters = [self.viewer.layers[n] for n in self.rater_names() if n in self.viewer.layers]
        if not raters:
            raise InvalidInput("Tick at least one rater layer: the metrics compare the prediction with raters.")
        for layer in raters:
            check_same_grid(grid, volume_of(layer))
        kind, source = self.probabilities_source
        probabilities = None
        if kind != NONE:
            layer = self.viewer.layers[source]
            probabilities = np.asarray(layer.metadata["segunc_probabilities"] if kind == METADATA else layer.data)
            if probabilities.ndim != 4:
                raise InvalidInput(
                    f"'{source}' holds a {probabilities.ndim}D array; class probabilities are (C, z, y, x)."
                )
            check_same_grid(grid, volume_of(layer, data=probabilities[0]))
        image = None
        if self.image_combo.currentData():
            image_layer = self.viewer.layers[self.image_combo.currentData()]
            check_same_grid(grid, volume_of(image_layer))
            image = np.asarray(image_layer.data)
        return dict(
            segmentation=np.asarray(prediction.data),
            raters=[np.asarray(r.data) for r in raters],
            rater_names=[r.name for r in raters],
            spacing=grid.spacing,
            probabilities=probabilities,
            labels=self.labels_mapping(),
            image=image,
            mode=self.mode,
            case=self.image_combo.currentData() or name,
            array_order=grid.source.direction if grid.source is not None else None,  # curvas: the file's order
            member_voxels=list(prediction.metadata.get(MEMBER_VOXELS, {}).values()),
        )

    # -------------------------------------------------------------------------------- actions
    def evaluate(self) -> None:
        """Evaluate the prediction against the ticked raters in a worker; the table and plots fill when done."""
        if self.job.refuse_if_busy():
            return
        try:
            job = self._gather()
        except SegUncError as exc:
            self._error(str(exc))
            return
        self._returned = False
        self.job.start(
            evaluate_and_measure,
            on_returned=self._done,
            on_finished=self._finished,
            steps=None,  # a busy bar: the suite is one call, it cannot report steps or stop midway
            starting=f"Evaluating '{job['case']}' ({job['mode'].value}), {len(job['raters'])} rater(s)…",
            **job,
        )

    def cell_value(self, organ: str, metric: str) -> float:
        """The value the table shows for (organ, metric) (KeyError when it has no such cell)."""
        return self.table.value(organ, metric)

    def go_to_slice(self, z: int) -> None:
        """Show axial slice `z` (a Statistics row's RECIST slice) in the viewer."""
        step = list(self.viewer.dims.current_step)
        step[0] = int(z)
        self.viewer.dims.current_step = tuple(step)
        self.status.setText(f"Slice {int(z)}: where the organ's longest axial diameter lies.")

    def copy_table(self) -> str:
        """Put the table on the clipboard as TSV (pastes into a spreadsheet) and return the text."""
        if self.result is None:
            self._error("Evaluate first: there is no table to copy.")
            return ""
        text = self.table.tsv()
        QApplication.clipboard().setText(text)
        self.status.setText(f"Copied the table ({self.table.rowCount()} organ rows) to the clipboard.")
        return text

    def export_csv(self, path: str | Path | None = None) -> Path | None:
        """Write the full tidy table (every rater, every metric) as CSV; an existing file is never replaced: the
        next free ``name_v2.csv``… is written instead. Without `path`, a file dialog asks. Returns the file."""
        if self.result is None:
            self._error("Evaluate first: there is no table to export.")
            return None
        if path is None:
            rows = self.result.rows
            proposal = versioned_path(Path.cwd() / f"{rows[0]['case']}_metrics_{rows[0]['mode']}.csv")
            chosen, _ = QFileDialog.getSaveFileName(
                self,
                "Export metrics (CSV)",
                str(proposal),
                "CSV (*.csv)",
                options=QFileDialog.Option.DontConfirmOverwrite,
            )
            if not chosen:
                return None
            path = chosen if chosen.lower().endswith(".csv") else chosen + ".csv"
        asked = Path(path)
        try:
            written = write_csv(self.result.rows, versioned_path(asked), columns=COLUMNS)
        except (SegUncError, OSError) as exc:
            self._error(f"The table was not written: {exc}")
            return None
        kept = f" ({asked.name} exists and was kept)" if written != asked else ""
        msg = f"Wrote {len(self.result.rows)} rows to {written}{kept}."
        self.status.setText(msg)
        show_info(msg)
        return written

    # -------------------------------------------------------------------------------- results (GUI thread)
    def _done(self, done: tuple[PredictionEvaluation, list]) -> None:
        result, stats = done
        self.result, self._returned = result, True
        self.stats = stats
        self.table.show_rows(result.rows)
        self.stats_table.show_rows([s.row() for s in stats])
        self._show_plots()
        rows = result.rows
        n_raters = len({r["rater"] for r in rows if r["metric"] in ("dice", "ece")} - {"mean"})
        msg = (
            f"{rows[0]['mode']} evaluation of '{rows[0]['case']}': {len(result.labels)} organ(s), "
            f"{n_raters} rater(s), {len(rows)} rows."
        )
        self.status.setText(" ".join([msg, *result.notes]))

    def _show_plots(self) -> None:
        result = self.result
        evaluation = result.evaluation if result is not None else None
        case = result.rows[0]["case"] if result is not None and result.rows else ""
        if result is None:
            why = "Evaluate to see the {}."
        elif not result.with_probabilities:
            why = "No {}: it needs class probabilities (choose a probabilities source)."
        else:
            why = "No {} in CURVAS mode: evaluate in native mode."
        for canvas, data, draw, what in (
            (self.reliability_canvas, evaluation and evaluation.calibration, draw_reliability, "reliability diagram"),
            (self.risk_canvas, evaluation and evaluation.risk_coverage, draw_risk_coverage, "risk–coverage curve"),
        ):
            if data is not None:
                draw(canvas.figure, data, title=case)
            else:
                _message(canvas.figure, why.format(what))
            canvas.draw_idle()

    def _finished(self) -> None:
        self.progress.setValue(1 if self._returned else 0)

    def _error(self, message: str) -> None:
        self.job.error(message)
