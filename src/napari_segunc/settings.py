"""Remembered user choices (e.g. the MedSAM2 checkpoint path): a small JSON file, written atomically.

``$SEGUNC_CONFIG_DIR/settings.json`` (default ``~/.napari-segunc/settings.json``). A missing or unreadable file is
an empty set of settings, never an error.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["get_setting", "set_setting", "settings_path"]

log = logging.getLogger(__name__)


def settings_path() -> Path:
    root = os.environ.get("SEGUNC_CONFIG_DIR")
    return Path(root) / "settings.json" if root else Path.home() / ".napari-segunc" / "settings.json"


def _read() -> dict[str, Any]:
    try:
        data = json.loads(settings_path().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def get_setting(key: str, default: Any = None) -> Any:
    return _read().get(key, default)


def set_setting(key: str, value: Any) -> None:
    from .io.writers import atomic_write

    data = _read()
    data[key] = value
    path = settings_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=1), encoding="utf-8"), overwrite=True)
    except OSError as exc:  # remembering is a convenience: never fail the action for it
        log.warning("could not save the setting %s in %s: %s", key, path, exc)
