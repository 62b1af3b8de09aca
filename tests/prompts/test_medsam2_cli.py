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
    args = ["medsam2", str(paths["image"]), "--checkpoint", str(ckpt), "--image-size", "64", "--device", "cpu",
            "--from-mask", str(paths["truth"]), "--labels", "kidney_right=2,kidney_left=3,spleen=4",
            "--strategy", "D", "--out", str(out), "-q"]  # fmt: skip
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
    first = prompts_from_mask(study.truth.data, {"kidney_right": 2, "kidney_left": 3, "spleen": 4},
                              strategy=Strategy.B, source=f"mask:{paths['truth']}")  # fmt: skip
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
    assert main([*base, "--config", "sam2.1_hiera_s", "--boxes", str(tmp_path / "boxes.json"),
                 "--out", str(tmp_path / "x")]) == 2  # fmt: skip
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
