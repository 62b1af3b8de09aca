"""The report's organ table: volumes, the members' and raters' volume ranges, HU, RECIST axes, Dice and HD95 per
organ (`case_table`), as text (`table_text`) and drawn on a page (`draw_table`).

One responsibility, the table of `napari_segunc.report.page`'s page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInput

__all__ = ["MAX_TABLE_ROWS", "case_table", "draw_table", "label_array", "organ_volumes", "table_text"]

MAX_TABLE_ROWS = 16
_METRIC_RATERS = ("mean", "consensus")  # preferred aggregate rows of the metrics table, in order


def label_array(labels: Any) -> np.ndarray:
    """`labels` as a non-negative integer array (a boolean mask as uint8); refused otherwise."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.view(np.uint8)
    if labels.dtype.kind not in "iu":
        raise InvalidInput(f"The label map holds {labels.dtype} values; a report needs integer labels.")
    if labels.size and labels.min() < 0:
        raise InvalidInput("The label map holds negative values; labels are 0 (background) or positive integers.")
    return labels


def _names(label_names: Mapping[str, int] | None) -> dict[int, str]:
    return {int(v): str(k) for k, v in (label_names or {}).items() if int(v) > 0}


def organ_volumes(
    labels: np.ndarray, spacing: Sequence[float], names: Mapping[str, int] | None = None
) -> list[dict[str, Any]]:
    """Voxel count and volume of every organ.

    Parameters
    ----------
    labels : (Z, Y, X) array of int
        Label map, 0 = background.
    spacing : 3 floats
        Voxel size in mm.
    names : mapping of str to int, optional
        Organ name → label value. Named organs are listed even when absent (0 voxels); labels present but unnamed
        are called ``label_<value>``.

    Returns
    -------
    list of dict
        One row per organ in increasing label value: ``organ``, ``label``, ``voxels``, ``volume_ml``
        (voxels × voxel volume, 1 ml = 1000 mm³).
    """
    labels = label_array(labels)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InvalidInput(f"Voxel spacing must be three positive sizes in mm, got {spacing}.")
    counts = np.bincount(labels.ravel()) if labels.size else np.zeros(1, dtype=np.int64)
    by_value = _names(names)
    values = sorted(set(by_value) | {int(v) for v in np.flatnonzero(counts) if v > 0})
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = []
    for v in values:
        n = int(counts[v]) if v < counts.size else 0
        rows.append({"organ": by_value.get(v, f"label_{v}"), "label": v, "voxels": n, "volume_ml": n * voxel_ml})
    return rows


def _metric(rows: Sequence[Mapping[str, Any]], organ: str, metric: str) -> float:
    found = {str(r.get("rater")): r.get("value") for r in rows if r.get("organ") == organ and r.get("metric") == metric}
    for rater in _METRIC_RATERS:
        if rater in found:
            return _float(found[rater])
    return _float(next(iter(found.values()))) if len(found) == 1 else math.nan


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


_SPREAD_KEYS = (
    "members",
    "member_volume_min_ml",
    "member_volume_max_ml",
    "raters",
    "rater_volume_min_ml",
    "rater_volume_max_ml",
)


