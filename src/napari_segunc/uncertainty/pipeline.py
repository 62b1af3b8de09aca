"""Members → maps → files: the one pipeline every ensemble goes through, and the writers of its results.

`accumulate` streams any member source (`napari_segunc.members`) into an `EnsembleAccumulator`: nnU-Net models
(`napari_segunc.inference.nnunet.predict_members`, also with test-time flips or MC dropout) or probability files
(`file_members`). ``segunc predict``, ``segunc uncertainty``, ``segunc evaluate``, the Ensemble dock and Open
study's probability maps all call it. The writers put a group's maps (``write_ensemble_outputs``) and the raters'
maps (``write_rater_outputs``) in the image's source geometry, each set staged and moved into place whole.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Generator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import GeometryMismatch, InvalidInput
from ..io import read_probabilities, write_probabilities, write_volume
from ..members import MemberProbabilities, dataset_labels
from ..progress import Progress
from ..volume import Volume, VolumeKind, check_same_grid
from .ensemble import ALL_MEMBERS, SCALAR_MAPS, EnsembleAccumulator, EnsembleMaps
from .raters import RaterAnalysis

__all__ = [
    "Accumulated",
    "MemberSpec",
    "accumulate",
    "file_members",
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


def file_members(
    specs: Sequence[MemberSpec],
    *,
    reference: Volume | None = None,
    trust_pickle: bool = False,
    check_pickle: bool = False,
    resample: bool = False,
) -> Generator[Progress | MemberProbabilities, None, None]:
    """A member source reading probability files one at a time (`napari_segunc.io.read_probabilities`).

    `reference` gives an ``.npz`` its geometry and is checked against a NIfTI's. With `trust_pickle` an ``.npz``
    without `reference` takes the geometry of the nnU-Net ``.pkl`` beside it (unpickling can run code); with
    `check_pickle` too, that geometry is read even when `reference` is given, and checked against it (Open study).
    With `resample`, a member whose own geometry (a NIfTI's, or a trusted ``.pkl``'s) differs from `reference` is
    resampled onto it (`napari_segunc.io.resample.resample_probabilities_like`: linear, renormalised) with a warning
    logged; one that does not overlap it at all is refused. Label names come from an nnU-Net ``dataset.json``
    beside a file when it describes exactly its channels.
    """
    total = len(specs)
    for i, spec in enumerate(specs, start=1):
        yield Progress(i - 1, total, f"reading member {i}/{total}: {spec.name}")
        try:
            if check_pickle and trust_pickle and reference is not None and str(spec.path).lower().endswith(".npz"):
                pm = read_probabilities(spec.path, trust_pickle=True)
                try:
                    check_same_grid(reference, pm.grid)
                except GeometryMismatch as exc:
                    raise GeometryMismatch(f"Probability map {spec.path} does not belong to the image: {exc}") from None
            else:
                pm = read_probabilities(spec.path, reference=reference, trust_pickle=trust_pickle)
            data, grid = pm.data, pm.grid
        except GeometryMismatch as exc:
            if not resample or reference is None:
                raise
            if str(spec.path).lower().endswith(".npz") and not trust_pickle:  # its only geometry is the image's
                raise GeometryMismatch(
                    f"{exc} An nnU-Net .npz has no geometry of its own without its .pkl, so it cannot be resampled."
                ) from None
            data, grid = _resampled_member(spec, reference, trust_pickle)
        labels = dataset_labels(Path(spec.path).expanduser().parent, n_classes=data.shape[0])
        yield MemberProbabilities(spec.name, data, group=spec.group, grid=grid, labels=labels)
        del data  # the pipeline holds the member only while adding it
    yield Progress(total, total, "all members added")


def _resampled_member(spec: MemberSpec, reference: Volume, trust_pickle: bool) -> tuple[np.ndarray, Volume]:
    """A member on its own grid moved onto `reference`'s (see `file_members`)."""
    from ..io.resample import resample_probabilities_like

    own = read_probabilities(spec.path, trust_pickle=trust_pickle)
    done = resample_probabilities_like(own.data, own.grid, reference)
    if done.outside >= 1.0:
        raise InvalidInput(f"Probability map {spec.path} does not overlap the image at all; it cannot be resampled.")
    log.warning(
        "%s was resampled onto the image's grid (linear, renormalised)%s",
        Path(spec.path).name,
        f"; {done.outside:.0%} of the image lies outside it (background there)." if done.outside > 0 else ".",
    )
    return done.data, reference


class Accumulated(NamedTuple):
    """What `accumulate` returns: the filled accumulator, the members' grid and their label names."""

    accumulator: EnsembleAccumulator
    grid: Volume | None
    labels: dict[str, int]


def accumulate(
    source: Iterable[Progress | MemberProbabilities],
    *,
    renormalize: bool = False,
    class_variance: bool = True,
    reference: Volume | None = None,
) -> Generator[Progress, None, Accumulated]:
    """Stream a member source into an `EnsembleAccumulator`, one member at a time; the source's progress passes on.

    Memory: the accumulator plus the member being added, whatever the number of members. Closing this generator
    closes the source (an nnU-Net member stops at its next tile). `reference` is the grid returned when the members
    carry none. Members that name their classes differently are refused: an ensemble averages the same classes.

    Raises
    ------
    InvalidInput
        No member, or a member the accumulator refuses (shape, NaN, sums off 1...), or label names that disagree.
    GeometryMismatch
        A member on another grid than the first one.
    """
    acc = EnsembleAccumulator(renormalize=renormalize, class_variance=class_variance)
    grid, labels, named_by = reference, {}, ""
    try:
        for item in source:
            if isinstance(item, Progress):
                yield item
                continue
            if item.labels and labels and dict(item.labels) != labels:
                raise InvalidInput(
                    f"Member '{item.name}' names its classes {dict(item.labels)} but '{named_by}' names them "
                    f"{labels}; an ensemble averages the same classes, so use models trained on the same labels."
                )
            acc.add(item.probabilities, name=item.name, group=item.group, grid=item.grid)
            if item.labels and not labels:
                labels, named_by = dict(item.labels), item.name
            if grid is None:
                grid = item.grid
            del item
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    if not acc.groups:
        raise InvalidInput("No ensemble member was given.")
    return Accumulated(acc, grid, labels)


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
        grid,
        out,
        overwrite=overwrite,
        per_class=per_class,
        labels={"segmentation": maps.segmentation},
        floats={name: getattr(maps, name) for name in SCALAR_MAPS},
    )
    regions = find_regions(
        maps.entropy,
        spacing=grid.spacing,
        origin=grid.origin,
        quantile=quantile,
        segmentation=maps.segmentation,
        labels=labels,
    )
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
            grid,
            out,
            overwrite=False,
            labels=label_maps,
            floats={"vote_entropy": analysis.vote_entropy},
            per_class={"soft_labels": analysis.soft_labels, "rater_variance": analysis.rater_variance},
        )
        written["agreement"] = write_csv(
            analysis.agreement_rows(), out / "agreement.csv", columns=AGREEMENT_COLUMNS, overwrite=False
        )
    log.info("%d raters → %s", analysis.n_raters, out_dir)
    return relocate(written, out, out_dir)


RATER_OUTPUT_NAMES = ("consensus", "dissensus", "majority", "staple", "vote_entropy", "soft_labels", "rater_variance")
