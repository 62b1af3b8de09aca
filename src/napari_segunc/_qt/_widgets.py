"""Small Qt building blocks shared by the docks: rows, forms, check lists and layer combo boxes.

A dock sits in napari's right-hand dock area, 376 px wide by default. No row of a dock may need more than that:
Qt grows a dock to its contents' minimum size, and a dock that widens shrinks napari's canvas (the whole scene is
redrawn). Combo boxes of layer names are the usual culprit (by default a combo is as wide as its longest item), so
`layer_combo` makes them shrink to a few characters and show the full name in their tooltip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLayout,
    QListWidget,
    QListWidgetItem,
    QTableWidget,
    QWidget,
)

__all__ = ["CheckList", "fill", "fit_columns", "form", "hbox", "layer_combo", "narrow_combo"]

#: Characters a shrunken combo box still shows (the rest is elided; the tooltip holds the whole text).
COMBO_CHARS = 12


def narrow_combo(combo: QComboBox, chars: int = COMBO_CHARS) -> QComboBox:
    """Let `combo` shrink to `chars` characters whatever its items; its tooltip shows the current item."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(chars)
    combo.currentTextChanged.connect(combo.setToolTip)
    return combo


def fit_columns(table: QTableWidget, *, stretch: int, tips: Sequence[str] = ()) -> None:
    """A table that fits its dock's width: column `stretch` takes the room left, the others their contents; no row
    numbers (the tables have their own first column); `tips` explain the (short) headers."""
    header = table.horizontalHeader()
    for column in range(table.columnCount()):
        mode = QHeaderView.ResizeMode.Stretch if column == stretch else QHeaderView.ResizeMode.ResizeToContents
        header.setSectionResizeMode(column, mode)
    table.verticalHeader().setVisible(False)
    for column, tip in enumerate(tips):
        table.horizontalHeaderItem(column).setToolTip(tip)


def layer_combo() -> QComboBox:
    """A combo box for layer names (which can be long: "working annotation (phantom_ct)")."""
    return narrow_combo(QComboBox())


class CheckList(QListWidget):
    """Names with check boxes; a name keeps its state across refreshes. A name too long for the dock is cut at
    its end (its tooltip holds it whole) rather than giving the list a horizontal scrollbar."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)

    def set_names(self, names: Sequence[str], default: Callable[[str], bool]) -> None:
        state = {self.item(i).text(): self.item(i).checkState() for i in range(self.count())}
        blocked = self.blockSignals(True)
        self.clear()
        for name in names:
            item = QListWidgetItem(name)
            item.setToolTip(name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(state.get(name, Qt.Checked if default(name) else Qt.Unchecked))
            self.addItem(item)
        self.blockSignals(blocked)

    def checked(self) -> list[str]:
        return [self.item(i).text() for i in range(self.count()) if self.item(i).checkState() == Qt.Checked]

    def set_checked(self, names: Sequence[str]) -> None:
        for i in range(self.count()):
            self.item(i).setCheckState(Qt.Checked if self.item(i).text() in names else Qt.Unchecked)


def hbox(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for widget in widgets:
        row.addWidget(widget)
    return row


def form(*rows: tuple[str, QWidget | QLayout] | QWidget | QLayout) -> QFormLayout:
    """A form from ``(label, field)`` pairs and full-width rows."""
    layout = QFormLayout()
    for row in rows:
        layout.addRow(*row) if isinstance(row, tuple) else layout.addRow(row)
    return layout


def fill(combo: QComboBox, names: Sequence[str], pick: str | None) -> None:
    """Replace a combo's items without emitting signals; select `pick` (else the first)."""
    blocked = combo.blockSignals(True)
    combo.clear()
    combo.addItems(list(names))
    combo.setCurrentIndex(max(combo.findText(pick or ""), 0))
    combo.blockSignals(blocked)
    combo.setToolTip(combo.currentText())
