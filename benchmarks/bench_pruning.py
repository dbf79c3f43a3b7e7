"""Structured pruning, side by side with Torch-Pruning 1.6.1, on the same models in one process.

    python benchmarks/bench_pruning.py [--write] [--only NAME,NAME] [--reps 3] [--samples 20]

Models: ResNet-50 and MobileNetV2 at full size (1x3x224x224), every zoo model (tests/zoo.py) and
six probes of op patterns Torch-Pruning is known to get wrong (channel shuffle, chunk, channel
slicing, split + concat in swapped order, PixelShuffle, grouped conv). For each model and tool:

- **correct**: the zero-invariant check in float64. Half of the units of every prunable group are
  zeroed in every weight they own (graphprune: the members of gp.coupling_groups; Torch-Pruning: the
  dependencies of its DependencyGraph groups, with TP's own index maps), then the model is pruned
  at exactly that fraction with the L1 criterion, so the zeroed units are the ones removed. The
  pruned output must equal the zeroed model's (max |diff| <= 1e-9 x max(1, max |ref|)). Removing a
  channel is not zeroing it where statistics run over channels (LayerNorm, RMSNorm, GroupNorm, a
  mean over channels): graphprune compares every group against its masked reference and, in a
  second run, the groups without statistics against the zeroed model. Torch-Pruning has no masked
  reference, so its groups that touch such statistics (found through graphprune's analysis of the
  same weights) are left out of its check and counted.
- **time**: graphprune: gp.trace, then coupling + prune (gp.prune, L1, 50%, numerical verification
  off), with and without the trace; Torch-Pruning: pruner construction (DependencyGraph build) +
  pruner.step(). Minimum of --reps runs, each on a fresh copy.
- **cost**: params and MACs at the same 50% channel ratio (L1, local), both measured with gp.cost
  (Torch-Pruning's pruned module traced with gp.trace). The classifier / output layers stay whole
  (graphprune blocks model outputs itself; Torch-Pruning gets them as ignored_layers).
- **latency**: onnxruntime (intra_op_num_threads=2; the full-size models also with 1), graphprune's
  models exported with gp.save, Torch-Pruning's with torch.onnx.export(dynamo=True), dense and pruned
  of both, runs interleaved, the fastest of --samples after warm-up (the machine is shared: a slower
  sample is another job's noise, not the model's). speed-up = dense / pruned latency (each tool
  against its own dense export); MACs ratio = dense / pruned MACs.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import platform
import re
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from graphprune.passes.analysis.coupling import Coupling, analyze  # noqa: E402
from graphprune.passes.analysis.select import SelectOptions, select  # noqa: E402
from graphprune.passes.transform.prune_channels import masked_reference  # noqa: E402
from hf_zoo import MODELS as HF_MODELS  # noqa: E402
from hf_zoo import FirstOutput, example_input  # noqa: E402
from mobilenet import mobilenet_v2  # noqa: E402
from resnet import resnet50  # noqa: E402
from results import best_of, cpu_name  # noqa: E402
from results import write_section as write_results  # noqa: E402
from zoo import ZOO  # noqa: E402

import graphprune as gp  # noqa: E402
from graphprune.ir.graph import Graph  # noqa: E402
from graphprune.parallel import threads  # noqa: E402

RATIO = 0.5
ROUNDED = (8, 16)  # round_to values whose latency is measured too
TOL = 1e-9
SEED = 1

# ------------------------------------------------------------------------------------------------
# Probes: op patterns Torch-Pruning is known to get wrong (../shared/research/peers-structural-pruning.md)
# ------------------------------------------------------------------------------------------------


class ShuffleProbe(nn.Module):
    """ShuffleNet's channel shuffle: view -> transpose -> view between two convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(x))
        b, c, h, w = y.shape
        y = y.view(b, 4, c // 4, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.head(F.relu(self.conv2(y)))


class ChunkProbe(nn.Module):
    """YOLOv8's C2f: chunk in two, a conv on one half, concat of all three."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 1)
        self.m = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(24, 16, 1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = F.relu(self.conv1(x)).chunk(2, 1)
        c = F.relu(self.m(b))
        return self.head(F.relu(self.conv2(torch.cat([a, b, c], 1))))


class SliceProbe(nn.Module):
    """Channel slicing x[:, 2:6] (partial convolution)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(x))
        return self.head(F.relu(self.conv2(y[:, 2:6])))


class SplitSwapProbe(nn.Module):
    """split with literal sizes, then concat in the swapped order."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(F.relu(self.conv1(x)), [3, 5], 1)
        return self.head(F.relu(self.conv2(torch.cat([q, p], 1))))


class PixelShuffleProbe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pixel_shuffle(F.relu(self.conv1(x)), 2)
        return self.head(F.relu(self.conv2(y)))


class GroupedConvProbe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.conv3 = nn.Conv2d(16, 16, 1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.head(F.relu(self.conv3(y)))


# ------------------------------------------------------------------------------------------------
# Cases
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], nn.Module]  # eval mode, seeded
    inputs: Callable[[], tuple[torch.Tensor, ...]]
    kind: str  # "full" (the real-size convolutional models), "zoo", "probe" or "hf" (Hugging Face architectures)


@torch.no_grad()
def _randomize_bn(model: nn.Module) -> nn.Module:
    """BatchNorm layers that are not the identity (as in a trained model)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model


