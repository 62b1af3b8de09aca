"""A battery of bad and hostile invocations of every ``segunc`` subcommand, tried as a careful user would.

Each case asserts the exit code, that the one-sentence message names the culprit (file or option) and the fix, that
no traceback is printed, and that every file present before the command is byte-identical afterwards, with nothing
added: a refused command leaves no 0-byte, partial or temporary file anywhere. The full-disk and read-only cases run
on a small tmpfs, which needs root (``mount``); elsewhere they are skipped with that reason.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_segunc.cli import main


@dataclass
class Ctx:
    s: Path  # the shared study folder (inputs)
    w: Path  # this case's empty work folder
    full: Path | None = None  # a tiny tmpfs, nearly full
    ro: Path | None = None  # a read-only tmpfs


@pytest.fixture(scope="module")
def study(tmp_path_factory, totalseg) -> Path:
    """Phantom study, two ensemble members, and the bad files the cases use (made once for the module)."""
    from napari_segunc.io import read_volume, write_probabilities
    from napari_segunc.phantom import make_phantom, write_phantom

    s = tmp_path_factory.mktemp("battery")
    ph = make_phantom(seed=0, n_raters=3)
    write_phantom(ph, s)
    onehot = np.stack([(ph.truth.data == v) for v in range(6)]).astype(np.float32)
    for k, noise in enumerate((0.1, 0.2), start=1):
        p = onehot + noise
        write_probabilities(p / p.sum(0), ph.image, s / f"member{k}.nii.gz")
    nan = onehot.copy()
    nan[0, 0, 0, 0] = np.nan
    write_probabilities(nan, ph.image, s / "nan_probs.nii.gz")
    image = (s / "image.nii.gz").read_bytes()
    (s / "cut300.nii.gz").write_bytes(image[:300])
    (s / "cut_half.nii.gz").write_bytes(image[: len(image) // 2])
    corrupt = bytearray(image)
    corrupt[len(image) // 2 : len(image) // 2 + 64] = bytes(range(64))
    (s / "corrupt.nii.gz").write_bytes(bytes(corrupt))
    raw = gzip.decompress(image)
    (s / "cut.nii").write_bytes(raw[:-5000])
    (s / "empty.nii.gz").touch()
    (s / "report.nii.gz").write_text("<html><body>404 Not Found</body></html>")
    a = np.random.default_rng(0).random((10, 12, 14)).astype(np.float32)
    a[3, 4, 5] = np.nan
    a[4, 4, 4] = np.inf
    nib.save(nib.Nifti1Image(a, np.eye(4)), s / "nan_image.nii.gz")
    nib.save(nib.Nifti1Image(a, np.eye(4)), s / "nan_image.nii")
    nib.save(nib.Nifti1Image(np.zeros((10, 12), np.int16), np.eye(4)), s / "flat2d.nii.gz")
    sheared = np.diag([1.0, 1.0, 2.0, 1.0])
    sheared[0, 1] = 0.3
    nib.save(nib.Nifti1Image(np.zeros((10, 12, 14), np.int16), sheared), s / "sheared.nii.gz")
    fractional = ph.truth.data.astype(np.float32) * 0.5
    nib.save(nib.Nifti1Image(fractional.T, np.eye(4)), s / "fractional_labels.nii.gz")
    empty = np.zeros(ph.truth.shape, np.uint8)
    from napari_segunc.io import write_volume

    write_volume(ph.truth.with_data(empty, name="empty"), s / "background_a.nii.gz")
    write_volume(ph.truth.with_data(empty, name="empty"), s / "background_b.nii.gz")
    (s / "labels_str.json").write_text(json.dumps({"liver": "one"}))
    (s / "labels_list.json").write_text(json.dumps(["liver", "spleen"]))
    (s / "labels_bad.json").write_text("{liver: 1")
    (s / "a_file").write_text("I am a file, not a folder")
    with open(s / "garbage.pth", "wb") as fh:
        fh.write(np.random.default_rng(1).bytes(4096))
    (s / "not_a_manifest.csv").write_text("patient,score\n1,2\n")
    (s / "one_group.csv").write_text("case,group,organ,metric,value\nc1,g1,liver,ece,0.1\nc2,g1,liver,ece,0.2\n")
    folder = totalseg / "example_ct_dicom"
    files = sorted(folder.iterdir())
    gap, dup, notdicom = s / "dicom_gap", s / "dicom_dup", s / "no_dicom"
    for d in (gap, dup, notdicom):
        d.mkdir()
    for i, f in enumerate(files):
        if i != 9:
            shutil.copy(f, gap / f.name)
        shutil.copy(f, dup / f.name)
    _duplicate_slice(files[9], dup / "duplicate.dcm")
    (notdicom / "readme.txt").write_text("no slices here")
    read_volume(s / "image.nii.gz")  # the good inputs really are good
    return s


def _duplicate_slice(src: Path, dst: Path) -> None:
    """A second instance of one slice (same position, another SOP instance UID), as a re-sent PACS export holds."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(src))
    reader.ReadImageInformation()
    uid = reader.GetMetaData("0008|0018").strip("\x00 ").encode()
    other = uid[:-1] + (b"1" if uid[-1:] != b"1" else b"2")  # same length: the file's element lengths stay valid
    data = src.read_bytes()
    assert uid in data
    dst.write_bytes(data.replace(uid, other))


