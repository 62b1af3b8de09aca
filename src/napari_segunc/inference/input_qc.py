"""Input check against a model's training data: does the image look like what the nnU-Net models were trained on?

`check_input` compares one image with every model folder of an ensemble, before prediction, from what the folders
hold about their training data — nothing is run and no network is loaded:

- **Intensity range** (models with nnU-Net's ``CTNormalization``, whose input is absolute Hounsfield units): nnU-Net
  clips every voxel to the 0.5–99.5 % range of the training foreground (``plans.json``
  ``foreground_intensity_properties_per_channel["0"]``, or ``dataset_fingerprint.json``'s) before the network sees
  it. The image's foreground estimate is its **body: the voxels above -500 HU** (air and lung left out; fat, soft
  tissue and bone kept), a plain threshold that needs no segmentation. The check warns when fewer than
  `MIN_FRACTION_IN_RANGE` of those voxels lie inside the training range: the network would then see a saturated
  image (an MR image, a CT not in HU). A z-score model (MR) rescales each image by its own statistics; its
  intensities are not compared.
- **Intensity distribution** (models whose ``dataset.json`` carries ``segunc_training_intensities``: the percentiles
  of the training *images'* body voxels, made by `intensity_reference`; the shipped demo models do): the training
  range above describes only the labelled organs, so a real CT and the phantom pass it alike (measured: 19–49 % of
  their body voxels inside the demo models' organ range, 32–35 % for phantoms). The distribution tells them apart:
  the mean absolute difference between the image's body percentiles and the training images' (0.5, 1, 2, …, 99,
  99.5 %; an estimate of the Wasserstein distance in HU) was 1.5–4.8 HU for ten phantom seeds and 24–45 HU for the
  three TotalSegmentator example CTs; above `MAX_INTENSITY_SHIFT_HU` it warns.
- **Spacing**: the spacing nnU-Net sees — the image's file array order and spacing (as ``nnUNetv2_predict`` reads
  the file with SimpleITK, and as `napari_segunc.inference.nnunet` hands it over), permuted by the plans'
  ``transpose_forward`` — against the spacings of the training cases (``dataset_fingerprint.json``, allowing
  `SPACING_MARGIN` beyond their range) or, without a fingerprint, half to twice the plans'
  ``original_median_spacing_after_transp``.
- **Synthetic training data**: a model whose ``dataset.json`` says ``"segunc_training_data": "synthetic_phantom"``
  (the shipped demo models) adds a plain sentence that it was trained on the synthetic phantom and its results are
  not meaningful, whenever the image is not recognisably a phantom (an intensity check fails or cannot be made).

Large images are sampled: every k-th voxel along each axis, k the smallest that leaves at most `MAX_SAMPLE` voxels
(the whole image below that). Warnings are plain sentences naming the numbers; `InputQC.to_json` holds every number.

One responsibility, the input check; kept in one module past 400 lines.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..volume import Volume

__all__ = [
    "FOREGROUND_HU",
    "MAX_INTENSITY_SHIFT_HU",
    "MIN_FRACTION_IN_RANGE",
    "SYNTHETIC_PHANTOM",
    "InputQC",
    "check_input",
    "intensity_reference",
]

FOREGROUND_HU = -500.0  # the body: voxels above this value (air and lung below it)
MIN_FRACTION_IN_RANGE = 0.10  # of the body's voxels inside the training 0.5–99.5 % range (phantom 0.32–0.35)
MAX_INTENSITY_SHIFT_HU = 12.0  # mean |percentile difference| to the training images (phantoms 1.5–4.8, real 24–45)
SPACING_FACTOR = 2.0  # no fingerprint: accepted spacing is median / 2 .. median × 2 on every axis
SPACING_MARGIN = 1.25  # fingerprint: accepted spacing is min / 1.25 .. max × 1.25 of the training cases
MAX_SAMPLE = 8_000_000  # voxels looked at, at most
PERCENTILES: tuple[float, ...] = (0.5, *range(1, 100), 99.5)
SYNTHETIC_PHANTOM = "synthetic_phantom"  # dataset.json "segunc_training_data" of models trained on the phantom
REFERENCE_KEY = "segunc_training_intensities"

_RELATIVE = 1e-6  # spacing comparisons: float noise is not a difference


@dataclasses.dataclass
class InputQC:
    """The outcome of `check_input`.

    Attributes
    ----------
    ok : bool
        No warning.
    warnings : list of str
        Plain sentences for the user, each naming its numbers (the same sentence from several models once).
    image : dict
        The image's numbers: spacing as nnU-Net reads it, body percentiles, voxel counts.
    models : list of dict
        Per model folder: what was compared, with which training numbers, and its own warnings.
    """

    ok: bool
    warnings: list[str]
    image: dict[str, Any]
    models: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (plain floats, lists, strings; None for what could not be computed)."""
        return _plain(
            {
                "ok": self.ok,
                "warnings": list(self.warnings),
                "thresholds": {
                    "foreground_hu": FOREGROUND_HU,
                    "min_fraction_in_range": MIN_FRACTION_IN_RANGE,
                    "max_intensity_shift_hu": MAX_INTENSITY_SHIFT_HU,
                    "spacing_factor_without_fingerprint": SPACING_FACTOR,
                    "spacing_margin_with_fingerprint": SPACING_MARGIN,
                },
                "image": self.image,
                "models": self.models,
            }
        )

    def to_json(self) -> str:
        """`to_dict` as JSON text (what ``segunc predict`` writes to ``qc.json``)."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"


def _plain(value: Any) -> Any:
    """Plain JSON values: numpy scalars as Python numbers, NaN and infinities (e.g. in a model's plans) as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------------- image
def _sample(data: np.ndarray) -> tuple[np.ndarray, int]:
    """Every k-th voxel along each axis (k = 1 up to `MAX_SAMPLE` voxels), finite values only, flat."""
    step = 1
    while math.prod(math.ceil(n / step) for n in data.shape) > MAX_SAMPLE:
        step += 1
    sample = np.asarray(data[::step, ::step, ::step]).ravel()
    if sample.dtype.kind == "f":
        sample = sample[np.isfinite(sample)]
    return sample, step


def _body(values: np.ndarray) -> np.ndarray:
    return values[values > FOREGROUND_HU]


def _percentiles(ordered: np.ndarray, q) -> np.ndarray:
    """``np.percentile(ordered, q)`` (its default linear method) of a sorted array, without partitioning it again."""
    q = np.asarray(q, dtype=float)
    index = q / 100.0 * (ordered.size - 1)
    below = np.floor(index).astype(np.int64)
    above = np.minimum(below + 1, ordered.size - 1)
    a, b = ordered[below].astype(np.float64), ordered[above].astype(np.float64)
    return a + (b - a) * (index - below)


def _fraction_within(ordered: np.ndarray, lo: float, hi: float) -> float:
    """Fraction of the sorted values in [lo, hi]."""
    if not ordered.size:
        return 0.0
    n = np.searchsorted(ordered, hi, side="right") - np.searchsorted(ordered, lo, side="left")
    return float(max(int(n), 0) / ordered.size)


def _source_spacing(image: Volume) -> list[float]:
    """The spacing nnU-Net is given, in the file's array order: what ``nnunet._source_array`` passes (SimpleITK's
    ``GetSpacing()`` reversed), the canonical grid's spacing for a volume made in memory."""
    if image.source is not None:
        return [float(v) for v in image.source.spacing[::-1]]
    return [float(v) for v in image.spacing]


def intensity_reference(images: Iterable[Volume]) -> dict[str, Any]:
    """The training images' body percentiles (pooled voxels above `FOREGROUND_HU`), for a model's ``dataset.json``
    under ``segunc_training_intensities``; the demo models' come from the phantom seeds they were trained on."""
    body = np.concatenate([_body(_sample(im.data)[0]) for im in images])
    return {
        "foreground": f"voxels above {FOREGROUND_HU:g} HU",
        "percentiles": list(PERCENTILES),
        "values": [round(float(v), 2) for v in np.percentile(body, PERCENTILES)],
        "voxels": int(body.size),
    }


# ---------------------------------------------------------------------------------------------------- models
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return spec if isinstance(spec, dict) else None


def _is_ct_model(plans: dict[str, Any], dataset: dict[str, Any]) -> bool:
    schemes = {
        (cfg.get("normalization_schemes") or [None])[0]
        for cfg in (plans.get("configurations") or {}).values()
        if isinstance(cfg, dict)
    }
    channel = str((dataset.get("channel_names") or dataset.get("modality") or {}).get("0", ""))
    return "CTNormalization" in schemes or (not schemes - {None} and channel.upper() == "CT")


def _intensity_properties(plans: dict, fingerprint: dict | None) -> tuple[dict | None, str]:
    for spec, source in ((fingerprint, "dataset_fingerprint.json"), (plans, "plans.json")):
        props = ((spec or {}).get("foreground_intensity_properties_per_channel") or {}).get("0")
        if isinstance(props, dict) and "percentile_00_5" in props and "percentile_99_5" in props:
            return props, source
    return None, ""


def _n(v: float) -> str:
    """A number for a sentence: whole HU as integers, fractions with up to 3 significant digits."""
    return f"{v:.0f}" if abs(v) >= 10 or float(v).is_integer() else f"{v:.3g}"


def _mm(values: Sequence[float]) -> str:
    return " × ".join(f"{v:.3g}" for v in values)


def _check_range(stats: dict[str, Any], props: dict[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
    lo, hi = float(props["percentile_00_5"]), float(props["percentile_99_5"])
    body, values = stats["_body"], stats["_values"]
    inside, inside_all = _fraction_within(body, lo, hi), _fraction_within(values, lo, hi)
    result = {
        "checked": True,
        "source": source,
        "training_range": [lo, hi],
        **{f"training_{k}": float(props[k]) for k in ("min", "max", "mean", "median", "std") if k in props},
        "fraction_in_range_body": inside,
        "fraction_in_range_all": inside_all,
        "ok": bool(body.size) and inside >= MIN_FRACTION_IN_RANGE,
    }
    if not body.size:
        return result, [
            f"No voxel of the image is above {_n(FOREGROUND_HU)} HU, so it is not a CT of a body in Hounsfield units "
            f"like the training data (training intensities {_n(lo)} .. {_n(hi)}); its predictions are not "
            "meaningful on this image."
        ]
    if result["ok"]:
        return result, []
    p_lo, p_hi = stats["body_p00_5"], stats["body_p99_5"]
    return result, [
        f"Only {100 * inside:.0f} % of the image's body voxels (above {_n(FOREGROUND_HU)} HU; 0.5–99.5 %: "
        f"{_n(p_lo)} .. {_n(p_hi)}) lie inside the intensity range of the training data ({_n(lo)} .. {_n(hi)}; "
        f"at least {100 * MIN_FRACTION_IN_RANGE:.0f} % expected); its predictions are not meaningful on this image."
    ]


def _check_distribution(stats: dict[str, Any], reference: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    try:
        q = np.asarray(reference["percentiles"], dtype=float)
        ref = np.asarray(reference["values"], dtype=float)
        if q.ndim != 1 or q.shape != ref.shape or q.size < 3:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        return {"checked": False, "reason": f"dataset.json's {REFERENCE_KEY} is not readable"}, []
    body = stats["_body"]
    if not body.size:
        return {"checked": False, "reason": f"no voxel above {FOREGROUND_HU:g} HU"}, []
    image = _percentiles(body, q)
    shift = float(np.mean(np.abs(image - ref)))
    result = {
        "checked": True,
        "percentiles": q.tolist(),
        "training_values": ref.tolist(),
        "image_values": [float(v) for v in image],
        "mean_abs_difference_hu": shift,
        "ok": shift <= MAX_INTENSITY_SHIFT_HU,
    }
    if result["ok"]:
        return result, []

    def at(values: np.ndarray, p: float) -> float:
        return float(np.interp(p, q, values))

    return result, [
        f"The image's intensities differ from those of the training images: its body voxels (above "
        f"{_n(FOREGROUND_HU)} HU) have a median of {_n(at(image, 50))} HU and a 5–95 % range of {_n(at(image, 5))} .. "
        f"{_n(at(image, 95))} HU, against {_n(at(ref, 50))} HU and {_n(at(ref, 5))} .. {_n(at(ref, 95))} HU in "
        f"training (the percentiles differ by {shift:.0f} HU on average; up to {_n(MAX_INTENSITY_SHIFT_HU)} HU is "
        "accepted)."
    ]


def _check_spacing(
    spacing: list[float], plans: dict[str, Any], fingerprint: dict[str, Any] | None
) -> tuple[dict[str, Any], list[str]]:
    try:
        order = [int(i) for i in plans.get("transpose_forward", [0, 1, 2])]
        if sorted(order) != [0, 1, 2]:
            raise ValueError
    except (TypeError, ValueError):
        return {"checked": False, "reason": "plans.json's transpose_forward is not a permutation of 0, 1, 2"}, []
    seen = [spacing[i] for i in order]
    result: dict[str, Any] = {"image_spacing_file_order": spacing, "transpose_forward": order, "image_spacing": seen}
    median = plans.get("original_median_spacing_after_transp")
    median = [float(v) for v in median] if isinstance(median, list) and len(median) == 3 else None
    result["training_median"] = median
    cases = None
    try:
        cases = np.asarray((fingerprint or {}).get("spacings"), dtype=float)[:, order]
        if cases.ndim != 2 or not len(cases):
            cases = None
    except (TypeError, ValueError, IndexError):
        cases = None
    if cases is not None:
        low, high = cases.min(axis=0), cases.max(axis=0)
        accepted = (low / SPACING_MARGIN, high * SPACING_MARGIN)
        result.update(basis="dataset_fingerprint.json", training_min=low.tolist(), training_max=high.tolist())
        trained = " × ".join(f"{a:.3g}" if a == b else f"{a:.3g}–{b:.3g}" for a, b in zip(low, high, strict=True))
        said = f"training scans {trained} mm, up to {100 * (SPACING_MARGIN - 1):.0f} % beyond that accepted"
    elif median is not None:
        m = np.asarray(median)
        accepted = (m / SPACING_FACTOR, m * SPACING_FACTOR)
        result["basis"] = "plans.json median"
        said = f"training median {_mm(median)} mm, half to twice that accepted"
    else:
        return {**result, "checked": False, "reason": "no training spacing in plans.json or a fingerprint"}, []
    s = np.asarray(seen)
    ok = bool(np.all(s >= accepted[0] * (1 - _RELATIVE)) and np.all(s <= accepted[1] * (1 + _RELATIVE)))
    result.update(checked=True, accepted_min=accepted[0].tolist(), accepted_max=accepted[1].tolist(), ok=ok)
    if ok:
        return result, []
    return result, [
        f"The image's voxel spacing ({_mm(seen)} mm, in the model's axis order) is far from the training data's "
        f"({said}); nnU-Net resamples the image to its training resolution, but its predictions on it may be "
        "unreliable."
    ]


def _synthetic_sentence(n_models: int) -> str:
    who = "The model was" if n_models == 1 else "These models were"
    return (
        f"{who} trained only on the napari-segunc synthetic phantom, not on real scans: the segmentation and "
        "uncertainty maps they produce for this image are not meaningful."
    )


def _naming(sentence: str, names: Sequence[str]) -> str:
    """A sentence some models of the ensemble said, naming them before its full stop."""
    which = f"(model{'s' if len(names) > 1 else ''}: {', '.join(names)})"
    return f"{sentence[:-1]} {which}." if sentence.endswith(".") else f"{sentence} {which}"


# ---------------------------------------------------------------------------------------------------- the check
def check_input(image: Volume, model_dirs: Iterable[str | Path]) -> InputQC:
    """Compare `image` with the training data of every nnU-Net model folder in `model_dirs` (see the module's text).

    Folders are compared once each, in order; what a folder does not describe (no plans entry, no fingerprint) is
    skipped and said so in `InputQC.models`. Never raises for a model folder's contents.
    """
    dirs = list(dict.fromkeys(str(Path(d).expanduser()) for d in model_dirs))
    values, step = _sample(image.data)
    values = np.sort(values)  # one sort (fast for CT's integers): every percentile and fraction below reads it
    body = values[np.searchsorted(values, FOREGROUND_HU, side="right") :]
    spacing = _source_spacing(image)
    stats: dict[str, Any] = {"_values": values, "_body": body}
    p = _percentiles(body, (0.5, 50, 99.5)) if body.size else (None, None, None)
    stats.update(body_p00_5=p[0], body_median=p[1], body_p99_5=p[2])
    image_info = {
        "name": image.name,
        "shape_zyx": list(image.shape),
        "spacing_file_order": spacing,
        "sample_step": step,
        "voxels_sampled": int(values.size),
        "foreground": f"body: voxels above {FOREGROUND_HU:g} HU",
        "body_voxels_sampled": int(body.size),
        "body_p00_5": None if p[0] is None else float(p[0]),
        "body_median": None if p[1] is None else float(p[1]),
        "body_p99_5": None if p[2] is None else float(p[2]),
        "p00_5": float(_percentiles(values, 0.5)) if values.size else None,
        "p99_5": float(_percentiles(values, 99.5)) if values.size else None,
    }

    models, sentences = [], {}  # sentence -> names of the models that said it (insertion order kept)
    synthetic = []
    for d in dirs:
        folder = Path(d)
        plans = _read_json(folder / "plans.json") or {}
        dataset = _read_json(folder / "dataset.json") or {}
        fingerprint = _read_json(folder / "dataset_fingerprint.json")
        entry: dict[str, Any] = {
            "model_dir": d,
            "name": dataset.get("name"),
            "description": dataset.get("description"),
            "training_data": dataset.get("segunc_training_data"),
            "fingerprint": fingerprint is not None,
        }
        said: list[str] = []
        intensity_failed = None  # None: not checked
        if _is_ct_model(plans, dataset):
            props, source = _intensity_properties(plans, fingerprint)
            if props is None:
                entry["intensity_range"] = {"checked": False, "reason": "no training intensities in plans.json"}
            else:
                entry["intensity_range"], w = _check_range(stats, props, source)
                said += w
                intensity_failed = bool(w)
            if isinstance(dataset.get(REFERENCE_KEY), dict):
                entry["intensity_distribution"], w = _check_distribution(stats, dataset[REFERENCE_KEY])
                said += w
                if entry["intensity_distribution"]["checked"]:
                    intensity_failed = bool(intensity_failed) or bool(w)
            else:
                entry["intensity_distribution"] = {"checked": False, "reason": f"dataset.json has no {REFERENCE_KEY}"}
        else:
            reason = "the model normalises each image by its own mean and standard deviation (not CT)"
            entry["intensity_range"] = {"checked": False, "reason": reason}
            entry["intensity_distribution"] = {"checked": False, "reason": reason}
        entry["spacing"], w = _check_spacing(spacing, plans, fingerprint)
        said += w
        if entry["training_data"] == SYNTHETIC_PHANTOM and intensity_failed is not False:
            synthetic.append(folder.name)
        entry["warnings"] = said
        entry["ok"] = not said
        models.append(entry)
        for s in said:
            sentences.setdefault(s, []).append(folder.name)

    warnings = []
    if synthetic:
        sentence = _synthetic_sentence(len(synthetic))
        warnings.append(sentence if len(synthetic) == len(dirs) else _naming(sentence, synthetic))
        for entry in models:
            if Path(entry["model_dir"]).name in synthetic:
                entry["warnings"].insert(0, sentence)
                entry["ok"] = False
    for s, names in sentences.items():
        warnings.append(s if len(names) == len(dirs) else _naming(s, names))
    return InputQC(ok=not warnings, warnings=warnings, image=image_info, models=models)
