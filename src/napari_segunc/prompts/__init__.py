"""Prompts for promptable segmentation (MedSAM2): box geometry of seed 004 and the ``boxes.json`` file. Qt-free."""

from __future__ import annotations

from .boxes import (
    NO_ENLARGEMENT,
    ORGAN_ALIASES,
    Box,
    OrganPrompt,
    PromptSet,
    Strategy,
    box_on_slice,
    box_slices,
    canonical_organ_name,
    enlarge_prompt,
    enlarge_prompts,
    load_prompts,
    organ_prompt_from_mask,
    prompts_from_mask,
    prompts_from_scores,
    round_half_up,
    save_prompts,
)

__all__ = [
    "NO_ENLARGEMENT",
    "ORGAN_ALIASES",
    "Box",
    "OrganPrompt",
    "PromptSet",
    "Strategy",
    "box_on_slice",
    "box_slices",
    "canonical_organ_name",
    "enlarge_prompt",
    "enlarge_prompts",
    "load_prompts",
    "organ_prompt_from_mask",
    "prompts_from_mask",
    "prompts_from_scores",
    "round_half_up",
    "save_prompts",
]
