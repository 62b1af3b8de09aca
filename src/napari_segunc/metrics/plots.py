"""PNG figures of the evaluation: reliability diagram, risk–coverage curve, violin plots of a cohort comparison.

matplotlib's non-interactive Agg canvas is used directly (no pyplot state, safe in worker threads and the GUI).
Files are written atomically and never overwrite an existing file unless asked.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io.writers import atomic_write

__all__ = ["draw_reliability", "draw_risk_coverage", "plot_reliability", "plot_risk_coverage", "plot_violins"]

_MAX_CURVE_POINTS = 1000


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike, overwrite: bool) -> Path:
    return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"), overwrite=overwrite)


def _fmt(result: Any) -> str:
    value = getattr(result, "value", result)
    return "n/a" if value is None or math.isnan(float(value)) else f"{float(value):.4f}"


def plot_reliability(calibration: Any, path: str | os.PathLike, *, title: str = "", overwrite: bool = False) -> Path:
    """Reliability diagram: accuracy against confidence per bin (pooled over raters), and the voxels per bin.

    `calibration` is a `calibration.Calibration` (``bin_edges``, ``bin_confidence``, ``bin_accuracy``,
    ``bin_count``, ``ece``, ``ace``).
    """
    fig = _figure(5.0, 5.6)
    draw_reliability(fig, calibration, title=title)
    return _save(fig, path, overwrite)


def draw_reliability(fig: Any, calibration: Any, *, title: str = "") -> None:
    """Draw the reliability diagram of `plot_reliability` into a matplotlib `Figure` (cleared first), e.g. the
    figure of a Qt canvas."""
    fig.clear()
    edges = np.asarray(calibration.bin_edges, dtype=float)
    conf = np.asarray(calibration.bin_confidence, dtype=float)
    acc = np.asarray(calibration.bin_accuracy, dtype=float)
    count = np.asarray(calibration.bin_count, dtype=float)
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    width = np.diff(edges)
    ok = count > 0
    top.bar(edges[:-1][ok], acc[ok], width=width[ok], align="edge", color="#4c72b0", label="accuracy")
    top.bar(
        edges[:-1][ok],
        (conf - acc)[ok],
        bottom=acc[ok],
        width=width[ok],
        align="edge",
        color="#dd8452",
        alpha=0.55,
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], color="black", lw=1, ls="--", label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy (fraction of raters agreeing with the prediction)")
    top.set_title(f"{title + ': ' if title else ''}ECE {_fmt(calibration.ece)}, ACE {_fmt(calibration.ace)}")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(edges[:-1], np.maximum(count, 0), width=width, align="edge", color="#55a868")
    bottom.set_yscale("log" if count.max(initial=0) > 0 else "linear")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top-label probability)")
    bottom.set_ylabel("voxels")


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= _MAX_CURVE_POINTS:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, _MAX_CURVE_POINTS).round().astype(int))
    return x[keep], y[keep]


def plot_risk_coverage(curve: Any, path: str | os.PathLike, *, title: str = "", overwrite: bool = False) -> Path:
    """Risk–coverage curve (fd-shifts convention): selective risk of the voxels kept, most confident first.

    `curve` is a `ranking.RiskCoverage` (``coverage``, ``selective_risk``, ``aurc``, ``eaurc``).
    """
    fig = _figure(5.0, 4.2)
    draw_risk_coverage(fig, curve, title=title)
    return _save(fig, path, overwrite)


def draw_risk_coverage(fig: Any, curve: Any, *, title: str = "") -> None:
    """Draw the risk–coverage curve of `plot_risk_coverage` into a matplotlib `Figure` (cleared first)."""
    fig.clear()
    x, y = _thin(np.asarray(curve.coverage, dtype=float), np.asarray(curve.selective_risk, dtype=float))
    ax = fig.subplots()
    ax.plot(x, y, color="#c44e52", lw=1.5, drawstyle="steps-post")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("coverage (fraction of voxels kept, most confident first)")
    ax.set_ylabel("selective risk (fraction of raters disagreeing)")
    ax.set_title(f"{title + ': ' if title else ''}AURC {_fmt(curve.aurc)}, E-AURC {_fmt(curve.eaurc)}")
    ax.grid(alpha=0.3)


def plot_case_risk_coverage(curves: Mapping[str, Any], path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Risk–coverage over cases, one curve per case-level score (`napari_segunc.metrics.case_qc.FailureDetection`
    by label), with its AURC and AUROC in the legend."""
    fig = _figure(6.4, 4.4)
    ax = fig.subplots()
    for label, fd in curves.items():
        ax.plot(
            fd.curve.coverage,
            fd.curve.selective_risk,
            drawstyle="steps-post",
            lw=1.5,
            label=f"{label}: AURC {fd.aurc:.3f}, AUROC {_fmt(fd.auroc)}",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("coverage (fraction of cases kept, most confident first)")
    ax.set_ylabel("selective risk (mean 1 − Dice of the kept cases)")
    ax.set_title("Case-level QC: referring the most uncertain cases first")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path, overwrite)


def plot_violins(
    values: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    metric: str,
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """Violin plot per group with every case drawn as a point (seed 000, Figure 4). NaN values are left out."""
    groups = list(values)
    data = [np.asarray([v for v in values[g] if not math.isnan(v)], dtype=float) for g in groups]
    fig = _figure(max(4.0, 1.3 * len(groups) + 1.5), 4.2)
    ax = fig.subplots()
    positions = np.arange(1, len(groups) + 1)
    drawable = [i for i, d in enumerate(data) if d.size >= 2 and np.ptp(d) > 0]
    if drawable:
        parts = ax.violinplot([data[i] for i in drawable], positions=positions[drawable], showmedians=True)
        for body in parts["bodies"]:
            body.set_alpha(0.35)
    rng = np.random.default_rng(0)  # fixed jitter: the same figure every time
    for pos, d in zip(positions, data, strict=True):
        ax.scatter(pos + rng.uniform(-0.08, 0.08, d.size), d, s=12, color="black", zorder=3)
    ax.set_xticks(positions, [f"{g}\n(n={d.size})" for g, d in zip(groups, data, strict=True)])
    ax.set_ylabel(metric)
    ax.set_title(title or metric)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path, overwrite)
