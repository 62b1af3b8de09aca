"""Registration of one atlas (reference image + organ mask) onto a target image, with SimpleITK. Qt-free.

This is the worker side of `napari_segunc.prompts.atlas`: `run_atlas` is what a worker process runs. It takes
plain `Volume` objects (arrays and geometry, picklable) or file paths, never SimpleITK objects, and never raises:
a failure comes back as a reason.

Method (seed 004 §3.3.1, with SimpleITK instead of FROG)
---------------------------------------------------------
Both images are read in the canonical LPS grid, clipped to their 0.5–99.5 % intensity percentiles and, when they
hold more than ``max_voxels`` voxels, bin-shrunk (the finest axis first) for the optimiser only. The transform maps
target (fixed) points in mm to atlas (moving) points:

1. centre alignment of the two fields of view (``CenteredTransformInitializer``, GEOMETRY);
2. ``z_search``: an exhaustive search of the cranio-caudal offset (steps of max(4 mm, slice spacing), over
   ``|extent difference| / 2 + shorter extent / 4``), so scans of different length (an atlas of the whole abdomen,
   a target of a few slices) start at the right height;
3. affine, 3 levels (shrink 4, 2, 1; smoothing 2, 1, 0 voxels), Mattes mutual information (32 bins, random
   sampling of 10 % of the voxels with a fixed seed), regular-step gradient descent, 100 iterations per level;
4. optional refinement on images of at most ``deformable_voxels`` voxels, ``deformable_iterations`` iterations:
   ``bspline`` (cubic B-spline, one control point per ~50 mm, Mattes MI on 5 % of the voxels, L-BFGS-B, 2 levels) or
   ``demons`` (fast symmetric-forces demons on histogram-matched intensities, field smoothed with σ = 1.5 voxels;
   same modality only). On the phantom checks demons helps and B-spline does not (docs/atlas.md).

The atlas mask is then resampled onto the full-resolution target grid: ``nearest`` resamples the label map with
nearest-neighbour interpolation and splits it into one binary mask per organ; ``linear`` resamples each organ's
binary mask as float with linear interpolation (smoother score maps). The same inputs, seed and thread count give
the same result bit for bit, in this process or in a worker process.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import GeometryMismatch, InvalidInput
from ..volume import Volume, VolumeKind, check_same_grid

__all__ = ["AtlasOutcome", "Refinement", "RegistrationOptions", "WarpMode", "register_atlas", "run_atlas"]

log = logging.getLogger(__name__)


class Refinement(str, enum.Enum):
    """Deformable refinement after the affine registration."""

    NONE = "none"
    BSPLINE = "bspline"  # cubic B-spline, Mattes mutual information (any modality pair)
    DEMONS = "demons"  # fast symmetric-forces demons (same modality: CT↔CT, MR↔MR of one sequence)


class WarpMode(str, enum.Enum):
    """How an atlas mask is carried onto the target grid."""

    NEAREST = "nearest"  # label map, nearest neighbour, then one binary mask per organ
    LINEAR = "linear"  # each organ's binary mask as float, linear interpolation (values in 0..1)


@dataclasses.dataclass(frozen=True)
class RegistrationOptions:
    """Settings of one registration (see the module docstring); all defaults are what the CLI uses."""

    refine: Refinement = Refinement.NONE
    warp: WarpMode = WarpMode.NEAREST
    max_voxels: int = 2_000_000
    seed: int = 0
    threads: int = 1
    z_search: bool = True
    iterations: int = 100
    deformable_voxels: int = 250_000
    deformable_iterations: int = 50
    bspline_spacing_mm: float = 50.0


@dataclasses.dataclass(frozen=True)
class AtlasOutcome:
    """What one registration gives back: per-organ crops of the warped mask, or the reason it failed.

    ``organs`` maps an organ name to ``(offset, crop)``: `crop` is a bool (nearest) or float32 (linear) array
    whose voxel ``[0, 0, 0]`` lies at `offset` ``(z, y, x)`` of the target grid; organs that fall outside the target
    are absent.
    """

    index: int
    name: str
    organs: dict[str, tuple[tuple[int, int, int], np.ndarray]] | None
    reason: str = ""
    seconds: float = 0.0


def _float_image(volume: Volume, what: str) -> Any:
    """The volume as a float32 SimpleITK image, intensities clipped to their 0.5–99.5 % percentiles."""
    data = np.asarray(volume.data, dtype=np.float32)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        raise InvalidInput(f"{what} holds no finite value; it cannot be registered.")
    lo, hi = np.percentile(finite, [0.5, 99.5])
    if not hi > lo:
        lo, hi = float(finite.min()), float(finite.max())
    if not hi > lo:
        raise InvalidInput(f"{what} has no contrast (every voxel is {lo:g}); it cannot be registered.")
    return volume.with_data(np.clip(np.nan_to_num(data, nan=lo), lo, hi)).to_sitk()


def _shrink_to(image: Any, max_voxels: int) -> Any:
    """Bin-shrink `image` (the axis with the finest spacing first) until it holds at most `max_voxels` voxels."""
    import SimpleITK as sitk

    size, spacing = list(image.GetSize()), list(image.GetSpacing())
    factors = [1, 1, 1]
    while math.prod(n // f for n, f in zip(size, factors, strict=True)) > max_voxels:
        axis = min(range(3), key=lambda a: (spacing[a] * factors[a], -size[a] // factors[a]))
        if size[axis] // (factors[axis] * 2) < 8:
            break
        factors[axis] *= 2
    return image if factors == [1, 1, 1] else sitk.BinShrink(image, factors)


def _method(options: RegistrationOptions, fraction: float = 0.1) -> Any:
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(options.threads)
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(fraction, options.seed + 1)  # ITK treats seed 0 as "from the wall clock"
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return reg


def _z_offset(fixed: Any, moving: Any, initial: Any, options: RegistrationOptions) -> float:
    """Best cranio-caudal translation (mm) on top of `initial`, by exhaustive search at 1/4 resolution."""
    import SimpleITK as sitk

    extent = [img.GetSize()[2] * img.GetSpacing()[2] for img in (fixed, moving)]
    span = abs(extent[0] - extent[1]) / 2 + min(extent) / 4
    step = max(4.0, fixed.GetSpacing()[2], moving.GetSpacing()[2])
    steps = int(math.ceil(span / step))
    if steps == 0:
        return 0.0
    reg = _method(options, fraction=0.2)
    reg.SetMovingInitialTransform(initial)
    reg.SetInitialTransform(sitk.TranslationTransform(3), inPlace=True)
    reg.SetOptimizerAsExhaustive([0, 0, steps], stepLength=step)
    reg.SetOptimizerScales([1.0, 1.0, 1.0])
    reg.SetShrinkFactorsPerLevel([4])
    reg.SetSmoothingSigmasPerLevel([2])
    values: list[tuple[float, float]] = []
    reg.AddCommand(
        sitk.sitkIterationEvent, lambda: values.append((reg.GetMetricValue(), reg.GetOptimizerPosition()[2]))
    )
    reg.Execute(fixed, moving)
    finite = [(v, z) for v, z in values if math.isfinite(v)]
    return min(finite, key=lambda vz: (vz[0], abs(vz[1])))[1] if finite else 0.0


def _affine(fixed: Any, moving: Any, options: RegistrationOptions) -> Any:
    import SimpleITK as sitk

    init = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    affine = sitk.AffineTransform(init)
    if options.z_search:
        dz = _z_offset(fixed, moving, affine, options)
        tx, ty, tz = affine.GetTranslation()
        affine.SetTranslation((tx, ty, tz + dz))
    reg = _method(options)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-3,
        numberOfIterations=options.iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(affine, inPlace=True)
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.Execute(fixed, moving)
    if not math.isfinite(reg.GetMetricValue()):
        raise InvalidInput("The affine registration did not converge (do the images overlap?).")
    return affine


def _bspline(fixed: Any, moving: Any, affine: Any, options: RegistrationOptions) -> Any:
    import SimpleITK as sitk

    extent = [n * s for n, s in zip(fixed.GetSize(), fixed.GetSpacing(), strict=True)]
    mesh = [max(1, round(e / options.bspline_spacing_mm)) for e in extent]
    bspline = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
    reg = _method(options, fraction=0.05)
    reg.SetOptimizerAsLBFGSB(
        gradientConvergenceTolerance=1e-5,
        numberOfIterations=options.deformable_iterations,
        maximumNumberOfCorrections=5,
        maximumNumberOfFunctionEvaluations=2 * options.deformable_iterations,
        costFunctionConvergenceFactor=1e7,
    )
    reg.SetMovingInitialTransform(affine)
    reg.SetInitialTransform(bspline, inPlace=True)
    reg.SetShrinkFactorsPerLevel([4, 2])
    reg.SetSmoothingSigmasPerLevel([2, 1])
    reg.Execute(fixed, moving)
    return sitk.CompositeTransform([affine, bspline])


def _demons(fixed: Any, moving: Any, affine: Any, options: RegistrationOptions) -> Any:
    import SimpleITK as sitk

    warped = sitk.Resample(moving, fixed, affine, sitk.sitkLinear, float(np.min(sitk.GetArrayViewFromImage(moving))))
    matched = sitk.HistogramMatching(warped, fixed, numberOfHistogramLevels=128, numberOfMatchPoints=16)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfThreads(options.threads)
    demons.SetNumberOfIterations(options.deformable_iterations)
    demons.SetStandardDeviations(1.5)
    field = demons.Execute(fixed, matched)
    return sitk.CompositeTransform([affine, sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))])


def _transform(target: Volume, image: Volume, options: RegistrationOptions) -> Any:
    fixed = _shrink_to(_float_image(target, "The target image"), options.max_voxels)
    moving = _shrink_to(_float_image(image, "The atlas image"), options.max_voxels)
    affine = _affine(fixed, moving, options)
    if options.refine is Refinement.NONE:
        return affine
    fixed, moving = (_shrink_to(img, options.deformable_voxels) for img in (fixed, moving))
    refine = _bspline if options.refine is Refinement.BSPLINE else _demons
    return refine(fixed, moving, affine, options)


def _crop(array: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray] | None:
    from scipy import ndimage

    found = ndimage.find_objects((array > 0).astype(np.uint8))
    if not found or found[0] is None:
        return None
    box = found[0]
    return tuple(int(s.start) for s in box), np.ascontiguousarray(array[box])  # type: ignore[return-value]


def register_atlas(
    target: Volume, image: Volume, mask: Volume, labels: Mapping[str, int], options: RegistrationOptions
) -> dict[str, tuple[tuple[int, int, int], np.ndarray]]:
    """Register `image` onto `target` and carry `mask`'s organs onto the target grid.

    Parameters
    ----------
    target, image : Volume
        Target and atlas images (canonical grids; any spacing, size and field of view).
    mask : Volume
        The atlas's label map, on `image`'s grid.
    labels : mapping of str to int
        Organ name → label value in `mask`.
    options : RegistrationOptions

    Returns
    -------
    dict
        Organ name → ``(offset, crop)`` as in `AtlasOutcome.organs`.

    Raises
    ------
    InvalidInput
        The mask is not on the image's grid or holds none of the organs, an image has no contrast, the
        registration fails or no organ lands inside the target.
    """
    import SimpleITK as sitk

    try:
        check_same_grid(image, mask)
    except GeometryMismatch as exc:
        raise InvalidInput(f"The atlas mask does not lie on its image's grid: {exc}") from None
    values = np.asarray(mask.data)
    present = {name: v for name, v in labels.items() if np.any(values == v)}
    if not present:
        asked = ", ".join(f"{n}={v}" for n, v in labels.items())
        raise InvalidInput(f"The atlas mask holds none of the organs asked for ({asked}); check the label values.")
    transform = _transform(target, image, options)
    reference = target.with_data(np.zeros(target.shape, np.uint8)).to_sitk()
    resample = sitk.ResampleImageFilter()
    resample.SetNumberOfThreads(options.threads)
    resample.SetReferenceImage(reference)
    resample.SetTransform(transform)
    resample.SetDefaultPixelValue(0)
    out: dict[str, tuple[tuple[int, int, int], np.ndarray]] = {}
    if options.warp is WarpMode.NEAREST:
        resample.SetInterpolator(sitk.sitkNearestNeighbor)
        small = values.astype(np.uint8) if values.dtype == bool else values
        warped = sitk.GetArrayFromImage(resample.Execute(mask.with_data(small, kind=VolumeKind.LABELS).to_sitk()))
        for name, v in present.items():
            crop = _crop(warped == v)
            if crop is not None:
                out[name] = crop
    else:
        resample.SetInterpolator(sitk.sitkLinear)
        for name, v in present.items():
            one = mask.with_data((values == v).astype(np.float32), kind=VolumeKind.FLOAT_MAP).to_sitk()
            crop = _crop(np.clip(sitk.GetArrayFromImage(resample.Execute(one)), 0.0, 1.0))
            if crop is not None:
                out[name] = crop
    if not out:
        raise InvalidInput("After registration none of its organs falls inside the target image.")
    return out


def _reason(exc: Exception) -> str:
    """One line saying why: an ITK exception's ``Description:`` line, else the message's first line."""
    text = str(exc).strip()
    if isinstance(exc, InvalidInput):
        return text
    for line in text.splitlines():
        if line.strip().startswith("Description:"):
            return f"The registration failed: {line.strip().removeprefix('Description:').strip()}"
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no message'}"


def _read(item: Volume | str | os.PathLike, kind: str) -> Volume:
    if isinstance(item, Volume):
        return item
    from ..io import read_volume

    return read_volume(item, kind=kind)


def run_atlas(
    index: int,
    name: str,
    target: Volume,
    image: Volume | str | os.PathLike,
    mask: Volume | str | os.PathLike,
    labels: Mapping[str, int],
    options: RegistrationOptions,
) -> AtlasOutcome:
    """One task: read the atlas files if paths, `register_atlas`; never raises (a failure is a reason)."""
    start = time.perf_counter()
    try:
        organs = register_atlas(target, _read(image, "intensity"), _read(mask, "labels"), labels, options)
    except Exception as exc:  # noqa: BLE001 - a failed atlas is reported and skipped, the others go on
        reason = _reason(exc)
        log.info("atlas %s failed: %s", name, reason)
        return AtlasOutcome(index, name, None, reason, time.perf_counter() - start)
    return AtlasOutcome(index, name, organs, "", time.perf_counter() - start)
