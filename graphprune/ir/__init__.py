"""The IR: types, ops, the SSA graph, type inference, text form and structural verification."""

from .errors import (
    ExportError,
    GraphError,
    GraphpruneError,
    ModelLoadError,
    ParseError,
    ShapeError,
    VerificationError,
)
from .graph import Graph, Node, Value
from .ops import Op
from .types import AxisRole, Dim, DType, TensorType

__all__ = [
    "AxisRole",
    "DType",
    "Dim",
    "ExportError",
    "Graph",
    "GraphError",
    "GraphpruneError",
    "ModelLoadError",
    "Node",
    "Op",
    "ParseError",
    "ShapeError",
    "TensorType",
    "Value",
    "VerificationError",
]
