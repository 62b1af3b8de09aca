"""Rater agreement against brute-force numpy/scipy references, SimpleITK called directly, Fleiss' published example
and the shared real label maps."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections import Counter

import numpy as np
import pytest
import scipy.stats
import SimpleITK as sitk
from scipy import ndimage

from napari_segunc.errors import GeometryMismatch, InvalidInput
from napari_segunc.io import read_volume
from napari_segunc.uncertainty import (
    AGREEMENT_COLUMNS,
    ModelRaterAgreement,
    analyze_raters,
    fleiss_kappa,
    model_vs_raters,
    rater_votes,
)
from napari_segunc.volume import Volume, VolumeKind

VALUES = np.array([0, 3, 7, 12])  # label values with gaps


def random_raters(k, c, *, seed=0, shape=(6, 7, 8), noise=0.3):
    """K label maps sharing a blocky structure, each with its own random relabelling of a fraction of voxels."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, c, tuple(-(-n // 3) for n in shape))
    base = ndimage.zoom(coarse, 3, order=0)[: shape[0], : shape[1], : shape[2]]
    out = []
    for _ in range(k):
        r = base.copy()
        flip = rng.random(shape) < noise
        r[flip] = rng.integers(0, c, int(flip.sum()))
        out.append(VALUES[r].astype(np.uint8))
    return out


def fleiss_by_formula(n_yes, k):
    """Fleiss' kappa of "class vs not" written out voxel by voxel (subjects = voxels, 2 categories)."""
    n = np.stack([n_yes, k - n_yes], axis=1).astype(np.float64)  # (N, 2)
    p_i = ((n**2).sum(axis=1) - k) / (k * (k - 1))
    p_j = n.sum(axis=0) / (n.shape[0] * k)
    p_e = (p_j**2).sum()
    return (p_i.mean() - p_e) / (1 - p_e)


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("c", [2, 4])
def test_maps_match_brute_force(k, c):
    raters = random_raters(k, c, seed=10 * k + c)
    a = analyze_raters(raters, staple=False)
    stack = np.stack(raters).reshape(k, -1).astype(np.int64)  # (K, V)
    labels = np.unique(stack)
    assert a.labels == tuple(int(v) for v in labels) and a.labels[0] == 0 and a.n_raters == k
    votes = np.stack([(stack == v).sum(axis=0) for v in labels])  # (C, V)
    soft = votes / k
    shape = raters[0].shape
    np.testing.assert_allclose(a.soft_labels.reshape(len(labels), -1), soft, atol=1e-7)
    np.testing.assert_allclose(a.vote_entropy.ravel(), scipy.stats.entropy(soft, axis=0), atol=2e-6)
    np.testing.assert_allclose(a.rater_variance.reshape(len(labels), -1), soft * (1 - soft), atol=1e-7)
    assert a.soft_labels.dtype == a.rater_variance.dtype == a.vote_entropy.dtype == np.float32
    norm = analyze_raters(raters, staple=False, normalized=True)
    np.testing.assert_allclose(
        norm.vote_entropy.ravel(), scipy.stats.entropy(soft, axis=0) / math.log(len(labels)), atol=2e-6
    )
    mode = scipy.stats.mode(stack, axis=0).mode  # smallest value among ties
    np.testing.assert_array_equal(a.majority.ravel(), mode)
    assert a.majority.dtype == np.uint8
    unanimous = (stack == stack[0]).all(axis=0)
    np.testing.assert_array_equal(a.consensus.ravel(), np.where(unanimous, stack[0], 0))
    dissensus = []
    for column in stack.T:
        counts = Counter(int(v) for v in column if v != 0)
        top = max(counts.values()) if counts else 0
        dissensus.append(0 if len(set(column)) == 1 else min(v for v, n in counts.items() if n == top))
    np.testing.assert_array_equal(a.dissensus.ravel(), dissensus)
    for v in labels:
        say = (stack == v).sum(axis=0)
        np.testing.assert_array_equal(a.consensus_mask(int(v)).ravel(), say == k)
        np.testing.assert_array_equal(a.dissensus_mask(int(v)).ravel(), (say > 0) & (say < k))
    assert a.consensus_mask(int(labels[0])).shape == shape
    for row in a.pairwise_dice:
        i, j = a.names.index(row["rater_a"]), a.names.index(row["rater_b"])
        x, y = stack[i] == row["label"], stack[j] == row["label"]
        want = 2 * (x & y).sum() / (x.sum() + y.sum()) if x.sum() + y.sum() else math.nan
        np.testing.assert_allclose(row["dice"], want, rtol=1e-12)
    assert len(a.pairwise_dice) == k * (k - 1) // 2 * (len(labels) - 1)
    for ci, v in enumerate(labels[1:], start=1):
        np.testing.assert_allclose(a.fleiss_kappa[int(v)], fleiss_by_formula(votes[ci], k), rtol=1e-10)


