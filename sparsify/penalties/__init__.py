"""Penalties: L1/L2/group/N:M/max-norm/variational-dropout configs attached to any optimizer by step hooks; torch only, no recipe."""

from sparsify.penalties.base import PenaltyConfig, penalty_from_dict
from sparsify.penalties.freeze import FrozenSupport, freeze_support_
from sparsify.penalties.group import GroupLassoProx, SparseGroupLassoProx, group_threshold_
from sparsify.penalties.l2 import L2Coupled, WeightDecay, l2_penalty
from sparsify.penalties.magnitude import (
    GradualPruning,
    PruningHandle,
    magnitude_masks,
    magnitude_prune_,
    project_to_sparsity_,
    prune_to_sparsity_,
)
from sparsify.penalties.maxnorm import MaxNorm, max_norm_
from sparsify.penalties.nm import NMProjection, check_nm, nm_project_
from sparsify.penalties.penalize import PenaltyHandle, penalize_
from sparsify.penalties.prox import L1Prox, soft_threshold, soft_threshold_
from sparsify.penalties.schedules import Schedule
from sparsify.penalties.selection import is_prunable, select_parameters
from sparsify.penalties.subgradient import L1Subgradient
from sparsify.penalties.variational import (
    VariationalDropout,
    VariationalHandle,
    variational_dropout_,
)

__all__ = [
    "GradualPruning",
    "PruningHandle",
    "magnitude_masks",
    "magnitude_prune_",
    "project_to_sparsity_",
    "prune_to_sparsity_",
    "FrozenSupport",
    "GroupLassoProx",
    "L1Prox",
    "L1Subgradient",
    "L2Coupled",
    "MaxNorm",
    "NMProjection",
    "PenaltyConfig",
    "PenaltyHandle",
    "Schedule",
    "SparseGroupLassoProx",
    "VariationalDropout",
    "VariationalHandle",
    "WeightDecay",
    "check_nm",
    "freeze_support_",
    "group_threshold_",
    "is_prunable",
    "l2_penalty",
    "max_norm_",
    "nm_project_",
    "penalize_",
    "penalty_from_dict",
    "select_parameters",
    "soft_threshold",
    "soft_threshold_",
    "variational_dropout_",
]
