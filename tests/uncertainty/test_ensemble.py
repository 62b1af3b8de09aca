"""Streaming ensemble maps against a brute-force stack-of-members reference, scipy entropy and the numpy twins."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from napari_segunc.errors import GeometryMismatch, InvalidInput
from napari_segunc.uncertainty import SCALAR_MAPS, EnsembleAccumulator
from napari_segunc.uncertainty import _kernels as K


def dirichlet_members(m, c, shape=(5, 6, 7), *, seed=0, concentration=0.7, dtype=np.float32):
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    members = []
    for _ in range(m):
        p = rng.dirichlet(np.full(c, concentration), size=n).T.reshape(c, *shape)
        p[:, 0, 0, 0] = np.eye(c)[0]  # a certain voxel: 0·ln 0 must be 0
        members.append(p.astype(dtype))
    return members


def brute_force(members):
    """Reference: stack every member (what the streaming accumulator avoids) and compute each map directly."""
    p = np.stack([m.astype(np.float64) for m in members])  # (M, C, Z, Y, X)
    mean = p.mean(axis=0)
    entropy = scipy.stats.entropy(mean, axis=0)  # independent entropy implementation
    member_h = scipy.stats.entropy(p, axis=1)
    expected = member_h.mean(axis=0)
    seg = np.argmax(mean, axis=0)
    return {
        "mean_probabilities": mean,
        "segmentation": seg,
        "entropy": entropy,
        "expected_entropy": expected,
        "mutual_information": np.clip(entropy - expected, 0, None),
        "variance": p.var(axis=0),
        "mean_variance": p.var(axis=0).mean(axis=0),
        "max_prob_uncertainty": 1 - mean.max(axis=0),
        "member_disagreement": (np.argmax(p, axis=1) != seg[None]).mean(axis=0),
    }


@pytest.mark.parametrize("use_numba", [True, False])
@pytest.mark.parametrize("m", [1, 2, 9])
@pytest.mark.parametrize("c", [2, 4])
def test_matches_brute_force(m, c, use_numba):
    members = dirichlet_members(m, c, seed=10 * m + c)
    acc = EnsembleAccumulator(use_numba=use_numba, chunk_voxels=37)  # several chunks, uneven last one
    for i, p in enumerate(members):
        acc.add(p, name=f"m{i}")
    got = acc.result()
    ref = brute_force(members)
    for key, want in ref.items():
        np.testing.assert_allclose(getattr(got, key), want, atol=2e-6, rtol=0, err_msg=key)
    assert got.n_members == m and got.segmentation.dtype == np.uint8
    for i, p in enumerate(members):  # each member's own label map counted per class
        np.testing.assert_array_equal(got.member_voxels[f"m{i}"], np.bincount(np.argmax(p, 0).ravel(), minlength=c))
    if m == 1:
        assert np.all(got.mutual_information == 0) and np.all(got.member_disagreement == 0)
    assert got.entropy[0, 0, 0] == 0 and got.expected_entropy[0, 0, 0] == 0


def test_numba_kernels_equal_numpy_twins():
    members = dirichlet_members(5, 3, shape=(4, 9, 11), seed=3)
    a, b = EnsembleAccumulator(use_numba=True), EnsembleAccumulator(use_numba=False)
    for i, p in enumerate(members):
        a.add(p, name=str(i))
        b.add(p, name=str(i))
    ra, rb = a.result(), b.result()
    for key in ("mean_probabilities", "variance", *ra.scalar_maps()):
        np.testing.assert_allclose(getattr(ra, key), getattr(rb, key), atol=1e-6, rtol=0, err_msg=key)
    np.testing.assert_array_equal(ra.segmentation, rb.segmentation)
    bad = members[0].reshape(3, -1).copy()
    bad[0, :7] = np.nan
    bad[1, 10:15] = 1.5
    bad[:, 20:22] *= 0.5
    for renorm in (False, True):
        out = []
        for kernel in (K.accumulate, K.accumulate_numpy):
            sums = (
                np.zeros((3, bad.shape[1]), np.float32),
                np.zeros((3, bad.shape[1]), np.float32),
                np.zeros(bad.shape[1], np.float32),
                np.zeros((3, bad.shape[1]), np.uint8),
            )
            counts = kernel(bad, 1e-3, renorm, 1, *sums)
            out.append((counts, sums))
        assert out[0][0] == out[1][0] == ((7, 5, 0) if renorm else (7, 5, 2))
        for a, b in zip(out[0][1], out[1][1], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
        assert out[0][1][0][:, :7].sum() == 0  # invalid voxels are skipped, not added


def test_argmax_counts_equal_numpy_with_ties_and_blocks():
    rng = np.random.default_rng(4)
    p = rng.integers(0, 3, size=(4, 10_001)).astype(np.float32)  # many ties: the first maximum wins in both
    for block in (1, 7, 4096, 1 << 20):
        np.testing.assert_array_equal(K.argmax_counts(p, block), K.argmax_counts_numpy(p, block))
    assert K.argmax_counts(p, 64).sum() == p.shape[1]


def test_groups_in_one_pass():
    members = dirichlet_members(6, 3, seed=7)
    acc = EnsembleAccumulator()
    groups = ["rater1", "rater1", "rater2", "rater2", "rater3", "rater3"]
    for i, (p, g) in enumerate(zip(members, groups, strict=True)):
        acc.add(p, name=f"{g}/seed{i}", group=g)
    assert acc.groups == ["all", "rater1", "rater2", "rater3"]
    results = acc.results()
    for g in ("rater1", "rater2", "rater3"):
        sel = [p for p, gg in zip(members, groups, strict=True) if gg == g]
        np.testing.assert_allclose(results[g].mutual_information, brute_force(sel)["mutual_information"], atol=2e-6)
        assert results[g].members == (f"{g}/seed{groups.index(g)}", f"{g}/seed{groups.index(g) + 1}")
        assert tuple(results[g].member_voxels) == results[g].members
    np.testing.assert_allclose(results["all"].entropy, brute_force(members)["entropy"], atol=2e-6)


def test_normalized_divides_by_ln_c_and_float16_members():
    members = dirichlet_members(3, 4, seed=1, dtype=np.float16)
    members = [(p / p.astype(np.float32).sum(axis=0)).astype(np.float16) for p in members]
    acc = EnsembleAccumulator(atol=5e-3)
    for i, p in enumerate(members):
        acc.add(p, name=str(i))
    nats, norm = acc.result(), acc.result(normalized=True)
    np.testing.assert_allclose(norm.entropy, nats.entropy / math.log(4), rtol=1e-6)
    np.testing.assert_allclose(norm.mutual_information, nats.mutual_information / math.log(4), rtol=1e-6, atol=1e-9)
    assert norm.entropy.max() <= 1 + 1e-6 and nats.entropy.max() > 1  # ln 4 = 1.386 nats is the ceiling


def test_uniform_members_reach_the_maximum_entropy():
    c = 3
    p = np.full((c, 2, 2, 2), 1 / c, np.float32)
    acc = EnsembleAccumulator()
    acc.add(p, name="a")
    acc.add(p, name="b")
    r = acc.result()
    np.testing.assert_allclose(r.entropy, math.log(3), rtol=1e-6)
    np.testing.assert_allclose(r.max_prob_uncertainty, 2 / 3, rtol=1e-6)
    assert np.all(r.mutual_information == 0) or r.mutual_information.max() < 1e-6


def test_confident_but_contradicting_members_are_epistemic():
    a = np.zeros((2, 1, 1, 2), np.float32)
    a[0] = 1.0  # member a: background everywhere
    b = 1.0 - a  # member b: foreground everywhere
    acc = EnsembleAccumulator()
    acc.add(a, name="a")
    acc.add(b, name="b")
    r = acc.result()
    np.testing.assert_allclose(r.mutual_information, math.log(2), rtol=1e-6)  # all epistemic
    assert np.all(r.expected_entropy == 0)
    np.testing.assert_allclose(r.member_disagreement, 0.5)
    np.testing.assert_allclose(r.variance, 0.25)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda p: p.__setitem__((0, 1, 1, 1), np.nan), "contains NaN or infinite"),
        (lambda p: p.__setitem__((1, 2, 2, 2), 3.0), "look like logits"),
        (lambda p: p.__imul__(0.9), "do not sum to 1"),
    ],
)
def test_bad_members_are_refused_and_leave_the_state_untouched(corrupt, message):
    members = dirichlet_members(3, 3, seed=5)
    acc = EnsembleAccumulator(chunk_voxels=50)
    acc.add(members[0], name="good")
    before = acc.result()
    bad = members[1].copy()
    corrupt(bad)
    with pytest.raises(InvalidInput, match=f"Member 'broken'.*{message}"):
        acc.add(bad, name="broken", group="g")
    after = acc.result()
    assert acc.groups == ["all"] and after.members == ("good",) and list(after.member_voxels) == ["good"]
    np.testing.assert_allclose(after.mean_probabilities, before.mean_probabilities, atol=1e-7)
    np.testing.assert_array_equal(after.member_disagreement, before.member_disagreement)


def test_renormalize_opt_in():
    p = dirichlet_members(1, 3, seed=2)[0] * 0.8
    acc = EnsembleAccumulator(renormalize=True)
    acc.add(p, name="unnormalised")
    np.testing.assert_allclose(acc.result().mean_probabilities, p / p.sum(axis=0), atol=1e-6)
    zero = np.zeros_like(p)
    with pytest.raises(InvalidInput, match="all 0"):
        acc.add(zero, name="zeros")


def test_shape_mismatch_and_bad_arguments():
    acc = EnsembleAccumulator()
    acc.add(dirichlet_members(1, 3)[0], name="a")
    with pytest.raises(GeometryMismatch, match="Member 'b' has shape .* but the first member has"):
        acc.add(dirichlet_members(1, 4)[0], name="b")
    with pytest.raises(InvalidInput, match="already added"):
        acc.add(dirichlet_members(1, 3)[0], name="a")
    with pytest.raises(InvalidInput, match=r"shape \(C, Z, Y, X\) with C ≥ 2"):
        acc.add(np.ones((1, 2, 2, 2), np.float32), name="c")
    with pytest.raises(InvalidInput, match="No member belongs to group 'x'"):
        acc.result("x")
    with pytest.raises(InvalidInput, match="No ensemble member"):
        EnsembleAccumulator().result()


def test_vote_counters_widen_beyond_255_members():
    p = np.zeros((2, 1, 1, 1), np.float32)
    p[1] = 1.0
    q = 1.0 - p
    acc = EnsembleAccumulator()
    for i in range(300):
        acc.add(p if i < 200 else q, name=str(i))
    r = acc.result()
    assert r.segmentation[0, 0, 0] == 1
    np.testing.assert_allclose(r.member_disagreement, 100 / 300, rtol=1e-6)
    np.testing.assert_allclose(r.mean_probabilities[:, 0, 0, 0], [100 / 300, 200 / 300], rtol=1e-5)


@pytest.mark.parametrize("use_numba", [True, False])
def test_without_class_variance_and_consuming_results(use_numba):
    members = dirichlet_members(4, 3, seed=9)
    full = EnsembleAccumulator(use_numba=use_numba)
    lean = EnsembleAccumulator(class_variance=False, use_numba=use_numba)
    for i, p in enumerate(members):
        full.add(p, name=str(i), group="g")
        lean.add(p, name=str(i), group="g")
    a, b = full.result(), lean.result()
    assert b.variance is None and a.variance.shape == (3, 5, 6, 7)
    np.testing.assert_allclose(b.mean_variance, brute_force(members)["mean_variance"], atol=2e-6)
    for key in ("mean_probabilities", *SCALAR_MAPS):
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), atol=2e-6, err_msg=key)
    consumed = full.result("g", consume=True)
    assert full.groups == ["all"]
    for key in ("mean_probabilities", "variance", *SCALAR_MAPS):
        np.testing.assert_allclose(getattr(consumed, key), getattr(a, key), atol=1e-7, err_msg=key)
    with pytest.raises(InvalidInput, match="No member belongs to group 'g'"):
        full.result("g")


# ------------------------------------------------------------------------------------ the one pipeline
def _image_on_disk(tmp_path, shape=(5, 6, 7)):
    """An image with a non-LPS direction on disk (so file order ≠ canonical order), read back."""
    import SimpleITK as sitk

    from napari_segunc.io import read_volume

    img = sitk.GetImageFromArray(np.random.default_rng(3).integers(-1000, 1000, shape).astype(np.int16))
    img.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    img.SetSpacing((0.8, 0.9, 2.5))
    sitk.WriteImage(img, str(tmp_path / "image.nii.gz"))
    return read_volume(tmp_path / "image.nii.gz")


def test_file_members_through_the_pipeline_equal_the_brute_force_maps(tmp_path):
    """Source "files": NIfTI and nnU-Net .npz members, in two groups, with a dataset.json beside them."""
    import json

    from napari_segunc.io import write_probabilities
    from napari_segunc.progress import run_job
    from napari_segunc.uncertainty.pipeline import MemberSpec, accumulate, file_members
    from napari_segunc.volume import array_to_source

    image = _image_on_disk(tmp_path)
    members = dirichlet_members(4, 3, shape=image.shape, seed=5)
    paths = []
    for i, p in enumerate(members[:3]):
        paths.append(write_probabilities(p, image, tmp_path / f"m{i}.nii.gz"))
    np.savez_compressed(tmp_path / "m3.npz", probabilities=array_to_source(members[3], image.source.direction))
    paths.append(tmp_path / "m3.npz")
    names = {"background": 0, "liver": 1, "spleen": 2}
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": names}))
    specs = [MemberSpec(str(p), p.name, group="a" if i < 2 else "b") for i, p in enumerate(paths)]

    reports = []
    acc, grid, labels = run_job(accumulate(file_members(specs, reference=image)), reports.append)
    assert labels == {"liver": 1, "spleen": 2} and grid.shape == image.shape
    assert [r.message for r in reports][-1] == "all members added" and len(reports) == 5
    for group, chosen in (("all", members), ("a", members[:2]), ("b", members[2:])):
        maps, ref = acc.result(group), brute_force(chosen)
        assert maps.members == tuple(s.name for s in specs if group == "all" or s.group == group)
        np.testing.assert_array_equal(maps.segmentation, ref["segmentation"])
        for name in ("mean_probabilities", "entropy", "expected_entropy", "mutual_information", "variance"):
            np.testing.assert_allclose(getattr(maps, name), ref[name], atol=1e-6, err_msg=f"{group}: {name}")


def test_the_pipeline_closes_its_source_and_refuses_members_that_name_other_classes():
    from napari_segunc.members import MemberProbabilities
    from napari_segunc.progress import Progress, run_job
    from napari_segunc.uncertainty.pipeline import accumulate

    members = dirichlet_members(3, 3, seed=6)
    closed = []

    def source(labels):
        try:
            for i, (p, names) in enumerate(zip(members, labels, strict=True)):
                yield Progress(i, 3, f"member {i}")
                yield MemberProbabilities(f"m{i}", p, labels=names)
        finally:
            closed.append(True)

    same = {"liver": 1, "spleen": 2}
    job = accumulate(source([same, same, same]))
    assert next(job).message == "member 0"
    job.close()  # what Cancel does: the source is closed at once
    assert closed == [True]

    other = {"liver": 1, "kidney": 2}
    with pytest.raises(InvalidInput, match=r"Member 'm2' names its classes \{'liver': 1, 'kidney': 2\} but 'm0'"):
        run_job(accumulate(source([same, {}, other])))
    assert closed == [True, True]
    acc, grid, labels = run_job(accumulate(source([{}, same, same])))  # a member without names does not disagree
    assert labels == same and grid is None and acc.members() == ("m0", "m1", "m2")
    with pytest.raises(InvalidInput, match="No ensemble member"):
        run_job(accumulate(iter([Progress(0, 0, "nothing")])))
