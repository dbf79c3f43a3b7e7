"""Channel permutation is EXACT: every zoo model and every coupling pattern, with random permutations
of every permutable group (within bins), computes the same outputs (float64, 1e-9)."""

from __future__ import annotations

from textwrap import dedent

import numpy as np
import pytest
from graphprune.passes.analysis.coupling import analyze
from graphprune.passes.transform.permute_channels import (
    apply_permutation,
    check_permutation,
    permutable,
    sorted_within_bins,
)
from hypothesis import given, settings
from test_properties import conv_chains
from test_prune import NAMES, _patterns, assert_same, trace64

import graphprune as gp
from graphprune.inputs import sample_inputs
from graphprune.ir import Graph, GraphError


def random_perms(graph: Graph, seed: int) -> dict[int, np.ndarray]:
    """A random permutation of every permutable group that keeps its bins."""
    rng = np.random.default_rng(seed)
    coupling = analyze(graph)
    return {g.id: sorted_within_bins(g, rng.random(g.size)) for g in coupling.groups if permutable(g)}


def permuted(graph: Graph, seed: int) -> tuple[Graph, int]:
    out = graph.copy()
    perms = random_perms(out, seed)
    apply_permutation(out, analyze(out), perms)
    out.verify()
    moved = sum(not np.array_equal(p, np.arange(len(p))) for p in perms.values())
    return out, moved


@pytest.mark.parametrize("name", NAMES)
def test_permutation_is_exact_on_the_zoo(name):
    graph, x = trace64(name)
    out, moved = permuted(graph, seed=1)
    assert moved > 0
    assert_same(out.run(*x), graph.run(*x))
    # the constants really moved (the test would pass vacuously otherwise)
    assert any(not np.array_equal(a.data, b.data) for a, b in zip(graph.constants, out.constants, strict=True))


@pytest.mark.parametrize("name", sorted(_patterns()))
def test_permutation_is_exact_per_pattern(name):
    import torch

    torch.manual_seed(0)
    model, shape = _patterns()[name]
    x = torch.randn(*shape, dtype=torch.float64)
    graph = gp.trace(model.double().eval(), (x,))
    out, moved = permuted(graph, seed=2)
    assert moved > 0
    assert_same(out.run(x.numpy()), graph.run(x.numpy()))


@settings(max_examples=30, deadline=None)
@given(conv_chains())
def test_random_coupled_graphs_permute_exactly(graph):
    x = sample_inputs(graph, seed=5)
    out, _ = permuted(graph, seed=0)
    assert_same(out.run(*x), graph.run(*x))


def test_permutation_must_keep_bins_and_skip_blocked_groups():
    graph, _ = trace64("shufflenet")
    coupling = analyze(graph)
    binned = next(g for g in coupling.groups if g.bins and permutable(g))
    swap = np.arange(binned.size)
    unit_bin = binned.bins[0]
    a = int(np.flatnonzero(unit_bin == unit_bin[0])[0])
    b = int(np.flatnonzero(unit_bin != unit_bin[0])[0])
    swap[[a, b]] = swap[[b, a]]
    with pytest.raises(GraphError, match="another bin"):
        check_permutation(binned, swap)
    blocked = next(g for g in coupling.groups if g.blocked and g.size > 1)
    with pytest.raises(GraphError, match="blocked"):
        check_permutation(blocked, np.arange(blocked.size)[::-1])
    with pytest.raises(GraphError, match="rearrangement"):
        check_permutation(binned, np.zeros(binned.size, dtype=np.int64))


def test_permute_text():
    before = """\
    graph @"g"(%x: f64[1,2,3]c1) {
      %a.w = const f64[3,2,1] dense<[1.0, 1.0, 3.0, 3.0, 2.0, 2.0]>
      %b.w = const f64[1,3,1] dense<[10.0, 30.0, 20.0]>
      %a = conv(%x, %a.w) {stride=[1], pads=[0, 0], dilation=[1], groups=1} : f64[1,3,3]c1 loc("a")
      %r = relu(%a) : f64[1,3,3]c1 loc("r")
      %b = conv(%r, %b.w) {stride=[1], pads=[0, 0], dilation=[1], groups=1} : f64[1,1,3]c1 loc("b")
      return %b
    }
    """
    # the pass orders channels by l1 importance: producer rows and the reader's columns move together
    expected = """\
    graph @"g"(%x: f64[1,2,3]c1) {
      %a.w = const f64[3,2,1] dense<[3.0, 3.0, 2.0, 2.0, 1.0, 1.0]>  # out,in,s
      %b.w = const f64[1,3,1] dense<[30.0, 20.0, 10.0]>  # out,in,s
      %a = conv(%x, %a.w) {stride=[1], pads=[0, 0], dilation=[1], groups=1} : f64[1,3,3]c1 loc("a")
      %r = relu(%a) : f64[1,3,3]c1 loc("r")
      %b = conv(%r, %b.w) {stride=[1], pads=[0, 0], dilation=[1], groups=1} : f64[1,1,3]c1 loc("b")
      return %b
    }
    """
    out = gp.optimize(gp.parse(dedent(before)), "permute-channels{criterion=l1}", verify=True)
    assert str(out) == dedent(expected)
