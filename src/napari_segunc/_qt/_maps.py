"""The "Uncertainty maps" part of the "Uncertainty & raters" widget: which maps show, opacity, unit, threshold.

- Maps are the 3D float image layers that are not intensity images (role MAP, `_layers.layers_with_role`).
- Unit: entropy maps (``metadata["segunc_map"]`` in `NATS_MAPS`, or "entropy" / "mutual information" in the name)
  are in nats or normalised (÷ ln C). Choosing a unit converts every entropy map to it: values and contrast limits
  are multiplied by 1/ln C or ln C in a worker (new arrays; nothing is resampled), ``metadata["segunc_unit"]`` says
  which, so napari's value readout, the threshold and the queue all speak the same unit. C is the map's
  ``metadata["segunc_classes"]``, else the number of labels of the chosen segmentation (``segunc_labels`` +
  background, e.g. 6 for the phantom's 5 organs), else the "classes" box; the C used is stored on the layer.
- Threshold (in the queue map's unit): the queue map's lower contrast limit, so voxels at or below it vanish from
  the additive overlay (inferno/magma start at black), and the selection of "Find regions".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from napari.layers import Layer
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QListWidgetItem,
    QSlider,
    QSpinBox,
)

from ._layers import LABEL_ROLES, LayerRole, has_layer, layers_with_role
from ._uncertainty_jobs import MapUnit, is_nats_map, rescale_job
from ._widgets import CheckList, fill, form, hbox, layer_combo

__all__ = ["MapsBox"]


class MapsBox(QGroupBox):
    """Controls of the uncertainty maps of the owner widget's viewer (owner: `UncertaintyWidget`)."""

    def __init__(self, owner: Any) -> None:
        super().__init__("Uncertainty maps")
        self.owner = owner
        self.viewer = owner.viewer
        self.user_picked = False
        self.map_combo = layer_combo()
        self.map_list = CheckList()
        self.opacity_slider = QSlider(Qt.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.unit_combo = QComboBox()
        for unit in MapUnit:
            self.unit_combo.addItem(unit.value, unit)
        self.classes_spin = QSpinBox()
        self.classes_spin.setRange(2, 1000)
        self.classes_spin.setToolTip("Classes C (background included) of maps that do not say: normalised = ÷ ln C")
        self.threshold_slider = QSlider(Qt.Horizontal)
        self.threshold_slider.setRange(0, 1000)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setDecimals(4)
        self.threshold_spin.setSingleStep(0.01)

        self.setLayout(
            form(
                ("Queue map:", self.map_combo),
                ("Show:", self.map_list),
                ("Opacity:", self.opacity_slider),
                ("Unit:", self.unit_combo),
                ("Classes C:", self.classes_spin),
                ("Threshold:", hbox(self.threshold_slider, self.threshold_spin)),
            )
        )

        self.map_combo.activated.connect(self._picked)
        self.map_combo.currentIndexChanged.connect(self.sync)
        self.map_list.itemChanged.connect(self._map_checked)
        self.opacity_slider.valueChanged.connect(lambda v: self.set_opacity(v / 100))
        self.unit_combo.currentIndexChanged.connect(lambda _i: self.set_unit(self.unit_combo.currentData()))
        self.threshold_slider.valueChanged.connect(lambda v: self.set_threshold(v / 1000 * self.top))
        self.threshold_spin.valueChanged.connect(self.set_threshold)

    @property
    def inputs(self) -> list:
        return [self.map_combo, self.unit_combo, self.classes_spin]

    @property
    def map_layer(self) -> Layer | None:
        """The map that drives the threshold and the review queue."""
        return self.owner.layer(self.map_combo.currentText())

    def _picked(self, _index: int) -> None:
        self.user_picked = True

    def refresh(self) -> None:
        """Follow the viewer's layers (keeps the user's choices; picks the predictive entropy first otherwise)."""
        maps = [x.name for x in layers_with_role(self.viewer.layers, LayerRole.MAP)]
        current = self.map_combo.currentText()
        entropy = [n for n in maps if "predictive entropy" in n] + [n for n in maps if "entropy" in n]
        keep = current in maps and (self.user_picked or current in entropy[:1] or not entropy)
        fill(self.map_combo, maps, current if keep else (entropy + maps + [""])[0])
        self.map_list.set_names(maps, lambda n: self.viewer.layers[n].visible)
        self.sync()

    # -------------------------------------------------------------------------------- show, opacity
    def _map_checked(self, item: QListWidgetItem) -> None:
        layer = self.owner.layer(item.text())
        if layer is not None:
            layer.visible = item.checkState() == Qt.Checked

    def show_maps(self, names: Sequence[str]) -> None:
        """Show the named map layers, hide the other maps."""
        self.map_list.set_checked(list(names))

    def set_opacity(self, opacity: float) -> None:
        """Opacity (0–1) of the shown map layers."""
        for name in self.map_list.checked():
            self.viewer.layers[name].opacity = float(opacity)
        blocked = self.opacity_slider.blockSignals(True)
        self.opacity_slider.setValue(round(100 * float(opacity)))
        self.opacity_slider.blockSignals(blocked)

    # -------------------------------------------------------------------------------- unit
    def n_classes(self, layer: Layer) -> tuple[int, str]:
        """C of a map and where it came from: its metadata, a segmentation's label names, or the classes box."""
        if layer.metadata.get("segunc_classes"):
            return int(layer.metadata["segunc_classes"]), f"'{layer.name}'"
        seg = self.owner.segmentation_layer
        for labels in ([seg] if seg is not None else []) + layers_with_role(self.viewer.layers, *LABEL_ROLES):
            names = labels.metadata.get("segunc_labels")
            if names:
                return len({int(v) for v in names.values()} - {0}) + 1, f"the labels of '{labels.name}'"
        return self.classes_spin.value(), "the classes box"

    @staticmethod
    def unit_of(layer: Layer) -> MapUnit | None:
        """Unit of an entropy map (None for maps without one: probabilities, variance…)."""
        return MapUnit(layer.metadata.get("segunc_unit", MapUnit.NATS.value)) if is_nats_map(layer) else None

    def set_unit(self, unit: MapUnit | str) -> None:
        """Express every entropy map in `unit` (a worker multiplies the values by 1/ln C or ln C)."""
        unit = MapUnit(unit)
        todo = []
        for layer in layers_with_role(self.viewer.layers, LayerRole.MAP):
            if self.unit_of(layer) not in (None, unit):
                c = self.n_classes(layer)[0]
                todo.append((layer, 1 / math.log(c) if unit is MapUnit.NORMALISED else math.log(c), c))
        if not todo or self.owner.refuse_if_busy():
            self.sync()
            return
        self.owner.start(
            rescale_job,
            [x[0].data for x in todo],
            [x[1] for x in todo],
            what=f"Converting to {unit.value}",
            on_returned=lambda arrays: self._rescaled(todo, unit, arrays),
        )

    def _rescaled(self, todo: list, unit: MapUnit, arrays: list[np.ndarray]) -> None:
        for (layer, factor, c), data in zip(todo, arrays, strict=True):
            if not has_layer(self.viewer.layers, layer):
                continue
            (lo, hi), (r_lo, r_hi) = layer.contrast_limits, layer.contrast_limits_range
            layer.data = data
            layer.metadata.update(segunc_unit=unit.value, segunc_classes=c)
            layer.contrast_limits_range = (r_lo * factor, r_hi * factor)
            layer.contrast_limits = (lo * factor, hi * factor)
        self.sync()
        self.owner.status.setText(f"{len(todo)} entropy map(s) now in {unit.value} (C = {todo[0][2]}).")

    # -------------------------------------------------------------------------------- threshold
    @property
    def top(self) -> float:
        """Upper end of the threshold: 1 normalised, ln C in nats, else the layer's contrast range."""
        layer = self.map_layer
        if layer is None:
            return 1.0
        unit = self.unit_of(layer)
        if unit is MapUnit.NORMALISED:
            return 1.0
        if unit is MapUnit.NATS:
            return math.log(self.n_classes(layer)[0])
        return float(max(layer.contrast_limits_range[1], layer.contrast_limits[1]))

    @property
    def threshold(self) -> float:
        """Threshold in the queue map's unit: the map's lower contrast limit (the box's value without a map)."""
        layer = self.map_layer
        return float(layer.contrast_limits[0]) if layer is not None else float(self.threshold_spin.value())

    def set_threshold(self, value: float) -> None:
        """Hide the queue map's voxels at or below `value` (its lower contrast limit) and use it for the queue."""
        value = min(max(float(value), 0.0), self.threshold_spin.maximum())
        layer = self.map_layer
        if layer is not None:
            step = 1e-3 * max(self.threshold_spin.maximum(), 1e-6)
            layer.contrast_limits = (value, max(layer.contrast_limits[1], value + step))
        self._show_threshold(value)

    def _show_threshold(self, value: float) -> None:
        top = self.threshold_spin.maximum()
        self._set_quietly(self.threshold_spin, value)
        self._set_quietly(self.threshold_slider, round(1000 * value / top) if top > 0 else 0)

    def sync(self, _index: int = 0) -> None:
        """Show the queue map's C, unit, opacity and threshold (its lower contrast limit)."""
        layer = self.map_layer
        if layer is None:
            return
        c, source = self.n_classes(layer)
        if source != "the classes box":
            self._set_quietly(self.classes_spin, c)
        unit = self.unit_of(layer)
        self.unit_combo.setEnabled(unit is not None)
        self._set_quietly(self.unit_combo, max(self.unit_combo.findData(unit), 0))
        self._set_quietly(self.opacity_slider, round(100 * layer.opacity))
        blocked = self.threshold_spin.blockSignals(True)
        self.threshold_spin.setRange(0.0, self.top)
        self.threshold_spin.blockSignals(blocked)
        self._show_threshold(self.threshold)

    @staticmethod
    def _set_quietly(widget: Any, value: Any) -> None:
        blocked = widget.blockSignals(True)
        (widget.setCurrentIndex if isinstance(widget, QComboBox) else widget.setValue)(value)
        widget.blockSignals(blocked)
