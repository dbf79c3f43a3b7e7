"""Unconstrained pruning and the reorder: every zoo model with shared tensors prunes per reader and
equals the masked reference (float64, 1e-9) after the reorder; the reorder alone is exact; exports
run in onnxruntime and torch; the planner is optimal on small segments (brute force) and never copies
more bytes than UPSCALE's heuristic; copy-cost-aware selection; a before/expected text test."""

from __future__ import annotations

import itertools
import json
import warnings
from textwrap import dedent

import numpy as np
import onnxruntime as ort
import pytest
import torch
from graphprune.passes.analysis import reorder as reorder_analysis
from graphprune.passes.analysis.coupling import analyze
from graphprune.passes.analysis.importance import unit_scores
from graphprune.passes.analysis.reorder import (
    ReaderSpec,
    SegmentSpec,
    c1p_order,
    evaluate,
    plan,
    total_bytes,
    upscale_order,
)
from graphprune.passes.analysis.select import SelectOptions, select
from graphprune.passes.transform.joint import joint_select, kept_score, to_cut
from graphprune.passes.transform.prune_channels import _rebind, apply_prune, masked_reference, pruned_cost
from graphprune.passes.transform.readers import find_reads, insert_readers, reader_gathers, resolve_streams
from graphprune.passes.transform.reorder import reorder_graph, snap_readers
from helpers import as_numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from test_prune import NAMES, assert_same, trace64
from zoo import ZOO

import graphprune as gp
from graphprune.cli import main
from graphprune.ir import Graph, Op

# the zoo models with tensors read by several layers (residual streams, concats)
SEGMENTED = ["convnext", "densenet", "llama", "misc_ops", "mobilenetv2", "multi_io", "resnet_bottleneck", "se_net",
             "split_branches", "unet", "vit"]


@pytest.mark.parametrize("name", NAMES)
def test_the_zoo_has_segments_where_expected(name):
    graph, _ = trace64(name)
    assert bool(find_reads(graph, analyze(graph))) == (name in SEGMENTED)


def unconstrained(graph: Graph, seed: int) -> tuple[Graph, Graph, Graph]:
    """(masked reference, pruned with reader gathers, pruned and reordered), random reader scores."""
    g = graph.copy()
    insert_readers(g)
    coupling = analyze(g, cuts=True)
    rng = np.random.default_rng(seed)
    scores = {grp.id: rng.random(grp.size) for grp in coupling.groups}
    keep = resolve_streams(g, coupling, select(coupling, scores, SelectOptions(channels=0.5, round_to=1)))
    # the readers of one stream really keep different channels (otherwise this tests nothing new)
    cuts = reader_gathers(g, coupling)
    masks = {n.name: keep[int(coupling.label_group[coupling.blocks_of(n.outputs[0])[0].labels[0]])] for n in cuts}
    assert len({m.tobytes() for m in masks.values()}) > 1
    ref = masked_reference(g, coupling, keep)
    pruned = g.copy()
    apply_prune(pruned, _rebind(coupling, g, pruned), keep)
    pruned.verify()
    reordered = pruned.copy()
    reorder_graph(reordered, "search")
    reordered.verify()
    return ref, pruned, reordered


@pytest.mark.parametrize("name", SEGMENTED)
def test_unconstrained_prune_and_reorder_equal_the_masked_reference(name):
    graph, x = trace64(name)
    ref, pruned, reordered = unconstrained(graph, seed=3)
    expected = ref.run(*x, dtype="float64")
    assert_same(pruned.run(*x, dtype="float64"), expected)
    assert_same(reordered.run(*x, dtype="float64"), expected)  # the reorder alone is exact too
    assert gp.cost(reordered).params < gp.cost(graph).params


@pytest.mark.parametrize("method", ["search", "upscale", "none"])
def test_reorder_pass_is_exact_and_verified(method):
    graph, x = trace64("densenet")
    pruned = gp.optimize(graph, "prune-channels{channels=0.5,constrained=false}", verify=True)
    out = gp.optimize(pruned, f"reorder{{method={method}}}", verify=True)  # the EXACT contract is checked
    assert_same(out.run(*x), pruned.run(*x))
    gathers = [n for n in out.nodes if n.op is Op.GATHER]
    assert len(gathers) < len([n for n in pruned.nodes if n.op is Op.GATHER]) or method == "none"


