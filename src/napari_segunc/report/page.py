"""One-page PNG report of a case: key axial slices with the label overlays, an uncertainty panel and a table.

The page (`PAGE_PIXELS` at `PAGE_DPI`, A4 landscape proportions) shows 3–4 axial slices chosen by `key_slices` (the
fewest slices that show every organ near its largest cross-section), the CT in its default display window
(`napari_segunc.display.default_preset`: abdomen W400/L40 for CT), each organ as a translucent fill with a contour in
its colour (`label_colors`, the same colour for a label value on every page), the slice where the uncertainty map
sums highest when one is given, and a table of organ volumes in ml (voxel count × voxel volume) with — when metrics
rows are given — Dice and HD95 per organ. Slices are drawn in mm (`extent` from the spacing, equal aspect) in the
canonical LPS grid, so the patient's right is on the page's left and anterior at the top (radiological convention).

matplotlib's Agg canvas is used directly (no pyplot state: safe in worker threads). The file is written atomically
and never over an existing file unless asked.

One responsibility, drawing the page (its organ table is `napari_segunc.report.table`; `napari_segunc.report.case`
writes the files).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..display import contrast_limits, default_preset
from ..errors import GeometryMismatch, InvalidInput
from ..io.writers import atomic_write
from ..organs import label_colors  # one organ colour table: the canvas, the docks and the report
from ..volume import Volume
from .table import case_table, draw_table, label_array

__all__ = [
    "PAGE_DPI",
    "PAGE_PIXELS",
    "draw_case_report",
    "key_slices",
    "label_colors",
    "write_case_report",
]

#: Size of the page in pixels (width, height): A4 landscape proportions (√2 : 1).
PAGE_PIXELS = (1400, 990)
PAGE_DPI = 120
_FILL_ALPHA = 0.35
_SHOWN_FRACTION = 0.5  # an organ is "shown" on a slice holding at least this fraction of its largest cross-section
_FILL_AREA = 0.25  # extra slices hold at least this fraction of the largest labelled area of a slice


def _slice_counts(labels: np.ndarray) -> np.ndarray:
    """(Z, max label + 1) voxel counts of each label on each axial slice."""
    m = int(labels.max(initial=0)) + 1
    return np.stack([np.bincount(labels[z].ravel(), minlength=m) for z in range(labels.shape[0])])


def key_slices(labels: np.ndarray, *, n: int = 4) -> list[int]:
    """Up to `n` axial slices (indices along z, superior first) that together show every organ well.

    Greedy: each pick is the slice showing the most organs not shown yet, an organ being shown on a slice that
    holds at least half of its largest cross-section (ties: the larger labelled area). Once every organ is shown,
    the remaining picks spread over the slices holding at least a quarter of the largest labelled slice area (each
    the one maximising its distance to the picks × its labelled area). An empty map gives evenly spaced slices.
    """
    labels = label_array(labels)
    depth = labels.shape[0]
    n = max(1, min(int(n), depth))
    counts = _slice_counts(labels)[:, 1:]
    present = counts.sum(axis=0) > 0
    if not present.any():
        return sorted({int(round(z)) for z in np.linspace(0, depth - 1, n + 2)[1:-1]}, reverse=True)
    counts = counts[:, present]
    shown = counts >= _SHOWN_FRACTION * counts.max(axis=0)
    area = counts.sum(axis=1)
    picks: list[int] = []
    uncovered = np.ones(counts.shape[1], dtype=bool)
    while uncovered.any() and len(picks) < n:
        gain = (shown & uncovered).sum(axis=1)
        z = int(np.lexsort((area, gain))[-1])
        picks.append(z)
        uncovered &= ~shown[z]
    labelled = np.flatnonzero(area >= _FILL_AREA * area.max())  # slices worth showing
    while len(picks) < min(n, labelled.size):
        distance = np.min(np.abs(labelled[:, None] - np.asarray(picks)[None, :]), axis=1)
        picks.append(int(labelled[np.argmax(distance * area[labelled])]))
    return sorted(set(picks), reverse=True)


def _extent(image: Volume) -> tuple[float, float, float, float]:
    """imshow extent (left, right, bottom, top) in mm of an axial slice; row 0 (anterior) at the top."""
    _, sy, sx = image.spacing
    _, oy, ox = image.origin
    _, ny, nx = image.shape
    return (ox - sx / 2, ox + (nx - 0.5) * sx, oy + (ny - 0.5) * sy, oy - sy / 2)


def _draw_ct(ax, image: Volume, z: int, window: tuple[float, float]) -> None:
    ax.imshow(
        image.data[z],
        cmap="gray",
        vmin=window[0],
        vmax=window[1],
        extent=_extent(image),
        interpolation="nearest",
        origin="upper",
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_anchor("N")
    for x, text in ((0.02, "R"), (0.98, "L")):
        ax.text(x, 0.5, text, transform=ax.transAxes, color="white", fontsize=9, ha="center", va="center")


def _draw_labels(
    ax, image: Volume, sl: np.ndarray, colors: Mapping[int, tuple], *, fill: bool = True, linewidth: float = 1.4
) -> None:
    _, sy, sx = image.spacing
    _, oy, ox = image.origin
    xs, ys = ox + np.arange(sl.shape[1]) * sx, oy + np.arange(sl.shape[0]) * sy
    rgba = np.zeros((*sl.shape, 4))
    for v, color in colors.items():
        mask = sl == v
        if not mask.any():
            continue
        rgba[mask] = (*color, _FILL_ALPHA)
        ax.contour(xs, ys, mask.astype(float), levels=[0.5], colors=[color], linewidths=linewidth)
    if fill and rgba[..., 3].any():
        ax.imshow(rgba, extent=_extent(image), interpolation="nearest", origin="upper")


def draw_case_report(
    fig: Any,
    image: Volume,
    labels: np.ndarray,
    *,
    uncertainty: np.ndarray | None = None,
    label_names: Mapping[str, int] | None = None,
    table_rows: Sequence[Mapping[str, Any]] | None = None,
    statistics: Sequence[Mapping[str, Any]] | None = None,
    title: str = "",
    uncertainty_label: str = "uncertainty",
) -> list[int]:
    """Draw the page of `write_case_report` into a matplotlib `Figure` (cleared first); returns the key slices."""
    labels = label_array(labels)
    if labels.shape != image.shape:
        raise GeometryMismatch(f"The label map has shape {labels.shape} but the image {image.shape}.")
    if uncertainty is not None:
        uncertainty = np.asarray(uncertainty, dtype=np.float32)
        if uncertainty.shape != image.shape:
            raise GeometryMismatch(f"The uncertainty map has shape {uncertainty.shape} but the image {image.shape}.")
    fig.clear()
    rows = case_table(labels, image.spacing, label_names, table_rows, image=image.data, statistics=statistics)
    colors = label_colors(r["label"] for r in rows)
    names = {r["label"]: r["organ"] for r in rows}
    window = contrast_limits(default_preset(image), image.data)
    slices = key_slices(labels, n=3 if uncertainty is not None else 4)
    panels: list[tuple[int, bool]] = [(z, False) for z in slices]
    if uncertainty is not None:
        per_slice = np.nansum(np.where(np.isfinite(uncertainty), uncertainty, 0.0), axis=(1, 2))
        panels.append((int(np.argmax(per_slice)), True))
    left, right, gap, top = 0.02, 0.98, 0.012, 0.855
    width = (right - left - gap * (len(panels) - 1)) / len(panels)
    (x0, x1, y1, y0) = _extent(image)
    page_w, page_h = fig.get_size_inches()
    height = min(0.5, width * page_w * (y1 - y0) / (x1 - x0) / page_h)  # the slice's physical aspect
    bottom = top - height
    for i, (z, is_map) in enumerate(panels):
        ax = fig.add_axes((left + i * (width + gap), bottom, width, height))
        _draw_ct(ax, image, z, window)
        sl = labels[z]
        where = f"slice {z + 1}/{image.shape[0]} (z = {image.origin[0] + z * image.spacing[0]:.1f} mm)"
        if is_map:
            u = uncertainty[z]
            finite = u[np.isfinite(u)]
            vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
            shown_map = np.ma.masked_where(~np.isfinite(u) | (u <= 0.01 * vmax), u)
            im = ax.imshow(
                shown_map,
                cmap="inferno",
                vmin=0.0,
                vmax=vmax,
                alpha=0.85,
                extent=_extent(image),
                interpolation="nearest",
                origin="upper",
            )
            _draw_labels(ax, image, sl, colors, fill=False, linewidth=0.6)
            cax = ax.inset_axes((0.1, -0.07, 0.8, 0.035))
            bar = fig.colorbar(im, cax=cax, orientation="horizontal")
            bar.set_label(uncertainty_label, fontsize=8)
            bar.ax.tick_params(labelsize=7)
            ax.set_title(f"most uncertain: {where}", fontsize=8.5)
        else:
            _draw_labels(ax, image, sl, colors)
            organs = [names[v] for v in colors if (sl == v).any()]
            ax.set_title(f"{where}\n{textwrap.fill(', '.join(organs) or 'no organ', 48)}", fontsize=8.5)
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=(*c, 0.6), edgecolor=c, label=names[v]) for v, c in colors.items()]
    if handles:
        fig.legend(
            handles=handles,
            loc="center",
            bbox_to_anchor=(0.5, bottom - 0.1),
            ncol=min(len(handles), 8),
            fontsize=9,
            frameon=False,
        )
    draw_table(fig.add_axes((0.03, 0.05, 0.94, bottom - 0.18)), rows, colors, table_rows is not None)
    z, y, x = image.shape
    sz, sy, sx = image.spacing
    fig.text(0.02, 0.975, title or image.name, fontsize=15, weight="bold", va="top")
    fig.text(
        0.02,
        0.935,
        f"{x}×{y}×{z} voxels of {sx:.2f}×{sy:.2f}×{sz:.2f} mm, {image.modality.value}; "
        f"axial slices, patient right on the left (radiological), display window {window[0]:g}…{window[1]:g}",
        fontsize=9,
        color="#444444",
        va="top",
    )
    note = (
        f"Volumes: voxel count × {image.voxel_volume_ml * 1000:.4g} mm³ from the exported label map. HU: mean ± std "
        "inside the organ. Axes: RECIST, the longest axial diameter × its perpendicular (largest part)."
    )
    later = []
    if any(r.get("members") or r.get("raters") for r in rows):
        later.append(
            "Members / raters: the lowest–highest volume of the ensemble members' own label maps / of the raters"
        )
    if table_rows is not None:
        later.append("Dice / HD95: the Metrics evaluation (mean over raters) of the case's prediction")
    if later:
        note += "\n" + ". ".join(later) + "."
    fig.text(0.02, 0.012, note, fontsize=8, color="#444444", va="bottom", linespacing=1.4)
    return slices


def write_case_report(
    path: str | os.PathLike,
    image: Volume,
    labels: np.ndarray,
    *,
    uncertainty: np.ndarray | None = None,
    label_names: Mapping[str, int] | None = None,
    table_rows: Sequence[Mapping[str, Any]] | None = None,
    statistics: Sequence[Mapping[str, Any]] | None = None,
    title: str = "",
    uncertainty_label: str = "uncertainty",
    overwrite: bool = False,
) -> Path:
    """Write the one-page PNG report of a case.

    Parameters
    ----------
    path : path-like
        PNG file to write; an existing file is refused unless `overwrite`.
    image : Volume
        The CT/MR in the canonical grid (its spacing gives the slices' aspect and the volumes).
    labels : (Z, Y, X) array of int
        The label map (e.g. the corrected annotation) on the image's grid.
    uncertainty : (Z, Y, X) float array, optional
        A map drawn over the slice where it sums highest (NaN ignored).
    label_names : mapping of str to int, optional
        Organ name → label value, for the legend and table.
    table_rows : list of dict, optional
        The metrics' tidy rows (`napari_segunc.metrics.suite.COLUMNS`): adds Dice and HD95 per organ.
    statistics : list of dict, optional
        Organ statistics rows (`napari_segunc.metrics.stats.OrganStats.row`): adds the members' and the raters'
        volume ranges per organ.
    title : str
        Page title (default the image's name).
    uncertainty_label : str
        Colour bar label of the map, e.g. ``"predictive entropy (nats)"``.

    Returns
    -------
    Path
        The file written (`PAGE_PIXELS` in size).

    Raises
    ------
    InvalidInput
        The file exists (without `overwrite`) or its folder does not; non-integer labels.
    GeometryMismatch
        The label map or the uncertainty map is not on the image's grid.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise InvalidInput(f"{path} already exists; choose another name (the report never overwrites a file).")
    fig = Figure(figsize=(PAGE_PIXELS[0] / PAGE_DPI, PAGE_PIXELS[1] / PAGE_DPI), dpi=PAGE_DPI)
    FigureCanvasAgg(fig)
    draw_case_report(
        fig,
        image,
        labels,
        uncertainty=uncertainty,
        label_names=label_names,
        table_rows=table_rows,
        statistics=statistics,
        title=title,
        uncertainty_label=uncertainty_label,
    )
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=PAGE_DPI), overwrite=overwrite)
