"""The "Uncertainty & raters" dock widget: show the uncertainty maps, analyse the raters, review uncertain regions.

- Maps (`_maps.MapsBox`): every 3D float image layer that is not an intensity image (the Ensemble widget's "ensemble
  predictive entropy"…, MedSAM2's maps, the raters' vote entropy): which to show, opacity, nats or normalised
  (÷ ln C), and a threshold in the queue map's unit (its lower contrast limit; it also drives the queue).
- Raters: tick 2+ labels layers; "Analyse raters" runs `analyze_raters` (+ STAPLE) in a worker and adds the vote
  entropy, consensus, dissensus, majority vote and STAPLE layers (soft labels per structure on request), and "model
  vs raters" when a segmentation that is not one of the raters' is chosen. One rater gives the core's message.
- Review queue: "Find regions" runs `find_regions` on the queue map above the threshold (or above its top quantile)
  in a worker, fills the table and outlines the selected voxels ("review mask"). A row click, `jump_to`, the
  Previous / Next buttons and the keys N / Shift-N (bound on the viewer while the widget lives; P is napari's paint
  key for labels layers) move the view to the region: its slice of most uncertainty, centred, zoomed to its box.
- Compare: the ticked layers side by side in napari's grid mode, each over the image, one linked camera (`_view`).

Every layer used is checked against the chosen image's grid (`check_same_grid`): a mismatch is refused with a
message and nothing is added or resampled. Results are added one layer per turn of the event loop.

One responsibility, the dock's widgets and slots; kept in one module past 400 lines (the maps box is `_maps`, the
worker bodies `_uncertainty_jobs`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from napari.layers import Labels, Layer
from napari.utils.notifications import show_info
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..errors import GeometryMismatch, InvalidInput, SegUncError
from ..io._npe2 import LayerData
from ..uncertainty.regions import Region
from ..volume import Volume, check_same_grid
from ._jobs import DockJob
from ._layers import LABEL_ROLES, LayerRole, has_layer, layer_id, layers_with_role, role_of, same_layer, volume_of
from ._maps import MapsBox
from ._uncertainty_jobs import (
    DERIVED,
    MapUnit,
    QueueMode,
    QueueResult,
    RaterResult,
    queue_job,
    rater_job,
)
from ._view import BoundKeys, CompareView, focus_region
from ._widgets import CheckList, fill, fit_columns, form, hbox, layer_combo
from ._worker import status_label

if TYPE_CHECKING:
    import napari

__all__ = ["MapUnit", "QueueMode", "UncertaintyWidget"]


NONE = "(none)"
NEXT_KEY, PREVIOUS_KEY = "N", "Shift-N"
QUEUE_COLUMNS = ("#", "structure", "voxels", "ml", "z", "Σ map")
QUEUE_TIPS = (
    "rank: 1 is reviewed first",
    "the structure of the segmentation the region lies in",
    "voxels in the region",
    "volume in millilitres",
    "the axial slice with the most uncertainty",
    "summed uncertainty: the map's values added over the region (what ranks it)",
)


def _wrapped(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    return label


class UncertaintyWidget(QWidget):
    """Uncertainty maps, rater analysis, review queue and compare view for one viewer.

    Tests and scripts call `analyse_raters`, `find_regions`, `jump_to`, `next_region`, `previous_region`,
    `set_compare` and, on ``maps``, `MapsBox.show_maps`, `set_opacity`, `set_unit`, `set_threshold`; they read
    `regions`, ``status`` and `busy`.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.regions: list[Region] = []
        self.compare = CompareView(napari_viewer)
        self._queue_layer: Layer | None = None  # the map the table's regions were found on
        self._queue_image = ""  # id of the image they belong to
        self._seg_picked = False  # the user chose a segmentation: keep it

        self.image_combo = layer_combo()
        self.maps = MapsBox(self)
        self.rater_list = CheckList()
        self.seg_combo = layer_combo()
        self.staple_check = QCheckBox("STAPLE")
        self.staple_check.setChecked(True)
        self.soft_check = QCheckBox("soft labels per structure")
        self.raters_button = QPushButton("Analyse raters")
        self.mode_combo = QComboBox()
        for mode in QueueMode:
            self.mode_combo.addItem(mode.value, mode)
        # a threshold means something only once the reader has looked at the map: start with the top 1 %
        self.mode_combo.setCurrentIndex(self.mode_combo.findData(QueueMode.QUANTILE))
        self.quantile_spin = QDoubleSpinBox()
        self.quantile_spin.setDecimals(4)
        self.quantile_spin.setRange(0.5, 0.9999)
        self.quantile_spin.setSingleStep(0.001)
        self.quantile_spin.setValue(0.99)
        self.min_voxels_spin = QSpinBox()
        self.min_voxels_spin.setRange(1, 1_000_000)
        self.min_voxels_spin.setValue(10)
        self.find_button = QPushButton("Find regions")
        self.table = QTableWidget(0, len(QUEUE_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(QUEUE_COLUMNS))
        fit_columns(self.table, stretch=1, tips=QUEUE_TIPS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.previous_button = QPushButton("◀ Previous (Shift-N)")
        self.next_button = QPushButton("Next (N) ▶")
        self.compare_list = CheckList()
        self.compare_button = QPushButton("Compare side by side")
        self.compare_button.setCheckable(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.status = status_label("Maps come from the Ensemble or MedSAM2 widgets, raters from Open study.")
        self.job = DockJob(self, inputs=lambda: self.inputs, status=self.status, progress=self.progress)
        self._layout()

        self.seg_combo.activated.connect(self._seg_chosen)
        self.image_combo.currentIndexChanged.connect(lambda _i: self._forget_stale_queue())
        self.raters_button.clicked.connect(lambda: self.analyse_raters())
        self.find_button.clicked.connect(lambda: self.find_regions())
        self.table.currentCellChanged.connect(lambda row, *_: self.jump_to(row) if row >= 0 else None)
        self.table.cellClicked.connect(lambda row, _col: self.jump_to(row))  # again, after panning away
        self.next_button.clicked.connect(lambda: self.next_region())
        self.previous_button.clicked.connect(lambda: self.previous_region())
        self.compare_button.toggled.connect(self.set_compare)
        self._keys = BoundKeys(napari_viewer, {NEXT_KEY: self._key_next, PREVIOUS_KEY: self._key_previous})
        self.arm()

    def _layout(self) -> None:
        raters = form(
            ("Raters:", self.rater_list),
            ("Segmentation:", self.seg_combo),
            hbox(self.staple_check, self.soft_check),
            self.raters_button,
        )
        queue = form(
            ("Select:", self.mode_combo),
            ("Quantile:", self.quantile_spin),
            ("Min. voxels:", self.min_voxels_spin),
            self.find_button,
            self.table,
            hbox(self.previous_button, self.next_button),
        )
        compare = form(
            _wrapped("Each ticked layer in its own cell over the image:"), self.compare_list, self.compare_button
        )
        for widget, height in ((self.rater_list, 110), (self.compare_list, 110), (self.maps.map_list, 90)):
            widget.setMaximumHeight(height)
        self.table.setMinimumHeight(160)
        content = QWidget()
        layout = QVBoxLayout(content)
        layout.addLayout(form(("Image:", self.image_combo)))
        layout.addWidget(self.maps)
        for title, inner in (("Raters", raters), ("Review queue", queue), ("Compare", compare)):
            box = QGroupBox(title)
            box.setLayout(inner)
            layout.addWidget(box)
        scroll = QScrollArea()  # the dock stays as short as the window allows
        scroll.setWidgetResizable(True)
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        outer.addWidget(self.progress)
        outer.addWidget(self.status)

    # -------------------------------------------------------------------------------- layers of the viewer
    @property
    def inputs(self) -> list[QWidget]:
        """Widgets disabled while a worker runs."""
        return [
            self.image_combo,
            *self.maps.inputs,
            self.rater_list,
            self.seg_combo,
            self.raters_button,
            self.mode_combo,
            self.quantile_spin,
            self.min_voxels_spin,
            self.find_button,
        ]

    @property
    def busy(self) -> bool:
        """A job runs, or its layers are still being added."""
        return self.job.busy

    def layer(self, name: str) -> Layer | None:
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    @property
    def image_layer(self) -> Layer | None:
        """The image whose grid every layer is checked against."""
        return self.layer(self.image_combo.currentText())

    @property
    def segmentation_layer(self) -> Labels | None:
        """Structure names of the queue, C of the maps, and "model vs raters" (unless it is a rater)."""
        return self.layer(self.seg_combo.currentText())

    def _seg_chosen(self, _index: int) -> None:
        self._seg_picked = True
        self.maps.sync()

    def _refresh(self, event: Any = None) -> None:
        value = getattr(event, "value", None)
        if value is not None and role_of(value) is LayerRole.COMPARE_COPY:
            return
        labels = [x.name for x in layers_with_role(self.viewer.layers, *LABEL_ROLES)]
        maps = [x.name for x in layers_with_role(self.viewer.layers, LayerRole.MAP)]
        fill(
            self.image_combo,
            [x.name for x in layers_with_role(self.viewer.layers, LayerRole.IMAGE)],
            self.image_combo.currentText(),
        )
        seg = self.seg_combo.currentText()
        if not self._seg_picked or (seg != NONE and seg not in labels):
            roles = {x.name: role_of(x) for x in self.viewer.layers}
            auto = [n for n in labels if roles.get(n) is LayerRole.SEGMENTATION]  # the ensemble's output first
            auto += [n for n in labels if n == "raters: majority vote"]
            seg = (auto + [NONE])[0]
        fill(self.seg_combo, [NONE, *labels], seg)
        raters = {x.name for x in layers_with_role(self.viewer.layers, LayerRole.RATER)}  # loaded as raters
        self.rater_list.set_names(labels, lambda n: n in raters)
        self.compare_list.set_names(labels + maps, lambda n: n in raters)
        self.maps.refresh()
        self._forget_stale_queue()

    def _grid(self) -> Volume:
        image = self.image_layer
        if image is None:
            raise InvalidInput("Open an image first (Open study, or the phantom): layers are checked against its grid.")
        return volume_of(image)

    def _checked(self, layer: Layer, grid: Volume) -> Volume:
        volume = volume_of(layer)
        try:
            check_same_grid(grid, volume)
        except GeometryMismatch as exc:
            msg = f"Layer '{layer.name}' is not on the image's grid; nothing was added. {exc}"
            raise GeometryMismatch(msg) from None
        return volume

    # -------------------------------------------------------------------------------- raters
    def analyse_raters(self, names: Sequence[str] | None = None) -> None:
        """Analyse the ticked rater layers (or `names`) in a worker; add the rater layers when it finishes."""
        if self.refuse_if_busy():
            return
        try:
            grid = self._grid()
            layers = [self.viewer.layers[n] for n in (self.rater_list.checked() if names is None else names)]
            raters = [self._checked(layer, grid) for layer in layers]
            seg = self.segmentation_layer
            model = seg is not None and not any(same_layer(seg, x) for x in layers) and not seg.metadata.get(DERIVED)
            segmentation = self._checked(seg, grid) if model else None
        except (SegUncError, KeyError) as exc:
            self._error(str(exc))
            return
        by_value = {}
        for layer in [*layers, seg] if seg is not None else layers:
            by_value.update({int(v): str(k) for k, v in (layer.metadata.get("segunc_labels") or {}).items()})
        self.start(
            rater_job,
            raters,
            grid,
            labels={k: v for v, k in by_value.items()} or None,
            segmentation=segmentation,
            staple=self.staple_check.isChecked(),
            soft_labels=self.soft_check.isChecked(),
            on_returned=self._raters_done,
            what=f"Analysing {len(raters)} rater(s)",
        )

    def _raters_done(self, result: RaterResult) -> None:
        self._add_layers(result.layers, f"Raters: {result.summary}; added {len(result.layers)} layers.")

    # -------------------------------------------------------------------------------- review queue
    def find_regions(self) -> None:
        """Find the regions of the queue map above the threshold (or top quantile) in a worker; fill the table."""
        if self.refuse_if_busy():
            return
        layer, seg = self.maps.map_layer, self.segmentation_layer
        try:
            if layer is None:
                raise InvalidInput("No uncertainty map yet: run the Ensemble widget, or Analyse raters (vote entropy).")
            grid = self._grid()
            volume = self._checked(layer, grid)
            segmentation = self._checked(seg, grid).data if seg is not None else None
        except SegUncError as exc:
            self._error(str(exc))
            return
        labels = (seg.metadata.get("segunc_labels") or None) if seg is not None else None
        self.start(
            queue_job,
            volume,
            mode=self.mode_combo.currentData(),
            threshold=self.maps.threshold,
            quantile=self.quantile_spin.value(),
            min_voxels=self.min_voxels_spin.value(),
            segmentation=segmentation,
            labels=labels,
            what=f"Finding regions of '{layer.name}'",
            on_returned=lambda result: self._queue_done(layer, result),
        )

    def _forget_stale_queue(self) -> None:
        """Empty the queue when its image is no longer the chosen one or its map was closed (its regions would send
        the view to another image's places)."""
        if not self.regions:
            return
        image = self.image_layer
        if (
            image is not None
            and layer_id(image) == self._queue_image
            and has_layer(self.viewer.layers, self._queue_layer)
        ):
            return
        self.regions, self._queue_layer, self._queue_image = [], None, ""
        self.table.setRowCount(0)
        self.status.setText("The review queue belonged to another image (or its map was closed): press Find regions.")

    def _queue_done(self, layer: Layer, result: QueueResult) -> None:
        self.regions, self._queue_layer = result.regions, layer
        self._queue_image = layer_id(self.image_layer) if self.image_layer is not None else ""
        self.table.blockSignals(True)
        self.table.clearSelection()
        self.table.setRowCount(len(self.regions))
        for row, r in enumerate(self.regions):
            values = (r.rank, r.structure or "—", r.n_voxels, f"{r.volume_ml:.2f}", r.peak_slice, f"{r.total:.4g}")
            for col, value in enumerate(values):
                self.table.setItem(row, col, QTableWidgetItem(str(value)))
        self.table.blockSignals(False)
        unit = self.maps.unit_of(layer)
        above = f"{result.threshold:.4g}" + (f" {unit.value}" if unit else "")
        msg = f"{len(self.regions)} region(s) of '{layer.name}' above {above}."
        self._add_layers(result.layers, msg + (" Click a row, or press N / Shift-N." if self.regions else ""))

    @property
    def current_row(self) -> int:
        return self.table.currentRow()

    def jump_to(self, row: int) -> None:
        """Select row `row` of the queue and move the view to its region (slice, centre, zoom)."""
        if not self.regions:
            self.status.setText("The review queue is empty: press Find regions first.")
            return
        row = min(max(int(row), 0), len(self.regions) - 1)
        self.table.blockSignals(True)
        self.table.setCurrentCell(row, 0)
        self.table.selectRow(row)
        self.table.blockSignals(False)
        layer = self._queue_layer if has_layer(self.viewer.layers, self._queue_layer) else self.image_layer
        r = self.regions[row]
        if layer is not None:
            focus_region(self.viewer, layer, r)
        self.status.setText(
            f"Region {r.rank} of {len(self.regions)}: {r.structure or 'no structure'}, "
            f"{r.n_voxels} voxels ({r.volume_ml:.2f} ml), slice {r.peak_slice}."
        )

    def next_region(self) -> None:
        self.jump_to(self.current_row + 1 if self.current_row >= 0 else 0)

    def previous_region(self) -> None:
        self.jump_to(self.current_row - 1)

    def _key_next(self, _viewer: Any) -> None:
        self.next_region()

    def _key_previous(self, _viewer: Any) -> None:
        self.previous_region()

    # -------------------------------------------------------------------------------- compare view
    def set_compare(self, on: bool = True, names: Sequence[str] | None = None) -> None:
        """Show the ticked layers (or `names`) side by side over the image in grid mode; ``on=False`` goes back."""
        self.compare_button.blockSignals(True)
        self.compare_button.setChecked(bool(on))
        self.compare_button.blockSignals(False)
        if not on:
            self.compare.leave()
            self.status.setText("Compare view closed: layer order and visibility restored.")
            return
        try:
            grid = self._grid()
            layers = [self.viewer.layers[n] for n in (self.compare_list.checked() if names is None else names)]
            for layer in layers:
                self._checked(layer, grid)
            cells = self.compare.enter(self.image_layer, layers)
        except (SegUncError, KeyError) as exc:
            self.compare_button.blockSignals(True)
            self.compare_button.setChecked(False)
            self.compare_button.blockSignals(False)
            self._error(str(exc))
            return
        self.status.setText(f"{cells} layers side by side over '{self.image_layer.name}', one linked camera.")

    # -------------------------------------------------------------------------------- plumbing
    def _add_layers(self, layers: list[LayerData], message: str) -> None:
        """Replace this widget's earlier results of the same kind; add the new layers one per event-loop turn."""
        kinds = {kwargs["metadata"].get(DERIVED) for _data, kwargs, _type in layers}
        for layer in [x for x in self.viewer.layers if x.metadata.get(DERIVED) in kinds]:
            self.viewer.layers.remove(layer)
        self.job.add_layers(self.viewer, layers, then=lambda: self._done(message))

    def _done(self, message: str) -> None:
        self.progress.setValue(1)
        self.job.show(message)
        show_info(message)

    def start(self, func: Callable, *args: Any, on_returned: Callable, what: str, **kwargs: Any) -> None:
        """Run `func` in this dock's job (a busy bar: these jobs are single calls)."""
        self.job.start(func, *args, starting=what + "…", on_returned=on_returned, steps=None, **kwargs)

    def refuse_if_busy(self) -> bool:
        return self.job.refuse_if_busy()

    def _error(self, message: str) -> None:
        self.job.error(message)

    def arm(self) -> None:
        """Bind N / Shift-N on the viewer and follow its layers (done on creation, and when docked again)."""
        if self._keys.bound:
            return
        self._keys.bind()
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self._refresh()

    def teardown(self) -> None:
        """Unbind N / Shift-N (restoring what they did before), leave the compare view, stop following the layers.
        Runs when the widget is closed or taken out of its dock (napari's close button reparents it to None)."""
        if not self._keys.bound:
            return
        self._keys.unbind()
        self.compare.leave()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.disconnect(self._refresh)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.ParentChange and hasattr(self, "_keys"):
            self.teardown() if self.parent() is None else self.arm()
        return super().event(event)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.teardown()
        super().closeEvent(event)