@pytest.mark.parametrize("name", SEGMENTED)
def test_unconstrained_exports_run_in_onnxruntime_and_torch(name, tmp_path):
    entry = ZOO[name]
    inputs = entry.example_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = gp.trace(entry.build(), inputs)
    pruned = gp.prune(graph, 0.5, round_to=1, constrained=False)
    arrays = as_numpy(inputs)
    out = pruned.run(*arrays)
    with torch.no_grad():
        t = as_numpy(pruned.to_torch()(*inputs))
    path = tmp_path / "pruned.onnx"
    gp.save(pruned, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), arrays, strict=True)})
    for other in (t, got):
        for a, b in zip(other, out, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(b).max())))


def test_densenet_reads_are_split_per_concat_input():
    graph, x = trace64("densenet")
    _, pruned, reordered = unconstrained(graph, seed=2)
    # every layer read its own concat through a gather; split, the concats go away and the layers
    # read slices of the producers' outputs joined by a smaller concat
    moved = {
        name: sum(int(np.prod(n.outputs[0].type.shape)) for n in g.nodes if n.op in (Op.GATHER, Op.CONCAT))
        for name, g in (("pruned", pruned), ("reordered", reordered))
    }
    assert moved["reordered"] < moved["pruned"]
    assert sum(n.op is Op.SLICE for n in reordered.nodes) > sum(n.op is Op.SLICE for n in pruned.nodes)


def test_reorder_makes_resnet_and_mobilenet_readers_copy_free():
    for name in ("resnet_bottleneck", "mobilenetv2"):
        graph, _ = trace64(name)
        _, pruned, reordered = unconstrained(graph, seed=1)
        assert any(n.op is Op.GATHER for n in pruned.nodes)
        assert not any(n.op is Op.GATHER for n in reordered.nodes)


# ------------------------------------------------------------------------------------------------
# the planner
# ------------------------------------------------------------------------------------------------


@st.composite
def segment_specs(draw, max_blocks: int = 2, max_size: int = 5, max_readers: int = 4) -> SegmentSpec:
    nb = draw(st.integers(1, max_blocks))
    sizes = tuple(draw(st.integers(1, max_size)) for _ in range(nb))
    readers = []
    for r in range(draw(st.integers(1, max_readers))):
        span = draw(st.integers(1, nb))  # a DenseNet reader reads a prefix of the blocks
        layout = tuple(range(span))
        reads = tuple((b, s) for b in layout for s in range(sizes[b]) if draw(st.booleans()))
        # a read of a concat may be split per concat input (one block each)
        pieces = tuple((b,) for b in layout) if span > 1 and draw(st.booleans()) else ()
        if reads:
            readers.append(ReaderSpec(f"r{r}", layout, reads, draw(st.integers(1, 16)), True, pieces))
    return SegmentSpec("s", sizes, tuple(draw(st.booleans()) for _ in sizes), tuple(readers))


def brute_force_bytes(seg: SegmentSpec) -> int:
    orders = itertools.product(*[
        itertools.permutations(range(n)) if free else [tuple(range(n))] for n, free in zip(seg.sizes, seg.free, strict=True)
    ])
    return min(total_bytes(evaluate(seg, [np.array(o) for o in combo])) for combo in orders)


@settings(max_examples=60, deadline=None)
@given(segment_specs())
def test_plan_is_optimal_and_never_worse_than_upscale(seg):
    ours = total_bytes(evaluate(seg, plan(seg)))
    assert ours == brute_force_bytes(seg)
    assert ours <= total_bytes(evaluate(seg, upscale_order(seg)))


@settings(max_examples=40, deadline=None)
@given(segment_specs(max_blocks=2, max_size=24, max_readers=8))
def test_plan_never_copies_more_than_upscale_on_wider_segments(seg):
    assert total_bytes(evaluate(seg, plan(seg))) <= total_bytes(evaluate(seg, upscale_order(seg)))


def test_plan_strictly_beats_upscale():
    # {2,3} and {1,2} nest in {0..3}: UPSCALE emits the children in turn (2 3 1 0) and breaks {1,2};
    # 0 1 2 3 serves all three
    seg = SegmentSpec("s", (4,), (True,), tuple(
        ReaderSpec(f"r{i}", (0,), tuple((0, s) for s in sel), 4) for i, sel in enumerate([[2, 3], [0, 1, 2, 3], [1, 2]])
    ))
    theirs, ours = evaluate(seg, upscale_order(seg)), evaluate(seg, plan(seg))
    assert [c.view for c in theirs] == [True, True, False] and total_bytes(theirs) == 8
    assert all(c.view for c in ours) and total_bytes(ours) == 0


