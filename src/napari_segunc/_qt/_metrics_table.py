"""The Metrics widget's per-organ table: one row per organ (then ``all``), one column per metric.

Each cell holds the aggregate value of `napari_segunc.metrics.prediction.organ_table` (full precision in the
item's ``UserRole``, 4 significant digits on screen); a NaN cell reads "n/a" with the suite's reason as tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from qtpy.QtCore import Qt
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


#: The statistics tab's columns: (header, row key or a function of the row, tooltip).
_STATS_COLUMNS = (
    ("ml", "volume_ml", "volume (ml): voxels × voxel volume"),
    ("HU", None, "the image's mean ± standard deviation inside the organ (HU for CT)"),
    ("Σp ml", "soft_volume_ml", "soft volume (ml): Σ of the organ's probability × voxel volume"),
    ("raters ml", None, "the raters' volumes (ml): lowest – highest"),
    ("axes mm", None, "RECIST axes (mm): the longest axial diameter × its perpendicular, largest component"),
    ("z", "long_axis_slice", "the axial slice of the longest diameter"),
)


class StatsTable(QTableWidget):
    """Read-only table of `napari_segunc.metrics.stats.organ_statistics` rows (one per organ)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.rows: list[dict] = []

    def show_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.rows = [dict(r) for r in rows]
        self.clear()
        self.setColumnCount(len(_STATS_COLUMNS))
        self.setRowCount(len(rows))
        self.setHorizontalHeaderLabels([c[0] for c in _STATS_COLUMNS])
        self.setVerticalHeaderLabels([str(r["organ"]) for r in rows])
        for c, (_header, _key, tip) in enumerate(_STATS_COLUMNS):
            self.horizontalHeaderItem(c).setToolTip(tip)
        for i, r in enumerate(rows):
            for c, text in enumerate(self._texts(r)):
                item = QTableWidgetItem(text)
                item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                self.setItem(i, c, item)
        self.resizeColumnsToContents()

    @staticmethod
    def _texts(r: Mapping[str, Any]) -> list[str]:
        def num(v: float, digits: int = 1) -> str:
            return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}"

        raters = f"{num(r['rater_volume_min_ml'], 0)}–{num(r['rater_volume_max_ml'], 0)}" if r.get("raters") else "n/a"
        return [
            num(r["volume_ml"]),
            f"{num(r['mean'], 0)}±{num(r['std'], 0)}",
            num(r["soft_volume_ml"]),
            raters,
            f"{num(r['long_axis_mm'], 0)}×{num(r['short_axis_mm'], 0)}",
            str(r["long_axis_slice"]),
        ]

    def value(self, organ: str, column: str) -> str:
        """The text shown for (organ, column header)."""
        row = [str(r["organ"]) for r in self.rows].index(organ)
        col = [c[0] for c in _STATS_COLUMNS].index(column)
        return self.item(row, col).text()
