"""Sample inputs for a graph: what the numerical verifier, `inspect` and the tests feed a model."""

from __future__ import annotations

import numpy as np

from .ir.graph import Graph, Value
from .ir.ops import Op
from .ir.types import concrete_shape


def _index_bound(value: Value) -> int:
    """The largest safe exclusive bound for integer inputs: the smallest table they index."""
    bound = None
    for node, i in value.uses:
        if node.op is Op.GATHER and i == 1:
            size = node.inputs[0].type.shape[node.attrs.axis]
            if isinstance(size, int):
                bound = size if bound is None else min(bound, size)
    return bound if bound is not None else 2


def sample_inputs(
    graph: Graph, *, seed: int = 0, bindings: dict[str, int] | None = None, dtype: str | None = None
) -> list[np.ndarray]:
    """Deterministic random inputs: standard normal floats, integer ids inside every table they index.
    Symbolic dims take their size from `bindings` (default 1)."""
    rng = np.random.default_rng(seed)
    sizes: dict[str, int] = dict(bindings or {})
    arrays = []
    for v in graph.inputs:
        for d in v.type.shape:
            if isinstance(d, str):
                sizes.setdefault(d, 1)
        shape = concrete_shape(v.type.shape, sizes)
        t = v.type.dtype
        if t.is_float:
            arr = rng.standard_normal(shape).astype(dtype or t.numpy)
        elif t.numpy == np.bool_:
            arr = rng.random(shape) < 0.5
        else:
            arr = rng.integers(0, _index_bound(v), size=shape).astype(t.numpy)
        arrays.append(arr)
    return arrays
