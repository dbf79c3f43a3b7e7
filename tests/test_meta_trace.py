"""Tracing on the meta device: a model built under `torch.device("meta")` traces into a graph whose
constants have types but no data. Everything that reads only types (coupling analysis, cost, the
structural verifier) works and agrees with the same model traced with real weights; reading a
constant's data (running, pruning) raises a GraphError that names the constant."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from graphprune.passes.analysis.coupling import analyze
from zoo import ZOO

import graphprune as gp
from graphprune.ir import Graph
from graphprune.ir.errors import GraphError

META_MESSAGE = r"lives on the meta device: its data is not available; trace a model with real weights"


def _trace_both(name: str) -> tuple[Graph, Graph]:
    entry = ZOO[name]
    inputs = entry.example_inputs()
    with torch.device("meta"):
        meta_model = entry.build()  # ties (lm_head = embed) survive when the model is built on meta
    assert all(p.is_meta for p in meta_model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = gp.trace(entry.build(), inputs)
        meta = gp.trace(meta_model, tuple(t.to("meta") for t in inputs))
    return real, meta


@pytest.mark.parametrize("name", ["llama", "mobilenetv2"])
def test_meta_trace_gives_the_same_coupling_groups(name):
    """A 2-layer decoder (GQA, rotary, tied head) and a depthwise CNN: same graph, same groups."""
    real, meta = _trace_both(name)
    meta.verify()
    assert [n.op for n in meta.nodes] == [n.op for n in real.nodes]
    assert {c.name: c.type for c in meta.constants} == {c.name: c.type for c in real.constants}
    cr, cm = analyze(real), analyze(meta)
    assert cm == cr  # sizes, blocking, members with their axes and unit maps
    assert [(g.size, g.blocked, g.stats, len(g.bins), g.name) for g in cm.groups] == [
        (g.size, g.blocked, g.stats, len(g.bins), g.name) for g in cr.groups
    ]
    assert any(g.prunable for g in cm.groups)
    assert gp.cost(meta).macs == gp.cost(real).macs
    assert gp.cost(meta).params == gp.cost(real).params


def test_meta_graph_refuses_to_run_or_prune():
    _, meta = _trace_both("llama")
    weight = meta.value("embed.weight")
    assert weight.is_const and weight.type.shape == (128, 64)
    with pytest.raises(GraphError, match=r"constant %embed\.weight " + META_MESSAGE):
        _ = weight.data
    tokens = np.zeros((1, 16), dtype=np.int64)
    with pytest.raises(GraphError, match=META_MESSAGE):
        meta.run(tokens)
    with pytest.raises(GraphError, match=META_MESSAGE):
        gp.prune(meta, 0.5)
