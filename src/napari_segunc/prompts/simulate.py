"""A simulated annotator: the CVPR 2025 interactive protocol (box, then up to 5 clicks) run on MedSAM2. Qt-free.

The protocol is the one of the CVPR 2025 challenge "Foundation Models for Interactive 3D Biomedical Image
Segmentation" (its evaluation script ``CVPR25_iter_eval.py`` and ``get_boxes.py``), per organ of the truth:

1. **Box.** The organ's slice range ``z_min..z_max`` and one box on slice ``z_mid``, the slice of the organ's median
   voxel in C order (``z_indices[len(z_indices) // 2]`` of ``np.where``), tight around the organ on that slice.
   The challenge widens it by a random 0–5 px (× size/256); here it is tight by default, so runs are deterministic
   (`box_shift` widens it by that many pixels × size/256, the challenge's formula without the randomness).
2. **Clicks.** After each prediction, the organ's error (prediction ≠ truth) is split into 26-connected components;
   the click goes to the voxel of the largest component farthest from its border (Euclidean distance transform with
   everything outside the component counted as border), ties broken as the challenge does
   (``np.random.seed(42)``, then a uniform choice among the tied voxels in C order). A voxel of the truth gets a
   positive click, a voxel outside it a negative one. An organ predicted perfectly gets no click.
3. **Scores.** After every step: the Dice of each organ and their mean (`dice`); DSC-AUC is the trapezoid of the
   mean Dice over the 5 click steps (x = 0…4, as the challenge's ``cumulative_trapezoid(dscs[-5:],
   np.arange(5))[-1]``; the box step is left out, so the best value is 4); the final Dice is the last step's.
   The latency of each step is the time MedSAM2 took (its first step includes encoding every slice; a click's step
   reruns only the clicked organs, from their kept inference state).

Quality figures need real MedSAM2 weights; with random weights only the geometry, the click placement and the
latency are meaningful.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import InvalidInput
from ..progress import Progress
from .boxes import Box, OrganPrompt, PromptSet
from .corrections import Click, Correction

__all__ = ["SimulationResult", "Step", "box_prompt", "dice_auc", "next_click", "simulate_clicks_job"]

#: Clicks after the box, as in the challenge.
N_CLICKS = 5


def box_prompt(truth: np.ndarray, label: int, name: str, *, box_shift: int = 0) -> OrganPrompt:
    """The challenge's initial prompt of one organ (`truth` is its boolean ``(Z, Y, X)`` mask)."""
    zs, _, _ = np.nonzero(truth)
    if zs.size == 0:
        raise InvalidInput(f"'{name}' (label {label}) is absent from the truth: it cannot be prompted.")
    z_mid = int(zs[len(zs) // 2])
    ys, xs = np.nonzero(truth[z_mid])
    height, width = truth.shape[1:]
    dx, dy = int(box_shift * width / 256), int(box_shift * height / 256)
    box = Box(
        z_mid,
        max(0, int(xs.min()) - dx),
        max(0, int(ys.min()) - dy),
        min(width - 1, int(xs.max()) + dx),
        min(height - 1, int(ys.max()) + dy),
    )
    return OrganPrompt(int(label), name, int(zs.min()), int(zs.max()), (box,))


def next_click(prediction: np.ndarray, truth: np.ndarray) -> Click | None:
    """Where the challenge's simulated annotator clicks next on one organ, or None when the prediction is perfect.

    Parameters
    ----------
    prediction, truth : ndarray of bool, (Z, Y, X)
        The organ as predicted and as it truly is.
    """
    error = np.asarray(prediction, bool) != np.asarray(truth, bool)
    if not error.any():
        return None
    components, n = ndimage.label(error, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    sizes[0] = 0
    largest = components == int(np.argmax(sizes))
    depth = ndimage.distance_transform_edt(np.pad(largest, 1))[1:-1, 1:-1, 1:-1]
    tied = np.argwhere(depth == depth.max())
    z, y, x = (int(v) for v in tied[np.random.RandomState(42).choice(len(tied))])
    return Click(z, y, x, positive=bool(truth[z, y, x]))


def dice_auc(dices) -> float:
    """The challenge's DSC-AUC: the trapezoid of the last `N_CLICKS` Dice values over x = 0, 1, …"""
    values = np.asarray(list(dices)[-N_CLICKS:], dtype=np.float64)
    return float(np.sum((values[1:] + values[:-1]) / 2.0))


def _dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    total = int(prediction.sum()) + int(truth.sum())
    return 2.0 * int(np.logical_and(prediction, truth).sum()) / total if total else float("nan")


@dataclass
class Step:
    """One step of the protocol: the box (step 0) or one round of clicks."""

    index: int
    dice: dict[str, float]  # per organ
    seconds: float
    clicks: dict[str, Click] = field(default_factory=dict)  # the clicks this step added, per organ

    @property
    def mean_dice(self) -> float:
        return float(np.mean(list(self.dice.values())))


@dataclass
class SimulationResult:
    """Every step, the prompts with every click (replayable), and the last segmentation."""

    steps: list[Step]
    prompts: PromptSet
    segmentation: np.ndarray
    final: object  # the last `napari_segunc.prompts.cascade.PassResult`

    @property
    def final_dice(self) -> float:
        return self.steps[-1].mean_dice

    @property
    def dice_auc(self) -> float:
        return dice_auc([s.mean_dice for s in self.steps[1:]])

    def rows(self) -> list[dict]:
        """One row per step and organ: step, organ, dice, the click (z, y, x, polarity) and the step's seconds."""
        out = []
        for s in self.steps:
            for organ, d in s.dice.items():
                c = s.clicks.get(organ)
                out.append(
                    {
                        "step": s.index,
                        "prompt": "box" if s.index == 0 else f"click {s.index}",
                        "organ": organ,
                        "dice": round(d, 6),
                        "click_zyx": [c.z, c.y, c.x] if c else None,
                        "click": ("positive" if c.positive else "negative") if c else None,
                        "seconds": round(s.seconds, 4),
                    }
                )
        return out


def simulate_clicks_job(
    session, truth: np.ndarray, labels: Mapping[str, int], *, n_clicks: int = N_CLICKS, box_shift: int = 0
) -> Generator[Progress, None, SimulationResult]:
    """Run the protocol with a `napari_segunc.prompts.cascade.MedSAM2Session` against a truth label map.

    Parameters
    ----------
    session : MedSAM2Session
        The image and the model.
    truth : ndarray of int, (Z, Y, X)
        The reference label map, on the session's grid.
    labels : mapping of organ name to label value
        The organs to segment; every one must be present in `truth`.
    n_clicks : int
        Click steps after the box (the challenge: 5).
    """
    truth = np.asarray(truth)
    if truth.shape != tuple(session.shape):
        raise InvalidInput(f"The truth is {truth.shape} voxels and the image {tuple(session.shape)}; they must match.")
    if n_clicks < 0:
        raise InvalidInput(f"The number of clicks must be 0 or more, got {n_clicks}.")
    organs = {name: int(v) for name, v in sorted(labels.items(), key=lambda kv: kv[1]) if v != 0}
    masks = {name: truth == v for name, v in organs.items()}
    prompts = PromptSet(
        truth.shape,
        tuple(box_prompt(masks[n], v, n, box_shift=box_shift) for n, v in organs.items()),
        None,
        "simulated annotator (CVPR 2025 protocol)",
    )
    steps: list[Step] = []
    result = None
    for index in range(n_clicks + 1):
        clicks: dict[str, Click] = {}
        if index:
            seg = result.fused.segmentation
            for name, value in organs.items():
                click = next_click(seg == value, masks[name])
                if click is not None:
                    clicks[name] = click
                    organ = prompts.organ(value)
                    prompts = prompts.replace(organ.with_correction(Correction(clicks=(click,))))
        t0 = time.perf_counter()
        job = session.segment_job(prompts)
        while True:
            try:
                p = next(job)
            except StopIteration as stop:
                result = stop.value
                break
            yield Progress(p.step, p.total, f"{'box' if index == 0 else f'click {index}'}/{n_clicks}: {p.message}")
        seconds = time.perf_counter() - t0
        seg = result.fused.segmentation
        steps.append(Step(index, {n: _dice(seg == v, masks[n]) for n, v in organs.items()}, seconds, clicks))
    return SimulationResult(steps, prompts, result.fused.segmentation, result)
