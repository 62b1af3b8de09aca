"""Label tables given by a user: organ names and their label values (``liver=1,spleen=4`` or a labels.json).

Qt-free and headless: the command line (``--labels``) and the docks read a user's label table here, with the same
messages.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import InvalidInput

__all__ = ["check_label_table", "parse_labels"]


def parse_labels(text: str | None) -> dict[str, int] | None:
    """``name=value,name=value``, the path of a JSON file ``{"liver": 1, ...}`` (e.g. a phantom's labels.json), or
    the name of a known table (``totalsegmentator``, ``amos22``, ``btcv``, ``curvas``: `napari_segunc.label_tables`)."""
    if not text:
        return None
    from .label_tables import TABLES, named_table

    if "=" not in text and not text.endswith(".json") and text.strip().lower() in TABLES:
        return named_table(text)
    if text.endswith(".json") or Path(text).is_file():
        try:
            mapping = json.loads(Path(text).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"{text} is not a readable JSON labels file ({exc}).") from None
        if not isinstance(mapping, dict):
            raise InvalidInput(
                f'{text} must hold one JSON object of organ names and label values, e.g. {{"liver": 1}}; it holds '
                f"a {type(mapping).__name__}."
            )
        bad = [k for k, v in mapping.items() if isinstance(v, bool) or not isinstance(v, int)]
        if bad:
            raise InvalidInput(
                f"{text}: the label value of '{bad[0]}' is {mapping[bad[0]]!r}; label values must be whole numbers "
                '(e.g. "liver": 1).'
            )
        return check_label_table({str(k): v for k, v in mapping.items()}, text)
    labels = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise InvalidInput(
                f"--labels expects name=value pairs separated by commas (liver=1,spleen=4), a labels.json or a "
                f"table name (totalsegmentator, amos22, btcv, curvas), got '{item}'."
            )
        if name.strip() in labels:
            raise InvalidInput(f"--labels names '{name.strip()}' twice; give each organ once.")
        labels[name.strip()] = int(value)
    return check_label_table(labels, "--labels")


def check_label_table(labels: dict[str, int], where: str) -> dict[str, int]:
    """Return `labels` unchanged once checked: no empty names, no negative values, no two organs on one value.

    Parameters
    ----------
    labels : dict of str to int
        Organ names and their label values. Background (0) may be listed, by any number of names.
    where : str
        Where the table comes from (a file name or ``--labels``): the start of every message.

    Raises
    ------
    InvalidInput
        An organ name is empty, a value is negative, or two organs share one (non-zero) value.
    """
    for name, value in labels.items():
        if not name.strip():
            raise InvalidInput(f"{where}: an organ name is empty (in '={value}'); give every label a name.")
        if value < 0:
            raise InvalidInput(f"{where}: '{name}' has the negative label value {value}; label values are ≥ 0.")
    by_value: dict[int, str] = {}
    for name, value in labels.items():
        if value in by_value and value != 0:
            raise InvalidInput(f"{where}: '{by_value[value]}' and '{name}' both have the label value {value}.")
        by_value[value] = name
    return labels