def test_majority_tie_goes_to_the_lowest_label():
    a = np.array([0, 3, 7, 3], np.uint8).reshape(1, 1, 4)
    b = np.array([3, 7, 3, 3], np.uint8).reshape(1, 1, 4)
    r = analyze_raters([a, b], staple=False)
    np.testing.assert_array_equal(r.majority.ravel(), [0, 3, 3, 3])  # background wins a 1–1 tie
    np.testing.assert_array_equal(r.dissensus.ravel(), [3, 3, 3, 0])
    np.testing.assert_array_equal(r.consensus.ravel(), [0, 0, 0, 3])
    np.testing.assert_array_equal(r.majority_votes.ravel(), [1, 1, 1, 2])


def test_fleiss_kappa_published_example():
    # Fleiss (1971) as worked on Wikipedia "Fleiss' kappa": 10 subjects, 14 raters, 5 categories, κ = 0.210.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    assert round(fleiss_kappa(table), 3) == 0.210
    perfect = [[5, 0, 0], [0, 5, 0], [0, 0, 5], [5, 0, 0]]
    assert fleiss_kappa(perfect) == pytest.approx(1.0)
    assert math.isnan(fleiss_kappa([[4, 0], [4, 0]]))  # every rating in one category: undefined
    with pytest.raises(InvalidInput, match="same number of raters"):
        fleiss_kappa([[3, 0], [2, 0]])
    with pytest.raises(InvalidInput, match="whole numbers"):
        fleiss_kappa([[1.5, 0.5], [2, 0]])


def test_class_kappa_with_roi_and_general_helper_agree():
    raters = random_raters(4, 3, seed=3, shape=(6, 9, 9))
    roi = np.zeros(raters[0].shape, bool)
    roi[1:5, 2:8, 1:7] = True
    a = analyze_raters(raters, roi=roi, staple=False)
    stack = np.stack(raters)
    for v in a.labels[1:]:
        n_yes = (stack == v).sum(axis=0)[roi]
        np.testing.assert_allclose(a.fleiss_kappa[v], fleiss_by_formula(n_yes, 4), rtol=1e-10)
        np.testing.assert_allclose(a.fleiss_kappa[v], fleiss_kappa(np.stack([n_yes, 4 - n_yes], 1)), rtol=1e-10)
    same = analyze_raters([raters[0]] * 3, staple=False)
    assert all(kappa == pytest.approx(1.0) for kappa in same.fleiss_kappa.values())
    with pytest.raises(InvalidInput, match="region of interest is empty"):
        analyze_raters(raters, roi=np.zeros_like(roi), staple=False)


def test_dice_nan_when_both_raters_lack_the_class():
    a = np.zeros((2, 3, 3), np.uint8)
    b = a.copy()
    a[0, :2, :2] = 1
    b[0, :2, :1] = 1
    a[1, 0, 0] = 2  # only rater a draws 2
    r = analyze_raters([a, b], names=["ann", "bob"], labels={"liver": 1, "spleen": 2, "kidney": 9}, staple=False)
    dice = {row["label"]: row["dice"] for row in r.pairwise_dice}
    assert dice[1] == pytest.approx(2 * 2 / 6) and dice[2] == 0.0 and math.isnan(dice[9])
    assert r.missing_labels == {2: ["bob"], 9: ["ann", "bob"]}
    assert r.label_names == {0: "background", 1: "liver", 2: "spleen", 9: "kidney"}
    assert math.isnan(r.fleiss_kappa[9])
    rows = r.agreement_rows()
    assert all(tuple(row) == AGREEMENT_COLUMNS for row in rows)
    assert [row["kind"] for row in rows] == ["dice"] * 3 + ["fleiss_kappa"] * 3
    assert rows[0] == {
        "kind": "dice",
        "label": 1,
        "name": "liver",
        "rater_a": "ann",
        "rater_b": "bob",
        "value": pytest.approx(2 / 3),
    }


