"""MedSAM2 engine: checkpoint loading, MedSAM2's CT preprocessing, the encoder cache, and propagation equal to the
official SAM2VideoPredictor calls. A randomly initialised model of MedSAM2's exact architecture (sam2.1 Hiera-T,
the t512 config) at a small input size (128) keeps it fast on the CPU; the loading code is the real one."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from napari_segunc.errors import InvalidInput  # noqa: E402
from napari_segunc.inference import medsam2 as ms  # noqa: E402
from napari_segunc.phantom import LABELS, make_phantom  # noqa: E402
from napari_segunc.progress import run_job  # noqa: E402
from napari_segunc.prompts.boxes import Strategy, prompts_from_mask  # noqa: E402

SIZE = 128
WINDOW = (-160.0, 240.0)


@pytest.fixture(scope="module")
def phantom():
    study = make_phantom(seed=3)
    return np.asarray(study.image.data), np.asarray(study.truth.data)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(2024)
    model = ms.build_model("medsam2", image_size=SIZE)
    path = tmp_path_factory.mktemp("ckpt") / "MedSAM2_random.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    return ms.load_model(checkpoint, image_size=SIZE, device="cpu")


@pytest.fixture(scope="module")
def prompts(phantom):
    return prompts_from_mask(phantom[1], LABELS, strategy=Strategy.B)


# --- preprocessing ----------------------------------------------------------------------------------------------


def test_window_matches_medsam2_script(phantom):
    image = phantom[0]
    # medsam2_infer_3D_CT.py, literally (float64 numpy)
    ref = np.clip(image, *WINDOW)
    ref = (ref - np.min(ref)) / (np.max(ref) - np.min(ref)) * 255.0
    ref = np.uint8(ref)
    got = ms.window_to_uint8(image, WINDOW)
    assert got.dtype == np.uint8 and got.shape == image.shape
    assert np.array_equal(got, ref)
    assert got.min() == 0 and got.max() == 255
    assert not ms.window_to_uint8(np.full((2, 3, 3), 7.0), WINDOW).any()  # constant volume → zeros
    with pytest.raises(InvalidInput, match="low < high"):
        ms.window_to_uint8(image, (40.0, 40.0))


def test_frames_match_medsam2_resize_and_normalisation(phantom):
    from PIL import Image

    u8 = ms.window_to_uint8(phantom[0], WINDOW)
    frames = ms.SliceFrames(u8, SIZE)
    assert len(frames) == u8.shape[0]
    z = 20
    # resize_grayscale_to_rgb_and_resize, then /255 and ImageNet mean/std (medsam2_infer_3D_CT.py)
    rgb = np.array(Image.fromarray(u8[z].astype(np.uint8)).convert("RGB").resize((SIZE, SIZE))).transpose(2, 0, 1)
    ref = (rgb / 255.0 - np.array([0.485, 0.456, 0.406])[:, None, None]) / np.array([0.229, 0.224, 0.225])[
        :, None, None
    ]
    got = frames[z].numpy()
    assert got.shape == (3, SIZE, SIZE)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_allclose(got[0] * 0.229 + 0.485, got[1] * 0.224 + 0.456, atol=1e-6)  # grey → equal channels


# --- checkpoints ------------------------------------------------------------------------------------------------


def test_checkpoint_loads_strictly_into_the_medsam2_architecture(checkpoint, model, tmp_path):
    saved = torch.load(checkpoint, weights_only=True)["model"]
    loaded = model.predictor.state_dict()
    assert set(saved) == set(loaded) and len(saved) > 400
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert model.image_size == SIZE and model.config == "medsam2"
    # the t512 architecture: Hiera-T trunk, RoPE feature sizes = size / 16
    attn = model.predictor.memory_attention.layers[0].self_attn
    assert tuple(attn.freqs_cis.shape)[0] == (SIZE // 16) ** 2
    assert (
        model.predictor.image_encoder.trunk.blocks[0].dim == 96
        and len(model.predictor.image_encoder.trunk.blocks) == 12
    )
    # a bare state dict is accepted too
    bare = tmp_path / "bare.pt"
    torch.save(saved, bare)
    assert ms.load_model(bare, image_size=SIZE, device="cpu").image_size == SIZE


def test_checkpoint_of_another_architecture_is_refused(checkpoint):
    with pytest.raises(InvalidInput, match=r"does not fit the 'sam2.1_hiera_s' model .*wrong shape|does not fit"):
        ms.load_model(checkpoint, config="sam2.1_hiera_s", image_size=SIZE, device="cpu")


def test_bad_checkpoint_files(checkpoint, tmp_path, monkeypatch):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:100_000])
    with pytest.raises(InvalidInput, match="truncated.pt is not a readable PyTorch checkpoint"):
        ms.load_model(truncated, image_size=SIZE, device="cpu")
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "note": ms.FeatureCache(1)}, pickled)
    with pytest.raises(InvalidInput, match="will not unpickle"):
        ms.load_model(pickled, image_size=SIZE, device="cpu")
    with pytest.raises(InvalidInput, match="not found"):
        ms.load_model(tmp_path / "nope.pt")
    monkeypatch.delenv(ms.CHECKPOINT_ENV, raising=False)
    with pytest.raises(InvalidInput, match=ms.CHECKPOINT_ENV):
        ms.load_model(None)
    monkeypatch.setenv(ms.CHECKPOINT_ENV, str(checkpoint))
    assert ms.resolve_checkpoint(None) == checkpoint
    with pytest.raises(InvalidInput, match="Unknown model config"):
        ms.build_model("sam3")


# --- propagation, cache, official path --------------------------------------------------------------------------


def test_propagation_equals_official_video_predictor_calls(model, checkpoint, phantom, prompts, monkeypatch):
    """The same tensors through upstream's own builder, loader, init_state and calls."""
    import sam2.sam2_video_predictor as svp
    from sam2.build_sam import build_sam2_video_predictor

    u8 = ms.window_to_uint8(phantom[0], WINDOW)
    frames = ms.SliceFrames(u8, SIZE)
    organ = prompts.organ("liver")
    cache = ms.FeatureCache()
    ours = run_job(ms.propagate_organ(model, frames, organ, cache=cache, key=ms.volume_key(u8, model)))

    f = SIZE // 16
    official = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        str(checkpoint),
        device="cpu",
        hydra_overrides_extra=[
            f"++model.image_size={SIZE}",
            f"++model.memory_attention.layer.self_attention.feat_sizes=[{f},{f}]",
            f"++model.memory_attention.layer.cross_attention.feat_sizes=[{f},{f}]",
        ],
    )
    stacked = torch.stack([frames[z] for z in range(len(frames))])
    monkeypatch.setattr(svp, "load_video_frames", lambda **kw: (stacked, u8.shape[1], u8.shape[2]))
    ref = np.full_like(ours.logits, ms.NO_OBJECT_LOGIT)
    order = []
    with torch.inference_mode():
        state = official.init_state("unused")
        for box in organ.boxes:
            official.add_new_points_or_box(state, frame_idx=box.z, obj_id=1, box=np.array(box.as_xyxy(), np.float32))
        k = organ.key_z
        for zi, _, m in official.propagate_in_video(state, start_frame_idx=k, max_frame_num_to_track=organ.z_max - k):
            ref[zi - organ.z_min] = m[0, 0].numpy()
            order.append(zi)
        for zi, _, m in official.propagate_in_video(
            state, start_frame_idx=k, max_frame_num_to_track=k - organ.z_min, reverse=True
        ):
            ref[zi - organ.z_min] = m[0, 0].numpy()
            order.append(zi)
    assert ours.slices_run == order
    n_up = organ.z_max - k + 1
    assert order[:n_up] == list(range(k, organ.z_max + 1))  # from the middle box up to z_max...
    assert order[n_up:] == list(range(k, organ.z_min - 1, -1))  # ...then from it down to z_min
    assert len(organ.boxes) == 3 and organ.boxes[1].z == k
    assert sorted(set(order)) == list(range(organ.z_min, organ.z_max + 1))
    np.testing.assert_allclose(ours.logits, ref, atol=1e-5)
    assert float(np.abs(ref).max()) > 0.01  # a real signal, not all zeros


