"""`segunc prompts`: a label map on disk → boxes.json equal to `prompts_from_mask` on the same organs."""

from __future__ import annotations

import json

import numpy as np

from napari_segunc.cli import main
from napari_segunc.io import read_volume
from napari_segunc.phantom import LABELS, make_phantom, write_phantom
from napari_segunc.prompts import Strategy, load_prompts, prompts_from_mask


def test_prompts_command_on_the_phantom(tmp_path, capsys):
    study = make_phantom(seed=2, n_raters=1)
    paths = write_phantom(study, tmp_path / "study")
    truth, out = paths["truth"], tmp_path / "boxes.json"
    code = main(["prompts", str(truth), "--labels", str(paths["labels"]), "--strategy", "B", "--out", str(out)])
    assert code == 0
    expected = prompts_from_mask(study.truth.data, LABELS, strategy=Strategy.B, source=f"mask:{truth}")
    assert load_prompts(out) == expected
    assert json.loads(out.read_text()) == expected.to_dict()
    printed = capsys.readouterr().out.splitlines()
    liver = expected.organ("liver")
    assert printed[0].split() == ["liver", "slices", f"{liver.z_min}..{liver.z_max},", "3", "box(es)"]
    assert printed[-1] == f"5 organ(s), strategy B → {out}"

    # enlarged, strategy A, one organ named on the command line (the others are not asked for)
    enlarged = tmp_path / "enlarged.json"
    args = ["--labels", "spleen=4", "--strategy", "A", "--enlarge", "--out", str(enlarged)]
    assert main(["prompts", str(truth), *args]) == 0
    got = load_prompts(enlarged)
    plain = prompts_from_mask(study.truth.data, {"spleen": 4}, strategy="A")
    assert [o.name for o in got.organs] == ["spleen"] and len(got.organ(4).boxes) == 1
    assert got.organ(4).z_min < plain.organ(4).z_min and got.organ(4).z_max > plain.organ(4).z_max
    assert got.strategy is Strategy.A

    # never over an existing file without --overwrite (exit 2, the file named), then with it
    before = out.read_bytes()
    assert main(["prompts", str(truth), "--strategy", "A", "--out", str(out)]) == 2
    assert "boxes.json already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["prompts", str(truth), "--strategy", "A", "--out", str(out), "--overwrite"]) == 0
    default_names = load_prompts(out)
    assert [o.name for o in default_names.organs] == [f"label_{v}" for v in sorted(LABELS.values())]


def test_prompts_command_reports_absent_organs_and_bad_input(tmp_path, capsys):
    study = make_phantom(seed=0, n_raters=1)
    study.truth.data = np.where(study.truth.data == LABELS["pancreas"], 0, study.truth.data).astype(np.uint8)
    paths = write_phantom(study, tmp_path / "study")
    out = tmp_path / "boxes.json"
    assert main(["prompts", str(paths["truth"]), "--labels", str(paths["labels"]), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "pancreas is absent" in captured.err and "4 organ(s)" in captured.out
    assert load_prompts(out).missing == ("pancreas",)
    assert read_volume(paths["truth"]).shape == load_prompts(out).shape
    assert main(["prompts", str(tmp_path / "nope.nii.gz"), "--out", str(tmp_path / "b.json")]) == 2
    assert "nope.nii.gz does not exist" in capsys.readouterr().err
    assert main(["prompts", str(paths["truth"]), "--labels", "liver", "--out", str(tmp_path / "b.json")]) == 2
    assert "--labels expects name=value" in capsys.readouterr().err
