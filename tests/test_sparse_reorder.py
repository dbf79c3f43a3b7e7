"""N:M permutations after an unconstrained prune and its reorder: the two share the channel order.

On zoo models with residual and concat segments: the permutation stays exact (float64, 1e-9) and the
sparse graph is what the masks make of it; the reorder's slices survive where the policy says they do
(`prefer=auto|reorder`: every one; `prefer=sparsity`: the readers the report lists as turned into
gathers, no others), the report says who won per group and prices both currencies (kept magnitude,
bytes copied), and the kept magnitude is never below no permutation. The shared search itself is
checked against a recount of its objective."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from graphprune.passes.analysis.permutation_search import SharedWeight, nm_kept, nm_search_within
from hypothesis import given, settings
from hypothesis import strategies as st
from test_prune import assert_same, trace64
from test_sparsity import _absolute_kept, cli

import graphprune as gp
from graphprune.ir import Graph, Op

# models whose unconstrained prune + reorder leaves slices (the joint selection reads whole concats in DenseNet)
MODELS = ["resnet_bottleneck", "mobilenetv2", "convnext", "llama"]


@functools.cache
def _reordered(name: str) -> tuple[Graph, list[np.ndarray]]:
    graph, x = trace64(name)
    return gp.prune(graph, 0.5, round_to=1, constrained=False), x  # reorder=search, MASK_EQUIVALENT checked


def counts(g: Graph) -> tuple[int, int]:
    return sum(n.op is Op.SLICE for n in g.nodes), sum(n.op is Op.GATHER for n in g.nodes)


@pytest.mark.parametrize("prefer", ["auto", "reorder", "sparsity"])
@pytest.mark.parametrize("name", MODELS)
def test_permutation_after_reorder_is_exact_and_keeps_the_policys_slices(name, prefer):
    pruned, x = _reordered(name)
    slices, gathers = counts(pruned)
    assert slices  # the reorder made some readers contiguous: there is something to share
    options = f"pattern=2:4,first=true,last=true,prefer={prefer}"
    permuted = gp.optimize(pruned, f"permute-sparse{{{options}}}", verify=True)  # EXACT contract checked
    assert_same(permuted.run(*x, dtype="float64"), pruned.run(*x, dtype="float64"), tol=1e-9)
    sparse, rep = gp.sparsify_with_report(pruned, "2:4", permute=True, first=True, last=True, prefer=prefer,
                                          verify=True)
    # the sparse graph is the masks applied to the permuted one
    assert_same(sparse.run(*x), gp.sparsify(permuted, "2:4", permute=False, first=True, last=True).run(*x))
    broken = sum(g.views_broken for g in rep.groups)
    assert counts(permuted) == counts(sparse) == (slices - broken, gathers + broken)
    if prefer != "sparsity":
        assert broken == 0
        assert all(g.bytes_after == g.bytes_before for g in rep.groups)
    # who won, in both currencies
    winners = rep.to_json()["order_winners"]
    assert sum(winners.values()) == len(rep.groups)
    for g in rep.groups:
        assert g.kept >= g.kept_identity * (1 - 1e-12)
        assert (g.bytes_after > g.bytes_before) == (g.views_broken > 0)
        assert (g.winner == "sparsity") or g.views_broken == 0
        if g.winner == "both":
            assert g.views_kept and g.kept > g.kept_identity
    # the magnitude the masks keep is never below no permutation
    assert _absolute_kept(permuted, "2:4") >= _absolute_kept(pruned, "2:4") * (1 - 1e-12)


def _union_reordered(name: str) -> Graph:
    """Unconstrained masks without the joint step (each reader ranked on its own, each stream the union
    of its readers), reordered: readers keep different channels, so giving one its own order can pay."""
    from graphprune.passes.analysis.coupling import analyze
    from graphprune.passes.analysis.importance import unit_scores
    from graphprune.passes.analysis.select import SelectOptions, select
    from graphprune.passes.transform.prune_channels import apply_prune
    from graphprune.passes.transform.readers import insert_readers, resolve_streams
    from graphprune.passes.transform.reorder import reorder_graph

    graph, _ = trace64(name)
    insert_readers(graph)
    cut = analyze(graph, cuts=True)
    scores = unit_scores(graph, cut, "l2")
    selected = select(cut, scores, SelectOptions(channels=0.5, round_to=1))
    apply_prune(graph, cut, resolve_streams(graph, cut, selected, scores, 1))
    reorder_graph(graph, "search")
    return graph


def test_who_wins_follows_the_policy_on_resnet():
    pruned = _union_reordered("resnet_bottleneck")
    by = {}
    for prefer in ("auto", "reorder", "sparsity"):
        _, rep = gp.sparsify_with_report(pruned, "2:4", permute=True, first=True, last=True, prefer=prefer)
        by[prefer] = [g for g in rep.groups if g.views_kept or g.views_broken]
        assert by[prefer]  # stream groups the reorder sliced are searched, not skipped
    # auto: N:M within the reorder's runs gains without giving up a slice
    assert any(g.winner == "both" for g in by["auto"])
    assert all(g.views_broken == 0 for g in by["auto"] + by["reorder"])
    # sparsity: a reader takes its own order, keeping more at the price of a copy
    freed = [g for g in by["sparsity"] if g.winner == "sparsity"]
    assert freed and all(g.bytes_after > g.bytes_before for g in freed)
    assert sum(g.kept for g in by["sparsity"]) > sum(g.kept for g in by["reorder"])
    # auto with no threshold is sparsity; with an unreachable one it keeps every slice
    _, rep = gp.sparsify_with_report(pruned, "2:4", permute=True, first=True, last=True, min_gain=1.0)
    assert sum(g.views_broken for g in rep.groups) == 0
    table = rep.table()
    assert "channel order shared with the reorder" in table and "both" in table


def test_cli_reports_who_won(tmp_path):
    graph, _ = trace64("resnet_bottleneck")
    model = tmp_path / "m.gpir"
    gp.save(graph, model)
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    proc = cli("prune", str(model), "-o", str(out), "--channels", "0.5", "--unconstrained", "--sparsity", "2:4",
               "--permute", "--prefer", "sparsity", "--report", str(rep))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(rep.read_text())["sparsity"]
    assert doc["order_winners"]["sparsity"] >= 1
    shared = [g for g in doc["permutation"] if g["views_kept"] or g["views_broken"]]
    assert shared and all({"winner", "kept_free", "bytes_before", "bytes_after"} <= set(g) for g in shared)
    assert "channel order shared with the reorder" in proc.stdout
    bad = cli("prune", str(model), "-o", str(tmp_path / "x.onnx"), "--unconstrained", "--sparsity", "2:4",
              "--prefer", "reorder")
    assert bad.returncode == 2 and "--prefer" in bad.stderr and "Traceback" not in bad.stderr


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 3), st.sampled_from([(2, 4), (1, 4), (1, 2)]))
def test_shared_search_respects_the_runs_and_never_keeps_less(seed, readers, nm):
    """Readers read a stream of runs at arbitrary offsets (some columns fixed): the result permutes
    only within runs, and its reported kept magnitude is the recount of every reader's N:M."""
    n, m = nm
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, 15), 3, replace=False))
    runs = np.split(np.arange(16), cuts)
    weights = []
    for _ in range(readers):
        lo = int(rng.choice(np.concatenate([[0], cuts])))  # a reader reads whole runs (a slice of the stream)
        slots = np.arange(lo, 16)
        fixed = int(rng.integers(0, m)) + (-(len(slots) + rng.integers(0, m)) % m)
        slot = np.concatenate([np.full(fixed, -1), slots])[: len(slots) + fixed]
        slot = np.concatenate([slot, np.full(-len(slot) % m, -1)])
        z = np.abs(rng.standard_normal((int(rng.integers(1, 6)), len(slot)))) * np.exp(rng.uniform(-2, 2, len(slot)))
        weights.append(SharedWeight(z, slot))
    res, base, kept = nm_search_within(weights, runs, n, m, slots=16, time_budget=2.0)
    for r in runs:
        assert np.array_equal(np.sort(res.perm[r]), r)
    assert np.allclose([nm_kept(w.z[:, w.columns(res.perm)], n, m) for w in weights], kept)
    assert np.allclose(base, [nm_kept(w.z, n, m) for w in weights])
    assert res.kept >= res.kept_identity
