"""Benchmark: streaming ensemble maps vs the straightforward stacked-numpy version and the memory-bandwidth floor.

M members × C classes of float32 probabilities on a Z×512×512 grid (default 9 × 4 × 300, as the issue asks).
Members are generated one at a time into a reused buffer (generation is not timed), then:

- streamed   : ``EnsembleAccumulator.add`` for every member + ``result()`` (all maps);
- read floor : one read of every member (a numba reduction over its values): the memory-bandwidth floor (b);
- file read  : loading one member from an nnU-Net-style compressed float16 ``.npz`` (× M): what reading the members
               really costs when they come from disk;
- stacked    : the straightforward numpy implementation on the stacked (M, C, V) array (baseline a). At full size
               the stack alone is M × one member (11 GB for the default), so it runs on ``--stacked-slices`` slices
               and its time is scaled linearly to the full grid (both numbers printed).

Peak RAM is measured with tracemalloc (numpy reports its buffers to it) during the streamed phase, excluding the
reused member buffer's generation temporaries, and compared with the size of one float32 member.

Before measuring, ``--prefault GIB`` (default 12) touches that much memory once and frees it: on a fresh virtual
machine the first touch of never-used guest memory costs ~3 s/GiB (the host backs it page by page), ten times a
normal page fault, and would otherwise be charged to whichever phase runs first.

Run: ``.venv/bin/python bench/bench_uncertainty.py [--slices 300] [--members 9] [--classes 4]``
"""

from __future__ import annotations

import argparse
import gc
import math
import time
import tracemalloc

import numpy as np
from numba import njit, prange

from napari_segunc.uncertainty import EnsembleAccumulator


@njit(cache=True, parallel=True)
def _read_all(p):
    """Touch every value once (sum): the cheapest possible pass over a member."""
    n_classes, n = p.shape
    total = 0.0
    for v in prange(n):
        for c in range(n_classes):
            total += p[c, v]
    return total


def make_member(buf: np.ndarray, seed: int) -> None:
    """Fill `buf` (C, V) with valid probabilities, slab by slab (softmax of smooth-ish random logits)."""
    rng = np.random.default_rng(seed)
    c, v = buf.shape
    step = 1 << 22
    for start in range(0, v, step):
        logits = rng.standard_normal((c, min(step, v - start)), dtype=np.float32) * 2.0
        logits[0] += 3.0  # mostly background, as in CT
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=0, keepdims=True)
        buf[:, start : start + logits.shape[1]] = logits


def stacked_numpy(members: np.ndarray) -> dict[str, np.ndarray]:
    """Baseline (a): what one writes first, on the stacked (M, C, V) array."""
    mean = members.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nansum(mean * np.log(mean), axis=0)
        member_h = -np.nansum(members * np.log(members), axis=1)
    expected = member_h.mean(axis=0)
    seg = mean.argmax(axis=0)
    return {
        "entropy": h,
        "expected_entropy": expected,
        "mutual_information": np.clip(h - expected, 0, None),
        "variance": members.var(axis=0),
        "max_prob_uncertainty": 1 - mean.max(axis=0),
        "member_disagreement": (members.argmax(axis=1) != seg).mean(axis=0),
        "segmentation": seg,
    }


def read_member_file(buf, shape) -> float:
    """Seconds to load one member from an nnU-Net-style compressed float16 ``.npz`` (writing it is not timed)."""
    import tempfile
    from pathlib import Path

    make_member(buf, seed=0)
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        path = Path(tmp) / "member.npz"
        np.savez_compressed(path, probabilities=buf.reshape(buf.shape[0], *shape).astype(np.float16))
        t0 = time.perf_counter()
        with np.load(path) as npz:
            npz["probabilities"]
        return time.perf_counter() - t0


