"""The short-schedule nnU-Net trainer the demo ensemble is trained with (``scripts/train_demo_ensemble.py``).

Two things differ from ``nnUNetTrainer``: the schedule (fewer epochs and iterations, set by the script; a checkpoint
only at the end, the script evaluates on held-out phantoms) and no mirroring, neither as augmentation nor at
inference — as nnU-Net's own ``nnUNetTrainerNoMirroring`` and TotalSegmentator do: a left–right flip turns the right
kidney into the left one and the liver's side into the spleen's, which a model must not learn to ignore (with
mirroring on, the first training run never found the right kidney or the spleen). The architecture is the plans'
own, so the exported folders name ``nnUNetTrainer`` and load anywhere.
"""

from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class DemoTrainer(nnUNetTrainer):
    # nnunetv2 inspects this signature to record the init arguments: it must be spelled out
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cpu")):  # noqa: B008  # fmt: skip
        plans.setdefault("continue_training", False)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 10
        self.num_iterations_per_epoch = 50
        self.num_val_iterations_per_epoch = 5
        self.save_every = 10**9  # only checkpoint_final
        self.initial_lr = 1e-2

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, patch, _mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, patch, None