def _seeded(factory: Callable[[], nn.Module], seed: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return _randomize_bn(factory()).eval()

    return build


def _image(*shape: int, seed: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    return lambda: (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)),)


def cases() -> list[Case]:
    out = [
        Case("ResNet-50", _seeded(resnet50, 0), _image(1, 3, 224, 224, seed=0), "full"),
        Case("MobileNetV2", _seeded(mobilenet_v2, 0), _image(1, 3, 224, 224, seed=0), "full"),
    ]
    out += [Case(f"zoo/{name}", e.build, e.example_inputs, "zoo") for name, e in ZOO.items()]
    probes: list[tuple[str, Callable[[], nn.Module]]] = [
        ("channel shuffle", ShuffleProbe),
        ("chunk (C2f)", ChunkProbe),
        ("slice x[:, 2:6]", SliceProbe),
        ("split + swapped concat", SplitSwapProbe),
        ("PixelShuffle", PixelShuffleProbe),
        ("grouped conv", GroupedConvProbe),
    ]
    out += [Case(f"probe/{n}", _seeded(f, 7), _image(1, 3, 16, 16, seed=7), "probe") for n, f in probes]
    out += [Case(f"hf/{name}", _seeded(_hf(factory), 3), _hf_input(image), "hf") for name, (factory, image, _) in
            HF_MODELS.items()]
    return out


def _hf(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    return lambda: FirstOutput(factory())


def _hf_input(image: bool) -> Callable[[], tuple[torch.Tensor, ...]]:
    def make() -> tuple[torch.Tensor, ...]:
        torch.manual_seed(5)
        return (example_input(image),)

    return make


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def first_line(e: BaseException) -> str:
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(e).__name__}: {text[:160]}"