def test_local_improvement_beats_greedy_on_large_segments():
    # 10 readers (beyond the exact search): greedy keeps 155 bytes-per-channel units copy-free, one
    # swap and a refill reach the optimum 219, which brute force over all 5! orders confirms
    sels = [([1, 4], 13), ([2, 3, 4], 10), ([0, 3], 11), ([3, 4], 5), ([1, 2, 3, 4], 8), ([1, 2, 3, 4], 7),
            ([0, 2, 3, 4], 11), ([1, 3], 18), ([0, 3], 7), ([0, 3, 4], 13)]
    seg = SegmentSpec("s", (5,), (True,), tuple(
        ReaderSpec(f"r{i}", (0,), tuple((0, c) for c in sel), w) for i, (sel, w) in enumerate(sels)
    ))
    needs = [reorder_analysis._needs(seg, r) for r in seg.readers]
    weight = [r.bytes_per_channel * len(r.reads) for r in seg.readers]
    cand = list(range(len(sels)))
    greedy = reorder_analysis._greedy(seg, needs, weight, cand, [])
    assert sum(weight[i] for i in greedy) == 155
    best = min(total_bytes(evaluate(seg, [np.array(p)])) for p in itertools.permutations(range(5)))
    assert total_bytes(evaluate(seg, plan(seg))) == best == sum(weight) - 219


def test_c1p_fixed_ends():
    # a prefix (START) and a suffix (END) constraint plus a run: 0 must open, 3 must close
    order = c1p_order(4, [frozenset({-1, 0, 1}), frozenset({2, 3, -2}), frozenset({1, 2})])
    assert order == [0, 1, 2, 3]
    assert c1p_order(3, [frozenset({0, 1}), frozenset({1, 2}), frozenset({0, 2})]) is None  # a cycle


def test_evaluate_counts_bytes_and_runs():
    seg = SegmentSpec("s", (6,), (True,), (ReaderSpec("a", (0,), ((0, 0), (0, 2), (0, 3)), 10),))
    (c,) = evaluate(seg, [np.arange(6)])
    assert (c.runs, c.view, c.bytes) == (2, False, 30)
    (c,) = evaluate(seg, [np.array([1, 0, 2, 3, 4, 5])])
    assert (c.runs, c.view, c.bytes) == (1, True, 0)


# ------------------------------------------------------------------------------------------------
# copy-cost-aware selection, the API, the report and the CLI
# ------------------------------------------------------------------------------------------------


def test_contiguity_trades_importance_for_fewer_copies():
    # readers that choose freely (the union selection) so that some still gather
    graph, x = trace64("densenet")
    g = graph.copy()
    insert_readers(g)
    coupling = analyze(g, cuts=True)
    scores = unit_scores(g, coupling, "l2")
    selected = select(coupling, scores, SelectOptions(channels=0.5, round_to=1))
    notes: list[str] = []
    copied = []
    for keep in (resolve_streams(g, coupling, selected), snap_readers(g, coupling, selected, scores, 0.1, notes)):
        pruned = g.copy()
        apply_prune(pruned, _rebind(coupling, g, pruned), keep)
        assert_same(pruned.run(*x, dtype="float64"), masked_reference(g, coupling, keep).run(*x, dtype="float64"))
        results, _ = reorder_graph(pruned, "search")
        copied.append(sum(r.bytes for r in results))
    assert copied[1] < copied[0]
    notes = [n for n in notes if "snapped" in n]
    assert notes and all(float(n.split("(")[1].split("%")[0]) <= 10.0 for n in notes)


def test_report_lists_segments():
    graph, _ = trace64("resnet_bottleneck")
    pruned, report = gp.prune_with_report(graph, 0.5, constrained=False, verify=True)
    assert report.segments
    row = report.segments[0]
    assert row.bytes_copied <= row.bytes_naive
    assert "copy-free" in report.table()
    data = report.to_json()["segments"][0]
    assert set(data) == {"name", "copy_free", "gathers", "bytes_copied", "bytes_naive"}
    constrained, c_report = gp.prune_with_report(graph, 0.5)
    assert not c_report.segments


def test_cli_unconstrained(tmp_path, capsys):
    graph, _ = trace64("mobilenetv2")
    src = tmp_path / "m.gpir"
    gp.save(graph, src)
    out, rep = tmp_path / "p.onnx", tmp_path / "r.json"
    assert main(["prune", str(src), "-o", str(out), "--unconstrained", "--reorder", "upscale", "--report", str(rep)]) == 0
    assert "segments" in capsys.readouterr().out
    assert json.loads(rep.read_text())["segments"]
    assert main(["prune", str(src), "-o", str(tmp_path / "q.onnx"), "--contiguity", "0.02"]) == 2
    assert "--unconstrained" in capsys.readouterr().err
    assert not (tmp_path / "q.onnx").exists()


