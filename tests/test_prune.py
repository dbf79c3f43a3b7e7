"""Structured pruning: the zero-invariant check on every zoo model, the masked-reference contract,
pruned models that run everywhere, property tests on random coupled graphs, and a text test."""

from __future__ import annotations

import warnings
from textwrap import dedent

import numpy as np
import onnxruntime as ort
import pytest
import torch
from graphprune.passes.analysis.coupling import Coupling, analyze
from graphprune.passes.analysis.select import SelectOptions, select
from graphprune.passes.transform.prune_channels import masked_reference
from helpers import as_numpy
from hypothesis import given, settings
from test_properties import conv_chains
from zoo import ZOO

import graphprune as gp
from graphprune.inputs import sample_inputs
from graphprune.ir import Graph, Op

NAMES = sorted(ZOO)


def trace64(name: str) -> tuple[Graph, list[np.ndarray]]:
    entry = ZOO[name]
    model = entry.build().double()
    inputs = tuple(t.double() if t.is_floating_point() else t for t in entry.example_inputs())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gp.trace(model, inputs), as_numpy(inputs)


def zeroed(graph: Graph, coupling: Coupling, keep: dict[int, np.ndarray]) -> Graph:
    """A copy whose pruned units have every weight element they own set to zero."""
    out = graph.copy()
    by_name = {c.name: c for c in out.constants}
    for g in coupling.groups:
        gone = ~np.asarray(keep[g.id], bool)
        if not gone.any():
            continue
        for m in g.weights():
            if not m.value.type.dtype.is_float:
                continue
            data = np.array(by_name[m.value.name].data)
            hit = (m.units >= 0) & gone[np.maximum(m.units, 0)]
            shape = [data.shape[a] if a in m.axes else 1 for a in range(data.ndim)]
            order = [m.axes.index(a) for a in range(data.ndim) if a in m.axes]
            data[np.broadcast_to(np.transpose(hit, order).reshape(shape), data.shape)] = 0.0
            out.replace_const_data(by_name[m.value.name], data)
    return out


def chosen_units(coupling: Coupling, fraction: float, seed: int, *, skip_stats: bool) -> dict[int, np.ndarray]:
    """What a local selection removes at `fraction` on random scores (so bins and rounding hold)."""
    rng = np.random.default_rng(seed)
    scores = {g.id: rng.random(g.size) for g in coupling.groups}
    keep = select(coupling, scores, SelectOptions(channels=fraction, scope="local"))
    if skip_stats:
        keep = {g.id: (np.ones(g.size, bool) if g.stats else keep[g.id]) for g in coupling.groups}
    return keep


def assert_same(got: list[np.ndarray], ref: list[np.ndarray], tol: float = 1e-9) -> None:
    for a, b in zip(got, ref, strict=True):
        assert a.shape == b.shape
        scale = max(1.0, float(np.abs(b).max()))
        assert float(np.abs(a - b).max()) <= tol * scale


@pytest.mark.parametrize("name", NAMES)
def test_zero_invariant(name):
    """Zero some groups' channels entirely, prune with L1 at exactly that fraction: the pruned graph
    must equal the zeroed model (float64, 1e-9). Groups where removing is not zeroing (norm
    statistics) are left out here and checked against the masked reference below."""
    graph, x = trace64(name)
    coupling = analyze(graph)
    keep = chosen_units(coupling, 0.5, seed=1, skip_stats=True)
    z = zeroed(graph, coupling, keep)
    removed = sum(int((~k).sum()) for k in keep.values())
    if removed == 0:
        pytest.skip(f"{name}: every prunable group has norm statistics")
    pruned = gp.prune(z, 0.5, criterion="l1", round_to=1, keep=[g.name for g in coupling.groups if g.stats] or ())
    assert gp.cost(pruned).params < gp.cost(graph).params
    assert_same(pruned.run(*x, dtype="float64"), z.run(*x, dtype="float64"))


