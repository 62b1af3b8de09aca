"""The synthetic abdominal phantom: determinism, anatomy, HU values, simulated raters and writing it to disk."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy import ndimage

from napari_segunc.errors import InvalidInput
from napari_segunc.io import read_volume
from napari_segunc.phantom import DEFAULT_SHAPE, DEFAULT_SPACING, LABELS, make_phantom, write_phantom
from napari_segunc.volume import Modality, VolumeKind

HU = {"liver": 100, "spleen": 110, "pancreas": 90}


@pytest.fixture(scope="module")
def study():
    return make_phantom(seed=0)


@pytest.fixture(scope="module")
def small():
    return make_phantom(seed=3, shape=(24, 56, 72))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _centroid(labels: np.ndarray, name: str) -> np.ndarray:
    return np.argwhere(labels == LABELS[name]).mean(axis=0)  # (z, y, x) voxel indices


def _arrays(s):
    return [s.image.data, s.truth.data, *(r.data for r in s.raters)]


def test_same_seed_is_byte_identical_and_other_seeds_differ(study):
    again = make_phantom(seed=0)
    for a, b in zip(_arrays(study), _arrays(again), strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    other = make_phantom(seed=1)
    assert not np.array_equal(study.truth.data, other.truth.data)
    assert not np.array_equal(study.image.data, other.image.data)
    assert not np.array_equal(study.raters[0].data, other.raters[0].data)
    # anatomy varies by roughly ±10 %, not wildly
    for name, value in LABELS.items():
        n0, n1 = np.count_nonzero(study.truth.data == value), np.count_nonzero(other.truth.data == value)
        assert 0.5 < n1 / n0 < 2.0, name


def test_volumes_metadata(study):
    img, truth = study.image, study.truth
    assert img.shape == truth.shape == DEFAULT_SHAPE == (48, 112, 144)
    assert img.spacing == DEFAULT_SPACING == (3.0, 2.5, 2.5)
    assert img.data.dtype == np.int16 and img.kind is VolumeKind.INTENSITY and img.modality is Modality.CT
    assert img.name == "phantom_ct" and truth.name == "truth" and truth.data.dtype == np.uint8
    assert truth.kind is VolumeKind.LABELS
    assert [r.name for r in study.raters] == ["rater_1", "rater_2", "rater_3"]
    for v in (img, truth, *study.raters):
        assert v.source is None and v.orientation == "LPS" and v.origin == img.origin and v.spacing == img.spacing
        assert v.shape == img.shape
    for r in study.raters:
        assert r.kind is VolumeKind.LABELS and r.data.dtype == np.uint8
        assert set(np.unique(r.data)) == {0, *LABELS.values()}
    assert set(np.unique(truth.data)) == {0, *LABELS.values()}
    assert study.labels == LABELS == {"liver": 1, "kidney_right": 2, "kidney_left": 3, "spleen": 4, "pancreas": 5}
    assert study.seed == 0
    # centred near 0 mm in x and y
    centre = np.asarray(img.origin) + (np.asarray(img.shape) - 1) / 2 * np.asarray(img.spacing)
    assert np.allclose(centre[1:], 0.0, atol=3.0)


def test_hounsfield_units(study):
    img, truth = study.image.data.astype(float), study.truth.data
    for name, hu in HU.items():
        assert abs(np.median(img[truth == LABELS[name]]) - hu) <= 20, name
    kidneys = np.isin(truth, [LABELS["kidney_right"], LABELS["kidney_left"]])
    assert 120 <= np.median(img[kidneys]) <= 180
    corners = np.concatenate([img[:, :4, :4].ravel(), img[:, -4:, -4:].ravel()])
    assert abs(np.median(corners) + 1000) <= 5 and corners.max() < -900
    nz, ny, nx = img.shape
    spine = img[:, ny // 2 :, nx // 2 - 6 : nx // 2 + 7]
    assert np.all(spine.max(axis=(1, 2)) > 300)  # bone at the posterior midline in every slice
    # lower-HU marrow between the cortical shells of the vertebral body, along the midline
    profiles = img[:, ny // 2 :, nx // 2 - 1 : nx // 2 + 2].mean(axis=2)
    shell_marrow_shell = 0
    for profile in profiles:
        hi = np.flatnonzero(profile > 450)
        if hi.size and np.any((profile[hi[0] : hi[-1]] > 150) & (profile[hi[0] : hi[-1]] < 400)):
            shell_marrow_shell += 1
    assert shell_marrow_shell >= nz // 2
    sub_fat = img[(truth == 0) & (img > -200) & (img < -30)]
    assert abs(np.median(sub_fat) + 95) < 20  # fat around -100 HU


@pytest.mark.parametrize("which", ["study", "small"])
def test_anatomy_orientation(which, request):
    truth = request.getfixturevalue(which).truth.data
    c = {name: _centroid(truth, name) for name in LABELS}
    kidneys = (c["kidney_right"] + c["kidney_left"]) / 2
    assert c["liver"][2] < c["spleen"][2]  # patient's right = low x
    assert c["kidney_right"][2] < c["kidney_left"][2]
    assert c["kidney_right"][2] < truth.shape[2] / 2 < c["kidney_left"][2]
    assert kidneys[1] > c["pancreas"][1]  # kidneys posterior to the pancreas
    assert c["spleen"][1] > c["liver"][1]  # spleen posterior-lateral, liver anterior
    assert c["liver"][0] > kidneys[0] and c["spleen"][0] > kidneys[0]  # upper organs are superior
    assert c["liver"][0] > truth.shape[0] / 2
    n_liver = np.count_nonzero(truth == LABELS["liver"])
    assert all(n_liver > 4 * np.count_nonzero(truth == LABELS[n]) for n in LABELS if n != "liver")
    # pancreas is elongated along x
    idx = np.argwhere(truth == LABELS["pancreas"])
    extent = (idx.max(axis=0) - idx.min(axis=0) + 1) * np.asarray(DEFAULT_SPACING)
    assert extent[2] > 2 * extent[1] and extent[2] > 2 * extent[0]


@pytest.mark.parametrize("kwargs", [{}, {"shape": (24, 56, 72)}, {"shape": (16, 16, 16)}, {"n_raters": 5, "seed": 7}])
def test_every_organ_in_truth_and_every_rater(kwargs):
    s = make_phantom(**kwargs)
    assert len(s.raters) == kwargs.get("n_raters", 3)
    for vol in (s.truth, *s.raters):
        for name, value in LABELS.items():
            assert np.count_nonzero(vol.data == value) > 0, (vol.name, name)


def test_raters_disagree_at_boundaries_only(study):
    truth = study.truth.data
    raters = np.stack([r.data for r in study.raters])
    disagree = np.any(raters != raters[0], axis=0)
    near, inside_deep = np.zeros(truth.shape, bool), {}
    for value in LABELS.values():
        m = truth == value
        d_in, d_out = ndimage.distance_transform_edt(m), ndimage.distance_transform_edt(~m)
        near |= (m & (d_in <= 2)) | (~m & (d_out <= 2))
        inside_deep[value] = m & (d_in > 2)
    assert disagree.sum() > 0.05 * np.count_nonzero(truth)
    assert np.count_nonzero(disagree & near) / np.count_nonzero(disagree) >= 0.9
    mm_outside = ndimage.distance_transform_edt(truth == 0, sampling=study.truth.spacing)
    for r in raters:
        labelled = r > 0
        assert mm_outside[labelled].max() <= 7.0  # never more than ~2.5 voxels outside the anatomy
        for value, deep in inside_deep.items():  # never inside another organ's deep interior
            assert not np.any(deep & labelled & (r != value))


def test_rater_bias_and_pancreas_harder_than_liver(study):
    truth = study.truth.data
    r1, r2, r3 = (r.data for r in study.raters)
    n_truth = np.count_nonzero(truth)
    assert np.count_nonzero(r1) < 0.95 * n_truth < n_truth < np.count_nonzero(r2) / 1.05
    assert 0.9 < np.count_nonzero(r3) / n_truth < 1.1  # noisy rater: no systematic bias
    for value in LABELS.values():
        assert np.count_nonzero(r1 == value) < np.count_nonzero(truth == value) < np.count_nonzero(r2 == value)

    def mean_pairwise(value, s):
        masks = [r.data == value for r in s.raters]
        return np.mean([_dice(a, b) for a, b in itertools.combinations(masks, 2)])

    for s in (study, make_phantom(seed=11)):
        liver, pancreas = mean_pairwise(LABELS["liver"], s), mean_pairwise(LABELS["pancreas"], s)
        assert 0.8 < liver < 0.98
        assert pancreas < liver - 0.15
        assert all(_dice(r.data == v, s.truth.data == v) > 0.3 for r in s.raters for v in LABELS.values())


def test_rater_does_not_depend_on_the_number_of_raters(study):
    five = make_phantom(seed=0, n_raters=5)
    for a, b in zip(study.raters, five.raters[:3], strict=True):
        assert np.array_equal(a.data, b.data)
    assert np.array_equal(study.image.data, five.image.data)
    assert not np.array_equal(five.raters[3].data, five.raters[0].data)  # same style, new random field
    assert np.count_nonzero(five.raters[3].data) < np.count_nonzero(five.truth.data)  # tight, like rater 1
    assert np.count_nonzero(five.raters[4].data) > np.count_nonzero(five.truth.data)  # loose, like rater 2
    assert [r.name for r in five.raters] == [f"rater_{i}" for i in range(1, 6)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_raters": 0},
        {"shape": (8, 112, 144)},
        {"shape": (48, 112)},
        {"shape": (48.5, 112, 144)},
        {"spacing": (3.0, 0.0, 2.5)},
        {"spacing": (3.0, -1.0, 2.5)},
        {"spacing": (3.0, float("nan"), 2.5)},
        {"seed": -1},
        {"seed": 1.5},
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(InvalidInput):
        make_phantom(**kwargs)


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        make_phantom(0)  # type: ignore[misc]


def test_write_phantom_round_trip(study, tmp_path):
    out = tmp_path / "new" / "phantom"
    paths = write_phantom(study, out)
    names = ["image", "truth", "rater_1", "rater_2", "rater_3"]
    assert set(paths) == {*names, "labels"}
    assert paths["labels"] == out / "labels.json"
    assert json.loads(paths["labels"].read_text()) == LABELS
    for name in names:
        assert paths[name] == out / f"{name}.nii.gz" and paths[name].is_file()
    image = read_volume(paths["image"])
    assert image.kind is VolumeKind.INTENSITY and image.modality is Modality.CT
    assert image.data.dtype == np.int16 and np.array_equal(image.data, study.image.data)
    assert np.allclose(image.spacing, study.image.spacing) and np.allclose(image.origin, study.image.origin)
    for vol in (study.truth, *study.raters):
        back = read_volume(paths[vol.name])
        assert back.kind is VolumeKind.LABELS and np.array_equal(back.data, vol.data)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values())  # no temp files left

    before = {p: p.read_bytes() for p in paths.values()}
    with pytest.raises(InvalidInput, match="already exists"):
        write_phantom(make_phantom(seed=1), out)
    assert {p: p.read_bytes() for p in paths.values()} == before

    write_phantom(study, tmp_path / "second")  # the same study gives the same bytes (gzip header has no time)
    for p in paths.values():
        assert (tmp_path / "second" / p.name).read_bytes() == before[p]

    other = make_phantom(seed=1)
    write_phantom(other, out, overwrite=True)
    assert np.array_equal(read_volume(paths["truth"]).data, other.truth.data)


def test_write_phantom_into_a_file_is_refused(study, tmp_path):
    target = tmp_path / "not_a_folder"
    target.write_text("x")
    with pytest.raises(InvalidInput, match="not a folder"):
        write_phantom(study, target)
