"""Worker bodies and small helpers of the "Uncertainty & raters" widget (`uncertainty.py`, `_maps.py`).

The jobs run in napari workers and only call the core (`analyze_raters`, `find_regions`, the layer tuples of
`uncertainty.layers`); they import no Qt. The helpers below them are the widget's check lists and layer roles.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from napari.layers import Image, Labels, Layer
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QLayout, QListWidget, QListWidgetItem, QWidget

from ..io._npe2 import LayerData
from ..uncertainty.layers import map_layer, model_vs_raters_layer, rater_layers
from ..uncertainty.raters import analyze_raters, model_vs_raters
from ..uncertainty.regions import Region, find_regions, quantile_threshold
from ..volume import Volume, VolumeKind
from ._view import COPY_KEY

__all__ = ["DERIVED", "MapUnit", "QueueMode", "QueueResult", "RaterResult", "queue_job", "rater_job", "rescale_job"]

#: Metadata key of the layers the widget adds (they are replaced by name when it runs again).
DERIVED = "segunc_derived"
#: Maps in nats (``metadata["segunc_map"]``), the ones the unit choice rescales.
NATS_MAPS = ("entropy", "expected_entropy", "mutual_information", "vote_entropy")


class MapUnit(str, enum.Enum):
    """Unit of the entropy maps (``metadata["segunc_unit"]`` of map layers)."""

    NATS = "nats"
    NORMALISED = "normalised"


class QueueMode(str, enum.Enum):
    """How the review queue selects voxels."""

    THRESHOLD = "above the threshold"
    QUANTILE = "top quantile"


# ------------------------------------------------------------------------------------ worker bodies (no Qt)
@dataclasses.dataclass
class RaterResult:
    layers: list[LayerData]
    summary: str


@dataclasses.dataclass
class QueueResult:
    regions: list[Region]
    threshold: float
    layers: list[LayerData]


def rater_job(
    raters: Sequence[Volume],
    grid: Volume,
    *,
    labels: Mapping[str, int] | None = None,
    segmentation: Volume | None = None,
    staple: bool = True,
    soft_labels: bool = False,
) -> RaterResult:
    """`analyze_raters` and its layers: vote entropy, consensus, dissensus, majority vote, STAPLE; soft labels per
    structure and "model vs raters" on request. Fewer than 2 raters raise the core's `InvalidInput`."""
    analysis = analyze_raters(raters, labels=labels, staple=staple)
    layers = rater_layers(analysis, grid, with_staple=staple)
    layers[0][1]["metadata"]["segunc_classes"] = len(analysis.labels)  # the vote entropy's C
    if soft_labels:
        for i, value in enumerate(analysis.labels[1:], start=1):
            title = f"soft label {analysis.label_names[value]}"
            data, kwargs, kind = map_layer(title, analysis.soft_labels[i], grid, n_classes=2, prefix="raters: ")
            kwargs["metadata"]["segunc_unit"] = "probability"
            layers.append((data, kwargs, kind))
    if segmentation is not None:
        layers.append(model_vs_raters_layer(model_vs_raters(segmentation, analysis), grid))
    for _data, kwargs, _kind in layers:
        kwargs["metadata"][DERIVED] = "raters"
    disputed = int(np.count_nonzero(analysis.dissensus))
    summary = (
        f"{analysis.n_raters} raters, {len(analysis.labels) - 1} structure(s); they disagree on {disputed} voxels "
        f"({disputed * grid.voxel_volume_ml:.1f} ml)"
    )
    return RaterResult(layers, summary)


def queue_job(
    volume: Volume,
    *,
    mode: QueueMode,
    threshold: float,
    quantile: float,
    min_voxels: int = 1,
    segmentation: np.ndarray | None = None,
    labels: Mapping[str, int] | None = None,
) -> QueueResult:
    """`find_regions` above `threshold` (or above the map's `quantile`), and the "review mask" layer outlining the
    selected voxels (value > threshold; NaN never)."""
    if QueueMode(mode) is QueueMode.QUANTILE:
        threshold = quantile_threshold(volume.data, quantile)
    regions = []
    if not math.isnan(threshold):
        regions = find_regions(volume.data, spacing=volume.spacing, origin=volume.origin, threshold=threshold,
                               segmentation=segmentation, labels=labels, min_voxels=min_voxels)  # fmt: skip
    kwargs = volume.napari_kwargs()
    kwargs.update(name="review mask", opacity=0.9, colormap={0: "transparent", 1: "yellow", None: "transparent"})
    kwargs["metadata"].update({DERIVED: "queue", "segunc_contour": 1})
    mask = np.greater(volume.data, threshold).view(np.uint8)
    return QueueResult(regions, float(threshold), [(mask, kwargs, "labels")])