@pytest.fixture
def ctx(study, tmp_path, request, tmpfs):
    c = Ctx(s=study, w=tmp_path / "work")
    c.w.mkdir()
    needs = request.node.callspec.params.get("case").needs if hasattr(request.node, "callspec") else ""
    if needs.startswith("full"):
        c.full = tmpfs("full", f"size={needs[4:] or 256}k")
    if needs == "ro":
        c.ro = tmpfs("ro", "size=64k,ro")
    return c


def _snapshot(*folders: Path) -> dict[str, str]:
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file() or p.is_dir():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Ctx], list[str]]
    says: tuple[str, ...]  # substrings of the error message: the culprit and the fix
    code: int = 2
    needs: str = ""  # "full" or "ro": a tmpfs is mounted for the case


def C(id, argv, *says, code=2, needs=""):  # noqa: N802 - a table row
    return pytest.param(Case(id, argv, says, code, needs), id=id)


def _ph(c: Ctx) -> str:
    return str(c.s / "image.nii.gz")


CASES = [
    # ---------------------------------------------------------------- info: readers refuse what they cannot read
    C("info-missing", lambda c: ["info", str(c.s / "nope.nii.gz")], "nope.nii.gz does not exist"),
    C("info-suffix", lambda c: ["info", str(c.s / "labels.json")], "unsupported extension '.json'"),
    C("info-empty", lambda c: ["info", str(c.s / "empty.nii.gz")], "empty.nii.gz is empty (0 bytes)"),
    C("info-html", lambda c: ["info", str(c.s / "report.nii.gz")], "report.nii.gz is named .nii.gz but is not gzip"),
    C("info-cut300", lambda c: ["info", str(c.s / "cut300.nii.gz")], "cut300.nii.gz is a truncated or corrupt gzip"),
    C("info-cut-half", lambda c: ["info", str(c.s / "cut_half.nii.gz")], "cut_half.nii.gz is a truncated"),
    C("info-corrupt-gzip", lambda c: ["info", str(c.s / "corrupt.nii.gz")], "corrupt.nii.gz is a truncated or corrupt"),
    C("info-truncated-nii", lambda c: ["info", str(c.s / "cut.nii")], "cut.nii is truncated", "copy it again"),
    C(
        "info-nan-gz",
        lambda c: ["info", str(c.s / "nan_image.nii.gz")],
        "nan_image.nii.gz holds 2 NaN or infinite",
        "--replace-nonfinite",
    ),
    C("info-nan-nii", lambda c: ["info", str(c.s / "nan_image.nii")], "nan_image.nii holds 2 NaN or infinite"),
    C("info-2d", lambda c: ["info", str(c.s / "flat2d.nii.gz")], "flat2d.nii.gz is a 2D image"),
    C(
        "info-sheared",
        lambda c: ["info", str(c.s / "sheared.nii.gz")],
        "sheared.nii.gz has a sheared",
        "resample it onto an orthogonal grid",
    ),
    C(
        "info-dicom-gap",
        lambda c: ["info", str(c.s / "dicom_gap")],
        "has a gap of 4.00 mm",
        "slice(s) missing",
        "--accept-dicom-gaps",
    ),
    C(
        "info-dicom-dup",
        lambda c: ["info", str(c.s / "dicom_dup")],
        "1 file(s) in",
        "are not part of the series read",
        code=0,
    ),
    C("info-no-dicom", lambda c: ["info", str(c.s / "no_dicom")], "no_dicom contains no DICOM series"),
    # ---------------------------------------------------------------- convert: outputs checked before reading
    C("convert-onto-source", lambda c: ["convert", _ph(c), _ph(c), "--overwrite"], "image.nii.gz", "one of the inputs"),
    C(
        "convert-exists",
        lambda c: ["convert", _ph(c), str(c.s / "truth.nii.gz")],
        "truth.nii.gz already exists",
        "--overwrite",
    ),
    C("convert-under-file", lambda c: ["convert", _ph(c), str(c.s / "a_file" / "x.nii.gz")], "a_file is a file"),
    C("convert-suffix", lambda c: ["convert", _ph(c), str(c.w / "x.png")], "unsupported extension '.png'"),
    C(
        "convert-corrupt-input",
        lambda c: ["convert", str(c.s / "corrupt.nii.gz"), str(c.w / "x.nrrd")],
        "corrupt.nii.gz is a truncated",
    ),
    C(
        "convert-full-disk",
        lambda c: ["convert", _ph(c), str(c.full / "x.nii")],
        "Not enough free space",
        "the outputs need at least 1.5 MB",
        needs="full",
    ),
    C(
        "convert-disk-fills",
        lambda c: ["convert", _ph(c), str(c.full / "x.nii.gz")],
        "Cannot write",
        "x.nii.gz: the disk is full",
        needs="full600",
    ),
    C("convert-read-only", lambda c: ["convert", _ph(c), str(c.ro / "x.nii.gz")], "read-only", needs="ro"),
    # ---------------------------------------------------------------- phantom
    C("phantom-zero-raters", lambda c: ["phantom", str(c.w / "p"), "--raters", "0"], "--raters must be between"),
    C("phantom-into-file", lambda c: ["phantom", str(c.s / "a_file")], "a_file is a file"),
    C("phantom-exists", lambda c: ["phantom", str(c.s)], "image.nii.gz already exists", "--overwrite"),
    C("phantom-full-disk", lambda c: ["phantom", str(c.full / "p")], "free space", needs="full"),
    C("phantom-read-only", lambda c: ["phantom", str(c.ro / "p")], "read-only", needs="ro"),
    # ---------------------------------------------------------------- uncertainty
    C(
        "unc-top-q",
        lambda c: ["uncertainty", "--member", str(c.s / "member1.nii.gz"), "--out", str(c.w / "o"), "--top-q", "1.5"],
        "--top-q must lie strictly between 0 and 1",
    ),
    C(
        "unc-top-q-zero",
        lambda c: ["uncertainty", "--member", str(c.s / "member1.nii.gz"), "--out", str(c.w / "o"), "--top-q", "0"],
        "--top-q",
    ),
    C("unc-no-member", lambda c: ["uncertainty", "--out", str(c.w / "o")], "at least one ensemble member"),
    C("unc-bad-group", lambda c: ["uncertainty", "--group", "rater1", "--out", str(c.w / "o")], "NAME:PATH"),
    C(
        "unc-labels-str",
        lambda c: [
            "uncertainty",
            "--member",
            str(c.s / "member1.nii.gz"),
            "--out",
            str(c.w / "o"),
            "--labels",
            str(c.s / "labels_str.json"),
        ],
        "labels_str.json",
        "'liver' is 'one'",
    ),
    C(
        "unc-labels-list",
        lambda c: [
            "uncertainty",
            "--member",
            str(c.s / "member1.nii.gz"),
            "--out",
            str(c.w / "o"),
            "--labels",
            str(c.s / "labels_list.json"),
        ],
        "labels_list.json",
        "holds a list",
    ),
    C(
        "unc-labels-json",
        lambda c: [
            "uncertainty",
            "--member",
            str(c.s / "member1.nii.gz"),
            "--out",
            str(c.w / "o"),
            "--labels",
            str(c.s / "labels_bad.json"),
        ],
        "labels_bad.json is not a readable",
    ),
    C(
        "unc-labels-empty-name",
        lambda c: ["uncertainty", "--member", str(c.s / "member1.nii.gz"), "--out", str(c.w / "o"), "--labels", "=1"],
        "an organ name is empty",
    ),
    C(
        "unc-labels-dup",
        lambda c: [
            "uncertainty",
            "--member",
            str(c.s / "member1.nii.gz"),
            "--out",
            str(c.w / "o"),
            "--labels",
            "liver=1,spleen=1",
        ],
        "'liver' and 'spleen' both have",
    ),
    C(
        "unc-out-is-member",
        lambda c: ["uncertainty", "--member", str(c.s / "entropy.nii.gz"), "--out", str(c.s), "--overwrite"],
        "entropy.nii.gz",
        "one of the inputs",
    ),
    C(
        "unc-existing-outputs",
        lambda c: ["uncertainty", "--member", str(c.s / "member1.nii.gz"), "--out", str(c.s / "prev")],
        "prev/mean_probabilities.nii.gz already exists (and 9 more)",
    ),
    C(
        "unc-out-under-file",
        lambda c: ["uncertainty", "--member", str(c.s / "member1.nii.gz"), "--out", str(c.s / "a_file" / "o")],
        "a_file is a file",
    ),
    C(
        "unc-nan-member",
        lambda c: ["uncertainty", "--member", str(c.s / "nan_probs.nii.gz"), "--out", str(c.w / "o"), "-q"],
        "nan_probs.nii.gz holds 1 NaN",
    ),
    C(
        "unc-corrupt-member",
        lambda c: ["uncertainty", "--member", str(c.s / "corrupt.nii.gz"), "--out", str(c.w / "o"), "-q"],
        "corrupt.nii.gz is a truncated",
    ),
    C("unc-3d-member", lambda c: ["uncertainty", "--member", _ph(c), "--out", str(c.w / "o"), "-q"], "image.nii.gz"),
    C(
        "unc-full-disk",
        lambda c: ["uncertainty", "--member", str(c.s / "member1.nii.gz"), "--out", str(c.full / "o"), "-q"],
        "free space",
        needs="full",
    ),
    # ---------------------------------------------------------------- raters
    C(
        "raters-one",
        lambda c: ["raters", str(c.s / "rater_1.nii.gz"), "--out", str(c.w / "o")],
        "rater_1.nii.gz is the only rater",
    ),
    C(
        "raters-twice",
        lambda c: ["raters", str(c.s / "rater_1.nii.gz"), str(c.s / "rater_1.nii.gz"), "--out", str(c.w / "o")],
        "rater_1.nii.gz is given twice",
    ),
    C(
        "raters-background",
        lambda c: [
            "raters",
            str(c.s / "background_a.nii.gz"),
            str(c.s / "background_b.nii.gz"),
            "--out",
            str(c.w / "o"),
        ],
        "background_a.nii.gz",
        "empty",
    ),
    C(
        "raters-ct",
        lambda c: ["raters", str(c.s / "rater_1.nii.gz"), _ph(c), "--out", str(c.w / "o")],
        "image.nii.gz holds negative values",
        "not a label map",
    ),
    C(
        "raters-fractional",
        lambda c: [
            "raters",
            str(c.s / "rater_1.nii.gz"),
            str(c.s / "fractional_labels.nii.gz"),
            "--out",
            str(c.w / "o"),
        ],
        "fractional_labels.nii.gz holds fractional",
    ),
    C(
        "raters-out-is-rater",
        lambda c: [
            "raters",
            str(c.s / "consensus.nii.gz"),
            str(c.s / "rater_2.nii.gz"),
            "--out",
            str(c.s),
            "--overwrite",
        ],
        "consensus.nii.gz",
        "one of the inputs",
    ),
    C(
        "raters-existing",
        lambda c: ["raters", str(c.s / "rater_1.nii.gz"), str(c.s / "rater_2.nii.gz"), "--out", str(c.s / "prev")],
        "already exists",
        "--overwrite",
    ),
    C(
        "raters-full-disk",
        lambda c: ["raters", str(c.s / "rater_1.nii.gz"), str(c.s / "rater_2.nii.gz"), "--out", str(c.full / "o")],
        "Not enough free space",
        needs="full",
    ),
    C(
        "raters-read-only",
        lambda c: ["raters", str(c.s / "rater_1.nii.gz"), str(c.s / "rater_2.nii.gz"), "--out", str(c.ro / "o")],
        "read-only",
        needs="ro",
    ),
    # ---------------------------------------------------------------- evaluate
    C(
        "eval-suffix",
        lambda c: [
            "evaluate",
            "--probabilities",
            str(c.s / "member1.nii.gz"),
            "--rater",
            str(c.s / "rater_1.nii.gz"),
            "--out",
            str(c.w / "r.txt"),
        ],
        "r.txt",
        ".csv or .json",
    ),
    C(
        "eval-nan-probs",
        lambda c: [
            "evaluate",
            "--probabilities",
            str(c.s / "nan_probs.nii.gz"),
            "--rater",
            str(c.s / "rater_1.nii.gz"),
            "--out",
            str(c.w / "r.csv"),
        ],
        "nan_probs.nii.gz",
    ),
    C(
        "eval-float-rater",
        lambda c: [
            "evaluate",
            "--probabilities",
            str(c.s / "member1.nii.gz"),
            "--rater",
            str(c.s / "fractional_labels.nii.gz"),
            "--out",
            str(c.w / "r.csv"),
        ],
        "fractional_labels.nii.gz",
    ),
    C(
        "eval-missing-rater",
        lambda c: [
            "evaluate",
            "--probabilities",
            str(c.s / "member1.nii.gz"),
            "--rater",
            str(c.s / "nope.nii.gz"),
            "--out",
            str(c.w / "r.csv"),
        ],
        "nope.nii.gz",
    ),
    C(
        "eval-out-is-rater",
        lambda c: [
            "evaluate",
            "--probabilities",
            str(c.s / "member1.nii.gz"),
            "--rater",
            str(c.s / "labels.json"),
            "--out",
            str(c.s / "labels.json"),
            "--overwrite",
        ],
        "labels.json",
        "one of the inputs",
    ),
    C(
        "eval-plots-curvas",
        lambda c: [
            "evaluate",
            "--probabilities",
            str(c.s / "member1.nii.gz"),
            "--rater",
            str(c.s / "rater_1.nii.gz"),
            "--out",
            str(c.w / "r.csv"),
            "--mode",
            "curvas",
            "--plots",
            str(c.w / "p"),
        ],
        "--plots needs --mode native",
    ),
    # ---------------------------------------------------------------- evaluate-cohort and compare
    C(
        "cohort-columns",
        lambda c: ["evaluate-cohort", str(c.s / "not_a_manifest.csv"), "--out", str(c.w / "r.csv")],
        "not_a_manifest.csv",
        "columns case",
    ),
    C(
        "cohort-out-is-manifest",
        lambda c: [
            "evaluate-cohort",
            str(c.s / "not_a_manifest.csv"),
            "--out",
            str(c.s / "not_a_manifest.csv"),
            "--overwrite",
        ],
        "one of the inputs",
    ),
    C(
        "cohort-suffix",
        lambda c: ["evaluate-cohort", str(c.s / "not_a_manifest.csv"), "--out", str(c.w / "r")],
        ".csv or .json",
    ),
    C(
        "compare-one-group",
        lambda c: ["compare", str(c.s / "one_group.csv"), "--metric", "ece", "--out", str(c.w / "cmp")],
        "one_group.csv holds 1 group",
        "needs 2 or more",
    ),
    C(
        "compare-missing",
        lambda c: ["compare", str(c.s / "nope.csv"), "--metric", "ece", "--out", str(c.w / "cmp")],
        "nope.csv",
    ),
    # ---------------------------------------------------------------- prompts, medsam2, atlas-prompts
    C(
        "prompts-from-ct",
        lambda c: ["prompts", _ph(c), "--out", str(c.w / "b.json")],
        "image.nii.gz holds negative",
        "give the organ label map",
    ),
    C(
        "prompts-onto-mask",
        lambda c: ["prompts", str(c.s / "truth.nii.gz"), "--out", str(c.s / "truth.nii.gz"), "--overwrite"],
        "truth.nii.gz",
        "one of the inputs",
    ),
    C(
        "prompts-labels",
        lambda c: [
            "prompts",
            str(c.s / "truth.nii.gz"),
            "--out",
            str(c.w / "b.json"),
            "--labels",
            str(c.s / "labels_str.json"),
        ],
        "labels_str.json",
    ),
    C(
        "medsam2-window",
        lambda c: [
            "medsam2",
            _ph(c),
            "--from-mask",
            str(c.s / "truth.nii.gz"),
            "--out",
            str(c.w / "m"),
            "--window",
            "abc,def",
        ],
        "--window expects LOW,HIGH",
    ),
    C(
        "medsam2-window-order",
        lambda c: [
            "medsam2",
            _ph(c),
            "--from-mask",
            str(c.s / "truth.nii.gz"),
            "--out",
            str(c.w / "m"),
            "--window",
            "240,-160",
        ],
        "LOW < HIGH",
    ),
    C(
        "medsam2-garbage-ckpt",
        lambda c: [
            "medsam2",
            _ph(c),
            "--from-mask",
            str(c.s / "truth.nii.gz"),
            "--out",
            str(c.w / "m"),
            "--checkpoint",
            str(c.s / "garbage.pth"),
            "-q",
        ],
        "garbage.pth",
    ),
    C(
        "medsam2-mask-is-ct",
        lambda c: [
            "medsam2",
            _ph(c),
            "--from-mask",
            _ph(c),
            "--out",
            str(c.w / "m"),
            "--checkpoint",
            str(c.s / "garbage.pth"),
            "-q",
        ],
        "image.nii.gz",
    ),
    C(
        "medsam2-out-under-file",
        lambda c: ["medsam2", _ph(c), "--from-mask", str(c.s / "truth.nii.gz"), "--out", str(c.s / "a_file" / "m")],
        "a_file is a file",
    ),
    C(
        "clicks-organ-absent",
        lambda c: [
            "simulate-clicks",
            _ph(c),
            "--truth",
            str(c.s / "truth.nii.gz"),
            "--labels",
            "liver=1,aorta=9",
            "--checkpoint",
            str(c.s / "garbage.pth"),
            "--out",
            str(c.w / "sim"),
        ],
        "truth.nii.gz holds no voxel of aorta",
    ),
    C(
        "clicks-truth-fractional",
        lambda c: [
            "simulate-clicks",
            _ph(c),
            "--truth",
            str(c.s / "fractional_labels.nii.gz"),
            "--checkpoint",
            str(c.s / "garbage.pth"),
            "--out",
            str(c.w / "sim"),
        ],
        "fractional_labels.nii.gz",
    ),
    C(
        "clicks-negative",
        lambda c: [
            "simulate-clicks",
            _ph(c),
            "--truth",
            str(c.s / "truth.nii.gz"),
            "--clicks",
            "-1",
            "--out",
            str(c.w),
        ],
        "--clicks and --box-shift must be 0 or more",
    ),
    C(
        "clicks-out-under-file",
        lambda c: ["simulate-clicks", _ph(c), "--truth", str(c.s / "truth.nii.gz"), "--out", str(c.s / "a_file" / "s")],
        "a_file is a file",
    ),
    C(
        "resample-like-missing",
        lambda c: [
            "resample",
            str(c.s / "truth.nii.gz"),
            "--like",
            str(c.s / "nope.nii.gz"),
            "--out",
            str(c.w / "r.nii.gz"),
        ],
        "nope.nii.gz does not exist",
    ),
    C(
        "resample-onto-input",
        lambda c: ["resample", str(c.s / "truth.nii.gz"), "--like", _ph(c), "--out", _ph(c), "--overwrite"],
        "image.nii.gz",
    ),
    C(
        "dicom-seg-suffix",
        lambda c: ["export-dicom-seg", str(c.s / "dicom_dup"), str(c.s / "truth.nii.gz"), "--out", str(c.w / "s.nii")],
        "a DICOM SEG file ends in .dcm",
    ),
    C(
        "dicom-seg-from-nifti",
        lambda c: ["export-dicom-seg", _ph(c), str(c.s / "truth.nii.gz"), "--out", str(c.w / "s.dcm")],
        "is not a DICOM series",
    ),
    C(
        "dicom-seg-gap",
        lambda c: ["export-dicom-seg", str(c.s / "dicom_gap"), str(c.s / "truth.nii.gz"), "--out", str(c.w / "s.dcm")],
        "has a gap of 4.00 mm",
    ),
    C(
        "atlas-exists",
        lambda c: [
            "atlas-prompts",
            _ph(c),
            "--atlas",
            _ph(c),
            str(c.s / "truth.nii.gz"),
            "--labels",
            str(c.s / "labels.json"),
            "--out",
            str(c.s / "labels.json"),
        ],
        "labels.json",
    ),
    # ---------------------------------------------------------------- predict
    C(
        "predict-not-model",
        lambda c: ["predict", _ph(c), "--model", str(c.s / "no_dicom"), "--out", str(c.w / "o")],
        "no_dicom lacks dataset.json",
    ),
    C(
        "predict-corrupt-image",
        lambda c: ["predict", str(c.s / "cut_half.nii.gz"), "--out", str(c.w / "o")],
        "cut_half.nii.gz is a truncated",
    ),
    C("predict-out-under-file", lambda c: ["predict", _ph(c), "--out", str(c.s / "a_file" / "o")], "a_file is a file"),
    C(
        "predict-tta-and-dropout",
        lambda c: ["predict", _ph(c), "--out", str(c.w / "o"), "--tta", "flips", "--mc-dropout", "2"],
        "not both",
    ),
    C(
        "predict-full-disk",
        lambda c: ["predict", _ph(c), "--out", str(c.full / "o")],
        "Not enough free space",
        needs="full",
    ),
    C(
        "predict-nan-image",
        lambda c: ["predict", str(c.s / "nan_image.nii.gz"), "--out", str(c.w / "o")],
        "nan_image.nii.gz holds 2 NaN",
    ),
]


