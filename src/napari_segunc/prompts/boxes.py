"""Box prompts for MedSAM2 (seed 004, §3.3.1–3.3.3): where the boxes go, how they grow, and ``boxes.json``.

Every array is ``(z, y, x)`` in the package's canonical grid and every coordinate a voxel index in it. A box is
``[x_min, y_min, x_max, y_max]`` with *inclusive* bounds on one axial slice ``z``, exactly what MedSAM2's scripts pass
to SAM2's ``add_new_points_or_box(box=...)``.

Geometry
--------
An organ (a mask, or a score map thresholded strictly above its threshold) spans the slices ``z_min..z_max``.
Strategy A puts one box on slice ``z_min + round_half_up((z_max - z_min) / 2)``, strategy B (and C and D, which place
their boxes like B) three, at ``z_min + round_half_up(f * (z_max - z_min))`` for f = 1/4, 1/2, 3/4, with duplicates
dropped (an organ of 1 or 2 slices gets 1 or 2 boxes). Each box is the smallest rectangle holding the organ's
voxels on its slice; when that slice is empty (a gap, a non-convex organ) the nearest non-empty slice is used (the
lower one on a tie). Strategy D enlarges each box about its centre so its area grows by 10 % (width and height each
by √1.1) and the slice range by 20 % (10 % each side, rounded outwards), clipped to the image, except for the
`NO_ENLARGEMENT` organs (aorta, inferior vena cava, adrenal glands).

The file ``boxes.json``
-----------------------
UTF-8 JSON, written atomically and never over an existing file unless asked::

    {"format": "napari-segunc boxes", "version": 1, "shape_zyx": [48, 112, 144], "strategy": "B",
     "source": "mask:/data/seg.nii.gz", "missing": [],
     "organs": [{"label": 1, "name": "liver", "z_min": 3, "z_max": 40, "enlargeable": true,
                 "boxes": [{"z": 12, "box": [10, 20, 60, 70]}, ...]}]}

``shape_zyx`` is the canonical grid the boxes were made on (a different image is refused when a box falls outside
it), ``strategy`` one of ``"A"``…``"D"`` or ``null``, ``source`` free text saying where the boxes came from,
``missing`` (optional) organs that were asked for but not found. Per organ: label value (>= 1), name, the slice
range propagated over (inclusive), ``enlargeable`` (optional, default true) and at least one box, one per slice at
most, each inside ``z_min..z_max``, with ``0 <= x_min <= x_max`` and ``0 <= y_min <= y_max``.

One responsibility, where boxes go and how ``boxes.json`` stores them; kept in one module past 400 lines.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import InvalidInput
from ._model import (
    NO_ENLARGEMENT,
    ORGAN_ALIASES,
    Box,
    OrganPrompt,
    PromptSet,
    Strategy,
    canonical_organ_name,
    grid_shape,
)

__all__ = [
    "NO_ENLARGEMENT",
    "ORGAN_ALIASES",
    "Box",
    "OrganPrompt",
    "PromptSet",
    "Strategy",
    "box_on_slice",
    "box_slices",
    "canonical_organ_name",
    "enlarge_prompt",
    "enlarge_prompts",
    "is_result_prompts",
    "load_prompts",
    "organ_prompt_from_mask",
    "prompts_from_mask",
    "prompts_from_scores",
    "round_half_up",
    "save_prompts",
]

log = logging.getLogger(__name__)

_EPS = 1e-9  # floor/ceil guard: a bound that is an integer in exact arithmetic must not move with float noise


def round_half_up(x: float) -> int:
    """``floor(x + 0.5)``: 2.5 → 3, 2.4 → 2, -0.5 → 0 (Python's ``round`` would give 2 for 2.5)."""
    return math.floor(x + 0.5)


def box_slices(z_min: int, z_max: int, strategy: Strategy | str) -> list[int]:
    """Slices that get a box for an organ spanning ``z_min..z_max`` (inclusive), ascending, without repeats.

    A: ``[z_min + round_half_up((z_max - z_min) / 2)]``; B, C, D: ``z_min + round_half_up(f * (z_max - z_min))``
    for f = 1/4, 1/2, 3/4.
    """
    strategy = Strategy(strategy)
    if not 0 <= z_min <= z_max:
        raise InvalidInput(f"An organ's slice range {z_min}..{z_max} must start at 0 or more and not end before it.")
    fractions = (0.5,) if strategy is Strategy.A else (0.25, 0.5, 0.75)
    return sorted({int(z_min) + round_half_up(f * (z_max - z_min)) for f in fractions})


def box_on_slice(mask2d: np.ndarray) -> tuple[int, int, int, int] | None:
    """Smallest rectangle ``(x_min, y_min, x_max, y_max)`` (inclusive) holding the True pixels of a ``(y, x)`` mask.

    None when the slice is empty.
    """
    mask2d = np.asarray(mask2d)
    if mask2d.ndim != 2:
        raise InvalidInput(f"A box is made on one axial slice (y, x); got an array of shape {mask2d.shape}.")
    ys, xs = np.flatnonzero(mask2d.any(axis=1)), np.flatnonzero(mask2d.any(axis=0))
    if ys.size == 0:
        return None
    return int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])


