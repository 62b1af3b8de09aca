"""Named label tables (TotalSegmentator v2, AMOS22, BTCV, CURVAS) and mapping label maps between them, checked on
the shared TotalSegmentator segmentation against a brute-force remap."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segunc.cli import main
from napari_segunc.errors import InvalidInput
from napari_segunc.io import read_volume
from napari_segunc.label_tables import TABLES, map_labels, named_table
from napari_segunc.labels import parse_labels
from napari_segunc.organs import canonical_organ_name


@pytest.mark.parametrize(("name", "n"), [("totalsegmentator", 117), ("amos22", 15), ("btcv", 13), ("curvas", 3)])
def test_tables_are_whole_and_in_the_one_vocabulary(name, n):
    table = named_table(name)
    assert sorted(table.values()) == list(range(1, n + 1))  # every value once, none missing
    assert len({canonical_organ_name(organ) for organ in table}) == n  # no two names are one organ
    assert parse_labels(name.upper()) == table  # --labels TOTALSEGMENTATOR
    table["liver"] = 99
    assert named_table(name).get("liver") != 99  # a copy


def test_the_same_organ_has_one_name_in_every_table():
    assert {"liver", "pancreas", "spleen"} <= set(TABLES["totalsegmentator"]) & set(TABLES["amos22"]) & set(
        TABLES["btcv"]
    )
    assert TABLES["totalsegmentator"]["kidney_left"] == 3 and TABLES["amos22"]["kidney_left"] == 3
    assert TABLES["btcv"]["pancreas"] == 11 and TABLES["curvas"] == {"pancreas": 1, "kidney": 2, "liver": 3}


def test_unknown_table_names_the_known_ones():
    with pytest.raises(InvalidInput, match="There is no label table 'amos2'; the known ones are amos22, btcv"):
        named_table("amos2")
    with pytest.raises(InvalidInput, match="table name .totalsegmentator, amos22, btcv, curvas"):
        parse_labels("totalseg")


def test_totalsegmentator_to_curvas_equals_a_brute_force_remap(totalseg, tmp_path, capsys):
    seg = read_volume(totalseg / "example_seg.nii.gz", kind="labels").data
    brute = np.zeros(seg.shape, np.uint8)
    brute[seg == 7] = 1  # pancreas
    brute[(seg == 2) | (seg == 3)] = 2  # both kidneys → CURVAS' kidney
    brute[seg == 5] = 3  # liver
    got = map_labels(seg, named_table("totalsegmentator"), named_table("curvas"))
    assert np.array_equal(got, brute) and (brute == 2).sum() > 1000
    out = tmp_path / "curvas.nii.gz"
    args = ["relabel", str(totalseg / "example_seg.nii.gz"), "--from", "totalsegmentator", "--to", "curvas"]
    assert main([*args, "--out", str(out)]) == 0
    assert "pancreas, kidney, liver (curvas)" in capsys.readouterr().out
    assert np.array_equal(read_volume(out, kind="labels").data, brute)
    # AMOS22 → BTCV keeps each kidney; the bladder (not in BTCV) becomes background
    amos = np.array([[[1, 2, 3, 14, 10]]], np.uint8)
    assert map_labels(amos, named_table("amos22"), named_table("btcv")).tolist() == [[[1, 2, 3, 0, 11]]]


def test_relabel_refuses_a_map_from_another_table(totalseg, tmp_path, capsys):
    args = ["relabel", str(totalseg / "example_seg.nii.gz"), "--from", "curvas", "--to", "btcv"]
    assert main([*args, "--out", str(tmp_path / "x.nii.gz")]) == 2
    assert "that --from curvas does not name; is it the right table?" in capsys.readouterr().err
    with pytest.raises(InvalidInput, match="share no organ"):
        map_labels(np.ones((1, 1, 2), np.uint8), {"brain": 1}, named_table("curvas"))