def test_staple_equals_simpleitk_called_directly():
    raters = random_raters(3, 4, seed=5, shape=(8, 9, 10), noise=0.15)
    a = analyze_raters(raters, workers=2)
    for ci, v in enumerate(a.labels):
        f = sitk.STAPLEImageFilter()
        f.SetForegroundValue(1.0)
        prob = f.Execute([sitk.GetImageFromArray((r == v).astype(np.uint8)) for r in raters])
        np.testing.assert_allclose(a.staple_probability[ci], sitk.GetArrayFromImage(prob), atol=1e-6)
        if v:
            np.testing.assert_allclose(a.sensitivity[v], f.GetSensitivity(), rtol=1e-9)
            np.testing.assert_allclose(a.specificity[v], f.GetSpecificity(), rtol=1e-9)
    # multi-label STAPLE on the same maps renumbered 0..C-1, undecided voxels replaced by the majority vote
    values, codes = np.unique(np.stack(raters), return_inverse=True)
    codes = codes.reshape(len(raters), *raters[0].shape).astype(np.uint8)
    fused = sitk.GetArrayFromImage(sitk.MultiLabelSTAPLE([sitk.GetImageFromArray(m) for m in codes], 200))
    want = np.where(fused == 200, a.majority, values[np.minimum(fused, len(values) - 1)])
    np.testing.assert_array_equal(a.staple, want)
    assert len(a.agreement_rows()) == 3 * 3 + 3 + 2 * 3 * 3


def test_staple_flags_the_over_segmenting_rater():
    z, y, x = np.ogrid[:20, :30, :30]
    ball = ((z - 10) ** 2 + (y - 15) ** 2 + (x - 15) ** 2) <= 49
    good_a, good_b = ball.copy(), ball.copy()
    good_b[10, 15, 8] = False  # one voxel missed
    over = ndimage.binary_dilation(ball, iterations=3)
    a = analyze_raters(
        [good_a.astype(np.uint8), good_b.astype(np.uint8), over.astype(np.uint8)], names=["good a", "good b", "over"]
    )
    sens, spec = a.sensitivity[1], a.specificity[1]
    assert spec[2] == min(spec) and spec[2] < 0.9 and min(spec[:2]) > 0.999
    assert min(sens) > 0.99
    np.testing.assert_array_equal(a.staple_probability[1] > 0.5, ball)
    np.testing.assert_array_equal(a.staple, ball.astype(np.uint8))


def test_staple_on_a_class_nobody_drew_is_skipped():
    a = np.zeros((3, 4, 5), np.uint8)
    a[1, 1:3, 1:4] = 1
    b, c = a.copy(), a.copy()
    a[2, 0, 0] = 3  # only rater a draws label 3
    r = analyze_raters([a, b, c], labels={"organ": 1, "tumour": 2})
    assert np.all(r.staple_probability[r.index(2)] == 0) and all(math.isnan(v) for v in r.sensitivity[2])
    assert r.sensitivity[1] == (1.0, 1.0, 1.0) and np.isfinite(r.staple_probability).all()
    # SimpleITK's answer for a class one rater alone drew: "that rater is right, the others miss it all" at p = 1/K
    assert r.sensitivity[3] == (1.0, 0.0, 0.0)
    assert r.staple_probability[r.index(3), 2, 0, 0] == pytest.approx(1 / 3)
    assert r.missing_labels == {2: ["rater 1", "rater 2", "rater 3"], 3: ["rater 2", "rater 3"]}