def test_cache_encodes_each_slice_once_and_reruns_equal_uncached(model, phantom, prompts):
    u8 = ms.window_to_uint8(phantom[0], WINDOW)
    frames = ms.SliceFrames(u8, SIZE)
    key = ms.volume_key(u8, model)
    cache = ms.FeatureCache()
    liver, spleen = prompts.organ("liver"), prompts.organ("spleen")
    first = run_job(ms.propagate_organ(model, frames, liver, cache=cache, key=key))
    run_job(ms.propagate_organ(model, frames, spleen, cache=cache, key=key))
    union = set(range(liver.z_min, liver.z_max + 1)) | set(range(spleen.z_min, spleen.z_max + 1))
    assert cache.encoder_runs == len(union) == len(cache)
    again = run_job(ms.propagate_organ(model, frames, liver, cache=cache, key=key))
    assert cache.encoder_runs == len(union)  # the rerun encoded nothing
    uncached = run_job(ms.propagate_organ(model, frames, liver, cache=None, key=key))
    assert np.abs(again.logits - uncached.logits).max() <= 1e-5
    assert np.abs(first.logits - uncached.logits).max() <= 1e-5
    # a different window is a different volume key: nothing stale is reused
    u8b = ms.window_to_uint8(phantom[0], (-1000.0, 1000.0))
    assert ms.volume_key(u8b, model) != key


def test_bounded_cache_evicts_and_stays_correct(model, phantom, prompts):
    u8 = ms.window_to_uint8(phantom[0], WINDOW)
    frames = ms.SliceFrames(u8, SIZE)
    key = ms.volume_key(u8, model)
    per_slice = 4 * (32 * 32 * 32 + 64 * 16 * 16 + 256 * 8 * 8)  # float32 FPN levels at 128 px
    cache = ms.FeatureCache(max_mb=5 * per_slice / 2**20)
    liver = prompts.organ("liver")
    got = run_job(ms.propagate_organ(model, frames, liver, cache=cache, key=key))
    assert len(cache) == 5 and cache.nbytes == 5 * per_slice
    assert cache.encoder_runs == liver.z_max - liver.z_min + 1
    ref = run_job(ms.propagate_organ(model, frames, liver, cache=None, key=key))
    assert np.abs(got.logits - ref.logits).max() <= 1e-5
    cache.drop(key)
    assert len(cache) == 0 and cache.nbytes == 0
