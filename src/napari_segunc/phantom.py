"""A deterministic synthetic abdominal CT study with simulated raters: the package's embedded default data.

`make_phantom` builds a small portal-venous-like abdominal CT in the canonical LPS grid (array ``(z, y, x)``; x grows
towards the patient's left, y towards posterior, z towards superior), its exact organ anatomy (``truth``) and K
simulated rater masks that disagree the way people do: at the boundaries, with a tight, a loose and a noisy style.
Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives byte-identical arrays.

Anatomy is laid out in units of the field of view (body half-axes ``Bx``, ``By`` and half-height ``Hz``), so that
smaller grids still hold every organ. Organ shapes are ellipsoids (a bent one for the pancreas) deformed by smooth
Gaussian random fields; no voxel-blocky primitives.

One responsibility, drawing the phantom study; kept in one module past 400 lines (`napari_segunc.samples` turns it
into napari layers).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from .errors import InvalidInput
from .organs import PHANTOM_LABELS
from .volume import Modality, Volume, VolumeKind

__all__ = ["DEFAULT_SHAPE", "DEFAULT_SPACING", "LABELS", "PhantomStudy", "make_phantom", "write_phantom"]

log = logging.getLogger(__name__)

#: The organs painted, name → label value (`napari_segunc.organs.PHANTOM_LABELS`).
LABELS: dict[str, int] = PHANTOM_LABELS
DEFAULT_SHAPE: tuple[int, int, int] = (48, 112, 144)
DEFAULT_SPACING: tuple[float, float, float] = (3.0, 2.5, 2.5)

# Nominal ellipsoids: centre (x in Bx, y in By, z in Hz), semi-axes (same units), axial rotation in degrees.
_ORGANS = {
    "liver_right_lobe": ((-0.48, -0.08, 0.38), (0.34, 0.56, 0.72), 0.0),
    "liver_left_lobe": ((-0.02, -0.45, 0.58), (0.32, 0.22, 0.42), -15.0),
    "spleen": ((0.60, 0.35, 0.45), (0.13, 0.32, 0.45), 35.0),
    "kidney_right": ((-0.38, 0.45, -0.30), (0.18, 0.21, 0.55), -30.0),
    "kidney_left": ((0.38, 0.45, -0.15), (0.18, 0.21, 0.55), 30.0),
    "stomach": ((0.30, -0.35, 0.45), (0.20, 0.24, 0.45), 20.0),
}
# Pancreas: a bent ellipsoid along x from the head (u = -1) to the tail (u = +1): (head, neck, tail) values.
_PANCREAS = {
    "x": (-0.24, 0.50),
    "y": (0.10, -0.02, 0.18),
    "z": (0.05, 0.12, 0.22),
    "ty": (0.12, 0.08),
    "tz": (0.26, 0.18),
}
_HU = {
    "fat": -100.0,
    "visceral_fat": -90.0,
    "muscle": 45.0,
    "bowel": 30.0,
    "gas": -850.0,
    "fluid": 15.0,
    "liver": 100.0,
    "spleen": 110.0,
    "pancreas": 90.0,
    "kidney_cortex": 160.0,
    "kidney_medulla": 125.0,
    "aorta": 165.0,
    "ivc": 125.0,
    "cortical_bone": 700.0,
    "marrow": 280.0,
    "posterior_bone": 600.0,
    "disc": 80.0,
}
# Tissues painted in this order (later ones cover earlier ones): (mask, tissue).
_PAINT_ORDER = (
    ("body", "fat"),
    ("wall", "muscle"),
    ("cavity", "visceral_fat"),
    ("bowel", "bowel"),
    ("gas", "gas"),
    ("muscle", "muscle"),
    ("stomach", "muscle"),
    ("stomach_fluid", "fluid"),
    ("stomach_gas", "gas"),
    ("aorta", "aorta"),
    ("ivc", "ivc"),
)
# Rater styles (bias and jitter amplitude in voxels of mean size), cycled for raters beyond three.
_STYLES = (("tight", -1.0, 0.35), ("loose", 1.0, 0.35), ("noisy", 0.0, 1.0))
_DIFFICULTY = {"liver": 1.0, "kidney_right": 1.0, "kidney_left": 1.0, "spleen": 1.0, "pancreas": 1.6}
_CAP_VOXELS = 2.0  # raters never move a boundary by more than this many (mean-size) voxels


@dataclasses.dataclass
class PhantomStudy:
    """A synthetic CT study with its true anatomy and simulated rater masks, all on one grid.

    Attributes
    ----------
    image : Volume
        CT in Hounsfield units, int16, shape (Z, Y, X); ``kind=INTENSITY``, ``modality=CT``, name ``"phantom_ct"``.
    truth : Volume
        Exact organ anatomy, uint8 label map (values from `labels`, 0 = background), name ``"truth"``.
    raters : list of Volume
        Simulated raters' uint8 label maps, names ``"rater_1"``, ``"rater_2"``...
    labels : dict of str to int
        Organ name → label value (a copy of `LABELS`).
    seed : int
        Seed the study was made from.
    """

    image: Volume
    truth: Volume
    raters: list[Volume]
    labels: dict[str, int]
    seed: int


def _smooth_field(rng: np.random.Generator, shape, spacing, length_mm: float) -> np.ndarray:
    """Zero-mean, unit-variance smooth Gaussian random field, float32 of `shape`, features ~`length_mm` wide.

    Sum of separable Gaussian bumps on a control grid spaced `length_mm` / 2, evaluated axis by axis with
    ``einsum`` (not BLAS: its thread pool stalls on a busy CPU, and these products are tiny).
    """
    width = length_mm / 2.0
    mats = []
    for n, s in zip(shape, spacing, strict=True):
        pos = np.arange(n) * s
        centres = np.arange(-2 * width, n * s + 2 * width, width)
        mats.append(np.exp(-0.5 * ((pos[:, None] - centres[None, :]) / width) ** 2).astype(np.float32))
    coarse = rng.standard_normal([m.shape[1] for m in mats]).astype(np.float32)
    f = np.einsum("abc,ck->abk", coarse, np.ascontiguousarray(mats[2].T))
    f = np.einsum("jb,abk->ajk", mats[1], f)
    f = np.einsum("ia,ajk->ijk", mats[0], f)
    f -= f.mean()
    f /= max(float(f.std()), 1e-12)
    return f


class _Frame:
    """Physical coordinates (mm from the volume centre) and the field-of-view units of the anatomy."""

    def __init__(self, shape, spacing, rng: np.random.Generator):
        self.shape, self.spacing = shape, spacing
        axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing, strict=True)]
        self.z = axes[0][:, None, None].astype(np.float32)
        self.y = axes[1][None, :, None].astype(np.float32)
        self.x = axes[2][None, None, :].astype(np.float32)
        wobble = rng.uniform(0.95, 1.05, size=2)
        self.bx = 0.88 * shape[2] * spacing[2] / 2.0 * wobble[0]
        self.by = 0.80 * shape[1] * spacing[1] / 2.0 * wobble[1]
        self.hz = shape[0] * spacing[0] / 2.0
        self.rng = rng

    def ellipsoid(self, centre, semi, angle_deg: float, *, jitter: bool = True):
        """Normalised squared radius of a (seed-perturbed) ellipsoid rotated in the axial plane."""
        centre, semi = np.asarray(centre, float), np.asarray(semi, float)
        if jitter:
            centre = centre + self.rng.uniform(-0.04, 0.04, 3)
            semi = semi * self.rng.uniform(0.9, 1.1, 3)
            angle_deg = angle_deg + self.rng.uniform(-6.0, 6.0)
        t = math.radians(angle_deg)
        dx, dy = self.x - centre[0] * self.bx, self.y - centre[1] * self.by
        u = (math.cos(t) * dx + math.sin(t) * dy) / (semi[0] * self.bx)
        v = (-math.sin(t) * dx + math.cos(t) * dy) / (semi[1] * self.by)
        w = (self.z - centre[2] * self.hz) / (semi[2] * self.hz)
        return u * u + v * v + w * w

    def pancreas(self):
        """Normalised squared radius of the pancreas (a tube-like bent ellipsoid, thicker head)."""
        p, j = _PANCREAS, self.rng.uniform(-0.04, 0.04, 4)
        x0, x1 = (p["x"][0] + j[0]) * self.bx, (p["x"][1] + j[1]) * self.bx
        u = (2.0 * self.x - x0 - x1) / (x1 - x0)

        def quad(vals, unit, shift):
            h, m, t = (v + shift for v in vals)
            return (m + 0.5 * (t - h) * u + 0.5 * (t + h - 2 * m) * u * u) * unit

        def lerp(vals, unit):
            return (vals[0] * (1 - u) / 2 + vals[1] * (1 + u) / 2) * unit * self.rng.uniform(0.9, 1.1)

        dy = (self.y - quad(p["y"], self.by, j[2])) / lerp(p["ty"], self.by)
        dz = (self.z - quad(p["z"], self.hz, j[3])) / lerp(p["tz"], self.hz)
        return u**4 + dy * dy + dz * dz

    def superellipse(self, shrink_mm: float):
        """Body outline (slightly squared ellipse) shrunk inwards by about `shrink_mm`."""
        ax, ay = self.bx - shrink_mm, self.by - shrink_mm
        return np.abs(self.x / ax) ** 2.3 + np.abs(self.y / ay) ** 2.3


def _anatomy(frame: _Frame, field_len: float):
    """Tissue masks (dict of bool arrays) and the truth label map."""
    rng, shape, sp = frame.rng, frame.shape, frame.spacing
    b = min(frame.bx, frame.by)

    def deformed(r2, amp=0.12):
        return r2 < (1.0 + amp * _smooth_field(rng, shape, sp, field_len)) ** 2

    m = {}
    wiggle = 1.0 + 0.03 * _smooth_field(rng, shape, sp, 2 * field_len)
    m["body"] = frame.superellipse(0.0) < wiggle
    m["wall"] = frame.superellipse(0.09 * b) < wiggle
    m["cavity"] = frame.superellipse(0.16 * b) < wiggle
    bowel = _smooth_field(rng, shape, sp, 0.6 * field_len)
    m["bowel"] = m["cavity"] & (bowel > -0.1)
    m["gas"] = m["cavity"] & (bowel > 1.9)
    vb = frame.ellipsoid((0.0, 0.62, 0.0), (0.13, 0.17, 1e6), 0.0, jitter=False)
    m["vertebra"] = vb < 1.0
    m["marrow"] = vb < 0.62
    period = 0.42 * frame.hz
    phase = (frame.z / period + rng.uniform(0, 1)) % 1.0
    m["disc"] = m["vertebra"] & (phase < 0.2)
    canal = frame.ellipsoid((0.0, 0.84, 0.0), (0.05, 0.075, 1e6), 0.0, jitter=False)
    arch = frame.ellipsoid((0.0, 0.86, 0.0), (0.085, 0.125, 1e6), 0.0, jitter=False)
    spinous = (np.abs(frame.x) < 0.025 * frame.bx) & (frame.y > 0.85 * frame.by) & (frame.y < 0.94 * frame.by)
    m["canal"] = canal < 1.0
    m["posterior_bone"] = ((arch < 1.0) & ~m["canal"] & (frame.y > 0.80 * frame.by)) | spinous
    m["spine"] = m["vertebra"] | m["canal"] | m["posterior_bone"]
    grow = np.clip(0.7 - 0.35 * frame.z / frame.hz, 0.3, 1.1)
    m["muscle"] = np.zeros(shape, bool)
    for side in (-1.0, 1.0):
        m["muscle"] |= frame.ellipsoid((side * 0.15, 0.80, 0.0), (0.11, 0.14, 1e6), 0.0) < 1.0
        psoas = frame.ellipsoid((side * 0.17, 0.55, 0.0), (0.07, 0.08, 1e6), 0.0)
        m["muscle"] |= psoas < grow * grow
    m["aorta"] = frame.ellipsoid((0.07, 0.36, 0.0), (0.065, 0.09, 1e6), 0.0) < 1.0
    m["ivc"] = frame.ellipsoid((-0.13, 0.32, 0.0), (0.075, 0.07, 1e6), 0.0) < 1.0
    st = frame.ellipsoid(*_ORGANS["stomach"])
    m["stomach"] = deformed(st) & m["cavity"]
    m["stomach_fluid"] = st < 0.7
    m["stomach_gas"] = m["stomach_fluid"] & (frame.y < -0.45 * frame.by) & (st < 0.5)
    liver = np.minimum(frame.ellipsoid(*_ORGANS["liver_right_lobe"]), frame.ellipsoid(*_ORGANS["liver_left_lobe"]))
    organs = {"liver": deformed(liver)}
    organs["spleen"] = deformed(frame.ellipsoid(*_ORGANS["spleen"]))
    kidney_r2 = {}
    for name in ("kidney_right", "kidney_left"):
        kidney_r2[name] = frame.ellipsoid(*_ORGANS[name])
        organs[name] = deformed(kidney_r2[name], 0.08)
    organs["pancreas"] = deformed(frame.pancreas(), 0.15)
    m["medulla"] = (kidney_r2["kidney_right"] < 0.4) | (kidney_r2["kidney_left"] < 0.4)
    m["pelvis"] = (kidney_r2["kidney_right"] < 0.1) | (kidney_r2["kidney_left"] < 0.1)
    allowed = m["cavity"] & ~m["spine"] & ~m["aorta"] & ~m["ivc"]
    truth = np.zeros(shape, np.uint8)
    for name in ("liver", "spleen", "kidney_right", "kidney_left", "pancreas"):  # later organs win overlaps
        truth[organs[name] & allowed] = LABELS[name]
    return m, truth


def _paint(m: dict, truth: np.ndarray, frame: _Frame, field_len: float) -> np.ndarray:
    """CT image in HU (int16): tissue values, a little texture, blur and correlated noise."""
    rng, shape, sp = frame.rng, frame.shape, frame.spacing
    hu = np.full(shape, -1000.0, np.float32)
    for mask, tissue in _PAINT_ORDER:
        hu[m[mask] & m["body"]] = _HU[tissue]
    texture = 6.0 * _smooth_field(rng, shape, sp, 0.3 * field_len)
    for name in ("liver", "spleen", "pancreas"):
        sel = truth == LABELS[name]
        hu[sel] = _HU[name] + (1.5 if name == "pancreas" else 0.5) * texture[sel]
    kidneys = (truth == LABELS["kidney_right"]) | (truth == LABELS["kidney_left"])
    hu[kidneys] = _HU["kidney_cortex"]
    hu[kidneys & m["medulla"]] = _HU["kidney_medulla"]
    hu[kidneys & m["pelvis"]] = _HU["fluid"]
    hu[m["vertebra"]] = _HU["cortical_bone"]
    hu[m["marrow"]] = _HU["marrow"]
    hu[m["disc"]] = _HU["disc"]
    hu[m["canal"]] = _HU["fluid"]
    hu[m["posterior_bone"]] = _HU["posterior_bone"]
    hu = ndimage.gaussian_filter(hu, sigma=(0.4, 0.6, 0.6))
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=0.5)
    hu += noise * (15.0 / max(float(noise.std()), 1e-6))
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def _signed_distances(truth: np.ndarray, spacing, margin_mm: float):
    """Per organ: (crop slices, signed distance in mm (negative inside, 0 on the boundary), max depth in mm)."""
    out = {}
    half = 0.5 * min(spacing)
    pad = [int(math.ceil(margin_mm / s)) + 2 for s in spacing]
    for name, value in LABELS.items():
        mask = truth == value
        idx = np.nonzero(mask)
        crop = tuple(
            slice(max(int(i.min()) - p, 0), min(int(i.max()) + p + 1, n))
            for i, p, n in zip(idx, pad, truth.shape, strict=True)
        )
        inside = mask[crop]
        d_in = ndimage.distance_transform_edt(inside, sampling=spacing)
        d_out = ndimage.distance_transform_edt(~inside, sampling=spacing)
        sd = np.where(inside, half - d_in, d_out - half).astype(np.float32)
        out[name] = (crop, sd, float(d_in.max()))
    return out


def _rater(style: int, rng: np.random.Generator, sdf: dict, body: np.ndarray, spacing, field_len: float):
    """One simulated rater's label map: truth boundaries moved by a biased, smooth random offset."""
    _, bias, amp = _STYLES[style % len(_STYLES)]
    unit = float(np.mean(spacing))
    cap = _CAP_VOXELS * unit
    field = _smooth_field(rng, body.shape, spacing, field_len)
    deep = np.zeros(body.shape, np.uint8)  # other organs' deep interiors, which this rater never claims
    for name, (crop, sd, depth) in sdf.items():
        deep[crop][sd < -min(1.5 * unit, 0.5 * depth)] = LABELS[name]
    best = np.full(body.shape, np.inf, np.float32)
    labels = np.zeros(body.shape, np.uint8)
    for name, (crop, sd, depth) in sdf.items():
        offset = unit * (bias + amp * _DIFFICULTY[name] * field[crop])
        offset = np.clip(offset, -min(cap, 0.45 * depth), cap)
        score = sd - offset
        claim = (score < 0) & body[crop] & ((deep[crop] == 0) | (deep[crop] == LABELS[name]))
        win = claim & (score < best[crop])
        best[crop][win] = score[win]
        labels[crop][win] = LABELS[name]
    return labels


