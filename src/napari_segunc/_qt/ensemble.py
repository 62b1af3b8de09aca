"""The "Ensemble" dock widget: run an nnU-Net v2 ensemble on the image and add its segmentation and uncertainty maps.

Members: the shipped demo ensemble (3 simulated raters × 2 seeds), nnU-Net trained-model folders, or an ensemble
file (JSON/YAML with groups). The work is `napari_segunc.inference.nnunet.predict_members` streamed through
`napari_segunc.uncertainty.pipeline.accumulate` in a napari worker; the widget only shows its progress and adds the
resulting layers (segmentation, predictive entropy, expected entropy, mutual information; per group on request).
Cancel stops the running member at its next sliding-window tile.
Before predicting, the worker checks the image against the models' training data
(`napari_segunc.inference.input_qc.check_input`): its warnings appear in the dock's warning line and as a napari
warning as soon as the check is done, and the result layers keep the check in ``metadata["input_qc"]``.
`EnsembleWidget.run` is what the Run button calls; tests and scripts call it directly.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import InvalidInput
from ..io._npe2 import LayerData
from ..progress import Progress
from ..roles import GEOMETRY
from ..volume import Volume
from ._jobs import DockJob
from ._layers import LayerRole, layers_with_role, volume_of
from ._widgets import layer_combo
from ._worker import import_in_gui_thread, status_label, warm_up_in_background

if TYPE_CHECKING:
    import napari

    from ..inference.input_qc import InputQC
    from ..inference.nnunet import Member

__all__ = ["EnsembleWidget", "ensemble_job"]

#: What a prediction imports first (torch, nnU-Net and, through torch._dynamo, triton): imported when the widget
#: opens, on the GUI thread, with triton kept away from Mesa's LLVM (`keep_triton_away_from_mesa`).
NATIVE_MODULES = ("torch", "nnunetv2.inference.predict_from_raw_data", "nnunetv2.training.nnUNetTrainer.nnUNetTrainer")


DEMO, FOLDERS, FILE = "demo", "folders", "file"
_SOURCES = {
    DEMO: "Demo ensemble (3 raters × 2 seeds)",
    FOLDERS: "nnU-Net model folder(s)",
    FILE: "Ensemble file (JSON/YAML)",
}
MAPS = ("entropy", "expected_entropy", "mutual_information")
INPUT_QC = "input_qc"  # layer metadata key: `InputQC.to_dict` of the image against the models' training data


@dataclasses.dataclass
class EnsembleResult:
    layers: list[LayerData]
    summary: str
    qc: InputQC | None = None


@dataclasses.dataclass(frozen=True)
class InputCheckReport(Progress):
    """The report `ensemble_job` yields once the image was checked against the models' training data."""

    qc: InputQC | None = None


def resolve_members(source: str, paths: Sequence[str]) -> list[Member]:
    """The members a source choice names (the demo ensemble, model folders, or one ensemble file)."""
    from ..inference.demo_models import demo_ensemble_file
    from ..inference.nnunet import discover_members, read_ensemble_file

    if source == DEMO:
        return read_ensemble_file(demo_ensemble_file())
    paths = [p for p in paths if p.strip()]
    if not paths:
        what = "an nnU-Net trained-model folder" if source == FOLDERS else "an ensemble file"
        raise InvalidInput(f"Choose {what} first (or pick the demo ensemble).")
    if source == FOLDERS:
        return discover_members(paths)
    if len(paths) != 1:
        raise InvalidInput("Give one ensemble file.")
    return read_ensemble_file(paths[0])


