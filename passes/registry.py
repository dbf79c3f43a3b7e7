"""The explicit map from pipeline names to pass classes. No import-time registration anywhere."""

from __future__ import annotations

from .transform.dce import DeadCodeElimination
from .transform.fold_bn import FoldBatchNorm
from .transform.permute_channels import PermuteChannels
from .transform.prune_channels import PruneChannels
from .transform.reorder import Reorder
from .transform.sparse_permute import PermuteForSparsity
from .transform.sparsify import Sparsify

REGISTRY: dict[str, type] = {
    DeadCodeElimination.name: DeadCodeElimination,
    FoldBatchNorm.name: FoldBatchNorm,
    PruneChannels.name: PruneChannels,
    Sparsify.name: Sparsify,
    PermuteChannels.name: PermuteChannels,
    PermuteForSparsity.name: PermuteForSparsity,
    Reorder.name: Reorder,
}
