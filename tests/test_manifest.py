"""The napari plugin manifest and its contributions, tested headlessly through npe2 (no viewer, no canvas)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from npe2 import PluginManifest

import napari_segunc
from napari_segunc.display import WindowPreset, contrast_limits
from napari_segunc.io._npe2 import get_reader, read_layers, write_labels
from napari_segunc.phantom import make_phantom, write_phantom
from napari_segunc.samples import phantom_sample
from napari_segunc.volume import Modality, VolumeKind

REPO = Path(__file__).resolve().parents[1]
PACKAGE_MANIFEST = Path(napari_segunc.__file__).parent / "napari.yaml"


# ---------------------------------------------------------------------------------------------------- fixtures
WIDGETS = ["Open study", "Ensemble", "Uncertainty & raters", "MedSAM2", "Metrics", "Export"]


def _ras_image(path: Path) -> sitk.Image:
    """Small CT-like int16 NIfTI in RAS orientation (as most NIfTI exporters write), with a marked corner."""
    rng = np.random.default_rng(0)
    arr = rng.integers(-1000, -900, size=(6, 9, 11), dtype=np.int16)  # (k, j, i)
    arr[1:4, 2:5, 3:9] = 60  # an "organ", off-centre so that a flipped axis would show
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((12.5, -30.0, 101.0))
    image.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))  # RAS
    sitk.WriteImage(image, str(path))
    return image


@pytest.fixture
def segunc_pm(npe2pm):
    """npe2's global plugin manager (mocked by npe2's ``npe2pm`` fixture) holding only this plugin."""
    npe2pm.register(PluginManifest.from_distribution("napari-segunc"))
    return npe2pm


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory) -> dict[str, Path]:
    study = make_phantom(seed=0, n_raters=2)
    out = tmp_path_factory.mktemp("phantom")
    return {name: Path(p) for name, p in write_phantom(study, out).items()}


# ---------------------------------------------------------------------------------------------------- manifest
def test_manifest_copies_are_byte_identical():
    top = (REPO / "napari.yaml").read_bytes()
    assert top == PACKAGE_MANIFEST.read_bytes(), "napari.yaml and src/napari_segunc/napari.yaml differ"


def test_manifest_validates_from_installed_distribution():
    manifest = PluginManifest.from_distribution("napari-segunc")
    assert manifest.name == "napari-segunc"
    assert manifest.display_name == "SegUnc"
    manifest.validate_imports()
    contrib = manifest.contributions
    reader = contrib.readers[0]
    assert reader.accepts_directories
    assert set(reader.filename_patterns) == {"*.nii", "*.nii.gz", "*.nrrd", "*.nhdr", "*.mha", "*.mhd"}
    assert contrib.writers[0].layer_types == ["labels"]
    assert contrib.writers[0].filename_extensions == [".nii.gz", ".nii", ".nrrd", ".mha"]
    assert [s.display_name for s in contrib.sample_data] == ["Synthetic abdominal CT study (phantom)"]
    assert [w.display_name for w in contrib.widgets] == WIDGETS


def test_npe2_cli_validate():
    exe = Path(sys.executable).with_name("npe2")
    if not exe.exists():
        pytest.skip("npe2 console script not installed beside this Python")
    proc = subprocess.run(
        [str(exe), "validate", "napari-segunc"], capture_output=True, encoding="utf-8", errors="replace", timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_python_name_is_a_module_level_callable():
    manifest = PluginManifest.from_distribution("napari-segunc")
    for command in manifest.contributions.commands:
        module_name, _, attr = command.python_name.partition(":")
        assert "." not in attr, f"{command.python_name} is not module-level"
        obj = getattr(importlib.import_module(module_name), attr)
        assert callable(obj), command.python_name


# ---------------------------------------------------------------------------------------------------- reader
def test_get_reader_returns_none_for_what_it_cannot_read(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "fake.nii.gz").write_text("not an image")
    (tmp_path / "empty.nii").write_bytes(b"")
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "text_dir").mkdir()
    (tmp_path / "text_dir" / "a.dcm").write_text("not dicom")
    cases = [
        tmp_path / "notes.txt",
        tmp_path / "photo.png",
        tmp_path / "fake.nii.gz",
        tmp_path / "empty.nii",
        tmp_path / "missing.nii.gz",
        tmp_path / "empty_dir",
        tmp_path / "text_dir",
        [],
        None,
        42,
    ]
    for case in cases:
        arg = str(case) if isinstance(case, Path) else case
        assert get_reader(arg) is None, case


def test_get_reader_list_needs_every_path_readable(tmp_path, phantom_files):
    image = str(phantom_files["image"])
    assert get_reader([image]) is read_layers
    (tmp_path / "fake.nii.gz").write_text("not an image")
    assert get_reader([image, str(tmp_path / "fake.nii.gz")]) is None


def test_reader_gives_image_and_labels_layers_in_mm(phantom_files):
    study = make_phantom(seed=0, n_raters=2)
    paths = [str(phantom_files["image"]), str(phantom_files["rater_1"])]
    reader = get_reader(paths)
    assert callable(reader)
    (img, img_kw, img_type), (lab, lab_kw, lab_type) = reader(paths)
    assert (img_type, lab_type) == ("image", "labels")
    np.testing.assert_array_equal(img, study.image.data)
    np.testing.assert_array_equal(lab, study.raters[0].data)
    for kw in (img_kw, lab_kw):
        np.testing.assert_allclose(kw["scale"], study.image.spacing)
        np.testing.assert_allclose(kw["translate"], study.image.origin, atol=1e-4)
        assert kw["metadata"]["segunc_geometry"]["source"]["path"] in paths
    assert img_kw["contrast_limits"] == [-160.0, 240.0]  # CT opens with the abdomen window
    assert img_kw["colormap"] == "gray"
    assert lab_kw["name"] == "rater_1"


def test_reader_through_npe2(segunc_pm, phantom_files):
    import npe2

    layers = npe2.read([str(phantom_files["image"])], plugin_name="napari-segunc", stack=False)
    assert [t for *_, t in layers] == ["image"]


def test_percentile_window_for_mr(tmp_path):
    arr = np.random.default_rng(1).integers(0, 3000, size=(5, 6, 7)).astype(np.uint16)
    image = sitk.GetImageFromArray(arr)
    path = tmp_path / "mr.nrrd"
    sitk.WriteImage(image, str(path))
    ((data, kw, kind),) = get_reader(str(path))(str(path))
    assert kind == "image"
    assert kw["contrast_limits"] == list(contrast_limits(WindowPreset.PERCENTILE, data))
    assert kw["metadata"]["segunc_geometry"]["modality"] == Modality.OTHER.value


def test_reader_dicom_folder(totalseg):
    folder = totalseg / "example_ct_dicom"
    reader = get_reader(str(folder))
    assert reader is read_layers
    ((data, kw, kind),) = reader(str(folder))
    assert kind == "image" and data.ndim == 3
    assert kw["contrast_limits"] == [-160.0, 240.0]
    assert kw["metadata"]["segunc_geometry"]["source"]["format"] == "dicom"


# ---------------------------------------------------------------------------------------------------- writer
def _labels_meta(image_kwargs: dict, name: str = "segmentation") -> dict:
    """What napari passes a writer for a labels layer made on the image's grid (``as_layer_data_tuple``)."""
    return {
        "name": name,
        "scale": image_kwargs["scale"],
        "translate": image_kwargs["translate"],
        "metadata": image_kwargs["metadata"],
    }


