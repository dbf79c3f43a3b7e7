"""The small public surface: trace, load, save, parse, optimize, cost."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .ir.errors import ExportError, ModelLoadError
from .ir.graph import Graph
from .pm import Instrument, Pipeline

if TYPE_CHECKING:
    import onnx
    import torch

    from graphprune.passes.analysis.cost import Cost

TEXT_SUFFIX = ".gpir"  # graphprune's text form, full precision (every constant inlined)


def trace(module: torch.nn.Module, example_inputs: tuple[Any, ...], **options: Any) -> Graph:
    """Capture a torch.nn.Module with torch.export (torch.fx as the fallback) into the IR."""
    from .frontends.torch import trace as _trace

    return _trace(module, example_inputs, **options)


def load(model: str | os.PathLike[str] | onnx.ModelProto) -> Graph:
    """Read an ONNX model (path or ModelProto, external data supported) or a .gpir text file."""
    if isinstance(model, str | os.PathLike) and Path(model).suffix == TEXT_SUFFIX:
        path = Path(model)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ModelLoadError(f"{path}: cannot read the graph text file ({e.__class__.__name__}: {e})") from None
        from .ir.errors import ParseError

        try:
            return parse(text)
        except ParseError as e:
            raise ModelLoadError(f"{path}: {e}") from None
    from .frontends.onnx import load as _load

    return _load(model)


def save(graph: Graph, path: str | os.PathLike[str], **options: Any) -> None:
    """Write `graph` as ONNX (.onnx) or as full-precision text (.gpir). Nothing is left half-written."""
    path = Path(path)
    if path.suffix == TEXT_SUFFIX:
        _write_atomic(path, graph.to_text(full=True).encode())
        return
    if path.suffix != ".onnx":
        raise ExportError(f"{path}: unknown output format {path.suffix!r}; use .onnx or {TEXT_SUFFIX}")
    from graphprune.backends.onnx import save as _save

    _save(graph, path, **options)


def _write_atomic(path: Path, data: bytes) -> None:
    if not path.parent.is_dir():
        raise ExportError(f"{path}: the folder {path.parent} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse(text: str, weights: dict[str, np.ndarray] | None = None) -> Graph:
    """Read the text form back. Elided constants take their arrays from `weights` (by name)."""
    from .ir.parser import parse_graph

    return parse_graph(text, weights)


def optimize(
    graph: Graph, pipeline: str | Pipeline, *, verify: bool | None = None, instruments: Sequence[Instrument] = ()
) -> Graph:
    """Run a pass pipeline (e.g. "fold-bn,dce") on a copy of `graph` and return the copy."""
    out = graph.copy()
    pipe = Pipeline.parse(pipeline) if isinstance(pipeline, str) else pipeline
    pipe.run(out, verify=verify, instruments=instruments)
    return out


def cost(graph: Graph) -> Cost:
    """Parameters, MACs and peak activation memory, per node and in total."""
    from graphprune.passes.analysis.cost import CostAnalysis

    return CostAnalysis.compute(graph)
