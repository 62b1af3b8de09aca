"""napari layer data for uncertainty results, as plain ``(data, kwargs, layer_type)`` tuples.

No napari import: widgets and the npe2 reader pass these tuples to ``viewer.add_layer``-style calls
(``viewer._add_layer_from_data(*t)`` or ``Layer.create(*t)``), so the Review widgets only wire them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..organs import label_colormap
from ..roles import CONTOUR, LABEL_NAMES, MAP_KIND, MEMBER_VOXELS, PROBABILITIES, ROLE, UNIT, LayerRole
from ..volume import Volume
from .ensemble import SCALAR_MAPS, EnsembleMaps
from .raters import RaterAnalysis

__all__ = [
    "AGREEMENT_COLORS",
    "COLORMAPS",
    "ensemble_layers",
    "map_layer",
    "model_vs_raters_layer",
    "rater_layers",
    "segmentation_layer",
]

LayerData = tuple[np.ndarray, dict[str, Any], str]

#: Colormaps per map (napari names), every one black at 0: the maps are drawn additively over the CT, so where the
#: models agree (0) the CT shows through unchanged (viridis, cividis, plasma or turbo would tint all of it).
COLORMAPS = {
    "entropy": "inferno",
    "expected_entropy": "bop blue",
    "mutual_information": "magma",
    "mean_variance": "bop purple",
    "max_prob_uncertainty": "bop orange",
    "member_disagreement": "hot",
    "vote_entropy": "inferno",
}

_TITLES = {
    "entropy": "predictive entropy",
    "expected_entropy": "expected entropy (aleatoric)",
    "mutual_information": "mutual information (epistemic)",
    "mean_variance": "member variance",
    "max_prob_uncertainty": "1 − max probability",
    "member_disagreement": "member disagreement",
    "vote_entropy": "rater vote entropy",
}


def _limits(name: str, data: np.ndarray, n_classes: int, normalized: bool) -> tuple[float, float]:
    """Contrast limits with a meaning: the theoretical range of each map, in nats unless `normalized`."""
    top = 1.0 if normalized else math.log(n_classes)
    if name in ("entropy", "expected_entropy", "vote_entropy"):
        return 0.0, top
    if name == "mutual_information":  # rarely near its bound: show up to the 99.9th percentile, at most ln C
        finite = data[np.isfinite(data)]
        hi = float(np.quantile(finite, 0.999)) if finite.size else top
        return 0.0, min(top, max(hi, 1e-3 * top))
    if name == "mean_variance":
        return 0.0, 0.25  # p(1 − p) ≤ 1/4
    if name == "max_prob_uncertainty":
        return 0.0, 1.0 - 1.0 / n_classes
    return 0.0, 1.0


def map_layer(
    name: str,
    data: np.ndarray,
    grid: Volume,
    *,
    n_classes: int,
    normalized: bool = False,
    prefix: str = "",
    visible: bool = True,
) -> LayerData:
    """One uncertainty map as an additive image layer over the CT, in mm world coordinates (role MAP; the docks
    show the colour bar of a visible map)."""
    kwargs = grid.napari_kwargs()
    unit = "normalised" if normalized else "nats"
    title = _TITLES.get(name, name.replace("_", " "))
    kwargs.update(
        name=f"{prefix}{title}",
        colormap=COLORMAPS.get(name, "inferno"),
        contrast_limits=_limits(name, data, n_classes, normalized),
        blending="additive",
        opacity=0.8,
        visible=visible,
    )
    kwargs["metadata"] = {**kwargs["metadata"], ROLE: LayerRole.MAP.value, MAP_KIND: name, UNIT: unit}
    return data, kwargs, "image"


def segmentation_layer(
    data: np.ndarray,
    grid: Volume,
    *,
    name: str = "segmentation",
    labels: Mapping[str, int] | None = None,
    probabilities: np.ndarray | None = None,
    member_voxels: Mapping[str, Iterable[int]] | None = None,
    role: LayerRole = LayerRole.SEGMENTATION,
    contour: int = 1,
    visible: bool = True,
) -> LayerData:
    """A label map as a labels layer in the organ colours (`organs.label_colormap`), drawn as outlines `contour`
    voxels wide by the docks (0: filled); names of the labels kept in metadata for the widgets' tables.

    `probabilities`, the (C, Z, Y, X) class probabilities the label map is the argmax of (background first, channel
    i = the i-th organ in increasing label value), go to ``metadata["segunc_probabilities"]`` when given: the
    Metrics widget reads its calibration and uncertainty metrics from there. `member_voxels`, each ensemble
    member's own label map counted per class (`EnsembleMaps.member_voxels`), go to
    ``metadata["segunc_member_voxels"]``: the spread of the members' organ volumes in the Statistics table.
    """
    kwargs = grid.napari_kwargs()
    kwargs.update(name=name, opacity=0.6, colormap=label_colormap(), visible=visible)
    kwargs["metadata"] = {**kwargs["metadata"], ROLE: LayerRole(role).value, LABEL_NAMES: dict(labels or {})}
    if contour:
        kwargs["metadata"][CONTOUR] = int(contour)
    if probabilities is not None:
        kwargs["metadata"][PROBABILITIES] = probabilities
    if member_voxels:
        kwargs["metadata"][MEMBER_VOXELS] = {str(m): [int(n) for n in c] for m, c in member_voxels.items()}
    return data, kwargs, "labels"


def ensemble_layers(
    maps: EnsembleMaps,
    grid: Volume,
    *,
    which: Iterable[str] = ("entropy", "expected_entropy", "mutual_information"),
    labels: Mapping[str, int] | None = None,
    with_segmentation: bool = True,
    with_probabilities: bool = False,
) -> list[LayerData]:
    """Segmentation + the chosen scalar maps of one ensemble group; names carry the group when it is not 'all'.
    Only the segmentation (outlines) and the predictive entropy are visible: the other maps are added hidden.

    With `with_probabilities`, the segmentation layer also carries the group's mean probabilities in
    ``metadata["segunc_probabilities"]`` (what the Metrics widget needs for calibration and uncertainty metrics;
    C × the image's size in float32, kept as long as the layer lives).
    """
    prefix = "" if maps.group == "all" else f"{maps.group}: "
    layers = []
    if with_segmentation:
        probabilities = maps.mean_probabilities if with_probabilities else None
        layers.append(
            segmentation_layer(
                maps.segmentation,
                grid,
                name=f"{prefix}segmentation",
                labels=labels,
                probabilities=probabilities,
                member_voxels=maps.member_voxels,
            )
        )
    for name in which:
        if name not in SCALAR_MAPS:
            raise ValueError(f"Unknown map '{name}'; choose from {', '.join(SCALAR_MAPS)}.")
        layers.append(
            map_layer(
                name,
                getattr(maps, name),
                grid,
                n_classes=maps.n_classes,
                normalized=maps.normalized,
                prefix=prefix,
                visible=name == "entropy",
            )
        )
    return layers


#: Colours of `ModelRaterAgreement` codes (agreement transparent).
AGREEMENT_COLORS = {0: "transparent", 1: "red", 2: "orange", 3: "yellow"}


def rater_layers(analysis: RaterAnalysis, grid: Volume, *, with_staple: bool = True) -> list[LayerData]:
    """Vote entropy (image) and consensus / dissensus / majority / STAPLE label maps of a rater analysis (role
    RATER_ANALYSIS). Only the dissensus (filled: where the raters disagree) is visible; the others are added hidden
    so that the raters' own outlines stay readable."""
    names = {name: value for value, name in analysis.label_names.items() if value != 0}
    n_classes = max(2, len(analysis.labels))
    layers = [
        map_layer(
            "vote_entropy",
            analysis.vote_entropy,
            grid,
            n_classes=n_classes,
            normalized=analysis.normalized,
            prefix="raters: ",
            visible=False,
        )
    ]
    layers[0][1]["metadata"][ROLE] = LayerRole.RATER_ANALYSIS.value
    maps = {"consensus": analysis.consensus, "dissensus": analysis.dissensus, "majority vote": analysis.majority}
    if with_staple and analysis.staple is not None:
        maps["STAPLE"] = analysis.staple
    for title, data in maps.items():
        layer = segmentation_layer(
            data,
            grid,
            name=f"raters: {title}",
            labels=names,
            role=LayerRole.RATER_ANALYSIS,
            contour=0,
            visible=title == "dissensus",
        )
        layers.append(layer)
    return layers


def model_vs_raters_layer(codes: np.ndarray, grid: Volume, *, name: str = "model vs raters") -> LayerData:
    """`model_vs_raters` codes as a labels layer: red = model against unanimous raters, orange = disputed voxel
    where the model differs from the majority, yellow = disputed voxel where it follows the majority."""
    kwargs = grid.napari_kwargs()
    kwargs.update(name=name, opacity=0.6, colormap=[AGREEMENT_COLORS[v] for v in range(4)])  # cyclic: see organs
    kwargs["metadata"] = {**kwargs["metadata"], ROLE: LayerRole.RATER_ANALYSIS.value}
    return codes, kwargs, "labels"
