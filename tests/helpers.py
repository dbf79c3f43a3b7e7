"""Comparison helpers shared by the parity tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from graphprune.ir import opaque
from graphprune.ir.graph import Graph, Value
from graphprune.ir.ops import Op, attr_fields


def as_numpy(outputs) -> list[np.ndarray]:
    if not isinstance(outputs, list | tuple):
        outputs = [outputs]
    return [o.detach().cpu().numpy() if hasattr(o, "detach") else np.asarray(o) for o in outputs]


def assert_close_scaled(got: Sequence, ref: Sequence, rel: float = 1e-4, what: str = "") -> None:
    """max |got - ref| <= rel * max(1, max |ref|), output by output, shapes equal."""
    got, ref = as_numpy(got), as_numpy(ref)
    assert len(got) == len(ref), f"{what}: {len(got)} outputs, expected {len(ref)}"
    for i, (g, r) in enumerate(zip(got, ref, strict=True)):
        assert g.shape == r.shape, f"{what} output {i}: shape {g.shape}, expected {r.shape}"
        scale = max(1.0, float(np.abs(r).max()) if r.size else 1.0)
        err = float(np.abs(g.astype(np.float64) - r.astype(np.float64)).max()) if r.size else 0.0
        assert err <= rel * scale, f"{what} output {i}: max abs err {err:.3e} > {rel:g} x scale {scale:.3g}"


def structurally_equal(g1: Graph, g2: Graph) -> list[str]:
    """Differences between two graphs, ignoring names: the same inputs, the same ops in the same
    order with the same attributes, wired the same way, with the same constant data."""
    diffs: list[str] = []
    if len(g1.inputs) != len(g2.inputs):
        return [f"{len(g1.inputs)} vs {len(g2.inputs)} inputs"]
    ids: dict[int, str] = {}
    for k, (a, b) in enumerate(zip(g1.inputs, g2.inputs, strict=True)):
        if a.type != b.type:
            diffs.append(f"input {k}: {a.type} vs {b.type}")
        ids[id(a)] = ids[id(b)] = f"in{k}"

    def key(v: Value, own: dict[int, str]) -> str:
        if id(v) in own:
            return own[id(v)]
        if v.is_const:
            arr = np.asarray(v.data)
            return f"const {arr.dtype}{list(arr.shape)}#{hash(arr.tobytes())}"
        return f"?{v.name}"

    n1, n2 = g1.nodes, g2.nodes
    if [n.op for n in n1] != [n.op for n in n2]:
        diffs.append(f"ops differ: {[n.op.value for n in n1]} vs {[n.op.value for n in n2]}")
        return diffs
    for k, (a, b) in enumerate(zip(n1, n2, strict=True)):
        if a.op is Op.OPAQUE:
            ca, cb = opaque.decode(a.attrs), opaque.decode(b.attrs)
            same = a.attrs.op_name == b.attrs.op_name and type(ca) is type(cb)
            if isinstance(ca, opaque.OnnxCall) and isinstance(cb, opaque.OnnxCall):
                pa, pb = onnx.NodeProto(), onnx.NodeProto()
                pa.ParseFromString(ca.node)
                pb.ParseFromString(cb.node)
                same = same and list(pa.attribute) == list(pb.attribute) and pa.op_type == pb.op_type
            if not same:
                diffs.append(f"node {k} ({a.op.value}): opaque payloads differ")
        elif attr_fields(a.attrs) != attr_fields(b.attrs):
            diffs.append(f"node {k} ({a.op.value}): attrs {a.attrs} vs {b.attrs}")
        ka = [key(v, ids) for v in a.inputs]
        kb = [key(v, ids) for v in b.inputs]
        if ka != kb:
            diffs.append(f"node {k} ({a.op.value}): inputs {ka} vs {kb}")
        for j, (oa, ob) in enumerate(zip(a.outputs, b.outputs, strict=True)):
            if oa.type.dtype != ob.type.dtype or oa.type.shape != ob.type.shape:
                diffs.append(f"node {k} ({a.op.value}) output {j}: {oa.type} vs {ob.type}")
            ids[id(oa)] = ids[id(ob)] = f"n{k}.{j}"
    o1 = [key(v, ids) for v in g1.outputs]
    o2 = [key(v, ids) for v in g2.outputs]
    if o1 != o2:
        diffs.append(f"outputs {o1} vs {o2}")
    return diffs