def _check_args(seed, n_raters, shape, spacing):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInput(f"The phantom seed must be a non-negative whole number, got {seed!r}.")
    if isinstance(n_raters, bool) or not isinstance(n_raters, (int, np.integer)) or n_raters < 1:
        raise InvalidInput(f"The phantom needs at least one rater (n_raters >= 1), got {n_raters!r}.")
    try:
        shape_t = tuple(int(n) for n in shape)
        spacing_t = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InvalidInput(f"shape and spacing need three numbers each, got {shape!r} and {spacing!r}.") from None
    if len(shape_t) != 3 or any(n < 16 for n in shape_t) or shape_t != tuple(shape):
        raise InvalidInput(f"The phantom shape needs three whole numbers of at least 16 voxels, got {shape!r}.")
    if len(spacing_t) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing_t):
        raise InvalidInput(f"The phantom spacing needs three positive sizes in mm, got {spacing!r}.")
    return shape_t, spacing_t


def make_phantom(
    *,
    seed: int = 0,
    n_raters: int = 3,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
) -> PhantomStudy:
    """Make a deterministic synthetic abdominal CT with its true organ labels and simulated raters.

    Parameters
    ----------
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives byte-identical arrays. Organ positions and sizes
        vary by about ±10 % between seeds.
    n_raters : int
        Number of simulated raters (>= 1). Rater 1 draws tight (boundaries ~1 voxel inside the truth), rater 2
        loose (~1 voxel outside), rater 3 noisy (smooth random jitter, no bias); later raters cycle these styles
        with fresh random fields. Rater i is the same whatever `n_raters` is. Disagreement is at most
        ~2 voxels from the true boundary and relatively larger for the pancreas.
    shape : tuple of 3 int
        Grid size ``(Z, Y, X)`` in voxels, each >= 16. The anatomy scales with the field of view.
    spacing : tuple of 3 float
        Voxel size ``(z, y, x)`` in mm.

    Returns
    -------
    PhantomStudy
        ``image`` (int16 HU), ``truth`` and ``raters`` (uint8 label maps with values from `LABELS`), all of shape
        (Z, Y, X) in the canonical LPS grid, centred on 0 mm, identity direction, no source file.

    Raises
    ------
    InvalidInput
        Negative seed, ``n_raters < 1``, a shape below 16 voxels or a non-positive spacing.
    """
    shape, spacing = _check_args(seed, n_raters, shape, spacing)
    t0 = time.perf_counter()
    anatomy_rng, image_rng, *rater_rngs = np.random.default_rng(int(seed)).spawn(2 + int(n_raters))
    frame = _Frame(shape, spacing, anatomy_rng)
    field_len = 0.35 * min(frame.bx, frame.by)
    masks, truth = _anatomy(frame, field_len)
    frame.rng = image_rng
    image = _paint(masks, truth, frame, field_len)
    sdf = _signed_distances(truth, spacing, _CAP_VOXELS * float(np.mean(spacing)))
    body = masks["body"]
    raters = [_rater(i, rng, sdf, body, spacing, 0.25 * field_len) for i, rng in enumerate(rater_rngs)]
    origin = tuple(-(n - 1) / 2.0 * s for n, s in zip(shape, spacing, strict=True))

    def volume(data, kind, name):
        modality = Modality.CT if kind is VolumeKind.INTENSITY else Modality.OTHER
        return Volume(data, spacing=spacing, origin=origin, kind=kind, modality=modality, name=name)

    study = PhantomStudy(
        image=volume(image, VolumeKind.INTENSITY, "phantom_ct"),
        truth=volume(truth, VolumeKind.LABELS, "truth"),
        raters=[volume(r, VolumeKind.LABELS, f"rater_{i + 1}") for i, r in enumerate(raters)],
        labels=dict(LABELS),
        seed=int(seed),
    )
    elapsed = time.perf_counter() - t0
    log.info("phantom seed=%d shape=%s spacing=%s mm, %d raters, in %.2f s", seed, shape, spacing, n_raters, elapsed)
    return study


