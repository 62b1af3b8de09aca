"""Benchmark: `segunc predict` (members streamed into the accumulator) vs the nnU-Net workflow a user runs today.

Baseline, measured in the same run on the same image and members: one ``nnUNetv2_predict_from_modelfolder …
--save_probabilities`` per member (each a fresh process writing its ``.npz`` + ``.pkl``), then ``nnUNetv2_ensemble``
over the member folders (reads them back, averages, writes the ensemble). Ours: one process, each member's
probabilities straight into the streaming accumulator, then every uncertainty map written (more output than the
baseline's mean). Peak RAM (max RSS of the process) of ours is measured for M = 1…all members to show it does not
grow with M. Both use nnU-Net's test-time mirroring.

Run: ``.venv/bin/python bench/bench_ensemble.py [--members 6] [--device cpu|cuda] [--shape 48 112 144]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OURS = r"""
import json, resource, sys, time
from napari_segunc.inference.nnunet import predict_members, read_ensemble_file
from napari_segunc.io import read_volume
from napari_segunc.progress import run_job
from napari_segunc.uncertainty.pipeline import accumulate, write_ensemble_outputs
image, ens, out, device = sys.argv[1:5]
t = time.perf_counter()
runs = predict_members(read_volume(image), read_ensemble_file(ens), device=device)
acc, grid, _labels = run_job(accumulate(runs), None)
write_ensemble_outputs(acc.result(consume=True), grid, out)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": time.perf_counter() - t, "max_rss_mb": rss}))
"""


def _bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def predict_command(inp: Path, out: Path, member, device: str, *, mirroring: bool = True) -> list[str]:
    """``nnUNetv2_predict_from_modelfolder`` of one member with its probabilities saved (``.npz`` + ``.pkl``)."""
    cmd = [_bin("nnUNetv2_predict_from_modelfolder"), "-i", str(inp), "-o", str(out), "-m", member.model_dir]
    cmd += ["-f", member.fold, "--save_probabilities", "-device", device, "-npp", "1", "-nps", "1"]
    return cmd + ([] if mirroring else ["--disable_tta"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shape", type=int, nargs=3, default=[48, 112, 144])
    args = ap.parse_args()
    from napari_segunc.inference.demo_models import demo_ensemble_file
    from napari_segunc.inference.nnunet import read_ensemble_file
    from napari_segunc.io import write_volume
    from napari_segunc.phantom import make_phantom

    members = read_ensemble_file(demo_ensemble_file())[: args.members]
    work = Path(tempfile.mkdtemp(prefix="bench_ensemble_"))
    try:
        inp = work / "in"
        inp.mkdir()
        image = write_volume(make_phantom(seed=900, shape=tuple(args.shape)).image, inp / "case_0000.nii.gz")
        env = dict(os.environ, nnUNet_raw=str(work), nnUNet_preprocessed=str(work), nnUNet_results=str(work))

        t = time.perf_counter()
        outs = []
        for i, m in enumerate(members):
            out = work / f"member{i}"
            subprocess.run(predict_command(inp, out, m, args.device), check=True, env=env, capture_output=True)
            outs.append(str(out))
        subprocess.run(
            [_bin("nnUNetv2_ensemble"), "-i", *outs, "-o", str(work / "ens"), "-np", "1"],
            check=True,
            env=env,
            capture_output=True,
        )
        baseline = time.perf_counter() - t
        print(f"nnU-Net workflow, {len(members)} members: {baseline:.1f} s")

        results = {}
        for m in sorted({1, max(1, len(members) // 2), len(members)}):
            ens = work / f"ens{m}.json"
            ens.write_text(json.dumps({"members": [{"model": x.model_dir, "folds": [x.fold]} for x in members[:m]]}))
            t = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", OURS, str(image), str(ens), str(work / f"ours{m}"), args.device],
                check=True,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - t  # like the baseline: process start and imports included
            results[m] = {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall": wall}
            r = results[m]
            print(
                f"segunc predict, {m} member(s): {r['wall']:.1f} s in all ({r['seconds']:.1f} s after imports), "
                f"peak RSS {r['max_rss_mb']:.0f} MB"
            )
        full = results[len(members)]
        print(
            f"→ {baseline / full['wall']:.2f}× faster than the nnU-Net workflow (goal ≥ 1.5×); "
            f"peak RSS {results[1]['max_rss_mb']:.0f} MB with 1 member, {full['max_rss_mb']:.0f} MB with "
            f"{len(members)}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