def test_unconstrained_text():
    before = """\
    graph @"g"(%x: f64[1,2,3]c1) {
      %a.w = const f64[4,2,1] dense<[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 0.0]>
      %b.w = const f64[1,4,1] dense<[1.0, 0.0, 1.0, 0.0]>
      %c.w = const f64[1,4,1] dense<[0.0, 2.0, 1.0, 0.0]>
      %a = conv(%x, %a.w) {stride=[1], pads=[0, 0], dilation=[1], groups=1} : f64[1,4,3]c1 loc("a")
      %b = conv(%a, %b.w) {stride=[1], pads=[0, 0], dilation=[1], groups=1} : f64[1,1,3]c1 loc("b")
      %c = conv(%a, %c.w) {stride=[1], pads=[0, 0], dilation=[1], groups=1} : f64[1,1,3]c1 loc("c")
      %y = add(%b, %c) : f64[1,1,3]c1 loc("y")
      return %y
    }
    """
    # b keeps channels {0, 2}, c keeps {1, 2}; a drops 3, the one nobody reads. Without reordering b
    # gathers; ordered 0 2 1, both read slices (c's weights follow its new order)
    naive = """\
    graph @"g"(%x: f64[1,2,3]c1) {
      %a.w = const f64[3,2,1] dense<[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]>  # out,in,s
      %b.w = const f64[1,2,1] dense<[1.0, 1.0]>  # out,in,s
      %c.w = const f64[1,2,1] dense<[2.0, 1.0]>  # out,in,s
      %b.read.idx.pruned = const i64[2] dense<[0, 2]>
      %a = conv(%x, %a.w) {stride=[1], pads=[0, 0], dilation=[1], groups=1} : f64[1,3,3]c1 loc("a")
      %b.read = gather(%a, %b.read.idx.pruned) {axis=1} : f64[1,2,3] loc("b.read")
      %b = conv(%b.read, %b.w) {stride=[1], pads=[0, 0], dilation=[1], groups=1} : f64[1,1,3]c1 loc("b")
      %c.read.slice = slice(%a) {axis=1, start=1, end=3, step=1} : f64[1,2,3]c1 loc("c.read")
      %c = conv(%c.read.slice, %c.w) {stride=[1], pads=[0, 0], dilation=[1], groups=1} : f64[1,1,3]c1 loc("c")
      %y = add(%b, %c) : f64[1,1,3]c1 loc("y")
      return %y
    }
    """
    reordered = """\
    graph @"g"(%x: f64[1,2,3]c1) {
      %a.w = const f64[3,2,1] dense<[1.0, 0.0, 1.0, 1.0, 0.0, 1.0]>  # out,in,s
      %b.w = const f64[1,2,1] dense<[1.0, 1.0]>  # out,in,s
      %c.w = const f64[1,2,1] dense<[1.0, 2.0]>  # out,in,s
      %a = conv(%x, %a.w) {stride=[1], pads=[0, 0], dilation=[1], groups=1} : f64[1,3,3]c1 loc("a")
      %b.read.slice = slice(%a) {axis=1, start=0, end=2, step=1} : f64[1,2,3]c1 loc("b.read")
      %b = conv(%b.read.slice, %b.w) {stride=[1], pads=[0, 0], dilation=[1], groups=1} : f64[1,1,3]c1 loc("b")
      %c.read.slice = slice(%a) {axis=1, start=1, end=3, step=1} : f64[1,2,3]c1 loc("c.read")
      %c = conv(%c.read.slice, %c.w) {stride=[1], pads=[0, 0], dilation=[1], groups=1} : f64[1,1,3]c1 loc("c")
      %y = add(%b, %c) : f64[1,1,3]c1 loc("y")
      return %y
    }
    """
    # per-reader masks (the union selection; gp.prune's joint selection keeps channels {1, 2} for both readers here)
    graph = gp.parse(dedent(before))
    insert_readers(graph)
    coupling = analyze(graph, cuts=True)
    scores = unit_scores(graph, coupling, "l1")
    keep = resolve_streams(graph, coupling, select(coupling, scores, SelectOptions(channels=0.5, round_to=1)))
    for method, expected in (("none", naive), ("search", reordered)):
        got = graph.copy()
        apply_prune(got, _rebind(coupling, graph, got), keep)
        reorder_graph(got, method)
        assert str(got) == dedent(expected)
        assert_same(got.run(np.ones((1, 2, 3))), masked_reference(graph, coupling, keep).run(np.ones((1, 2, 3))))