def test_model_vs_raters_codes():
    a = np.array([1, 1, 0, 0, 2, 2], np.uint8).reshape(1, 1, 6)
    b = np.array([1, 1, 2, 2, 2, 2], np.uint8).reshape(1, 1, 6)
    model = np.array([1, 0, 2, 0, 2, 1], np.uint8).reshape(1, 1, 6)
    r = analyze_raters([a, b], staple=False)
    codes = model_vs_raters(model, r)
    m = ModelRaterAgreement
    want = [m.AGREE, m.MODEL_ERROR, m.DISPUTED_MODEL_OFF_MAJORITY, m.DISPUTED_MODEL_MAJORITY, m.AGREE, m.MODEL_ERROR]
    np.testing.assert_array_equal(codes.ravel(), want)
    assert codes.dtype == np.uint8
    with pytest.raises(GeometryMismatch, match="segmentation has shape"):
        model_vs_raters(model[..., :3], r)


def test_single_rater_refused_but_soft_labels_available():
    a = Volume(np.zeros((2, 3, 4), np.uint8), kind=VolumeKind.LABELS, name="case7_rater1")
    with pytest.raises(InvalidInput, match="at least 2 raters are needed to measure disagreement; got 1: case7_rater1"):
        analyze_raters([a])
    v = rater_votes([a], labels={"liver": 5})
    assert v.labels == (0, 5) and v.soft_labels.shape == (2, 2, 3, 4) and np.all(v.soft_labels[0] == 1)
    with pytest.raises(InvalidInput, match="No rater"):
        analyze_raters([])


def test_geometry_and_input_errors(caplog):
    a = Volume(np.zeros((2, 3, 4), np.uint8), spacing=(2.0, 1.0, 1.0), name="r1")
    b = dataclasses.replace(a, spacing=(3.0, 1.0, 1.0), name="r2_on_another_grid")
    with pytest.raises(GeometryMismatch, match="r2_on_another_grid does not match the grid of r1"):
        analyze_raters([a, b])
    with pytest.raises(GeometryMismatch, match="Rater 'rater 2' has shape"):
        analyze_raters([np.zeros((2, 3, 4), np.uint8), np.zeros((2, 3, 5), np.uint8)])
    with pytest.raises(InvalidInput, match="non-integer"):
        analyze_raters([np.zeros((2, 2, 2)), np.full((2, 2, 2), 0.5)])
    with pytest.raises(InvalidInput, match="negative labels"):
        analyze_raters([np.zeros((2, 2, 2), np.int8), np.full((2, 2, 2), -1, np.int8)])
    with pytest.raises(InvalidInput, match="2 rater name"):
        analyze_raters([a.data, a.data, a.data], names=["x", "y"])
    with caplog.at_level(logging.WARNING, logger="napari_segunc.uncertainty.raters"):
        r = analyze_raters([np.ones((2, 2, 2), np.uint8), np.zeros((2, 2, 2), np.uint8)], names=["x", "y"])
    assert r.missing_labels == {1: ["y"]} and "1 (label 1) in y" in caplog.text
    assert analyze_raters([a, a], staple=False).names == ("r1 #1", "r1 #2")


