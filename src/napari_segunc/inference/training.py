"""The short-schedule nnU-Net trainer the demo ensemble is trained with (``scripts/train_demo_ensemble.py``).

Three things differ from ``nnUNetTrainer``: the schedule (fewer epochs and iterations, set by the script; a checkpoint
only at the end, the script evaluates on held-out phantoms); the optimizer, nnU-Net's own ``nnUNetTrainerAdam``
(AMSGrad AdamW, poly decay) at 3e-3, because with SGD at 1e-2 a 1500-iteration schedule leaves some seeds with the
liver only (rater 1, seed 445566: pseudo Dice 0 for kidneys, spleen and pancreas after 30 epochs) while AdamW at 3e-3
finds every organ within 15 epochs (0.95 / 0.94 / 0.91 / 0.92 / 0.56, same seed); and no mirroring, neither as
augmentation nor at inference — as nnU-Net's own ``nnUNetTrainerNoMirroring`` and TotalSegmentator do: a left–right
flip turns the right kidney into the left one and the liver's side into the spleen's, which a model must not learn to
ignore (with mirroring on, the first training run never found the right kidney or the spleen). The architecture is the
plans' own, so the exported folders name ``nnUNetTrainer`` and load anywhere.
"""

from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerAdam


class DemoTrainer(nnUNetTrainerAdam):
    # nnunetv2 inspects this signature to record the init arguments: it must be spelled out
    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cpu"),  # noqa: B008
    ):
        plans.setdefault("continue_training", False)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 10
        self.num_iterations_per_epoch = 50
        self.num_val_iterations_per_epoch = 5
        self.save_every = 10**9  # only checkpoint_final
        self.initial_lr = 3e-3

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, patch, _mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, patch, None
