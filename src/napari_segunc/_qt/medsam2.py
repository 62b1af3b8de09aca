"""The "MedSAM2" dock widget: organ boxes on Shapes layers, strategies A–D, run / rerun, accept into the annotation.

Each organ has a Shapes layer ``boxes: <organ>`` in the image's voxel grid; rectangles are drawn with napari's
rectangle tool on the current axial slice. The organ's slice range is set from the current slice, or taken from its
boxes. "Boxes from mask" fills every organ from a labels layer (strategy A or B). Run propagates the organs in a
worker (`napari_segunc.prompts.cascade.MedSAM2Session`: the encoder features and the unchanged organs are reused, so
a rerun after a box edit propagates only that organ) and shows the segmentation and its entropy. Accept copies the
result into the working annotation. Clicks (``clicks: <organ>`` Points layers, green positive, red negative) correct
an organ: each click reruns that organ alone from the clicked slice, from its kept SAM2 state, and the dock then
points at the organ's most uncertain slice left (G goes there). Keys: `_click_tools.KEYS_HELP`. Every box edit,
click and accept is one step of the viewer's undo history, and the annotation and the prompts are autosaved. The
checkpoint path is remembered.

One responsibility, the dock's widgets, runs and accept; the worker body is in `_medsam2_job`, the box and click
layers in `_organ_boxes`, the click corrections, keys, guidance and ensemble comparison in `_medsam2_review`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Shapes
from qtpy.QtCore import QEvent, QTimer
from qtpy.QtGui import QColor
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
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..errors import InvalidInput
from ..inference.medsam2 import CHECKPOINT_ENV
from ..progress import Progress
from ..roles import GEOMETRY
from ..settings import get_setting, set_setting
from ._click_tools import KEYS_HELP, ClickKeys
from ._jobs import DockJob
from ._layers import LayerRole, add_layer, layers_with_role
from ._medsam2_job import medsam2_job
from ._medsam2_review import ReviewActions
from ._organ_boxes import BoxEdits, OrganBoxes, box_z_range
from ._session import ReviewState, image_volume, review_for
from ._widgets import fit_columns, layer_combo
from ._worker import import_in_gui_thread, status_label

if TYPE_CHECKING:
    import napari

__all__ = ["MedSAM2Widget"]

#: Imported when the widget opens, on the GUI thread: a first import inside the worker holds Python's import lock
#: while napari's GUI thread may need it (a 0.2 s stall measured), and torch must see triton kept from Mesa's LLVM.
NATIVE_MODULES = (
    "torch",
    "hydra.utils",
    "napari_segunc.inference._sam2_predictor",
    "sam2.modeling.backbones.hieradet",
    "sam2.modeling.backbones.image_encoder",
    "sam2.modeling.memory_attention",
    "sam2.modeling.memory_encoder",
    "sam2.modeling.position_encoding",
    "sam2.modeling.sam.transformer",
)


class MedSAM2Widget(ReviewActions, QWidget):
    """Draw/edit organ boxes, run MedSAM2 (strategies A–D), accept the result into the working annotation."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.image_size: int | None = None  # model input size override (tests use small random models)
        self.result = None
        self._holder: dict = {}
        self.boxes = OrganBoxes(self.viewer, lambda: self._on_edit())
        self.next_place: tuple[int, int, int] | None = None  # the most uncertain place left (G goes there)
        self._rerun_pending = False
        self.edits = BoxEdits(self.boxes, self.review, self.prompts, self._grid_kwargs, lambda: self._refresh_table())
        import_in_gui_thread(*NATIVE_MODULES)

        self.image_combo, self.mask_combo = layer_combo(), layer_combo()
        self._mask_picked = False
        self.mask_combo.activated.connect(lambda _i: setattr(self, "_mask_picked", True))
        self.checkpoint_edit = QLineEdit(get_setting("medsam2_checkpoint", "") or "")
        self.checkpoint_edit.setPlaceholderText("MedSAM2_latest.pt (or $SEGUNC_MEDSAM2_CHECKPOINT)")
        self.browse_button = QPushButton("Browse…")
        self.config_combo, self.device_combo, self.strategy_combo = QComboBox(), QComboBox(), QComboBox()
        from ..inference.medsam2 import MODEL_CONFIGS

        self.config_combo.addItems(list(MODEL_CONFIGS))
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.strategy_combo.addItems(["A", "B", "C", "D"])
        self.strategy_combo.setCurrentText("B")
        self.organ_table = QTableWidget(0, 4)
        self.organ_table.setHorizontalHeaderLabels(["organ", "label", "slices", "boxes"])
        fit_columns(self.organ_table, stretch=0)
        self.organ_name, self.organ_label = QLineEdit(), QLineEdit()
        self.organ_name.setPlaceholderText("organ name")
        self.organ_label.setPlaceholderText("label")
        self.add_button = QPushButton("Add organ")
        self.zmin_button, self.zmax_button = QPushButton("z min = this slice"), QPushButton("z max = this slice")
        self.draw_button = QPushButton("Draw a box")
        self.from_mask_button = QPushButton("Boxes from mask")
        self.mask_slice_button = QPushButton("Start from mask slice")
        self.mask_slice_button.setToolTip(
            "Give the selected organ this slice of the mask as a SAM2 mask prompt (then correct it with clicks)"
        )
        self.atlas_button = QPushButton("Boxes from atlas…")
        self.run_button, self.cancel_button = QPushButton("Run changed"), QPushButton("Cancel")
        self.run_all_button = QPushButton("Run all")
        self.run_button.setToolTip("Propagate the organs whose boxes changed since the last run (all, the first time)")
        self.accept_button = QPushButton("Accept into annotation")
        self.undo_button, self.redo_button = QPushButton("Undo"), QPushButton("Redo")
        self.click_button = QPushButton("Click (P)")
        self.click_button.setToolTip("Place clicks on the selected organ: on the organ (green) or off it (red)")
        self.polarity_button = QPushButton()
        self.polarity_button.setToolTip("The next click says: the organ is here (+) or it is not (−); key T")
        self.rerun_check = QCheckBox("Rerun on each click")
        self.rerun_check.setChecked(True)
        self.keys_label = QLabel(KEYS_HELP)
        self.keys_label.setWordWrap(True)
        self.keys_label.setStyleSheet("color: #a0a0a0;")
        self.progress = QProgressBar()
        self.status = status_label("Choose an image and a checkpoint, add boxes, then Run.", fixed_lines=3)
        self.job = DockJob(
            self,
            inputs=lambda: self.inputs,
            status=self.status,
            progress=self.progress,
            cancel_button=self.cancel_button,
            busy_message="MedSAM2 is still running; wait for it or press Cancel.",
            cancel_message="Cancelling after the current slice…",
        )

        form = QFormLayout()
        form.addRow("Image:", self.image_combo)
        row = QHBoxLayout()
        row.addWidget(self.checkpoint_edit)
        row.addWidget(self.browse_button)
        form.addRow("Checkpoint:", row)
        form.addRow("Model:", self.config_combo)
        form.addRow("Device:", self.device_combo)
        form.addRow("Strategy:", self.strategy_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.organ_table)
        for widgets in (
            (self.organ_name, self.organ_label, self.add_button),
            (self.zmin_button, self.zmax_button, self.draw_button),
            (QLabel("mask:"), self.mask_combo),
            (self.from_mask_button, self.mask_slice_button, self.atlas_button),
            (self.click_button, self.polarity_button, self.rerun_check),
            (self.run_all_button, self.run_button, self.cancel_button),
            (self.accept_button, self.undo_button, self.redo_button),
        ):
            row = QHBoxLayout()
            for w in widgets:
                row.addWidget(w)
            layout.addLayout(row)
        layout.addWidget(self.keys_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.keys = ClickKeys(
            self.viewer,
            {
                "B": self._draw,
                "P": self.start_clicking,
                "T": self.toggle_polarity,
                "M": self.next_organ,
                "G": self.go_most_uncertain,
                "Enter": lambda: self.accept(),
                "Control-Z": lambda: self.undo(),
                "Control-Shift-Z": lambda: self.redo(),
            },
        )
        self.keys.bind()
        self._show_polarity()

        self.browse_button.clicked.connect(self._browse)
        self.add_button.clicked.connect(lambda: self._add_typed_organ())
        self.zmin_button.clicked.connect(lambda: self.set_z_range(low=self._current_z()))
        self.zmax_button.clicked.connect(lambda: self.set_z_range(high=self._current_z()))
        self.draw_button.clicked.connect(self._draw)
        self.from_mask_button.clicked.connect(lambda: self.boxes_from_mask())
        self.atlas_button.clicked.connect(lambda: self.boxes_from_atlas())
        self.run_button.clicked.connect(lambda: self.run())
        self.run_all_button.clicked.connect(lambda: self.run(run_all=True))
        self.cancel_button.clicked.connect(self.cancel)
        self.accept_button.clicked.connect(lambda: self.accept())
        self.undo_button.clicked.connect(lambda: self.undo())
        self.redo_button.clicked.connect(lambda: self.redo())
        self.click_button.clicked.connect(self.start_clicking)
        self.mask_slice_button.clicked.connect(lambda: self.start_from_mask_slice())
        self.polarity_button.clicked.connect(self.toggle_polarity)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------------------------------ layers and state
    @property
    def inputs(self) -> list[QWidget]:
        return [
            self.image_combo,
            self.checkpoint_edit,
            self.browse_button,
            self.config_combo,
            self.device_combo,
            self.strategy_combo,
            self.run_button,
            self.run_all_button,
            self.from_mask_button,
            self.mask_slice_button,
            self.atlas_button,
            self.accept_button,
            self.add_button,
        ]

    @property
    def busy(self) -> bool:
        return self.job.busy

    def _refresh_layers(self, _event: Any = None) -> None:
        layers = self.viewer.layers
        images = [x.name for x in layers_with_role(layers, LayerRole.IMAGE) if x.metadata.get(GEOMETRY)]
        # masks to take boxes from: a model's segmentation first (the ensemble's before MedSAM2's own), then raters
        roles = (
            LayerRole.SEGMENTATION,
            LayerRole.RATER,
            LayerRole.ANNOTATION,
            LayerRole.LABELS,
            LayerRole.RATER_ANALYSIS,
        )
        masks = [x.name for role in roles for x in layers_with_role(layers, role) if x.metadata.get(GEOMETRY)]
        masks.sort(key=lambda n: n.startswith("medsam2"))
        for combo, names in ((self.image_combo, images), (self.mask_combo, masks)):
            # the mask follows the newest model output until the user picks one
            current = combo.currentText() if combo is self.image_combo or self._mask_picked else ""
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            combo.setCurrentIndex(max(combo.findText(current), 0))
            combo.blockSignals(False)
        self._refresh_table()
        if self.keys.bound:
            for organ in self.organ_layers():
                self.keys.bind_layer(organ)
                clicks = self.boxes.clicks_layer(organ.metadata["segunc_organ"])
                if clicks is not None:
                    self.keys.bind_layer(clicks)

    def image_layer(self) -> Image:
        name = self.image_combo.currentText()
        if name not in self.viewer.layers:
            raise InvalidInput("Open an image first (Open study, File ▸ Open with napari-segunc, or the phantom).")
        return self.viewer.layers[name]

    def review(self) -> ReviewState:
        return review_for(self.viewer, self.image_layer())

    def organ_layers(self) -> list[Shapes]:
        return self.boxes.layers()

    def _grid_kwargs(self) -> dict:
        return image_volume(self.image_layer()).napari_kwargs()

    def _selected_organ(self) -> Shapes:
        model = self.organ_table.selectionModel()
        rows = model.selectedRows() if model is not None else []
        layers = self.organ_layers()
        if rows:
            return layers[rows[0].row()]
        active = self.viewer.layers.selection.active
        organ = active.metadata.get("segunc_organ") if active is not None else None
        match = next((la for la in layers if la.metadata.get("segunc_organ") == organ), None) if organ else None
        if match is not None:
            return match
        if len(layers) == 1:
            return layers[0]
        raise InvalidInput("Select an organ in the table first.")

    def _current_z(self) -> int:
        return int(self.viewer.dims.current_step[0])

    # ------------------------------------------------------------------------------------------ organs and boxes
    def add_organ(self, name: str, label: int, boxes=(), z_range: tuple[int, int] | None = None) -> Shapes:
        """Add (or reset) an organ's box layer, as one undoable step; `boxes` are `napari_segunc.prompts.Box`."""
        self.edits.record(
            f"add organ {name}", lambda: self.boxes.add(name, label, boxes, z_range, grid_kwargs=self._grid_kwargs())
        )
        return self.boxes.layer(name)

    def _add_typed_organ(self) -> None:
        try:
            name, label = self.organ_name.text().strip(), int(self.organ_label.text())
            if not name or label < 1:
                raise ValueError
            self.add_organ(name, label)
        except ValueError:
            self._error("Give the organ a name and a label value ≥ 1.")
        except InvalidInput as exc:
            self._error(str(exc))

    def set_z_range(self, low: int | None = None, high: int | None = None) -> None:
        """Set the selected organ's slice range bound(s) (default: from its boxes)."""
        try:
            layer = self._selected_organ()
        except InvalidInput as exc:
            self._error(str(exc))
            return
        old = layer.metadata.get("segunc_z_range") or box_z_range(layer) or (low or high, low or high)
        new = (old[0] if low is None else low, old[1] if high is None else high)
        self.edits.record(
            f"slice range of {layer.metadata['segunc_organ']}",
            lambda: layer.metadata.update(segunc_z_range=(min(new), max(new))),
        )

    def _draw(self) -> None:
        try:
            layer = self._selected_organ()
        except InvalidInput as exc:
            self._error(str(exc))
            return
        self.viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"
        self.status.setText(f"Drag a rectangle around the {layer.metadata['segunc_organ']} on this slice.")

    def boxes_from_mask(
        self, layer_name: str | None = None, labels: dict[str, int] | None = None, strategy: str | None = None
    ) -> None:
        """Fill every organ's boxes from a labels layer (strategy A or B; C/D take B's boxes)."""
        from ..organs import layer_labels
        from ..prompts.cascade import first_pass_prompts

        name = layer_name or self.mask_combo.currentText()
        if name not in self.viewer.layers:
            self._error("Choose a labels layer (a segmentation or a rater) to take the boxes from.")
            return
        layer = self.viewer.layers[name]
        data = np.asarray(layer.data)
        if labels is None:
            present = {int(v) for v in np.unique(data) if v}
            image = (
                self.viewer.layers[self.image_combo.currentText()]
                if self.image_combo.currentText() in self.viewer.layers
                else None
            )
            named = {**layer_labels(image.metadata if image is not None else None), **layer_labels(layer.metadata)}
            labels = {k: v for k, v in named.items() if v in present}
            labels.update({f"label_{v}": v for v in sorted(present - set(labels.values()))})
        try:
            prompts = first_pass_prompts(data, labels, strategy or self.strategy_combo.currentText())
            self.edits.record(f"boxes from {name}", lambda: self.boxes.fill(prompts, grid_kwargs=self._grid_kwargs()))
        except InvalidInput as exc:
            self._error(str(exc))
            return
        self.status.setText(f"Boxes for {len(prompts.organs)} organ(s) from '{name}'.")

    def boxes_from_atlas(self, atlases=None, labels: dict[str, int] | None = None, *, thresholds=None) -> None:
        """Register atlases (pairs of image, mask — paths or volumes) onto the image in a worker, show the per-organ
        score maps and fill the organ boxes (one undo step). Without arguments, dialogs ask for the files."""
        from ._atlas_action import start_atlas

        start_atlas(self, atlases, labels, thresholds)

    def prompts(self):
        """The current boxes as a `PromptSet` (canonical voxel grid)."""
        return self.boxes.prompts(tuple(self.image_layer().data.shape))

    # ------------------------------------------------------------------------------------------ undo
    def undo(self) -> str | None:
        done = self.review().history.undo()
        self.status.setText(f"Undone: {done}." if done else "Nothing to undo.")
        return done

    def redo(self) -> str | None:
        done = self.review().history.redo()
        self.status.setText(f"Redone: {done}." if done else "Nothing to redo.")
        return done

    def _refresh_table(self) -> None:
        layers = self.organ_layers()
        self.organ_table.setRowCount(len(layers))
        for i, layer in enumerate(layers):
            z = layer.metadata.get("segunc_z_range") or box_z_range(layer)
            cells = [
                layer.metadata.get("segunc_organ", layer.name),
                str(layer.metadata.get("segunc_label", "")),
                f"{z[0]}–{z[1]}" if z else "",
                str(len(layer.data)),
            ]
            for j, text in enumerate(cells):
                self.organ_table.setItem(i, j, QTableWidgetItem(text))
            # the organ's colour, as its boxes are drawn ("#rrggbbaa" → "#rrggbb": Qt reads 8 digits as #aarrggbb)
            self.organ_table.item(i, 0).setBackground(QColor(str(layer.current_edge_color)[:7]))

    # ------------------------------------------------------------------------------------------ run and accept
    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "MedSAM2 / SAM2.1 checkpoint", "", "Checkpoint (*.pt *.pth)")
        if path:
            self.checkpoint_edit.setText(path)

    def run(self, *, run_all: bool = False) -> None:
        """Run MedSAM2 on the current boxes in a worker: only the organs whose boxes changed are propagated again,
        unless `run_all` (the image features are reused either way)."""
        if self.job.refuse_if_busy():
            return
        try:
            layer = self.image_layer()
            image = image_volume(layer)
            prompts = self.prompts()
            strategy = self.strategy_combo.currentText()
        except InvalidInput as exc:
            self._error(str(exc))
            return
        self.boxes.commit_round()  # clicks placed from now on are the next correction
        checkpoint = self.checkpoint_edit.text().strip() or None
        if checkpoint is None and not os.environ.get(CHECKPOINT_ENV):
            self._error(
                "Choose the MedSAM2 checkpoint first: press Browse… next to the checkpoint box and pick the .pt "
                "file (e.g. MedSAM2_latest.pt from the MedSAM2 authors; nothing is downloaded)."
            )
            return
        if checkpoint:
            set_setting("medsam2_checkpoint", checkpoint)
        self.job.start(
            medsam2_job,
            self._holder,
            image,
            prompts,
            strategy,
            checkpoint=checkpoint,
            config=self.config_combo.currentText(),
            device=self.device_combo.currentText(),
            image_size=self.image_size,
            window=tuple(float(v) for v in layer.contrast_limits),
            cancel=self.job.cancel_event,
            run_all=run_all,
            starting="MedSAM2: starting…",
            on_progress=self._progressed,
            on_returned=self._done,
        )

    def cancel(self) -> None:
        self.job.cancel()

    def _progressed(self, report: Progress) -> None:
        self.job.report(report)

    def _done(self, result) -> None:
        if self._rerun_pending:  # clicks placed while it ran: run again for them
            self._rerun_pending = False
            QTimer.singleShot(0, lambda: self.run())
        if result is None:
            self.status.setText("Cancelled: nothing changed.")
            return
        self.result = result
        QTimer.singleShot(0, self._show_result)

    def _show_result(self) -> None:
        from ..uncertainty.layers import map_layer, segmentation_layer

        grid = image_volume(self.image_layer())
        fused = self.result.final.fused
        names = {o.name: o.label for o in self.result.final.prompts.organs}
        for data, kwargs, kind in (
            segmentation_layer(fused.segmentation, grid, name="medsam2 segmentation", labels=names),
            map_layer("entropy", fused.entropy, grid, n_classes=len(fused.labels), normalized=False, prefix="medsam2 "),
        ):
            if kwargs["name"] in self.viewer.layers:  # a rerun: new data in the same layers (no new canvas visuals)
                self.viewer.layers[kwargs["name"]].data = data
            else:
                add_layer(self.viewer, (data, kwargs, kind), image=self.image_layer())
        propagated = [o for p in self.result.passes for o in p.recomputed]
        guide = self._guide(propagated)
        self._compare_with_ensemble(grid)
        self.status.setText(
            f"MedSAM2 done ({self.result.strategy.value}): propagated "
            f"{', '.join(propagated) or 'nothing new'}; Accept copies it into the annotation." + guide
        )

    def accept(self, organs: list[str] | None = None) -> None:
        """Copy the last result's organs (all, or `organs`) into the working annotation: one undo step."""
        if self.result is None:
            self._error("Run MedSAM2 first: there is no result to accept.")
            return
        state = self.review()
        seg = self.result.final.fused.segmentation
        chosen = [o for o in self.result.final.prompts.organs if organs is None or o.name in organs]
        state.prompts = self.edits.current_prompts()
        found = [o for o in chosen if (seg == o.label).any()]
        if not found:
            self._error(f"MedSAM2 found no voxels of {', '.join(o.name for o in chosen)}: nothing to accept.")
            return
        state.annotation.set_organs(
            {o.label: seg == o.label for o in found}, description=f"accept MedSAM2 {', '.join(o.name for o in found)}"
        )
        missing = [o.name for o in chosen if o not in found]
        self.status.setText(
            f"Accepted {', '.join(o.name for o in found)} into '{state.layer.name}' (Undo reverts)."
            + (f" No voxels of {', '.join(missing)}." if missing else "")
        )

    def _error(self, message: str) -> None:
        self.job.error(message)

    # ------------------------------------------------------------------------------------------ lifetime
    def teardown(self) -> None:
        """Release the keys (restoring what they did before); runs when the dock is closed or taken out."""
        self.keys.unbind()

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.ParentChange and hasattr(self, "keys"):
            if self.parent() is None:
                self.teardown()
            elif not self.keys.bound:
                self.keys.bind()
                self._refresh_layers()
        return super().event(event)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.teardown()
        super().closeEvent(event)
