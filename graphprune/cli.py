"""The `graphprune` command.

    graphprune inspect MODEL [--json] [--all]
    graphprune opt MODEL -p fold-bn,dce -o OUT [--verify]
    graphprune analyze MODEL [--json]
    graphprune prune MODEL -o OUT [--channels 0.5 | --target-macs F | --target-params F] [--criterion C]
                     [--unconstrained [--reorder search|upscale|none] [--contiguity F]]
                     [--scope local|global] [--round-to N|auto] [--keep NODE ...] [--calib inputs.npz]
                     [--sparsity 2:4|block:4x1|unstructured [--sparsity-target F] [--sparsity-scope S]
                      [--permute [--search fast|strong] [--search-time S] [--prefer auto|reorder|sparsity]]
                      [--layers REGEX]
                      [--first-layer] [--last-layer] [--error-budget F]]
                     [--report report.json] [--plot widths.png] [--verify]
    graphprune compile MODEL --backend cpp --target host|aarch64|wasm32 -o DIR [--threads N] [--weights embed|bin]

With --sparsity alone no channels are removed; with --channels too, channels go first, then the
remaining weights take the sparsity pattern.

MODEL is an .onnx file, a .gpir text file, or `file.py:factory` where factory() returns
(torch.nn.Module, example_inputs). Errors print one line and exit 2; nothing is written on error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import numpy as np

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


def _analyze(args: argparse.Namespace) -> int:
    graph = load_model(args.model)
    groups = api.coupling_groups(graph)
    totals = {
        "groups": len(groups),
        "prunable": sum(g.prunable for g in groups),
        "blocked": sum(g.blocked is not None for g in groups),
        "units": sum(g.size for g in groups),
        "prunable_units": sum(g.size for g in groups if g.prunable),
    }
    if args.json:
        doc = {
            "model": args.model,
            "groups": [
                {
                    "id": g.id,
                    "name": g.name,
                    "units": g.size,
                    "members": len(g.members),
                    "weights": len(g.weights()),
                    "prunable": g.prunable,
                    "blocked": g.blocked,
                    "bins": [_bins_json(b) for b in g.bins],
                    "stats": list(g.stats),
                }
                for g in groups
            ],
            "totals": totals,
        }
        print(json.dumps(doc, indent=2))
        return 0
    print(f"model: {args.model}  ({len(graph)} nodes)")
    name_w = min(max([len("group"), *(len(g.name) for g in groups)]), 40)
    head = f"{'id':>4}  {'group':<{name_w}} {'units':>6} {'members':>8} {'bins':>10} {'stats':>6}  state"
    print(head)
    print("-" * len(head))
    for g in groups:
        name = g.name if len(g.name) <= name_w else "…" + g.name[-(name_w - 1) :]
        bins = "+".join(_bins_text(b) for b in g.bins) or "-"
        state = "prunable" if g.prunable else f"blocked: {g.blocked}" if g.blocked else "one unit"
        stats = len(g.stats) or "-"
        print(f"{g.id:>4}  {name:<{name_w}} {g.size:>6,} {len(g.members):>8} {bins:>10} {stats:>6}  {state}")
    print("-" * len(head))
    print(
        f"groups: {totals['groups']} ({totals['prunable']} prunable, {totals['blocked']} blocked); "
        f"units: {totals['units']:,} ({totals['prunable_units']:,} prunable)"
    )
    if any(g.bins for g in groups):
        print("bins NxK: N bins of K units; pruning keeps the same number of units in every bin (balanced)")
    with_stats = [g for g in groups if g.stats]
    if with_stats:
        print("stats: ops where removing a channel is not zeroing it (pruned, they see the kept channels only):")
        for g in with_stats:
            print(f"  group {g.id} {g.name!r}: {', '.join(g.stats)}")
    return 0


def _bins_json(b: np.ndarray) -> dict[str, object]:
    """A unit -> bin map (-1: the unit is in no bin) as bin sizes and free units."""
    sizes = np.bincount(b[b >= 0]).tolist()
    return {"bins": len(sizes), "units_per_bin": sizes, "free_units": int((b < 0).sum())}


def _bins_text(b: np.ndarray) -> str:
    """'4x16': 4 bins of 16 units; '4 bins' when they differ in size or leave units free."""
    sizes = np.bincount(b[b >= 0])
    if len(sizes) and (b >= 0).all() and (sizes == sizes[0]).all():
        return f"{len(sizes)}x{sizes[0]}"
    return f"{len(sizes)} bins"


def _prune(args: argparse.Namespace) -> int:
    channels = args.channels is not None or args.target_macs is not None or args.target_params is not None
    channels = channels or args.sparsity is None  # the command prunes channels (half) unless told otherwise
    if args.sparsity is not None:
        from .ir.sparsity import parse_pattern

        try:
            sparse_pattern = parse_pattern(args.sparsity)
        except ValueError as e:
            raise GraphpruneError(f"--sparsity: {e}") from None
        if sparse_pattern.kind == "nm" and args.sparsity_target is not None:
            raise GraphpruneError(f"--sparsity-target applies to block and unstructured patterns; N:M "
                                  f"({sparse_pattern}) removes 1 - N/M")
        if sparse_pattern.kind == "nm" and args.sparsity_scope == "global":
            raise GraphpruneError("--sparsity-scope global ranks blocks or elements across layers; "
                                  f"N:M ({sparse_pattern}) fixes every group: leave it local")
        if args.layers is not None:
            try:
                re.compile(args.layers)
            except re.error as e:
                raise GraphpruneError(f"--layers {args.layers!r}: not a regular expression ({e})") from None
        if args.prefer is not None and not args.permute:
            raise GraphpruneError("--prefer decides who orders the channels when --permute meets the reorder; "
                                  "add --permute")
    else:
        given = [o for o, v in (("--permute", args.permute), ("--layers", args.layers), ("--prefer", args.prefer),
                                ("--sparsity-target", args.sparsity_target)) if v]
        if given:
            raise GraphpruneError(f"{given[0]} applies to --sparsity; give a pattern such as --sparsity 2:4")
    if args.plot is not None and not channels:
        raise GraphpruneError("--plot draws the widths channel pruning leaves; add --channels, or drop --plot")
    if args.criterion == "taylor" and args.calib is None:
        raise GraphpruneError("--criterion taylor needs --calib inputs.npz (one array per model input)")
    for pattern in args.keep:
        try:
            re.compile(pattern)
        except re.error as e:
            raise GraphpruneError(f"--keep {pattern!r}: not a regular expression ({e})") from None
    out = Path(args.output)
    if out.suffix not in (".onnx", api.TEXT_SUFFIX):
        raise GraphpruneError(f"{out}: output must end in .onnx or {api.TEXT_SUFFIX}")
    if args.plot is not None and Path(args.plot).suffix.lower() != ".png":
        raise GraphpruneError(f"{args.plot}: --plot writes a PNG; give a path ending in .png")
    if not args.unconstrained and (args.reorder is not None or args.contiguity):
        raise GraphpruneError("--reorder and --contiguity apply to unconstrained pruning; add --unconstrained")
    outputs = [out, *(Path(p) for p in (args.report, args.plot) if p is not None)]
    _check_outputs(outputs)

    graph = load_model(args.model)
    _check_keep(graph, args.keep)
    if args.layers is not None:
        _check_names(graph, [args.layers], "--layers")
    calib = _load_calib(Path(args.calib), graph) if args.calib is not None else None
    if calib is not None and args.criterion != "taylor":
        warnings.warn(f"--calib is used by --criterion taylor only; {args.criterion} ignores it", stacklevel=1)
    pruned, report = graph, None
    if channels:
        pruned, report = api.prune_with_report(
            graph,
            0.5 if args.channels is None else args.channels,
            criterion=args.criterion,
            scope=args.scope,
            round_to=args.round_to,
            target_macs=args.target_macs,
            target_params=args.target_params,
            keep=args.keep,
            calib=calib,
            verify=args.verify,
            constrained=not args.unconstrained,
            reorder=args.reorder or "search",
            contiguity=args.contiguity,
        )
    sparse_report = None
    if args.sparsity is not None:
        pruned, sparse_report = api.sparsify_with_report(
            pruned,
            args.sparsity,
            permute=args.permute,
            sparsity=args.sparsity_target,
            scope=args.sparsity_scope,
            layers=args.layers,
            first=args.first_layer,
            last=args.last_layer,
            search=args.search,
            time_budget=args.search_time,
            prefer=args.prefer or "auto",
            budget=args.error_budget,
            verify=args.verify,
        )
        if not sparse_report.layers:
            why = "; ".join(f"{n}: {r}" for n, r in sparse_report.skipped[:3]) or "the model has no layer with weights"
            raise GraphpruneError(f"--sparsity {args.sparsity}: no layer takes the pattern ({why}"
                                  f"{' ...' if len(sparse_report.skipped) > 3 else ''}); nothing was written")
    with _staged(outputs) as staged:
        api.save(pruned, staged[out])
        if args.report is not None:
            doc: dict[str, object] = {"model": args.model, **(report.to_json() if report is not None else {})}
            if sparse_report is not None:
                doc["sparsity"] = sparse_report.to_json()
            staged[Path(args.report)].write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        if args.plot is not None and report is not None:
            report.plot(staged[Path(args.plot)])
    for part in (report, sparse_report):
        if part is not None:
            print(part.table())
            print()
    if args.verify:
        if report is not None:
            print("contract verified: the pruned graph equals the masked original (float64)")
        if sparse_report is not None:
            print(f"contracts verified: the permutation is exact; the sparse outputs are within the error budget "
                  f"(relative L2 <= {args.error_budget:g})")
    print("wrote " + ", ".join(str(p) for p in outputs))
    return 0


def _compile(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise GraphpruneError(f"{out}: exists and is not a folder; -o takes the folder to build into")
    graph = load_model(args.model)
    art = api.compile(graph, args.backend, target=args.target, out_dir=out, threads=args.threads,
                      weights=args.weights, sparse=args.sparse, fuse=args.fuse)
    sparse = ", ".join(f"{k}: {v}" for k, v in sorted(art.sparse_layers.items())) or "none"
    built = "model.wasm, model.mjs" if args.target == "wasm32" else "libmodel.a, libmodel.so, runner"
    print(f"built {args.target} in {out}: model.h, model.cpp, {built}, CMakeLists.txt")
    print(f"sparse layers: {sparse}")
    return 0


def _check_outputs(paths: Sequence[Path]) -> None:
    """Fail before any work when an output cannot be written."""
    seen: dict[Path, Path] = {}
    for p in paths:
        folder = p.parent if str(p.parent) else Path(".")
        if not folder.is_dir():
            raise GraphpruneError(f"{p}: the folder {folder} does not exist; create it first")
        if p.is_dir():
            raise GraphpruneError(f"{p}: is a folder; give a file name")
        key = p.resolve()
        if key in seen:
            raise GraphpruneError(f"{p}: given for two outputs ({seen[key]} and {p}); give each its own file")
        seen[key] = p


@contextmanager
def _staged(paths: Sequence[Path]) -> Iterator[dict[Path, Path]]:
    """Where to write each output: the same file name in a hidden folder beside it. When the block
    succeeds every file is moved into place (files written beside an output, like an ONNX model's
    external weights, go too, before it); when it fails, nothing reaches the real paths."""
    folders: dict[Path, Path] = {}
    try:
        staged = {}
        for p in paths:
            folder = p.parent if str(p.parent) else Path(".")
            if folder.resolve() not in folders:
                try:
                    folders[folder.resolve()] = Path(tempfile.mkdtemp(prefix=".graphprune-", dir=folder))
                except OSError as e:
                    raise GraphpruneError(f"{p}: cannot write into {folder} ({e.strerror or e})") from None
            staged[p] = folders[folder.resolve()] / p.name
        yield staged
        names = {p.name for p in paths}
        for dest, tmp in folders.items():
            # the named outputs last, so that a reader never finds a model before its weights
            for f in sorted(tmp.iterdir(), key=lambda f: f.name in names):
                os.replace(f, dest / f.name)
    finally:
        for tmp in folders.values():
            shutil.rmtree(tmp, ignore_errors=True)


def _check_keep(graph: Graph, patterns: Sequence[str]) -> None:
    """A --keep that matches nothing is a typo, not a request to prune everything."""
    _check_names(graph, patterns, "--keep")


def _check_names(graph: Graph, patterns: Sequence[str], option: str) -> None:
    names = {n.name for n in graph.nodes} | {v.name for v in graph.values()}
    for pattern in patterns:
        rx = re.compile(pattern)
        if not any(name and rx.fullmatch(name) for name in names):
            raise GraphpruneError(
                f"{option} {pattern!r} matches no node or value name of the model (names match whole; "
                "`graphprune inspect --all` lists the layers)"
            )


def _load_calib(path: Path, graph: Graph) -> list[np.ndarray]:
    """One array per graph input from an .npz: keyed by input name, or in input order."""
    wanted = ", ".join(f"{v.name}: {v.type}" for v in graph.inputs)
    if not path.is_file():
        raise GraphpruneError(f"{path}: no such file (--calib takes an .npz with one array per input: {wanted})")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise GraphpruneError(f"{path}: cannot be read ({e.strerror or e})") from None
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip archive (the second: an empty one)
        raise GraphpruneError(f"{path}: not an .npz archive; write the calibration inputs with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except Exception as e:  # the user's file: any failure to read it is reported in one line
        raise GraphpruneError(
            f"{path}: cannot read calibration inputs ({type(e).__name__}: {e}); expected an .npz from numpy.savez"
        ) from None
    names = [v.name for v in graph.inputs]
    if any(k in names for k in arrays):
        missing = [n for n in names if n not in arrays]
        extra = [k for k in arrays if k not in names]
        if missing or extra:
            raise GraphpruneError(
                f"{path}: arrays keyed by input name must name every input exactly ({wanted}); "
                + "; ".join(x for x in (missing and f"missing {missing}", extra and f"unknown {extra}") if x)
            )
        ordered = [arrays[n] for n in names]
    elif len(arrays) == len(names):
        keys = list(arrays)
        if all(re.fullmatch(r"arr_\d+", k) for k in keys):  # numpy.savez(path, a, b): arr_0, arr_1, ...
            keys.sort(key=lambda k: int(k[4:]))
        ordered = [arrays[k] for k in keys]
    else:
        raise GraphpruneError(
            f"{path}: holds {len(arrays)} array(s) ({', '.join(arrays) or 'none'}) but the model takes "
            f"{len(names)} input(s) ({wanted}); give one per input, in order or keyed by input name"
        )
    out = []
    for v, a in zip(graph.inputs, ordered, strict=True):
        t = v.type
        # a symbolic dim (the batch) takes any size
        fits = a.ndim == t.rank and all(not isinstance(d, int) or d == n for d, n in zip(t.shape, a.shape, strict=True))
        if not fits:
            raise GraphpruneError(
                f"{path}: the array for input {v.name} has shape {tuple(a.shape)}, the input is {t}"
            )
        if t.dtype.is_float != (a.dtype.kind == "f") or a.dtype.kind not in "fiub":
            raise GraphpruneError(f"{path}: the array for input {v.name} is {a.dtype}, the input is {t}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise GraphpruneError(f"{path}: the array for input {v.name} holds NaN or infinity")
        out.append(a.astype(t.dtype.numpy, copy=False))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="graphprune", description="Make neural networks smaller and faster.")
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

    a = sub.add_parser("analyze", help="coupling groups: channels that prune together, and what blocks them")
    a.add_argument("model", help="model.onnx, graph.gpir, or file.py:factory returning (module, inputs)")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.set_defaults(func=_analyze)

    from graphprune.passes.analysis.importance import CRITERIA

    r = sub.add_parser("prune", help="remove channels, write the smaller model and report what changed")
    r.add_argument("model", help="model.onnx, graph.gpir, or file.py:factory returning (module, inputs)")
    r.add_argument("-o", "--output", required=True, help="output .onnx or .gpir")
    r.add_argument("--channels", type=_fraction(upper_open=True), default=None,
                   help="fraction of prunable channels to remove, in [0, 1) (default 0.5; none with --sparsity)")
    r.add_argument("--criterion", choices=CRITERIA, default="l2",
                   help="channel importance (default l2); taylor needs --calib")
    r.add_argument("--scope", choices=("local", "global"), default="local",
                   help="local: every group loses the same fraction; global: groups ranked together")
    r.add_argument("--target-macs", type=_fraction(lower_open=True), metavar="F",
                   help="keep this fraction of the MACs, in (0, 1] (overrides --channels; met within 2%%)")
    r.add_argument("--target-params", type=_fraction(lower_open=True), metavar="F",
                   help="keep this fraction of the parameters, in (0, 1] (overrides --channels)")
    r.add_argument("--round-to", type=_round_to, default=8, metavar="N|auto",
                   help="round kept widths up to a multiple of N (default 8: SIMD-friendly widths; 1 = none; "
                   "auto: this CPU's vector width in floats, 16 with AVX-512, 8 with AVX2, else 4)")
    r.add_argument("--keep", nargs="+", action="extend", default=[], metavar="NODE",
                   help="node or value names (regexes, matched whole) whose channels stay")
    r.add_argument("--calib", metavar="INPUTS.npz",
                   help="calibration inputs for taylor: one array per model input, in order or keyed by name")
    r.add_argument("--sparsity", metavar="PATTERN",
                   help="then zero weights in a pattern: N:M (2:4, 1:4, 4:8 ...), block:RxC (block:4x1) or "
                        "unstructured")
    r.add_argument("--sparsity-target", type=_fraction(lower_open=True, upper_open=True), metavar="F",
                   help="fraction of weights removed by block and unstructured patterns, in (0, 1) (default 0.5)")
    r.add_argument("--sparsity-scope", choices=("local", "global"), default="local",
                   help="local: every layer at the target; global: LAMP ranking across layers (blocks, unstructured)")
    r.add_argument("--permute", action="store_true",
                   help="permute channels first (exact) so the pattern keeps more weight magnitude")
    r.add_argument("--search", choices=("plain", "fast", "strong"), default="fast",
                   help="the permutation search: fast (sort and deal, local refinement) or strong (stripe-pair "
                        "search within --search-time)")
    r.add_argument("--prefer", choices=("auto", "reorder", "sparsity"), default=None,
                   help="with --permute after --unconstrained: who orders the channels readers slice (auto: N:M "
                        "within the reorder's runs, a slice becomes a gather only for 2%% more kept magnitude; "
                        "reorder: every slice stays; sparsity: whenever N:M keeps more)")
    r.add_argument("--search-time", type=float, default=10.0, metavar="S",
                   help="seconds the strong search may take in all (default 10)")
    r.add_argument("--layers", metavar="REGEX",
                   help="only layers whose node or weight name matches (whole) take the pattern")
    r.add_argument("--first-layer", action="store_true", help="sparsify the first layers (reading the input) too")
    r.add_argument("--last-layer", action="store_true", help="sparsify the last layers (the classifier) too")
    r.add_argument("--error-budget", type=float, default=1.0, metavar="F",
                   help="largest relative L2 error of the outputs --verify accepts after sparsifying (default 1)")
    r.add_argument("--report", metavar="REPORT.json", help="also write the report as JSON")
    r.add_argument("--plot", metavar="WIDTHS.png", help="also write a bar chart of the widths per layer")
    r.add_argument("--unconstrained", action="store_true",
                   help="each reader of a shared tensor (residual stream, concat) keeps its own channels")
    r.add_argument("--reorder", choices=("search", "upscale", "none"), default=None,
                   help="with --unconstrained: channel order for contiguous reads (default search; upscale: "
                        "UPSCALE's heuristic; none: reader gathers in the original order)")
    r.add_argument("--contiguity", type=_fraction(upper_open=True), default=0.0, metavar="F",
                   help="with --unconstrained: snap a reader to one contiguous range when that loses at most "
                        "this fraction of its kept importance (e.g. 0.02)")
    r.add_argument("--verify", action="store_true", help="check the pruning contract numerically (float64)")
    r.set_defaults(func=_prune)

    c = sub.add_parser("compile", help="build a C++ library and runner for the host, aarch64 or wasm32")
    c.add_argument("model", help="model.onnx, graph.gpir, or file.py:factory returning (module, inputs)")
    c.add_argument("--backend", choices=("cpp",), default="cpp", help="code generator (default cpp)")
    c.add_argument("--target", choices=("host", "aarch64", "wasm32"), default="host",
                   help="host (this machine), aarch64 (Linux, NEON) or wasm32 (WASI, SIMD128)")
    c.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write the build into")
    c.add_argument("--threads", type=_positive_int, default=1, metavar="N", help="worker threads (default 1)")
    c.add_argument("--weights", choices=("embed", "bin"), default="embed",
                   help="embed the weights in the library (default) or write model_weights.bin beside it")
    c.add_argument("--sparse", choices=("auto", "off", "csr", "block4", "block8", "nm2:4"), default="auto",
                   help="auto (default): dense or sparse per 1x1 conv / linear from the measured break-even "
                        "table; off: all dense; a format: forced wherever it applies")
    c.add_argument("--fuse", choices=("auto", "on", "off"), default="auto",
                   help="auto (default): [1x1 expand] -> depthwise -> 1x1 project [+ residual] chains whose "
                        "tensors would not stay in cache (or, on several threads, whose bands per thread are "
                        "tall enough) run as one kernel over bands of rows; on: every such chain; off: none")
    c.set_defaults(func=_compile)
    return p


class _Parser(argparse.ArgumentParser):
    """Usage errors in the command's one-line form (exit 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"graphprune: error: {_one_line(message)} (see `{self.prog} --help`)\n")


def _fraction(*, lower_open: bool = False, upper_open: bool = False) -> Callable[[str], float]:
    """An option type: a float in [0, 1], with either end open; argparse names the option."""
    lo, hi = "(" if lower_open else "[", ")" if upper_open else "]"

    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            x = float("nan")
        inside = (x > 0 if lower_open else x >= 0) and (x < 1 if upper_open else x <= 1)  # False for NaN
        if not inside:
            raise argparse.ArgumentTypeError(f"expected a fraction in {lo}0, 1{hi}, got {text!r}")
        return x

    return parse


def _round_to(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 or 'auto', got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


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
