"""Benchmark: K atlas registrations onto one target, serially in this process vs in parallel worker processes.

Target: the phantom of seed 0; atlases: the phantoms of seeds 1..K (default K = 4, full 48×112×144 grid, 3 × 2.5 ×
2.5 mm). Each run goes through `atlas_prompts` end to end (registration, warping, score maps, boxes):

- serial   : ``workers=0``, every registration in this process with all the cores as ITK threads;
- parallel : ``workers=N`` (default 2) Dask worker processes, one registration each at a time, cores // N threads.

The parallel time includes starting and stopping the local Dask cluster (also timed alone and printed). Both runs
must give identical score maps (checked and printed) when ITK gives the same result for both thread counts (it does
on these phantoms). The load average is printed too: on a shared machine it says how many cores were really free.
Seed 004 reports ~7 min for 15 serial registrations and notes they parallelise.

Run: ``.venv/bin/python bench/bench_atlas.py [-k 4] [--workers 2] [--refine none|bspline|demons] [--small]``
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    from napari_segunc.phantom import LABELS, make_phantom
    from napari_segunc.prompts.atlas import atlas_prompts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", type=int, default=4, help="number of atlases (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the parallel run (default 2)")
    parser.add_argument("--refine", default="none", choices=("none", "bspline", "demons"))
    parser.add_argument("--small", action="store_true", help="half-resolution phantoms (24×56×72)")
    args = parser.parse_args()

    grid = {"shape": (24, 56, 72), "spacing": (6.0, 5.0, 5.0)} if args.small else {}
    target = make_phantom(seed=0, n_raters=1, **grid)
    atlases = [(s.image, s.truth) for s in (make_phantom(seed=k, n_raters=1, **grid) for k in range(1, args.k + 1))]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"cores: {os.cpu_count()} (load average {load}), K = {args.k} atlases, grid {target.image.shape}, "
        f"refine {args.refine}"
    )

    start = time.perf_counter()
    serial = atlas_prompts(target.image, atlases, LABELS, workers=0, refine=args.refine)
    t_serial = time.perf_counter() - start
    start = time.perf_counter()
    parallel = atlas_prompts(target.image, atlases, LABELS, workers=args.workers, refine=args.refine)
    t_parallel = time.perf_counter() - start

    start = time.perf_counter()
    _start_and_stop_cluster(args.workers)
    t_cluster = time.perf_counter() - start

    same = all(np.array_equal(serial.score_maps[n], parallel.score_maps[n]) for n in LABELS)
    print(f"serial   (workers 0, {os.cpu_count()} ITK threads): {t_serial:6.1f} s  ({t_serial / args.k:.1f} s/atlas)")
    print(
        f"parallel (workers {args.workers}, {max(1, (os.cpu_count() or 1) // args.workers)} ITK thread(s) each):"
        f" {t_parallel:6.1f} s"
    )
    print(f"  of which starting and stopping the {args.workers}-worker LocalCluster: ~{t_cluster:.1f} s")
    print(f"speed-up serial / parallel: {t_serial / t_parallel:.2f}x; identical score maps: {same}")


def _start_and_stop_cluster(workers: int) -> None:
    import logging

    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
    )
    with Client(cluster) as client:
        client.submit(sum, [1, 2]).result()  # a worker has imported and run something
    cluster.close()


if __name__ == "__main__":
    main()
