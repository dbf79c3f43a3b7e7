"""Payloads of OPAQUE nodes: how an op the frontend does not know is recorded so that it still runs.

- source "torch": JSON {"target": "aten.cumsum.default", "args": [...], "kwargs": {...}}. A tensor
  argument is {"$input": i} (the node's i-th input); a dtype is {"$dtype": "float32"}; other
  values are JSON scalars or lists. The interpreter and to_torch() call torch.ops with them.
- source "onnx": JSON {"node": base64 NodeProto, "opsets": {"": 17, ...}}. The node's non-empty
  inputs, in order, are the IR node's inputs; its outputs are the IR node's outputs. The
  interpreter runs it as a one-node model in onnxruntime; the ONNX backend writes it back as is.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from .ops import OpaqueAttrs


@dataclass(frozen=True)
class TorchCall:
    target: str
    args: list[Any]
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class OnnxCall:
    node: bytes  # serialized onnx.NodeProto
    opsets: dict[str, int]


def torch_attrs(target: str, args: list[Any], kwargs: dict[str, Any]) -> OpaqueAttrs:
    payload = json.dumps({"target": target, "args": args, "kwargs": kwargs}, sort_keys=True)
    return OpaqueAttrs("torch", target, payload)


def onnx_attrs(op_type: str, node_bytes: bytes, opsets: dict[str, int]) -> OpaqueAttrs:
    payload = json.dumps({"node": base64.b64encode(node_bytes).decode(), "opsets": opsets}, sort_keys=True)
    return OpaqueAttrs("onnx", op_type, payload)


def decode(attrs: OpaqueAttrs) -> TorchCall | OnnxCall:
    data = json.loads(attrs.payload)
    if attrs.source == "torch":
        return TorchCall(data["target"], data["args"], data["kwargs"])
    if attrs.source == "onnx":
        return OnnxCall(base64.b64decode(data["node"]), {k: int(v) for k, v in data["opsets"].items()})
    raise ValueError(f"opaque op {attrs.op_name!r} has unknown source {attrs.source!r}; expected torch or onnx")
