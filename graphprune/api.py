"""The small public surface: trace, load, save, parse, optimize, cost, coupling_groups, prune, sparsify."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .ir.errors import ExportError, ModelLoadError
from .ir.graph import Graph
from .pm import Instrument, PassResult, Pipeline

if TYPE_CHECKING:
    import onnx
    import torch

    from graphprune.passes.analysis.cost import Cost
    from graphprune.passes.analysis.coupling import Coupling, CouplingGroup
    from graphprune.passes.analysis.report import PruneReport
    from graphprune.passes.analysis.sparsity_report import SparsityReport

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
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; give the output ordinary permissions
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


def coupling_groups(graph: Graph) -> tuple[CouplingGroup, ...]:
    """Every channel dimension that prunes as one: its units, members, constraints and, when it cannot
    be pruned, why."""
    return analyze_coupling(graph).groups


def analyze_coupling(graph: Graph) -> Coupling:
    from graphprune.passes.analysis.coupling import analyze

    return analyze(graph)


def prune(
    graph: Graph,
    channels: float = 0.5,
    *,
    criterion: str = "l2",
    scope: str = "local",
    round_to: int | str = 8,
    min_keep: float = 0.1,
    target_macs: float | None = None,
    target_params: float | None = None,
    keep: Sequence[str] = (),
    calib: Sequence[np.ndarray] | None = None,
    seed: int = 0,
    verify: bool | None = None,
    constrained: bool = True,
    reorder: str = "search",
    contiguity: float = 0.0,
) -> Graph:
    """A new graph with channels physically removed.

    `channels` is the fraction of prunable channels to remove; `target_macs` / `target_params` instead
    keep that fraction of the original MACs / parameters (met within 2%). `criterion`: l1, l2, bn,
    taylor (needs `calib`, one array per graph input), random, lamp. `scope`: local (every group loses
    the same fraction) or global (groups ranked together, LAMP-normalised). `round_to`: kept widths
    rounded up to a multiple (8 by default: SIMD-friendly widths; 1 = none; "auto": the vector width
    of this machine's CPU in floats, 16 with AVX-512, 8 with AVX2, else 4: onnxruntime's blocked NCHWc
    convolutions compute whole blocks of that many channels, so other widths buy no speed). `keep`: regexes of node or
    value names whose channels stay.

    `constrained=False`: every reader of a shared tensor (a residual stream, a concat read by several
    layers) keeps its own input channels; producers drop only the channels no reader reads. Streams
    and readers are chosen jointly under the budget from the constrained selection, never keeping
    less importance than it at no more cost (passes/transform/joint.py). The
    channels are then reordered (`reorder`: search, upscale or none) so that as many readers as
    possible read a contiguous range (a slice) instead of a gather; `contiguity` (e.g. 0.02) snaps a
    reader to a contiguous range when that loses at most that fraction of its kept importance.
    """
    options = {k: v for k, v in locals().items() if k != "graph"}  # every keyword above, as given
    return _prune(graph, report=False, **options)[0]


def prune_with_report(
    graph: Graph,
    channels: float = 0.5,
    *,
    criterion: str = "l2",
    scope: str = "local",
    round_to: int | str = 8,
    min_keep: float = 0.1,
    target_macs: float | None = None,
    target_params: float | None = None,
    keep: Sequence[str] = (),
    calib: Sequence[np.ndarray] | None = None,
    seed: int = 0,
    verify: bool | None = None,
    constrained: bool = True,
    reorder: str = "search",
    contiguity: float = 0.0,
) -> tuple[Graph, PruneReport]:
    """`prune` (same options), and the report of what it did: widths, parameters and MACs per layer,
    units kept per coupling group, blocked groups and the selection's notes."""
    options = {k: v for k, v in locals().items() if k != "graph"}  # every keyword above, as given
    pruned, report = _prune(graph, report=True, **options)
    assert report is not None
    return pruned, report


