"""Metrics suite: accuracy, calibration and uncertainty metrics (CURVAS + VALUES), Qt-free."""

from __future__ import annotations
