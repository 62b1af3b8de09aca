"""Train the demo ensemble with nnU-Net v2 itself: 3 simulated raters × 2 seeds on synthetic phantoms.

Seed 000's protocol in miniature: every rater's labels train their own models (one per seed), and the members are
later combined into per-rater ensembles and one general ensemble. Everything nnU-Net does is nnU-Net's own code:
dataset fingerprint, experiment planning, preprocessing, the trainer (a subclass with a short schedule on the CPU)
and its data augmentation. Only the plans are changed: a smaller network (4 stages of 8–64 features) working at half
the phantom's resolution (6 × 5 × 5 mm) with one patch covering the whole 24×56×72 resampled volume, so that the
whole run fits in about an hour on 2 CPU cores and every patch shows where left and right are (with 32×64×64 patches
at full resolution a kidney cannot tell which side it is on, nor the spleen that it is not the liver: the first runs
never found the right kidney or the spleen). The exported checkpoints keep the network weights only (no optimizer
state; 4.5 MB per member).

Output: ``<out>/rater<k>_seed<s>/{dataset.json, plans.json, fold_all/checkpoint_final.pth}`` — standard nnU-Net
trained-model folders (trainer name ``nnUNetTrainer``, so nnU-Net's own predictor loads them too) — and
``<out>/ensemble.json`` naming the members and their groups.

Run: ``.venv/bin/python scripts/train_demo_ensemble.py --out src/napari_segunc/models/demo [--work build/demo]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

N_TRAIN = 12  # phantoms per rater dataset (the same images for every rater)
TRAIN_SEEDS = range(1000, 1000 + N_TRAIN)
RATERS = (1, 2, 3)
MODEL_SEEDS = (112233, 445566)
DATASET_BASE = 900
SPACING = [6.0, 5.0, 5.0]  # half the phantom's resolution: one patch then holds the whole abdomen
PATCH = [24, 56, 72]  # = the phantom's 48×112×144 grid at SPACING: left and right, liver and spleen, are told apart
FEATURES = [8, 16, 32, 64]


def write_datasets(raw: Path) -> list[int]:
    """One nnU-Net raw dataset per rater: the same phantom images, that rater's labels."""
    import numpy as np

    from napari_segunc.io import write_volume
    from napari_segunc.phantom import LABELS, make_phantom

    ids = []
    studies = [make_phantom(seed=s, n_raters=len(RATERS)) for s in TRAIN_SEEDS]
    for k in RATERS:
        did = DATASET_BASE + k
        folder = raw / f"Dataset{did}_PhantomRater{k}"
        (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
        (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
        for i, st in enumerate(studies):
            write_volume(st.image, folder / "imagesTr" / f"ph_{i:03d}_0000.nii.gz", overwrite=True)
            labels = st.raters[k - 1].with_data(st.raters[k - 1].data.astype(np.uint8))
            write_volume(labels, folder / "labelsTr" / f"ph_{i:03d}.nii.gz", overwrite=True)
        dataset = {
            "channel_names": {"0": "CT"},
            "labels": {"background": 0, **{name: int(v) for name, v in sorted(LABELS.items(), key=lambda x: x[1])}},
            "numTraining": len(studies),
            "file_ending": ".nii.gz",
            "name": f"segunc phantom, simulated rater {k}",
        }
        (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
        ids.append(did)
    return ids


def shrink_plans(preprocessed: Path, did: int, name: str) -> None:
    """Smaller network and patch in the dataset's nnUNetPlans.json (3d_fullres), before preprocessing."""
    path = preprocessed / name / "nnUNetPlans.json"
    plans = json.loads(path.read_text())
    cfg = plans["configurations"]["3d_fullres"]
    cfg["spacing"] = SPACING
    cfg["patch_size"] = PATCH
    cfg["batch_size"] = 2
    arch = cfg["architecture"]["arch_kwargs"]
    n = len(FEATURES)
    arch["n_stages"] = n
    arch["features_per_stage"] = FEATURES
    arch["kernel_sizes"] = [[3, 3, 3]] * n
    arch["strides"] = [[1, 1, 1]] + [[2, 2, 2]] * (n - 1)
    arch["n_conv_per_stage"] = [2] * n
    arch["n_conv_per_stage_decoder"] = [2] * (n - 1)
    for other in [c for c in plans["configurations"] if c != "3d_fullres"]:
        del plans["configurations"][other]
    path.write_text(json.dumps(plans, indent=2))


def train_one(preprocessed: Path, results: Path, name: str, seed: int, epochs: int, iterations: int) -> Path:
    import numpy as np
    import torch

    from napari_segunc.inference.training import DemoTrainer

    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - nnU-Net's augmentation draws from numpy's global generator
    import random

    random.seed(seed)
    plans = json.loads((preprocessed / name / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((preprocessed / name / "dataset.json").read_text())
    os.environ["nnUNet_results"] = str(results / f"seed{seed}")  # nnunetv2 reads its paths lazily
    trainer = DemoTrainer(plans, "3d_fullres", "all", dataset_json, device=torch.device("cpu"))
    trainer.num_epochs = epochs
    trainer.num_iterations_per_epoch = iterations
    trainer.run_training()
    return Path(trainer.output_folder_base)


def export(trained: Path, out: Path) -> Path:
    """Weights-only nnU-Net model folder (dataset.json, plans.json, fold_all/checkpoint_final.pth)."""
    import torch

    ckpt = torch.load(trained / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    slim = {
        "network_weights": {k: v.clone() for k, v in ckpt["network_weights"].items()},
        "init_args": {k: ckpt["init_args"][k] for k in ("configuration", "fold")},
        "trainer_name": "nnUNetTrainer",  # the architecture is nnUNetTrainer's; only the schedule differed
        # None (no mirroring, as the trainer says); an empty tuple would break nnU-Net's predictor
        "inference_allowed_mirroring_axes": (
            tuple(int(a) for a in ckpt["inference_allowed_mirroring_axes"])
            if ckpt["inference_allowed_mirroring_axes"]
            else None
        ),
        "current_epoch": int(ckpt["current_epoch"]),
    }
    (out / "fold_all").mkdir(parents=True, exist_ok=True)
    torch.save(slim, out / "fold_all" / "checkpoint_final.pth")
    for f in ("dataset.json", "plans.json"):
        shutil.copyfile(trained / f, out / f)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="src/napari_segunc/models/demo", help="where the model folders are exported")
    ap.add_argument("--work", default="build/demo_training", help="nnU-Net raw/preprocessed/results folders")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--iterations", type=int, default=50, help="training iterations per epoch")
    args = ap.parse_args()
    work, out = Path(args.work).resolve(), Path(args.out).resolve()
    raw, pre, res = work / "raw", work / "preprocessed", work / "results"
    os.environ.update(nnUNet_raw=str(raw), nnUNet_preprocessed=str(pre), nnUNet_results=str(res))
    os.environ["nnUNet_n_proc_DA"] = "2"  # the planner sets torch's thread count from it: must be > 0 there
    os.environ.setdefault("nnUNet_compile", "f")
    t0 = time.perf_counter()
    ids = write_datasets(raw)
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    extract_fingerprints(ids, check_dataset_integrity=True, num_processes=2)
    plan_experiments(ids)
    names = [f"Dataset{did}_PhantomRater{did - DATASET_BASE}" for did in ids]
    for did, name in zip(ids, names, strict=True):
        shrink_plans(pre, did, name)
    preprocess(ids, configurations=("3d_fullres",), num_processes=(2,))
    print(f"datasets planned and preprocessed in {time.perf_counter() - t0:.0f} s", flush=True)
    import torch

    os.environ["nnUNet_n_proc_DA"] = "0"  # augmentation in the main process while training: deterministic
    torch.set_num_threads(2)
    members = []
    for k, name in zip(RATERS, names, strict=True):
        for seed in MODEL_SEEDS:
            t = time.perf_counter()
            trained = train_one(pre, res, name, seed, args.epochs, args.iterations)
            folder = export(trained, out / f"rater{k}_seed{seed}")
            entry = {"model": folder.name, "folds": ["all"], "group": f"rater{k}", "name": f"rater{k}/seed{seed}"}
            members.append(entry)
            size = (folder / "fold_all" / "checkpoint_final.pth").stat().st_size
            print(f"rater {k} seed {seed}: {time.perf_counter() - t:.0f} s, {size / 1e6:.2f} MB", flush=True)
    (out / "ensemble.json").write_text(json.dumps({"members": members}, indent=2) + "\n")
    print(f"demo ensemble of {len(members)} members in {out} ({time.perf_counter() - t0:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