def ensemble_job(
    image: Volume,
    source: str,
    paths: Sequence[str],
    *,
    device: str = "auto",
    tta: str | None = None,
    mirroring: bool = True,
    per_group: bool = False,
    trust_checkpoint: bool = False,
    cancel: threading.Event | None = None,
) -> Generator[Progress, None, EnsembleResult | None]:
    """Worker body: check the image against the models' training data (an `InputCheckReport`), predict, then build
    the layer tuples (no Qt). Returns None when `cancel` was set."""
    from ..inference.input_qc import check_input
    from ..inference.nnunet import predict_members
    from ..uncertainty.ensemble import ALL_MEMBERS
    from ..uncertainty.layers import ensemble_layers
    from ..uncertainty.pipeline import accumulate

    members = resolve_members(source, paths)
    qc = check_input(image, [m.model_dir for m in members])
    yield InputCheckReport(0, len(members), "input checked against the training data", qc=qc)
    runs = predict_members(
        image, members, device=device, tta=tta, mirroring=mirroring, trust_checkpoint=trust_checkpoint
    )
    job = accumulate(runs, class_variance=False)
    try:
        while True:
            try:
                report = next(job)
            except StopIteration as stop:
                acc, grid, labels = stop.value
                break
            yield report
            if cancel is not None and cancel.is_set():
                return None
    finally:
        job.close()  # stops nnU-Net at its next tile when we leave early (cancel or error)
    groups = [g for g in acc.groups if g != ALL_MEMBERS] if per_group else []
    order = [ALL_MEMBERS, *groups]
    layers: list[LayerData] = []
    for group in order:  # the last one may reuse its sums as outputs
        layers += ensemble_layers(
            acc.result(group, consume=group == order[-1]),
            grid,
            which=MAPS,
            labels=labels,
            with_probabilities=group == ALL_MEMBERS,
        )  # for the Metrics dock's calibration
    qc_record = qc.to_dict()
    for _data, kwargs, _type in layers:
        kwargs["name"] = f"ensemble {kwargs['name']}"
        kwargs["metadata"] = {**kwargs.get("metadata", {}), INPUT_QC: qc_record}
    summary = f"{len(members)} member(s){', ' + str(len(groups)) + ' groups' if groups else ''}"
    return EnsembleResult(layers, summary, qc)