def stream(buf, shape, m, member_bytes, *, class_variance: bool) -> dict[str, float]:
    """Stream `m` members through an accumulator and finish with ``result(consume=True)`` (what the CLI does)."""
    c = buf.shape[0]
    acc = EnsembleAccumulator(class_variance=class_variance)
    t_stream = t_read = 0.0
    peak = 0
    for i in range(m):
        make_member(buf, seed=i)  # not timed, not traced
        tracemalloc.start()
        t0 = time.perf_counter()
        _read_all(buf)
        t1 = time.perf_counter()
        acc.add(buf.reshape(c, *shape), name=f"m{i}")
        t2 = time.perf_counter()
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        t_read += t1 - t0
        t_stream += t2 - t1
    tracemalloc.start()
    t0 = time.perf_counter()
    maps = acc.result(consume=True)
    t_final = time.perf_counter() - t0
    peak_final = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    accumulators = peak  # what the accumulator holds (allocated inside traced adds) + per-chunk temporaries
    del maps, acc
    gc.collect()
    peak_stream = accumulators + member_bytes  # the member being added is in memory too
    peak_all = accumulators + peak_final  # sums turned into outputs + the new maps (member freed by then)
    label = "per-class variance" if class_variance else "mean variance only"
    print(
        f"streamed ({label}): {t_stream:6.2f} s adding + {t_final:5.2f} s maps = {t_stream + t_final:6.2f} s; "
        f"peak {peak_stream / 2**30:4.2f} GiB = {peak_stream / member_bytes:4.2f}× one member while streaming, "
        f"{peak_all / 2**30:4.2f} GiB = {peak_all / member_bytes:4.2f}× with the output maps"
    )
    return {"total": t_stream + t_final, "read": t_read, "peak": peak_stream}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--members", type=int, default=9)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--stacked-slices", type=int, default=30, help="slices for the stacked baseline")
    ap.add_argument("--prefault", type=float, default=12.0, help="GiB of memory to touch once before measuring")
    args = ap.parse_args()
    if args.prefault > 0:
        t0 = time.perf_counter()
        block = np.ones(int(args.prefault * 2**30) // 8)
        del block
        print(f"prefaulted {args.prefault:g} GiB in {time.perf_counter() - t0:.1f} s")
    m, c = args.members, args.classes
    shape = (args.slices, args.size, args.size)
    v = math.prod(shape)
    member_bytes = c * v * 4
    print(f"grid {shape}, {m} members × {c} classes, one float32 member = {member_bytes / 2**30:.2f} GiB")

    buf = np.empty((c, v), np.float32)
    _read_all(buf[:, :10])  # compile outside the timings
    warm = EnsembleAccumulator()
    warm.add(np.full((c, 2, 2, 2), 1.0 / c, np.float32), name="warm-up")
    warm.result()

    runs = {mode: stream(buf, shape, m, member_bytes, class_variance=mode) for mode in (True, False)}
    t_read = runs[True]["read"]
    print(f"read floor : {t_read:7.2f} s  (one pass over every member in memory)")
    t_file = read_member_file(buf, shape) * m
    print(f"file read  : {t_file:7.2f} s  (np.load of an nnU-Net-style float16 .npz per member, × {m})")

    # --- stacked baseline on a slab, scaled
    zs = min(args.stacked_slices, args.slices)
    vs = zs * args.size * args.size
    stack = np.empty((m, c, vs), np.float32)
    for i in range(m):
        make_member(buf, seed=i)
        stack[i] = buf[:, :vs]
    t0 = time.perf_counter()
    stacked_numpy(stack)
    t_stack_slab = time.perf_counter() - t0
    t_stack = t_stack_slab * args.slices / zs
    print(
        f"stacked    : {t_stack_slab:7.2f} s on {zs} slices → {t_stack:7.2f} s scaled to {args.slices} slices "
        f"(needs {m * member_bytes / 2**30:.1f} GiB for the stack alone)"
    )
    for mode, r in runs.items():
        print(
            f"ratios ({'per-class variance' if mode else 'mean variance only'}): stacked / streamed = "
            f"{t_stack / r['total']:5.1f}× (goal ≥ 10×); streamed / read floor = {r['total'] / t_read:4.2f}× "
            f"(goal ≤ 2×), / file read = {r['total'] / t_file:4.2f}×; "
            f"peak = {r['peak'] / member_bytes:4.2f}× one member (goal ≤ 3×)"
        )


if __name__ == "__main__":
    main()
