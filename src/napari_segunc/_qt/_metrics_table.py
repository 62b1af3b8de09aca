"""The Metrics widget's per-organ table: one row per organ (then ``all``), one column per metric.

Each cell holds the aggregate value of `napari_segunc.metrics.prediction.organ_table` (full precision in the
item's ``UserRole``, 4 significant digits on screen); a NaN cell reads "n/a" with the suite's reason as tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

from ..metrics.prediction import organ_table

__all__ = ["MetricsTable", "StatsTable"]

_ROLE = Qt.ItemDataRole.UserRole


class MetricsTable(QTableWidget):
    """Read-only table of an evaluation's aggregate values."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)

    @property
    def metrics(self) -> list[str]:
        return [self.horizontalHeaderItem(c).text() for c in range(self.columnCount())]

    @property
    def organs(self) -> list[str]:
        return [self.verticalHeaderItem(r).text() for r in range(self.rowCount())]

    def show_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Replace the contents by the aggregate rows of a tidy table (`suite.COLUMNS`)."""
        metrics, table = organ_table(rows)
        self.clear()
        self.setColumnCount(len(metrics))
        self.setRowCount(len(table))
        self.setHorizontalHeaderLabels(metrics)
        self.setVerticalHeaderLabels([organ for organ, _ in table])
        for r, (_organ, cells) in enumerate(table):
            for c, metric in enumerate(metrics):
                row = cells.get(metric)
                item = QTableWidgetItem()
                item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                if row is None:
                    item.setToolTip("not defined for this row")
                else:
                    value = float(row["value"])
                    item.setData(_ROLE, value)
                    item.setText("n/a" if math.isnan(value) else f"{value:.4g}")
                    unit = f" {row['unit']}" if row["unit"] else ""
                    item.setToolTip(
                        row["reason"] if math.isnan(value) else f"{metric} ({row['rater']}): {value!r}{unit}"
                    )
                    self.horizontalHeaderItem(c).setToolTip(f"{metric}: {row['rater']}{',' + unit if unit else ''}")
                self.setItem(r, c, item)
        self.resizeColumnsToContents()

    def value(self, organ: str, metric: str) -> float:
        """The value of one cell (KeyError when the table has no such cell or the metric is not defined there)."""
        organs, metrics = self.organs, self.metrics
        if organ not in organs or metric not in metrics:
            raise KeyError(f"no cell organ={organ!r} metric={metric!r}")
        value = self.item(organs.index(organ), metrics.index(metric)).data(_ROLE)
        if value is None:
            raise KeyError(f"{metric!r} is not defined for {organ!r}")
        return float(value)

    def tsv(self) -> str:
        """Tab-separated text: a header row (``organ`` and the metrics), then one row per organ; values in full
        precision, ``NaN`` for undefined values, empty where the metric does not apply."""
        metrics = self.metrics
        lines = ["\t".join(["organ", *metrics])]
        for r, organ in enumerate(self.organs):
            cells = [organ]
            for c in range(len(metrics)):
                value = self.item(r, c).data(_ROLE)
                cells.append("" if value is None else "NaN" if math.isnan(value) else repr(float(value)))
            lines.append("\t".join(cells))
        return "\n".join(lines) + "\n"


#: The statistics tab's columns: (header, tooltip).
_STATS_COLUMNS = (
    ("ml", "volume (ml): voxels × voxel volume"),
    ("HU", "the image's mean ± standard deviation inside the organ (HU for CT)"),
    ("Σp", "soft volume (ml): Σ of the organ's probability × voxel volume"),
    ("members", "the ensemble members' own volumes (ml): lowest – highest (each member's argmax)"),
    ("raters", "the raters' volumes (ml): lowest – highest"),
    (
        "axes mm",
        "RECIST axes (mm): the longest axial diameter × its perpendicular, largest component; "
        "double-click a row to go to its slice",
    ),
)


class StatsTable(QTableWidget):
    """Read-only table of `napari_segunc.metrics.stats.organ_statistics` rows (one per organ). Double-clicking a
    row emits `slice_chosen` with the slice of the organ's longest axial diameter."""

    slice_chosen = Signal(int)

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.rows: list[dict] = []
        font = self.font()  # six columns and the organ names in a dock's width
        font.setPointSizeF(font.pointSizeF() * 0.88)
        self.setFont(font)
        self.horizontalHeader().setFont(font)
        self.verticalHeader().setFont(font)
        self.cellDoubleClicked.connect(self._chosen)
        self.verticalHeader().sectionDoubleClicked.connect(lambda r: self._chosen(r, 0))

    def _chosen(self, row: int, _column: int) -> None:
        if 0 <= row < len(self.rows) and int(self.rows[row]["long_axis_slice"]) >= 0:
            self.slice_chosen.emit(int(self.rows[row]["long_axis_slice"]))

    def show_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.rows = [dict(r) for r in rows]
        self.clear()
        self.setColumnCount(len(_STATS_COLUMNS))
        self.setRowCount(len(rows))
        self.setHorizontalHeaderLabels([c[0] for c in _STATS_COLUMNS])
        self.setVerticalHeaderLabels([str(r["organ"]) for r in rows])
        for c, (_header, tip) in enumerate(_STATS_COLUMNS):
            self.horizontalHeaderItem(c).setToolTip(tip)
        for i, r in enumerate(rows):
            for c, (text, tip) in enumerate(self._cells(r)):
                item = QTableWidgetItem(text)
                item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                item.setToolTip(tip)
                self.setItem(i, c, item)
        self.resizeColumnsToContents()

    @staticmethod
    def _cells(r: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(text, tooltip) of each column."""

        def num(v: float, digits: int = 1) -> str:
            return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}"

        def spread(who: str) -> tuple[str, str]:
            n = r.get(f"{who}s")
            if not n:
                return "n/a", f"no {who} volumes ({'run the Ensemble dock' if who == 'member' else 'tick raters'})"
            low, high, std = (r[f"{who}_volume_{k}_ml"] for k in ("min", "max", "std"))
            return (
                f"{num(low, 0)}–{num(high, 0)}",
                f"{n} {who}(s): {low:.1f}–{high:.1f} ml, standard deviation {std:.1f} ml",
            )

        z = int(r["long_axis_slice"])
        components = int(r.get("components", 0))
        return [
            (num(r["volume_ml"]), f"{r['volume_ml']:.2f} ml"),
            (f"{num(r['mean'], 0)}±{num(r['std'], 0)}", ""),
            (num(r["soft_volume_ml"]), ""),
            spread("member"),
            spread("rater"),
            (
                f"{num(r['long_axis_mm'], 0)}×{num(r['short_axis_mm'], 0)}",
                f"on slice {z} (largest of {components} part(s)); double-click to go there" if z >= 0 else "",
            ),
        ]

    def value(self, organ: str, column: str) -> str:
        """The text shown for (organ, column header)."""
        row = [str(r["organ"]) for r in self.rows].index(organ)
        col = [c[0] for c in _STATS_COLUMNS].index(column)
        return self.item(row, col).text()
