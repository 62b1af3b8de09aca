"""Box prompt geometry of seed 004 (§3.3.1–3.3.3), checked against hand-computed numbers, and ``boxes.json``."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from scipy import ndimage

from napari_segunc.errors import InvalidInput
from napari_segunc.phantom import LABELS, make_phantom
from napari_segunc.prompts import (
    NO_ENLARGEMENT,
    Box,
    OrganPrompt,
    PromptSet,
    Strategy,
    box_on_slice,
    box_slices,
    canonical_organ_name,
    enlarge_prompt,
    enlarge_prompts,
    load_prompts,
    organ_prompt_from_mask,
    prompts_from_mask,
    prompts_from_scores,
    round_half_up,
    save_prompts,
)


def organ(label=1, name="liver", z_min=10, z_max=30, boxes=((20, 40, 0, 59, 9),), enlargeable=True):
    return OrganPrompt(label, name, z_min, z_max, tuple(Box(*b) for b in boxes), enlargeable=enlargeable)


# --- slice choice ------------------------------------------------------------------------------------------------


def test_round_half_up_is_not_bankers_rounding():
    assert [round_half_up(v) for v in (2.5, 0.5, 1.5, 2.4999, 2.75, -0.5, 3.0)] == [3, 1, 2, 2, 3, 0, 3]
    assert round(2.5) == 2  # what Python's round would have given


@pytest.mark.parametrize(
    ("z_min", "z_max", "expected"),
    [
        (0, 5, [3]),  # (5 - 0) / 2 = 2.5 → +3 (half up)
        (10, 14, [12]),  # odd height: 4 / 2 = 2
        (10, 15, [13]),  # even height: 2.5 → 3
        (7, 7, [7]),  # one slice
        (7, 8, [8]),  # two slices: 0.5 → +1
        (7, 9, [8]),  # three slices
    ],
)
def test_box_slices_strategy_a(z_min, z_max, expected):
    assert box_slices(z_min, z_max, Strategy.A) == expected
    assert box_slices(z_min, z_max, "A") == expected


@pytest.mark.parametrize(
    ("z_min", "z_max", "expected"),
    [
        (0, 10, [3, 5, 8]),  # 2.5 → 3, 5, 7.5 → 8
        (0, 9, [2, 5, 7]),  # 2.25 → 2, 4.5 → 5, 6.75 → 7
        (20, 32, [23, 26, 29]),  # 3, 6, 9 exactly
        (7, 7, [7]),  # one slice: one box
        (7, 8, [7, 8]),  # two slices: 0.25 → 0, 0.5 → 1, 0.75 → 1
        (7, 9, [8, 9]),  # three slices: 0.5 → 1, 1, 1.5 → 2 (two boxes, not three)
        (0, 4, [1, 2, 3]),  # five slices: three boxes
    ],
)
def test_box_slices_strategy_b_and_the_cascade_strategies(z_min, z_max, expected):
    for strategy in (Strategy.B, Strategy.C, Strategy.D):
        assert box_slices(z_min, z_max, strategy) == expected


def test_box_slices_refuses_a_reversed_range_and_an_unknown_strategy():
    with pytest.raises(InvalidInput, match="5..4"):
        box_slices(5, 4, Strategy.A)
    with pytest.raises(ValueError):
        box_slices(0, 4, "E")


# --- the rectangle -----------------------------------------------------------------------------------------------


def test_box_on_slice_is_the_smallest_rectangle():
    m = np.zeros((10, 12), bool)
    m[3, 7] = m[6, 2] = m[4, 9] = True  # y = 3..6, x = 2..9
    assert box_on_slice(m) == (2, 3, 9, 6)
    m[:] = False
    m[5, 5] = True
    assert box_on_slice(m) == (5, 5, 5, 5)
    assert box_on_slice(np.zeros((4, 4), bool)) is None
    with pytest.raises(InvalidInput, match="one axial slice"):
        box_on_slice(np.zeros((2, 4, 4), bool))


def test_empty_chosen_slice_uses_the_nearest_non_empty_one():
    mask = np.zeros((12, 20, 20), bool)
    for z in range(11):
        mask[z, 2 + z : 6 + z, 3:8] = True
    mask[5] = False  # strategy A wants slice 5: 4 and 6 are equally near → the lower, 4
    p = organ_prompt_from_mask(mask, label=1, name="liver", strategy="A")
    assert (p.z_min, p.z_max) == (0, 10)
    assert p.boxes == (Box(4, 3, 6, 7, 9),)
    mask[4] = False  # now 6 (1 away) beats 3 (2 away)
    p = organ_prompt_from_mask(mask, label=1, name="liver", strategy="A")
    assert p.boxes == (Box(6, 3, 8, 7, 11),)


def test_boxes_landing_on_one_slice_are_merged():
    mask = np.zeros((11, 8, 8), bool)
    mask[0, 1:3, 1:4] = True
    mask[10, 4:6, 2:7] = True
    # B wants 3, 5, 8: 3 → 0; 5 is 5 from both 0 and 10 → 0 (tie, lower); 8 → 10
    p = organ_prompt_from_mask(mask, label=2, name="kidney_left", strategy=Strategy.B)
    assert p.boxes == (Box(0, 1, 1, 3, 2), Box(10, 2, 4, 6, 5))
    assert (p.z_min, p.z_max, p.key_z) == (0, 10, 0)
    assert organ_prompt_from_mask(np.zeros((3, 4, 4), bool), label=1, name="liver", strategy="B") is None


def random_blobs(seed: int, shape=(24, 30, 34), n_labels=4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, np.uint8)
    for label in range(1, n_labels + 1):
        field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
        out[field > np.quantile(field, 0.93)] = label
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("strategy", ["A", "B"])
def test_every_box_holds_and_touches_the_organ_on_its_slice(seed, strategy):
    label_map = random_blobs(seed)
    labels = {f"organ{v}": v for v in range(1, 5)}
    prompts = prompts_from_mask(label_map, labels, strategy=strategy)
    assert prompts.missing == ()
    for p in prompts.organs:
        mask = label_map == p.label
        zs = np.flatnonzero(mask.any(axis=(1, 2)))
        assert (p.z_min, p.z_max) == (zs[0], zs[-1])
        assert 1 <= len(p.boxes) <= (1 if strategy == "A" else 3)
        for b in p.boxes:
            sl = mask[b.z]
            inside = np.zeros_like(sl)
            inside[b.y_min : b.y_max + 1, b.x_min : b.x_max + 1] = True
            assert sl.any() and not (sl & ~inside).any()  # holds every voxel of the slice
            assert sl[b.y_min, b.x_min : b.x_max + 1].any() and sl[b.y_max, b.x_min : b.x_max + 1].any()
            assert sl[b.y_min : b.y_max + 1, b.x_min].any() and sl[b.y_min : b.y_max + 1, b.x_max].any()
        # the cropped fast path gives what the plain per-organ function gives
        assert organ_prompt_from_mask(mask, label=p.label, name=p.name, strategy=strategy) == p


def test_phantom_gives_three_boxes_per_organ_inside_the_grid():
    truth = make_phantom(seed=0, n_raters=1).truth.data
    prompts = prompts_from_mask(truth, LABELS, strategy=Strategy.B)
    assert [o.name for o in prompts.organs] == list(LABELS)
    assert [o.label for o in prompts.organs] == list(LABELS.values())
    prompts.validate_for(truth.shape)
    for o in prompts.organs:
        assert len(o.boxes) == 3 and o.key_z == o.boxes[1].z
        assert [b.z for b in o.boxes] == box_slices(o.z_min, o.z_max, "B")
        for b in o.boxes:
            assert b.x_max < truth.shape[2] and b.y_max < truth.shape[1]


def test_absent_organs_are_listed_and_logged_and_default_names(caplog):
    label_map = np.zeros((5, 6, 7), np.int16)
    label_map[1:3, 2, 3:5] = 2
    with caplog.at_level(logging.WARNING):
        prompts = prompts_from_mask(label_map, {"liver": 1, "spleen": 2, "pancreas": 9}, source="mask:x.nii.gz")
    assert [o.name for o in prompts.organs] == ["spleen"] and prompts.missing == ("liver", "pancreas")
    assert "pancreas is absent" in caplog.text and prompts.source == "mask:x.nii.gz"
    prompts = prompts_from_mask(label_map)
    only = prompts.organs
    assert len(only) == 1 and (only[0].name, only[0].label) == ("label_2", 2)
    assert only[0].boxes == (Box(1, 3, 2, 4, 2), Box(2, 3, 2, 4, 2))
    with pytest.raises(InvalidInput, match="label value of 1 or more"):
        prompts_from_mask(label_map, {"liver": 0})
    with pytest.raises(InvalidInput, match="integer array"):
        prompts_from_mask(label_map.astype(float), {"liver": 1})


def test_scores_strictly_above_the_threshold():
    scores = np.zeros((6, 8, 8), np.float32)
    scores[2, 1:4, 2:6] = 0.6
    scores[3, 0:7, 0:8] = 0.5  # exactly the threshold: not the organ
    scores[4, 5, 5] = np.nan  # NaN: not the organ
    flat = np.full((6, 8, 8), 0.5, np.float32)  # nothing strictly above: missing
    prompts = prompts_from_scores(
        {"liver": scores, "spleen": flat}, {"liver": 1, "spleen": 4}, {"liver": 0.5, "spleen": 0.5}, strategy="A"
    )
    assert prompts.organ("liver") == OrganPrompt(1, "liver", 2, 2, (Box(2, 2, 1, 5, 3),))
    assert prompts.missing == ("spleen",) and prompts.shape == (6, 8, 8)
    just_below = prompts_from_scores({"liver": scores}, {"liver": 1}, {"liver": 0.4999}, strategy="A")
    assert just_below.organ(1).z_max == 3  # the 0.5 slice counts once the threshold is below it
    with pytest.raises(InvalidInput, match="score map and a threshold"):
        prompts_from_scores({"liver": scores}, {"liver": 1}, {})


# --- enlargement (strategy D) ------------------------------------------------------------------------------------


def test_enlarged_box_numbers():
    # x 40..59: c = 49.5, e = 10, e' = 10.488; 49.5 - 10.488 + 0.5 = 39.51 → 39, 49.5 + 10.488 - 0.5 = 59.49 → 60
    # y 0..9: c = 4.5, e = 5, e' = 5.244; -0.244 → -1 → clipped to 0, 9.244 → 10
    p = enlarge_prompt(organ(boxes=((20, 40, 0, 59, 9),)), (48, 100, 100))
    assert p.boxes == (Box(20, 39, 0, 60, 10),)
    # at the far border: x 90..99 → 89..100 → clipped to 99; one voxel 5..5 → 4..6
    p = enlarge_prompt(organ(boxes=((20, 90, 5, 99, 5),)), (48, 100, 100))
    assert p.boxes == (Box(20, 89, 4, 99, 6),)
    # a square 100 × 100 box: width 106 (≈ 100 · √1.1 = 104.9, rounded outwards), centre kept
    p = enlarge_prompt(organ(boxes=((20, 100, 100, 199, 199),)), (48, 400, 400))
    assert p.boxes == (Box(20, 97, 97, 202, 202),)
    # area × 1.21: e' = 1.1 · 10 = 11; 49.5 - 11 + 0.5 = 39, 49.5 + 11 - 0.5 = 60 (exact integers stay put)
    p = enlarge_prompt(organ(boxes=((20, 40, 40, 59, 59),)), (48, 100, 100), area_factor=1.21)
    assert p.boxes == (Box(20, 39, 39, 60, 60),)


def test_enlarged_slice_range_rounds_outwards_and_clips():
    assert (lambda p: (p.z_min, p.z_max))(enlarge_prompt(organ(z_min=10, z_max=30), (48, 100, 100))) == (8, 32)
    p = enlarge_prompt(organ(z_min=10, z_max=25), (48, 100, 100))  # d = 1.5: 8.5 → 8, 26.5 → 27
    assert (p.z_min, p.z_max) == (8, 27) and [b.z for b in p.boxes] == [20]
    p = enlarge_prompt(organ(z_min=1, z_max=40), (42, 100, 100))  # d = 3.9: -2.9 → 0, 43.9 → 41
    assert (p.z_min, p.z_max) == (0, 41)
    # d = 0.3 · 10 = 3 (3.0000000000000004 in floating point): 7..23, an exact bound is not pushed outwards
    p = enlarge_prompt(organ(z_min=10, z_max=20), (48, 100, 100), height_factor=1.6)
    assert (p.z_min, p.z_max) == (7, 23)
    p = enlarge_prompt(organ(z_min=20, z_max=20), (48, 100, 100))  # one slice stays one slice
    assert (p.z_min, p.z_max) == (20, 20)
    with pytest.raises(InvalidInput, match="1 or more"):
        enlarge_prompt(organ(), (48, 100, 100), area_factor=0.9)
    with pytest.raises(InvalidInput, match="does not fit"):
        enlarge_prompt(organ(), (20, 100, 100))


@pytest.mark.parametrize("name", ["aorta", "AOR", "IVC", "postcava", "RAG", "LAG", "adrenal_gland_left"])
def test_no_enlargement_organs(name):
    assert canonical_organ_name(name) in NO_ENLARGEMENT
    vessel = organ(label=2, name=name)  # enlargeable=True on purpose: the name alone keeps it as it is
    liver = organ(label=1, name="liver")
    prompts = PromptSet((48, 100, 100), (liver, vessel), Strategy.C)
    out = enlarge_prompts(prompts)
    assert out.organ(2) == vessel and out.organ(1) != liver and out.strategy is Strategy.D
    assert enlarge_prompts(prompts, no_enlargement=()).organ(2) != vessel
    assert enlarge_prompt(organ(name=name, enlargeable=False), (48, 100, 100)) == organ(name=name, enlargeable=False)
    label_map = np.zeros((10, 10, 10), np.uint8)
    label_map[2:8, 3:6, 3:6] = 1
    made = prompts_from_mask(label_map, {name: 1}, strategy="C", enlarge=True)
    assert made.organ(1).enlargeable is False and (made.organ(1).z_min, made.organ(1).z_max) == (2, 7)


def test_strategy_d_enlarges_by_default_and_refuses_enlarge_false():
    label_map = np.zeros((30, 20, 20), np.uint8)
    label_map[5:26, 5:10, 5:10] = 1
    d = prompts_from_mask(label_map, {"liver": 1}, strategy="D")
    # slices 5..25: d = 0.1 · 20 = 2
    assert (d.organ(1).z_min, d.organ(1).z_max) == (3, 27)
    assert d == enlarge_prompts(prompts_from_mask(label_map, {"liver": 1}, strategy="C"))
    with pytest.raises(InvalidInput, match="strategy C"):
        prompts_from_mask(label_map, {"liver": 1}, strategy="D", enlarge=False)


# --- prompts, sets, validation, fingerprints ------------------------------------------------------------------------


def test_canonical_names_and_lookup():
    assert [canonical_organ_name(n) for n in ("SPL", "rki", "Lki", " GBL ", "PRO", "UTE", "Inferior vena-cava")] == [
        "spleen",
        "kidney_right",
        "kidney_left",
        "gallbladder",
        "prostate_uterus",
        "prostate_uterus",
        "inferior_vena_cava",
    ]
    s = PromptSet((48, 100, 100), (organ(),))
    assert s.organ("LIV") is s.organ(1) is s.organ("Liver")
    with pytest.raises(InvalidInput, match="no box prompt for 'spleen'"):
        s.organ("spleen")


def test_organ_prompt_validation_names_the_organ():
    with pytest.raises(InvalidInput, match="'liver'.*slice 31, outside its slice range 10..30"):
        organ(boxes=((31, 0, 0, 5, 5),))
    with pytest.raises(InvalidInput, match="'liver'.*x_min <= x_max"):
        organ(boxes=((20, 6, 0, 5, 5),))
    with pytest.raises(InvalidInput, match="'liver'.*0 <= y_min"):
        organ(boxes=((20, 0, -1, 5, 5),))
    with pytest.raises(InvalidInput, match="'liver'.*two boxes on slice 20"):
        organ(boxes=((20, 0, 0, 5, 5), (20, 1, 1, 5, 5)))
    with pytest.raises(InvalidInput, match="'liver'.*no box"):
        organ(boxes=())
    with pytest.raises(InvalidInput, match="'liver'.*slice range 30..10"):
        organ(z_min=30, z_max=10, boxes=((20, 0, 0, 5, 5),))
    with pytest.raises(InvalidInput, match="x_min .a voxel index. must be a whole number"):
        Box(1, 2.5, 0, 3, 3)


def test_key_z_and_box_order():
    p = organ(boxes=((25, 0, 0, 1, 1), (12, 0, 0, 1, 1), (18, 0, 0, 1, 1)))
    assert [b.z for b in p.boxes] == [12, 18, 25] and p.key_z == 18
    assert organ(boxes=((25, 0, 0, 1, 1), (12, 0, 0, 1, 1))).key_z == 12  # even count: the lower middle
    assert organ(boxes=((11, 0, 0, 1, 1), (12, 0, 0, 1, 1), (13, 0, 0, 1, 1), (14, 0, 0, 1, 1))).key_z == 12
    assert Box(3, 1, 2, 4, 5).as_xyxy() == [1, 2, 4, 5]


def test_fingerprint_changes_only_with_the_prompt():
    boxes = ((12, 10, 10, 20, 20), (18, 11, 10, 21, 20))
    base = organ(boxes=boxes).fingerprint()
    assert base == organ(boxes=boxes[::-1]).fingerprint() == organ(boxes=boxes, enlargeable=False).fingerprint()
    assert base == organ(boxes=tuple(tuple(np.int64(v) for v in b) for b in boxes)).fingerprint()
    assert len(base) == 64
    moved = ((12, 10, 10, 20, 20), (18, 11, 10, 21, 21))  # y_max of one box one voxel further
    changed = [
        organ(boxes=moved),
        organ(boxes=boxes, z_max=31),
        organ(boxes=boxes, name="spleen"),
        organ(boxes=boxes, label=2),
        organ(boxes=((12, 10, 10, 20, 20), (19, 11, 10, 21, 20))),
    ]
    assert all(p.fingerprint() != base for p in changed)


def test_prompt_set_replace_and_uniqueness():
    liver, spleen = organ(), organ(label=4, name="spleen")
    s = PromptSet((48, 100, 100), (liver,), Strategy.B, "user", ("spleen",))
    s2 = s.replace(spleen)
    assert s2.organs == (liver, spleen) and s2.missing == () and s.organs == (liver,)
    moved = organ(boxes=((21, 40, 0, 59, 9),))
    assert s2.replace(moved).organs == (moved, spleen)
    with pytest.raises(InvalidInput, match="each organ must appear once"):
        s2.replace(organ(label=7, name="LIV"))
    with pytest.raises(InvalidInput, match="does not fit its own 20×100×100 image"):
        PromptSet((20, 100, 100), (liver,))


def test_validate_for_another_grid(caplog):
    s = PromptSet((48, 112, 144), (organ(z_min=3, z_max=40, boxes=((12, 100, 50, 130, 90),)),))
    s.validate_for((48, 112, 144))
    with caplog.at_level(logging.WARNING):
        s.validate_for((60, 112, 144))  # still holds every box: accepted, but said
    assert "48×112×144" in caplog.text
    with pytest.raises(InvalidInput, match="made for a 48×112×144 image, this one is 48×112×128.*'liver'"):
        s.validate_for((48, 112, 128))
    with pytest.raises(InvalidInput, match="this one is 40×112×144.*slice range 3..40"):
        s.validate_for((40, 112, 144))


# --- boxes.json ------------------------------------------------------------------------------------------------------


def phantom_prompts() -> PromptSet:
    truth = make_phantom(seed=1, n_raters=1).truth.data
    return prompts_from_mask(truth, {**LABELS, "aorta": 9}, strategy="B", source="mask:truth.nii.gz")


def test_json_round_trip(tmp_path):
    prompts = phantom_prompts()
    path = save_prompts(prompts, tmp_path / "boxes.json")
    assert path == tmp_path / "boxes.json"
    loaded = load_prompts(path)
    assert loaded == prompts and loaded.missing == ("aorta",) and loaded.strategy is Strategy.B
    d = json.loads(path.read_text())
    assert d == prompts.to_dict() and d["format"] == "napari-segunc boxes" and d["version"] == 1
    first = prompts.organs[0].boxes[0]
    assert d["organs"][0]["boxes"][0] == {"z": first.z, "box": first.as_xyxy()}
    assert PromptSet.from_dict(d) == prompts
    empty = PromptSet((4, 5, 6), ())
    assert load_prompts(save_prompts(empty, tmp_path / "empty.json")) == empty


def test_save_refuses_to_overwrite(tmp_path):
    path = tmp_path / "boxes.json"
    save_prompts(PromptSet((48, 100, 100), (organ(),)), path)
    before = path.read_bytes()
    with pytest.raises(InvalidInput, match="boxes.json already exists.*overwrite"):
        save_prompts(PromptSet((48, 100, 100), (organ(z_max=31),)), path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["boxes.json"]
    save_prompts(PromptSet((48, 100, 100), (organ(z_max=31),)), path, overwrite=True)
    assert load_prompts(path).organ(1).z_max == 31


def _edit(d, change):
    change(d)
    return json.dumps(d)


GOOD = {
    "format": "napari-segunc boxes",
    "version": 1,
    "shape_zyx": [48, 100, 100],
    "strategy": "B",
    "source": "",
    "organs": [{"label": 1, "name": "liver", "z_min": 10, "z_max": 30, "boxes": [{"z": 20, "box": [1, 2, 3, 4]}]}],
}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not a JSON file"),
        ("{'liver': 1}", "is not a JSON file"),
        ("[1, 2]", "must be a JSON object"),
        (_edit(json.loads(json.dumps(GOOD)), lambda d: d.update(format="other")), "its format is 'other'"),
        (_edit(json.loads(json.dumps(GOOD)), lambda d: d.update(version=3)), "reads versions 1, 2"),
        (_edit(json.loads(json.dumps(GOOD)), lambda d: d.pop("shape_zyx")), "lacks shape_zyx"),
        (_edit(json.loads(json.dumps(GOOD)), lambda d: d.update(extra=1)), "unknown entries extra"),
        (_edit(json.loads(json.dumps(GOOD)), lambda d: d.update(strategy="Z")), "Unknown box strategy 'Z'"),
        (_edit(json.loads(json.dumps(GOOD)), lambda d: d.update(shape_zyx=[48, 100])), "three positive"),
        (_edit(json.loads(json.dumps(GOOD)), lambda d: d["organs"][0].update(z_min=-1)), "slice range -1..30"),
        (_edit(json.loads(json.dumps(GOOD)), lambda d: d["organs"][0].update(z_min=31)), "slice range 31..30"),
        (_edit(json.loads(json.dumps(GOOD)), lambda d: d["organs"][0]["boxes"][0].update(z=40)), "outside its slice"),
        (
            _edit(json.loads(json.dumps(GOOD)), lambda d: d["organs"][0]["boxes"][0].update(box=[3, 2, 1, 4])),
            "x_min <= x_max",
        ),
        (
            _edit(json.loads(json.dumps(GOOD)), lambda d: d["organs"][0]["boxes"][0].update(box=[-1, 2, 3, 4])),
            "0 <= x_min",
        ),
        (
            _edit(json.loads(json.dumps(GOOD)), lambda d: d["organs"][0]["boxes"][0].update(box=[1, 2, 3])),
            r"\[x_min, y_min, x_max, y_max\]",
        ),
        (
            _edit(json.loads(json.dumps(GOOD)), lambda d: d["organs"][0]["boxes"][0].update(box=[1, 2, 3.5, 4])),
            "x_max .a voxel index. must be a whole number",
        ),
        (
            _edit(json.loads(json.dumps(GOOD)), lambda d: d["organs"][0]["boxes"][0].update(box=[1, 2, 300, 4])),
            "does not fit its own 48×100×100 image",
        ),
        (
            _edit(
                json.loads(json.dumps(GOOD)), lambda d: d["organs"][0]["boxes"].append({"z": 20, "box": [0, 0, 1, 1]})
            ),
            "two boxes on slice 20",
        ),
        (_edit(json.loads(json.dumps(GOOD)), lambda d: d["organs"][0].pop("z_max")), "Organ entry 1 lacks z_max"),
    ],
)
def test_invalid_files_name_the_file(tmp_path, text, message):
    path = tmp_path / "my_boxes.json"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=message) as info:
        load_prompts(path)
    assert str(path) in str(info.value)


def test_good_file_loads_and_missing_paths(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(GOOD))
    assert load_prompts(path).organ("liver").boxes == (Box(20, 1, 2, 3, 4),)
    with pytest.raises(InvalidInput, match="nope.json does not exist"):
        load_prompts(tmp_path / "nope.json")
    with pytest.raises(InvalidInput, match="is a folder"):
        load_prompts(tmp_path)
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InvalidInput, match="bin.json"):
        load_prompts(tmp_path / "bin.json")
