"""Box prompts from atlas registration (seed 004 §3.3.1): MedSAM2 can start with no clicks. Qt-free.

Reference images with organ masks (the *atlases*) are registered onto the target image
(`napari_segunc.prompts._registration`), each atlas mask is carried onto the target grid, and the warped masks are
averaged voxel-wise into one score map per organ, in [0, 1] (the fraction of atlases that put the organ there; with
``warp="linear"`` a smoother mean of interpolated masks). An organ is the voxels whose score is *strictly above* its
threshold; its slice range and Strategy A/B boxes come from `napari_segunc.prompts.prompts_from_scores`.

Thresholds
----------
`DEFAULT_THRESHOLDS` holds seed 004's Table 2.3, tuned on AMOS22 with 15 atlases, keyed by plain organ names; the
AMOS22 abbreviations work too (``"LKI"`` → ``kidney_left`` → 0.4, ``"RAG"`` → ``adrenal_gland_right`` → 0.1;
`napari_segunc.prompts.canonical_organ_name`). The user's thresholds override them. An organ with neither gets
`FALLBACK_THRESHOLD` = 0.5, i.e. a strict majority of the atlases, with a logged warning (``fallback=None`` makes it an
error instead). With K atlases a nearest-neighbour score takes the values 0, 1/K, …, 1, so a threshold t keeps the
voxels where more than t·K atlases agree: with 3 atlases, 0.2 (liver) means "at least one", 0.4 and 0.6 "at least
two".

Parallelism
-----------
The registrations run in separate processes, as the metrics cohort does (`napari_segunc.metrics.cohort`): a Dask
`LocalCluster` of ``workers`` processes with one thread each, or an existing scheduler (``scheduler=ADDRESS``; its
workers must see the same file paths); ``workers=0`` registers serially in this process. Each registration uses
``threads`` ITK threads (default: the machine's cores shared among the workers, so K workers do not oversubscribe
it). Score maps are summed in atlas order, so a parallel run gives exactly the serial result when both use the same
``threads``. An atlas whose registration fails is reported in `AtlasResult.failed` and skipped; when all fail,
`InvalidInput` is raised.

Memory: the score maps take ``4 × voxels × organs`` bytes (a 512×512×300 CT with 15 organs: 4.7 GB).

One responsibility, atlas scores → thresholds → boxes; kept in one module past 400 lines (the registration itself is
`napari_segunc.prompts._registration`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInput
from ..progress import Progress, run_job
from ..volume import Volume, VolumeKind
from ._model import PromptSet, Strategy, canonical_organ_name
from ._registration import AtlasOutcome, Refinement, RegistrationOptions, WarpMode, run_atlas

__all__ = [
    "DEFAULT_THRESHOLDS",
    "FALLBACK_THRESHOLD",
    "AtlasResult",
    "Refinement",
    "WarpMode",
    "atlas_prompts",
    "atlas_prompts_job",
    "atlas_thresholds",
    "parse_thresholds",
    "score_map_paths",
    "score_volumes",
    "write_score_maps",
]

log = logging.getLogger(__name__)

#: Seed 004 Table 2.3 (AMOS22 organs), keyed by plain organ names; a voxel is kept when its score is above.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "spleen": 0.6,
    "kidney_right": 0.6,
    "kidney_left": 0.4,
    "gallbladder": 0.3,
    "esophagus": 0.2,
    "liver": 0.2,
    "stomach": 0.6,
    "aorta": 0.3,
    "inferior_vena_cava": 0.3,
    "pancreas": 0.4,
    "adrenal_gland_right": 0.1,
    "adrenal_gland_left": 0.1,
    "duodenum": 0.3,
    "urinary_bladder": 0.7,
    "prostate_uterus": 0.1,
}

#: Threshold of an organ absent from `DEFAULT_THRESHOLDS` and not given by the user: a strict majority of atlases.
FALLBACK_THRESHOLD = 0.5

Source = Volume | str | os.PathLike


@dataclasses.dataclass(frozen=True)
class AtlasResult:
    """What `atlas_prompts_job` returns.

    Attributes
    ----------
    score_maps : dict of str to (Z, Y, X) float32 array
        Per organ (the names of `labels`), the mean of the warped atlas masks on the target's canonical grid, in
        [0, 1].
    prompts : PromptSet
        Box prompts from the thresholded score maps (``source`` says ``"atlas"`` and how many atlases); organs whose
        score never exceeds their threshold are in ``prompts.missing``.
    failed : list of (str, str)
        ``(atlas name, reason)`` of every atlas that was skipped.
    thresholds : dict of str to float
        The threshold used for each organ.
    used : list of str
        Names of the atlases averaged, in the order given.
    seconds : float
        Wall time of the whole job.
    """

    score_maps: dict[str, np.ndarray]
    prompts: PromptSet
    failed: list[tuple[str, str]]
    thresholds: dict[str, float]
    used: list[str]
    seconds: float = 0.0


def atlas_thresholds(
    labels: Mapping[str, int] | Sequence[str],
    overrides: Mapping[str, float] | None = None,
    *,
    fallback: float | None = FALLBACK_THRESHOLD,
) -> dict[str, float]:
    """Threshold of each organ: the user's, else seed 004 Table 2.3 (`DEFAULT_THRESHOLDS`), else `fallback`.

    Parameters
    ----------
    labels : mapping of str to int, or sequence of str
        The organs, by the names the result is keyed by (plain names or AMOS22 abbreviations, any case).
    overrides : mapping of str to float, optional
        User thresholds by organ name or abbreviation; each must name one of `labels`.
    fallback : float or None
        For organs with no threshold; None makes that an error.

    Returns
    -------
    dict of str to float
        Organ name (as in `labels`) → threshold in [0, 1); a score must be strictly above it.

    Raises
    ------
    InvalidInput
        A threshold outside [0, 1) or not a number, an override naming no organ of `labels`, or an organ without a
        threshold when `fallback` is None.
    """
    names = list(labels)
    by_canon = {canonical_organ_name(n): n for n in names}
    user: dict[str, float] = {}
    for key, value in (overrides or {}).items():
        canon = canonical_organ_name(key)
        if canon not in by_canon:
            raise InvalidInput(
                f"A threshold is given for '{key}', which is not one of the organs ({', '.join(names)})."
            )
        user[canon] = _threshold(value, key)
    out = {}
    for name in names:
        canon = canonical_organ_name(name)
        if canon in user:
            out[name] = user[canon]
        elif canon in DEFAULT_THRESHOLDS:
            out[name] = DEFAULT_THRESHOLDS[canon]
        elif fallback is None:
            raise InvalidInput(
                f"Organ '{name}' has no default atlas threshold (seed 004 Table 2.3 covers the "
                f"AMOS22 organs); give one, e.g. --thresholds {name}=0.5."
            )
        else:
            out[name] = _threshold(fallback, name)
            log.warning("organ %s has no atlas threshold in seed 004 Table 2.3: using %g", name, fallback)
    return out


def _threshold(value: Any, name: str) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = math.nan
    if isinstance(value, bool) or not 0.0 <= t < 1.0:
        raise InvalidInput(
            f"The threshold of '{name}' must be a number from 0 up to (not including) 1, the "
            f"fraction of atlases that must agree; got {value!r}."
        )
    return t


def _atlas_name(image: Source) -> str:
    if isinstance(image, Volume):
        return image.source.path if image.source is not None and image.source.path else image.name
    return str(Path(image).expanduser())


def _atlas_list(atlases: Sequence[tuple[Source, Source]]) -> list[tuple[str, Source, Source]]:
    out, seen = [], set()
    for i, pair in enumerate(atlases):
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise InvalidInput(f"Atlas {i + 1} must be an (image, mask) pair, got {pair!r}.")
        name = _atlas_name(pair[0])
        if name in seen:
            name = f"{name} (atlas {i + 1})"
        seen.add(name)
        out.append((name, pair[0], pair[1]))
    if not out:
        raise InvalidInput("No atlas given: at least one reference image with its organ mask is needed.")
    return out


def atlas_prompts_job(
    target: Source,
    atlases: Sequence[tuple[Source, Source]],
    labels: Mapping[str, int],
    *,
    thresholds: Mapping[str, float] | None = None,
    fallback: float | None = FALLBACK_THRESHOLD,
    strategy: Strategy | str = Strategy.B,
    refine: Refinement | str = Refinement.NONE,
    warp: WarpMode | str = WarpMode.NEAREST,
    workers: int | None = None,
    scheduler: str | None = None,
    threads: int | None = None,
    max_voxels: int = 2_000_000,
    z_search: bool = True,
    seed: int = 0,
) -> Generator[Progress, None, AtlasResult]:
    """Register atlases onto a target and make box prompts from the averaged masks (module docstring).

    The arguments are checked at once; the returned generator yields a `Progress` after each registration
    (``K + 1`` steps for K atlases) and returns an `AtlasResult`. Closing it between two steps stops the job and
    shuts its worker processes down.

    Parameters
    ----------
    target : Volume or path
        The image to prompt (read with `napari_segunc.io.read_volume` when a path).
    atlases : sequence of (image, mask)
        Reference images and their organ label maps (each mask on its image's grid), as `Volume` objects or paths
        (paths are read by the workers; a file that cannot be read fails that atlas only).
    labels : mapping of str to int
        Organ name → label value in the atlas masks (one labelling for all atlases), the organs to prompt.
    thresholds : mapping of str to float, optional
        User thresholds overriding `DEFAULT_THRESHOLDS` (see `atlas_thresholds`; `fallback` likewise).
    strategy : Strategy
        Box placement (A: one box, B: three; see `napari_segunc.prompts.box_slices`).
    refine : Refinement
        ``"none"`` (affine only, default), ``"bspline"`` or ``"demons"``.
    warp : WarpMode
        ``"nearest"`` (default) or ``"linear"``.
    workers : int, optional
        Worker processes of a local Dask cluster; 0 registers serially in this process. Default: one per atlas, at
        most the number of cores (serial for a single atlas).
    scheduler : str, optional
        Address of a running Dask scheduler to use instead of a local cluster.
    threads : int, optional
        ITK threads per registration. Default: cores // workers (1 on a remote scheduler).
    max_voxels : int
        Images larger than this are bin-shrunk for the optimiser (the masks are always warped at full resolution).
    z_search : bool
        Search the cranio-caudal offset before the affine registration (needed when fields of view differ).
    seed : int
        Seed of the metric's random sampling; the same seed gives the same result.
    """
    from ..io import read_volume

    labels = {str(k): v for k, v in (labels or {}).items()}
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise InvalidInput(f"Organ '{name}' needs a label value of 1 or more, got {value!r}.")
    if not labels:
        raise InvalidInput("No organ to prompt: the labels are empty.")
    resolved = atlas_thresholds(labels, thresholds, fallback=fallback)
    strategy = Strategy(strategy)
    items = _atlas_list(atlases)
    if workers is None:
        workers = 0 if len(items) == 1 else min(len(items), os.cpu_count() or 1)
    if workers < 0 or max_voxels < 4096 or seed < 0 or (threads is not None and threads < 1):
        raise InvalidInput("workers and seed must be 0 or more, threads 1 or more and max_voxels at least 4096.")
    parallel = 0 if scheduler is None and workers == 0 else workers
    if threads is None:  # share the cores among the workers; a remote scheduler's machines are unknown: 1
        threads = 1 if scheduler is not None else max(1, (os.cpu_count() or 1) // max(1, parallel))
    options = RegistrationOptions(
        refine=Refinement(refine),
        warp=WarpMode(warp),
        max_voxels=int(max_voxels),
        seed=int(seed),
        threads=int(threads),
        z_search=bool(z_search),
    )
    target = target if isinstance(target, Volume) else read_volume(target, kind="intensity")
    return _job(target, items, labels, resolved, strategy, options, workers, scheduler)


def _job(target, items, labels, thresholds, strategy, options, workers, scheduler):
    from .boxes import prompts_from_scores

    start = time.perf_counter()
    total = len(items) + 1
    outcomes: dict[int, AtlasOutcome] = {}
    runs = _serial if scheduler is None and workers == 0 else _distributed
    for outcome in runs(target, items, labels, options, workers, scheduler):
        outcomes[outcome.index] = outcome
        what = f"failed: {outcome.reason}" if outcome.organs is None else f"registered in {outcome.seconds:.1f} s"
        yield Progress(len(outcomes), total, f"atlas {outcome.name} {what}")
    failed = [(o.name, o.reason) for i, o in sorted(outcomes.items()) if o.organs is None]
    good = [o for i, o in sorted(outcomes.items()) if o.organs is not None]
    if not good:
        lines = "; ".join(f"{name}: {reason}" for name, reason in failed)
        raise InvalidInput(f"Every atlas failed, so there are no score maps ({lines}).")
    maps = {}
    for name in labels:  # summed in atlas order whatever the order the workers finished in
        total_map = np.zeros(target.shape, np.float32)
        for (z, y, x), crop in (o.organs[name] for o in good if name in o.organs):
            total_map[z : z + crop.shape[0], y : y + crop.shape[1], x : x + crop.shape[2]] += crop
        maps[name] = np.clip(total_map / np.float32(len(good)), 0.0, 1.0)
    source = f"atlas:{len(good)} of {len(items)} atlases"
    prompts = prompts_from_scores(maps, labels, thresholds, strategy=strategy, source=source)
    seconds = time.perf_counter() - start
    yield Progress(total, total, f"box prompts for {len(prompts.organs)} organ(s) in {seconds:.1f} s")
    return AtlasResult(maps, prompts, failed, dict(thresholds), [o.name for o in good], seconds)


def _serial(target, items, labels, options, workers, scheduler) -> Iterator[AtlasOutcome]:
    for i, (name, image, mask) in enumerate(items):
        yield run_atlas(i, name, target, image, mask, labels, options)


def _distributed(target, items, labels, options, workers, scheduler) -> Iterator[AtlasOutcome]:
    from distributed import as_completed

    from .._dask import dask_client

    with dask_client(workers, scheduler) as client:
        shared = client.scatter(target, broadcast=True)
        futures = {
            client.submit(run_atlas, i, name, shared, image, mask, labels, options, pure=False): i
            for i, (name, image, mask) in enumerate(items)
        }
        try:
            for future in as_completed(futures):
                i = futures[future]
                try:
                    outcome = future.result()
                except Exception as exc:  # noqa: BLE001 - a worker that died: report, go on
                    outcome = AtlasOutcome(i, items[i][0], None, f"the worker failed: {type(exc).__name__}: {exc}")
                yield outcome
        finally:  # closed early (cancel): drop what is still queued or running
            client.cancel([f for f in futures if not f.done()])


def atlas_prompts(*args: Any, progress: Any = None, **kwargs: Any) -> AtlasResult:
    """`atlas_prompts_job` run to the end (same arguments); `progress` is called with each `Progress`."""
    return run_job(atlas_prompts_job(*args, **kwargs), progress)


def score_volumes(result: AtlasResult, target: Volume) -> dict[str, Volume]:
    """The score maps as float-map volumes on the target's grid (napari layers, files), named ``atlas score …``."""
    return {
        name: target.with_data(data, kind=VolumeKind.FLOAT_MAP, name=f"atlas score {name}")
        for name, data in result.score_maps.items()
    }


def score_map_paths(names: Sequence[str] | Mapping[str, Any], folder: str | os.PathLike) -> dict[str, Path]:
    """Where `write_score_maps` puts each organ's map: ``<folder>/score_<plain organ name>.nii.gz``."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InvalidInput(f"{folder} is a file; give a folder for the score maps.")
    return {name: folder / f"score_{canonical_organ_name(name)}.nii.gz" for name in names}


def parse_thresholds(text: str | None) -> dict[str, float] | None:
    """``name=value,name=value`` (names or AMOS22 abbreviations) → a dict for `atlas_thresholds`; None stays None."""
    if not text:
        return None
    out = {}
    for item in text.split(","):
        name, sep, value = (part.strip() for part in item.partition("="))
        try:
            if not (sep and name):
                raise ValueError(item)
            out[name] = float(value)
        except ValueError:
            raise InvalidInput(
                f"--thresholds expects name=value pairs separated by commas (spleen=0.5,LKI=0.3), got '{item}'."
            ) from None
    return out


def write_score_maps(
    result: AtlasResult, target: Volume, folder: str | os.PathLike, *, overwrite: bool = False
) -> dict[str, Path]:
    """Write each score map as ``score_<organ>.nii.gz`` (float32) in `folder`, in the target file's geometry.

    The folder is created when missing; existing files are refused unless `overwrite` (nothing is written then).
    """
    from ..io import write_volume

    folder = Path(folder).expanduser()
    paths = score_map_paths(result.score_maps, folder)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise InvalidInput(f"{existing[0]} already exists; choose another folder or pass overwrite (--overwrite).")
    folder.mkdir(parents=True, exist_ok=True)
    volumes = score_volumes(result, target)
    return {name: write_volume(volumes[name], path, overwrite=overwrite) for name, path in paths.items()}