@pytest.mark.parametrize("name", NAMES)
def test_pruned_equals_masked_reference(name):
    """All groups, stats included: pruned == the original with the pruned channels masked out."""
    graph, x = trace64(name)
    coupling = analyze(graph)
    keep = chosen_units(coupling, 0.5, seed=2, skip_stats=False)
    ref = masked_reference(graph, coupling, keep)
    from graphprune.passes.transform.prune_channels import apply_prune

    pruned = graph.copy()
    from graphprune.passes.transform.prune_channels import _rebind

    apply_prune(pruned, _rebind(coupling, graph, pruned), keep)
    pruned.verify()
    assert_same(pruned.run(*x, dtype="float64"), ref.run(*x, dtype="float64"))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_pruned_model_runs_everywhere(name, tmp_path):
    entry = ZOO[name]
    inputs = entry.example_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = gp.trace(entry.build(), inputs)
    pruned = gp.prune(graph, 0.5, scope="global", round_to=1)
    arrays = as_numpy(inputs)
    dense = graph.run(*arrays)
    out = pruned.run(*arrays)
    assert [o.shape for o in out] == [d.shape for d in dense]
    with torch.no_grad():
        t = as_numpy(pruned.to_torch()(*inputs))
    assert [o.shape for o in t] == [d.shape for d in dense]
    for a, b in zip(t, out, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(b).max())))
    path = tmp_path / "pruned.onnx"
    gp.save(pruned, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), arrays, strict=True)})
    for a, b in zip(got, out, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(b).max())))


@settings(max_examples=30, deadline=None)
@given(conv_chains())
def test_random_coupled_graphs_prune_exactly(graph):
    coupling = analyze(graph)
    x = sample_inputs(graph, seed=4)
    for seed in (0, 1):
        keep = chosen_units(coupling, 0.5, seed=seed, skip_stats=True)
        z = zeroed(graph, coupling, keep)
        pruned = gp.prune(z, 0.5, criterion="l1", round_to=1, verify=True)  # also checks the masked reference
        assert_same(pruned.run(*x), z.run(*x))


def test_prune_text():
    before = """\
    graph @"g"(%x: f64[1,2,3]c1) {
      %a.w = const f64[4,2,1] dense<[1.0, 1.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0]>
      %b.w = const f64[1,4,1] dense<[1.0, 1.0, 1.0, 1.0]>
      %a = conv(%x, %a.w) {stride=[1], pads=[0, 0], dilation=[1], groups=1} : f64[1,4,3]c1 loc("a")
      %r = relu(%a) : f64[1,4,3]c1 loc("r")
      %b = conv(%r, %b.w) {stride=[1], pads=[0, 0], dilation=[1], groups=1} : f64[1,1,3]c1 loc("b")
      return %b
    }
    """
    expected = """\
    graph @"g"(%x: f64[1,2,3]c1) {
      %a.w = const f64[2,2,1] dense<[1.0, 1.0, 2.0, 2.0]>  # out,in,s
      %b.w = const f64[1,2,1] dense<[1.0, 1.0]>  # out,in,s
      %a = conv(%x, %a.w) {stride=[1], pads=[0, 0], dilation=[1], groups=1} : f64[1,2,3]c1 loc("a")
      %r = relu(%a) : f64[1,2,3]c1 loc("r")
      %b = conv(%r, %b.w) {stride=[1], pads=[0, 0], dilation=[1], groups=1} : f64[1,1,3]c1 loc("b")
      return %b
    }
    """
    graph = gp.parse(dedent(before))
    assert str(gp.prune(graph, 0.5, criterion="l1", round_to=1)) == dedent(expected)


def test_prune_pipeline_text_and_budget():
    graph, _ = trace64("resnet_bottleneck")
    out = gp.optimize(graph, "prune-channels{channels=0.5,criterion=l1,scope=global,round-to=4},dce")
    assert gp.cost(out).params < gp.cost(graph).params
    half = gp.prune(graph, target_macs=0.5, scope="global")
    ratio = gp.cost(half).macs / gp.cost(graph).macs
    assert abs(ratio - 0.5) <= 0.02 * 0.5 + 1e-12


def test_grouped_query_attention_keeps_its_ratio():
    graph, x = trace64("llama")
    pruned = gp.prune(graph, 0.5, scope="local")
    ks = [n for n in pruned.nodes if n.name.endswith("k_proj")]
    qs = [n for n in pruned.nodes if n.name.endswith("q_proj")]
    for q, k in zip(qs, ks, strict=True):
        assert q.outputs[0].type.shape[-1] == 2 * k.outputs[0].type.shape[-1]  # 4 q heads per 2 kv heads
    assert [o.shape for o in pruned.run(*x)] == [o.shape for o in graph.run(*x)]


