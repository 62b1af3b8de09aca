"""`segunc medsam2` end to end on the phantom with a randomly initialised MedSAM2-architecture checkpoint (64 px):
the files it writes are re-read and checked against each other and against the prompts' geometry."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import entr

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from napari_segunc.cli import main  # noqa: E402
from napari_segunc.inference.medsam2 import build_model  # noqa: E402
from napari_segunc.io import read_probabilities, read_volume  # noqa: E402
from napari_segunc.phantom import make_phantom, write_phantom  # noqa: E402
from napari_segunc.prompts import Strategy, enlarge_prompts, prompts_from_mask, save_prompts  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("medsam2_cli")
    study = make_phantom(seed=4, n_raters=1)
    paths = write_phantom(study, root / "study")
    torch.manual_seed(1)
    ckpt = root / "random_medsam2.pt"
    torch.save({"model": build_model("medsam2", image_size=64).state_dict()}, ckpt)
    return study, paths, ckpt, root


def test_cascade_d_from_a_mask_writes_consistent_results(setup, capsys):
    study, paths, ckpt, root = setup
    out = root / "out_d"
    args = [
        "medsam2",
        str(paths["image"]),
        "--checkpoint",
        str(ckpt),
        "--image-size",
        "64",
        "--device",
        "cpu",
        "--from-mask",
        str(paths["truth"]),
        "--labels",
        "kidney_right=2,kidney_left=3,spleen=4",
        "--strategy",
        "D",
        "--out",
        str(out),
        "-q",
    ]
    assert main(args) == 0
    image = read_volume(paths["image"])
    seg = read_volume(out / "segmentation.nii.gz", kind="labels")
    assert seg.shape == image.shape and np.allclose(seg.spacing, image.spacing) and seg.origin == image.origin
    probs = read_probabilities(out / "probabilities.nii.gz", reference=image).data
    assert probs.shape == (4, *image.shape)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    entropy = read_volume(out / "entropy.nii.gz").data
    np.testing.assert_allclose(entropy, entr(probs).sum(axis=0), atol=1e-5)
    assert set(np.unique(seg.data)) <= {0, 2, 3, 4}
    # labels are the argmax of the probabilities wherever the largest-component step kept them
    arg = np.array([0, 2, 3, 4])[np.argmax(probs, axis=0)]
    assert np.all((seg.data == arg) | (seg.data == 0))

    prompts = json.loads((out / "prompts.json").read_text())
    assert prompts["strategy"] == "D" and len(prompts["passes"]) == 2
    assert prompts["channels"] == {"background": 0, "kidney_right": 2, "kidney_left": 3, "spleen": 4}
    first = prompts_from_mask(
        study.truth.data,
        {"kidney_right": 2, "kidney_left": 3, "spleen": 4},
        strategy=Strategy.B,
        source=f"mask:{paths['truth']}",
    )
    assert prompts["passes"][0]["organs"] == first.to_dict()["organs"]
    timings = json.loads((out / "timings.json").read_text())
    assert timings["device"] == "cpu" and len(timings["passes"]) == 2 and timings["encoder_runs"] > 0
    assert "pass:" in capsys.readouterr().out

    # existing results are never overwritten without --overwrite; the files stay as they were
    before = (out / "segmentation.nii.gz").read_bytes()
    assert main(args) == 2
    assert "segmentation.nii.gz already exists" in capsys.readouterr().err
    assert (out / "segmentation.nii.gz").read_bytes() == before


def test_boxes_file_route_and_bad_input(setup, capsys, tmp_path):
    study, paths, ckpt, root = setup
    boxes = enlarge_prompts(prompts_from_mask(study.truth.data, {"liver": 1}, strategy="A"), no_enlargement=())
    save_prompts(boxes, tmp_path / "boxes.json")
    out = tmp_path / "out_a"
    base = ["medsam2", str(paths["image"]), "--checkpoint", str(ckpt), "--image-size", "64", "--device", "cpu", "-q"]
    assert main([*base, "--boxes", str(tmp_path / "boxes.json"), "--strategy", "A", "--out", str(out)]) == 0
    saved = json.loads((out / "prompts.json").read_text())
    assert saved["passes"][0]["organs"] == boxes.to_dict()["organs"] and len(saved["passes"]) == 1

    # a checkpoint of another architecture, a corrupt one, boxes for another grid: exit 2 with the file named
    assert (
        main(
            [*base, "--config", "sam2.1_hiera_s", "--boxes", str(tmp_path / "boxes.json"), "--out", str(tmp_path / "x")]
        )
        == 2
    )
    assert "does not fit the 'sam2.1_hiera_s' model" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    base_bad = [a if a != str(ckpt) else str(bad) for a in base]
    assert main([*base_bad, "--boxes", str(tmp_path / "boxes.json"), "--out", str(tmp_path / "y")]) == 2
    assert "bad.pt is not a PyTorch checkpoint" in capsys.readouterr().err
    taller = np.pad(study.truth.data, ((100, 0), (0, 0), (0, 0)))  # the liver lies beyond this image's slices
    save_prompts(prompts_from_mask(taller, {"liver": 1}, strategy="A"), tmp_path / "other.json")
    code = main([*base, "--boxes", str(tmp_path / "other.json"), "--out", str(tmp_path / "z")])
    err = capsys.readouterr().err
    assert code == 2 and "made for a 148×" in err, err
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()


def test_init_mask_then_clicks_and_the_result_replays_to_the_same_segmentation(setup, tmp_path, capsys):
    """ "Ensemble first, then correct": organs started from a label map's largest slice, corrected with clicks in
    the saved prompts, run; the result's prompts.json given back to --prompts replays the same segmentation."""
    from napari_segunc.prompts import load_prompts
    from napari_segunc.prompts.corrections import Click, Correction

    study, paths, ckpt, root = setup
    base = ["medsam2", str(paths["image"]), "--checkpoint", str(ckpt), "--image-size", "64", "--device", "cpu", "-q"]
    started = tmp_path / "started"
    labels = "kidney_left=3,spleen=4"
    assert main([*base, "--init-mask", str(paths["truth"]), "--labels", labels, "--out", str(started)]) == 0
    first = load_prompts(started / "prompts.json")
    truth = study.truth.data
    for organ, value in ((first.organ("kidney_left"), 3), (first.organ("spleen"), 4)):
        areas = (truth == value).sum(axis=(1, 2))
        (init,) = organ.corrections
        assert organ.boxes == () and init.mask is not None and init.z == int(np.argmax(areas))
        assert np.array_equal(init.mask.mask, truth[init.z] == value)
        assert (organ.z_min, organ.z_max) == tuple(int(z) for z in np.flatnonzero(areas)[[0, -1]])
    spleen = first.organ("spleen")
    z = spleen.z_min + 1
    ys, xs = np.nonzero(truth[z] == 4)
    corrected = first.replace(spleen.with_correction(Correction(clicks=(Click(z, int(ys[0]), int(xs[0])),))))
    prompts_file = save_prompts(corrected, tmp_path / "corrected.json")
    assert json.loads(prompts_file.read_text())["version"] == 2

    run1 = tmp_path / "run1"
    assert main([*base, "--prompts", str(prompts_file), "--out", str(run1)]) == 0
    replay = tmp_path / "replay"
    assert main([*base, "--prompts", str(run1 / "prompts.json"), "--strategy", "A", "--out", str(replay)]) == 0
    seg1 = read_volume(run1 / "segmentation.nii.gz", kind="labels").data
    seg2 = read_volume(replay / "segmentation.nii.gz", kind="labels").data
    assert np.array_equal(seg1, seg2) and set(np.unique(seg1)) <= {0, 3, 4}
    p1 = read_probabilities(run1 / "probabilities.nii.gz").data
    p2 = read_probabilities(replay / "probabilities.nii.gz").data
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    assert load_prompts(replay / "prompts.json") == corrected  # the replay's prompts are the corrected ones
    started_seg = read_volume(started / "segmentation.nii.gz", kind="labels").data
    assert not np.array_equal(started_seg, seg1)  # the click changed the spleen

    # --init-mask with none of the organs present: one sentence, exit 2
    capsys.readouterr()
    assert main([*base, "--init-mask", str(paths["truth"]), "--labels", "aorta=9", "--out", str(tmp_path / "x")]) == 2
    assert "None of the organs ['aorta'] is present" in capsys.readouterr().err
