"""The simulated annotator (CVPR 2025 interactive protocol): click placement and the box against literal twins of
the challenge's own code, DSC-AUC against scipy, and the whole protocol on the phantom with a randomly initialised
MedSAM2 (geometry, click polarity, replay, latency; the Dice values of random weights mean nothing)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import integrate, ndimage

from napari_segunc.prompts.simulate import box_prompt, dice_auc, next_click


def _challenge_click(segs_cls, gts_cls):
    """CVPR25_iter_eval.py's click, step by step (cc3d's 26-connectivity through scipy; the rest as written)."""
    error_mask = (segs_cls != gts_cls).astype(np.uint8)
    if np.sum(error_mask) == 0:
        return None
    errors, _ = ndimage.label(error_mask, structure=np.ones((3, 3, 3)))
    component_sizes = np.bincount(errors.flat)
    component_sizes[0] = 0
    largest_component = errors == np.argmax(component_sizes)
    coords = np.argwhere(largest_component)
    min_coords, max_coords = coords.min(axis=0), coords.max(axis=0) + 1
    crop_shape = max_coords - min_coords
    padding = np.maximum((crop_shape * 0.25).astype(int), 1)
    center_crop = np.zeros(crop_shape + 2 * padding, dtype=np.uint8)
    center_crop[
        padding[0] : padding[0] + crop_shape[0],
        padding[1] : padding[1] + crop_shape[1],
        padding[2] : padding[2] + crop_shape[2],
    ] = largest_component[min_coords[0] : max_coords[0], min_coords[1] : max_coords[1], min_coords[2] : max_coords[2]]
    edt = ndimage.distance_transform_edt(center_crop)
    dist_cropped = edt[
        padding[0] : padding[0] + crop_shape[0],
        padding[1] : padding[1] + crop_shape[1],
        padding[2] : padding[2] + crop_shape[2],
    ]
    dist_full = np.zeros_like(largest_component, dtype=dist_cropped.dtype)
    dist_full[min_coords[0] : max_coords[0], min_coords[1] : max_coords[1], min_coords[2] : max_coords[2]] = (
        dist_cropped
    )
    np.random.seed(42)  # noqa: NPY002 - the challenge's own legacy calls, on purpose
    max_coords = np.argwhere(dist_full == dist_full.max())
    center = tuple(max_coords[np.random.choice(len(max_coords))])  # noqa: NPY002
    return center, bool(gts_cls[center])


def _blob(shape, centre, radii):
    zz, yy, xx = np.indices(shape)
    return sum(((g - c) / r) ** 2 for g, c, r in zip((zz, yy, xx), centre, radii, strict=True)) <= 1


@pytest.mark.parametrize("seed", range(8))
def test_click_equals_the_challenges_code(seed):
    rng = np.random.default_rng(seed)
    shape = (12, 30, 34)
    truth = _blob(shape, rng.uniform(4, 8, 3) * [1, 3, 3], rng.uniform(3, 9, 3))
    pred = ndimage.shift(truth.astype(float), rng.uniform(-3, 3, 3), order=0) > 0.5
    pred |= _blob(shape, rng.uniform(2, 10, 3) * [1, 2.5, 2.5], rng.uniform(1, 4, 3))  # a false positive blob
    if seed == 0:
        pred = np.zeros(shape, bool)  # nothing predicted: a positive click deep in the organ
    if seed == 1:
        pred = truth.copy()
        pred[:, :, :3] = True  # a slab touching the image border: the border is not the component's edge
    ref = _challenge_click(pred.astype(np.uint8), truth.astype(np.uint8))
    got = next_click(pred, truth)
    assert (got.z, got.y, got.x) == tuple(int(v) for v in ref[0]) and got.positive == ref[1]
    assert got.positive == bool(truth[got.z, got.y, got.x]) != bool(pred[got.z, got.y, got.x])


def test_ties_are_broken_like_the_challenge_and_a_perfect_prediction_gets_no_click():
    truth = np.zeros((5, 9, 9), bool)
    truth[1:4, 2:7, 2:7] = True  # a box: many voxels tie for the deepest
    pred = np.zeros_like(truth)
    ref = _challenge_click(pred.astype(np.uint8), truth.astype(np.uint8))
    got = next_click(pred, truth)
    assert (got.z, got.y, got.x) == tuple(int(v) for v in ref[0])
    assert next_click(truth, truth) is None


def _challenge_box(gt3D):
    """get_boxes.py's mask3D_to_bbox with its random perturbation at 0."""
    z_indices, _, _ = np.where(gt3D > 0)
    z_middle = z_indices[len(z_indices) // 2]
    y_indices, x_indices = np.where(gt3D[z_middle] > 0)
    return (
        z_indices.min(),
        z_indices.max(),
        z_middle,
        x_indices.min(),
        y_indices.min(),
        x_indices.max(),
        y_indices.max(),
    )


def test_box_equals_the_challenges_without_its_random_shift():
    from napari_segunc.phantom import LABELS, make_phantom

    truth = make_phantom(seed=5, n_raters=1).truth.data
    for name, value in LABELS.items():
        organ = box_prompt(truth == value, value, name)
        (box,) = organ.boxes
        assert (organ.z_min, organ.z_max, box.z, *box.as_xyxy()) == tuple(
            int(v) for v in _challenge_box(truth == value)
        )
    wide = box_prompt(truth == 1, 1, "liver", box_shift=5)
    tight = box_prompt(truth == 1, 1, "liver").boxes[0]
    d = int(5 * truth.shape[2] / 256)
    assert wide.boxes[0].x_min == max(0, tight.x_min - d) and wide.boxes[0].x_max == min(
        truth.shape[2] - 1, tight.x_max + d
    )


@pytest.mark.parametrize("dscs", [[0.5, 0.6, 0.7, 0.75, 0.8, 0.82], [0.1, 0.0, 0.9, 0.2, 1.0, 0.3], [1.0] * 6])
def test_dice_auc_equals_the_challenges(dscs):
    ref = integrate.cumulative_trapezoid(np.array(dscs[-5:]), np.arange(5))[-1]
    assert dice_auc(dscs[1:]) == pytest.approx(ref, abs=1e-12)


# --- the whole protocol, random MedSAM2 weights -------------------------------------------------------------------

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from napari_segunc.inference.medsam2 import build_model
    from napari_segunc.phantom import make_phantom, write_phantom

    root = tmp_path_factory.mktemp("simulate")
    study = make_phantom(seed=6, n_raters=1)
    paths = write_phantom(study, root / "study")
    torch.manual_seed(3)
    ckpt = root / "random_medsam2.pt"
    torch.save({"model": build_model("medsam2", image_size=64).state_dict()}, ckpt)
    return study, paths, ckpt


def test_each_click_lands_in_the_largest_error_of_the_previous_step(setup):
    from napari_segunc.inference.medsam2 import load_model
    from napari_segunc.progress import run_job
    from napari_segunc.prompts.cascade import MedSAM2Session
    from napari_segunc.prompts.simulate import simulate_clicks_job

    study, _, ckpt = setup
    truth = study.truth.data
    labels = {"kidney_left": 3, "spleen": 4}
    session = MedSAM2Session(load_model(ckpt, image_size=64, device="cpu"), study.image.data, window=(-160, 240))
    segs = []
    real = session.segment_job

    def recording(prompts):
        result = yield from real(prompts)
        segs.append(result.fused.segmentation.copy())
        return result

    session.segment_job = recording
    sim = run_job(simulate_clicks_job(session, truth, labels))
    assert len(sim.steps) == 6 == len(segs) and [s.index for s in sim.steps] == list(range(6))
    for step, before, after in zip(sim.steps[1:], segs[:-1], segs[1:], strict=True):
        for name, value in labels.items():
            expected = next_click(before == value, truth == value)
            got = step.clicks.get(name)
            assert got == expected  # the challenge's click on the previous step's result
            if got is not None:
                assert got.positive == bool(truth[got.z, got.y, got.x] == value)
        for name, value in labels.items():
            a, b = after == value, truth == value
            assert step.dice[name] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
    clicks = [len(o.corrections) for o in sim.prompts.organs]
    assert sum(clicks) == sum(len(s.clicks) for s in sim.steps) and max(clicks) <= 5
    # the encoder ran once per slice of the organs' ranges, on the box step only
    slices = set().union(*(range(o.z_min, o.z_max + 1) for o in sim.prompts.organs))
    assert session.cache.encoder_runs == len(slices)
    assert all(s.seconds > 0 for s in sim.steps)


def test_cli_writes_the_protocols_results_and_its_prompts_replay(setup, tmp_path, capsys):
    from napari_segunc.cli import main
    from napari_segunc.io import read_volume

    study, paths, ckpt = setup
    base = ["--checkpoint", str(ckpt), "--image-size", "64", "--device", "cpu", "-q"]
    out = tmp_path / "sim"
    args = [
        "simulate-clicks",
        str(paths["image"]),
        "--truth",
        str(paths["truth"]),
        "--labels",
        "kidney_left=3,spleen=4",
    ]
    assert main([*args, *base, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "box" in printed and "click 5" in printed and "DSC-AUC" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["mean_dice_per_step"]) == 6 == len(summary["seconds_per_step"])
    ref_auc = integrate.cumulative_trapezoid(np.array(summary["mean_dice_per_step"][-5:]), np.arange(5))[-1]
    assert summary["dice_auc"] == pytest.approx(ref_auc, abs=1e-5)
    seg = read_volume(out / "segmentation.nii.gz", kind="labels").data
    truth = study.truth.data
    final = np.mean([2 * ((seg == v) & (truth == v)).sum() / ((seg == v).sum() + (truth == v).sum()) for v in (3, 4)])
    assert summary["final_dice"] == pytest.approx(final, abs=1e-5)
    with open(out / "clicks.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and {r["organ"] for r in rows} == {"kidney_left", "spleen"}
    assert all(r["click"] in ("positive", "negative") for r in rows if r["step"] != "0" and r["click_zyx"])
    # the saved prompts (a box and every click) replay to the same segmentation
    replay = tmp_path / "replay"
    assert (
        main(["medsam2", str(paths["image"]), "--prompts", str(out / "prompts.json"), *base, "--out", str(replay)]) == 0
    )
    assert np.array_equal(read_volume(replay / "segmentation.nii.gz", kind="labels").data, seg)
