"""Shared fixtures: the real test data in ../shared/data and small synthetic images."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """napari's settings (window geometry, and the reader preferences napari-segunc sets when it is first used, see
    `napari_segunc.io._npe2.prefer_segunc_reader`) go to a temporary file, for this process and the demo's
    subprocesses, never to the user's napari settings; napari reads ``NAPARI_CONFIG`` when its settings module is
    first imported, which no test has done yet here.

    Load triton (through torch._dynamo, which nnU-Net, torchvision and sam2 import) before any napari canvas: once
    Mesa's software OpenGL has mapped its libLLVM, loading triton's own LLVM crashes the process (SIGSEGV), while
    the other order is fine. The plugin itself guards its widgets with `keep_triton_away_from_mesa`; a test session
    mixes GUI and engine tests in one process, so it loads triton first."""
    config._segunc_napari_config = tempfile.mkdtemp(prefix="segunc-napari-config-")
    os.environ["NAPARI_CONFIG"] = os.path.join(config._segunc_napari_config, "settings.yaml")
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # torch missing or triton unusable: nothing to protect
        pass


def pytest_unconfigure(config):
    folder = getattr(config, "_segunc_napari_config", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared real data (``SEGUNC_SHARED_DATA``, default ``../shared/data`` beside the repository).

    Skips when it is absent, unless ``SEGUNC_REQUIRE_SHARED_DATA=1`` (CI), where a missing dataset fails.
    """
    root = Path(os.environ.get("SEGUNC_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not (root / "totalseg_ct").is_dir() or not (root / "values_toy").is_dir():
        msg = f"shared test data not found at {root} (set SEGUNC_SHARED_DATA)"
        if os.environ.get("SEGUNC_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def totalseg(shared_data: Path) -> Path:
    return shared_data / "totalseg_ct"


@pytest.fixture(scope="session")
def values_toy(shared_data: Path) -> Path:
    return shared_data / "values_toy"


@pytest.fixture(autouse=True)
def _private_user_folders(tmp_path_factory, monkeypatch):
    """Autosaved sessions and remembered settings go to a temporary folder, never to the user's home."""
    root = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("SEGUNC_SESSION_DIR", str(root / "sessions"))
    monkeypatch.setenv("SEGUNC_CONFIG_DIR", str(root / "config"))


@pytest.fixture
def tmpfs(tmp_path):
    """Factory: ``tmpfs(name, options)`` mounts a tmpfs (e.g. ``"size=256k"``, ``"size=64k,ro"``) at
    ``tmp_path / name`` and returns it; unmounted after the test. Mounting needs root: elsewhere the test is skipped
    with that reason (CI runs as root, so the full-disk and read-only cases run there)."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip(f"a tmpfs ({options}) needs root to mount")
        cmd = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            pytest.skip(f"could not mount a tmpfs ({options})")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], check=False)
