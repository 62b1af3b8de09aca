"""File ▸ Open on a NIfTI file or a DICOM folder picks the SegUnc reader without napari's "choose a reader" dialog.

napari asks whenever several plugins can read a path and the user's settings name none of them
(``ViewerModel._open_or_raise_error`` raises `MultipleReaderError`, which ``QtViewer._qt_open`` turns into the
dialog). napari's builtin reader claims ``*.nii``, ``*.nii.gz``, ``*.nrrd``, ``*.mha``... and every folder, so
napari-segunc sets the preference (``settings.plugins.extension2reader``) when it is first used, unless the user chose.
The headless tests go through napari's own ``ViewerModel.open(plugin=None)``, the call File ▸ Open makes.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk

from napari_segunc.io import _npe2
from napari_segunc.io._npe2 import READER_PATTERNS, activate, prefer_segunc_reader

napari = pytest.importorskip("napari")

from napari.components import ViewerModel  # noqa: E402
from napari.errors import MultipleReaderError, ReaderPluginError  # noqa: E402
from napari.settings import NapariSettings  # noqa: E402


@pytest.fixture
def settings(monkeypatch):
    """A fresh napari settings object (never saved) as napari's settings of the session; plugins discovered."""
    import napari.settings
    from napari.plugins import _initialize_plugins

    _initialize_plugins()
    fresh = NapariSettings(config_path=None)
    monkeypatch.setattr(napari.settings, "_SETTINGS", fresh)
    return fresh


@pytest.fixture
def nifti(tmp_path):
    path = tmp_path / "ct.nii.gz"
    image = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6))
    image.SetSpacing((0.8, 0.9, 2.5))
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def dicom_folder(tmp_path):
    """A three-slice CT series written with SimpleITK (GDCM)."""
    folder = tmp_path / "series"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.2"
    for k in range(3):
        sl = sitk.GetImageFromArray(np.full((1, 8, 8), k, dtype=np.int16))
        tags = {
            "0008|0060": "CT",
            "0020|000d": uid + ".1",
            "0020|000e": uid,
            "0020|0013": str(k + 1),
            "0020|0032": f"0\\0\\{2.0 * k}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0008|0018": f"{uid}.{k + 1}",
            "0028|1052": "0",
            "0028|1053": "1",
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(sl)
    return folder


def _open(path):
    """What File ▸ Open does before any dialog: napari's reader choice (`plugin=None`)."""
    return ViewerModel().open(str(path), plugin=None)


def test_tests_never_write_the_users_napari_settings():
    import napari.settings

    assert os.environ["NAPARI_CONFIG"] == napari.settings._CFG_PATH  # set by tests/conftest.py before napari loaded


def test_napari_asks_without_a_preference_because_its_builtins_claim_the_same_paths(settings, nifti, dicom_folder):
    from napari.plugins import _npe2 as napari_npe2

    for path in (nifti, dicom_folder):
        assert set(napari_npe2.get_readers(str(path))) >= {"napari", "napari-segunc"}
        with pytest.raises(MultipleReaderError):
            _open(path)


def test_preference_opens_nifti_and_dicom_folders_with_segunc_directly(settings, nifti, dicom_folder, caplog):
    with caplog.at_level("INFO", logger=_npe2.__name__):
        assert prefer_segunc_reader() == list(READER_PATTERNS)
    assert settings.plugins.extension2reader == dict.fromkeys(READER_PATTERNS, "napari-segunc")
    assert sum("without asking" in r.getMessage() for r in caplog.records) == 1
    for path in (nifti, dicom_folder):
        (layer,) = _open(path)
        assert layer.metadata["segunc_geometry"]["shape"][0] in (3, 4)  # read by napari-segunc, geometry kept
    # once set, nothing more is changed or said
    caplog.clear()
    with caplog.at_level("INFO", logger=_npe2.__name__):
        assert prefer_segunc_reader() == []
    assert not caplog.records


@pytest.mark.filterwarnings("ignore:The legacy `DICOM` plugin is deprecated:DeprecationWarning")  # imageio, napari's
def test_a_choice_the_user_made_is_kept(settings, nifti):
    settings.plugins.extension2reader = {"*.gz": "napari", "*/": "napari", "/data/mine/*.nrrd": "napari"}
    added = prefer_segunc_reader()
    assert added == ["*.nii", "*.nrrd", "*.nhdr", "*.mha", "*.mhd"]  # *.nii.gz (by *.gz) and folders stay theirs
    assert settings.plugins.extension2reader["*.gz"] == "napari"
    assert settings.plugins.extension2reader["*/"] == "napari"
    assert "*.nii.gz" not in settings.plugins.extension2reader
    with pytest.raises(Exception, match="(?i)backend|napari"):  # napari builtins' imageio cannot read it: theirs
        _open(nifti)


def test_any_pattern_of_the_user_covering_everything_leaves_all_alone(settings):
    settings.plugins.extension2reader = {"*": "napari"}
    assert prefer_segunc_reader() == []
    assert settings.plugins.extension2reader == {"*": "napari"}


def test_other_folders_fall_back_to_naparis_dialog_with_the_remaining_reader(settings, tmp_path):
    """A folder without DICOM: SegUnc refuses it, and napari's dialog (one click) offers its other readers."""
    from napari._qt.dialogs.qt_reader_dialog import prepare_remaining_readers

    prefer_segunc_reader()
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.txt").write_text("not an image")
    with pytest.raises(ReaderPluginError) as info:
        _open(folder)
    assert info.value.reader_plugin == "napari-segunc"
    remaining = prepare_remaining_readers([str(folder)], "napari-segunc", info.value)
    assert "napari" in remaining and "napari-segunc" not in remaining


def test_the_manifest_runs_the_preference_when_the_plugin_is_first_used(settings):
    from npe2 import PluginManifest

    assert PluginManifest.from_distribution("napari-segunc").on_activate == "napari_segunc.io._npe2:activate"
    activate(None)
    assert settings.plugins.extension2reader["*.nii.gz"] == "napari-segunc"


def test_activate_never_raises(monkeypatch):
    def broken(settings=None):
        raise RuntimeError("no napari settings here")

    monkeypatch.setattr(_npe2, "prefer_segunc_reader", broken)
    activate(None)  # logged at debug level, nothing raised


@pytest.mark.gui
def test_file_open_in_the_window_shows_no_reader_dialog(make_napari_viewer, settings, nifti, dicom_folder, monkeypatch):
    """The window's File ▸ Open path (``QtViewer._qt_open``): the reader dialog is never built once the preference
    is set; the first use of a SegUnc dock sets it (npe2 activates the plugin)."""
    from napari._qt import qt_viewer

    viewer = make_napari_viewer()
    settings.plugins.extension2reader = {}
    dialogs = []
    monkeypatch.setattr(qt_viewer, "handle_gui_reading", lambda *a, **k: dialogs.append(a))
    viewer.window._qt_viewer._qt_open([str(nifti)], stack=False)
    assert len(dialogs) == 1 and not viewer.layers  # no preference yet: napari asks

    prefer_segunc_reader()
    dialogs.clear()
    for path in (nifti, dicom_folder):
        viewer.window._qt_viewer._qt_open([str(path)], stack=False)
    assert dialogs == []
    assert [layer.name for layer in viewer.layers] == ["ct", "series"]
    assert all("segunc_geometry" in layer.metadata for layer in viewer.layers)