def case_table(
    labels: np.ndarray,
    spacing: Sequence[float],
    names: Mapping[str, int] | None = None,
    metrics_rows: Sequence[Mapping[str, Any]] | None = None,
    *,
    image: np.ndarray | None = None,
    statistics: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """`organ_volumes` rows with each organ's RECIST axes (``long_mm``, ``short_mm``: the largest connected
    component's longest axial diameter and its perpendicular, `napari_segunc.metrics.stats.recist_diameters`), plus
    ``dice`` and ``hd95`` (mm) per organ when the metrics' tidy rows are given, and the image's ``hu_mean`` and
    ``hu_std`` inside each organ when `image` is given.

    The metric of an organ is its ``"mean"`` row (mean over raters), else its ``"consensus"`` row, else its only
    row; NaN when the metrics table has none. `statistics`, rows of `napari_segunc.metrics.stats.OrganStats.row`
    (the Metrics dock's Statistics), add each organ's volume spread: ``members``, ``member_volume_min_ml``,
    ``member_volume_max_ml``, ``raters``, ``rater_volume_min_ml``, ``rater_volume_max_ml`` (matched by organ name).
    """
    from ..metrics.stats import recist_diameters

    rows = organ_volumes(labels, spacing, names)
    for row in rows:
        components = recist_diameters(np.asarray(labels) == row["label"], spacing) if row["voxels"] else []
        row["long_mm"] = components[0].long_mm if components else float("nan")
        row["short_mm"] = components[0].short_mm if components else float("nan")
        if image is not None:
            inside = np.asarray(image, dtype=np.float64)[np.asarray(labels) == row["label"]]
            row["hu_mean"] = float(inside.mean()) if inside.size else float("nan")
            row["hu_std"] = float(inside.std()) if inside.size else float("nan")
    spreads = {str(r["organ"]): r for r in statistics or ()}
    for row in rows:
        found = spreads.get(row["organ"])
        if found is not None:
            row.update({k: found[k] for k in _SPREAD_KEYS if k in found})
    if metrics_rows is not None:
        for row in rows:
            row["dice"] = _metric(metrics_rows, row["organ"], "dice")
            row["hd95"] = _metric(metrics_rows, row["organ"], "hd95")
    return rows


def table_text(rows: list[dict[str, Any]], with_metrics: bool) -> tuple[list[str], list[list[str]]]:
    def fmt(v: float, digits: int) -> str:
        return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}"

    def spread(r: Mapping[str, Any], who: str) -> str:
        if not r.get(f"{who}s"):
            return "—"
        return f"{fmt(r[f'{who}_volume_min_ml'], 0)}–{fmt(r[f'{who}_volume_max_ml'], 0)}"

    with_hu = any("hu_mean" in r for r in rows)
    spreads = [who for who in ("member", "rater") if any(r.get(f"{who}s") for r in rows)]
    columns = ["organ", "label", "voxels", "volume (ml)"] + [f"{who}s (ml)" for who in spreads]
    columns += (["HU"] if with_hu else []) + ["axes (mm)"]
    columns += ["Dice", "HD95 (mm)"] if with_metrics else []
    cells = []
    for r in rows:
        axes = f"{fmt(r['long_mm'], 0)} × {fmt(r['short_mm'], 0)}" if "long_mm" in r else "—"
        hu = [f"{fmt(r.get('hu_mean', math.nan), 0)} ± {fmt(r.get('hu_std', math.nan), 0)}"] if with_hu else []
        cells.append(
            [r["organ"], str(r["label"]), f"{r['voxels']:,}", fmt(r["volume_ml"], 1)]
            + [spread(r, who) for who in spreads]
            + [*hu, axes]
            + ([fmt(r["dice"], 3), fmt(r["hd95"], 1)] if with_metrics else [])
        )
    return columns, cells


def draw_table(ax, rows: list[dict[str, Any]], colors: Mapping[int, tuple], with_metrics: bool) -> None:
    """The organ table of the page into the matplotlib axes `ax` (organ cells in their `colors`)."""
    ax.axis("off")
    if not rows:
        ax.text(0.5, 0.7, "No labelled voxels and no organ names: nothing to tabulate.", ha="center", fontsize=11)
        return
    shown = rows
    if len(rows) > MAX_TABLE_ROWS:  # the largest organs; the rest counted in a last row
        shown = sorted(sorted(rows, key=lambda r: -r["voxels"])[: MAX_TABLE_ROWS - 1], key=lambda r: r["label"])
    columns, cells = table_text(shown, with_metrics)
    wide = len(columns) > 8  # the organ and label columns give way to the volume ranges
    first, label = (0.15, 0.045) if wide else (0.26, 0.74 / (len(columns) - 1))
    if len(shown) < len(rows):
        cells.append([f"… {len(rows) - len(shown)} more organs", *[""] * (len(columns) - 1)])
    table = ax.table(
        cellText=cells,
        colLabels=columns,
        loc="upper center",
        cellLoc="center",
        colWidths=[first, label] + [(1 - first - label) / (len(columns) - 2)] * (len(columns) - 2),
    )
    table.auto_set_font_size(False)
    table.set_fontsize(9.5)
    table.scale(1.0, 1.25)
    for j in range(len(columns)):
        table[0, j].set_facecolor("#e8e8e8")
        table[0, j].set_text_props(weight="bold")
    for i, r in enumerate(shown, start=1):
        color = colors.get(int(r["label"]))
        if color is not None:
            table[i, 0].set_facecolor((*color, 0.45))
