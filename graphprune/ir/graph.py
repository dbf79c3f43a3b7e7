"""SSA graph: values, nodes and the graph that owns them.

Every value has exactly one definition: a graph input, a constant, or one output of one node. Use
lists are kept consistent by the only mutation path there is: `Graph.add_node`, `Graph.set_input`,
`Graph.replace_all_uses`, `Graph.erase` (and the constant/input helpers). Node operands are read-only.
Constant data is immutable: arrays are stored read-only, passes build new arrays.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import GraphError
from .ops import SPECS, NoAttrs, Op
from .sparsity import Sparsity, check_record
from .types import DType, TensorType

if TYPE_CHECKING:
    import torch


class Value:
    """An SSA value. `producer` is None for graph inputs and constants."""

    __slots__ = ("name", "type", "producer", "index", "_uses", "_data", "_loader", "_digest", "source", "sparsity")

    def __init__(self, name: str, type: TensorType) -> None:
        self.name = name
        self.type = type
        self.producer: Node | None = None
        self.index = 0  # position among the producer's outputs
        self._uses: list[tuple[Node, int]] = []
        self._data: np.ndarray | None = None
        self._loader: Callable[[], np.ndarray] | None = None
        self._digest: str | None = None  # content hash of a constant whose data is not present
        self.source: str | None = None  # provenance: the framework's name for this tensor
        # the keep mask and pattern of a sparsified weight (see sparsity.py); set through the Graph
        self.sparsity: Sparsity | None = None

    @property
    def uses(self) -> tuple[tuple[Node, int], ...]:
        """(consumer node, input position) pairs, in the order they were made."""
        return tuple(self._uses)

    @property
    def consumers(self) -> list[Node]:
        seen: dict[int, Node] = {}
        for node, _ in self._uses:
            seen.setdefault(id(node), node)
        return list(seen.values())

    @property
    def is_const(self) -> bool:
        return self._data is not None or self._loader is not None or self._digest is not None

    @property
    def has_data(self) -> bool:
        return self._data is not None or self._loader is not None

    @property
    def data(self) -> np.ndarray:
        """The constant's array (loaded on first use for lazily loaded weights)."""
        if self._data is None:
            if self._loader is None:
                if self._digest is not None:
                    raise GraphError(
                        f"constant %{self.name} has no data: it was parsed from text that elided it "
                        f"(digest {self._digest}); pass its array to gp.parse(text, weights={{...}})"
                    )
                raise GraphError(f"value %{self.name} is not a constant")
            self._data = _freeze(self._loader())
            self._loader = None
        return self._data

    def digest(self) -> str:
        """Short content hash of a constant (used by the text form for elided data)."""
        if self._data is None and self._loader is None and self._digest is not None:
            return self._digest
        arr = np.ascontiguousarray(self.data)
        h = hashlib.sha256()
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Node:
    """One op application. Inputs are read-only here: change them through the Graph."""

    __slots__ = ("op", "attrs", "name", "_inputs", "outputs", "graph")

    def __init__(self, op: Op, attrs: Any, name: str) -> None:
        self.op = op
        self.attrs = attrs
        self.name = name  # provenance (module path, ONNX node name); not required to be unique
        self._inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.graph: Graph | None = None

    @property
    def inputs(self) -> tuple[Value, ...]:
        return tuple(self._inputs)

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise GraphError(f"node {self.name!r} ({self.op.value}) has {len(self.outputs)} outputs, not one")
        return self.outputs[0]

    def __repr__(self) -> str:
        ins = ", ".join("%" + v.name for v in self._inputs)
        outs = ", ".join("%" + v.name for v in self.outputs)
        return f"{outs} = {self.op.value}({ins})"


_NAME_RE = re.compile(r"[^A-Za-z0-9_.]+")


_KEEP = object()  # replace_const_data: keep the constant's sparsity record


