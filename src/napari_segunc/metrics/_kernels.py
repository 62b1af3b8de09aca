"""numba kernels of the metrics suite (ARCHITECTURE.md convention 7): one parallel pass each over (C, Z, Y, X)
probabilities. Their numpy twins are in the tests (``np.argmax``, ``scipy.stats.entropy``, min/max/sum); the
case-level QC's patch maximum (`patch_max`) has its twin here (`patch_max_numpy`)."""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["argmax", "count_above", "entropy", "patch_max", "patch_max_numpy", "probability_stats"]


@numba.njit(cache=True, parallel=True)
def _stats_kernel(p):  # pragma: no cover - compiled
    """Per slice: min, max (NaN propagates) and min/max of the per-voxel class sums."""
    n_classes, nz, ny, nx = p.shape
    out = np.empty((nz, 4), np.float64)
    for z in numba.prange(nz):
        lo, hi, s_lo, s_hi = np.inf, -np.inf, np.inf, -np.inf
        for y in range(ny):
            for x in range(nx):
                s = 0.0
                for c in range(n_classes):
                    v = np.float64(p[c, z, y, x])
                    if v != v:
                        lo = np.nan
                        hi = np.nan
                    elif lo == lo:
                        lo = min(lo, v)
                        hi = max(hi, v)
                    s += v
                s_lo = min(s_lo, s)
                s_hi = max(s_hi, s)
        out[z, 0], out[z, 1], out[z, 2], out[z, 3] = lo, hi, s_lo, s_hi
    return out


def probability_stats(p: np.ndarray) -> tuple[float, float, float, float]:
    """(min, max, min class sum, max class sum) of (C, Z, Y, X) probabilities; NaN min/max when any value is NaN."""
    per_slice = _stats_kernel(p)
    if np.isnan(per_slice[:, 0]).any():
        return math.nan, math.nan, math.nan, math.nan
    return (
        float(per_slice[:, 0].min()),
        float(per_slice[:, 1].max()),
        float(per_slice[:, 2].min()),
        float(per_slice[:, 3].max()),
    )


@numba.njit(cache=True, parallel=True)
def _argmax_kernel(p, out):  # pragma: no cover - compiled
    """out[z, y, x] = first c maximising p[c, z, y, x] (np.argmax semantics, NaN-free input)."""
    n_classes, nz, ny, nx = p.shape
    for z in numba.prange(nz):
        for y in range(ny):
            for x in range(nx):
                best = p[0, z, y, x]
                arg = 0
                for c in range(1, n_classes):
                    if p[c, z, y, x] > best:
                        best = p[c, z, y, x]
                        arg = c
                out[z, y, x] = arg


def argmax(p: np.ndarray) -> np.ndarray:
    """argmax over classes as uint8 (uint16 beyond 256 classes), one parallel pass."""
    out = np.empty(p.shape[1:], np.uint8 if p.shape[0] <= 256 else np.uint16)
    _argmax_kernel(p, out)
    return out


@numba.njit(cache=True, parallel=True)
def _entropy_kernel(p, out):  # pragma: no cover - compiled
    n_classes, nz, ny, nx = p.shape
    for z in numba.prange(nz):
        for y in range(ny):
            for x in range(nx):
                h = 0.0
                for c in range(n_classes):
                    v = np.float64(p[c, z, y, x])
                    if v > 0.0:
                        h -= v * np.log(v)
                out[z, y, x] = h


def entropy(p: np.ndarray) -> np.ndarray:
    """Predictive entropy (nats) of (C, Z, Y, X) probabilities, float32, 0·log 0 = 0."""
    out = np.empty(p.shape[1:], np.float32)
    _entropy_kernel(p, out)
    return out


@numba.njit(cache=True, parallel=True)
def _patch_max_kernel(a, wz, wy, wx):  # pragma: no cover - compiled
    """Largest sum of `a` (Z, Y, X) over a wz × wy × wx box inside it: running sums along x, then y (slice by
    slice, in float64), then z (column by column)."""
    nz_all, ny_all, nx_all = a.shape
    nz, ny, nx = nz_all - wz + 1, ny_all - wy + 1, nx_all - wx + 1
    b2 = np.empty((nz_all, ny, nx), np.float64)
    for z in numba.prange(nz_all):
        b1 = np.empty((ny_all, nx), np.float64)
        for y in range(ny_all):
            s = 0.0
            for x in range(wx):
                s += a[z, y, x]
            b1[y, 0] = s
            for x in range(1, nx):
                s += np.float64(a[z, y, x + wx - 1]) - np.float64(a[z, y, x - 1])
                b1[y, x] = s
        for x in range(nx):
            s = 0.0
            for y in range(wy):
                s += b1[y, x]
            b2[z, 0, x] = s
            for y in range(1, ny):
                s += b1[y + wy - 1, x] - b1[y - 1, x]
                b2[z, y, x] = s
    best = np.empty(ny, np.float64)
    for y in numba.prange(ny):
        m = -np.inf
        for x in range(nx):
            s = 0.0
            for z in range(wz):
                s += b2[z, y, x]
            m = max(m, s)
            for z in range(1, nz):
                s += b2[z + wz - 1, y, x] - b2[z - 1, y, x]
                m = max(m, s)
        best[y] = m
    return best.max()


def patch_max(a: np.ndarray, size: int) -> float:
    """Largest sum of a 3D map over a ``size``-wide box (the whole axis where it is shorter)."""
    a = np.asarray(a)
    w = [min(size, n) for n in a.shape]
    return float(_patch_max_kernel(a, w[0], w[1], w[2]))


def patch_max_numpy(a: np.ndarray, size: int) -> float:
    """Twin of `patch_max`: running sums with ``numpy.cumsum`` along each axis, in float64."""
    s = np.asarray(a, dtype=np.float64)
    for axis in range(s.ndim):
        w = min(size, s.shape[axis])
        c = np.cumsum(s, axis=axis)
        head = np.take(c, [w - 1], axis=axis)
        n = c.shape[axis]
        tail = np.take(c, np.arange(w, n), axis=axis) - np.take(c, np.arange(0, n - w), axis=axis)
        s = np.concatenate([head, tail], axis=axis)
    return float(s.max())


@numba.njit(cache=True, parallel=True)
def _count_above_kernel(p, thresholds):  # pragma: no cover - compiled
    nz = p.shape[0]
    nt = thresholds.size
    rows = np.zeros((nz, nt), np.int64)
    for z in numba.prange(nz):
        for y in range(p.shape[1]):
            for x in range(p.shape[2]):
                v = p[z, y, x]
                for t in range(nt):
                    if v > thresholds[t]:
                        rows[z, t] += 1
    return rows.sum(axis=0)


def count_above(p: np.ndarray, thresholds) -> np.ndarray:
    """(T,) int64: voxels of the 3D map `p` above each threshold (strictly), in one parallel pass."""
    return _count_above_kernel(np.asarray(p), np.asarray(thresholds, dtype=np.float64))
