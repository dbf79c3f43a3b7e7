"""Axis roles of weights: what each axis of a constant means to the op that reads it.

Roles are derived from the consumer, never stored, so they cannot go stale when a pass rewrites a
node. A constant read by several ops (tied weights) has one role tuple per use.
"""

from __future__ import annotations

from .graph import Node, Value
from .ops import Op
from .types import AxisRole

O, I, S, C, X, OTHER = (
    AxisRole.OUT,
    AxisRole.IN,
    AxisRole.SPATIAL,
    AxisRole.CHANNEL,
    AxisRole.INDEX,
    AxisRole.OTHER,
)


def axis_roles(node: Node, index: int) -> tuple[AxisRole, ...] | None:
    """Roles of the axes of input `index` of `node`, or None when the input is an activation
    (not a parameter of the op) or has no channel meaning to this op."""
    v = node.inputs[index]
    rank = v.type.rank
    op = node.op
    if op is Op.CONV and index == 1:
        return (O, I, *([S] * (rank - 2)))
    if op is Op.CONV_TRANSPOSE and index == 1:
        return (I, O, *([S] * (rank - 2)))
    if op in (Op.CONV, Op.CONV_TRANSPOSE, Op.LINEAR) and index == 2:
        return (O,)
    if op is Op.LINEAR and index == 1:
        return (O, I)
    if op is Op.MATMUL and index == 1 and v.is_const and rank >= 2:
        return (*([OTHER] * (rank - 2)), I, O)
    if op in (Op.BATCH_NORM, Op.GROUP_NORM, Op.INSTANCE_NORM, Op.PRELU) and index >= 1:
        return (C,) * rank
    if op in (Op.LAYER_NORM, Op.RMS_NORM) and index >= 1:
        return (*([OTHER] * (rank - 1)), C) if rank else None
    if op is Op.GATHER and index == 0 and v.is_const and node.attrs.axis == 0 and rank == 2:
        return (X, C)  # an embedding table: rows are addressed by token ids, columns are features
    return None


def weight_uses(value: Value) -> list[tuple[Node, int, tuple[AxisRole, ...]]]:
    """Every use of a constant that gives its axes a role: (consumer, input index, roles)."""
    out = []
    for node, i in value.uses:
        roles = axis_roles(node, i)
        if roles is not None:
            out.append((node, i, roles))
    return out


def groups_of(node: Node) -> int:
    """The op's `groups` (1 for ops that have none)."""
    return int(getattr(node.attrs, "groups", 1))