def _prune(graph: Graph, *, report: bool, **options: Any) -> tuple[Graph, PruneReport | None]:
    """prune / prune_with_report: `options` are their keywords."""
    from graphprune.passes.analysis.report import build_report, segment_rows
    from graphprune.passes.transform.prune_channels import PruneChannels
    from graphprune.passes.transform.reorder import METHODS, Reorder

    reorder, calib, keep = options.pop("reorder"), options.pop("calib"), options.pop("keep")
    if reorder not in METHODS:
        raise ValueError(f"reorder={reorder!r}: expected one of {', '.join(METHODS)}")
    verify = options.pop("verify")
    options["round_to"] = resolve_round_to(options["round_to"])
    # the pass takes 0 for "no budget", one regex for all `keep` patterns and the calibration arrays
    options["target_macs"] = options["target_macs"] or 0.0
    options["target_params"] = options["target_params"] or 0.0
    p = PruneChannels(
        keep="|".join(f"(?:{k})" for k in keep),
        calib=tuple(np.asarray(a) for a in calib) if calib is not None else None,
        **options,
    )
    passes: list[Any] = [p] if p.constrained else [p, Reorder(method=reorder)]
    # through optimize, so the structural verifier (and, asked for, the contract check) still runs
    result = _LastResult()
    pruned = optimize(graph, Pipeline(passes), verify=verify, instruments=[result])
    if not report:
        return pruned, None
    stats = result.stats[PruneChannels.name]
    segments = segment_rows(result.stats.get(Reorder.name, {}).get("segments", ()))
    return pruned, build_report(graph, pruned, stats["coupling"], stats["keep"], stats.get("notes", ()), segments)


def resolve_round_to(round_to: int | str) -> int:
    """round_to as a number: "auto" is the vector width of this machine's CPU in floats (>= 4)."""
    if round_to == "auto":
        from graphprune.backends.cpp import capability

        return max(4, capability("host").vector_floats)
    if not isinstance(round_to, int | np.integer) or isinstance(round_to, bool) or round_to < 1:
        raise ValueError(f"round_to={round_to!r}: expected a whole number >= 1 or 'auto'")
    return int(round_to)


def sparsify(
    graph: Graph,
    pattern: str = "2:4",
    *,
    permute: bool = True,
    sparsity: float | None = None,
    scope: str = "local",
    layers: str | None = None,
    first: bool = False,
    last: bool = False,
    search: str = "fast",
    time_budget: float = 10.0,
    budget: float = 1.0,
    seed: int = 0,
    verify: bool | None = None,
    prefer: str = "auto",
    min_gain: float = 0.02,
) -> Graph:
    """A new graph whose weights follow a sparsity pattern; the masks travel with the weights
    (`Value.sparsity`).

    `pattern`: "N:M" (any N < M, along each layer's reduction axis), "block:RxC" (R outputs x C
    inputs) or "unstructured". `sparsity`: the fraction removed for blocks and unstructured (default
    0.5; N:M removes 1 - N/M). `scope`: local (every layer at the target) or global (LAMP ranking
    across layers; blocks and unstructured). `layers`: a regex matched whole against node or weight
    names. The first layers (reading the model input) and the last (the classifier) stay dense unless
    `first` / `last`. Layers that do not fit the pattern are skipped and listed in the report.
    `permute`: first permute channels (an exact rewrite) so the masks keep more magnitude; `search`:
    fast (sort-and-deal plus local refinement), strong (ASP-style stripe-pair search within
    `time_budget` seconds) or plain. `prefer`: who sets the order of channels that an unconstrained
    prune's reorder made contiguous (readers reading slices): auto (N:M is searched within the
    reorder's runs, so every slice stays; a reader turns its slice into a gather with an order of its
    own only when that keeps more than `min_gain` of its magnitude), reorder (every slice stays) or
    sparsity (a reader takes its own order whenever it keeps more). `budget`: the largest relative L2
    error of the outputs the numerical verifier accepts (checked when `verify`)."""
    options = {k: v for k, v in locals().items() if k != "graph"}  # every keyword above, as given
    return sparsify_with_report(graph, **options)[0]


