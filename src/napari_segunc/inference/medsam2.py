"""MedSAM2 (SAM2.1 fine-tuned on medical images) on a CT volume: model loading, CT preprocessing, cached encoder,
box-prompted bidirectional propagation of one organ.

The model is the ``sam2`` package's own (PyPI), built from its config and loaded from a checkpoint the user gives
(`load_model`: a path, or the ``SEGUNC_MEDSAM2_CHECKPOINT`` environment variable); nothing is downloaded. MedSAM2's
``sam2.1_hiera_t512`` is upstream's ``sam2.1_hiera_t`` at ``image_size = 512`` (its RoPE feature sizes 32 × 32):
bowang-lab/MedSAM2's config differs from upstream's in exactly those three values, so it is built from upstream's
file with overrides, together with the post-processing options MedSAM2's ``build_sam2_video_predictor_npz`` sets.

Preprocessing is MedSAM2's ``medsam2_infer_3D_CT.py``: clip to the display window, min–max scale the clipped volume
to 0–255, ``uint8``, grey → RGB, PIL resize (bicubic, Pillow's default) to the model's size, ``/ 255``, ImageNet
mean/std. Mask logits come back on the slice grid through upstream's own resizing. bf16 autocast on CUDA.

Fusion of several organs and the cascade (strategies A–D) live in `napari_segunc.prompts.cascade`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EngineUnavailable, InvalidInput

__all__ = [
    "CHECKPOINT_ENV",
    "MODEL_CONFIGS",
    "NO_OBJECT_LOGIT",
    "FeatureCache",
    "MedSAM2Model",
    "OrganLogits",
    "SliceFrames",
    "build_model",
    "load_model",
    "propagate_organ",
    "propagation_rounds",
    "propagation_steps",
    "resolve_checkpoint",
    "volume_key",
    "window_to_uint8",
]

log = logging.getLogger(__name__)

CHECKPOINT_ENV = "SEGUNC_MEDSAM2_CHECKPOINT"
CACHE_ENV = "SEGUNC_MEDSAM2_CACHE_MB"
#: name → (upstream config file in the sam2 package, model input size)
MODEL_CONFIGS: dict[str, tuple[str, int]] = {
    "medsam2": ("configs/sam2.1/sam2.1_hiera_t.yaml", 512),
    "sam2.1_hiera_t": ("configs/sam2.1/sam2.1_hiera_t.yaml", 1024),
    "sam2.1_hiera_s": ("configs/sam2.1/sam2.1_hiera_s.yaml", 1024),
    "sam2.1_hiera_b+": ("configs/sam2.1/sam2.1_hiera_b+.yaml", 1024),
    "sam2.1_hiera_l": ("configs/sam2.1/sam2.1_hiera_l.yaml", 1024),
}
# What MedSAM2's build_sam2_video_predictor_npz (and upstream's build_sam2_video_predictor) add to the config.
_POSTPROCESSING = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
    "++model.fill_hole_area=8",
)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
#: logit of slices outside an organ's propagation range (SAM2's own NO_OBJ_SCORE)
NO_OBJECT_LOGIT = -1024.0


def _sam2():
    try:
        import sam2  # noqa: F401  (initialises hydra's config search path)
        import torch  # noqa: F401
    except ImportError as exc:  # pragma: no cover - sam2 is a dependency
        raise EngineUnavailable(f"MedSAM2 needs the 'sam2' package (pip install sam2): {exc}") from exc


def build_model(config: str = "medsam2", *, image_size: int | None = None, device=None):
    """Randomly initialised `TensorVideoPredictor` of a named architecture (weights come from `load_model`).

    `image_size` overrides the model's input size (tests use small sizes; the RoPE feature sizes follow as
    ``image_size / 16``).
    """
    _sam2()
    import torch
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if config not in MODEL_CONFIGS:
        raise InvalidInput(f"Unknown model config '{config}'; choose one of {', '.join(MODEL_CONFIGS)}.")
    config_file, size = MODEL_CONFIGS[config]
    size = int(image_size or size)
    if size % 32:
        raise InvalidInput(f"The model input size must be a multiple of 32, not {size}.")
    feat = size // 16
    overrides = [
        "++model._target_=napari_segunc.inference._sam2_predictor.TensorVideoPredictor",
        f"++model.image_size={size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{feat},{feat}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{feat},{feat}]",
        *_POSTPROCESSING,
    ]
    cfg = compose(config_name=config_file, overrides=overrides)
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model, _recursive_=True)
    return model.to(device or torch.device("cpu")).eval()


def resolve_checkpoint(path: str | os.PathLike | None) -> Path:
    """The checkpoint to load: `path`, else ``$SEGUNC_MEDSAM2_CHECKPOINT``; a clear error when there is none."""
    chosen = path or os.environ.get(CHECKPOINT_ENV)
    if not chosen:
        raise InvalidInput(
            "MedSAM2 needs a checkpoint file (e.g. MedSAM2_latest.pt from the MedSAM2 authors): give it with "
            f"--checkpoint, in the MedSAM2 panel, or in the {CHECKPOINT_ENV} environment variable. "
            "Nothing is downloaded."
        )
    p = Path(chosen).expanduser()
    if not p.is_file():
        raise InvalidInput(f"MedSAM2 checkpoint not found: {p}. Check the path (a .pt file).")
    return p


def _read_state_dict(path: Path) -> dict:
    import torch

    from ._checkpoint import load_weights

    obj = load_weights(
        path,
        trust=False,
        what="MedSAM2 checkpoint",
        trust_hint="napari-segunc only loads plain tensors (torch.load weights_only=True) and will not unpickle it: "
        "save its state_dict instead (torch.save({'model': model.state_dict()}, path)).",
    )
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # SAM2 / MedSAM2 layout: {"model": state_dict}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InvalidInput(f"{path} is not a SAM2/MedSAM2 checkpoint: expected {{'model': state_dict}}.")
    return obj


@dataclass
class MedSAM2Model:
    """A loaded model ready to propagate: the predictor, where it runs and what it was built from."""

    predictor: object
    device: object
    config: str
    image_size: int
    checkpoint: Path | None = None
    notice: str = ""

    @property
    def token(self) -> str:
        """Identifies the weights in feature-cache keys."""
        return f"{self.config}@{self.image_size}:{self.checkpoint}:{id(self.predictor)}"

    def autocast(self):
        """bf16 autocast on CUDA (as MedSAM2 runs), nothing elsewhere."""
        import torch

        if getattr(self.device, "type", str(self.device)) == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def load_model(
    checkpoint: str | os.PathLike | None = None,
    *,
    config: str = "medsam2",
    device: str = "auto",
    image_size: int | None = None,
) -> MedSAM2Model:
    """Build the `config` architecture and load `checkpoint` into it, strictly.

    A missing, corrupt or non-weights file, or weights of another architecture (missing / unexpected / mis-shaped
    tensors), raise `InvalidInput` naming the file and what to do.
    """
    from .device import select_device

    path = resolve_checkpoint(checkpoint)
    dev, notice = select_device(device)
    state = _read_state_dict(path)
    model = build_model(config, image_size=image_size)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        detail = "; ".join(
            f"{what}: {len(keys)} (e.g. {keys[0]})"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shaped))
            if keys
        )
        raise InvalidInput(
            f"{path} does not fit the '{config}' model ({detail or exc}). It was made for another architecture: "
            f"choose the matching config ({', '.join(MODEL_CONFIGS)})."
        ) from None
    model = model.to(dev).eval()
    size = int(model.image_size)
    log.info("loaded %s (%s, %d px) on %s", path, config, size, dev)
    return MedSAM2Model(model, dev, config, size, path, notice)


class FeatureCache:
    """LRU cache of per-slice image-encoder outputs, bounded in bytes, shared by every organ and rerun.

    Keys are ``(volume_key, z)``: the volume key changes with the image, the window and the model, so a stale entry
    is never used; it is evicted when space is needed (or by `drop`). `encoder_runs` counts misses.
    """

    def __init__(self, max_mb: float | None = None) -> None:
        if max_mb is None:
            max_mb = float(os.environ.get(CACHE_ENV, 4096))
        self.max_bytes = int(max_mb * 2**20)
        self._entries: OrderedDict = OrderedDict()
        self.positional: list = []
        self.nbytes = 0
        self.encoder_runs = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key):
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]
        return None

    def put(self, key, features: list, *, positional: list) -> None:
        self.encoder_runs += 1
        self.positional = positional  # depends only on the input size: one copy for all slices
        size = sum(int(t.numel()) * t.element_size() for t in features)
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= old[1]
        self._entries[key] = (features, size)
        self.nbytes += size
        while self.nbytes > self.max_bytes and len(self._entries) > 1:
            _, (_, freed) = self._entries.popitem(last=False)
            self.nbytes -= freed

    def drop(self, volume_key: str) -> None:
        """Forget every slice of one volume key (an image or window the session no longer shows)."""
        for key in [k for k in self._entries if k[0] == volume_key]:
            self.nbytes -= self._entries.pop(key)[1]


def window_to_uint8(data: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """MedSAM2's CT intensity preprocessing: clip to ``window = (lo, hi)``, min–max of the clipped volume → 0–255.

    Returns ``uint8`` (truncated, as ``np.uint8`` does in MedSAM2's script); a constant volume gives zeros.
    """
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise InvalidInput(f"The intensity window must have low < high, got ({lo:g}, {hi:g}).")
    clipped = np.clip(np.asarray(data, dtype=np.float32), lo, hi)
    vmin, vmax = float(clipped.min()), float(clipped.max())
    if not vmax > vmin:
        return np.zeros(clipped.shape, dtype=np.uint8)
    clipped -= vmin
    clipped *= np.float32(255.0 / (vmax - vmin))
    return clipped.astype(np.uint8)


def volume_key(volume_u8: np.ndarray, model: MedSAM2Model) -> str:
    """Cache key of a preprocessed volume for one model: changes with any voxel, the window or the weights."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((volume_u8.shape, model.token)).encode())
    h.update(np.ascontiguousarray(volume_u8).data)
    return h.hexdigest()


class SliceFrames:
    """The volume's axial slices as model input, made on demand: ``frames[z]`` → ``(3, S, S)`` float32 tensor.

    Only cache misses call it, so the resized volume is never held whole.
    """

    def __init__(self, volume_u8: np.ndarray, image_size: int) -> None:
        if volume_u8.ndim != 3 or volume_u8.dtype != np.uint8:
            raise InvalidInput("MedSAM2 frames need a (z, y, x) uint8 volume (see window_to_uint8).")
        self.volume = volume_u8
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return int(self.volume.shape[0])

    def __getitem__(self, z: int):
        import torch
        from PIL import Image

        rgb = Image.fromarray(self.volume[int(z)]).convert("RGB").resize((self.image_size, self.image_size))
        arr = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0
        mean = np.asarray(_IMAGENET_MEAN, dtype=np.float32)[:, None, None]
        std = np.asarray(_IMAGENET_STD, dtype=np.float32)[:, None, None]
        return torch.from_numpy((arr - mean) / std)


@dataclass
class OrganLogits:
    """One organ's mask logits on slices ``z_min..z_max`` of the slice grid (elsewhere: `NO_OBJECT_LOGIT`).

    `state` is SAM2's inference state after the last propagation (None once another run took it over): a later
    prompt that only adds corrections to `prompt` resumes from it instead of replaying everything.
    """

    label: int
    name: str
    z_min: int
    z_max: int
    logits: np.ndarray  # (z_max - z_min + 1, y, x) float32
    slices_run: list[int] = field(default_factory=list)  # frames in the order the model produced them
    prompt: object = field(default=None, repr=False, compare=False)  # the OrganPrompt these logits answer
    state: dict | None = field(default=None, repr=False, compare=False)

    def full(self, shape: Sequence[int]) -> np.ndarray:
        out = np.full(tuple(shape), NO_OBJECT_LOGIT, dtype=np.float32)
        out[self.z_min : self.z_max + 1] = self.logits
        return out

    def resumable_by(self, prompt) -> bool:
        """Whether `prompt` is this result's prompt plus more corrections, with the inference state still held."""
        old = self.prompt
        if self.state is None or old is None:
            return False
        same = (old.label, old.z_min, old.z_max, old.boxes) == (prompt.label, prompt.z_min, prompt.z_max, prompt.boxes)
        n = len(old.corrections)
        return same and len(prompt.corrections) > n and prompt.corrections[:n] == old.corrections


def propagation_rounds(prompt) -> list[tuple[object, int]]:
    """The interactions `propagate_organ` replays, each with the slice propagation restarts from: the boxes (from
    the middle box's slice) when there are any, then every correction (from its own slice)."""
    rounds: list[tuple[object, int]] = [("boxes", prompt.key_z)] if prompt.boxes else []
    return rounds + [(c, c.z) for c in prompt.corrections]


def propagation_steps(prompt, resume: OrganLogits | None = None) -> int:
    """How many slices `propagate_organ` will run for `prompt` (progress bars; it yields the start slice twice)."""
    rounds = propagation_rounds(prompt)
    if resume is not None and resume.resumable_by(prompt):
        rounds = rounds[len(propagation_rounds(resume.prompt)) :]
    return len(rounds) * (prompt.z_max - prompt.z_min + 1)  # each round goes over the organ's slices once


def propagate_organ(
    model: MedSAM2Model,
    frames: SliceFrames,
    prompt,
    *,
    cache: FeatureCache | None,
    key: str = "",
    resume: OrganLogits | None = None,
) -> Generator[int, None, OrganLogits]:
    """Propagate one organ's prompts through its z range; yields each slice index as it is done.

    Seed 004 §3.3.2: every box is added as a prompt on its slice, then the masks are propagated from the middle
    box's slice (`prompt.key_z`) up to ``z_max``, then from it down to ``z_min``, in one inference state (the memory
    bank is never reset between the boxes or the two directions). Each correction
    (`napari_segunc.prompts.corrections`) is then replayed in order in the same state, as an annotator makes it: its
    clicks added with ``add_new_points_or_box(..., clear_old_points=False)`` (on a slice already segmented, SAM2
    refines that slice's mask) or its slice mask with ``add_new_mask``, then the organ propagated again from the
    correction's slice up and down. Only upstream's `add_new_points_or_box`, `add_new_mask` and
    `propagate_in_video` are used.

    `resume`: an earlier result whose prompt this one extends by more corrections (`OrganLogits.resumable_by`):
    only the new corrections are run, in its inference state, which moves to the new result. Otherwise everything is
    replayed from a fresh state (the encoder features come from `cache`). Both give the same logits. Stopping the
    generator stops between two slices.
    """
    import torch

    from ._sam2_predictor import quiet_upstream_progress

    pred = model.predictor
    height, width = frames.volume.shape[1:]
    rounds = propagation_rounds(prompt)
    with torch.inference_mode(), model.autocast(), quiet_upstream_progress():
        if resume is not None and resume.resumable_by(prompt):
            state, resume.state = resume.state, None
            rounds = rounds[len(propagation_rounds(resume.prompt)) :]
            out, order = resume.logits.copy(), list(resume.slices_run)
        else:
            state = pred.init_state_from_frames(frames, height, width, cache=cache, volume_key=key)
            out = np.full((prompt.z_max - prompt.z_min + 1, height, width), NO_OBJECT_LOGIT, dtype=np.float32)
            order = []
        obj = int(prompt.label)
        for interaction, k in rounds:
            if interaction == "boxes":
                for box in prompt.boxes:
                    pred.add_new_points_or_box(
                        state, frame_idx=box.z, obj_id=obj, box=np.asarray(box.as_xyxy(), dtype=np.float32)
                    )
            elif interaction.mask is not None:
                pred.add_new_mask(state, frame_idx=interaction.mask.z, obj_id=obj, mask=interaction.mask.mask)
            else:
                for z in interaction.slices:  # one call per slice, its clicks in the order they were made
                    clicks = [c for c in interaction.clicks if c.z == z]
                    pred.add_new_points_or_box(
                        state,
                        frame_idx=z,
                        obj_id=obj,
                        points=np.asarray([[c.x, c.y] for c in clicks], dtype=np.float32),
                        labels=np.asarray([1 if c.positive else 0 for c in clicks], dtype=np.int32),
                        clear_old_points=False,
                    )
            passes = [(False, prompt.z_max - k)]
            if k > prompt.z_min:
                passes.append((True, k - prompt.z_min))
            for reverse, n in passes:
                for z, _ids, masks in pred.propagate_in_video(
                    state, start_frame_idx=k, max_frame_num_to_track=n, reverse=reverse
                ):
                    if prompt.z_min <= z <= prompt.z_max:
                        out[z - prompt.z_min] = masks[0, 0].float().cpu().numpy()
                        order.append(int(z))
                    yield int(z)
    return OrganLogits(obj, prompt.name, int(prompt.z_min), int(prompt.z_max), out, order, prompt=prompt, state=state)
