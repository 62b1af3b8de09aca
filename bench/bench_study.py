"""Benchmark: `segunc study` vs seed 000's workflow on the same cohort, in the same run.

Cohort: the demo study (`napari_segunc.study.demo.write_demo_study`: phantom cases unseen by the demo ensemble, 3
raters each) and the shipped demo ensemble (6 members, 3 rater groups). Both on the CPU, nnU-Net's mirroring off.

- Baseline (seed 000's workflow, as its CLI ran it): per case, one ``nnUNetv2_predict_from_modelfolder
  --save_probabilities`` process per member (its ``.npz`` + ``.pkl``), one ``nnUNetv2_ensemble --save_npz`` per
  rater group and one for the general ensemble, then one ``segunc evaluate-cohort`` (in one process, serially) over
  every prediction of the cohort: each member and each ensemble against the raters.
- Ours: ``segunc study --workers W`` for W = 1 and 2 (process start, imports and the cluster included), each into
  a fresh folder.

Prints the wall times, cases per hour, the speed-up against the baseline, the efficiency of 2 workers over 1
(this machine has 2 cores: each worker's torch then shares them), and the bytes written per case by each.

Run: ``.venv/bin/python bench/bench_study.py [--cases 3]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ensemble import predict_command  # noqa: E402 - the same nnU-Net command as the ensemble benchmark


def _bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _run(cmd, env=None) -> None:
    subprocess.run(cmd, check=True, env=env, capture_output=True)


def baseline(spec, work: Path) -> tuple[float, int]:
    """Seed 000's workflow on every case; returns (seconds, bytes written)."""
    env = dict(os.environ, nnUNet_raw=str(work), nnUNet_preprocessed=str(work), nnUNet_results=str(work))
    lines = ["case,group,probabilities,image," + ",".join(f"rater{k + 1}" for k in range(3))]
    t = time.perf_counter()
    for case in spec.cases:
        inp = work / case.name / "in"
        inp.mkdir(parents=True)
        shutil.copyfile(case.image, inp / "case_0000.nii.gz")  # nnU-Net's input naming
        groups: dict[str, list[str]] = {}
        for i, m in enumerate(spec.members):
            out = work / case.name / f"member{i}"
            _run(predict_command(inp, out, m, "cpu", mirroring=False), env)
            groups.setdefault(m.group or "all", []).append(str(out))
            lines.append(f"{case.name},model:{m.name},{out / 'case.npz'},{case.image}," + ",".join(case.raters))
        folders = {**groups, "all": [f for fs in groups.values() for f in fs]}
        for group, members in folders.items():
            out = work / case.name / f"ensemble_{group}"
            _run([_bin("nnUNetv2_ensemble"), "-i", *members, "-o", str(out), "-np", "1", "--save_npz"], env)
            lines.append(f"{case.name},{group},{out / 'case.npz'},{case.image}," + ",".join(case.raters))
    manifest = work / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    _run(
        [
            _bin("segunc"),
            "evaluate-cohort",
            str(manifest),
            "--out",
            str(work / "results.csv"),
            "--workers",
            "0",
            "--quiet",
        ]
    )
    return time.perf_counter() - t, _bytes(work) - _bytes(work / spec.cases[0].name / "in") * len(spec.cases)


def ours(study: Path, out: Path, workers: int) -> float:
    t = time.perf_counter()
    _run([_bin("segunc"), "study", str(study), "--out", str(out), "--workers", str(workers), "--quiet"])
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=3)
    args = ap.parse_args()
    from napari_segunc.study import read_study
    from napari_segunc.study.demo import write_demo_study

    work = Path(tempfile.mkdtemp(prefix="bench_study_"))
    try:
        study = write_demo_study(work / "inputs", cases=args.cases)
        spec = read_study(study)
        n = len(spec.cases)
        print(f"cohort: {n} phantom cases × {len(spec.members)} members ({', '.join(spec.groups)}), CPU")
        t_base, b_base = baseline(spec, work / "baseline")
        print(
            f"seed 000's workflow : {t_base:7.1f} s = {3600 * n / t_base:6.1f} cases/h; "
            f"{b_base / n / 1e6:6.1f} MB written per case"
        )
        walls = {}
        for w in (1, 2):
            out = work / f"ours{w}"
            walls[w] = ours(study, out, w)
            b = _bytes(out / "cases") / n
            print(
                f"segunc study, {w} worker(s): {walls[w]:7.1f} s = {3600 * n / walls[w]:6.1f} cases/h "
                f"→ {t_base / walls[w]:4.2f}× faster; {b / 1e6:6.1f} MB per case = 1/{b_base / n / b:.1f} of the "
                "baseline's"
            )
        print(f"2 workers over 1: {walls[1] / walls[2]:.2f}× (efficiency {walls[1] / walls[2] / 2:.0%}; 2 cores)")
        print("goals: ≥ 3× faster on this CPU, ≤ 1/20 of the bytes per case")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
