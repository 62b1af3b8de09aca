"""From files on disk to written maps: the jobs behind ``segunc uncertainty`` and ``segunc raters``."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path

from ..errors import InvalidInput
from ..io import read_probabilities, write_probabilities, write_volume
from ..progress import Progress
from ..volume import Volume, VolumeKind
from .ensemble import ALL_MEMBERS, SCALAR_MAPS, EnsembleAccumulator, EnsembleMaps
from .raters import RaterAnalysis

__all__ = [
    "MemberSpec",
    "ensemble_job",
    "output_folder",
    "parse_member_specs",
    "write_ensemble_outputs",
    "write_rater_outputs",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MemberSpec:
    """One ensemble member on disk: its probability file, a name, and an optional group."""

    path: str
    name: str
    group: str | None = None


def parse_member_specs(members: Sequence[str] = (), groups: Sequence[str] = ()) -> list[MemberSpec]:
    """``--member P`` and ``--group NAME:P`` arguments → member specs (names are the paths as given)."""
    specs = [MemberSpec(path=p, name=p) for p in members]
    for g in groups:
        name, sep, path = g.partition(":")
        if not sep or not name or not path:
            raise InvalidInput(f"--group expects NAME:PATH (e.g. rater1:preds/case1_r1s1.npz), got '{g}'.")
        specs.append(MemberSpec(path=path, name=path, group=name))
    if not specs:
        raise InvalidInput("Give at least one ensemble member (--member P or --group NAME:P).")
    return specs


def ensemble_job(
    specs: Sequence[MemberSpec],
    *,
    reference: Volume | None = None,
    trust_pickle: bool = False,
    renormalize: bool = False,
    class_variance: bool = True,
) -> Generator[Progress, None, tuple[EnsembleAccumulator, Volume]]:
    """Stream members from disk into an accumulator, one at a time; yields progress; returns (accumulator, grid).

    Stop it between members by closing the generator (``job.close()``).
    """
    acc = EnsembleAccumulator(renormalize=renormalize, class_variance=class_variance)
    grid = reference
    for i, spec in enumerate(specs, start=1):
        yield Progress(i - 1, len(specs), f"reading member {i}/{len(specs)}: {spec.name}")
        pm = read_probabilities(spec.path, reference=reference, trust_pickle=trust_pickle)
        acc.add(pm.data, name=spec.name, group=spec.group, grid=pm.grid)
        if grid is None:
            grid = pm.grid
        del pm
    yield Progress(len(specs), len(specs), "all members added")
    return acc, grid


def write_ensemble_outputs(
    maps: EnsembleMaps,
    grid: Volume,
    out_dir: str | Path,
    *,
    labels: Mapping[str, int] | None = None,
    quantile: float = 0.99,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write one group's maps in the grid's source geometry, plus ``regions.csv`` ranked by predictive entropy."""
    from ..io.outputs import relocate, staged_folder

    with staged_folder(out_dir, overwrite=overwrite) as out:
        written = _write_ensemble_files(maps, grid, out, labels=labels, quantile=quantile)
    return relocate(written, out, out_dir)


def ensemble_output_names(class_variance: bool = True) -> list[str]:
    """The files `write_ensemble_outputs` writes into a group's folder."""
    names = ["mean_probabilities.nii.gz"] + (["variance.nii.gz"] if class_variance else [])
    return names + ["segmentation.nii.gz"] + [f"{n}.nii.gz" for n in SCALAR_MAPS] + ["regions.csv"]


def _write_ensemble_files(maps: EnsembleMaps, grid: Volume, out: Path, *, labels, quantile) -> dict[str, Path]:
    from .regions import find_regions, write_regions_csv

    overwrite = False
    per_class = {"mean_probabilities": maps.mean_probabilities}
    if maps.variance is not None:
        per_class["variance"] = maps.variance
    written = _write_maps(
        grid, out, overwrite=overwrite, per_class=per_class, labels={"segmentation": maps.segmentation},
        floats={name: getattr(maps, name) for name in SCALAR_MAPS},
    )  # fmt: skip
    regions = find_regions(
        maps.entropy, spacing=grid.spacing, origin=grid.origin, quantile=quantile,
        segmentation=maps.segmentation, labels=labels,
    )  # fmt: skip
    written["regions"] = write_regions_csv(regions, out / "regions.csv", overwrite=overwrite)
    log.info("group %s: %d members, %d review regions", maps.group, maps.n_members, len(regions))
    return written


def _write_maps(grid: Volume, out: Path, *, overwrite: bool, per_class=None, labels=None, floats=None) -> dict:
    """Write (C, Z, Y, X) maps as 4D NIfTI, label maps and float maps as NIfTI, all in the grid's source geometry."""
    written = {}
    for name, data in (per_class or {}).items():
        written[name] = write_probabilities(data, grid, out / f"{name}.nii.gz", overwrite=overwrite)
    for kind, maps in ((VolumeKind.LABELS, labels or {}), (VolumeKind.FLOAT_MAP, floats or {})):
        for name, data in maps.items():
            vol = grid.with_data(data, kind=kind, name=name)
            written[name] = write_volume(vol, out / f"{name}.nii.gz", overwrite=overwrite)
    return written


def output_folder(out_dir: str | Path, group: str) -> Path:
    """Where a group's maps go: the top folder for every member, a sub-folder per group."""
    return Path(out_dir) if group == ALL_MEMBERS else Path(out_dir) / group


def write_rater_outputs(analysis: RaterAnalysis, grid: Volume, out_dir: str | Path, *, overwrite: bool = False):
    """Write the rater maps in the grid's source geometry and ``agreement.csv``; returns name → path."""
    from ..io import write_csv
    from ..io.outputs import relocate, staged_folder
    from .raters import AGREEMENT_COLUMNS

    label_maps = {"consensus": analysis.consensus, "dissensus": analysis.dissensus, "majority": analysis.majority}
    if analysis.staple is not None:
        label_maps["staple"] = analysis.staple
    with staged_folder(out_dir, overwrite=overwrite) as out:
        written = _write_maps(
            grid, out, overwrite=False, labels=label_maps, floats={"vote_entropy": analysis.vote_entropy},
            per_class={"soft_labels": analysis.soft_labels, "rater_variance": analysis.rater_variance},
        )  # fmt: skip
        written["agreement"] = write_csv(
            analysis.agreement_rows(), out / "agreement.csv", columns=AGREEMENT_COLUMNS, overwrite=False
        )
    log.info("%d raters → %s", analysis.n_raters, out_dir)
    return relocate(written, out, out_dir)


RATER_OUTPUT_NAMES = ("consensus", "dissensus", "majority", "staple", "vote_entropy", "soft_labels", "rater_variance")
