"""The demo study: a phantom cohort (seeds the demo ensemble was not trained on) and its study file, which runs the
shipped demo ensemble (3 raters × 2 seeds) — seed 000's protocol in miniature."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEMO_SEEDS", "write_demo_study"]

#: Phantom seeds of the demo cohort: the demo ensemble was trained on seeds 1000 and up.
DEMO_SEEDS = tuple(range(1, 65))


def write_demo_study(folder: str | os.PathLike, *, cases: int = 4, shape: tuple[int, int, int] | None = None) -> Path:
    """Write `cases` phantom cases (image + 3 raters each) under ``<folder>/cases/`` and ``<folder>/study.yaml``;
    returns the study file. Refuses a folder that already holds a study file."""
    import yaml

    from ..errors import InvalidInput
    from ..inference.demo_models import demo_ensemble_file
    from ..io import atomic_write
    from ..phantom import make_phantom, write_phantom

    out = Path(folder).expanduser()
    study = out / "study.yaml"
    if study.exists():
        raise InvalidInput(f"{study} already exists; choose another folder for the demo study.")
    if not 1 <= cases <= len(DEMO_SEEDS):
        raise InvalidInput(f"The demo study has 1 to {len(DEMO_SEEDS)} cases; got {cases}.")
    for seed in DEMO_SEEDS[:cases]:
        kwargs = {"shape": shape} if shape else {}
        write_phantom(make_phantom(seed=seed, n_raters=3, **kwargs), out / "cases" / f"phantom{seed:02d}")
    text = yaml.safe_dump(
        {
            "cases_folder": "cases",
            "ensemble": str(demo_ensemble_file()),
            "device": "cpu",
            "mirroring": False,
        },
        sort_keys=False,
    )
    return atomic_write(study, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=False)