def _prompt(mask, offset, *, label, name, strategy, enlargeable) -> OrganPrompt | None:
    """`organ_prompt_from_mask` on a crop of the grid whose first voxel is at `offset` (z, y, x)."""
    oz, oy, ox = offset
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    if zs.size == 0:
        return None
    z_min, z_max = int(zs[0]) + oz, int(zs[-1]) + oz
    chosen = sorted({int(zs[np.argmin(np.abs(zs + oz - z))]) + oz for z in box_slices(z_min, z_max, strategy)})
    boxes = []
    for z in chosen:
        x0, y0, x1, y1 = box_on_slice(mask[z - oz])
        boxes.append(Box(z, x0 + ox, y0 + oy, x1 + ox, y1 + oy))
    if enlargeable is None:
        enlargeable = canonical_organ_name(name) not in NO_ENLARGEMENT
    return OrganPrompt(label, name, z_min, z_max, tuple(boxes), enlargeable=enlargeable)


def organ_prompt_from_mask(
    mask3d: np.ndarray, *, label: int, name: str, strategy: Strategy | str, enlargeable: bool | None = None
) -> OrganPrompt | None:
    """Box prompt of one organ from its binary mask.

    Parameters
    ----------
    mask3d : (Z, Y, X) array of bool
        The organ's voxels (nonzero = organ).
    label, name : int, str
        Label value and name of the organ.
    strategy : Strategy
        A (one box) or B/C/D (three), see `box_slices`. When a chosen slice is empty, the nearest non-empty slice
        takes its box (the lower one on a tie); boxes landing on the same slice are merged.
    enlargeable : bool, optional
        Default: True unless the organ's canonical name is in `NO_ENLARGEMENT`.

    Returns
    -------
    OrganPrompt or None
        None when the mask is empty.
    """
    mask3d = np.asarray(mask3d)
    if mask3d.ndim != 3:
        raise InvalidInput(f"The mask of '{name}' must be a 3D (z, y, x) array; got shape {mask3d.shape}.")
    mask = mask3d.astype(bool, copy=False)
    return _prompt(mask, (0, 0, 0), label=label, name=name, strategy=strategy, enlargeable=enlargeable)


def _enlargeable(name: str, no_enlargement: Collection[str]) -> bool:
    return canonical_organ_name(name) not in {canonical_organ_name(n) for n in no_enlargement}


def _check_labels(labels: Mapping[str, int]) -> None:
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise InvalidInput(f"Organ '{name}' needs a label value of 1 or more, got {value!r}.")