class EnsembleWidget(QWidget):
    """Choose members, device and uncertainty source; Run adds the ensemble's segmentation and maps as layers."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        import_in_gui_thread(*NATIVE_MODULES)
        self.warm_up = warm_up_in_background("napari_segunc.uncertainty.ensemble:warm_up")

        self.image_combo = layer_combo()
        self.source_combo = layer_combo()
        for key, text in _SOURCES.items():
            self.source_combo.addItem(text, key)
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("model folder(s), separated by ';' — or an ensemble file")
        self.browse_button = QPushButton("Browse…")
        self.device_combo = QComboBox()
        for d in ("auto", "cpu", "cuda", "mps"):
            self.device_combo.addItem(d, d)
        self.tta_check = QCheckBox("test-time flips as members (group 'tta')")
        self.mirror_check = QCheckBox("nnU-Net test-time mirroring (as the model allows)")
        self.mirror_check.setChecked(True)
        self.groups_check = QCheckBox("maps per group (e.g. per rater)")
        self.trust_check = QCheckBox("trust these checkpoints (unpickling can run code)")
        self.trust_check.setToolTip(
            "Needed only for a checkpoint that holds Python objects beyond tensors and plain values (some older\n"
            "nnU-Net trainers save such): loading it unpickles it, which can run code. Tick it only for\n"
            "checkpoints from a source you trust. Untick: such a file is refused, and nothing is run."
        )
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = status_label("Pick an image and an ensemble, then Run.", fixed_lines=3)
        self.qc_label: QLabel = status_label("")  # the input check's warnings; hidden while there are none
        self.qc_label.setStyleSheet("color: #f0a030;")
        self.qc_label.setVisible(False)
        self.job = DockJob(
            self,
            inputs=lambda: self.inputs,
            status=self.status,
            progress=self.progress,
            cancel_button=self.cancel_button,
            busy_message="The ensemble is still running; wait for it or press Cancel.",
            cancel_message="Cancelling after the current tile…",
        )

        form = QFormLayout()
        form.addRow("Image:", self.image_combo)
        form.addRow("Members:", self.source_combo)
        row = QHBoxLayout()
        row.addWidget(self.path_edit)
        row.addWidget(self.browse_button)
        form.addRow("", row)
        form.addRow("Device:", self.device_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for w in (self.tta_check, self.mirror_check, self.groups_check, self.trust_check):
            layout.addWidget(w)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.qc_label)
        layout.addStretch(1)

        self.source_combo.currentIndexChanged.connect(self._source_changed)
        self.browse_button.clicked.connect(self._browse)
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self._refresh_images()
        self._source_changed()

    # -------------------------------------------------------------------------------- state
    @property
    def inputs(self) -> list[QWidget]:
        return [
            self.image_combo,
            self.source_combo,
            self.path_edit,
            self.browse_button,
            self.device_combo,
            self.tta_check,
            self.mirror_check,
            self.groups_check,
            self.trust_check,
            self.run_button,
        ]

    @property
    def busy(self) -> bool:
        """A job runs, or its layers are still being added."""
        return self.job.busy

    @property
    def _worker(self):
        return self.job.worker

    @property
    def source(self) -> str:
        return self.source_combo.currentData()

    def set_source(self, source: str, paths: Sequence[str | Path] = ()) -> None:
        self.source_combo.setCurrentIndex(self.source_combo.findData(source))
        self.path_edit.setText(";".join(str(p) for p in paths))

    def _source_changed(self, _index: int = 0) -> None:
        needs_path = self.source != DEMO
        self.path_edit.setEnabled(needs_path)
        self.browse_button.setEnabled(needs_path)

    def _refresh_images(self, _event: Any = None) -> None:
        current = self.image_combo.currentText()
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        for layer in layers_with_role(self.viewer.layers, LayerRole.IMAGE):  # not the maps, nor compare copies
            if layer.metadata.get(GEOMETRY):
                self.image_combo.addItem(layer.name)
        index = self.image_combo.findText(current)
        self.image_combo.setCurrentIndex(max(index, 0))
        self.image_combo.blockSignals(False)

    def _image_volume(self) -> Volume:
        name = self.image_combo.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is None:
            raise InvalidInput("Open an image first (Open study, File ▸ Open with napari-segunc, or the phantom).")
        return volume_of(layer, require_geometry=True)

    def _browse(self) -> None:
        if self.source == FOLDERS:
            folder = QFileDialog.getExistingDirectory(self, "nnU-Net trained-model folder")
            if folder:
                paths = [p for p in self.path_edit.text().split(";") if p.strip()]
                self.path_edit.setText(";".join([*paths, folder]))
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Ensemble file", "", "Ensemble (*.json *.yaml *.yml)")
            if path:
                self.path_edit.setText(path)

    # -------------------------------------------------------------------------------- actions
    def run(self) -> None:
        """Start the ensemble on the chosen image in a worker; layers are added when it finishes."""
        if self.job.refuse_if_busy():
            return
        try:
            image = self._image_volume()
        except InvalidInput as exc:
            self._error(str(exc))
            return
        self._show_input_check(None)
        self.job.start(
            ensemble_job,
            image,
            self.source,
            self.path_edit.text().split(";"),
            device=self.device_combo.currentData(),
            tta="flips" if self.tta_check.isChecked() else None,
            mirroring=self.mirror_check.isChecked(),
            per_group=self.groups_check.isChecked(),
            trust_checkpoint=self.trust_check.isChecked(),
            cancel=self.job.cancel_event,
            starting="Starting the ensemble…",
            on_progress=self._progressed,
            on_returned=self._done,
            on_finished=self._source_changed,
        )  # the dock's own bar, no napari activity bar: that costs the GUI thread ~60 ms to show

    def cancel(self) -> None:
        """Stop after the current sliding-window tile; nothing is added."""
        self.job.cancel()

    # -------------------------------------------------------------------------------- results (GUI thread)
    def _progressed(self, report: Progress) -> None:
        if isinstance(report, InputCheckReport):
            self._show_input_check(report.qc)
            return
        text = f"member {min(report.step + 1, report.total)} of {report.total}: {report.message}"
        self.job.report(report, text if report.message else None)

    def _done(self, result: EnsembleResult | None) -> None:
        if result is None:
            self.job.show("Cancelled: nothing was added.")
            return
        self.job.add_layers(self.viewer, result.layers, then=lambda: self._all_added(result))

    def _show_input_check(self, qc: InputQC | None) -> None:
        """The input check's warnings in the dock's warning line and as one napari warning; None clears the line."""
        warnings = list(qc.warnings) if qc is not None else []
        self.qc_label.setText("\n".join(f"⚠ {w}" for w in warnings))
        self.qc_label.setVisible(bool(warnings))
        if warnings:
            show_warning("Input check: " + " ".join(warnings))

    def _all_added(self, result: EnsembleResult) -> None:
        self.progress.setValue(self.progress.maximum())
        msg = f"Ensemble done: {result.summary}; added {len(result.layers)} layers."
        if result.qc is not None and result.qc.warnings:
            msg += f" Input check: {len(result.qc.warnings)} warning(s), shown below."
        self.status.setText(msg)
        show_info(msg)

    def _error(self, message: str) -> None:
        self.job.error(message)