def rescale_job(arrays: Sequence[np.ndarray], factors: Sequence[float]) -> list[np.ndarray]:
    """New arrays ``a × factor`` (a change of unit of the entropy maps); the given arrays are left as they are."""
    return [np.multiply(a, a.dtype.type(f)) for a, f in zip(arrays, factors, strict=True)]


# ------------------------------------------------------------------------------------ helpers of the widget
class CheckList(QListWidget):
    """Names with check boxes; a name keeps its state across refreshes."""

    def set_names(self, names: Sequence[str], default: Callable[[str], bool]) -> None:
        state = {self.item(i).text(): self.item(i).checkState() for i in range(self.count())}
        blocked = self.blockSignals(True)
        self.clear()
        for name in names:
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(state.get(name, Qt.Checked if default(name) else Qt.Unchecked))
            self.addItem(item)
        self.blockSignals(blocked)

    def checked(self) -> list[str]:
        return [self.item(i).text() for i in range(self.count()) if self.item(i).checkState() == Qt.Checked]

    def set_checked(self, names: Sequence[str]) -> None:
        for i in range(self.count()):
            self.item(i).setCheckState(Qt.Checked if self.item(i).text() in names else Qt.Unchecked)


def hbox(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for widget in widgets:
        row.addWidget(widget)
    return row


def form(*rows: tuple[str, QWidget | QLayout] | QWidget | QLayout) -> QFormLayout:
    """A form from ``(label, field)`` pairs and full-width rows."""
    layout = QFormLayout()
    for row in rows:
        layout.addRow(*row) if isinstance(row, tuple) else layout.addRow(row)
    return layout


def fill(combo: QComboBox, names: Sequence[str], pick: str | None) -> None:
    """Replace a combo's items without emitting signals; select `pick` (else the first)."""
    blocked = combo.blockSignals(True)
    combo.clear()
    combo.addItems(list(names))
    combo.setCurrentIndex(max(combo.findText(pick or ""), 0))
    combo.blockSignals(blocked)


def layers_by_role(layers: Sequence[Layer], role: str) -> list[Layer]:
    """3D layers by role: "image" (a display window, or integer voxels), "map" (other float images), "labels".
    The compare view's image copies are left out."""
    out = []
    for layer in layers:
        if layer.ndim != 3 or layer.metadata.get(COPY_KEY):
            continue
        if isinstance(layer, Labels):
            kind = "labels"
        elif isinstance(layer, Image):
            windowed = layer.metadata.get("segunc_window") is not None
            kind = "image" if windowed or np.dtype(layer.dtype).kind != "f" else "map"
        else:
            continue
        if kind == role:
            out.append(layer)
    return out


def layer_volume(layer: Layer) -> Volume:
    """The layer as a Volume: its ``segunc_geometry``, else its scale/translate (mm) with an identity direction."""
    kind = VolumeKind.LABELS if isinstance(layer, Labels) else VolumeKind.FLOAT_MAP
    geometry = layer.metadata.get("segunc_geometry")
    if geometry:
        return Volume.from_geometry_dict(np.asarray(layer.data), geometry, kind=kind, name=layer.name)
    return Volume(np.asarray(layer.data), spacing=tuple(layer.scale), origin=tuple(layer.translate), kind=kind,
                  name=layer.name)  # fmt: skip


def is_nats_map(layer: Layer) -> bool:
    """An entropy-type map: by ``metadata["segunc_map"]``, else by name ("entropy", "mutual information")."""
    kind = layer.metadata.get("segunc_map")
    if kind is not None:
        return kind in NATS_MAPS
    return "entropy" in layer.name or "mutual information" in layer.name
