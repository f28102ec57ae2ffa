"""Losses: the task loss, the clue regularisers, the meta-learning losses and the meta-loss cap."""

from rlan.losses.meta import AugmentationEquivarianceLoss, OutputEquivarianceLoss, loo_loss
from rlan.losses.meta_cap import MetaCap, meta_loss_cap_factor, meta_loss_cap_factor_by_value
from rlan.losses.rlan_loss import RLANLoss, build_task_loss
from rlan.losses.sparsity import SparsityRegularization
from rlan.losses.stablemax import log_stablemax, stablemax
from rlan.losses.task import FocalWeightedStablemaxLoss, WeightedStablemaxLoss, class_weights

__all__ = [
    "AugmentationEquivarianceLoss",
    "OutputEquivarianceLoss",
    "loo_loss",
    "FocalWeightedStablemaxLoss",
    "MetaCap",
    "RLANLoss",
    "SparsityRegularization",
    "WeightedStablemaxLoss",
    "build_task_loss",
    "class_weights",
    "log_stablemax",
    "meta_loss_cap_factor",
    "meta_loss_cap_factor_by_value",
    "stablemax",
]