@pytest.fixture(scope="module")
def previous_outputs(study):
    """Results of earlier runs in the study folder (prev/), which later refused runs must leave alone."""
    prev = study / "prev"
    assert main(["uncertainty", "--member", str(study / "member1.nii.gz"), "--out", str(prev), "-q"]) == 0
    assert (
        main(
            [
                "raters",
                str(study / "rater_1.nii.gz"),
                str(study / "rater_2.nii.gz"),
                "--out",
                str(prev),
                "--no-staple",
                "--overwrite",
            ]
        )
        == 0
    )
    shutil.copy(prev / "entropy.nii.gz", study / "entropy.nii.gz")
    shutil.copy(prev / "consensus.nii.gz", study / "consensus.nii.gz")
    return prev


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_cleanly(case: Case, ctx: Ctx, previous_outputs, capsys, monkeypatch):
    monkeypatch.delenv("SEGUNC_MEDSAM2_CHECKPOINT", raising=False)
    argv = case.argv(ctx)
    before = _snapshot(ctx.s, ctx.w, *(p for p in (ctx.full, ctx.ro) if p))
    code = main(argv)
    err = capsys.readouterr().err
    assert code == case.code, f"exit {code} for {argv}: {err}"
    assert "Traceback" not in err
    for text in case.says:
        assert text in err, f"{text!r} not in: {err}"
    assert err.count("error:") == (1 if code else 0), err
    assert code or "warning:" in err, err
    after = _snapshot(ctx.s, ctx.w, *(p for p in (ctx.full, ctx.ro) if p))
    assert after == before, f"files changed: {set(after.items()) ^ set(before.items())}"


