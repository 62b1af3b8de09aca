"""Uncertainty core: ensemble maps (streaming), rater agreement, review regions. Qt-free."""

from __future__ import annotations

from .ensemble import ALL_MEMBERS, SCALAR_MAPS, EnsembleAccumulator, EnsembleMaps

__all__ = ["ALL_MEMBERS", "SCALAR_MAPS", "EnsembleAccumulator", "EnsembleMaps"]

from .regions import (  # noqa: E402
    REGION_COLUMNS,
    Connectivity,
    Region,
    find_regions,
    quantile_threshold,
    regions_to_rows,
    write_regions_csv,
)
from .scores import case_scores, slice_scores, structure_scores, window_mean  # noqa: E402

__all__ += [
    "REGION_COLUMNS",
    "Connectivity",
    "Region",
    "case_scores",
    "find_regions",
    "quantile_threshold",
    "regions_to_rows",
    "slice_scores",
    "structure_scores",
    "window_mean",
    "write_regions_csv",
]
