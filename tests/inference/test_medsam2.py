"""MedSAM2 engine: checkpoint loading, MedSAM2's CT preprocessing, the encoder cache, and propagation equal to the
official SAM2VideoPredictor calls. A randomly initialised model of MedSAM2's exact architecture (sam2.1 Hiera-T,
the t512 config) at a small input size (128) keeps it fast on the CPU; the loading code is the real one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from napari_segunc.errors import InvalidInput  # noqa: E402
from napari_segunc.inference import medsam2 as ms  # noqa: E402
from napari_segunc.phantom import LABELS, make_phantom  # noqa: E402
from napari_segunc.progress import run_job  # noqa: E402
from napari_segunc.prompts.boxes import Strategy, prompts_from_mask  # noqa: E402

# upstream's predictor, run by the reference calls, says once that sam2's optional CUDA extension is not built
pytestmark = pytest.mark.filterwarnings("ignore:cannot import name '_C' from 'sam2':UserWarning")

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


def test_propagation_equals_official_video_predictor_calls(model, official, phantom, prompts, monkeypatch):
    """The same tensors through upstream's own builder, loader, init_state and calls."""
    import sam2.sam2_video_predictor as svp

    u8 = ms.window_to_uint8(phantom[0], WINDOW)
    frames = ms.SliceFrames(u8, SIZE)
    organ = prompts.organ("liver")
    cache = ms.FeatureCache()
    ours = run_job(ms.propagate_organ(model, frames, organ, cache=cache, key=ms.volume_key(u8, model)))

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


# --- corrections: clicks and slice masks, replayed as upstream's interactive calls -------------------------------


@pytest.fixture(scope="module")
def official(checkpoint):
    from sam2.build_sam import build_sam2_video_predictor

    f = SIZE // 16
    return build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        str(checkpoint),
        device="cpu",
        hydra_overrides_extra=[
            f"++model.image_size={SIZE}",
            f"++model.memory_attention.layer.self_attention.feat_sizes=[{f},{f}]",
            f"++model.memory_attention.layer.cross_attention.feat_sizes=[{f},{f}]",
        ],
    )