def test_writer_restores_source_geometry_of_a_ras_nifti(tmp_path):
    src_path = tmp_path / "ct_ras.nii.gz"
    _ras_image(src_path)
    source = sitk.ReadImage(str(src_path))  # as stored (NIfTI keeps float32 spacing)
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(source.GetDirection()) == "RAS"
    ((image, kw, _),) = get_reader(str(src_path))(str(src_path))
    labels = (image > 0).astype(np.uint8) * 3  # drawn on the canonical (LPS) grid napari shows

    written = write_labels(str(tmp_path / "seg.nii.gz"), labels, _labels_meta(kw))

    assert written == [str(tmp_path / "seg.nii.gz")]
    out = sitk.ReadImage(written[0])
    assert out.GetSize() == source.GetSize()
    assert out.GetSpacing() == source.GetSpacing()
    assert out.GetOrigin() == source.GetOrigin()
    assert out.GetDirection() == source.GetDirection()
    # Voxels sit where they were drawn: the label covers the organ in the source's own index order.
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), (sitk.GetArrayFromImage(source) > 0) * 3)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_writer_through_npe2(segunc_pm, tmp_path, suffix):
    """napari picks the writer by extension (``.nii.gz`` is compound) and gets the written path back."""
    import npe2

    src_path = tmp_path / "ct_ras.nii.gz"
    _ras_image(src_path)
    source = sitk.ReadImage(str(src_path))
    ((image, kw, _),) = get_reader(str(src_path))(str(src_path))
    labels = (image > 0).astype(np.uint8)
    target = tmp_path / f"seg{suffix}"
    written = npe2.write(str(target), [(labels, _labels_meta(kw), "labels")], plugin_name="napari-segunc")
    assert written == [str(target)]
    out = sitk.ReadImage(str(target))
    # NRRD stores spacing × direction: the cosines come back within rounding of the source's.
    assert out.GetSize() == source.GetSize()
    np.testing.assert_allclose(out.GetDirection(), source.GetDirection(), atol=1e-9)
    np.testing.assert_allclose(out.GetSpacing(), source.GetSpacing(), rtol=1e-9)
    np.testing.assert_allclose(out.GetOrigin(), source.GetOrigin(), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(source) > 0)