def as64(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(t.double() if t.is_floating_point() else t for t in inputs)


def arrays(inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    return [t.detach().numpy() for t in inputs]


def outputs_of(out: Any) -> list[np.ndarray]:
    if isinstance(out, torch.Tensor):
        out = [out]
    return [np.asarray(o.detach().numpy() if isinstance(o, torch.Tensor) else o, dtype=np.float64) for o in out]


def max_err(got: list[np.ndarray], ref: list[np.ndarray]) -> float:
    """max |got - ref| / max(1, max |ref|) over outputs; inf when shapes differ."""
    if len(got) != len(ref):
        return float("inf")
    worst = 0.0
    for a, b in zip(got, ref, strict=True):
        if a.shape != b.shape:
            return float("inf")
        scale = max(1.0, float(np.abs(b).max()) if b.size else 1.0)
        worst = max(worst, float(np.abs(a.astype(np.float64) - b).max()) / scale if b.size else 0.0)
    return worst


@contextlib.contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise TimeoutError in the main thread after `seconds` (Torch-Pruning's graph build can crawl)."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{what} did not finish in {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def quiet() -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def trace(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Graph:
    with quiet():
        return gp.trace(model, inputs)


def output_layers(model: nn.Module, graph: Graph) -> list[str]:
    """Names of the layers that produce the model's outputs (Torch-Pruning's usual ignored_layers)."""
    found: list[str] = []
    names = dict(model.named_modules())
    for v in graph.outputs:
        node = v.producer
        while node is not None:
            path = node.name
            while path and path not in names:
                path = path.rpartition(".")[0]
            if path and isinstance(names[path], nn.Conv2d | nn.Conv1d | nn.Linear | nn.ConvTranspose2d):
                found.append(path)
                break
            node = node.inputs[0].producer if node.inputs else None
    return found


# ------------------------------------------------------------------------------------------------
# graphprune: zero-invariant check
# ------------------------------------------------------------------------------------------------


def gp_chosen(coupling: Coupling, keep_nodes: tuple[str, ...]) -> dict[int, np.ndarray]:
    """What a local L1 selection at RATIO removes, drawn at random (so bins and rounding hold)."""
    rng = np.random.default_rng(SEED)
    scores = {g.id: rng.random(g.size) for g in coupling.groups}
    return select(coupling, scores, SelectOptions(channels=RATIO, scope="local", round_to=1, keep_nodes=keep_nodes))


def gp_zeroed(graph: Graph, coupling: Coupling, keep: dict[int, np.ndarray]) -> Graph:
    """A copy in which every weight element owned by a removed unit is zero."""
    out = graph.copy()
    by_name = {c.name: c for c in out.constants}
    for g in coupling.groups:
        gone = ~np.asarray(keep.get(g.id, np.ones(g.size, bool)), bool)
        if not gone.any():
            continue
        for m in g.weights():
            if not m.value.type.dtype.is_float:
                continue
            target = by_name[m.value.name]
            data = np.array(target.data)
            hit = (m.units >= 0) & gone[np.maximum(m.units, 0)]
            shape = [data.shape[a] if a in m.axes else 1 for a in range(data.ndim)]
            data[np.broadcast_to(hit.reshape(shape), data.shape)] = 0.0
            out.replace_const_data(target, data)
    return out


@dataclass
class Check:
    text: str = "not run"
    wrong: bool = False
    failed: bool = False


def gp_check(case: Case, limit: float) -> Check:
    try:
        with time_limit(limit, "graphprune check"):
            return _gp_check(case)
    except Exception as e:  # noqa: BLE001 - any failure is a result
        return Check(f"error: {first_line(e)}", failed=True)


def _gp_check(case: Case) -> Check:
    model = case.build().double()
    inputs = as64(case.inputs())
    graph = trace(model, inputs)
    x = arrays(inputs)
    coupling = analyze(graph)
    stats = [g for g in coupling.groups if g.prunable and g.stats]
    runs = [("all", ())]
    if stats:
        runs.append(("no-stats", tuple(re.escape(g.name) for g in stats)))
    parts, worst, wrong = [], 0.0, False
    for label, patterns in runs:
        keep = gp_chosen(coupling, patterns)
        removed = sum(int((~np.asarray(k, bool)).sum()) for k in keep.values())
        groups = sum(1 for k in keep.values() if not np.all(k))
        if removed == 0:
            continue
        zeroed = gp_zeroed(graph, coupling, keep)
        with quiet():
            pruned = gp.prune(zeroed, RATIO, criterion="l1", round_to=1, keep=patterns, verify=False)
        got = pruned.run(*x, dtype="float64")
        ref = masked_reference(zeroed, analyze(zeroed), keep).run(*x, dtype="float64")
        err = max_err(got, ref)
        what = f"{groups} groups / {removed} units vs masked ref"
        if label == "no-stats" or not stats:
            e2 = max_err(got, zeroed.run(*x, dtype="float64"))
            err = max(err, e2)
            what += " + zeroed model"
        worst = max(worst, err)
        wrong |= not err <= TOL
        parts.append(what)
    if not parts:
        return Check("nothing prunable")
    verdict = "WRONG" if wrong else "ok"
    return Check(f"{verdict} (max err {worst:.1e}; {'; '.join(parts)})", wrong=wrong)


# ------------------------------------------------------------------------------------------------
# Torch-Pruning: zero-invariant check
# ------------------------------------------------------------------------------------------------


def tp_pruner(model: nn.Module, inputs: tuple[torch.Tensor, ...], ignored: list[nn.Module]) -> Any:
    import torch_pruning as tp

    for p in model.parameters():  # Torch-Pruning traces through autograd: parameters must need grads
        p.requires_grad_(True)
    example: Any = inputs[0] if len(inputs) == 1 else inputs
    with quiet():
        return tp.pruner.MetaPruner(
            model,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=RATIO,
            ignored_layers=ignored,
        )


def _plain(idxs: Any) -> list[int]:
    from torch_pruning._helpers import to_plain_idxs

    return [int(i) for i in to_plain_idxs(list(idxs))]


def _tp_weight_axes(dg: Any, dep: Any) -> list[tuple[str, int]]:
    """(parameter FQN, pruned axis) for one dependency (to find graphprune's view of the same weight)."""
    mod = dep.target.module
    out = dg.is_out_channel_pruning_fn(dep.handler)
    if isinstance(mod, nn.Parameter):
        return [(dg._param_to_name.get(mod, ""), int(dep.target.pruning_dim))]
    name = dg._module2name.get(mod, "")
    if isinstance(mod, nn.modules.conv._ConvNd):
        axis = (1 if out else 0) if mod.transposed else (0 if out else 1)
        keys = [(f"{name}.weight", axis)]
        return keys + ([(f"{name}.bias", 0)] if out and mod.bias is not None else [])
    if isinstance(mod, nn.Linear):
        keys = [(f"{name}.weight", 0 if out else 1)]
        return keys + ([(f"{name}.bias", 0)] if out and mod.bias is not None else [])
    if isinstance(mod, nn.Embedding):
        return [(f"{name}.weight", 1)]
    return [(f"{name}.{pn}", 0) for pn, p in mod.named_parameters(recurse=False) if p.dim() == 1]


@torch.no_grad()
def _tp_zero(dg: Any, dep: Any, idxs: list[int]) -> None:
    """Zero every weight element one dependency would remove."""
    mod = dep.target.module
    out = dg.is_out_channel_pruning_fn(dep.handler)
    idx = torch.as_tensor(idxs, dtype=torch.long)
    if isinstance(mod, nn.Parameter):
        mod.data.index_fill_(int(dep.target.pruning_dim), idx, 0.0)
        return
    if isinstance(mod, nn.modules.conv._ConvNd):
        w, g = mod.weight, mod.groups
        # weight [OUT, IN/g, ...] (transposed: [IN, OUT/g, ...]); the output axis of one is the input of the other
        lead_is_out = not mod.transposed
        n_lead, n_second = w.shape[0], w.shape[1] * g
        if out == lead_is_out:
            w[idx] = 0.0
        else:
            per_lead, per_second = n_lead // g, n_second // g
            for i in idxs:
                grp = i // per_second
                w[grp * per_lead : (grp + 1) * per_lead, i % per_second] = 0.0
        if out and mod.bias is not None:
            mod.bias[idx] = 0.0
        return
    if isinstance(mod, nn.Linear):
        if out:
            mod.weight[idx] = 0.0
            if mod.bias is not None:
                mod.bias[idx] = 0.0
        else:
            mod.weight[:, idx] = 0.0
        return
    if isinstance(mod, nn.Embedding):
        mod.weight[:, idx] = 0.0
        return
    for p in mod.parameters(recurse=False):  # norms, PReLU: per-channel vectors
        if p.dim() == 1 and p.numel() > 1:
            p[idx] = 0.0
        elif p.numel() > 1:
            raise NotImplementedError(f"the harness cannot zero a {type(mod).__name__}")


def tp_groups(pruner: Any) -> list[tuple[Any, int]]:
    """The groups BasePruner.step() prunes, each with its channel-group count (as in its _prune)."""
    found = []
    for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                          root_module_types=pruner.root_module_types):
        if not pruner._check_pruning_ratio(group):
            continue
        found.append((group, pruner._get_channel_groups(group)))
    return found


def tp_check(case: Case, stats_keys: set[tuple[str, int]], limit: float) -> Check:
    try:
        with time_limit(limit, "Torch-Pruning check"):
            return _tp_check(case, stats_keys)
    except Exception as e:  # noqa: BLE001
        return Check(f"error: {first_line(e)}", failed=True)


def _tp_check(case: Case, stats_keys: set[tuple[str, int]]) -> Check:
    base = case.build().double()
    inputs = as64(case.inputs())
    ignored = output_layers(base, trace(copy.deepcopy(base), inputs))
    # groups that touch channel statistics cannot be checked against the zeroed model: leave them whole
    model = copy.deepcopy(base)
    pruner = tp_pruner(model, inputs, [model.get_submodule(n) for n in ignored])
    skip: list[str] = []
    for group, _ in tp_groups(pruner):
        keys = {k for dep, _ in group for k in _tp_weight_axes(pruner.DG, dep)}
        if keys & stats_keys:
            skip.append(pruner.DG._module2name[group[0].dep.target.module])
    if skip:
        model = copy.deepcopy(base)
        pruner = tp_pruner(model, inputs, [model.get_submodule(n) for n in ignored + skip])
    rng = np.random.default_rng(SEED)
    removed, count = 0, 0
    for group, ch_groups in tp_groups(pruner):
        n = pruner.DG.get_out_channels(group[0].dep.target.module)
        size = n // ch_groups
        k = size - int(size * (1 - RATIO))
        if k <= 0:
            continue
        chosen = np.sort(rng.choice(size, k, replace=False))
        idxs = [int(c + j * size) for j in range(ch_groups) for c in chosen]
        sub = pruner.DG.get_pruning_group(group[0].dep.target.module, group[0].dep.handler, idxs)
        for dep, di in sub:
            _tp_zero(pruner.DG, dep, _plain(di))
        removed += len(idxs)
        count += 1
    zeroed = copy.deepcopy(model)
    with quiet():
        pruner.step()
    with torch.no_grad():
        ref = outputs_of(zeroed(*inputs))
        try:
            got = outputs_of(model(*inputs))
        except Exception as e:  # noqa: BLE001
            return Check(f"error: pruned model fails: {first_line(e)}", failed=True)
    err = max_err(got, ref)
    wrong = not err <= TOL
    note = f"; {len(skip)} groups with channel statistics left out" if skip else ""
    shape = "" if err != float("inf") else " (output shape changed)"
    verdict = "WRONG" if wrong else "ok"
    return Check(f"{verdict} (max err {err:.1e}{shape}; {count} groups / {removed} units vs zeroed model{note})",
                 wrong=wrong)


def stats_keys_of(case: Case) -> set[tuple[str, int]]:
    """(weight FQN, axis) of every weight element in a graphprune group with channel statistics."""
    try:
        coupling = analyze(trace(case.build(), case.inputs()))
    except Exception:  # noqa: BLE001 - then nothing is known to be left out
        return set()
    keys: set[tuple[str, int]] = set()
    for g in coupling.groups:
        if g.stats:
            for m in g.weights():
                if m.value.source:
                    keys.update((m.value.source, a) for a in m.axes)
    return keys


# ------------------------------------------------------------------------------------------------
# time, cost, latency
# ------------------------------------------------------------------------------------------------


@dataclass
class Row:
    case: Case
    gp_check: Check = field(default_factory=Check)
    tp_check: Check = field(default_factory=Check)
    gp_trace: float = float("nan")
    gp_coupling: float = float("nan")
    gp_prune: float = float("nan")  # coupling + selection + rewrite (gp.prune)
    tp_build: float = float("nan")  # pruner construction = DependencyGraph build
    tp_step: float = float("nan")
    gp_error: str = ""
    tp_error: str = ""
    tp_cost_error: str = ""  # Torch-Pruning pruned, but its model does not run or trace
    dense_params: int = 0
    dense_macs: int = 0
    gp_params: int = 0
    gp_macs: int = 0
    tp_params: int = 0
    tp_macs: int = 0
    # ms by intra-op threads, then by export: gp_dense, gp, gp8, gp16, tp_dense, tp
    lats: dict[int, dict[str, float]] = field(default_factory=dict)
    lat_error: str = ""
    dense_graph: Graph | None = None
    gp_graph: Graph | None = None
    rounded: dict[int, int] = field(default_factory=dict)  # round_to -> MACs of graphprune's pruned graph
    rounded_graphs: dict[int, Graph] = field(default_factory=dict)  # round_to -> that graph (until timed)
    tp_model: nn.Module | None = None

    @property
    def lat(self) -> dict[str, float]:
        """The 2-thread latencies (every model has them)."""
        return self.lats.get(2, {})


def run_graphprune(row: Row, reps: int, limit: float) -> None:
    case = row.case
    model, inputs = case.build(), case.inputs()
    try:
        with time_limit(limit, "gp.trace"):
            row.gp_trace, graph = best_of(lambda: trace(model, inputs), reps)
        row.dense_graph = graph
        cost = gp.cost(graph)
        row.dense_params, row.dense_macs = cost.params, cost.macs
        with time_limit(limit, "coupling analysis"):
            row.gp_coupling, _ = best_of(lambda: analyze(graph), reps)
        with quiet(), time_limit(limit, "gp.prune"):
            row.gp_prune, pruned = best_of(
                lambda: gp.prune(graph, RATIO, criterion="l1", round_to=1, verify=False), reps
            )
        row.gp_graph = pruned
        cost = gp.cost(pruned)
        row.gp_params, row.gp_macs = cost.params, cost.macs
        if case.kind == "full":
            # widths rounded up to multiples of 8 (graphprune's default) and of 16 (onnxruntime's blocked
            # NCHWc layout on AVX-512): for latency
            for r in ROUNDED:
                with quiet():
                    g = gp.prune(graph, RATIO, criterion="l1", round_to=r, verify=False)
                row.rounded[r], row.rounded_graphs[r] = gp.cost(g).macs, g
    except Exception as e:  # noqa: BLE001
        row.gp_error = f"error: {first_line(e)}"


def run_torch_pruning(row: Row, reps: int, limit: float) -> None:
    case = row.case
    base, inputs = case.build(), case.inputs()
    try:
        ignored_names = output_layers(base, trace(base, inputs))
        builds, steps = [], []
        model: nn.Module | None = None
        for _ in range(reps):
            model = copy.deepcopy(base)
            ignored = [model.get_submodule(n) for n in ignored_names]
            with time_limit(limit, "Torch-Pruning's pruner construction (DependencyGraph build)"):
                t = time.perf_counter()
                pruner = tp_pruner(model, inputs, ignored)
                builds.append(time.perf_counter() - t)
            with quiet(), time_limit(limit, "Torch-Pruning's pruner.step()"):
                t = time.perf_counter()
                pruner.step()
                steps.append(time.perf_counter() - t)
        row.tp_build, row.tp_step = min(builds), min(steps)
    except Exception as e:  # noqa: BLE001
        row.tp_error = f"error: {first_line(e)}"
        return
    assert model is not None
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            model(*inputs)
    except Exception as e:  # noqa: BLE001
        row.tp_cost_error = f"pruned model fails: {first_line(e)}"
        return
    row.tp_model = model
    try:
        cost = gp.cost(trace(model, inputs))
        row.tp_params, row.tp_macs = cost.params, cost.macs
    except Exception as e:  # noqa: BLE001
        row.tp_cost_error = f"cost: {first_line(e)}"


def _session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # no spinning: sessions timed in turn must not compete with the previous one's idle threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _export_torch(model: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> None:
    with quiet():
        torch.onnx.export(model, inputs, str(path), dynamo=True)


def run_latency(row: Row, samples: int, threads: tuple[int, ...], warmup: int = 3) -> None:
    case = row.case
    inputs = case.inputs()
    feeds_np = arrays(inputs)
    with tempfile.TemporaryDirectory() as tmp:
        paths: dict[str, Path] = {}
        errors = []
        exports: list[tuple[str, Any]] = [
            ("gp_dense", row.dense_graph),
            ("gp", row.gp_graph),
            *((f"gp{r}", g) for r, g in row.rounded_graphs.items()),
        ]
        for key, fn in (
            *((k, lambda p, g=g: gp.save(g, p)) for k, g in exports if g is not None),
            ("tp_dense", lambda p: _export_torch(case.build(), inputs, p)),
            *((("tp", lambda p: _export_torch(row.tp_model, inputs, p)),) if row.tp_model is not None else ()),
        ):
            path = Path(tmp) / f"{key}.onnx"
            try:
                with quiet():
                    fn(path)
                paths[key] = path
            except Exception as e:  # noqa: BLE001
                errors.append(f"{key} export: {first_line(e)}")
        for n in threads:
            row.lats[n] = _time_sessions(paths, feeds_np, n, samples, warmup, errors)
        row.lat_error = "; ".join(dict.fromkeys(errors))


def _time_sessions(
    paths: dict[str, Path], feeds_np: list[np.ndarray], threads: int, samples: int, warmup: int, errors: list[str]
) -> dict[str, float]:
    """ms per export: the fastest of `samples` interleaved runs with `threads` intra-op threads."""
    sessions = {}
    for key, path in paths.items():
        try:
            s = _session(path, threads)
            names = [i.name for i in s.get_inputs()]
            feeds = dict(zip(names, feeds_np, strict=True))
            s.run(None, feeds)
            sessions[key] = (s, feeds)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{key} run: {first_line(e)}")
    if not sessions:
        return {}
    # inner repeats so that one sample takes >= ~5 ms (tiny models), timed interleaved
    inner = {}
    for key, (s, feeds) in sessions.items():
        t = time.perf_counter()
        s.run(None, feeds)
        inner[key] = max(1, int(0.005 / max(time.perf_counter() - t, 1e-6)))
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for i in range(warmup + samples):
        for key, (s, feeds) in sessions.items():
            t = time.perf_counter()
            for _ in range(inner[key]):
                s.run(None, feeds)
            if i >= warmup:
                times[key].append((time.perf_counter() - t) / inner[key])
    return {k: 1000 * min(v) for k, v in times.items()}


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------


def _pct(before: int, after: int) -> str:
    return f"{100 * (1 - after / before):.1f}%" if before and after else "-"


def _s(x: float) -> str:
    return "-" if x != x else f"{x:.3f}"


def tables(rows: list[Row]) -> str:
    out = ["### Correctness: the zero-invariant check (float64, tolerance 1e-9 relative)", "",
           "| model | graphprune | Torch-Pruning 1.6.1 |", "|---|---|---|"]
    for r in rows:
        out.append(f"| {r.case.name} | {r.gp_check.text} | {r.tp_check.text} |")
    out += ["", "### Analysis + prune time (s, min of the runs)", "",
            "| model | gp trace | gp coupling | gp coupling + prune | gp incl. trace | TP build (DepGraph) "
            "| TP step | TP build + step | TP / gp (excl. trace) | TP / gp (incl. trace) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gp_total = r.gp_trace + r.gp_prune
        tp_total = r.tp_build + r.tp_step
        ratio = f"{tp_total / r.gp_prune:.2f}x" if tp_total == tp_total and r.gp_prune == r.gp_prune else "-"
        ratio2 = f"{tp_total / gp_total:.2f}x" if tp_total == tp_total and gp_total == gp_total else "-"
        gp_cells = (f"{_s(r.gp_trace)} | {_s(r.gp_coupling)} | {_s(r.gp_prune)} | {_s(gp_total)}"
                    if not r.gp_error else f"{r.gp_error} | | | ")
        tp_cells = f"{_s(r.tp_build)} | {_s(r.tp_step)} | {_s(tp_total)}" if not r.tp_error else f"{r.tp_error} | |"
        out.append(f"| {r.case.name} | {gp_cells} | {tp_cells} | {ratio} | {ratio2} |")
    out += ["", f"### Params and MACs at a {RATIO:.0%} channel ratio (L1, local; both counted by gp.cost)", "",
            "| model | dense params | dense MACs | gp params removed | gp MACs removed | TP params removed "
            "| TP MACs removed |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        tp_err = r.tp_error or r.tp_cost_error
        mark = "" if r.tp_check.text.startswith("ok") else " \u2020"
        tp_cells = (f"{_pct(r.dense_params, r.tp_params)}{mark} | {_pct(r.dense_macs, r.tp_macs)}{mark}"
                    if not tp_err else f"{tp_err} | -")
        out.append(
            f"| {r.case.name} | {r.dense_params:,} | {r.dense_macs:,} | {_pct(r.dense_params, r.gp_params)} | "
            f"{_pct(r.dense_macs, r.gp_macs)} | {tp_cells} |"
        )
    out += ["", "\u2020 Torch-Pruning pruned this model at the uniform ratio without an error, but its zero-invariant "
            "check above failed or was wrong: the pruned model is not known to compute the right function."]
    out += ["", "### onnxruntime latency (ms, fastest sample, 2 threads) and realized speed-up vs MACs ratio", "",
            "| model | dense (gp.save) | gp pruned | gp speed-up | gp MACs ratio | dense (torch.onnx) | TP pruned "
            "| TP speed-up | TP MACs ratio | notes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lat = r.lat

        def ms(k: str, lat: dict[str, float] = lat) -> str:
            return f"{lat[k]:.3f}" if k in lat else "-"

        def sp(d: str, p: str, lat: dict[str, float] = lat) -> str:
            return f"{lat[d] / lat[p]:.2f}x" if d in lat and p in lat else "-"

        gmr = f"{r.dense_macs / r.gp_macs:.2f}x" if r.gp_macs else "-"
        tmr = f"{r.dense_macs / r.tp_macs:.2f}x" if r.tp_macs else "-"
        mark = "" if r.tp_check.text.startswith("ok") or "tp" not in lat else " \u2020"
        out.append(f"| {r.case.name} | {ms('gp_dense')} | {ms('gp')} | {sp('gp_dense', 'gp')} | {gmr} | "
                   f"{ms('tp_dense')} | {ms('tp')}{mark} | {sp('tp_dense', 'tp')} | {tmr} | {r.lat_error} |")
    full = [r for r in rows if r.rounded]
    if full:
        out += ["", "graphprune with kept widths rounded up to multiples of 8 (`round_to=8`, its default) and 16 "
                "(onnxruntime's blocked NCHWc convolutions on AVX-512), same sessions, timed in the same interleaved "
                "rounds, with 2 intra-op threads and with 1 (`round_to=\"auto\"` is 16 on AVX-512, 8 on AVX2):", "",
                "| model | threads | round_to | MACs removed | MACs ratio | dense ms | pruned ms | speed-up "
                "| speed-up / MACs ratio |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in full:
            for n, lat in sorted(r.lats.items(), reverse=True):
                for rt, speed, mr in _realized(r, lat):
                    macs = round(r.dense_macs / mr)
                    out.append(f"| {r.case.name} | {n} | {rt} | {_pct(r.dense_macs, macs)} | {mr:.2f}x | "
                               f"{lat['gp_dense']:.3f} | {lat['gp_dense'] / speed:.3f} | {speed:.2f}x | "
                               f"{speed / mr:.0%} |")
    return "\n".join(out)


def _realized(r: Row, lat: dict[str, float]) -> list[tuple[int, float, float]]:
    """(round_to, realized speed-up, MACs ratio) of graphprune's pruned exports timed in `lat`."""
    variants = [(1, "gp", r.gp_macs), *((rt, f"gp{rt}", macs) for rt, macs in r.rounded.items())]
    return [(rt, lat["gp_dense"] / lat[k], r.dense_macs / macs) for rt, k, macs in variants
            if k in lat and "gp_dense" in lat and macs]


def goals(rows: list[Row]) -> str:
    lines = ["### Goals", ""]
    wrong = [r.case.name for r in rows if r.gp_check.wrong]
    failed = [f"{r.case.name} ({r.gp_check.text})" for r in rows if r.gp_check.failed]
    checked = sum(1 for r in rows if r.gp_check.text.startswith("ok"))
    tp_wrong = [r.case.name for r in rows if r.tp_check.wrong]
    tp_failed = [r.case.name for r in rows if r.tp_check.failed]
    verdict = "met" if not wrong else "NOT met"
    lines.append(f"1. No wrong result for graphprune: **{verdict}** ({checked} of {len(rows)} models checked ok; "
                 f"wrong: {', '.join(wrong) or 'none'}; errors: {', '.join(failed) or 'none'}). "
                 f"Torch-Pruning: wrong on {len(tp_wrong)} ({', '.join(tp_wrong) or 'none'}), "
                 f"errors on {len(tp_failed)} ({', '.join(tp_failed) or 'none'}).")
    r50 = next((r for r in rows if r.case.name == "ResNet-50"), None)
    if r50 is not None and r50.gp_prune == r50.gp_prune and r50.tp_build == r50.tp_build:
        tp_total = r50.tp_build + r50.tp_step
        ratio = tp_total / r50.gp_prune
        ratio2 = tp_total / (r50.gp_prune + r50.gp_trace)
        verdict = "met" if ratio >= 3 else "NOT met"
        lines.append(
            f"2. graphprune analysis + prune >= 3x faster than Torch-Pruning's graph build + prune on ResNet-50: "
            f"**{verdict}**: {r50.gp_prune:.3f} s vs {tp_total:.3f} s = {ratio:.2f}x (trace excluded). With the "
            f"trace ({r50.gp_trace:.3f} s) included: {ratio2:.2f}x."
        )
    for r in rows:
        if r.case.kind != "full" or "gp" not in r.lat or not r.gp_macs:
            continue
        for n, lat in sorted(r.lats.items(), reverse=True):
            rels = _realized(r, lat)
            verdict = "met" if any(speed / mr >= 0.8 for _, speed, mr in rels) else "NOT met"
            tp = ""
            if "tp" in lat and r.tp_macs:
                tp = (f" (Torch-Pruning: {lat['tp_dense'] / lat['tp']:.2f}x realized vs "
                      f"{r.dense_macs / r.tp_macs:.2f}x MACs)")
            detail = "; ".join(f"round_to={rt}: {speed:.2f}x realized vs {mr:.2f}x MACs ({speed / mr:.0%})"
                               for rt, speed, mr in rels)
            lines.append(
                f"3. {r.case.name}, {n} thread{'s' if n > 1 else ''}: realized onnxruntime speed-up within 20% of "
                f"the MACs ratio: **{verdict}**: {detail}{tp}."
            )
    return "\n".join(lines)


def profile_prune(case: Case, top: int = 16, runs: int = 5) -> str:
    """cProfile of gp.prune (L1, 50%) on one model: graphprune's functions by cumulative time."""
    import cProfile
    import pstats

    graph = trace(case.build(), case.inputs())
    with quiet():
        gp.prune(graph, RATIO, criterion="l1", round_to=1, verify=False)  # warm-up
    prof = cProfile.Profile()
    with quiet():
        prof.enable()
        for _ in range(runs):
            gp.prune(graph, RATIO, criterion="l1", round_to=1, verify=False)
        prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("cumulative").print_stats(r"graphprune/|passes/", top)
    root = str(HERE.parent) + "/"
    lines = [line.replace(root, "") for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    table = "\n".join(lines[start : start + top + 1])
    return (f"Where gp.prune's time goes on {case.name} (cProfile over {runs} runs: divide by {runs}; graphprune's "
            f"functions by cumulative time; the profiler inflates the total):\n\n```\n{table}\n```")


def machine() -> str:
    cpu = cpu_name()
    import torch_pruning

    tp_version = "1.6.1" if torch_pruning.__version__ == "1.6.0" else torch_pruning.__version__  # 1.6.1 says 1.6.0
    try:
        load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, torch {torch.__version__}, "
            f"torch-pruning {tp_version}, onnxruntime {ort.__version__}, {torch.get_num_threads()} torch threads, "
            f"{threads()} graphprune threads (graphprune.parallel: weights scored and sliced side by side), "
            f"load average at the end {load}")


def write_section(body: str) -> None:
    write_results("## Pruning: graphprune vs Torch-Pruning", body)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="write the results into benchmarks/RESULTS.md")
    ap.add_argument("--only", default="", help="comma-separated substrings of model names")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--limit", type=float, default=60.0, help="seconds allowed per tool and step")
    ap.add_argument("--profile", action="store_true", help="add a cProfile of gp.prune on the first model")
    args = ap.parse_args()
    torch.set_num_threads(2)
    selected = cases()
    if args.only:
        keys = [k.strip().lower() for k in args.only.split(",")]
        selected = [c for c in selected if any(k in c.name.lower() for k in keys)]
    rows = []
    for case in selected:
        row = Row(case)
        t = time.perf_counter()
        row.gp_check = gp_check(case, args.limit)
        row.tp_check = tp_check(case, stats_keys_of(case), args.limit)
        run_graphprune(row, args.reps, args.limit)
        run_torch_pruning(row, args.reps, args.limit)
        run_latency(row, args.samples, (2, 1) if case.kind == "full" else (2,))
        row.dense_graph = row.gp_graph = row.tp_model = None
        row.rounded_graphs = {}
        print(f"{case.name}: {time.perf_counter() - t:.1f} s | gp {row.gp_check.text} | tp {row.tp_check.text}",
              file=sys.stderr, flush=True)
        rows.append(row)
    body = tables(rows) + "\n\n" + goals(rows)
    if args.profile and selected:
        body += "\n\n" + profile_prune(selected[0])
    print(body)
    if args.write:
        command = "python benchmarks/bench_pruning.py --write" + (" --profile" if args.profile else "")
        intro = (
            f"Machine: {machine()}.\nSet-up: `pip install -e '.[bench]'` (Torch-Pruning 1.6.1; torch stays 2.13.0). "
            f"Command: `{command}` (reps {args.reps}, latency samples {args.samples}). "
            "What each column means is in the module docstring of benchmarks/bench_pruning.py.\n"
            "Times are minima over fresh copies in one process; latencies are the fastest of interleaved runs, so "
            "the ratios are more reliable than the absolute numbers on this shared 2-core machine."
        )
        write_section(intro + "\n\n" + body)


if __name__ == "__main__":
    main()
