"""Streaming ensemble uncertainty: members arrive one at a time, memory stays O(C·V) whatever their number.

Definitions (natural log, nats; ``normalized=True`` divides the three entropies by ln C):

- mean probabilities p̄_c = (1/M) Σ_m p_{m,c}; segmentation = argmax_c p̄_c (first maximum on ties);
- predictive entropy H(p̄) = −Σ_c p̄_c ln p̄_c with 0·ln 0 = 0;
- expected entropy (aleatoric) = (1/M) Σ_m H(p_m);
- mutual information (epistemic) = H(p̄) − (1/M) Σ_m H(p_m), float rounding negatives clipped to 0, exactly 0 for a
  single member;
- variance per class across members, population form (1/M) Σ_m p_{m,c}² − p̄_c², and its mean over classes;
- max-softmax uncertainty 1 − max_c p̄_c;
- member disagreement: fraction of members whose argmax differs from the ensemble's argmax.

Probabilities are averaged, never logits (ARCHITECTURE.md convention 4).
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from ..errors import GeometryMismatch, InvalidInput
from ..volume import Volume, check_same_grid
from . import _kernels as K

__all__ = ["ALL_MEMBERS", "EnsembleAccumulator", "EnsembleMaps", "SCALAR_MAPS"]

log = logging.getLogger(__name__)

ALL_MEMBERS = "all"
#: Per-voxel scalar maps of `EnsembleMaps`, in display order.
SCALAR_MAPS = (
    "entropy",
    "expected_entropy",
    "mutual_information",
    "mean_variance",
    "max_prob_uncertainty",
    "member_disagreement",
)


@dataclasses.dataclass
class EnsembleMaps:
    """Uncertainty maps of one group of members. Arrays are float32 unless said otherwise; shapes (Z, Y, X).

    Attributes
    ----------
    mean_probabilities : ndarray, shape (C, Z, Y, X)
    segmentation : ndarray of uint8 (uint16 beyond 256 classes)
    entropy, expected_entropy, mutual_information : ndarray
        Nats, or divided by ln C when `normalized`.
    variance : ndarray, shape (C, Z, Y, X), or None
        None when the accumulator was built with ``class_variance=False``.
    mean_variance, max_prob_uncertainty, member_disagreement : ndarray
    group : str
    members : tuple of str
    normalized : bool
    member_voxels : dict of str to ndarray of int64, shape (C,)
        Each member's own label map (its argmax) counted per class: the spread of the members' organ volumes
        (`napari_segunc.metrics.stats.organ_statistics`).
    """

    mean_probabilities: np.ndarray
    segmentation: np.ndarray
    entropy: np.ndarray
    expected_entropy: np.ndarray
    mutual_information: np.ndarray
    variance: np.ndarray | None
    mean_variance: np.ndarray
    max_prob_uncertainty: np.ndarray
    member_disagreement: np.ndarray
    group: str
    members: tuple[str, ...]
    normalized: bool
    member_voxels: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def n_members(self) -> int:
        return len(self.members)

    @property
    def n_classes(self) -> int:
        return int(self.mean_probabilities.shape[0])

    def scalar_maps(self) -> dict[str, np.ndarray]:
        """The per-voxel scalar maps by name (see `SCALAR_MAPS`)."""
        return {name: getattr(self, name) for name in SCALAR_MAPS}


@dataclasses.dataclass
class _Sums:
    sum_p: np.ndarray
    sum_sq: np.ndarray
    sum_ent: np.ndarray
    votes: np.ndarray
    members: list[str]


_COUNT_BLOCK = 1 << 14  # voxels per thread block of `argmax_counts`


class EnsembleAccumulator:
    """Accumulate ensemble members' class probabilities one by one, for all members and per group.

    Parameters
    ----------
    atol : float
        Tolerance on Σ_c p_c = 1 per voxel (default 1e-3).
    renormalize : bool
        Rescale each voxel's probabilities to sum to 1 instead of refusing members that do not (a voxel whose
        probabilities are all 0 is still refused).
    chunk_voxels : int
        Voxels processed per kernel call; bounds temporary memory (float16 members are upcast chunk by chunk).
    class_variance : bool
        Keep the per-class variance across members (default). Without it only its mean over classes is available
        (`EnsembleMaps.variance` is ``None``) and the accumulator needs 1.75 instead of 2.5 float32 members of
        memory.
    use_numba : bool
        Use the compiled kernels (default) or their numpy twins (reference, slower).

    Examples
    --------
    >>> acc = EnsembleAccumulator()
    >>> for name, group, probs in members:            # probs: (C, Z, Y, X) float32 or float16
    ...     acc.add(probs, name=name, group=group)
    >>> maps = acc.result()                           # all members
    >>> per_rater = acc.result("rater1")              # one group
    """

    def __init__(
        self,
        *,
        atol: float = 1e-3,
        renormalize: bool = False,
        chunk_voxels: int = 1 << 20,
        class_variance: bool = True,
        use_numba: bool = True,
    ) -> None:
        self.atol = float(atol)
        self.renormalize = bool(renormalize)
        self.chunk_voxels = int(chunk_voxels)
        self.class_variance = bool(class_variance)
        self._kernels = (K.accumulate, K.finalize) if use_numba else (K.accumulate_numpy, K.finalize_numpy)
        self._argmax_counts = K.argmax_counts if use_numba else K.argmax_counts_numpy
        self._voxels: dict[str, np.ndarray] = {}  # member → voxels per class of its own label map
        self._shape: tuple[int, ...] | None = None
        self._grid: Volume | None = None
        self._sums: dict[str, _Sums] = {}

    # ------------------------------------------------------------------ state
    @property
    def shape(self) -> tuple[int, ...] | None:
        """(C, Z, Y, X) of the members, fixed by the first one."""
        return self._shape

    @property
    def groups(self) -> list[str]:
        """``"all"`` followed by the group names in order of first appearance."""
        return list(self._sums)

    def members(self, group: str = ALL_MEMBERS) -> tuple[str, ...]:
        return tuple(self._sums[group].members) if group in self._sums else ()

    # ------------------------------------------------------------------ adding members
    def add(
        self, probabilities: np.ndarray, *, name: str, group: str | None = None, grid: Volume | None = None
    ) -> None:
        """Add one member.

        Parameters
        ----------
        probabilities : ndarray, shape (C, Z, Y, X), float32 or float16
            Class probabilities (background first), C ≥ 2, on the canonical grid.
        name : str
            Member name used in error messages and results (e.g. ``"rater1/seed112233"``).
        group : str, optional
            Group the member also belongs to (e.g. ``"rater1"``); every member always counts in ``"all"``.
        grid : Volume, optional
            The member's grid; checked against the first member's when both are given.

        Raises
        ------
        InvalidInput
            Wrong dimensionality, fewer than 2 classes, NaN/Inf, values outside [0, 1] or sums off 1 (unless
            `renormalize`). The accumulator is left exactly as it was before the call.
        GeometryMismatch
            Shape or grid different from the first member's.
        """
        p = np.asarray(probabilities)
        if p.ndim != 4 or p.shape[0] < 2:
            raise InvalidInput(
                f"Member '{name}' has shape {p.shape}; class probabilities of shape (C, Z, Y, X) with C ≥ 2 "
                "(background included) are needed."
            )
        if p.dtype.kind != "f":
            raise InvalidInput(f"Member '{name}' holds {p.dtype} values; probabilities must be floats in [0, 1].")
        if self._shape is not None and p.shape != self._shape:
            raise GeometryMismatch(
                f"Member '{name}' has shape {p.shape} (classes, z, y, x) but the first member has {self._shape}; "
                "all members must predict the same classes on the same image."
            )
        if grid is not None and self._grid is not None:
            check_same_grid(self._grid, grid)
        if group == ALL_MEMBERS:
            raise InvalidInput(f"'{ALL_MEMBERS}' is reserved for the ensemble of every member; rename the group.")
        targets = [ALL_MEMBERS] + ([group] if group else [])
        for t in targets:
            if t in self._sums and name in self._sums[t].members:
                raise InvalidInput(f"Member '{name}' was already added to group '{t}'.")

        created = [t for t in targets if t not in self._sums]
        for t in created:
            self._sums[t] = self._allocate(p.shape)
        for t in targets:  # vote counters start as uint8 (a quarter of a float32 member) and widen when needed
            s = self._sums[t]
            if len(s.members) >= np.iinfo(s.votes.dtype).max:
                s.votes = s.votes.astype(np.uint32)
        flat = p.reshape(p.shape[0], -1)
        accumulate = self._kernels[0]
        done = {t: 0 for t in targets}  # voxels of this member already added to each target
        voxels = np.zeros(p.shape[0], np.int64)
        try:
            for start in range(0, flat.shape[1], self.chunk_voxels):
                chunk = self._chunk(flat, start)
                end = start + chunk.shape[1]
                for t in targets:
                    s = self._sums[t]
                    bad = accumulate(
                        chunk,
                        self.atol,
                        self.renormalize,
                        1,
                        s.sum_p[:, start:end],
                        s.sum_sq[:, start:end],
                        s.sum_ent[start:end],
                        s.votes[:, start:end],
                    )
                    done[t] = end
                    if any(bad):
                        raise InvalidInput(self._describe(name, chunk, *bad))
                voxels += self._argmax_counts(chunk, _COUNT_BLOCK)
        except BaseException:
            self._rollback(flat, done, created)
            raise
        for t in targets:
            self._sums[t].members.append(name)
        self._voxels[name] = voxels
        if self._shape is None:
            self._shape, self._grid = p.shape, grid
        log.debug("added member %s (group %s): %s", name, group, p.shape)

    def _allocate(self, shape: tuple[int, ...]) -> _Sums:
        c, v = shape[0], int(np.prod(shape[1:]))
        return _Sums(
            sum_p=np.zeros((c, v), np.float32),
            sum_sq=np.zeros((c if self.class_variance else 1, v), np.float32),
            sum_ent=np.zeros(v, np.float32),
            votes=np.zeros((c, v), np.uint8),
            members=[],
        )

    def _chunk(self, flat: np.ndarray, start: int) -> np.ndarray:
        chunk = flat[:, start : start + self.chunk_voxels]
        return chunk if chunk.dtype == np.float32 else chunk.astype(np.float32)  # float16: upcast per chunk only

    def _rollback(self, flat: np.ndarray, done: dict[str, int], created: list[str]) -> None:
        """Undo what a failed member added (the kernel skips the same invalid voxels; counts exact, sums ~1e-7)."""
        accumulate = self._kernels[0]
        for t, end in done.items():
            if t in created:
                del self._sums[t]
                continue
            s = self._sums[t]
            for start in range(0, end, self.chunk_voxels):
                chunk = self._chunk(flat, start)
                stop = start + chunk.shape[1]
                accumulate(
                    chunk,
                    self.atol,
                    self.renormalize,
                    -1,
                    s.sum_p[:, start:stop],
                    s.sum_sq[:, start:stop],
                    s.sum_ent[start:stop],
                    s.votes[:, start:stop],
                )

    def _describe(self, name: str, chunk: np.ndarray, n_nan: int, n_range: int, n_sum: int) -> str:
        chunk = chunk.astype(np.float64)
        if n_nan:
            return (
                f"Member '{name}' contains NaN or infinite probabilities (at least {n_nan} voxels); "
                "the model output is broken — rerun it."
            )
        if n_range:
            lo, hi = np.nanmin(chunk), np.nanmax(chunk)
            return (
                f"Member '{name}' has values outside [0, 1] (range {lo:.4g}..{hi:.4g}, at least {n_range} voxels); "
                "these look like logits — apply softmax first (probabilities are averaged, never logits)."
            )
        if self.renormalize:
            return (
                f"Member '{name}' has voxels whose probabilities are all 0 (at least {n_sum}); they cannot be rescaled."
            )
        sums = chunk.sum(axis=0)
        worst = float(sums[np.argmax(np.abs(sums - 1.0))])
        return (
            f"Member '{name}' has class probabilities that do not sum to 1 (at least {n_sum} voxels, e.g. {worst:.4f}; "
            f"tolerance {self.atol:g}). Include the background class, or pass renormalize=True (--renormalize)."
        )

    # ------------------------------------------------------------------ results
    def result(self, group: str = ALL_MEMBERS, *, normalized: bool = False, consume: bool = False) -> EnsembleMaps:
        """Maps for one group (default: every member).

        With `consume`, the group's running sums become the output arrays (no new memory for the mean
        probabilities, the variance and the expected entropy) and the group is removed from the accumulator;
        otherwise the accumulator can keep receiving members afterwards.
        """
        if group not in self._sums:
            if not self._sums:
                raise InvalidInput("No ensemble member was added; add at least one probability map.")
            raise InvalidInput(f"No member belongs to group '{group}'; groups are {', '.join(self.groups)}.")
        s = self._sums[group]
        c, v = s.sum_p.shape
        spatial = self._shape[1:]
        m = len(s.members)
        per_class = s.sum_sq.shape[0] == c
        out = {k: np.empty(v, np.float32) for k in ("entropy", "mi", "mean_var", "maxp", "dis")}
        out["seg"] = np.empty(v, np.uint8 if c <= 256 else np.uint16)
        if consume:
            out.update(mean_p=s.sum_p, var=s.sum_sq, expected=s.sum_ent)
            del self._sums[group]
        else:
            out.update(
                mean_p=np.empty((c, v), np.float32),
                var=np.empty(s.sum_sq.shape, np.float32),
                expected=np.empty(v, np.float32),
            )
        self._kernels[1](
            s.sum_p,
            s.sum_sq,
            s.sum_ent,
            s.votes,
            m,
            out["mean_p"],
            out["var"],
            out["entropy"],
            out["expected"],
            out["mi"],
            out["mean_var"],
            out["maxp"],
            out["dis"],
            out["seg"],
        )
        if m == 1:
            out["mi"][:] = 0.0  # H(p̄) and the member's H(p) differ only by float32 rounding
        if normalized:
            for k in ("entropy", "expected", "mi"):
                out[k] /= np.float32(math.log(c))
        return EnsembleMaps(
            mean_probabilities=out["mean_p"].reshape(c, *spatial),
            segmentation=out["seg"].reshape(spatial),
            entropy=out["entropy"].reshape(spatial),
            expected_entropy=out["expected"].reshape(spatial),
            mutual_information=out["mi"].reshape(spatial),
            variance=out["var"].reshape(c, *spatial) if per_class else None,
            mean_variance=out["mean_var"].reshape(spatial),
            max_prob_uncertainty=out["maxp"].reshape(spatial),
            member_disagreement=out["dis"].reshape(spatial),
            group=group,
            members=tuple(s.members),
            normalized=normalized,
            member_voxels={m: self._voxels[m].copy() for m in s.members},
        )

    def results(self, *, normalized: bool = False, consume: bool = False) -> dict[str, EnsembleMaps]:
        """Maps for ``"all"`` and every group, in one call (see `result` for `consume`)."""
        return {g: self.result(g, normalized=normalized, consume=consume) for g in self.groups}


def warm_up() -> None:
    """Compile the accumulator's numba kernels (or load them from numba's on-disk cache) on tiny members, for the
    member dtypes and variance settings the widgets and the CLI use. Run in a separate process by the Ensemble dock
    (`napari_segunc._qt._worker.warm_up_in_background`): a first compilation inside napari holds the GIL long
    enough to freeze the window for ~0.4 s."""
    for class_variance in (False, True):
        for dtype in (np.float32, np.float16):
            acc = EnsembleAccumulator(class_variance=class_variance)
            member = np.full((2, 1, 1, 2), 0.5, dtype=dtype)
            acc.add(member, name="a")
            acc.add(member, name="b")
            acc.result(consume=True)