def _freeze(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.flags.writeable:
        arr = arr.copy() if not arr.flags.owndata else arr
        arr.flags.writeable = False
    return arr


class Graph:
    def __init__(self, name: str = "main") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self._nodes: dict[Node, None] = {}  # insertion-ordered set, kept in topological order
        self._constants: dict[str, Value] = {}
        self._names: set[str] = set()

    # ------------------------------------------------------------------ reading

    @property
    def nodes(self) -> list[Node]:
        return list(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self._nodes))

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def constants(self) -> list[Value]:
        return list(self._constants.values())

    def values(self) -> Iterator[Value]:
        """Every value: inputs, constants, then node outputs in order."""
        yield from self.inputs
        yield from self._constants.values()
        for node in self._nodes:
            yield from node.outputs

    def value(self, name: str) -> Value:
        for v in self.values():
            if v.name == name:
                return v
        raise GraphError(f"graph {self.name!r} has no value named %{name}")

    def find(self, op: Op) -> list[Node]:
        return [n for n in self._nodes if n.op is op]

    # ------------------------------------------------------------------ naming

    def fresh_name(self, base: str) -> str:
        """A value name not yet used in this graph, derived from `base`."""
        base = _NAME_RE.sub("_", base).strip("_") or "v"
        name, i = base, 1
        while name in self._names:
            name = f"{base}_{i}"
            i += 1
        self._names.add(name)
        return name

    def _claim(self, name: str) -> str:
        if name in self._names:
            raise GraphError(f"value name %{name} is used twice in graph {self.name!r}; names must be unique")
        self._names.add(name)
        return name

    # ------------------------------------------------------------------ building

    def add_input(self, name: str, type: TensorType) -> Value:
        v = Value(self._claim(name), type)
        self.inputs.append(v)
        return v

    def add_const(
        self,
        name: str,
        data: np.ndarray | None = None,
        *,
        type: TensorType | None = None,
        loader: Callable[[], np.ndarray] | None = None,
        digest: str | None = None,
        source: str | None = None,
        unique: bool = False,
    ) -> Value:
        """Add a constant. Pass `data`, or `type` with a lazy `loader` (or only a `digest`)."""
        if data is not None:
            data = _freeze(np.asarray(data))
            type = TensorType(DType.from_numpy(data.dtype), tuple(int(d) for d in data.shape))
        if type is None:
            raise GraphError(f"constant %{name} needs data or a type")
        v = Value(self.fresh_name(name) if unique else self._claim(name), type)
        v._data, v._loader, v._digest = data, loader, digest
        v.source = source
        self._constants[v.name] = v
        return v

    def add_node(
        self,
        op: Op,
        inputs: Sequence[Value],
        attrs: Any = None,
        *,
        types: Sequence[TensorType] | None = None,
        name: str = "",
        output_names: Sequence[str] | None = None,
        unique: bool = False,
        before: Node | None = None,
    ) -> Node:
        """Append a node (or insert it before `before`). Output types default to type inference.
        Output names are `output_names` exactly, or derived from them (`unique=True`) or from `name`."""
        if attrs is None:
            attrs = NoAttrs()
        spec = SPECS[op]
        if not isinstance(attrs, spec.attrs):
            raise GraphError(
                f"node {name!r}: op {op.value} takes {spec.attrs.__name__} attributes, "
                f"got {type(attrs).__name__}"
            )
        node = Node(op, attrs, name)
        node.graph = self
        for i, v in enumerate(inputs):
            node._inputs.append(v)
            v._uses.append((node, i))
        if types is None:
            from .infer import infer_types

            try:
                types = infer_types(node)
            except Exception:
                for i, v in enumerate(inputs):  # undo the uses so the graph stays consistent
                    v._uses.remove((node, i))
                raise
        base = output_names or [name or op.value] * len(types)
        if len(base) != len(types):
            raise GraphError(f"node {name!r}: {len(base)} output names for {len(types)} outputs")
        for i, (t, n) in enumerate(zip(types, base, strict=True)):
            out = Value(self.fresh_name(n) if output_names is None or unique else self._claim(n), t)
            out.producer, out.index = node, i
            node.outputs.append(out)
        if before is None:
            self._nodes[node] = None
        else:
            self._insert_before(node, before)
        return node

    def _insert_before(self, node: Node, anchor: Node) -> None:
        if anchor not in self._nodes:
            raise GraphError(f"cannot insert before node {anchor.name!r}: it is not in graph {self.name!r}")
        order: dict[Node, None] = {}
        for n in self._nodes:
            if n is anchor:
                order[node] = None
            order[n] = None
        self._nodes = order

    def set_outputs(self, outputs: Iterable[Value]) -> None:
        self.outputs = list(outputs)

    # ------------------------------------------------------------------ mutation

    def set_input(self, node: Node, index: int, value: Value) -> None:
        old = node._inputs[index]
        old._uses.remove((node, index))
        node._inputs[index] = value
        value._uses.append((node, index))

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Make every consumer of `old` (and the graph outputs) read `new` instead."""
        if old is new:
            return
        for node, i in list(old._uses):
            node._inputs[i] = new
            new._uses.append((node, i))
        old._uses.clear()
        self.outputs = [new if v is old else v for v in self.outputs]

    def erase(self, node: Node) -> None:
        """Remove a node whose outputs are unused."""
        for out in node.outputs:
            if out._uses or any(o is out for o in self.outputs):
                users = ", ".join(repr(n.name or n.op.value) for n, _ in out._uses) or "graph output"
                raise GraphError(
                    f"cannot erase node {node.name!r} ({node.op.value}): its output %{out.name} is still "
                    f"used by {users}; replace those uses first"
                )
        for i, v in enumerate(node._inputs):
            v._uses.remove((node, i))
        node._inputs.clear()
        del self._nodes[node]
        node.graph = None
        for out in node.outputs:
            self._names.discard(out.name)

    def remove_const(self, value: Value) -> None:
        if value._uses or value in self.outputs:
            raise GraphError(f"cannot remove constant %{value.name}: it is still used")
        del self._constants[value.name]
        self._names.discard(value.name)

    def replace_const_data(
        self, value: Value, data: np.ndarray, *, sparsity: Sparsity | None | object = _KEEP
    ) -> None:
        """Give a constant new data (a new array; shapes may change, consumers are re-typed later).

        A sparsity record stays when the new data still fits it (zeros outside the mask: BN folding
        scales rows); otherwise pass the record that fits the new data, or `sparsity=None`."""
        if not value.is_const:
            raise GraphError(f"%{value.name} is not a constant")
        data = _freeze(np.asarray(data))
        if sparsity is _KEEP:
            sparsity = value.sparsity
            if sparsity is not None and sparsity.problems(data, value.name):
                raise GraphError(
                    f"constant %{value.name} carries a {sparsity.pattern} sparsity mask that its new data "
                    f"(shape {data.shape}) does not fit: pass sparsity= (the mask moved or sliced like the data, "
                    "Sparsity.reindexed) or sparsity=None to drop it"
                )
        elif sparsity is not None:
            check_record(sparsity, data, value.name)  # type: ignore[arg-type]
        value._data, value._loader, value._digest = data, None, None
        value.type = TensorType(DType.from_numpy(data.dtype), tuple(int(d) for d in data.shape))
        value.sparsity = sparsity  # type: ignore[assignment]

    def set_sparsity(self, value: Value, sparsity: Sparsity | None) -> None:
        """Attach (or drop, with None) a sparsity record; the data must already be zero outside its mask."""
        if not value.is_const:
            raise GraphError(f"%{value.name} is not a constant; only weights carry sparsity masks")
        if sparsity is not None and value.has_data:
            check_record(sparsity, np.asarray(value.data), value.name)
        value.sparsity = sparsity

    def sort(self) -> None:
        """Restore topological order (stable: keeps the current order where it is already valid)."""
        ready = {id(v) for v in self.inputs} | {id(v) for v in self._constants.values()}
        pending = list(self._nodes)
        order: dict[Node, None] = {}
        while pending:
            rest = []
            for n in pending:
                if all(id(v) in ready for v in n._inputs):
                    order[n] = None
                    ready.update(id(o) for o in n.outputs)
                else:
                    rest.append(n)
            if len(rest) == len(pending):
                raise GraphError(f"graph {self.name!r} has a cycle through node {rest[0].name!r}")
            pending = rest
        self._nodes = order

    # ------------------------------------------------------------------ whole-graph helpers

    def copy(self) -> Graph:
        """A structural copy; constant arrays are shared (they are immutable)."""
        g = Graph(self.name)
        vmap: dict[int, Value] = {}
        for v in self.inputs:
            nv = g.add_input(v.name, v.type)
            nv.source = v.source
            vmap[id(v)] = nv
        for v in self._constants.values():
            nv = g.add_const(
                v.name,
                v._data,
                type=v.type,
                loader=v._loader,
                digest=v._digest,
                source=v.source,
            )
            nv.sparsity = v.sparsity  # records are immutable: shared like the arrays
            vmap[id(v)] = nv
        for n in self._nodes:
            nn = g.add_node(
                n.op,
                [vmap[id(v)] for v in n._inputs],
                n.attrs,
                types=[o.type for o in n.outputs],
                name=n.name,
                output_names=[o.name for o in n.outputs],
            )
            for o, no in zip(n.outputs, nn.outputs, strict=True):
                no.source = o.source
                vmap[id(o)] = no
        g.outputs = [vmap[id(v)] for v in self.outputs]
        return g

    def retype(self) -> None:
        """Re-run type inference on every node (after a pass changed shapes)."""
        from .infer import infer_types

        for n in self._nodes:
            for out, t in zip(n.outputs, infer_types(n), strict=True):
                out.type = t

    # ------------------------------------------------------------------ user surface

    def run(self, *inputs: np.ndarray, dtype: str | np.dtype | None = None) -> list[np.ndarray]:
        """Run the reference interpreter. `dtype="float64"` computes in double precision."""
        from ..interp import run

        return run(self, list(inputs), dtype=dtype)

    def verify(self) -> None:
        from .verify import verify

        verify(self)

    def to_torch(self) -> torch.nn.Module:
        from graphprune.backends.torch import to_torch

        return to_torch(self)

    def to_text(self, *, full: bool = False) -> str:
        from .printer import print_graph

        return print_graph(self, full=full)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self.inputs)} inputs, {len(self._nodes)} nodes>"