def _finish(shape, organs, missing, *, strategy, enlarge, source, what) -> PromptSet:
    for name in missing:
        log.warning("%s is absent from the %s: no box prompt for it", name, what)
    prompts = PromptSet(shape, tuple(organs), strategy, source, tuple(missing))
    return enlarge_prompts(prompts, no_enlargement=()) if enlarge else prompts


def _enlarge_flag(strategy: Strategy, enlarge: bool | None) -> bool:
    if enlarge is None:
        return strategy is Strategy.D
    if strategy is Strategy.D and not enlarge:
        raise InvalidInput("Strategy D means enlarged boxes; use strategy C for the same boxes without enlargement.")
    return bool(enlarge)


def prompts_from_mask(
    label_map: np.ndarray,
    labels: Mapping[str, int] | None = None,
    *,
    strategy: Strategy | str = Strategy.B,
    enlarge: bool | None = None,
    no_enlargement: Collection[str] = NO_ENLARGEMENT,
    source: str = "",
) -> PromptSet:
    """Box prompts of every organ of a label map (ground truth for strategies A/B, a first pass for C/D).

    Parameters
    ----------
    label_map : (Z, Y, X) array of int
        Label values in the canonical grid, 0 = background.
    labels : mapping of str to int, optional
        Organ name → label value. Default: every nonzero value in the map, named ``label_<value>``.
    strategy : Strategy
        Box placement, see `box_slices`.
    enlarge : bool, optional
        Enlarge the boxes and slice ranges as strategy D does (`enlarge_prompt`). Default: only for strategy D.
    no_enlargement : collection of str
        Organs (names or aliases) never enlarged; they get ``enlargeable=False``.
    source : str
        Recorded in the result, e.g. ``"mask:/path/seg.nii.gz"``.

    Returns
    -------
    PromptSet
        One `OrganPrompt` per organ present, in the order of `labels`; organs absent from the map are logged as
        warnings and listed in ``missing``.
    """
    from scipy import ndimage

    strategy = Strategy(strategy)
    enlarge = _enlarge_flag(strategy, enlarge)
    label_map = np.asarray(label_map)
    if label_map.ndim != 3 or label_map.dtype.kind not in "iub":
        raise InvalidInput(
            f"A label map must be a 3D (z, y, x) integer array; got {label_map.dtype} of shape {label_map.shape}."
        )
    if label_map.dtype.kind == "b":
        label_map = label_map.astype(np.uint8)
    if labels is None:
        labels = {f"label_{int(v)}": int(v) for v in np.unique(label_map) if v > 0}
    _check_labels(labels)
    crops = ndimage.find_objects(label_map, max_label=max(labels.values(), default=0)) if labels else []
    organs, missing = [], []
    for name, value in labels.items():
        crop = crops[value - 1] if value <= len(crops) else None
        prompt = None
        if crop is not None:
            offset = tuple(s.start for s in crop)
            enlargeable = _enlargeable(name, no_enlargement)
            prompt = _prompt(
                label_map[crop] == value,
                offset,
                label=int(value),
                name=name,
                strategy=strategy,
                enlargeable=enlargeable,
            )
        if prompt is None:
            missing.append(name)
        else:
            organs.append(prompt)
    return _finish(
        label_map.shape, organs, missing, strategy=strategy, enlarge=enlarge, source=source, what="label map"
    )


