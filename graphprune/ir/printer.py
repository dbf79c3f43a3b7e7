"""The deterministic text form of a graph. `parser.parse_graph` reads it back.

    graph @name(%x: f32[N,3,32,32]c1) {
      %conv1.weight = const f32[16,3,3,3] elided<1a2b3c4d5e6f7a8b>  # out,in,s,s
      %k = const f32[] dense<[0.5]>
      %conv = conv(%x, %conv1.weight) {stride=[1,1], pads=[1,1,1,1], dilation=[1,1], groups=1}
        : f32[N,16,32,32]c1 loc("conv1")    (one line in the real output)
      return %conv
    }

Small constants (at most INLINE_LIMIT elements) are printed in full; larger ones by content digest
unless `full=True`. Names outside [A-Za-z0-9_.] are printed quoted, so any model name is safe.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from .errors import GraphError
from .graph import Graph, Value
from .ops import NoAttrs, attr_fields
from .roles import weight_uses
from .sparsity import pack_bits
from .types import DType

INLINE_LIMIT = 16
_BARE = re.compile(r"^[A-Za-z0-9_.]+$")


def name_token(name: str) -> str:
    return "%" + (name if _BARE.match(name) else json.dumps(name))


def format_attr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, DType):
        return value.value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    raise TypeError(f"attribute value {value!r} of type {type(value).__name__} has no text form")


def _float(x: float) -> str:
    if np.isnan(x):
        return "nan"
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    text = repr(float(x))
    return text if any(c in text for c in ".e") else text + ".0"


def _scalar(x: Any, dtype: DType) -> str:
    if dtype is DType.BOOL:
        return "true" if x else "false"
    if dtype.is_float:
        # the shortest text that reads back to the same value in this precision
        if np.isnan(x) or np.isinf(x):
            return _float(float(x))
        text = np.format_float_positional(x, unique=True, trim="0") if abs(x) >= 1e-4 or x == 0 else None
        if text is None or len(text) > 20:
            text = np.format_float_scientific(x, unique=True, trim="0")
        return text if any(c in text for c in ".e") else text + ".0"
    return str(int(x))


def format_data(value: Value, full: bool) -> str:
    t = value.type
    try:
        if not value.has_data or (not full and t.numel() > INLINE_LIMIT):
            return f"elided<{value.digest()}>"
        flat = np.asarray(value.data).reshape(-1)
    except GraphError:
        return "elided<unavailable>"  # a constant whose data cannot be had (traced on the meta device)
    return "dense<[" + ", ".join(_scalar(x, t.dtype) for x in flat) + "]>"


def format_sparsity(value: Value, full: bool) -> str:
    """sparsity<"2:4", axis=1, out=0, mask="bits:<hex>"> (or mask="elided:<digest>" when the data is elided)."""
    rec = value.sparsity
    assert rec is not None
    inline = rec.mask is not None and (full or value.type.numel() <= INLINE_LIMIT)
    mask = f"bits:{pack_bits(rec.mask)}" if inline else f"elided:{rec.mask_digest()}"  # type: ignore[arg-type]
    return f"sparsity<{json.dumps(rec.pattern)}, axis={rec.axis}, out={rec.out_axis}, mask={json.dumps(mask)}>"


def print_graph(graph: Graph, *, full: bool = False) -> str:
    ins = ", ".join(f"{name_token(v.name)}: {v.type}" for v in graph.inputs)
    lines = [f"graph @{json.dumps(graph.name)}({ins}) {{"]
    for c in graph.constants:
        line = f"  {name_token(c.name)} = const {c.type} {format_data(c, full)}"
        if c.source is not None and c.source != c.name:
            line += f" source={json.dumps(c.source)}"
        if c.sparsity is not None:
            line += " " + format_sparsity(c, full)
        uses = weight_uses(c)
        if uses:
            line += "  # " + ",".join(r.value for r in uses[0][2])
        lines.append(line)
    for n in graph.nodes:
        outs = ", ".join(name_token(o.name) for o in n.outputs)
        ins = ", ".join(name_token(v.name) for v in n.inputs)
        line = f"  {outs} = {n.op.value}({ins})"
        if not isinstance(n.attrs, NoAttrs):
            line += " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in attr_fields(n.attrs)) + "}"
        line += " : " + ", ".join(str(o.type) for o in n.outputs)
        if n.name:
            line += f" loc({json.dumps(n.name)})"
        lines.append(line)
    lines.append("  return " + ", ".join(name_token(v.name) for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"
