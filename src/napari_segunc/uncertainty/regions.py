"""The review queue: a per-voxel uncertainty map turned into ranked connected regions.

Works on any float map of shape (Z, Y, X) (entropy, mutual information, rater vote entropy...). Rules shared by every
function here:

- NaN means "not computed" and is never selected, never counted and never averaged; ±inf is refused.
- A voxel is *above* a threshold when its value is strictly greater (``value > threshold``), so a map that is 0 almost
  everywhere selects nothing at 0 however the quantile falls.
- Masks and segmentations must have the map's shape; a mask's non-zero voxels are inside.

Summary scores (per structure, per slice, per case) live in `scores`. Regions are found and measured over the
selected voxels only (one pass over the volume for selection, labelling and flat indexing; everything else is sorts
and ``reduceat`` over the selection), so a 512×512×300 map takes seconds.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InvalidInput
from ..io.writers import write_csv
from .checks import check_map, check_mask, check_segmentation, check_spacing, names_by_value

__all__ = [
    "Connectivity",
    "REGION_COLUMNS",
    "Region",
    "find_regions",
    "quantile_threshold",
    "regions_to_rows",
    "write_regions_csv",
]

log = logging.getLogger(__name__)

#: Column order of `regions_to_rows` and `write_regions_csv`.
REGION_COLUMNS = (
    "rank",
    "label",
    "structure",
    "n_voxels",
    "volume_ml",
    "centroid_z",
    "centroid_y",
    "centroid_x",
    "centroid_z_mm",
    "centroid_y_mm",
    "centroid_x_mm",
    "peak_slice",
    "peak_z",
    "peak_y",
    "peak_x",
    "bbox_z0",
    "bbox_y0",
    "bbox_x0",
    "bbox_z1",
    "bbox_y1",
    "bbox_x1",
    "total",
    "mean",
    "max",
)
_CHUNK_VOXELS = 1 << 22


class Connectivity(enum.IntEnum):
    """Which neighbours join voxels into one region (value = `scipy.ndimage.generate_binary_structure` rank).

    ``FACES`` = 6-connected, ``EDGES`` = 18-connected, ``CORNERS`` = 26-connected. Functions also accept the
    neighbour counts 6, 18, 26 or the values 1, 2, 3.
    """

    FACES = 1
    EDGES = 2
    CORNERS = 3


@dataclasses.dataclass(frozen=True)
class Region:
    """One connected region of high uncertainty. Voxel coordinates are ``(z, y, x)`` indices of the map.

    Attributes
    ----------
    rank : int
        1 = reviewed first (largest summed uncertainty).
    label : int
        Segmentation label the region touches (see `find_regions`); 0 for background or without a segmentation.
    structure : str or None
        Name of that label; ``"background"`` for 0; ``None`` when no segmentation was given.
    n_voxels : int
    volume_ml : float
        ``n_voxels × prod(spacing) / 1000``.
    centroid_voxel : tuple of 3 floats
        Mean voxel index (unweighted); may lie outside a curved region.
    centroid_mm : tuple of 3 floats
        ``origin + centroid_voxel × spacing`` in mm: napari world coordinates (``translate`` + index × ``scale``).
    peak_slice : int
        Axial slice z holding the most summed uncertainty of the region (lowest z on ties).
    peak_voxel : tuple of 3 ints
        Voxel of the maximum value (first in C order on ties); always inside the region.
    bbox : tuple of 6 ints
        ``(z0, y0, x0, z1, y1, x1)``, inclusive.
    total, mean, max : float
        Sum, mean and maximum of the map over the region (units of the map).
    """

    rank: int
    label: int
    structure: str | None
    n_voxels: int
    volume_ml: float
    centroid_voxel: tuple[float, float, float]
    centroid_mm: tuple[float, float, float]
    peak_slice: int
    peak_voxel: tuple[int, int, int]
    bbox: tuple[int, int, int, int, int, int]
    total: float
    mean: float
    max: float


# ---------------------------------------------------------------------------------------------------- regions
def _connectivity(value: Connectivity | int) -> Connectivity:
    value = {6: 1, 18: 2, 26: 3}.get(int(value), value)
    try:
        return Connectivity(value)
    except ValueError:
        raise InvalidInput(f"Connectivity {value!r} is not one of 6, 18, 26 (neighbours) or 1, 2, 3.") from None


def quantile_threshold(uncertainty: np.ndarray, quantile: float, *, mask: np.ndarray | None = None) -> float:
    """The `quantile` of the map's non-NaN values (inside `mask` if given), as `numpy.quantile` computes it.

    Returns NaN when there is no such value (all NaN, or an empty mask).
    """
    u = check_map(uncertainty)
    m = check_mask(u, mask)
    if not 0 < float(quantile) < 1:
        raise InvalidInput(f"The quantile must lie strictly between 0 and 1 (e.g. 0.99), got {quantile}.")
    values = u[m] if m is not None else u.reshape(-1)  # a copy with a mask, else a view
    own = m is not None
    if np.isnan(values).any():
        values, own = values[~np.isnan(values)], True
    return float(np.quantile(values, float(quantile), overwrite_input=own)) if values.size else math.nan


def find_regions(
    uncertainty: np.ndarray,
    *,
    spacing: Sequence[float],
    threshold: float | None = None,
    quantile: float | None = None,
    mask: np.ndarray | None = None,
    segmentation: np.ndarray | None = None,
    labels: Mapping[str, int] | None = None,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    connectivity: Connectivity | int = Connectivity.CORNERS,
    min_voxels: int = 1,
    max_regions: int | None = None,
) -> list[Region]:
    """Connected regions of voxels above a threshold, ranked for review.

    Parameters
    ----------
    uncertainty : ndarray of float, shape (Z, Y, X)
        Any per-voxel uncertainty map. NaN voxels are never selected; ±inf is refused.
    spacing : 3 floats
        Voxel size in mm, ``(z, y, x)``.
    threshold : float, optional
        Select voxels with ``value > threshold``.
    quantile : float in (0, 1), optional
        Select voxels above this quantile of the map's non-NaN values inside `mask` (whole map without a mask),
        e.g. 0.99 keeps roughly the top 1 %. Exactly one of `threshold` and `quantile` must be given.
    mask : ndarray, shape (Z, Y, X), optional
        Region of interest (non-zero = inside): only voxels inside are selected.
    segmentation : ndarray of int, shape (Z, Y, X), optional
        Label map (0 = background) giving each region the structure it touches: the most frequent non-zero label
        inside the region or, if none, in its one-voxel dilation (same connectivity), else 0. Ties go to the lower
        label value.
    labels : mapping of str to int, optional
        Structure names, e.g. ``{"liver": 1, "kidney": 2}``; labels missing from it are named ``"label N"``.
    origin : 3 floats
        Position in mm of voxel (0, 0, 0), ``(z, y, x)`` (a `Volume`'s ``origin``).
    connectivity : Connectivity or int
        Neighbourhood joining voxels: `Connectivity` or 6, 18, 26 neighbours (default 26).
    min_voxels : int
        Regions with fewer voxels are dropped before ranking.
    max_regions : int, optional
        Keep only the first `max_regions` after ranking.

    Returns
    -------
    list of Region
        Sorted by rank: summed uncertainty descending, then more voxels, then lower first voxel index in C order
        (deterministic). Empty (and logged) when nothing is selected.
    """
    u = check_map(uncertainty)
    spacing, origin = check_spacing(spacing), check_spacing(origin, "origin")
    m = check_mask(u, mask)
    seg = check_segmentation(u, segmentation)
    names = names_by_value(labels)
    conn = _connectivity(connectivity)
    if (threshold is None) == (quantile is None):
        raise InvalidInput("Give exactly one of threshold (a map value) and quantile (e.g. 0.99).")
    if quantile is not None:
        threshold = quantile_threshold(u, quantile, mask=m)
        log.info("quantile %g of the map is %.6g", quantile, threshold)
    elif not math.isfinite(float(threshold)):
        raise InvalidInput(f"The threshold must be a finite number, got {threshold}.")
    if math.isnan(threshold):
        log.info("no review region: the map has no value inside the mask")
        return []
    sel = u > threshold
    if m is not None:
        sel &= m
    structure = ndimage.generate_binary_structure(3, int(conn))
    lab, n = ndimage.label(sel, structure=structure)
    if n == 0:
        log.info("no review region: no voxel above %.6g", threshold)
        return []

    st = _measure(u, sel, lab, n)
    keep = np.flatnonzero(st["n"] >= int(min_voxels))
    keep = keep[np.lexsort((st["first"][keep], -st["n"][keep], -st["total"][keep]))]
    if max_regions is not None:
        keep = keep[: max(int(max_regions), 0)]
    if keep.size == 0:
        log.info("no review region: %d region(s) above %.6g, none with %d voxels or more", n, threshold, min_voxels)
        return []
    touched = np.zeros(keep.size, np.int64)
    if seg is not None:
        touched = _most_frequent(st["rid"], seg[st["zyx"]], n)[keep]
        if (touched == 0).any():
            touched[touched == 0] = _dilation_labels(seg, st, keep[touched == 0], structure)
    count, total, cz = st["n"][keep], st["total"][keep], st["centroid"][keep]
    rows = zip(
        touched.tolist(),
        count.tolist(),
        (count * (np.prod(spacing) / 1000)).tolist(),
        map(tuple, cz.tolist()),
        map(tuple, (np.asarray(origin) + cz * np.asarray(spacing)).tolist()),
        st["peak_slice"][keep].tolist(),
        map(tuple, np.stack(np.unravel_index(st["peak"][keep], u.shape), axis=1).tolist()),
        map(tuple, np.hstack([st["lo"][keep], st["hi"][keep]]).tolist()),
        total.tolist(),
        (total / count).tolist(),
        st["max"][keep].tolist(),
        strict=True,
    )
    regions = [
        Region(rank, label, names.get(label, f"label {label}") if seg is not None else None, *rest)
        for rank, (label, *rest) in enumerate(rows, start=1)
    ]
    log.info("%d review region(s) above %.6g (%d found, connectivity %s)", len(regions), threshold, n, conn.name)
    return regions


def _first_of_group(group: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Positions of the first True flag of each group in a `group` array sorted ascending."""
    pos = np.flatnonzero(flags)
    g = group[pos]
    return pos[np.r_[True, g[1:] != g[:-1]]] if pos.size else pos


def _measure(u: np.ndarray, sel: np.ndarray, lab: np.ndarray, n: int) -> dict[str, Any]:
    """Statistics of regions 1…n (row r = region r + 1) from the selected voxels only, sorted by (region, C order)."""
    idx = np.flatnonzero(sel)  # C order, so z is non-decreasing within each region after a stable sort
    rid = lab.reshape(-1)[idx]
    order = np.argsort(rid, kind="stable")
    idx, rid = idx[order], rid[order]
    zyx = np.unravel_index(idx, u.shape)
    vals = u[zyx].astype(np.float64)
    count = np.bincount(rid, minlength=n + 1)[1:]
    starts = np.r_[0, np.cumsum(count)[:-1]]
    maxima = np.maximum.reduceat(vals, starts)
    # summed uncertainty per (region, slice): the groups are contiguous because (rid, z) is sorted
    z = zyx[0]
    gstart = np.flatnonzero(np.r_[True, (rid[1:] != rid[:-1]) | (z[1:] != z[:-1])])
    gsum, grid_ = np.add.reduceat(vals, gstart), rid[gstart]
    best = np.full(n + 1, -np.inf)
    np.maximum.at(best, grid_, gsum)
    return {
        "rid": rid,
        "zyx": zyx,
        "n": count,
        "total": np.add.reduceat(vals, starts),
        "max": maxima,
        "centroid": np.stack([np.add.reduceat(c.astype(np.float64), starts) for c in zyx], axis=1) / count[:, None],
        "lo": np.stack([np.minimum.reduceat(c, starts) for c in zyx], axis=1),
        "hi": np.stack([np.maximum.reduceat(c, starts) for c in zyx], axis=1),
        "first": idx[starts],
        "peak": idx[_first_of_group(rid, vals == maxima[rid - 1])],
        "peak_slice": z[gstart][_first_of_group(grid_, gsum == best[grid_])],
    }


def _most_frequent(group: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Most frequent non-zero value of each group 1…n (0 if none; lower value on ties) → array of n."""
    out = np.zeros(n, np.int64)
    nz = values != 0
    if nz.any():
        values = values[nz].astype(np.int64)
        top = int(values.max()) + 1
        keys, cnt = np.unique(group[nz].astype(np.int64) * top + values, return_counts=True)
        kg, kv = keys // top, keys % top
        best = np.zeros(n + 1, np.int64)
        np.maximum.at(best, kg, cnt)
        pick = _first_of_group(kg, cnt == best[kg])
        out[kg[pick] - 1] = kv[pick]
    return out


def _dilation_labels(seg: np.ndarray, st: dict[str, Any], rows: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Most frequent non-zero label among the voxels of each region's one-voxel dilation by `structure`.

    Vectorised over every region at once: each neighbour voxel is counted once per region (a set, like the
    dilation), and the region's own voxels are label 0 here, so dilation and ring agree.
    """
    wanted = np.zeros(len(st["n"]) + 1, bool)
    wanted[rows + 1] = True
    pick = wanted[st["rid"]]
    rid, zyx = st["rid"][pick].astype(np.int64), [c[pick] for c in st["zyx"]]
    pairs = []
    for offset in np.argwhere(structure) - 1:
        nb = [c + o for c, o in zip(zyx, offset, strict=True)]
        ok = np.logical_and.reduce([(c >= 0) & (c < size) for c, size in zip(nb, seg.shape, strict=True)])
        nb = tuple(c[ok] for c in nb)
        nz = seg[nb] != 0
        pairs.append(rid[ok][nz] * seg.size + np.ravel_multi_index(tuple(c[nz] for c in nb), seg.shape))
    keys = np.unique(np.concatenate(pairs))
    labels = seg[np.unravel_index(keys % seg.size, seg.shape)]
    return _most_frequent(keys // seg.size, labels, len(st["n"]))[rows]


# ---------------------------------------------------------------------------------------------------- export
def regions_to_rows(regions: Sequence[Region]) -> list[dict[str, Any]]:
    """One flat dict per region, keys `REGION_COLUMNS` (vectors split into ``_z/_y/_x``; bbox into z0…x1)."""
    rows = []
    for r in regions:
        cz, cm, pv, b = r.centroid_voxel, r.centroid_mm, r.peak_voxel, r.bbox
        values = (
            r.rank,
            r.label,
            r.structure,
            r.n_voxels,
            r.volume_ml,
            *cz,
            *cm,
            r.peak_slice,
            *pv,
            *b,
            r.total,
            r.mean,
            r.max,
        )
        rows.append(dict(zip(REGION_COLUMNS, values, strict=True)))
    return rows


def write_regions_csv(regions: Sequence[Region], path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the review queue as a CSV table (header `REGION_COLUMNS`; empty structure when unknown).

    The file is written beside `path` and moved into place, so a reader never sees half a table. An existing `path`
    is refused (`InvalidInput`, file left untouched) unless `overwrite`.
    """

    path = write_csv(regions_to_rows(regions), path, columns=REGION_COLUMNS, overwrite=overwrite)
    log.info("wrote %d review region(s) to %s", len(regions), path)
    return path
