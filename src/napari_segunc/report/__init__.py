"""Reports of a reviewed case: figures and tables made with matplotlib's Agg canvas. Qt-free, napari-free."""

from __future__ import annotations

from .page import PAGE_DPI, PAGE_PIXELS, draw_case_report, key_slices, label_colors, write_case_report
from .table import case_table, organ_volumes

__all__ = [
    "PAGE_DPI",
    "PAGE_PIXELS",
    "case_table",
    "draw_case_report",
    "key_slices",
    "label_colors",
    "organ_volumes",
    "write_case_report",
]