def sparsify_with_report(
    graph: Graph,
    pattern: str = "2:4",
    *,
    permute: bool = True,
    sparsity: float | None = None,
    scope: str = "local",
    layers: str | None = None,
    first: bool = False,
    last: bool = False,
    search: str = "fast",
    time_budget: float = 10.0,
    budget: float = 1.0,
    seed: int = 0,
    verify: bool | None = None,
    prefer: str = "auto",
    min_gain: float = 0.02,
) -> tuple[Graph, SparsityReport]:
    """`sparsify` (same options), and the report: per layer sparsity, kept magnitude (with and without
    the permutation), weight and output error; the output error against the budget; skipped layers."""
    from dataclasses import replace

    from graphprune.ir.sparsity import parse_pattern
    from graphprune.passes.analysis.sparsity_report import SparsityReport
    from graphprune.passes.transform.sparse_permute import PermuteForSparsity
    from graphprune.passes.transform.sparsify import Sparsify

    if sparsity is not None and parse_pattern(pattern).kind == "nm":
        raise ValueError(f"pattern {pattern!r} fixes the sparsity (1 - N/M); give sparsity only with block or "
                         "unstructured patterns")
    target = 0.5 if sparsity is None else float(sparsity)
    sp = Sparsify(pattern=pattern, sparsity=target, scope=scope, layers=layers or "", first=first, last=last,
                  budget=budget, seed=seed)
    passes: list[Any] = [sp]
    if permute:
        passes.insert(0, PermuteForSparsity(pattern=pattern, sparsity=target, layers=layers or "", first=first,
                                            last=last, search=search, time_budget=time_budget, seed=seed,
                                            prefer=prefer, min_gain=min_gain))
    results = _LastResult()
    out = optimize(graph, Pipeline(passes), verify=verify, instruments=[results])
    st = results.stats[Sparsify.name]
    perm = results.stats.get(PermuteForSparsity.name, {})
    unpermuted: dict[str, float] = {}
    if permute:  # what the same masks would keep on the weights in their original order
        from graphprune.passes.transform.sparsify import kept_fraction

        layers_found, _, masks = sp.masks(graph)
        unpermuted = {lay.weight.name: kept_fraction(lay.weight.data, m) for lay, m in zip(layers_found, masks,
                                                                                             strict=True)}
    rows = tuple(replace(r, kept_unpermuted=unpermuted.get(r.weight)) for r in st["layers"])
    report = SparsityReport(
        st["pattern"], rows, tuple(st["skipped"]), results.error[Sparsify.name], budget,
        tuple(perm.get("groups", ())), tuple(perm.get("skipped", ())), search if permute else "plain",
    )
    return out, report


class _LastResult(Instrument):
    """Keeps the stats and measured error of every pass that ran, by pass name (the last run of each)."""

    def __init__(self) -> None:
        self.stats: dict[str, dict[str, Any]] = {}
        self.error: dict[str, Any] = {}

    def after_pass(self, p: Any, graph: Graph, result: PassResult) -> None:
        self.stats[p.name] = result.stats
        self.error[p.name] = result.error


def compile(
    graph: Graph,
    backend: str = "cpp",
    *,
    target: str = "host",
    out_dir: str | os.PathLike[str] = "build",
    threads: int = 1,
    weights: str = "embed",
    sparse: str = "auto",
    fuse: str = "auto",
) -> Any:
    """Build a deployable library and runner for `graph` into out_dir; returns an artifact whose
    `.run(*arrays)` executes it (host: in process; aarch64: under qemu-user; wasm32: under node).

    backend "cpp": target "host" | "aarch64" | "wasm32"; weights "embed" (in the library) or "bin"
    (model_weights.bin beside it); sparse "auto" makes each 1x1 conv and linear dense or sparse by the
    measured break-even table, "off" keeps all dense, a format name ("csr", "block4", "block8", "nm2:4")
    forces it wherever it applies; fuse "auto" computes [1x1 expand] -> depthwise -> 1x1 project
    [+ residual] chains (inverted-residual blocks) in bands of rows that stay in cache where their
    tensors would not (and, on several threads, wherever a band per thread is tall enough: its rows
    then stay on one core), "on" wherever such a chain is, "off" never."""
    if backend != "cpp":
        raise ExportError(f"backend {backend!r}: compile supports backend='cpp'")
    from graphprune.backends import cpp

    return cpp.compile(
        graph, target=target, out_dir=out_dir, threads=threads, weights=weights, sparse=sparse, fuse=fuse
    )