def test_stream_widths_are_rounded():
    graph, x = trace64("resnet_bottleneck")
    pruned = gp.prune(graph, 0.5, round_to=8, constrained=False)
    widths = [n.outputs[0].type.shape[1] for n in pruned.nodes if n.op is Op.CONV]
    full = {n.name: n.outputs[0].type.shape[1] for n in graph.nodes if n.op is Op.CONV}
    convs = [n for n in pruned.nodes if n.op is Op.CONV]
    assert all(w % 8 == 0 or w == full[n.name] for n, w in zip(convs, widths, strict=True))
    assert [o.shape for o in pruned.run(*x)] == [o.shape for o in graph.run(*x)]


# joint selection of streams and readers (transform/joint.py)
# ------------------------------------------------------------------------------------------------


def kept_energy(graph: Graph) -> float:
    return sum(float(np.square(np.asarray(n.inputs[1].data)).sum()) for n in graph.nodes
               if n.op in (Op.CONV, Op.LINEAR) and n.inputs[1].is_const)


@settings(max_examples=12, deadline=None)
@given(name=st.sampled_from(["resnet_bottleneck", "densenet", "mobilenetv2", "split_branches"]),
       seed=st.integers(0, 2**16), frac=st.floats(0.2, 0.7), round_to=st.sampled_from([1, 4]))
def test_joint_selection_is_never_worse_than_constrained(name, seed, frac, round_to):
    graph, x = trace64(name)
    g = graph.copy()
    insert_readers(g)
    cut, uncut = analyze(g, cuts=True), analyze(graph)
    rng = np.random.default_rng(seed)
    scores = {grp.id: rng.random(grp.size) for grp in cut.groups}
    plain_scores = {grp.id: rng.random(grp.size) for grp in uncut.groups}
    picked = select(uncut, plain_scores, SelectOptions(channels=frac, round_to=round_to))
    constrained = to_cut(uncut, cut, picked)
    cost = lambda kp: pruned_cost(g, cut, kp)  # noqa: E731
    # the constrained selection seen through the reader gathers prunes exactly as constrained pruning
    assert cost(constrained) == pruned_cost(graph, uncut, picked)
    joint = joint_select(g, cut, constrained, scores, cost, round_to=round_to, min_keep=0.1)
    assert kept_score(joint, scores) >= kept_score(constrained, scores)
    assert cost(joint)[0] <= cost(constrained)[0]
    pruned = g.copy()
    apply_prune(pruned, _rebind(cut, g, pruned), joint)
    reorder_graph(pruned, "search")
    assert_same(pruned.run(*x, dtype="float64"), masked_reference(g, cut, joint).run(*x, dtype="float64"))


@pytest.mark.parametrize("name", ["resnet_bottleneck", "densenet"])
def test_unconstrained_keeps_more_weight_than_constrained_at_no_more_macs(name):
    graph, _ = trace64(name)
    constrained = gp.prune(graph, target_macs=0.5, scope="global", round_to=1)
    free, report = gp.prune_with_report(graph, target_macs=0.5, scope="global", round_to=1, constrained=False,
                                        verify=True)
    assert gp.cost(free).macs <= gp.cost(constrained).macs
    assert kept_energy(free) > kept_energy(constrained)
    assert any("chosen jointly" in n for n in report.notes)


def test_joint_selection_leaves_protected_streams_whole():
    graph, _ = trace64("resnet_bottleneck")
    pruned, report = gp.prune_with_report(graph, target_macs=0.5, scope="global", round_to=1, constrained=False,
                                          keep=[r"layer1\.0\.downsample\.0"], verify=True)
    convs = {n.name: n for n in pruned.nodes if n.op is Op.CONV}
    assert convs["layer1.0.downsample.0"].outputs[0].type.shape[1] == 32
    assert convs["layer1.1.conv1"].inputs[1].type.shape[1] == 32  # its reader reads all of it
    assert not any("layer1.0.downsample.0: stream and readers" in n for n in report.notes)
    constrained = gp.prune(graph, target_macs=0.5, scope="global", round_to=1, keep=[r"layer1\.0\.downsample\.0"])
    assert gp.cost(pruned).macs <= gp.cost(constrained).macs
