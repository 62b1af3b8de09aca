"""Shared fixtures: the real test data in ../shared/data and small synthetic images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared real data (``SEGUNC_SHARED_DATA``, default ``../shared/data`` beside the repository).

    Skips when it is absent, unless ``SEGUNC_REQUIRE_SHARED_DATA=1`` (CI), where a missing dataset fails.
    """
    root = Path(os.environ.get("SEGUNC_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not (root / "totalseg_ct").is_dir() or not (root / "values_toy").is_dir():
        msg = f"shared test data not found at {root} (set SEGUNC_SHARED_DATA)"
        if os.environ.get("SEGUNC_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def totalseg(shared_data: Path) -> Path:
    return shared_data / "totalseg_ct"


@pytest.fixture(scope="session")
def values_toy(shared_data: Path) -> Path:
    return shared_data / "values_toy"
