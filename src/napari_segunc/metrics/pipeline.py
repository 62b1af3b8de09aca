"""From files on disk to a results table: the job behind ``segunc evaluate`` (and each task of a cohort).

The probabilities are one file (``--probabilities``: the ensemble's mean, or one model) or several ensemble members
(``--member``), whose mean and entropy maps are computed on the fly with the streaming accumulator (then the
expected entropy and mutual information rows are filled too). Rater label maps must lie on the probabilities'
grid: their geometry is checked, not resampled.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import GeometryMismatch, InvalidInput
from ..io import read_probabilities, read_volume
from ..io.writers import atomic_write, write_csv
from ..volume import check_same_grid
from .suite import COLUMNS, CaseEvaluation, Mode, evaluate_case

__all__ = ["CaseFiles", "evaluate_files", "rater_names_from_files", "write_plots", "write_table"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CaseFiles:
    """The files of one case. Exactly one of `probabilities` or `members` is needed."""

    raters: tuple[str, ...]
    probabilities: str | None = None
    members: tuple[str, ...] = ()
    image: str | None = None
    case: str = "case"


def evaluate_files(
    files: CaseFiles,
    *,
    labels: Mapping[str, int] | None = None,
    mode: Mode | str = Mode.NATIVE,
    trust_pickle: bool = False,
    rater_names: Sequence[str] | None = None,
) -> CaseEvaluation:
    """Read one case's files and evaluate it (`evaluate_case`).

    The reference grid is the `image` when given (it also supplies the geometry of nnU-Net ``.npz`` files),
    otherwise the first rater's label map.
    """
    if not files.raters:
        raise InvalidInput(f"Case '{files.case}': give at least one rater label map.")
    if bool(files.probabilities) == bool(files.members):
        raise InvalidInput(
            f"Case '{files.case}': give either one probabilities file or the ensemble members' files, not "
            f"{'both' if files.probabilities else 'neither'}."
        )
    raters = [read_volume(p, kind="labels") for p in files.raters]
    image = read_volume(files.image) if files.image else None
    reference = image if image is not None else raters[0]
    for path, r in zip(files.raters, raters, strict=True):
        try:
            check_same_grid(reference, r)
        except GeometryMismatch as exc:
            raise GeometryMismatch(f"Rater map {path} is not on the grid of {reference.name}: {exc}") from None
    ensemble = None
    if files.probabilities:
        pm = read_probabilities(files.probabilities, reference=reference, trust_pickle=trust_pickle)
        probabilities = pm.data
    else:
        from ..progress import run_job
        from ..uncertainty.pipeline import MemberSpec, accumulate, file_members

        specs = [MemberSpec(path, path) for path in files.members]
        members = file_members(specs, reference=reference, trust_pickle=trust_pickle)
        acc, _grid, _labels = run_job(accumulate(members, class_variance=False))
        ensemble = acc.result(consume=True)
        probabilities = ensemble.mean_probabilities
    names = list(rater_names) if rater_names else rater_names_from_files(files.raters)
    return evaluate_case(
        probabilities,
        [r.data for r in raters],
        spacing=reference.spacing,
        labels=labels,
        mode=mode,
        image=image.data if image is not None else None,
        ensemble=ensemble,
        rater_names=names,
        case=files.case,
        array_order=reference.source.direction if reference.source is not None else None,
    )


def rater_names_from_files(paths: Sequence[str]) -> list[str]:
    """Rater names from file names (``rater_1.nii.gz`` → ``rater_1``), numbered when they collide."""
    stems = []
    for p in paths:
        name = Path(p).name
        for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        stems.append(name)
    if len(set(stems)) == len(stems):
        return stems
    return [f"rater{k + 1}" for k in range(len(paths))]


def _json_value(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def write_table(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    columns: Sequence[str] | None = None,
) -> Path:
    """Write result rows as CSV (``.csv``) or JSON (``.json``: a list of row objects, NaN as null), atomically.

    `columns` default: the metrics suite's, then any other key of the first row."""
    out = Path(path)
    suffix = out.suffix.lower()
    if columns is None:
        columns = list(COLUMNS) + [c for c in (rows[0] if rows else {}) if c not in COLUMNS]
    if suffix == ".csv":
        return write_csv(rows, out, columns=columns, overwrite=overwrite)
    if suffix == ".json":
        text = json.dumps([{c: _json_value(row.get(c)) for c in columns} for row in rows], indent=1)
        return atomic_write(out, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"), overwrite=overwrite)
    raise InvalidInput(f"{out}: the results file must end in .csv or .json.")


def write_plots(evaluation: CaseEvaluation, folder: str | os.PathLike, *, overwrite: bool = False) -> list[Path]:
    """Reliability diagram and risk–coverage curve of a native evaluation, as PNG files in `folder`."""
    from .plots import plot_reliability, plot_risk_coverage

    if evaluation.calibration is None:
        raise InvalidInput("Plots need a native-mode evaluation (curvas mode keeps no reliability data).")
    from ..io.outputs import relocate, staged_folder

    case = evaluation.rows[0]["case"] if evaluation.rows else "case"
    with staged_folder(folder, overwrite=overwrite) as out:
        written = [
            plot_reliability(evaluation.calibration, out / f"{case}_reliability.png", title=case),
            plot_risk_coverage(evaluation.risk_coverage, out / f"{case}_risk_coverage.png", title=case),
        ]
    return relocate(written, out, folder)
