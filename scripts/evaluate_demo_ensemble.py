"""Accuracy and uncertainty of the shipped demo ensemble on held-out phantoms (seeds never used in training).

For each phantom: Dice of the ensemble's segmentation against the phantom's truth per organ, and the mean predictive
entropy on organ boundaries (voxels whose 6-neighbourhood holds another label) against organ interiors (organ voxels
at least 3 voxels from any other label). Run: ``.venv/bin/python scripts/evaluate_demo_ensemble.py [--seeds 500 501]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from napari_segunc.inference.demo_models import demo_ensemble_file
from napari_segunc.inference.nnunet import predict_job, read_ensemble_file
from napari_segunc.phantom import LABELS, make_phantom
from napari_segunc.progress import run_job


def boundary_and_interior(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    edge = np.zeros(truth.shape, bool)
    for axis in range(3):
        d = np.diff(truth, axis=axis) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        edge[tuple(lo)] |= d
        edge[tuple(hi)] |= d
    organ = truth > 0
    interior = organ & (ndimage.distance_transform_edt(~edge) >= 3)
    return edge & (ndimage.binary_dilation(organ)), interior


def evaluate(seed: int, mirroring: bool) -> dict:
    study = make_phantom(seed=seed, n_raters=1)
    members = read_ensemble_file(demo_ensemble_file())
    t = time.perf_counter()
    acc, _ = run_job(predict_job(study.image, members, device="auto", mirroring=mirroring, class_variance=False))
    seconds = time.perf_counter() - t
    maps = acc.result()
    truth = study.truth.data
    dice = {}
    for name, v in LABELS.items():
        a, b = maps.segmentation == v, truth == v
        dice[name] = 2 * np.sum(a & b) / max(1, a.sum() + b.sum())
    edge, interior = boundary_and_interior(truth)
    return {
        "seed": seed,
        "dice": dice,
        "entropy_boundary": float(maps.entropy[edge].mean()),
        "entropy_interior": float(maps.entropy[interior].mean()),
        "seconds": seconds,
        "members": len(members),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[500, 501, 502])
    ap.add_argument("--no-mirroring", action="store_true")
    args = ap.parse_args()
    rows = [evaluate(s, not args.no_mirroring) for s in args.seeds]
    names = list(LABELS)
    print("seed  " + "  ".join(f"{n:>12s}" for n in names) + "  H boundary  H interior  seconds")
    for r in rows:
        print(
            f"{r['seed']:<5d} "
            + "  ".join(f"{r['dice'][n]:12.3f}" for n in names)
            + f"  {r['entropy_boundary']:10.3f}  {r['entropy_interior']:10.4f}  {r['seconds']:7.1f}"
        )
    print("mean  " + "  ".join(f"{np.mean([r['dice'][n] for r in rows]):12.3f}" for n in names))


if __name__ == "__main__":
    main()