def test_writer_never_overwrites(tmp_path):
    src_path = tmp_path / "ct_ras.nii.gz"
    _ras_image(src_path)
    ((image, kw, _),) = read_layers(str(src_path))
    target = tmp_path / "seg.nii.gz"
    target.write_bytes(b"user file")
    with pytest.raises(napari_segunc.InvalidInput, match="already exists"):
        write_labels(str(target), np.zeros_like(image, np.uint8), _labels_meta(kw))
    assert target.read_bytes() == b"user file"


def test_writer_rejects_labels_from_another_grid(tmp_path):
    src_path = tmp_path / "ct_ras.nii.gz"
    _ras_image(src_path)
    ((image, kw, _),) = read_layers(str(src_path))
    with pytest.raises(napari_segunc.GeometryMismatch, match="shape"):
        write_labels(str(tmp_path / "seg.nii.gz"), np.zeros((2, 3, 4), np.uint8), _labels_meta(kw))


def test_writer_without_geometry_uses_scale_and_translate(tmp_path):
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1, 2, 3] = 7
    meta = {"name": "drawn", "scale": (2.0, 0.5, 0.7), "translate": (-10.0, 4.0, 8.0), "metadata": {}}
    (path,) = write_labels(str(tmp_path / "drawn.mha"), labels, meta)
    out = sitk.ReadImage(path)
    assert out.GetSpacing() == pytest.approx((0.7, 0.5, 2.0))
    assert out.GetOrigin() == pytest.approx((8.0, 4.0, -10.0))
    assert out.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), labels)


# ---------------------------------------------------------------------------------------------------- sample data
def test_phantom_sample_data():
    layers = phantom_sample()
    study = make_phantom(seed=0)
    assert [t for *_, t in layers] == ["image"] + ["labels"] * len(study.raters)
    assert [kw["name"] for _, kw, _ in layers[1:]] == [f"rater_{i + 1}" for i in range(len(study.raters))]
    image_kw = layers[0][1]
    assert image_kw["contrast_limits"] == [-160.0, 240.0]
    np.testing.assert_allclose(image_kw["scale"], study.image.spacing)
    np.testing.assert_allclose(image_kw["translate"], study.image.origin)
    assert all(np.asarray(d).dtype.kind in "iu" for d, _, _ in layers[1:])
    assert study.raters[0].kind is VolumeKind.LABELS


# ---------------------------------------------------------------------------------------------------- Qt-free core
def test_core_imports_no_qt_or_napari():
    code = (
        "import sys\n"
        "import napari_segunc, napari_segunc.io, napari_segunc.display, napari_segunc.phantom, napari_segunc.cli\n"
        "import napari_segunc.demo\n"
        "import napari_segunc.io._npe2\n"
        "bad = sorted(m for m in ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'vispy')"
        " if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, encoding="utf-8", errors="replace", timeout=120
    )
    assert proc.returncode == 0, proc.stderr
