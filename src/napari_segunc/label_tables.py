"""Named label tables: the organ names and label values of the datasets and tools people bring, and mapping
label maps from one table to another.

`TABLES` holds TotalSegmentator v2 (``total``, 117 classes), AMOS22 (15), BTCV (13) and CURVAS 2024 (3); a table is
used wherever a label table is given (``--labels totalsegmentator``, `napari_segunc.labels.parse_labels`). Names are
the package's organ names (TotalSegmentator's vertebrae keep their capitals, ``vertebrae_L5``) and are compared by
`napari_segunc.organs.canonical_organ_name`, so the same organ is one name in every table.

`map_labels` moves a label map between tables by organ name: an organ of the source table takes the value of the
same organ in the target table, or of its parent there (`PARENTS`: TotalSegmentator's left and right kidneys are
CURVAS' one kidney); organs the target table lacks become background. Nothing is guessed from the values.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .errors import InvalidInput
from .organs import canonical_organ_name

__all__ = ["PARENTS", "TABLES", "map_labels", "named_table"]

#: TotalSegmentator v2, task ``total`` (TotalSegmentator's ``class_map["total"]``).
TOTALSEGMENTATOR = {
    "spleen": 1,
    "kidney_right": 2,
    "kidney_left": 3,
    "gallbladder": 4,
    "liver": 5,
    "stomach": 6,
    "pancreas": 7,
    "adrenal_gland_right": 8,
    "adrenal_gland_left": 9,
    "lung_upper_lobe_left": 10,
    "lung_lower_lobe_left": 11,
    "lung_upper_lobe_right": 12,
    "lung_middle_lobe_right": 13,
    "lung_lower_lobe_right": 14,
    "esophagus": 15,
    "trachea": 16,
    "thyroid_gland": 17,
    "small_bowel": 18,
    "duodenum": 19,
    "colon": 20,
    "urinary_bladder": 21,
    "prostate": 22,
    "kidney_cyst_left": 23,
    "kidney_cyst_right": 24,
    "sacrum": 25,
    "vertebrae_S1": 26,
    "vertebrae_L5": 27,
    "vertebrae_L4": 28,
    "vertebrae_L3": 29,
    "vertebrae_L2": 30,
    "vertebrae_L1": 31,
    "vertebrae_T12": 32,
    "vertebrae_T11": 33,
    "vertebrae_T10": 34,
    "vertebrae_T9": 35,
    "vertebrae_T8": 36,
    "vertebrae_T7": 37,
    "vertebrae_T6": 38,
    "vertebrae_T5": 39,
    "vertebrae_T4": 40,
    "vertebrae_T3": 41,
    "vertebrae_T2": 42,
    "vertebrae_T1": 43,
    "vertebrae_C7": 44,
    "vertebrae_C6": 45,
    "vertebrae_C5": 46,
    "vertebrae_C4": 47,
    "vertebrae_C3": 48,
    "vertebrae_C2": 49,
    "vertebrae_C1": 50,
    "heart": 51,
    "aorta": 52,
    "pulmonary_vein": 53,
    "brachiocephalic_trunk": 54,
    "subclavian_artery_right": 55,
    "subclavian_artery_left": 56,
    "common_carotid_artery_right": 57,
    "common_carotid_artery_left": 58,
    "brachiocephalic_vein_left": 59,
    "brachiocephalic_vein_right": 60,
    "atrial_appendage_left": 61,
    "superior_vena_cava": 62,
    "inferior_vena_cava": 63,
    "portal_vein_and_splenic_vein": 64,
    "iliac_artery_left": 65,
    "iliac_artery_right": 66,
    "iliac_vena_left": 67,
    "iliac_vena_right": 68,
    "humerus_left": 69,
    "humerus_right": 70,
    "scapula_left": 71,
    "scapula_right": 72,
    "clavicula_left": 73,
    "clavicula_right": 74,
    "femur_left": 75,
    "femur_right": 76,
    "hip_left": 77,
    "hip_right": 78,
    "spinal_cord": 79,
    "gluteus_maximus_left": 80,
    "gluteus_maximus_right": 81,
    "gluteus_medius_left": 82,
    "gluteus_medius_right": 83,
    "gluteus_minimus_left": 84,
    "gluteus_minimus_right": 85,
    "autochthon_left": 86,
    "autochthon_right": 87,
    "iliopsoas_left": 88,
    "iliopsoas_right": 89,
    "brain": 90,
    "skull": 91,
    "rib_left_1": 92,
    "rib_left_2": 93,
    "rib_left_3": 94,
    "rib_left_4": 95,
    "rib_left_5": 96,
    "rib_left_6": 97,
    "rib_left_7": 98,
    "rib_left_8": 99,
    "rib_left_9": 100,
    "rib_left_10": 101,
    "rib_left_11": 102,
    "rib_left_12": 103,
    "rib_right_1": 104,
    "rib_right_2": 105,
    "rib_right_3": 106,
    "rib_right_4": 107,
    "rib_right_5": 108,
    "rib_right_6": 109,
    "rib_right_7": 110,
    "rib_right_8": 111,
    "rib_right_9": 112,
    "rib_right_10": 113,
    "rib_right_11": 114,
    "rib_right_12": 115,
    "sternum": 116,
    "costal_cartilages": 117,
}

#: The first nine organs of AMOS22 and BTCV, numbered alike in both.
_AMOS_BTCV = {
    "spleen": 1,
    "kidney_right": 2,
    "kidney_left": 3,
    "gallbladder": 4,
    "esophagus": 5,
    "liver": 6,
    "stomach": 7,
    "aorta": 8,
    "inferior_vena_cava": 9,
}

#: AMOS22 (its dataset.json; "arota" and "postcava" read as aorta and inferior vena cava).
AMOS22 = {
    **_AMOS_BTCV,
    "pancreas": 10,
    "adrenal_gland_right": 11,
    "adrenal_gland_left": 12,
    "duodenum": 13,
    "urinary_bladder": 14,
    "prostate_uterus": 15,
}

#: BTCV (Multi-Atlas Labeling Beyond the Cranial Vault, 13 abdominal organs).
BTCV = {
    **_AMOS_BTCV,
    "portal_vein_and_splenic_vein": 10,
    "pancreas": 11,
    "adrenal_gland_right": 12,
    "adrenal_gland_left": 13,
}

#: CURVAS 2024 (one label for both kidneys).
CURVAS = {"pancreas": 1, "kidney": 2, "liver": 3}

#: Table names people type (lower case) → table.
TABLES: dict[str, dict[str, int]] = {
    "totalsegmentator": TOTALSEGMENTATOR,
    "total": TOTALSEGMENTATOR,
    "amos22": AMOS22,
    "amos": AMOS22,
    "btcv": BTCV,
    "curvas": CURVAS,
}

#: An organ → the coarser organ a table may hold instead (the kidney for each kidney, …).
PARENTS = {
    "kidney_left": "kidney",
    "kidney_right": "kidney",
    "adrenal_gland_left": "adrenal_gland",
    "adrenal_gland_right": "adrenal_gland",
    "lung_upper_lobe_left": "lung_left",
    "lung_lower_lobe_left": "lung_left",
    "lung_upper_lobe_right": "lung_right",
    "lung_middle_lobe_right": "lung_right",
    "lung_lower_lobe_right": "lung_right",
    "lung_left": "lung",
    "lung_right": "lung",
}


def named_table(name: str) -> dict[str, int]:
    """A copy of the table called `name` (`TABLES`, any case); `InvalidInput` listing the known names otherwise."""
    table = TABLES.get(str(name).strip().lower())
    if table is None:
        known = ", ".join(sorted({"totalsegmentator", "amos22", "btcv", "curvas"}))
        raise InvalidInput(f"There is no label table '{name}'; the known ones are {known}.")
    return dict(table)


def map_labels(labels: np.ndarray, source: Mapping[str, int], target: Mapping[str, int]) -> np.ndarray:
    """`labels` (values of the `source` table) with the values of the `target` table, organ by organ name.

    An organ goes to the same organ of `target`, else to its nearest parent there (`PARENTS`), else to background.
    Raises `InvalidInput` when no organ of `source` has a place in `target` (the tables share nothing).
    """
    target_by_name = {canonical_organ_name(n): int(v) for n, v in target.items()}
    lut = np.zeros(max([int(v) for v in source.values()] + [int(np.max(labels, initial=0))]) + 1, np.int64)
    moved = 0
    for name, value in source.items():
        organ = canonical_organ_name(name)
        while organ not in target_by_name and organ in PARENTS:
            organ = PARENTS[organ]
        if organ in target_by_name and int(value) > 0:
            lut[int(value)] = target_by_name[organ]
            moved += 1
    if not moved:
        raise InvalidInput("The two label tables share no organ: nothing would be left of the label map.")
    out_dtype = np.uint8 if max(target_by_name.values(), default=0) < 256 else np.uint16
    return lut[np.asarray(labels, dtype=np.int64)].astype(out_dtype)
