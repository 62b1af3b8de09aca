"""Compare groups of a cohort on one metric: pairwise one-sided Mann–Whitney U tests and violin plots.

As in seed 000 (Figure 4): for every organ and every ordered pair of groups (A, B), scipy's
``mannwhitneyu(a, b, alternative="less")`` tests whether A's values tend to be lower than B's (the right question
for errors such as ECE, HD95 or CRPS; read the (B, A) row for scores where higher is better, such as Dice). One value
per case and group: the metric's aggregate row (``mean`` over raters, ``consensus``, ``pooled``, ...), never the
per-rater rows. NaN values and failed cases are left out and counted.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInput
from ..io.writers import write_csv

__all__ = ["AGGREGATES", "COMPARE_COLUMNS", "compare_groups", "group_values", "read_results", "write_comparison"]

#: ``rater`` values of aggregate rows (one per organ, metric and case).
AGGREGATES = ("mean", "consensus", "pooled", "roi", "prediction")

COMPARE_COLUMNS = (
    "metric",
    "organ",
    "group_a",
    "group_b",
    "n_a",
    "n_b",
    "median_a",
    "median_b",
    "u_statistic",
    "p_value",
    "alternative",
    "n_nan_a",
    "n_nan_b",
)


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a results CSV (``segunc evaluate`` / ``evaluate-cohort``), ``value`` as float."""
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(f"{p}: cannot read the results table ({exc}).") from None
    if not rows or "metric" not in rows[0] or "value" not in rows[0]:
        raise InvalidInput(f"{p}: not a results table of segunc evaluate (columns metric, value, ... are missing).")
    for row in rows:
        try:
            row["value"] = float(row["value"]) if row["value"] not in ("", None) else math.nan
        except ValueError:
            raise InvalidInput(f"{p}: value '{row['value']}' is not a number.") from None
    return rows


def group_values(
    rows: Sequence[Mapping[str, Any]], metric: str, *, group_column: str = "group"
) -> dict[str, dict[str, list[float]]]:
    """organ → group → one value per case (aggregate rows of `metric`, in table order)."""
    if rows and group_column not in rows[0]:
        raise InvalidInput(f"The results have no '{group_column}' column (columns: {list(rows[0])}).")
    out: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        if row["metric"] != metric or row.get("rater") not in AGGREGATES:
            continue
        out.setdefault(str(row["organ"]), {}).setdefault(str(row[group_column]), []).append(float(row["value"]))
    if not out:
        available = sorted({r["metric"] for r in rows} - {"error"})
        raise InvalidInput(f"No '{metric}' rows in the results; metrics present: {', '.join(available)}.")
    return out


def compare_groups(
    rows: Sequence[Mapping[str, Any]], metric: str, *, group_column: str = "group"
) -> tuple[list[dict[str, Any]], dict[str, dict[str, list[float]]]]:
    """Pairwise one-sided Mann–Whitney U tests for every organ; returns (test rows, organ → group → values)."""
    from scipy.stats import mannwhitneyu

    values = group_values(rows, metric, group_column=group_column)
    table = []
    for organ, groups in values.items():
        names = list(groups)
        for a in names:
            for b in names:
                if a == b:
                    continue
                va = np.asarray([v for v in groups[a] if not math.isnan(v)])
                vb = np.asarray([v for v in groups[b] if not math.isnan(v)])
                if va.size and vb.size:
                    res = mannwhitneyu(va, vb, alternative="less")
                    u, pv = float(res.statistic), float(res.pvalue)
                else:
                    u = pv = math.nan
                table.append(
                    dict(
                        metric=metric,
                        organ=organ,
                        group_a=a,
                        group_b=b,
                        n_a=int(va.size),
                        n_b=int(vb.size),
                        median_a=float(np.median(va)) if va.size else math.nan,
                        median_b=float(np.median(vb)) if vb.size else math.nan,
                        u_statistic=u,
                        p_value=pv,
                        alternative="less",
                        n_nan_a=len(groups[a]) - int(va.size),
                        n_nan_b=len(groups[b]) - int(vb.size),
                    )
                )
    return table, values


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "organ"


def write_comparison(
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    out_dir: str | os.PathLike,
    *,
    group_column: str = "group",
    overwrite: bool = False,
) -> list[Path]:
    """``mannwhitney_<metric>.csv`` and one ``violin_<metric>_<organ>.png`` per organ in `out_dir`."""

    from ..io.outputs import relocate, staged_folder

    table, values = compare_groups(rows, metric, group_column=group_column)
    with staged_folder(out_dir, overwrite=overwrite) as out:
        written = _write_comparison_files(table, values, metric, out)
    return relocate(written, out, out_dir)


def _write_comparison_files(table, values, metric: str, out: Path) -> list[Path]:
    from .plots import plot_violins

    overwrite = False
    written = [write_csv(table, out / f"mannwhitney_{_safe(metric)}.csv", columns=COMPARE_COLUMNS, overwrite=overwrite)]
    for organ, groups in values.items():
        written.append(
            plot_violins(
                groups,
                out / f"violin_{_safe(metric)}_{_safe(organ)}.png",
                metric=metric,
                title=f"{metric} — {organ}",
                overwrite=overwrite,
            )
        )
    return written
