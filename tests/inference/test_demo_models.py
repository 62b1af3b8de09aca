"""The shipped demo ensemble: what is in the package, and that it segments a phantom it never saw, with entropy where
it should be (higher on organ boundaries than inside organs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from napari_segunc.inference.demo_models import DEMO_DIR, demo_ensemble_file
from napari_segunc.inference.nnunet import predict_members, read_ensemble_file
from napari_segunc.phantom import LABELS, make_phantom
from napari_segunc.progress import run_job
from napari_segunc.uncertainty.pipeline import accumulate

torch = pytest.importorskip("torch")

HELD_OUT_SEED = 500  # training used phantom seeds 1000-1011 (scripts/train_demo_ensemble.py)


def test_package_holds_six_weight_only_members():
    members = read_ensemble_file(demo_ensemble_file())
    assert [m.label for m in members] == [f"rater{k}/seed{s}" for k in (1, 2, 3) for s in (112233, 445566)]
    assert {m.group for m in members} == {"rater1", "rater2", "rater3"}
    for m in members:
        size = m.checkpoint_path.stat().st_size
        assert size <= 5_000_000, f"{m.checkpoint_path}: {size} bytes"
        ckpt = torch.load(m.checkpoint_path, map_location="cpu", weights_only=True)  # no pickled code needed
        assert "optimizer_state" not in ckpt and ckpt["inference_allowed_mirroring_axes"] is None
        assert ckpt["trainer_name"] == "nnUNetTrainer" and ckpt["init_args"]["fold"] == "all"
        labels = json.loads((DEMO_DIR / m.model_dir / "dataset.json").read_text())["labels"]
        assert {k: v for k, v in labels.items() if v} == dict(LABELS)


def _boundary_and_interior(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boundary: organ voxels with a differently labelled 6-neighbour, and the background voxels beside them;
    interior: organ voxels 3 or more voxels away from any boundary."""
    edge = np.zeros(truth.shape, bool)
    for axis in range(3):
        a = np.moveaxis(truth, axis, 0)
        e = np.moveaxis(edge, axis, 0)
        d = a[1:] != a[:-1]
        e[1:] |= d
        e[:-1] |= d
    interior = (truth > 0) & (ndimage.distance_transform_edt(~edge) >= 3)
    return edge, interior


def test_demo_ensemble_segments_a_held_out_phantom():
    study = make_phantom(seed=HELD_OUT_SEED, n_raters=1)
    members = read_ensemble_file(demo_ensemble_file())
    runs = predict_members(study.image, members, device="cpu", mirroring=False)
    acc, _, labels = run_job(accumulate(runs, class_variance=False))
    assert labels == LABELS  # the models' dataset.json names the phantom's organs
    maps = acc.result()
    truth = study.truth.data
    dice = {}
    for name, v in LABELS.items():
        a, b = maps.segmentation == v, truth == v
        dice[name] = 2 * np.sum(a & b) / (a.sum() + b.sum())
    print({k: round(float(v), 3) for k, v in dice.items()})
    # the bar is 0.8 on liver, kidneys and spleen; the shipped models reach 0.92-0.97 (docs/benchmarks.md)
    for organ in ("liver", "kidney_right", "kidney_left", "spleen"):
        assert dice[organ] >= 0.9, dice
    assert dice["pancreas"] > 0.75, dice  # the small, low-contrast organ the raters disagree on most
    edge, interior = _boundary_and_interior(truth)
    h_edge, h_inside = float(maps.entropy[edge].mean()), float(maps.entropy[interior].mean())
    print(f"entropy boundary {h_edge:.3f} vs interior {h_inside:.3f} nats")
    assert h_edge > 10 * h_inside
    # epistemic part: the members disagree more on boundaries too
    assert maps.mutual_information[edge].mean() > 10 * maps.mutual_information[interior].mean()
