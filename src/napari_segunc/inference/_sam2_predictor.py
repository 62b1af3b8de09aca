"""SAM2's official video predictor fed with tensors, with an encoder cache shared across organs and reruns.

Imported only by `napari_segunc.inference.medsam2` when a model is built (it imports ``sam2`` and ``torch``).

Two things differ from `sam2.sam2_video_predictor.SAM2VideoPredictor`, and nothing else:

- `init_state_from_frames` takes the frames directly (an indexable of ``(3, S, S)`` float tensors, already resized
  and normalised) instead of a folder of JPEG files: the same dictionary as upstream's ``init_state`` builds
  (MedSAM2's ``SAM2VideoPredictorNPZ`` does the same), plus a feature cache and the volume's key.
- `_get_image_feature` looks the slice's backbone output up in that cache (upstream keeps only the last frame's and
  notes "we can use an LRU cache for more frames in the future"); on a miss it runs the image encoder exactly as
  upstream does and stores the result. Positional encodings depend only on the input size and are kept once.

Tracking, memory attention, prompts and the output resizing are upstream's own code.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from collections.abc import Iterator

import sam2.sam2_video_predictor as _upstream
import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor

__all__ = ["TensorVideoPredictor", "quiet_upstream_progress"]


class TensorVideoPredictor(SAM2VideoPredictor):
    """`SAM2VideoPredictor` whose frames are tensors and whose image features come from a shared cache."""

    @torch.inference_mode()
    def init_state_from_frames(
        self, frames, video_height: int, video_width: int, *, cache=None, volume_key: str = "", offload_state=False
    ) -> dict:
        """Upstream's inference state for `frames` (``len`` and ``frames[z] → (3, S, S)`` tensor)."""
        compute_device = self.device
        state: dict = {
            "images": frames,
            "num_frames": len(frames),
            "offload_video_to_cpu": True,
            "offload_state_to_cpu": offload_state,
            "video_height": int(video_height),
            "video_width": int(video_width),
            "device": compute_device,
            "storage_device": torch.device("cpu") if offload_state else compute_device,
            "point_inputs_per_obj": {},
            "mask_inputs_per_obj": {},
            "cached_features": {},
            "constants": {},
            "obj_id_to_idx": OrderedDict(),
            "obj_idx_to_id": OrderedDict(),
            "obj_ids": [],
            "output_dict_per_obj": {},
            "temp_output_dict_per_obj": {},
            "frames_tracked_per_obj": {},
            "feature_cache": cache,
            "volume_key": volume_key,
        }
        return state

    def _get_image_feature(self, inference_state, frame_idx, batch_size):
        cache = inference_state.get("feature_cache")
        if cache is None:
            return super()._get_image_feature(inference_state, frame_idx, batch_size)
        key = (inference_state["volume_key"], int(frame_idx))
        fpn = cache.get(key)
        if fpn is None:
            device = inference_state["device"]
            image = inference_state["images"][frame_idx].to(device).float().unsqueeze(0)
            backbone_out = self.forward_image(image)
            fpn = list(backbone_out["backbone_fpn"])
            cache.put(key, fpn, positional=list(backbone_out["vision_pos_enc"]))
        pos = cache.positional
        # As upstream: expand to the number of objects; the image itself is not used downstream.
        expanded = {
            "backbone_fpn": [f.expand(batch_size, -1, -1, -1) for f in fpn],
            "vision_pos_enc": [p.expand(batch_size, -1, -1, -1) for p in pos],
        }
        features = self._prepare_backbone_features(expanded)
        return (None,) + features


@contextlib.contextmanager
def quiet_upstream_progress() -> Iterator[None]:
    """For the block: no per-frame tqdm bar (the engine reports progress itself), and no warning per frame that
    the hole-filling post-processing is skipped because sam2's optional CUDA extension is not built (upstream then
    skips it, "which doesn't affect the results in most cases")."""
    before = _upstream.tqdm
    _upstream.tqdm = lambda iterable, *a, **k: iterable
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="(?s).*Skipping the post-processing step", category=UserWarning)
            yield
    finally:
        _upstream.tqdm = before