def test_battery_size():
    """The issue asks for at least 60 cases over every subcommand."""
    commands = {c.values[0].argv(Ctx(Path("/s"), Path("/w"), Path("/f"), Path("/r")))[0] for c in CASES}
    assert len(CASES) >= 60
    assert commands >= {
        "info",
        "convert",
        "phantom",
        "uncertainty",
        "raters",
        "evaluate",
        "evaluate-cohort",
        "compare",
        "prompts",
        "medsam2",
        "atlas-prompts",
        "simulate-clicks",
        "resample",
        "export-dicom-seg",
        "predict",
    }


def _interrupt_after(n: int, real):
    """`real`, but Ctrl-C arrives on its `n`-th call (after the earlier calls wrote their files)."""
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize("n", [1, 4, 12])
def test_ctrl_c_while_writing_leaves_only_complete_files(study, tmp_path, capsys, monkeypatch, n):
    """Ctrl-C while the maps of two groups are being written: exit 130, 'interrupted', and no file at all."""
    import napari_segunc.io.writers as writers

    monkeypatch.setattr(writers, "atomic_write", _interrupt_after(n, writers.atomic_write))
    out = tmp_path / "out"
    members = ["--group", f"a:{study / 'member1.nii.gz'}", "--group", f"b:{study / 'member2.nii.gz'}"]
    code = main(["uncertainty", *members, "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 130 and "segunc uncertainty: interrupted" in err and "Traceback" not in err
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no staging folder left beside it either


def test_ctrl_c_into_an_existing_folder_keeps_what_was_there(study, tmp_path, capsys, monkeypatch):
    import napari_segunc.io.writers as writers

    out = tmp_path / "study"
    assert main(["phantom", str(out), "--raters", "2"]) == 0
    before = _snapshot(out)
    monkeypatch.setattr(writers, "atomic_write", _interrupt_after(3, writers.atomic_write))
    assert main(["phantom", str(out), "--raters", "2", "--seed", "5", "--overwrite"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert _snapshot(out) == before  # the earlier study is whole, not half replaced
