"""Organ colours: one table for the canvas (labels layers, box prompts), the docks and the report.

Label value v is drawn in ``PALETTE[(v - 1) % len(PALETTE)]`` everywhere; raters, whose maps are drawn as outlines
over the same organs, get one colour each (`RATER_COLORS`) so that their disagreement is visible.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "PALETTE",
    "RATER_COLORS",
    "RATER_COLOR_NAMES",
    "label_color",
    "label_colormap",
    "label_colors",
    "rater_colormap",
]

#: Distinct colours (Trubetskoy's list without greys).
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#ffe119", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000", "#ffd8b1",
           "#000075")  # fmt: skip
#: One outline colour per rater (none of them used by the review mask or the model-vs-raters codes).
RATER_COLORS = ("#00e5ff", "#ff4fd8", "#9dff00", "#ffb000", "#b388ff", "#1e90ff", "#ff6e6e", "#6effc8")
#: Their names, for legends.
RATER_COLOR_NAMES = ("cyan", "magenta", "lime", "amber", "lilac", "blue", "salmon", "mint")


def label_color(value: int) -> str:
    """``#rrggbb`` of a positive label value."""
    return PALETTE[(int(value) - 1) % len(PALETTE)]


def label_colors(values: Iterable[int]) -> dict[int, tuple[float, float, float]]:
    """RGB colour (0–1) of each positive label value; the same value always gets the same colour."""
    from matplotlib.colors import to_rgb

    return {int(v): to_rgb(label_color(v)) for v in values if int(v) > 0}


# Both colormaps are colour lists, which napari reads as a cyclic labels colormap: background (0) first, then label v
# gets colour ``(v - 1) % (n - 1) + 1``, i.e. `label_color(v)` for any v. A {value: colour} dict would make napari
# use its "direct" labels shader, whose first compilation held the window 2.1-2.5 s (against 1.0 s) with software GL.
def label_colormap() -> list[str]:
    """A napari labels colormap drawing every label value in its organ colour (`label_color`)."""
    return ["transparent", *PALETTE]


def rater_colormap(index: int) -> list[str]:
    """A napari labels colormap drawing every label of the `index`-th rater (0-based) in that rater's colour."""
    return ["transparent", RATER_COLORS[int(index) % len(RATER_COLORS)]]
