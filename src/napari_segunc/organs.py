"""The organ vocabulary: names, label values, aliases, the no-enlargement set and the display colours.

One table for the phantom, the prompts, the canvas (labels layers, box prompts), the docks and the report:

- `PHANTOM_LABELS`: the synthetic phantom's organs and their label values (`napari_segunc.phantom` paints them);
- `canonical_organ_name` and `ORGAN_ALIASES`: one spelling of every organ (AMOS22's abbreviations, CURVAS' and
  TotalSegmentator's names and common synonyms map onto it);
- `NO_ENLARGEMENT`: organs MedSAM2's strategy D never enlarges (seed 004);
- `LABEL_NAMES_KEY`: where a layer keeps its organ table (``metadata["segunc_labels"]``, name → value); a dock
  that needs organ names reads them there (`layer_labels`), never from a layer's name.

Label value v is drawn in ``PALETTE[(v - 1) % len(PALETTE)]`` everywhere; raters, whose maps are drawn as outlines
over the same organs, get one colour each (`RATER_COLORS`) so that their disagreement is visible.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .roles import LABEL_NAMES as LABEL_NAMES_KEY

__all__ = [
    "LABEL_NAMES_KEY",
    "NO_ENLARGEMENT",
    "ORGAN_ALIASES",
    "PALETTE",
    "PHANTOM_LABELS",
    "RATER_COLORS",
    "RATER_COLOR_NAMES",
    "canonical_organ_name",
    "label_color",
    "label_colormap",
    "label_colors",
    "layer_labels",
    "rater_colormap",
]

#: The phantom's organs (`napari_segunc.phantom`), background 0 left out.
PHANTOM_LABELS: dict[str, int] = {"liver": 1, "kidney_right": 2, "kidney_left": 3, "spleen": 4, "pancreas": 5}

#: Organs never enlarged by strategy D (thin or small structures a larger box would leak from).
NO_ENLARGEMENT: frozenset[str] = frozenset({"aorta", "inferior_vena_cava", "adrenal_gland_left", "adrenal_gland_right"})

#: AMOS22 abbreviations, TotalSegmentator v1 and CURVAS spellings, and a few synonyms → the plain names used here.
ORGAN_ALIASES: dict[str, str] = {
    # AMOS22
    "spl": "spleen",
    "rki": "kidney_right",
    "lki": "kidney_left",
    "gbl": "gallbladder",
    "eso": "esophagus",
    "liv": "liver",
    "sto": "stomach",
    "aor": "aorta",
    "ivc": "inferior_vena_cava",
    "pan": "pancreas",
    "rag": "adrenal_gland_right",
    "lag": "adrenal_gland_left",
    "duo": "duodenum",
    "bla": "urinary_bladder",
    "pro": "prostate_uterus",
    "ute": "prostate_uterus",
    "pro/ute": "prostate_uterus",
    # synonyms
    "postcava": "inferior_vena_cava",
    "right_kidney": "kidney_right",
    "left_kidney": "kidney_left",
    "gall_bladder": "gallbladder",
    "bladder": "urinary_bladder",
}


def canonical_organ_name(name: str) -> str:
    """Plain lower-case organ name: ``"AOR"`` → ``"aorta"``, ``"Inferior vena cava"`` → ``"inferior_vena_cava"``.

    Case, surrounding spaces, inner spaces and hyphens (→ ``_``) do not matter; unknown names come back normalised.
    """
    key = "_".join(str(name).strip().lower().replace("-", " ").split())
    return ORGAN_ALIASES.get(key, key)


def layer_labels(metadata: Mapping[str, Any] | None) -> dict[str, int]:
    """The organ table a layer carries (``metadata["segunc_labels"]``, name → value), or ``{}``."""
    table = (metadata or {}).get(LABEL_NAMES_KEY) or {}
    return {str(k): int(v) for k, v in table.items()}


#: Distinct colours (Trubetskoy's list without greys).
PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#ffe119",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#fabed4",
    "#469990",
    "#dcbeff",
    "#9a6324",
    "#fffac8",
    "#800000",
    "#aaffc3",
    "#808000",
    "#ffd8b1",
    "#000075",
)
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