def prompts_from_scores(
    score_maps: Mapping[str, np.ndarray],
    labels: Mapping[str, int],
    thresholds: Mapping[str, float],
    *,
    strategy: Strategy | str = Strategy.B,
    enlarge: bool | None = None,
    no_enlargement: Collection[str] = NO_ENLARGEMENT,
    source: str = "",
) -> PromptSet:
    """Box prompts from per-organ score maps (e.g. the mean of registered atlas masks, values 0..1).

    An organ is the voxels whose score is *strictly above* its threshold (a score equal to it, or NaN, is out).

    Parameters
    ----------
    score_maps : mapping of str to (Z, Y, X) float array
        One map per organ of `labels`, all of one shape.
    labels : mapping of str to int
        Organ name → label value, the organs to prompt (in this order).
    thresholds : mapping of str to float
        Organ name → threshold.
    strategy, enlarge, no_enlargement, source
        As in `prompts_from_mask`.
    """
    strategy = Strategy(strategy)
    enlarge = _enlarge_flag(strategy, enlarge)
    _check_labels(labels)
    shape = None
    organs, missing = [], []
    for name, value in labels.items():
        if name not in score_maps or name not in thresholds:
            raise InvalidInput(f"Organ '{name}' needs both a score map and a threshold.")
        scores = np.asarray(score_maps[name])
        if scores.ndim != 3 or (shape is not None and scores.shape != shape):
            raise InvalidInput(
                f"The score map of '{name}' has shape {scores.shape}; all score maps must be 3D "
                f"(z, y, x) arrays of one shape{f' ({shape})' if shape else ''}."
            )
        shape = scores.shape
        mask = scores > float(thresholds[name])
        prompt = organ_prompt_from_mask(
            mask, label=int(value), name=name, strategy=strategy, enlargeable=_enlargeable(name, no_enlargement)
        )
        (missing.append(name) if prompt is None else organs.append(prompt))
    if shape is None:
        raise InvalidInput("No organ to prompt: the labels are empty.")
    return _finish(shape, organs, missing, strategy=strategy, enlarge=enlarge, source=source, what="score maps")


def _floor(v: float) -> int:
    return math.floor(v + _EPS)


def _ceil(v: float) -> int:
    return math.ceil(v - _EPS)


def _grow(lo: int, hi: int, factor: float, n: int) -> tuple[int, int]:
    """Inclusive bounds `lo..hi` scaled by `factor` about their centre (in voxel edges), clipped to ``0..n-1``."""
    c, e = (lo + hi) / 2.0, (hi - lo + 1) / 2.0 * factor
    return max(_floor(c - e + 0.5), 0), min(_ceil(c + e - 0.5), n - 1)


def enlarge_prompt(
    prompt: OrganPrompt, shape: Sequence[int], *, area_factor: float = 1.10, height_factor: float = 1.20
) -> OrganPrompt:
    """Strategy D's enlargement of one organ's boxes and slice range, clipped to a ``(Z, Y, X)`` grid.

    Each box keeps its slice and centre ``c = (x_min + x_max) / 2``; its half extent in voxel edges
    ``e = (x_max - x_min + 1) / 2`` becomes ``e' = e * sqrt(area_factor)``, then ``x_min' = floor(c - e' + 0.5)``,
    ``x_max' = ceil(c + e' - 0.5)`` (same for y): the area grows by `area_factor`, rounded outwards. The slice range
    grows by ``d = (height_factor - 1) / 2 * (z_max - z_min)`` on each side: ``floor(z_min - d)``,
    ``ceil(z_max + d)``. Everything is clipped to the grid. A prompt with ``enlargeable=False`` comes back unchanged.
    """
    shape = grid_shape(shape)
    if not (math.isfinite(area_factor) and math.isfinite(height_factor)) or min(area_factor, height_factor) < 1:
        raise InvalidInput(f"Enlargement factors must be 1 or more, got area {area_factor}, height {height_factor}.")
    problem = prompt.outside(shape)
    if problem:
        raise InvalidInput(f"The prompt for '{prompt.name}' does not fit the {shape} image: {problem}.")
    if not prompt.enlargeable:
        return prompt
    nz, ny, nx = shape
    k = math.sqrt(area_factor)
    boxes = []
    for b in prompt.boxes:
        (x0, x1), (y0, y1) = _grow(b.x_min, b.x_max, k, nx), _grow(b.y_min, b.y_max, k, ny)
        boxes.append(Box(b.z, x0, y0, x1, y1))
    d = (height_factor - 1.0) / 2.0 * (prompt.z_max - prompt.z_min)
    z_min, z_max = max(_floor(prompt.z_min - d), 0), min(_ceil(prompt.z_max + d), nz - 1)
    return OrganPrompt(prompt.label, prompt.name, z_min, z_max, tuple(boxes), enlargeable=True)