def _official_session(official, frames, u8, organ, monkeypatch):
    """The organ's interaction sequence written out with upstream's predictor and calls only."""
    import sam2.sam2_video_predictor as svp

    stacked = torch.stack([frames[z] for z in range(len(frames))])
    monkeypatch.setattr(svp, "load_video_frames", lambda **kw: (stacked, u8.shape[1], u8.shape[2]))
    ref = np.full((organ.z_max - organ.z_min + 1, *u8.shape[1:]), ms.NO_OBJECT_LOGIT, np.float32)

    def propagate(state, k):
        for zi, _, m in official.propagate_in_video(state, start_frame_idx=k, max_frame_num_to_track=organ.z_max - k):
            ref[zi - organ.z_min] = m[0, 0].numpy()
        if k > organ.z_min:
            for zi, _, m in official.propagate_in_video(
                state, start_frame_idx=k, max_frame_num_to_track=k - organ.z_min, reverse=True
            ):
                ref[zi - organ.z_min] = m[0, 0].numpy()

    with torch.inference_mode():
        state = official.init_state("unused")
        if organ.boxes:
            for box in organ.boxes:
                official.add_new_points_or_box(state, frame_idx=box.z, obj_id=organ.label, box=np.array(box.as_xyxy()))
            propagate(state, organ.boxes[(len(organ.boxes) - 1) // 2].z)
        for c in organ.corrections:
            if c.mask is not None:
                official.add_new_mask(state, frame_idx=c.mask.z, obj_id=organ.label, mask=c.mask.mask)
                propagate(state, c.mask.z)
                continue
            for z in sorted({k.z for k in c.clicks}):
                on = [k for k in c.clicks if k.z == z]
                official.add_new_points_or_box(
                    state,
                    frame_idx=z,
                    obj_id=organ.label,
                    points=[[k.x, k.y] for k in on],
                    labels=[int(k.positive) for k in on],
                    clear_old_points=False,
                )
            propagate(state, c.clicks[-1].z)
    return ref


def _inside(mask2d, far: bool = False):
    """A voxel (y, x) deep inside `mask2d` (far=False) or well outside it (far=True)."""
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(~mask2d if far else mask2d)
    y, x = np.unravel_index(int(np.argmax(depth)), mask2d.shape)
    return int(y), int(x)


@pytest.fixture(scope="module")
def corrected(phantom, prompts):
    """The liver's boxes, then: clicks on two slices (one of them a box slice), a slice mask, a negative click."""
    from napari_segunc.prompts.corrections import Click, Correction, SliceMask

    truth = phantom[1] == LABELS["liver"]
    liver = prompts.organ("liver")
    z1, z2, z3 = liver.z_min + 2, liver.boxes[0].z, liver.z_max - 3
    c1 = Correction(
        clicks=(Click(z1, *_inside(truth[z1])), Click(z1, *_inside(truth[z1], far=True), positive=False))
        + (Click(z2, *_inside(truth[z2])),)
    )
    c2 = Correction(mask=SliceMask(z3, truth[z3], source="truth"))
    c3 = Correction(clicks=(Click(z3 - 4, *_inside(truth[z3 - 4], far=True), positive=False),))
    organ = liver
    for c in (c1, c2, c3):
        organ = organ.with_correction(c)
    return organ


def test_clicks_and_masks_equal_official_interactive_calls(model, official, phantom, corrected, monkeypatch):
    u8 = ms.window_to_uint8(phantom[0], WINDOW)
    frames = ms.SliceFrames(u8, SIZE)
    ours = run_job(ms.propagate_organ(model, frames, corrected, cache=ms.FeatureCache(), key=ms.volume_key(u8, model)))
    ref = _official_session(official, frames, u8, corrected, monkeypatch)
    np.testing.assert_allclose(ours.logits, ref, atol=1e-5)
    boxes_only = run_job(ms.propagate_organ(model, frames, corrected.without_corrections(), cache=None))
    # the corrections changed the result, far beyond the tolerance (random weights answer clicks only weakly)
    assert float(np.abs(boxes_only.logits - ours.logits).max()) > 100 * 1e-5
    assert len(ms.propagation_rounds(corrected)) == 4


def test_clicks_alone_equal_official_calls(model, official, phantom, monkeypatch):
    from napari_segunc.prompts import OrganPrompt
    from napari_segunc.prompts.corrections import Click, Correction

    truth = phantom[1] == LABELS["spleen"]
    zs = np.flatnonzero(truth.any(axis=(1, 2)))
    z = int(zs[len(zs) // 2])
    organ = OrganPrompt(
        LABELS["spleen"],
        "spleen",
        int(zs[0]),
        int(zs[-1]),
        (),
        corrections=(Correction(clicks=(Click(z, *_inside(truth[z])),)),),
    )
    assert organ.key_z == z
    u8 = ms.window_to_uint8(phantom[0], WINDOW)
    frames = ms.SliceFrames(u8, SIZE)
    ours = run_job(ms.propagate_organ(model, frames, organ, cache=None))
    np.testing.assert_allclose(ours.logits, _official_session(official, frames, u8, organ, monkeypatch), atol=1e-5)


def test_a_click_resumes_the_kept_state_and_equals_a_full_replay(model, phantom, corrected):
    u8 = ms.window_to_uint8(phantom[0], WINDOW)
    frames = ms.SliceFrames(u8, SIZE)
    key = ms.volume_key(u8, model)
    cache = ms.FeatureCache()
    steps = [dataclasses.replace(corrected, corrections=corrected.corrections[:n]) for n in range(4)]
    result = run_job(ms.propagate_organ(model, frames, steps[0], cache=cache, key=key))
    encoded = cache.encoder_runs
    for prev, nxt in zip(steps, steps[1:], strict=False):
        assert result.resumable_by(nxt) and not result.resumable_by(prev)
        job = ms.propagate_organ(model, frames, nxt, cache=cache, key=key, resume=result)
        assert result.state is not None  # the generator has not started: the state is still the old result's
        yielded = 0
        while True:
            try:
                next(job)
                yielded += 1
            except StopIteration as stop:
                new = stop.value
                break
        k = nxt.corrections[-1].z
        assert yielded == (nxt.z_max - k + 1) + (k - nxt.z_min + 1 if k > nxt.z_min else 0)  # one round, not all
        assert result.state is None and new.state is not None  # the state moved on
        assert not result.resumable_by(nxt)
        result = new
    assert cache.encoder_runs == encoded  # resuming encoded nothing
    replay = run_job(ms.propagate_organ(model, frames, corrected, cache=cache, key=key))
    np.testing.assert_allclose(result.logits, replay.logits, atol=1e-5)
    assert result.slices_run == replay.slices_run


def test_a_session_rerun_after_a_click_propagates_only_that_organ_from_its_kept_state(model, phantom, prompts):
    from napari_segunc.prompts.cascade import MedSAM2Session
    from napari_segunc.prompts.corrections import Click, Correction

    image, truth = phantom
    two = type(prompts)(prompts.shape, (prompts.organ("liver"), prompts.organ("spleen")))
    session = MedSAM2Session(model, image, window=WINDOW)
    run_job(session.segment_job(two))
    encoded = session.cache.encoder_runs
    spleen = two.organ("spleen")
    z = spleen.z_min + 1
    clicked = two.replace(
        spleen.with_correction(Correction(clicks=(Click(z, *_inside(truth[z] == LABELS["spleen"])),)))
    )
    reports = []
    second = run_job(session.segment_job(clicked), reports.append)
    assert second.recomputed == ["spleen"] and session.cache.encoder_runs == encoded
    assert reports[-1].total == (spleen.z_max - spleen.z_min + 1) + 1  # one round of the spleen, then the fusion
    fresh = run_job(MedSAM2Session(model, image, window=WINDOW).segment_job(clicked))
    np.testing.assert_allclose(second.fused.probabilities, fresh.fused.probabilities, atol=1e-5)
    assert np.array_equal(second.fused.segmentation, fresh.fused.segmentation)
