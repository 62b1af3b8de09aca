"""Worker bodies and small helpers of the "Uncertainty & raters" widget (`uncertainty.py`, `_maps.py`).

The jobs run in napari workers and only call the core (`analyze_raters`, `find_regions`, the layer tuples of
`uncertainty.layers`) and import no Qt. The small helpers say how the widget reads layers (roles, volumes, units).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence

import numpy as np
from napari.layers import Layer

from ..io._npe2 import LayerData
from ..roles import CONTOUR, DERIVED, ROLE, LayerRole
from ..uncertainty.layers import map_layer, model_vs_raters_layer, rater_layers
from ..uncertainty.raters import analyze_raters, model_vs_raters
from ..uncertainty.regions import Region, find_regions, quantile_threshold
from ..volume import Volume

__all__ = ["DERIVED", "MapUnit", "QueueMode", "QueueResult", "RaterResult", "queue_job", "rater_job", "rescale_job"]

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
            data, kwargs, kind = map_layer(
                title, analysis.soft_labels[i], grid, n_classes=2, prefix="raters: ", visible=False
            )
            kwargs["metadata"]["segunc_unit"] = "probability"
            layers.append((data, kwargs, kind))
    if segmentation is not None:  # shown instead of the dissensus (it splits the disputed voxels by the model)
        for _data, kwargs, _kind in layers:
            kwargs["visible"] = False
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
        regions = find_regions(
            volume.data,
            spacing=volume.spacing,
            origin=volume.origin,
            threshold=threshold,
            segmentation=segmentation,
            labels=labels,
            min_voxels=min_voxels,
        )
    kwargs = volume.napari_kwargs()
    # white outlines: unlike the raters' colours, the organ colours and the red/orange/yellow of "model vs raters"
    kwargs.update(name="review mask", opacity=1.0, colormap=["transparent", "white"])
    kwargs["metadata"].update({DERIVED: "queue", CONTOUR: 2, ROLE: LayerRole.REVIEW_MASK.value})
    mask = np.greater(volume.data, threshold).view(np.uint8)
    return QueueResult(regions, float(threshold), [(mask, kwargs, "labels")])


def rescale_job(arrays: Sequence[np.ndarray], factors: Sequence[float]) -> list[np.ndarray]:
    """New arrays ``a × factor`` (a change of unit of the entropy maps); the given arrays are left as they are."""
    return [np.multiply(a, a.dtype.type(f)) for a, f in zip(arrays, factors, strict=True)]


# ------------------------------------------------------------------------------------ helpers of the widget
def is_nats_map(layer: Layer) -> bool:
    """An entropy-type map: by ``metadata["segunc_map"]``, else by name ("entropy", "mutual information")."""
    kind = layer.metadata.get("segunc_map")
    if kind is not None:
        return kind in NATS_MAPS
    return "entropy" in layer.name or "mutual information" in layer.name
