"""Worker bodies of the "Open study" widget (`open_study.py`): images, rater label maps, probability maps.

They run in napari workers and only call the core (readers, geometry checks, `EnsembleAccumulator`, the layer
tuples of `uncertainty.layers`); they import no Qt. Results are plain dataclasses of napari ``LayerData`` tuples
that the widget adds on the GUI thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import GeometryMismatch, InvalidInput, SegUncError
from ..io import DicomSeries, list_dicom_series, read_policy, read_volume
from ..io._npe2 import LayerData, volume_layer_data
from ..io.readers import LABEL_MAP_SUFFIXES, file_suffix
from ..progress import Progress
from ..samples import phantom_layers
from ..volume import Volume, VolumeKind, check_same_grid

__all__ = [
    "LABEL_MAP_SUFFIXES",
    "PROBABILITIES_PREFIX",
    "ImageResult",
    "ProbabilityResult",
    "RaterResult",
    "StudyResult",
    "label_map_files",
    "load_image",
    "load_phantom",
    "load_rater_folder",
    "load_raters",
    "probabilities_job",
    "reading",
]

log = logging.getLogger(__name__)

#: Files "Add rater folder…" picks up (``.raw`` / ``.zraw`` data files of ``.mhd`` / ``.nhdr`` headers are not).
#: Name prefix of the layers "Add probability maps…" adds.
PROBABILITIES_PREFIX = "probabilities: "
_MAPS = ("entropy", "expected_entropy", "mutual_information")


@dataclasses.dataclass
class ImageResult:
    path: Path
    volume: Volume | None = None
    layer: LayerData | None = None
    data_range: tuple[float, float] | None = None
    series: list[DicomSeries] = dataclasses.field(default_factory=list)  # when a choice is needed
    warnings: list[str] = dataclasses.field(default_factory=list)  # what the reader accepted as asked, or noticed


@dataclasses.dataclass
class RaterResult:
    path: Path
    layer: LayerData | None = None
    error: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class StudyResult:
    volume: Volume
    layers: list[LayerData]
    data_range: tuple[float, float]


@dataclasses.dataclass
class ProbabilityResult:
    layers: list[LayerData]
    members: tuple[str, ...]
    n_classes: int
    warnings: list[str] = dataclasses.field(default_factory=list)


def data_range(data: np.ndarray) -> tuple[float, float]:
    """Min and max of the finite values (the layer's contrast slider spans at least this)."""
    if data.dtype.kind == "f":
        data = data[np.isfinite(data)]
    if data.size == 0:
        return (0.0, 1.0)
    return (float(data.min()), float(data.max()))


#: the check boxes of the Open-study dock that ask the readers for more than exact files (`io.read_policy`)
NONFINITE_BOX = "Read NaN/Inf voxels as 0"
GAPS_BOX = "Accept DICOM slice gaps"
RESAMPLE_BOX = "Resample maps onto the image"


class _ThreadWarnings(logging.Handler):
    """Collects the plugin's warnings logged by one thread (a worker's), to show them in its dock."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


@contextlib.contextmanager
def reading(*, replace_nonfinite: bool = False, accept_dicom_gaps: bool = False) -> Iterator[list[str]]:
    """Read under the dock's policy; refusals name its check boxes. Yields the list of warnings logged meanwhile."""
    advice = {
        "nonfinite_advice": f"tick “{NONFINITE_BOX}” in Open study",
        "gaps_advice": f"tick “{GAPS_BOX}” in Open study",
    }
    handler = _ThreadWarnings()
    logger = logging.getLogger("napari_segunc")
    logger.addHandler(handler)
    try:
        with read_policy(replace_nonfinite=replace_nonfinite, accept_dicom_gaps=accept_dicom_gaps, **advice):
            yield handler.messages
    finally:
        logger.removeHandler(handler)


def load_image(
    path: Path, series_id: str | None, *, replace_nonfinite: bool = False, accept_dicom_gaps: bool = False
) -> ImageResult:
    """Read an image (or list a folder's DICOM series when a choice is needed) under the dock's read policy."""
    with reading(replace_nonfinite=replace_nonfinite, accept_dicom_gaps=accept_dicom_gaps) as warnings:
        if path.is_dir() and series_id is None:
            series = list_dicom_series(path)
            if len(series) > 1:
                return ImageResult(path, series=series)
        volume = read_volume(path, series_id=series_id, kind=VolumeKind.INTENSITY)
    return ImageResult(
        path,
        volume=volume,
        layer=volume_layer_data(volume),
        data_range=data_range(volume.data),
        warnings=list(warnings),
    )


def load_phantom(seed: int) -> StudyResult:
    volume, layers = phantom_layers(seed=seed)
    return StudyResult(volume, layers, data_range(volume.data))


# ------------------------------------------------------------------------------------ rater label maps
def load_raters(
    paths: Sequence[Path], reference: Volume, *, replace_nonfinite: bool = False, resample: bool = False
) -> Iterator[RaterResult]:
    """Read each label map and check it against `reference`; a mismatch or unreadable file yields an error.

    With `resample`, a map on another grid is resampled onto the image's (nearest neighbour, `io.resample`) and
    added with a warning; one that does not overlap the image at all is still refused."""
    for path in paths:
        try:
            with reading(replace_nonfinite=replace_nonfinite) as warnings:
                volume = read_volume(path, kind=VolumeKind.LABELS)
            try:
                check_same_grid(reference, volume)
            except GeometryMismatch as exc:
                if not resample:
                    raise GeometryMismatch(f"{exc} Or tick “{RESAMPLE_BOX}” in Open study.") from None
                volume = _resampled(volume, reference, path, warnings)
        except SegUncError as exc:
            yield RaterResult(path, error=f"{path.name} was not added: {exc}")
        else:
            yield RaterResult(path, layer=volume_layer_data(volume), warnings=list(warnings))


def _resampled(volume: Volume, reference: Volume, path: Path, warnings: list) -> Volume:
    from ..io.resample import resample_like

    done = resample_like(volume, reference)
    if done.outside >= 1.0:
        raise InvalidInput(f"{path.name} does not overlap the image at all; it cannot be resampled onto it.")
    warnings.append(
        f"{path.name} was resampled onto the image's grid (nearest neighbour)"
        + (f"; {done.outside:.0%} of the image lies outside it (background there)." if done.outside > 0 else ".")
    )
    return reference.with_data(done.data, kind=VolumeKind.LABELS, name=volume.name)  # now on the image's grid


def label_map_files(folder: Path, *, exclude: Sequence[Path] = ()) -> list[Path]:
    """The label-map files directly in `folder` (sorted by name; hidden files and `exclude` left out)."""
    skip = {p.resolve() for p in exclude}
    files = (p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return sorted(p for p in files if file_suffix(p) in LABEL_MAP_SUFFIXES and p.resolve() not in skip)


def load_rater_folder(
    folder: Path, reference: Volume, *, replace_nonfinite: bool = False, resample: bool = False
) -> Iterator[RaterResult]:
    """`load_raters` for every label map in `folder` (the image's own file, when it is there, is left out)."""
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder; choose the folder that holds the raters' label maps.")
    image = reference.source.path if reference.source is not None and reference.source.path else None
    paths = label_map_files(folder, exclude=[Path(image)] if image else [])
    if not paths:
        raise InvalidInput(
            f"{folder} holds no label maps ({', '.join('*' + s for s in LABEL_MAP_SUFFIXES)}); nothing was added."
        )
    yield from load_raters(paths, reference, replace_nonfinite=replace_nonfinite, resample=resample)


# ------------------------------------------------------------------------------------ probability maps
def _member_names(paths: Sequence[Path], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        if len(names) != len(paths):
            raise InvalidInput(f"{len(names)} member names were given for {len(paths)} probability files.")
        return [str(n) for n in names]
    short = [p.name for p in paths]
    return short if len(set(short)) == len(short) else [str(p) for p in paths]


def probabilities_job(
    paths: Sequence[Path],
    reference: Volume,
    *,
    names: Sequence[str] | None = None,
    trust_pickle: bool = False,
    resample: bool = False,
) -> Generator[Progress, None, ProbabilityResult]:
    """Stream probability files (one ensemble member each) into an `EnsembleAccumulator`; return the layers.

    Parameters
    ----------
    paths : sequence of Path
        nnU-Net ``.npz`` (geometry from `reference`, or from the ``.pkl`` beside it when `trust_pickle`) or 4D
        NIfTI files, each (C, z, y, x) class probabilities with the background first.
    reference : Volume
        The open image: every member must lie on its grid (`GeometryMismatch` naming the file otherwise).
    names : sequence of str, optional
        Member names (default: the file names).
    trust_pickle : bool
        Read the nnU-Net ``.pkl`` beside an ``.npz`` for its geometry (unpickling can run code).
    resample : bool
        Resample a member on another grid onto the image's (linear, renormalised) instead of refusing it; each one
        resampled is named in `ProbabilityResult.warnings`.

    Returns
    -------
    ProbabilityResult
        Segmentation (carrying the mean probabilities for the Metrics widget) and the predictive entropy, expected
        entropy and mutual information maps (nats), named ``"probabilities: …"``. Nothing is returned when a
        member is refused: the error names it and says why.
    """
    from ..uncertainty.layers import ensemble_layers
    from ..uncertainty.pipeline import MemberSpec, accumulate, file_members

    paths = [Path(p) for p in paths]
    if not paths:
        raise InvalidInput("Choose at least one probability map (.npz or 4D .nii.gz).")
    specs = [MemberSpec(str(p), name) for p, name in zip(paths, _member_names(paths, names), strict=True)]
    members = file_members(specs, reference=reference, trust_pickle=trust_pickle, check_pickle=True, resample=resample)
    try:
        with reading() as warnings:
            acc, _grid, labels = yield from accumulate(members, class_variance=False)
    except GeometryMismatch as exc:
        advice = "" if resample else f" Or tick “{RESAMPLE_BOX}” in Open study."
        raise GeometryMismatch(f"{exc} No probability map was added.{advice}") from None
    except SegUncError as exc:
        raise type(exc)(f"{exc} No probability map was added.") from None
    yield Progress(len(paths), len(paths), "computing the uncertainty maps")
    maps = acc.result(consume=True)
    layers = ensemble_layers(maps, reference, which=_MAPS, labels=labels, with_probabilities=True)
    for _data, kwargs, _type in layers:
        kwargs["name"] = PROBABILITIES_PREFIX + kwargs["name"]
        kwargs["metadata"]["segunc_probability_files"] = [str(p) for p in paths]
    log.info("probability maps: %d member(s), %d classes", maps.n_members, maps.n_classes)
    return ProbabilityResult(layers, maps.members, maps.n_classes, list(warnings))