def test_blocked_groups_are_never_pruned():
    graph, _ = trace64("resnet_bottleneck")
    pruned = gp.prune(graph, 0.9, scope="local")
    # the stem reads the RGB input and the head writes the logits: both keep their widths
    convs = [n for n in pruned.nodes if n.op is Op.CONV]
    assert convs[0].inputs[1].type.shape[1] == 3
    assert pruned.outputs[0].type.shape == graph.outputs[0].type.shape


def _patterns() -> dict[str, tuple[torch.nn.Module, tuple[int, ...]]]:
    from test_coupling import Depthwise, Residual, SplitSwap
    from torch import nn

    class Chunk(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)

        def forward(self, x):
            p, q = torch.chunk(self.a(x), 2, dim=1)
            return self.b(torch.cat([q, torch.sigmoid(p)], 1))

    class Slice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(4, 2, 1), nn.Conv2d(8, 2, 1)

        def forward(self, x):
            y = self.a(x)
            return self.b(y[:, 2:6]) + self.c(y)

    class Shuffle(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 16, 1, bias=False)
            self.g = nn.Conv2d(16, 16, 1, groups=4)
            self.b = nn.Conv2d(16, 2, 1)

        def forward(self, x):
            y = self.g(self.a(x))
            n, c, h, w = y.shape
            y = y.view(n, 4, c // 4, h, w).transpose(1, 2).reshape(n, c, h, w)
            return self.b(y)

    class ChannelsLastNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.n, self.fc = nn.Conv2d(3, 8, 1), nn.LayerNorm(8), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.n(self.a(x).permute(0, 2, 3, 1)))

    img = (1, 3, 6, 6)
    return {
        "residual": (Residual(), img),
        "split_swap": (SplitSwap(), img),
        "depthwise": (Depthwise(1), img),
        "depthwise_multiplier": (Depthwise(2), img),
        "chunk": (Chunk(), img),
        "slice": (Slice(), img),
        "shuffle": (Shuffle(), img),
        "grouped": (nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Conv2d(8, 2, 1)), img),
        "grouped_transpose": (nn.Sequential(nn.Conv2d(3, 8, 1), nn.ConvTranspose2d(8, 4, 2, 2, groups=2),
                                            nn.Conv2d(4, 2, 1)), img),
        "pixel_shuffle": (nn.Sequential(nn.Conv2d(3, 8, 1), nn.PixelShuffle(2), nn.Conv2d(2, 2, 1)), img),
        "pixel_unshuffle": (nn.Sequential(nn.Conv2d(3, 4, 1), nn.PixelUnshuffle(2), nn.Conv2d(16, 2, 1)), img),
        "flatten_linear": (nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5)), img),
        "channels_last_norm": (ChannelsLastNorm(), img),
    }


@pytest.mark.parametrize("name", sorted(_patterns()))
def test_zero_invariant_per_pattern(name):
    torch.manual_seed(0)
    model, shape = _patterns()[name]
    model = model.double().eval()
    x = torch.randn(*shape, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = gp.trace(model, (x,))
    coupling = analyze(graph)
    assert any(g.prunable for g in coupling.groups)
    for skip_stats in (True, False):
        keep = chosen_units(coupling, 0.5, seed=3, skip_stats=skip_stats)
        z = zeroed(graph, coupling, keep)
        pinned = [g.name for g in coupling.groups if g.stats] if skip_stats else []
        pruned = gp.prune(z, 0.5, criterion="l1", round_to=1, keep=pinned, verify=True)  # + masked reference
        if skip_stats:
            assert_same(pruned.run(x.numpy()), z.run(x.numpy()))


@pytest.mark.parametrize("bad", ["simd", 0, -8, 8.0, True])
def test_round_to_must_be_a_positive_multiple_or_auto(bad):
    graph = trace64("resnet_bottleneck")[0]
    with pytest.raises(ValueError, match="expected a whole number >= 1 or 'auto'"):
        gp.prune(graph, 0.5, round_to=bad)
