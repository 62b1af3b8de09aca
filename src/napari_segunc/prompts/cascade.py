"""Multi-organ MedSAM2 segmentation and the cascade of seed 004 (§3.3.2–3.3.3, strategies A–D).

`MedSAM2Session` holds one image for one model (one per viewer, ARCHITECTURE.md convention 5): the encoder cache,
and each organ's logits keyed by the organ's prompt fingerprint, so that a rerun after a box edit propagates only
the organs whose prompts changed. `fuse_organ_logits` turns N organs' logits into class probabilities (softmax over
``[0, l_1 … l_N]``: background wins exactly when every organ logit is negative), labels (argmax) and keeps the
largest connected component of each organ; the probabilities' entropy is MedSAM2's uncertainty map.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.special import entr

from ..errors import InvalidInput
from ..progress import Progress
from .boxes import PromptSet, Strategy, enlarge_prompts, prompts_from_mask

__all__ = [
    "CascadeResult",
    "FusedSegmentation",
    "MedSAM2Session",
    "PassResult",
    "first_pass_prompts",
    "fuse_organ_logits",
    "keep_largest_components",
]

log = logging.getLogger(__name__)

_SLAB = 8  # z slices fused at a time (bounds the temporaries to (N + 1) × 8 slices)


@dataclass
class FusedSegmentation:
    """Class probabilities ``(N + 1, Z, Y, X)`` (background first, then organs in prompt order), the label map
    (largest component per organ), its ``labels`` (channel → label value) and the entropy in nats."""

    probabilities: np.ndarray
    labels: tuple[int, ...]
    segmentation: np.ndarray
    entropy: np.ndarray


def _label_dtype(labels: Iterable[int]) -> np.dtype:
    return np.dtype(np.uint8) if max(labels, default=0) < 256 else np.dtype(np.uint16)


def keep_largest_components(segmentation: np.ndarray, labels: Iterable[int]) -> np.ndarray:
    """In place: each label keeps only its largest 26-connected component (the rest becomes background 0).

    26-connectivity is scikit-image's ``measure.label`` default in 3D, which MedSAM2's script uses.
    """
    structure = np.ones((3, 3, 3), dtype=bool)
    for label in labels:
        mask = segmentation == label
        comps, n = ndimage.label(mask, structure=structure)
        if n > 1:
            sizes = np.bincount(comps.ravel())
            sizes[0] = 0
            segmentation[mask & (comps != int(np.argmax(sizes)))] = 0
    return segmentation


def fuse_organ_logits(organs: Sequence, shape: Sequence[int]) -> FusedSegmentation:
    """Softmax over ``[0, l_1 … l_N]`` per voxel, argmax → labels, largest component of each organ, entropy.

    Parameters
    ----------
    organs : sequence of `napari_segunc.inference.medsam2.OrganLogits`
        One per organ, logits on their z range (``NO_OBJECT_LOGIT`` elsewhere).
    shape : (Z, Y, X)
    """
    shape = tuple(int(s) for s in shape)
    labels = (0, *(int(o.label) for o in organs))
    if len(set(labels)) != len(labels):
        raise InvalidInput(f"Organ labels must be distinct and non-zero, got {list(labels[1:])}.")
    n = len(organs)
    probs = np.empty((n + 1, *shape), dtype=np.float32)
    entropy = np.empty(shape, dtype=np.float32)
    index = np.empty(shape, dtype=np.intp)
    from ..inference.medsam2 import NO_OBJECT_LOGIT

    for z0 in range(0, shape[0], _SLAB):
        z1 = min(z0 + _SLAB, shape[0])
        slab = np.zeros((n + 1, z1 - z0, *shape[1:]), dtype=np.float32)  # channel 0: background logit 0
        for i, organ in enumerate(organs, start=1):
            slab[i] = NO_OBJECT_LOGIT
            lo, hi = max(z0, organ.z_min), min(z1, organ.z_max + 1)
            if lo < hi:
                slab[i, lo - z0 : hi - z0] = organ.logits[lo - organ.z_min : hi - organ.z_min]
        slab -= slab.max(axis=0, keepdims=True)
        np.exp(slab, out=slab)
        slab /= slab.sum(axis=0, keepdims=True)
        probs[:, z0:z1] = slab
        entropy[z0:z1] = entr(slab).sum(axis=0)
        index[z0:z1] = np.argmax(slab, axis=0)
    seg = np.asarray(labels, dtype=_label_dtype(labels))[index]
    keep_largest_components(seg, labels[1:])
    return FusedSegmentation(probs, labels, seg, entropy)


def mask_prompts(mask: np.ndarray, labels: Mapping[str, int], *, source: str = "") -> PromptSet:
    """Prompts that start each organ from one slice of an existing label map ("ensemble first, then correct").

    Each organ of `labels` present in `mask` gets its slice range from the mask and no box: one `SliceMask`
    correction, the organ on its largest axial cross-section (the lowest such slice on a tie), which SAM2 takes
    through ``add_new_mask`` and propagates up and down. Clicks can then correct it like any other prompt.
    """
    from .boxes import OrganPrompt
    from .corrections import Correction, SliceMask

    mask = np.asarray(mask)
    organs, missing = [], []
    for name, value in sorted(labels.items(), key=lambda kv: kv[1]):
        if value == 0:
            continue
        organ = mask == value
        areas = organ.sum(axis=(1, 2))
        zs = np.flatnonzero(areas)
        if zs.size == 0:
            missing.append(name)
            continue
        z = int(np.argmax(areas))
        init = Correction(mask=SliceMask(z, organ[z], source=source))
        organs.append(OrganPrompt(int(value), name, int(zs[0]), int(zs[-1]), (), corrections=(init,)))
    return PromptSet(mask.shape, tuple(organs), None, source, tuple(missing))


def first_pass_prompts(mask: np.ndarray, labels: Mapping[str, int], strategy: Strategy | str, **kw) -> PromptSet:
    """Prompts of the first pass from a label map: Strategy A → one box per organ, B/C/D → three (seed 004)."""
    strategy = Strategy(strategy)
    return prompts_from_mask(mask, labels, strategy=Strategy.A if strategy is Strategy.A else Strategy.B, **kw)


@dataclass
class PassResult:
    """One MedSAM2 pass over every organ of `prompts`."""

    prompts: PromptSet
    organs: list  # OrganLogits, in prompt order
    fused: FusedSegmentation
    recomputed: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class CascadeResult:
    """All passes (one for A/B, two for C/D); `final` is the last."""

    strategy: Strategy
    passes: list[PassResult]

    @property
    def final(self) -> PassResult:
        return self.passes[-1]

    def prompts_dict(self) -> dict:
        return {"strategy": self.strategy.value, "passes": [p.prompts.to_dict() for p in self.passes]}


class MedSAM2Session:
    """One image + one model: cached encoder, per-organ logits reused across reruns, window changes handled.

    Parameters
    ----------
    model : `napari_segunc.inference.medsam2.MedSAM2Model`
    image : ndarray (Z, Y, X)
        The canonical-grid image (HU for CT).
    window : (low, high)
        Intensity window of the preprocessing (the active display window).
    cache : FeatureCache, optional
        Shared encoder cache (default: a new one, ``$SEGUNC_MEDSAM2_CACHE_MB`` MiB).
    """

    def __init__(self, model, image: np.ndarray, *, window: tuple[float, float], cache=None) -> None:
        from ..inference.medsam2 import FeatureCache

        if np.ndim(image) != 3:
            raise InvalidInput(f"MedSAM2 segments 3D images; this one has shape {np.shape(image)}.")
        self.model = model
        self.cache = cache if cache is not None else FeatureCache()
        self._image = np.asarray(image)
        self._store: dict[str, object] = {}
        self.key = ""
        self.set_window(window)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self._image.shape)

    def set_window(self, window: tuple[float, float]) -> None:
        """Change the preprocessing window: later passes encode again (old features are dropped)."""
        from ..inference.medsam2 import SliceFrames, volume_key, window_to_uint8

        self.window = (float(window[0]), float(window[1]))
        u8 = window_to_uint8(self._image, self.window)
        key = volume_key(u8, self.model)
        if key != self.key:
            if self.key:
                self.cache.drop(self.key)
            self._store.clear()
            self.key = key
            self.frames = SliceFrames(u8, self.model.image_size)

    def forget(self) -> None:
        """Drop every organ's stored logits: the next pass propagates all organs again (image features stay cached)."""
        self._store.clear()

    def _organ_key(self, organ) -> str:
        return f"{self.key}:{organ.fingerprint()}"

    def _resumable(self, organ):
        """A stored result whose inference state `organ` can continue (it only adds corrections), or None."""
        return next((r for r in self._store.values() if r.resumable_by(organ)), None)

    def segment_job(self, prompts: PromptSet, *, _step: list | None = None) -> Generator[Progress, None, PassResult]:
        """One pass: propagate every organ whose prompts changed since it was last run, then fuse all organs."""
        from ..inference.medsam2 import propagate_organ, propagation_steps

        prompts.validate_for(self.shape)
        t0 = time.perf_counter()
        todo = [o for o in prompts.organs if self._organ_key(o) not in self._store]
        resumes = {o.label: self._resumable(o) for o in todo}
        total = sum(propagation_steps(o, resumes[o.label]) for o in todo) + 1
        step = 0
        for organ in todo:
            job = propagate_organ(
                self.model, self.frames, organ, cache=self.cache, key=self.key, resume=resumes[organ.label]
            )
            while True:
                try:
                    z = next(job)
                except StopIteration as stop:
                    self._store[self._organ_key(organ)] = stop.value
                    break
                step += 1
                yield Progress(min(step, total - 1), total, f"MedSAM2: {organ.name}, slice {z}")
        organs = [self._store[self._organ_key(o)] for o in prompts.organs]
        fused = fuse_organ_logits(organs, self.shape)
        yield Progress(total, total, "MedSAM2: organs fused")
        return PassResult(prompts, organs, fused, [o.name for o in todo], time.perf_counter() - t0)

    def cascade_job(
        self,
        prompts: PromptSet,
        strategy: Strategy | str = Strategy.B,
        *,
        no_enlargement: Iterable[str] | None = None,
    ) -> Generator[Progress, None, CascadeResult]:
        """Strategy A/B: one pass with `prompts`. C: a second pass whose z ranges and boxes (three per organ) come
        from the first pass's masks. D: as C with boxes' area +10 % and propagation height +20 %, except the
        `no_enlargement` organs (default aorta, inferior vena cava, adrenal glands).

        An organ the first pass lost keeps its first-pass prompt in the second pass (logged).
        """
        strategy = Strategy(strategy)
        passes = [
            (yield from self._labelled(self.segment_job(prompts), 1, 2 if strategy in (Strategy.C, Strategy.D) else 1))
        ]
        if strategy in (Strategy.C, Strategy.D):
            first = passes[0]
            names = {o.name: o.label for o in prompts.organs}
            second = prompts_from_mask(first.fused.segmentation, names, strategy=Strategy.B, source="cascade pass 1")
            present = {o.label for o in second.organs}
            for organ in prompts.organs:
                if organ.label not in present:
                    log.warning("MedSAM2 lost %s in the first pass; the second pass reuses its prompts", organ.name)
                    second = second.replace(organ)
            second = PromptSet(
                second.shape, tuple(second.organ(o.label) for o in prompts.organs), Strategy.C, "cascade pass 1"
            )
            if strategy is Strategy.D:
                kw = {} if no_enlargement is None else {"no_enlargement": frozenset(no_enlargement)}
                second = enlarge_prompts(second, **kw)
                second = PromptSet(second.shape, second.organs, Strategy.D, second.source)
            passes.append((yield from self._labelled(self.segment_job(second), 2, 2)))
        keep = {self._organ_key(o) for p in passes for o in p.prompts.organs}
        for k in [k for k in self._store if k not in keep]:
            del self._store[k]
        return CascadeResult(strategy, passes)

    @staticmethod
    def _labelled(job, k: int, n: int):
        if n == 1:
            return (yield from job)
        while True:
            try:
                p = next(job)
            except StopIteration as stop:
                return stop.value
            yield Progress(p.step, p.total, f"pass {k}/{n} — {p.message}")