def write_phantom(study: PhantomStudy, out_dir: str | os.PathLike, *, overwrite: bool = False) -> dict[str, Path]:
    """Write a phantom study as NIfTI files plus ``labels.json``.

    Parameters
    ----------
    study : PhantomStudy
    out_dir : path-like
        Folder to write into; created when missing.
    overwrite : bool
        Replace files of an earlier study. Without it, any existing target raises `InvalidInput` before anything
        is written.

    Returns
    -------
    dict of str to Path
        ``"image"``, ``"truth"``, ``"rater_1"``... → ``.nii.gz`` files, and ``"labels"`` → ``labels.json``
        (organ name → label value). Every file is written atomically.
    """
    from .io import atomic_write, write_volume
    from .io.outputs import relocate, staged_folder

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"Cannot write the phantom into {out}: it is a file, not a folder.")
    volumes = {"image": study.image, "truth": study.truth}
    volumes.update({f"rater_{i}": r for i, r in enumerate(study.raters, start=1)})
    paths = {name: out / f"{name}.nii.gz" for name in volumes}
    paths["labels"] = out / "labels.json"
    existing = [p.name for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise InvalidInput(
            f"A phantom study already exists in {out} ({', '.join(existing)}); choose another folder or pass "
            "overwrite (--overwrite) to replace it."
        )
    with staged_folder(out, overwrite=overwrite) as stage:  # the whole study appears at once, or nothing
        for name, vol in volumes.items():
            write_volume(vol, stage / paths[name].name)
        text = json.dumps(study.labels, indent=2) + "\n"
        atomic_write(stage / "labels.json", lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=False)
    log.info("wrote phantom seed=%d to %s", study.seed, out)
    return relocate({k: stage / v.name for k, v in paths.items()}, stage, out)
