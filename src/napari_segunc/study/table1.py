"""A study's summary: seed 000's Table 1, the comparisons between levels, and the case-level QC.

Table 1 has one row per level (individual models, per-group ensembles, the general ensemble) and the columns of
seed 000: DSC (%), confidence (%), ECE (× 10⁻³) and CRPS (cm³), each the mean over every (case, member or group) of
that level of

- DSC: the mean over organs of the consensus Dice (``dice_consensus``, rater ``consensus``) × 100;
- confidence: the mean over organs of ``confidence`` × 100;
- ECE: the top-label ECE, mean over raters (``ece``, organ ``all``, rater ``mean``) × 1000;
- CRPS: the mean over organs of the volume CRPS (``crps_volume``, ml = cm³).

`write_summary` writes ``table1.csv`` / ``table1.md``, ``compare/`` (one-sided Mann–Whitney U between the levels with
violins, `napari_segunc.metrics.compare`) for the DSC and the ECE, and ``qc/`` (`napari_segunc.metrics.case_qc` on
the general ensemble's cases).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .runner import LEVELS

__all__ = ["TABLE1_COLUMNS", "table1", "table1_markdown", "write_summary"]

#: (column, metric, organ-level?, rater, scale)
_COLUMNS = (
    ("DSC (%)", "dice_consensus", True, "consensus", 100.0),
    ("Confidence (%)", "confidence", True, "consensus", 100.0),
    ("ECE (×10⁻³)", "ece", False, "mean", 1000.0),
    ("CRPS (cm³)", "crps_volume", True, "consensus", 1.0),
)
TABLE1_COLUMNS = ("level", *(c[0] for c in _COLUMNS), "n")


def _value(row: Mapping[str, Any]) -> float:
    try:
        return float(row["value"])
    except (TypeError, ValueError):
        return math.nan


def table1(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The Table 1 rows (module docstring); ``n`` counts the (case, member or group) evaluations of a level."""
    per: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    for r in rows:
        level = str(r.get("level", ""))
        if level not in LEVELS:
            continue
        for column, metric, by_organ, rater, _scale in _COLUMNS:
            if r.get("metric") != metric or r.get("rater") != rater:
                continue
            if by_organ == (r.get("organ") == "all"):
                continue
            per.setdefault((level, str(r.get("group")), str(r.get("case"))), {}).setdefault(column, []).append(
                _value(r)
            )
    out = []
    for level, title in LEVELS.items():
        units = [v for k, v in per.items() if k[0] == level]
        row: dict[str, Any] = {"level": title}
        for column, _m, _o, _r, scale in _COLUMNS:
            means = [np.nanmean(u[column]) for u in units if column in u and np.isfinite(u[column]).any()]
            row[column] = float(np.mean(means)) * scale if means else math.nan
        row["n"] = len(units)
        out.append(row)
    return out


def table1_markdown(table: Sequence[Mapping[str, Any]]) -> str:
    """Table 1 as a Markdown table, 2 decimals (3 for the CRPS), as in seed 000."""

    def cell(column: str, v: float) -> str:
        return "n/a" if v is None or math.isnan(v) else f"{v:.3f}" if column.startswith("CRPS") else f"{v:.2f}"

    columns = [c[0] for c in _COLUMNS]
    lines = ["| | " + " | ".join(columns) + " | n |", "|---|" + "---:|" * (len(columns) + 1)]
    for r in table:
        lines.append(f"| {r['level']} | " + " | ".join(cell(c, r[c]) for c in columns) + f" | {r['n']} |")
    return "\n".join(lines) + "\n"


def write_summary(rows: Sequence[Mapping[str, Any]], out: str | Path, *, dice_threshold: float = 0.8) -> list[Path]:
    """``table1.csv``, ``table1.md``, ``compare/`` and ``qc/`` of a study's rows into `out` (replacing earlier ones:
    they are derived from the committed cases)."""
    import shutil

    from ..io import atomic_write, write_csv
    from ..metrics.case_qc import cohort_cases, failure_detection
    from ..metrics.compare import write_comparison
    from ..metrics.plots import plot_case_risk_coverage

    out = Path(out)
    table = table1(rows)
    written = [write_csv(table, out / "table1.csv", columns=list(TABLE1_COLUMNS), overwrite=True)]
    text = table1_markdown(table)
    written.append(atomic_write(out / "table1.md", lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=True))
    good = [{**r, "level": LEVELS[r["level"]]} for r in rows if r.get("level") in LEVELS]  # readable, in order
    levels = {r.get("level") for r in good}
    for sub in ("compare", "qc"):
        shutil.rmtree(out / sub, ignore_errors=True)
    if len(levels) >= 2:
        for metric in ("dice_consensus", "ece"):
            written += write_comparison(good, metric, out / "compare", group_column="level", overwrite=True)
    ensemble = [r for r in good if r.get("level") == LEVELS["ensemble"]]
    cases = cohort_cases(ensemble).get("all", {})
    if len(cases) >= 2:
        names = sorted(cases)
        dice = [cases[c]["dice"] for c in names]
        scores = {s: [cases[c][s] for c in names] for s in next(iter(cases.values())) if s != "dice"}
        scores = {s: v for s, v in scores.items() if np.isfinite(v).any()}
        results = failure_detection(scores, dice, threshold=dice_threshold)
        (out / "qc").mkdir(parents=True, exist_ok=True)
        qc_rows = [r.row() for r in results]
        written.append(write_csv(qc_rows, out / "qc" / "qc.csv", columns=list(qc_rows[0]), overwrite=True))
        written.append(plot_case_risk_coverage({r.score: r for r in results}, out / "qc" / "qc_risk_coverage.png"))
    return written
