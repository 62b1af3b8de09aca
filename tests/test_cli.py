"""The `segunc` console script: info, convert, phantom, and its error contract (one sentence, exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from napari_segunc.cli import main
from napari_segunc.io import read_volume


@pytest.mark.parametrize("name", ["example_ct_sm.nii.gz", "example_seg_dicom.nii.gz", "example_ct_dicom"])
def test_info_json_reports_what_simpleitk_reports(totalseg, capsys, name):
    assert main(["info", str(totalseg / name), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    path = totalseg / name
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path)))
        ref = reader.Execute()
    else:
        ref = sitk.ReadImage(str(path))
    assert info["size"] == list(ref.GetSize())
    np.testing.assert_allclose(info["spacing"], ref.GetSpacing())
    np.testing.assert_allclose(info["origin"], ref.GetOrigin())
    np.testing.assert_allclose(info["direction"], ref.GetDirection())
    arr = sitk.GetArrayViewFromImage(ref)
    assert (info["min"], info["max"]) == (float(arr.min()), float(arr.max()))
    expected = {"example_ct_sm.nii.gz": "RAS", "example_seg_dicom.nii.gz": "LAS", "example_ct_dicom": "LPS"}
    assert info["orientation"] == expected[name]


def test_info_text_for_every_format(totalseg, tmp_path, capsys):
    vol = read_volume(totalseg / "example_seg.nii.gz")
    from napari_segunc.io import write_volume

    for suffix in (".nii", ".nrrd", ".mha", ".mhd"):
        out = write_volume(vol, tmp_path / f"seg{suffix}")
        assert main(["info", str(out)]) == 0
        text = capsys.readouterr().out
        assert "size         122 × 101 × 30 voxels" in text
        assert "orientation  RAS" in text and "uint8" in text
        assert "labels       [1, 2, 3" in text


def test_convert_preserves_geometry(totalseg, tmp_path, capsys):
    out = tmp_path / "ct.nrrd"
    assert main(["convert", str(totalseg / "example_ct_sm.nii.gz"), str(out)]) == 0
    a, b = sitk.ReadImage(str(totalseg / "example_ct_sm.nii.gz")), sitk.ReadImage(str(out))
    assert a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection()
    assert a.GetSpacing() == b.GetSpacing() and a.GetPixelID() == b.GetPixelID()
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))
    # a second conversion to the same name is refused, then allowed with --overwrite
    assert main(["convert", str(totalseg / "example_ct_sm.nii.gz"), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", str(totalseg / "example_ct_sm.nii.gz"), str(out), "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "nope.nii.gz", "nope.nii.gz does not exist"),
        (lambda d: (d / "a.png").write_bytes(b"x") and d / "a.png", "unsupported extension '.png'"),
        (lambda d: (d / "t.nii.gz").write_text("report") and d / "t.nii.gz", "is not gzip-compressed"),
    ],
)
def test_errors_are_one_sentence_exit_2_no_traceback(tmp_path, make, message):
    path = make(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "napari_segunc.cli", "info", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    debug = subprocess.run(
        [sys.executable, "-m", "napari_segunc.cli", "--debug", "info", str(path)],
        capture_output=True,
        text=True,
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_phantom_command_writes_the_study(tmp_path, capsys):
    assert main(["phantom", str(tmp_path / "study"), "--seed", "3", "--raters", "2"]) == 0
    names = sorted(p.name for p in (tmp_path / "study").iterdir())
    assert names == ["image.nii.gz", "labels.json", "rater_1.nii.gz", "rater_2.nii.gz", "truth.nii.gz"]
    labels = json.loads((tmp_path / "study" / "labels.json").read_text())
    truth = read_volume(tmp_path / "study" / "truth.nii.gz")
    assert set(np.unique(truth.data)) == {0, *labels.values()}
    # refusing to overwrite what is there
    assert main(["phantom", str(tmp_path / "study"), "--seed", "3", "--raters", "2"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_help_lists_every_command_on_one_line_in_an_80_column_terminal(monkeypatch, capsys):
    from napari_segunc.cli import build_parser

    monkeypatch.setenv("COLUMNS", "80")
    parser = build_parser()
    commands = list(parser._subparsers._group_actions[0].choices)  # argparse keeps its subparsers there
    assert len(commands) == 20
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line for line in lines if line.startswith("    ") and line.split()[0] in commands}
    assert sorted(listed) == sorted(commands)
    for command, line in listed.items():
        assert len(line) <= 80
        help_text = parser._subparsers._group_actions[0]._choices_actions[commands.index(command)].help
        assert line.split(None, 1)[1] == help_text  # the whole help on the command's own line


def test_info_reads_the_probability_maps_the_tool_writes(tmp_path, capsys):
    from napari_segunc.io import write_probabilities
    from napari_segunc.phantom import make_phantom

    study = make_phantom(seed=2, n_raters=1)
    rng = np.random.default_rng(0)
    p = rng.random((4, *study.image.shape)).astype(np.float32)
    p /= p.sum(axis=0)
    p[:, 3, 4, 5] = [0.5, 0.3, 0.3, 0.0]  # one voxel sums to 1.1
    path = write_probabilities(p, study.image, tmp_path / "probs.nii.gz")
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    sums = p.astype(np.float64).sum(axis=0)
    assert info["classes"] == 4 and info["canonical_shape_czyx"] == [4, *study.image.shape]
    assert info["sum_max"] == pytest.approx(float(sums.max()), abs=1e-6)
    assert (
        info["sum_max_deviation"] == pytest.approx(float(np.abs(sums - 1).max()), abs=1e-6) and info["sum_max"] > 1.09
    )
    for c, row in enumerate(info["per_class"]):
        assert (row["min"], row["max"]) == (float(p[c].min()), float(p[c].max()))
        assert row["mean"] == pytest.approx(float(p[c].mean()), rel=1e-5)
    ref = sitk.ReadImage(str(path))  # SimpleITK reads the 4D file as (x, y, z, class)
    assert info["size"] == list(ref.GetSize()[:3]) and np.allclose(info["spacing"], ref.GetSpacing()[:3])
    assert np.allclose(info["origin"], ref.GetOrigin()[:3])
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "4 classes (background first)" in text and "largest deviation from 1: 0.1" in text
