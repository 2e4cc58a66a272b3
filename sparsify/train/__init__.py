"""Train stage: penalties attached to any optimizer, and the training loop for recipes."""

from sparsify.train.config import PenaltyConfig, penalty_from_dict
from sparsify.train.debias import FrozenSupport, freeze_support_
from sparsify.train.group import GroupLassoProx, SparseGroupLassoProx, group_threshold_
from sparsify.train.l2 import L2Coupled, WeightDecay, l2_penalty
from sparsify.train.nm import NMProjection, check_nm, nm_project_
from sparsify.train.penalize import PenaltyHandle, penalize_
from sparsify.train.prox import L1Prox, soft_threshold, soft_threshold_
from sparsify.train.schedules import Schedule
from sparsify.train.selection import is_prunable, select_parameters
from sparsify.train.subgradient import L1Subgradient

__all__ = [
    "FrozenSupport",
    "GroupLassoProx",
    "L1Prox",
    "L1Subgradient",
    "L2Coupled",
    "NMProjection",
    "PenaltyConfig",
    "PenaltyHandle",
    "Schedule",
    "SparseGroupLassoProx",
    "WeightDecay",
    "check_nm",
    "freeze_support_",
    "group_threshold_",
    "is_prunable",
    "l2_penalty",
    "nm_project_",
    "penalize_",
    "penalty_from_dict",
    "select_parameters",
    "soft_threshold",
    "soft_threshold_",
]
