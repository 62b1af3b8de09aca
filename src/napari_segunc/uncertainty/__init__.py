"""Uncertainty core: ensemble maps (streaming), rater agreement, review regions. Qt-free."""

from __future__ import annotations

from .ensemble import ALL_MEMBERS, SCALAR_MAPS, EnsembleAccumulator, EnsembleMaps

__all__ = ["ALL_MEMBERS", "SCALAR_MAPS", "EnsembleAccumulator", "EnsembleMaps"]
