"""Structural verification of a graph: order, use lists, arity, attributes, types, channel axes.

Every problem names the node or value, what was expected and how to fix it. All problems are
collected and reported together (the first MAX_REPORTED), so one run shows the whole damage.
"""

from __future__ import annotations

from .errors import GraphError, ShapeError
from .graph import Graph, Node
from .infer import infer_types
from .ops import SPECS, Op, SplitAttrs

MAX_REPORTED = 10


def _where(node: Node) -> str:
    return f"node {node.name!r} ({node.op.value})" if node.name else f"a {node.op.value} node"


def problems(graph: Graph) -> list[str]:
    out: list[str] = []
    defined: set[int] = set()
    names: set[str] = set()

    def claim(name: str) -> None:
        if name in names:
            out.append(f"value name %{name} is defined twice; give every value a unique name")
        names.add(name)

    for v in graph.inputs:
        claim(v.name)
        defined.add(id(v))
        if v.producer is not None or v.is_const:
            out.append(f"graph input %{v.name} must have no producer and no data; add it with Graph.add_input")
    for c in graph.constants:
        claim(c.name)
        defined.add(id(c))
        if not c.is_const:
            out.append(f"constant %{c.name} has no data; add it with Graph.add_const(name, array)")
        if c.sparsity is not None:
            out.extend(c.sparsity.problems(c.data if c.has_data else None, c.name))

    nodes = graph.nodes
    members = {id(n) for n in nodes}
    for node in nodes:
        where = _where(node)
        spec = SPECS[node.op]
        n_in = len(node.inputs)
        if n_in < spec.min_inputs or (spec.max_inputs is not None and n_in > spec.max_inputs):
            most = "any number of" if spec.max_inputs is None else f"at most {spec.max_inputs}"
            out.append(f"{where}: has {n_in} inputs, expected at least {spec.min_inputs} and {most}")
        if not isinstance(node.attrs, spec.attrs):
            out.append(f"{where}: attributes are {type(node.attrs).__name__}, expected {spec.attrs.__name__}")
            continue
        n_out = len(node.attrs.sizes) if isinstance(node.attrs, SplitAttrs) else spec.num_outputs
        if n_out is not None and len(node.outputs) != n_out:
            out.append(f"{where}: has {len(node.outputs)} outputs, expected {n_out}")
        for i, v in enumerate(node.inputs):
            if id(v) not in defined:
                how = "is not in this graph" if v.producer is not None and id(v.producer) not in members else (
                    "is used before it is defined"
                )
                out.append(
                    f"{where}: input {i} (%{v.name}) {how}; nodes must come in topological order "
                    "(call Graph.sort()) and read only values of their own graph"
                )
            if (node, i) not in v.uses:
                out.append(f"{where}: input {i} (%{v.name}) does not list this node as a use; change inputs "
                           "only through Graph.set_input / replace_all_uses")
        for k, o in enumerate(node.outputs):
            claim(o.name)
            defined.add(id(o))
            if o.producer is not node or o.index != k:
                out.append(f"{where}: output {k} (%{o.name}) does not point back to its producer")
        for v in node.inputs:
            for user, idx in v.uses:
                if id(user) not in members:
                    out.append(f"value %{v.name} lists a use by node {user.name!r} that is not in the graph; "
                               "erase nodes only with Graph.erase")
                elif user.inputs[idx] is not v:
                    out.append(f"value %{v.name} lists use {idx} of node {user.name!r}, which reads "
                               f"%{user.inputs[idx].name}")
        if node.op is not Op.OPAQUE and not any(p.startswith(where) for p in out):
            try:
                expected = infer_types(node)
            except ShapeError as e:
                out.append(str(e))
                continue
            for o, t in zip(node.outputs, expected, strict=False):
                if o.type != t:
                    out.append(
                        f"{where}: output %{o.name} has type {o.type} but its inputs give {t}; "
                        "re-run type inference (Graph.retype()) after changing shapes"
                    )
    for v in graph.outputs:
        if id(v) not in defined:
            out.append(f"graph output %{v.name} is not defined in the graph")
    if not graph.outputs:
        out.append(f"graph {graph.name!r} has no outputs; call Graph.set_outputs")
    return out


def verify(graph: Graph) -> None:
    """Raise GraphError listing every structural problem, or return None when there is none."""
    found = problems(graph)
    if found:
        shown = found[:MAX_REPORTED]
        more = f"\n  ... and {len(found) - MAX_REPORTED} more" if len(found) > MAX_REPORTED else ""
        raise GraphError(
            f"graph {graph.name!r} is malformed ({len(found)} problem(s)):\n  " + "\n  ".join(shown) + more
        )