def enlarge_prompts(
    prompts: PromptSet,
    *,
    no_enlargement: Collection[str] | None = None,
    area_factor: float = 1.10,
    height_factor: float = 1.20,
) -> PromptSet:
    """`enlarge_prompt` on every organ of a set except those named in `no_enlargement` (default `NO_ENLARGEMENT`).

    Organs with ``enlargeable=False`` are never enlarged either. A strategy C set becomes strategy D.
    """
    skip = NO_ENLARGEMENT if no_enlargement is None else no_enlargement
    organs = tuple(
        o
        if not _enlargeable(o.name, skip)
        else enlarge_prompt(o, prompts.shape, area_factor=area_factor, height_factor=height_factor)
        for o in prompts.organs
    )
    strategy = Strategy.D if prompts.strategy is Strategy.C else prompts.strategy
    return PromptSet(prompts.shape, organs, strategy, prompts.source, prompts.missing)


def _dumps(d: dict) -> str:
    """JSON text of `PromptSet.to_dict` with one line per box (readable, diff-friendly)."""
    lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in d.items() if k != "organs"]
    organs = []
    for o in d["organs"]:
        head = json.dumps({k: v for k, v in o.items() if k != "boxes"})[:-1]
        boxes = ",\n".join(f"      {json.dumps(b)}" for b in o["boxes"])
        organs.append(f'    {head}, "boxes": [\n{boxes}\n    ]}}')
    lines.append('  "organs": [' + ("\n" + ",\n".join(organs) + "\n  ]" if organs else "]"))
    return "\n".join(lines) + "\n}\n"


def save_prompts(prompts: PromptSet, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a `PromptSet` as ``boxes.json`` (format in the module docstring), atomically.

    Raises
    ------
    InvalidInput
        The file exists and `overwrite` is False (nothing is written), or its folder does not exist.
    """
    from ..io import atomic_write

    text = _dumps(prompts.to_dict())
    out = atomic_write(Path(path).expanduser(), lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)
    log.info("wrote %d organ prompts to %s", len(prompts.organs), out)
    return out


def load_prompts(path: str | os.PathLike) -> PromptSet:
    """Read a ``boxes.json`` written by `save_prompts` (or by hand), or the final pass of a MedSAM2 result's
    ``prompts.json`` (what replays that result: `is_result_prompts`).

    Raises
    ------
    InvalidInput
        Naming the file: missing, a folder, not UTF-8 JSON, another format or version, missing or unknown entries,
        negative or reversed bounds, a box outside its organ's slice range or the grid, two boxes on one slice.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InvalidInput(f"{p} does not exist. Check the path of the box prompt file.")
    if p.is_dir():
        raise InvalidInput(f"{p} is a folder; give the box prompt file (boxes.json) inside it.")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{p} cannot be read as a text file ({exc}).") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{p} is not a JSON file ({exc.msg}, line {exc.lineno}); it holds no box prompts.") from None
    if isinstance(d, dict) and "passes" in d:  # a `segunc medsam2` result's prompts.json: its final pass
        return _final_pass(d, p)
    return PromptSet.from_dict(d, source_file=str(p))


def _final_pass(d: dict, p: Path) -> PromptSet:
    passes = d["passes"]
    if not isinstance(passes, list) or not passes:
        raise InvalidInput(f"{p} is not a usable prompt file: its 'passes' must be a non-empty list.")
    return PromptSet.from_dict(passes[-1], source_file=str(p))


def is_result_prompts(path: str | os.PathLike) -> bool:
    """Whether `path` is a MedSAM2 result's ``prompts.json`` (every pass) rather than one prompt set."""
    try:
        d = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(d, dict) and "passes" in d
