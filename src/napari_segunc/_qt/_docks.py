"""Open napari-segunc's docks the way a user does (Plugins ▸ SegUnc ▸ …), tabbed together on the right.

napari hands a dock opened from the Plugins menu a `PublicOnlyProxy` of the viewer; the demo, `make screenshots` and
the GUI tests all open docks here so that they meet what every user meets.
"""

from __future__ import annotations

from typing import Any

PLUGIN = "napari-segunc"
#: The docks, in the order of the Plugins ▸ SegUnc menu (their ``display_name`` in napari.yaml).
DOCK_NAMES = ("Open study", "Ensemble", "Uncertainty & raters", "MedSAM2", "Metrics", "Export")


def open_dock(viewer: Any, name: str, *, tabify: bool = True) -> tuple[Any, Any]:
    """Open dock `name` (one of `DOCK_NAMES`) as the Plugins menu does, tabbed with the docks already on the right,
    and bring it to the front; returns ``(dock, widget)``."""
    if name not in DOCK_NAMES:
        raise ValueError(f"unknown dock {name!r}: one of {', '.join(DOCK_NAMES)}")
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=tabify)
    dock.show()
    dock.raise_()
    return dock, widget
