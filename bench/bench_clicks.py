"""Benchmark: latency of one click's rerun (the organ's kept SAM2 state resumed) vs a from-scratch run.

Model: MedSAM2's exact architecture (sam2.1 Hiera-T, 512 px input), randomly initialised (checkpoints cannot be
downloaded here; weights do not change the amount of computation). Image: the phantom (or ``--shape``), one organ
per phantom label, Strategy B boxes from the truth.

- first run : a new `MedSAM2Session` segments every organ from its boxes;
- click     : one positive click on the liver (the simulated annotator's: the deepest voxel of its largest error),
              then the rerun: the same session resumes the liver's inference state and propagates it once from the
              clicked slice, up and down; the other organs and every slice's features are reused;
- baseline  : what a tool without kept state does for the same click — everything from scratch (a new session:
              every slice encoded again, every organ's boxes and the click replayed).

Both give the same segmentation (checked here, and within 1e-5 in tests/inference/test_medsam2.py). With
``--device cuda`` it also times one click's rerun on a ``--slices``-slice organ (the issue's GPU goal: < 1 s), with
the device named.

Run: ``.venv/bin/python bench/bench_clicks.py [--device cpu|cuda] [--shape 48 112 144] [--size 512]``
"""

from __future__ import annotations

import time

import numpy as np


def main() -> None:
    import torch
    from bench_medsam2 import setup  # the same model, image and boxes as the box-edit benchmark

    from napari_segunc.inference.device import torch_threads
    from napari_segunc.phantom import LABELS, make_phantom
    from napari_segunc.progress import run_job
    from napari_segunc.prompts import Strategy, prompts_from_mask
    from napari_segunc.prompts.cascade import MedSAM2Session
    from napari_segunc.prompts.corrections import Correction
    from napari_segunc.prompts.simulate import next_click

    args, dev, name, image, truth, model, prompts, window = setup(__doc__)

    def click_on(result, prompts, organ="liver"):
        value = LABELS[organ]
        click = next_click(result.fused.segmentation == value, truth == value)
        return prompts.replace(prompts.organ(organ).with_correction(Correction(clicks=(click,)))), click

    with torch_threads():
        t = time.perf_counter()
        session = MedSAM2Session(model, image, window=window)
        first_result = run_job(session.segment_job(prompts))
        first = time.perf_counter() - t
        runs_first = session.cache.encoder_runs

        clicked, click = click_on(first_result, prompts)
        t = time.perf_counter()
        res = run_job(session.segment_job(clicked))
        rerun = time.perf_counter() - t

        t = time.perf_counter()
        scratch = run_job(MedSAM2Session(model, image, window=window).segment_job(clicked))
        baseline = time.perf_counter() - t
    same = np.array_equal(res.fused.segmentation, scratch.fused.segmentation)
    diff = float(np.abs(res.fused.probabilities - scratch.fused.probabilities).max())
    liver = clicked.organ("liver")
    print(f"device: {name}; image {image.shape} (z, y, x); {len(prompts.organs)} organs; input {args.size} px")
    print(f"first run (boxes)          : {first:7.2f} s  ({runs_first} slices encoded)")
    print(
        f"click rerun                : {rerun:7.2f} s  ({'positive' if click.positive else 'negative'} click on "
        f"slice {click.z} of the liver, slices {liver.z_min}..{liver.z_max}; propagated: {', '.join(res.recomputed)}; "
        f"encoder runs {session.cache.encoder_runs - runs_first})"
    )
    print(f"baseline (from scratch)    : {baseline:7.2f} s  (same segmentation: {same}; max |Δp| {diff:.1e})")
    print(f"click rerun speed-up: {baseline / rerun:.1f}x vs the from-scratch baseline (goal ≥ 5x)")

    if dev.type == "cuda":
        tall = make_phantom(seed=0, shape=(args.slices, 512, 512))
        img, tr = np.asarray(tall.image.data), np.asarray(tall.truth.data)
        ps = prompts_from_mask(tr, {"liver": LABELS["liver"]}, strategy=Strategy.B)
        s = MedSAM2Session(model, img, window=window)
        r = run_job(s.segment_job(ps))
        value = LABELS["liver"]
        c = next_click(r.fused.segmentation == value, tr == value)
        ps2 = ps.replace(ps.organ("liver").with_correction(Correction(clicks=(c,))))
        torch.cuda.synchronize()
        t = time.perf_counter()
        run_job(s.segment_job(ps2))
        torch.cuda.synchronize()
        organ = ps2.organ("liver")
        print(
            f"GPU click rerun on {img.shape}: {time.perf_counter() - t:.2f} s for a "
            f"{organ.z_max - organ.z_min + 1}-slice liver (goal < 1 s)"
        )


if __name__ == "__main__":
    main()