# ---------------------------------------------------------------------------------------------------- real data
def test_values_toy_three_raters(values_toy):
    vols = [read_volume(values_toy / "labelsTr" / f"0000_0{i}.nii.gz") for i in range(3)]
    a = analyze_raters(vols)
    masks = [v.data > 0 for v in vols]
    assert a.names == ("0000_00", "0000_01", "0000_02") and a.labels == (0, 1) and a.missing_labels == {}
    # the three raters are nested: 1016 ⊂ 5586 ⊂ 10155 voxels (a tight, a medium and a generous outline)
    assert [int(m.sum()) for m in masks] == [1016, 5586, 10155]
    assert not (masks[0] & ~masks[1]).any() and not (masks[1] & ~masks[2]).any()
    dice = {(r["rater_a"], r["rater_b"]): r["dice"] for r in a.pairwise_dice}
    assert dice[("0000_00", "0000_01")] == pytest.approx(2 * 1016 / (1016 + 5586))  # 0.308
    assert dice[("0000_00", "0000_02")] == pytest.approx(2 * 1016 / (1016 + 10155))  # 0.182
    assert dice[("0000_01", "0000_02")] == pytest.approx(2 * 5586 / (5586 + 10155))  # 0.710
    consensus, dissensus = a.consensus_mask(1), a.dissensus_mask(1)
    np.testing.assert_array_equal(consensus, masks[0])
    np.testing.assert_array_equal(dissensus, masks[2] & ~masks[0])
    # dissensus is a shell around the consensus core: it touches the core's boundary all round and fills the outline
    outer_ring = ndimage.binary_dilation(consensus) & ~consensus
    assert dissensus[outer_ring].all() and ndimage.label(dissensus)[1] == 1
    np.testing.assert_array_equal(ndimage.binary_fill_holes(dissensus), masks[2])
    dist = ndimage.distance_transform_edt(~consensus)[dissensus]
    assert dist.min() == 1 and 7 < dist.max() < 7.5 and np.median(dist) == 5
    np.testing.assert_allclose(a.vote_entropy[dissensus], scipy.stats.entropy([1, 2]), rtol=1e-6)
    assert np.all(a.vote_entropy[~dissensus] == 0)
    n_yes = np.stack(masks).sum(axis=0).ravel()
    assert a.fleiss_kappa[1] == pytest.approx(fleiss_by_formula(n_yes, 3), rel=1e-10)
    assert a.fleiss_kappa[1] == pytest.approx(0.4427, abs=1e-4)
    # STAPLE takes the middle outline as the truth: the tight rater misses 82 % of it, the generous one over-calls
    sens, spec = a.sensitivity[1], a.specificity[1]
    assert sens == pytest.approx((1016 / 5586, 1, 1), abs=1e-5) and spec == pytest.approx((1, 1, 0.98219), abs=1e-5)
    np.testing.assert_array_equal(a.majority > 0, masks[1])  # 2 of 3 votes
    np.testing.assert_array_equal(a.staple_probability[1] > 0.5, masks[1])
    np.testing.assert_array_equal(a.staple > 0, masks[1])


@pytest.fixture(scope="module")
def totalseg_pair(totalseg):
    vols = [read_volume(totalseg / f) for f in ("example_seg.nii.gz", "example_seg_fast.nii.gz")]
    return vols, analyze_raters(vols, staple=False)


def test_totalseg_two_raters(totalseg_pair, totalseg):
    vols, a = totalseg_pair
    first, fast = (set(np.unique(v.data).tolist()) for v in vols)
    assert first - fast == {13} and fast - first == set()  # label 13: one voxel, only in the full-resolution run
    assert a.missing_labels == {13: ["example_seg_fast"]} and len(a.labels) == 42
    dice = {r["label"]: r["dice"] for r in a.pairwise_dice}
    assert 0.8 < dice[5] < 1 and dice[5] == pytest.approx(0.9814, abs=1e-4)  # liver
    assert dice[13] == 0.0 and min(d for lab, d in dice.items() if lab != 13) > 0.8
    assert a.fleiss_kappa[5] == pytest.approx(0.9792, abs=1e-4)
    # a liver-only TotalSegmentator run as "the model": everything else the raters agree on becomes model error
    model = read_volume(totalseg / "example_seg_roi_subset.nii.gz")
    codes = np.bincount(model_vs_raters(model, a).ravel(), minlength=4)
    assert codes.tolist() == [292964, 68809, 585, 7302]
    raters_liver = a.consensus_mask(5)
    assert (model.data[raters_liver] == 5).mean() > 0.99


def test_totalseg_staple_liver(totalseg):
    vols = [read_volume(totalseg / f) for f in ("example_seg.nii.gz", "example_seg_fast.nii.gz")]
    liver = [(v.data == 5).astype(np.uint8) for v in vols]
    a = analyze_raters(liver, names=["full", "fast"], labels={"liver": 1})
    assert a.sensitivity[1] == pytest.approx((0.9860, 0.9952), abs=1e-4)
    assert all(s > 0.998 for s in a.specificity[1])
    assert all(r["value"] > 0.97 for r in a.agreement_rows() if r["kind"] in ("dice", "fleiss_kappa"))
    assert set(itertools.chain.from_iterable(a.missing_labels.values())) == set()
