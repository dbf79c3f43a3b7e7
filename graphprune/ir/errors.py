"""graphprune's exception types. Every message names the file or node, what was expected, and a fix."""

from __future__ import annotations


class GraphpruneError(Exception):
    """Base of every error graphprune raises on purpose; the command prints it as one line."""


class ModelLoadError(GraphpruneError):
    """A model file or module could not be read or translated (names the file or node)."""


class GraphError(GraphpruneError):
    """The IR is structurally wrong (names the node or value)."""


class ShapeError(GraphError):
    """Shapes or dtypes do not fit an op (names the node, the shapes, what was expected)."""


class VerificationError(GraphpruneError):
    """A pass broke its contract: the graph after it does not compute what the contract promises."""


class ExportError(GraphpruneError):
    """A graph could not be written to a backend format (names the node and the limit)."""


class ParseError(GraphpruneError):
    """The text form could not be parsed (names the line and column)."""


class InterpreterError(GraphpruneError):
    """The interpreter could not run a graph: an op failed (names the node, op and input shapes) or
    the call itself was wrong (an unsupported compute dtype)."""
