"""Uncertainty core: ensemble maps (streaming), rater agreement, review regions and scores. Qt-free."""

from __future__ import annotations

from .agreement import fleiss_kappa
from .ensemble import ALL_MEMBERS, SCALAR_MAPS, EnsembleAccumulator, EnsembleMaps
from .raters import (
    AGREEMENT_COLUMNS,
    AgreementKind,
    ModelRaterAgreement,
    RaterAnalysis,
    RaterVotes,
    analyze_raters,
    model_vs_raters,
    rater_votes,
)
from .regions import (
    REGION_COLUMNS,
    Connectivity,
    Region,
    find_regions,
    quantile_threshold,
    regions_to_rows,
    write_regions_csv,
)
from .scores import case_scores, slice_scores, structure_scores, window_mean

__all__ = [
    "AGREEMENT_COLUMNS",
    "ALL_MEMBERS",
    "REGION_COLUMNS",
    "SCALAR_MAPS",
    "AgreementKind",
    "Connectivity",
    "EnsembleAccumulator",
    "EnsembleMaps",
    "ModelRaterAgreement",
    "RaterAnalysis",
    "RaterVotes",
    "Region",
    "analyze_raters",
    "case_scores",
    "find_regions",
    "fleiss_kappa",
    "model_vs_raters",
    "quantile_threshold",
    "rater_votes",
    "regions_to_rows",
    "slice_scores",
    "structure_scores",
    "window_mean",
    "write_regions_csv",
]
