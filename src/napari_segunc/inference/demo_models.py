"""The demo ensemble shipped inside the package (trained by ``scripts/train_demo_ensemble.py``)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidInput

__all__ = ["demo_ensemble_file"]

DEMO_DIR = Path(__file__).resolve().parents[1] / "models" / "demo"


def demo_ensemble_file() -> Path:
    """``ensemble.json`` of the demo ensemble (3 simulated raters × 2 seeds of nnU-Net v2 trained on phantoms)."""
    path = DEMO_DIR / "ensemble.json"
    if not path.is_file():
        raise InvalidInput(
            f"The demo ensemble is missing ({path}); reinstall the package or train it with "
            "scripts/train_demo_ensemble.py."
        )
    return path
