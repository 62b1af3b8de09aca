"""Benchmark: the full native metrics suite vs the same metrics from the reference libraries, in one run.

A synthetic case of Z×512×512 voxels (default 300 slices, spacing 1.5 × 0.8 × 0.8 mm) with 3 organs (ellipsoids of
liver, spleen and kidney size, smooth random boundaries) and 3 raters (tight, loose, noisy), and float32 class
probabilities (4 classes) of a model that is smooth at the boundaries and slightly shifted.

- suite     : ``evaluate_case`` (native): every row of the table (Dice, consensus Dice, HD95/HD100/ASSD per rater,
              confidence, CRPS, per-organ ECE/MCE, NCC, entropy summaries, ECE/MCE/ACE, AUROC, AURC, E-AURC);
- reference : the same numbers from the libraries the tests use as references: MONAI ``DiceMetric``,
              ``compute_hausdorff_distance`` (95 and 100) and ``compute_average_surface_distance`` per organ and
              rater on the full volume (MONAI crops to the masks itself), torchmetrics ``MulticlassCalibrationError``
              (l1 and max) per rater and ``BinaryCalibrationError`` per organ and rater, sklearn ``roc_auc_score``
              on the pooled pairs, scipy entropy, numpy ``corrcoef`` and means, and the fd-shifts/ValUES
              ``rc_curve_stats`` loop for AURC (pure Python: timed on ``--aurc-sample`` voxels and scaled linearly
              to the ROI, both printed). The reference works in the suite's ROI box, like the suite.

Goal (issue 4): suite ≥ 5× faster than the reference and < 20 s on 2 cores.

Run: ``.venv/bin/python bench/bench_metrics.py [--slices 300] [--threads 2]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

SPACING = (1.5, 0.8, 0.8)
# name, centre (fraction of the grid, z y x), radii in mm (z y x)
ORGANS = (
    ("liver", (0.5, 0.45, 0.32), (90.0, 80.0, 95.0)),
    ("spleen", (0.45, 0.45, 0.75), (55.0, 45.0, 35.0)),
    ("kidney", (0.55, 0.62, 0.62), (50.0, 28.0, 28.0)),
)


def _noise(rng, shape, scale_vox: int) -> np.ndarray:
    coarse = rng.standard_normal(tuple(max(2, n // scale_vox) for n in shape)).astype(np.float32)
    return ndimage.zoom(coarse, [n / c for n, c in zip(shape, coarse.shape, strict=True)], order=1)[
        : shape[0], : shape[1], : shape[2]
    ]


def make_case(z: int, seed: int = 0):
    """(probabilities (4, Z, 512, 512) float32, [3 rater maps uint8], spacing)."""
    rng = np.random.default_rng(seed)
    shape = (z, 512, 512)
    scale = z / 300
    probs = np.zeros((4, *shape), np.float32)
    raters = [np.zeros(shape, np.uint8) for _ in range(3)]
    for label, (_, centre, radii) in enumerate(ORGANS, start=1):
        r_vox = [r / s * (scale if i == 0 else 1) for i, (r, s) in enumerate(zip(radii, SPACING, strict=True))]
        c_vox = [f * n for f, n in zip(centre, shape, strict=True)]
        box = tuple(
            slice(max(0, int(c - r * 1.3)), min(n, int(c + r * 1.3) + 1))
            for c, r, n in zip(c_vox, r_vox, shape, strict=True)
        )
        grids = np.meshgrid(*[np.arange(s.start, s.stop, dtype=np.float32) for s in box], indexing="ij")
        d = np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip(grids, c_vox, r_vox, strict=True)))
        bshape = d.shape
        boundary = d - 1.0 + 0.04 * _noise(rng, bshape, 24)
        model = boundary + 0.02  # slightly small model
        probs[(label, *box)] = 1.0 / (1.0 + np.exp(model * 25.0))
        for k, bias in enumerate((-0.025, 0.025, 0.0)):
            jitter = 0.02 * _noise(rng, bshape, 12) if k == 2 else 0.0
            inside = (boundary + bias + jitter) < 0
            raters[k][box][inside] = label
    organ_sum = probs[1:].sum(axis=0)
    over = organ_sum > 0.999
    probs[1:, over] /= organ_sum[over] / 0.999
    probs[0] = 1.0 - probs[1:].sum(axis=0)
    np.clip(probs[0], 0.0, 1.0, out=probs[0])
    return probs, raters, SPACING


def _rc_curve_reference(risks, confids):
    """fd-shifts / ValUES rc_curve_stats + aurc, as published (the pure-Python loop)."""
    n = len(risks)
    idx = np.argsort(confids)
    coverage, error_sum = n, sum(risks[idx])
    risks_out, weights, tmp = [error_sum / n], [], 0
    for i in range(n - 1):
        coverage -= 1
        error_sum -= risks[idx[i]]
        tmp += 1
        if i == 0 or confids[idx[i]] != confids[idx[i - 1]]:
            risks_out.append(error_sum / (n - 1 - i))
            weights.append(tmp / n)
            tmp = 0
    if tmp > 0:
        risks_out.append(risks_out[-1])
        weights.append(tmp / n)
    return sum((risks_out[i] + risks_out[i + 1]) * 0.5 * weights[i] for i in range(len(weights)))


def reference(probs, raters, spacing, roi, aurc_sample: int) -> tuple[float, dict[str, float]]:
    import scipy.stats
    import torch
    from monai.metrics import DiceMetric, compute_average_surface_distance, compute_hausdorff_distance
    from sklearn.metrics import roc_auc_score
    from torchmetrics.classification import BinaryCalibrationError, MulticlassCalibrationError

    times: dict[str, float] = {}
    t0 = time.perf_counter()
    pred = np.argmax(probs, axis=0)
    times["argmax (full)"] = time.perf_counter() - t0

    t = time.perf_counter()
    for label in range(1, 4):
        a = torch.from_numpy((pred == label)[None, None])
        for r in raters:
            b = torch.from_numpy((r == label)[None, None])
            dm = DiceMetric(include_background=True)
            dm(a, b)
            compute_hausdorff_distance(a, b, percentile=95, spacing=list(spacing))
            compute_hausdorff_distance(a, b, spacing=list(spacing))
            compute_average_surface_distance(a, b, symmetric=True, spacing=list(spacing))
    times["MONAI Dice + HD95 + HD100 + ASSD (9×)"] = time.perf_counter() - t

    t = time.perf_counter()
    pc = probs[(slice(None), *roi)]
    flat = torch.from_numpy(np.ascontiguousarray(pc.reshape(4, -1).T))
    cls = [torch.from_numpy(r[roi].ravel().astype(np.int64)) for r in raters]
    for target in cls:
        MulticlassCalibrationError(num_classes=4, n_bins=50, norm="l1")(flat, target)
        MulticlassCalibrationError(num_classes=4, n_bins=50, norm="max")(flat, target)
        for label in range(1, 4):
            po = torch.from_numpy(pc[label].ravel())
            BinaryCalibrationError(n_bins=50)(po, (target == label).long())
    times["torchmetrics ECE/MCE + organ ECE"] = time.perf_counter() - t

    t = time.perf_counter()
    ent = scipy.stats.entropy(pc, axis=0).ravel()
    pflat = pred[roi].ravel()
    y = np.concatenate([pflat != c.numpy() for c in cls])
    roc_auc_score(y, np.tile(ent, len(cls)))
    times["scipy entropy + sklearn AUROC"] = time.perf_counter() - t

    t = time.perf_counter()
    risk = np.mean([pflat != c.numpy() for c in cls], axis=0)
    n_sample = min(aurc_sample, risk.size)
    sel = np.random.default_rng(0).choice(risk.size, n_sample, replace=False)
    _rc_curve_reference(risk[sel], -ent[sel])
    sample_time = time.perf_counter() - t
    scaled = sample_time * risk.size / n_sample  # linear: conservative (the loop's sort is n log n)
    times[f"rc_curve_stats loop ({n_sample} voxels {sample_time:.1f} s, scaled to {risk.size})"] = scaled

    t = time.perf_counter()
    ml = float(np.prod(spacing)) / 1000
    for label in range(1, 4):
        vols = [np.sum(r == label) * ml for r in raters]
        float(probs[label].sum(dtype=np.float64)) * ml
        np.mean(vols), np.std(vols)
        votes = sum((r[roi] == label).astype(np.int8) for r in raters)
        p = pc[label]
        0.5 * ((1 - p[votes == 0].mean()) + p[votes == 3].mean())
        frac = votes.ravel() / 3
        np.corrcoef(ent, frac * (1 - frac))
        ent[(pflat == label)].mean()
    ent.mean()
    times["numpy volumes, confidence, NCC, entropy means"] = time.perf_counter() - t
    return sum(times.values()), times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2, help="numba and torch threads")
    ap.add_argument("--aurc-sample", type=int, default=300_000, help="voxels for the pure-Python AURC reference")
    ap.add_argument("--repeat", type=int, default=2, help="suite runs (the first includes numba compilation)")
    args = ap.parse_args()

    import numba
    import torch

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(args.threads)
    from napari_segunc.metrics.suite import evaluate_case

    t = time.perf_counter()
    probs, raters, spacing = make_case(args.slices)
    print(f"case: 4 × {probs.shape[1:]} float32, 3 raters, built in {time.perf_counter() - t:.1f} s (not timed)")
    suite_times = []
    labels = {name: k + 1 for k, (name, _, _) in enumerate(ORGANS)}
    for i in range(args.repeat):
        t = time.perf_counter()
        ev = evaluate_case(probs, raters, spacing=spacing, labels=labels)
        suite_times.append(time.perf_counter() - t)
        print(f"suite run {i + 1}: {suite_times[-1]:.2f} s ({len(ev.rows)} rows)")
    roi = ev.roi
    n_roi = int(np.prod([s.stop - s.start for s in roi]))
    print(f"ROI {tuple((s.start, s.stop) for s in roi)}: {n_roi / 1e6:.1f} M voxels of {probs[0].size / 1e6:.1f} M")
    ref_total, parts = reference(probs, raters, spacing, roi, args.aurc_sample)
    for name, sec in parts.items():
        print(f"  reference {name}: {sec:.2f} s")
    best = min(suite_times[1:] or suite_times)
    print(f"reference total {ref_total:.1f} s; suite {best:.2f} s (warm) → {ref_total / best:.1f}× faster")
    print(f"goal ≥ 5× and < 20 s: {'met' if ref_total / best >= 5 and best < 20 else 'NOT met'}")
    for name in ("ece", "ace", "auroc", "aurc"):
        print(f"  {name} = {ev.value(name, 'all', 'mean' if name == 'ece' else 'pooled'):.4f}")
    print(f"  liver hd95 = {ev.value('hd95', 'liver', 'mean'):.2f} mm, dice = {ev.value('dice', 'liver', 'mean'):.4f}")


if __name__ == "__main__":
    main()
