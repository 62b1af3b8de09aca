"""Multi-organ fusion (against a float64 numpy + scikit-image reference, MedSAM2's own getLargestCC) and the
cascade strategies A–D and reruns of `MedSAM2Session` (with a stand-in propagation whose logits are known, then the
real engine with a randomly initialised MedSAM2-architecture model)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import measure

from napari_segunc.inference import medsam2 as ms
from napari_segunc.phantom import LABELS, make_phantom
from napari_segunc.prompts import Box, Strategy, enlarge_prompts, prompts_from_mask
from napari_segunc.prompts.cascade import (
    MedSAM2Session,
    first_pass_prompts,
    fuse_organ_logits,
    keep_largest_components,
)


def run(job):
    reports = []
    while True:
        try:
            reports.append(next(job))
        except StopIteration as stop:
            return stop.value, reports


def organ(label, z_min, z_max, logits):
    return ms.OrganLogits(label, f"organ{label}", z_min, z_max, logits.astype(np.float32))


def reference_fusion(organs, shape):
    """Straightforward: full logit volumes, float64 softmax over [0, l...], argmax, getLargestCC per organ."""
    full = [np.zeros(shape)] + [o.full(shape).astype(np.float64) for o in organs]
    stack = np.stack(full)
    e = np.exp(stack - stack.max(axis=0))
    p = e / e.sum(axis=0)
    labels = np.array([0] + [o.label for o in organs])
    seg = labels[np.argmax(p, axis=0)]
    for o in organs:
        m = seg == o.label
        if m.any():
            lab = measure.label(m)  # MedSAM2's getLargestCC (26-connectivity in 3D)
            largest = lab == np.argmax(np.bincount(lab.flat)[1:]) + 1
            seg[m & ~largest] = 0
    h = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=0)
    return p, seg, h


def test_fusion_equals_numpy_reference():
    rng = np.random.default_rng(7)
    shape = (19, 23, 17)  # more than two fusion slabs
    organs = [
        organ(3, 0, 18, rng.normal(0, 2, (19, 23, 17))),
        organ(7, 4, 12, rng.normal(-0.5, 2, (9, 23, 17))),
        organ(1, 10, 18, rng.normal(0.5, 3, (9, 23, 17))),
    ]
    fused = fuse_organ_logits(organs, shape)
    p, seg, h = reference_fusion(organs, shape)
    assert fused.labels == (0, 3, 7, 1)
    np.testing.assert_allclose(fused.probabilities, p, atol=2e-6)
    np.testing.assert_allclose(fused.probabilities.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(fused.entropy, h, atol=5e-6)
    assert np.array_equal(fused.segmentation, seg)
    assert fused.segmentation.dtype == np.uint8
    # random logits give several components per organ: the largest-component step did remove voxels
    raw = np.array([0, 3, 7, 1])[np.argmax(p, axis=0)]
    assert (raw != seg).sum() > 0


def test_background_wins_exactly_when_every_organ_logit_is_negative():
    rng = np.random.default_rng(1)
    shape = (4, 30, 30)
    a, b = rng.normal(0, 1, shape), rng.normal(0, 1, shape)
    fused = fuse_organ_logits([organ(1, 0, 3, a), organ(2, 0, 3, b)], shape)
    background = np.argmax(fused.probabilities, axis=0) == 0
    assert np.array_equal(background, (a < 0) & (b < 0))
    assert 0.1 < background.mean() < 0.4  # both cases present
    # outside an organ's z range its logit is NO_OBJECT_LOGIT: probability 0
    f2 = fuse_organ_logits([organ(1, 1, 2, np.full((2, 30, 30), 5.0))], shape)
    assert f2.probabilities[1, 0].max() == 0.0 and (f2.segmentation[[0, 3]] == 0).all()
    assert (f2.segmentation[1:3] == 1).all()


def test_keep_largest_component_uses_26_connectivity():
    seg = np.zeros((3, 6, 6), np.uint8)
    seg[0, 0, 0] = seg[1, 1, 1] = 1  # diagonal neighbours: one component in 26-connectivity
    seg[2, 5, 5] = 1
    seg[0, 4:6, 0:2] = 2
    seg[2, 0, 5] = 2
    keep_largest_components(seg, [1, 2])
    assert seg[0, 0, 0] == seg[1, 1, 1] == 1 and seg[2, 5, 5] == 0
    assert (seg == 2).sum() == 4 and seg[2, 0, 5] == 0


# --- cascade logic with a stand-in propagation ------------------------------------------------------------------


@pytest.fixture(scope="module")
def study():
    s = make_phantom(seed=5)
    return np.asarray(s.image.data), np.asarray(s.truth.data)


class _Model:  # what the session needs of a model when propagation is stood in for
    image_size = 64
    token = "stand-in"


@pytest.fixture
def oracle(monkeypatch, study):
    """Propagation whose logits are +4 inside the true organ, -4 outside (within the prompt's z range)."""
    truth = study[1]
    calls = []

    def fake(model, frames, prompt, *, cache, key, resume=None):
        calls.append(prompt.name)
        zs = range(prompt.z_min, prompt.z_max + 1)
        logits = np.where(truth[prompt.z_min : prompt.z_max + 1] == LABELS[prompt.name], 4.0, -4.0)
        yield from zs
        return ms.OrganLogits(prompt.label, prompt.name, prompt.z_min, prompt.z_max, logits.astype(np.float32))

    monkeypatch.setattr(ms, "propagate_organ", fake)
    return calls


def test_strategy_c_and_d_second_pass_prompts(study, oracle):
    image, truth = study
    session = MedSAM2Session(_Model(), image, window=(-160, 240))
    # a deliberately short first-pass z range for the liver: the cascade must take the second pass from pass 1
    first = first_pass_prompts(truth, LABELS, Strategy.D)
    assert all(len(o.boxes) == 3 for o in first.organs)
    liver = first.organ("liver")
    short = type(liver)(liver.label, liver.name, liver.z_min + 3, liver.z_max - 3, liver.boxes[1:2])
    first = first.replace(short)

    result_c, reports = run(session.cascade_job(first, Strategy.C))
    assert [p.recomputed for p in result_c.passes][0] == list(LABELS)
    pass1_seg = result_c.passes[0].fused.segmentation
    expected = prompts_from_mask(pass1_seg, LABELS, strategy=Strategy.B)
    assert result_c.passes[1].prompts.organs == expected.organs
    assert result_c.passes[1].prompts.organ("liver").z_max == liver.z_max - 3  # pass 1's range (stand-in truth)
    assert reports[-1].message.startswith("pass 2/2") and reports[0].message.startswith("pass 1/2")

    result_d, _ = run(session.cascade_job(first, Strategy.D))
    assert result_d.passes[0].recomputed == []  # same first-pass prompts: reused
    assert result_d.passes[1].prompts.organs == enlarge_prompts(expected).organs
    z = result_d.passes[1].prompts.organ("liver")
    h = (liver.z_max - 3) - (liver.z_min + 3)
    assert (z.z_min, z.z_max) == (int(np.floor(liver.z_min + 3 - 0.1 * h)), int(np.ceil(liver.z_max - 3 + 0.1 * h)))
    assert result_d.final.fused.segmentation.shape == truth.shape
    d1 = result_d.prompts_dict()
    assert d1["strategy"] == "D" and len(d1["passes"]) == 2


def test_cascade_keeps_the_first_prompt_of_an_organ_the_first_pass_lost(study, oracle, monkeypatch):
    image, truth = study
    session = MedSAM2Session(_Model(), image, window=(-160, 240))
    first = first_pass_prompts(truth, LABELS, Strategy.C)
    real = ms.propagate_organ

    def loses_spleen(model, frames, prompt, *, cache, key, resume=None):
        out = yield from real(model, frames, prompt, cache=cache, key=key, resume=resume)
        if prompt.name == "spleen":
            out.logits[:] = -4.0
        return out

    monkeypatch.setattr(ms, "propagate_organ", loses_spleen)
    result, _ = run(session.cascade_job(first, Strategy.C))
    assert not (result.passes[0].fused.segmentation == LABELS["spleen"]).any()
    assert result.passes[1].prompts.organ("spleen") == first.organ("spleen")


def test_rerun_after_a_box_edit_propagates_only_that_organ(study, oracle):
    image, truth = study
    session = MedSAM2Session(_Model(), image, window=(-160, 240))
    prompts = first_pass_prompts(truth, LABELS, Strategy.B)
    r1, _ = run(session.segment_job(prompts))
    assert sorted(oracle) == sorted(LABELS)
    kidney = prompts.organ("kidney_left")
    b = kidney.boxes[0]
    moved = Box(b.z, b.x_min + 1, b.y_min, b.x_max + 1, b.y_max)
    edited = prompts.replace(
        type(kidney)(kidney.label, kidney.name, kidney.z_min, kidney.z_max, (moved, *kidney.boxes[1:]))
    )
    oracle.clear()
    r2, reports = run(session.segment_job(edited))
    assert oracle == ["kidney_left"] and r2.recomputed == ["kidney_left"]
    assert reports[-1].total == kidney.z_max - kidney.z_min + 2
    for a, b in zip(r1.organs, r2.organs, strict=True):
        assert (a is b) == (a.name != "kidney_left")
    # a new window re-encodes and reruns every organ
    oracle.clear()
    session.set_window((-1000, 1000))
    run(session.segment_job(edited))
    assert sorted(oracle) == sorted(LABELS)


# --- the real engine --------------------------------------------------------------------------------------------


def test_session_with_random_init_model_encodes_each_slice_once(study):
    torch = pytest.importorskip("torch")
    pytest.importorskip("sam2")
    image, truth = study
    torch.manual_seed(0)
    model = ms.MedSAM2Model(ms.build_model("medsam2", image_size=64), torch.device("cpu"), "medsam2", 64)
    session = MedSAM2Session(model, image, window=(-160, 240))
    prompts = first_pass_prompts(truth, {k: LABELS[k] for k in ("kidney_right", "kidney_left")}, Strategy.D)
    result, reports = run(session.cascade_job(prompts, Strategy.D))
    zs = set()
    for p in result.passes:
        for o in p.prompts.organs:
            zs |= set(range(o.z_min, o.z_max + 1))
    assert session.cache.encoder_runs == len(zs)  # every slice encoded once across organs and both passes
    f = result.final.fused
    assert f.probabilities.shape == (3, *truth.shape) and f.entropy.max() <= np.log(3) + 1e-5
    np.testing.assert_allclose(f.probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert reports[-1].message.endswith("organs fused")
