"""The `graphprune` command.

    graphprune inspect MODEL [--json] [--all]
    graphprune opt MODEL -p fold-bn,dce -o OUT [--verify]

MODEL is an .onnx file, a .gpir text file, or `file.py:factory` where factory() returns
(torch.nn.Module, example_inputs). Errors print one line and exit 2; nothing is written on error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from . import api
from .ir.errors import GraphpruneError, ModelLoadError
from .ir.graph import Graph

EXIT_ERROR = 2


def load_model(spec: str) -> Graph:
    """Load MODEL: a model file, or `file.py:factory` for a torch model."""
    path, sep, factory = spec.rpartition(":")
    if sep and path.endswith(".py") and factory.isidentifier():
        return _trace_factory(Path(path), factory)
    if not Path(spec).exists():
        raise ModelLoadError(f"{spec}: no such file; give an .onnx or .gpir file, or file.py:factory")
    return api.load(spec)


def _trace_factory(path: Path, factory: str) -> Graph:
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file (from MODEL {path}:{factory})")
    mod_spec = importlib.util.spec_from_file_location(f"_graphprune_model_{path.stem}", path)
    if mod_spec is None or mod_spec.loader is None:
        raise ModelLoadError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except Exception as e:  # the user's file: report its error in one line
        raise ModelLoadError(f"{path}: importing it failed: {type(e).__name__}: {e}") from None
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise ModelLoadError(f"{path}: has no function {factory!r}; expected factory() -> (module, example_inputs)")
    made = fn()
    if not (isinstance(made, tuple) and len(made) == 2):
        raise ModelLoadError(f"{path}:{factory}() must return (torch.nn.Module, tuple of example inputs)")
    model, inputs = made
    return api.trace(model, tuple(inputs) if isinstance(inputs, list | tuple) else (inputs,), name=factory)


def _inspect(args: argparse.Namespace) -> int:
    from graphprune.passes.analysis.cost import format_table

    graph = load_model(args.model)
    cost = api.cost(graph)
    if args.json:
        doc = {
            "model": args.model,
            "params": cost.params,
            "param_bytes": cost.param_bytes,
            "macs": cost.macs,
            "peak_activation_bytes": cost.peak_activation_bytes,
            "opaque": list(cost.opaque),
            "ops": _op_counts(graph),
            "layers": [
                {"node": c.node, "op": c.op, "shape": [str(d) for d in c.shape], "params": c.params, "macs": c.macs}
                for c in cost.nodes
            ],
        }
        print(json.dumps(doc, indent=2))
        return 0
    counts = ", ".join(f"{op} x{n}" for op, n in _op_counts(graph).items())
    print(f"model: {args.model}  ({len(graph)} nodes: {counts})")
    ins = ", ".join(f"{v.name}: {v.type}" for v in graph.inputs)
    outs = ", ".join(f"{v.name}: {v.type}" for v in graph.outputs)
    print(f"inputs: {ins}\noutputs: {outs}\n")
    print(format_table(cost, limit=None if args.all else 60))
    return 0


def _op_counts(graph: Graph) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in graph.nodes:
        counts[n.op.value] = counts.get(n.op.value, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _opt(args: argparse.Namespace) -> int:
    from .pm import Pipeline, Timer

    try:
        pipeline = Pipeline.parse(args.passes)
    except ValueError as e:
        raise GraphpruneError(str(e)) from None
    out = Path(args.output)
    if out.suffix not in (".onnx", api.TEXT_SUFFIX):
        raise GraphpruneError(f"{out}: output must end in .onnx or {api.TEXT_SUFFIX}")
    graph = load_model(args.model)
    before = api.cost(graph)
    timer = Timer()
    graph = api.optimize(graph, pipeline, verify=args.verify, instruments=[timer])
    after = api.cost(graph)
    api.save(graph, out)
    for name, seconds in timer.seconds:
        print(f"pass {name}: {seconds * 1000:.1f} ms")
    print(
        f"nodes {len(graph)}, params {before.params:,} -> {after.params:,}, MACs {before.macs:,} -> {after.macs:,}"
        + (", contracts verified" if args.verify else "")
    )
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="graphprune", description="Make neural networks smaller and faster.")
    p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = p.add_subparsers(dest="command", required=True)

    i = sub.add_parser("inspect", help="ops, parameters and MACs per layer, and every op opaque to pruning")
    i.add_argument("model", help="model.onnx, graph.gpir, or file.py:factory returning (module, inputs)")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--all", action="store_true", help="list every layer (the table stops at 60 rows)")
    i.set_defaults(func=_inspect)

    o = sub.add_parser("opt", help="run a pass pipeline and write the result")
    o.add_argument("model", help="model.onnx, graph.gpir, or file.py:factory returning (module, inputs)")
    o.add_argument("-p", "--passes", required=True, help='pipeline, e.g. "fold-bn,dce"')
    o.add_argument("-o", "--output", required=True, help="output .onnx or .gpir")
    o.add_argument("--verify", action="store_true", help="check every pass's numerical contract")
    o.set_defaults(func=_opt)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            return int(args.func(args))
    except GraphpruneError as e:
        print(f"graphprune: error: {_one_line(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug of ours: still one line, the traceback only with --debug
        if args.debug or os.environ.get("GRAPHPRUNE_DEBUG"):
            raise
        print(
            f"graphprune: internal error: {type(e).__name__}: {_one_line(str(e))} "
            "(rerun with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


def _show_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    print(f"graphprune: warning: {message}", file=sys.stderr)


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.strip().splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
