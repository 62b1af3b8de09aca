"""Benchmark: MedSAM2 first run vs rerun after one box edit (encoder cache + per-organ reuse).

Model: MedSAM2's exact architecture (sam2.1 Hiera-T, 512 px input), randomly initialised (checkpoints cannot be
downloaded here; weights do not change the amount of computation). Image: the phantom (or ``--shape``), one
organ per phantom label, Strategy B boxes from the truth.

- first run : a new `MedSAM2Session` segments every organ (each slice encoded once, shared by the organs);
- baseline  : what the official scripts do after an edit — everything again from scratch (a new session);
- rerun     : the same session after one box of one organ moved by 2 voxels: that organ alone is propagated,
              every slice's features come from the cache.

With ``--device cuda`` it also reports seconds per organ on a ``--slices``-slice volume (the issue's GPU goal:
< 1 s per organ on 100 slices) and the all-organ Strategy D cascade time, with the device named.

Run: ``.venv/bin/python bench/bench_medsam2.py [--device cpu|cuda] [--shape 48 112 144] [--size 512]``
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def setup(description: str):
    """The arguments, device, phantom, randomly initialised MedSAM2 and Strategy B boxes both MedSAM2 benches use."""
    import torch

    from napari_segunc.inference.device import select_device
    from napari_segunc.inference.medsam2 import MedSAM2Model, build_model
    from napari_segunc.phantom import LABELS, make_phantom
    from napari_segunc.prompts import Strategy, prompts_from_mask

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"))
    ap.add_argument("--size", type=int, default=512, help="model input size (MedSAM2: 512)")
    ap.add_argument("--slices", type=int, default=100, help="GPU timing: volume height")
    args = ap.parse_args()
    dev, notice = select_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "CPU"
    print(notice)
    study = make_phantom(seed=0, **({"shape": tuple(args.shape)} if args.shape else {}))
    image, truth = np.asarray(study.image.data), np.asarray(study.truth.data)
    torch.manual_seed(0)
    model = MedSAM2Model(build_model("medsam2", image_size=args.size, device=dev), dev, "medsam2", args.size)
    prompts = prompts_from_mask(truth, LABELS, strategy=Strategy.B)
    return args, dev, name, image, truth, model, prompts, (-160.0, 240.0)


def main() -> None:
    import torch

    from napari_segunc.inference.device import torch_threads
    from napari_segunc.phantom import LABELS, make_phantom
    from napari_segunc.progress import run_job
    from napari_segunc.prompts import Box, Strategy, prompts_from_mask
    from napari_segunc.prompts.cascade import MedSAM2Session

    args, dev, name, image, truth, model, prompts, window = setup(__doc__)
    with torch_threads():
        t = time.perf_counter()
        session = MedSAM2Session(model, image, window=window)
        run_job(session.segment_job(prompts))
        first = time.perf_counter() - t
        runs_first = session.cache.encoder_runs

        t = time.perf_counter()
        run_job(MedSAM2Session(model, image, window=window).segment_job(prompts))
        baseline = time.perf_counter() - t

        kidney = prompts.organ("kidney_left")
        b = kidney.boxes[1]
        moved = Box(b.z, b.x_min + 2, b.y_min + 2, b.x_max + 2, b.y_max + 2)
        boxes = (kidney.boxes[0], moved, *kidney.boxes[2:])
        edited = prompts.replace(type(kidney)(kidney.label, kidney.name, kidney.z_min, kidney.z_max, boxes))
        t = time.perf_counter()
        res = run_job(session.segment_job(edited))
        rerun = time.perf_counter() - t
    print(f"device: {name}; image {image.shape} (z, y, x); {len(prompts.organs)} organs; input {args.size} px")
    print(f"first run              : {first:7.2f} s  ({runs_first} slices encoded)")
    print(f"baseline (from scratch): {baseline:7.2f} s")
    print(
        f"rerun after a box edit : {rerun:7.2f} s  (propagated: {', '.join(res.recomputed)}; "
        f"encoder runs {session.cache.encoder_runs - runs_first})"
    )
    print(f"rerun speed-up: {baseline / rerun:.1f}x vs the from-scratch baseline ({first / rerun:.1f}x vs first run)")

    if dev.type == "cuda":
        tall = make_phantom(seed=0, shape=(args.slices, 512, 512))
        img, tr = np.asarray(tall.image.data), np.asarray(tall.truth.data)
        ps = prompts_from_mask(tr, LABELS, strategy=Strategy.B)
        s = MedSAM2Session(model, img, window=window)
        torch.cuda.synchronize()
        t = time.perf_counter()
        r = run_job(s.cascade_job(ps, Strategy.D))
        torch.cuda.synchronize()
        total = time.perf_counter() - t
        per = [(o.name, o.z_max - o.z_min + 1) for o in ps.organs]
        per_organ = total / (2 * len(per))
        print(
            f"GPU cascade D on {img.shape}: {total:.2f} s for {len(per)} organs × 2 passes "
            f"({per_organ:.2f} s per organ-pass; labels {sorted(set(r.final.fused.labels))})"
        )


if __name__ == "__main__":
    main()
