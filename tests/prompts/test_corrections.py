"""Corrections in the prompt model: clicks and slice masks, their order, their checks and their JSON form
(``boxes.json`` version 2, version 1 files still read)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_segunc.errors import InvalidInput
from napari_segunc.prompts import Box, OrganPrompt, PromptSet, load_prompts, save_prompts
from napari_segunc.prompts.corrections import Click, Correction, SliceMask, decode_runs, encode_runs


def _organ(**kw):
    args = dict(label=1, name="liver", z_min=10, z_max=30, boxes=(Box(20, 10, 10, 40, 40),))
    return OrganPrompt(**{**args, **kw})


@pytest.mark.parametrize("seed", range(6))
def test_runs_round_trip_and_match_a_brute_force_count(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((7, 9)) < [0.0, 0.1, 0.5, 0.9, 1.0, 0.3][seed]
    runs = encode_runs(mask)
    flat = mask.ravel()
    brute, value, n = [], False, 0  # alternate background/mask counts, starting with background
    for v in flat:
        if v == value:
            n += 1
        else:
            brute.append(n)
            value, n = v, 1
    brute.append(n)
    assert runs == brute and sum(runs) == mask.size
    assert np.array_equal(decode_runs(runs, mask.shape), mask)


def test_runs_that_do_not_fill_the_slice_are_refused():
    with pytest.raises(InvalidInput, match="adding up to its 2×3 voxels, they add up to 5"):
        decode_runs([2, 3], (2, 3))
    with pytest.raises(InvalidInput, match="counts ≥ 0"):
        decode_runs([7, -1], (2, 3))


def test_a_correction_is_clicks_or_one_mask():
    with pytest.raises(InvalidInput, match="either clicks or one slice mask"):
        Correction()
    m = np.zeros((4, 4), bool)
    m[1, 1] = True
    with pytest.raises(InvalidInput, match="either clicks or one slice mask"):
        Correction(clicks=(Click(1, 1, 1),), mask=SliceMask(1, m))
    with pytest.raises(InvalidInput, match="empty"):
        SliceMask(2, np.zeros((4, 4), bool))
    with pytest.raises(InvalidInput, match="2D boolean"):
        SliceMask(2, np.ones((4, 4), np.uint8))
    with pytest.raises(InvalidInput, match="whole number"):
        Click(1, 2.5, 3)
    with pytest.raises(InvalidInput, match="positive .true. or negative"):
        Click(1, 2, 3, positive="yes")
    c = Correction(clicks=(Click(12, 5, 6), Click(14, 5, 6, positive=False)))
    assert c.z == 14 and c.slices == [12, 14]  # propagation restarts from the last click's slice


def test_corrections_extend_the_range_change_the_fingerprint_and_stay_in_order():
    base = _organ()
    a = Correction(clicks=(Click(12, 20, 20),))
    b = Correction(clicks=(Click(34, 20, 20, positive=False),))
    one = base.with_correction(a)
    two = one.with_correction(b)
    assert (two.z_min, two.z_max) == (10, 34)  # widened to hold the click on slice 34
    assert two.corrections == (a, b) and two.key_z == 20  # the boxes' start stays
    prints = {p.fingerprint() for p in (base, one, two, base.with_correction(b).with_correction(a))}
    assert len(prints) == 4  # order matters
    assert two.without_corrections().fingerprint() == _organ(z_max=34).fingerprint()
    with pytest.raises(InvalidInput, match="correction on slice 40, outside its slice range 10..30; widen"):
        _organ(corrections=(Correction(clicks=(Click(40, 1, 1),)),))
    clicks_only = OrganPrompt(1, "liver", 10, 30, (), corrections=(a,))
    assert clicks_only.key_z == 12
    with pytest.raises(InvalidInput, match="has no box and no click"):
        OrganPrompt(1, "liver", 10, 30, ())
    with pytest.raises(InvalidInput, match=r"click at \(z 12, y 20, x 20\) lies outside the 48×16×16 grid"):
        PromptSet((48, 16, 16), (OrganPrompt(1, "liver", 10, 30, (), corrections=(a,)),))


def test_boxes_json_version_2_round_trip_and_version_1_still_read(tmp_path):
    mask = np.zeros((50, 60), bool)
    mask[10:20, 5:30] = True
    mask[30, 59] = True
    organ = (
        _organ()
        .with_correction(Correction(clicks=(Click(12, 20, 21), Click(25, 22, 23, positive=False))))
        .with_correction(Correction(mask=SliceMask(28, mask, source="ensemble")))
    )
    prompts = PromptSet((48, 50, 60), (organ, _organ(label=2, name="spleen")))
    path = save_prompts(prompts, tmp_path / "prompts.json")
    d = json.loads(path.read_text())
    assert d["version"] == 2 and "corrections" not in d["organs"][1]
    assert d["organs"][0]["corrections"][0] == {
        "clicks": [{"z": 12, "y": 20, "x": 21, "positive": True}, {"z": 25, "y": 22, "x": 23, "positive": False}]
    }
    stored = d["organs"][0]["corrections"][1]["mask"]
    assert stored["z"] == 28 and stored["shape_yx"] == [50, 60] and sum(stored["runs"]) == 3000
    loaded = load_prompts(path)
    assert loaded == prompts
    assert loaded.organs[0].fingerprint() == organ.fingerprint()
    assert np.array_equal(loaded.organs[0].corrections[1].mask.mask, mask)
    # a set of boxes only is still written, and read, as version 1
    boxes_only = PromptSet((48, 50, 60), (_organ(),))
    assert json.loads(save_prompts(boxes_only, tmp_path / "boxes.json").read_text())["version"] == 1
    v1 = json.loads((tmp_path / "boxes.json").read_text())
    v1["organs"][0]["corrections"] = []
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    with pytest.raises(InvalidInput, match="v1.json is not a usable box prompt file.*unknown entries corrections"):
        load_prompts(tmp_path / "v1.json")  # version 1 has no corrections


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(clicks=[]), "'clicks' is a non-empty list"),
        (lambda c: c.update(extra=1), "a correction is"),
        (lambda c: c["clicks"][0].pop("y"), "a click is"),
        (lambda c: c["clicks"][0].update(x=1.5), "whole number"),
        (lambda c: c.clear() or c.update(mask={"z": 28, "shape_yx": [50, 60], "runs": [2999]}), "add up to 2999"),
        (lambda c: c.clear() or c.update(mask={"z": 28, "shape_yx": [50], "runs": [3000]}), "shape_yx is two"),
        (lambda c: c.clear() or c.update(mask={"z": 28, "shape_yx": [50, 60], "runs": [3000]}), "is empty"),
        (lambda c: c.clear() or c.update(mask={"z": 28, "shape_yx": [5, 6], "runs": [0, 30]}), "does not fit"),
    ],
)
def test_bad_corrections_name_the_file_and_the_organ(tmp_path, change, message):
    prompts = PromptSet((48, 50, 60), (_organ().with_correction(Correction(clicks=(Click(12, 20, 21),))),))
    d = prompts.to_dict()
    change(d["organs"][0]["corrections"][0])
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(d))
    with pytest.raises(InvalidInput, match=message) as info:
        load_prompts(path)
    assert "mine.json" in str(info.value)
