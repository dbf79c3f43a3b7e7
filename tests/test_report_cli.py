"""`graphprune analyze` and `graphprune prune` as real subprocesses, and the prune report from Python.

Tracing the example model costs seconds per run, so most prune runs read an ONNX copy of it made
once per module; the runs that name `examples/models.py:mobilenet_v2` exercise the factory path.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphprune.passes.analysis.coupling import analyze
from graphprune.passes.analysis.report import PruneReport, build_report, weighted_layers
from test_cli import EXAMPLE, assert_one_line_error, cli
from zoo import ZOO

import graphprune as gp
from graphprune import cli as gp_cli
from graphprune.api import prune_with_report
from graphprune.ir.errors import GraphpruneError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example MobileNetV2 (input x: 1x3x64x64) as ONNX."""
    path = tmp_path_factory.mktemp("model") / "mobilenet_v2.onnx"
    proc = cli("opt", EXAMPLE, "-p", "dce", "-o", str(path))
    assert proc.returncode == 0, proc.stderr
    return path


def _half_removed(width: int) -> int:
    """The width that local scope leaves with --channels 0.5 and round_to 1 (half rounds up)."""
    return width - math.floor(width / 2 + 0.5)


def _layers(report: dict) -> dict[str, dict]:
    return {row["node"]: row for row in report["layers"]}


# ------------------------------------------------------------------------------------------------
# analyze
# ------------------------------------------------------------------------------------------------


def test_analyze_text_and_json_agree():
    proc = cli("analyze", EXAMPLE, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    groups = doc["groups"]
    assert [g["id"] for g in groups] == list(range(len(groups)))
    by_reason = {g["blocked"]: g for g in groups if g["blocked"]}
    assert set(by_reason) == {"model input %x", "model output %classifier"}
    assert by_reason["model input %x"]["units"] == 3 and by_reason["model output %classifier"]["units"] == 10
    prunable = [g for g in groups if g["prunable"]]
    assert prunable and all(g["blocked"] is None and g["members"] > 1 and g["weights"] > 0 for g in prunable)
    totals = doc["totals"]
    assert totals["groups"] == len(groups) and totals["prunable"] == len(prunable)
    assert totals["units"] == sum(g["units"] for g in groups)
    assert totals["prunable_units"] == sum(g["units"] for g in prunable)

    proc = cli("analyze", EXAMPLE)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert f"groups: {totals['groups']} ({totals['prunable']} prunable, {totals['blocked']} blocked)" in text
    assert "blocked: model input %x" in text and "blocked: model output %classifier" in text
    for g in prunable:
        assert any(line.split()[:2] == [str(g["id"]), g["name"]] and line.endswith("prunable")
                   for line in text.splitlines()), g


# ------------------------------------------------------------------------------------------------
# prune
# ------------------------------------------------------------------------------------------------


def test_prune_writes_model_report_and_plot(tmp_path, model_onnx):
    out, rep, png = tmp_path / "small.onnx", tmp_path / "report.json", tmp_path / "widths.png"
    proc = cli("prune", EXAMPLE, "-o", str(out), "--report", str(rep), "--plot", str(png), "--verify")
    assert proc.returncode == 0, proc.stderr
    assert "contract verified" in proc.stdout and "blocked groups (2):" in proc.stdout
    assert sorted(tmp_path.iterdir()) == sorted([out, rep, png])  # no staging folder left behind

    onnx.checker.check_model(str(out), full_check=True)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    shapes = []
    for path in (model_onnx, out):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (y,) = sess.run(None, {sess.get_inputs()[0].name: x})
        assert np.isfinite(y).all()
        shapes.append(y.shape)
    assert shapes[0] == shapes[1] == (1, 10)

    report = json.loads(rep.read_text())
    layers = report["layers"]
    assert layers and all(r["width_after"] <= r["width_before"] for r in layers)
    assert report["params"]["after"] < report["params"]["before"]
    assert report["macs"]["after"] < report["macs"]["before"]
    # round_to defaults to 8: half of each width, rounded up to a multiple of 8 (SIMD-friendly)
    assert all(r["width_after"] == r["width_before"] or r["width_after"] % 8 == 0 for r in layers)
    assert _layers(report)["features.4.block.6"]["width_after"] == 16  # 24 channels: 12 rounded up to 16
    assert _layers(report)["classifier"]["width_after"] == 10  # the model output stays
    blocked = {g["blocked"] for g in report["groups"] if g["blocked"]}
    assert blocked == {"model input %x", "model output %classifier"}
    # the report's totals are the written model's
    inspected = cli("inspect", str(out), "--json")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["params"] == report["params"]["after"]
    assert png.read_bytes().startswith(PNG_SIGNATURE)


def test_round_to_auto_is_this_cpus_vector_width(tmp_path, model_onnx):
    from graphprune.backends.cpp import capability

    width = max(4, capability("host").vector_floats)
    reports = []
    for value in ("auto", str(width)):
        rep = tmp_path / f"report-{value}.json"
        proc = cli("prune", str(model_onnx), "-o", str(tmp_path / f"{value}.gpir"), "--round-to", value,
                   "--report", str(rep))
        assert proc.returncode == 0, proc.stderr
        reports.append([(r["node"], r["width_after"]) for r in json.loads(rep.read_text())["layers"]])
    assert reports[0] == reports[1]
    assert any(w % width == 0 and w % 32 for _, w in reports[0])  # rounded to `width`, not to something coarser


def test_target_macs_lands_within_two_percent(tmp_path, model_onnx):
    rep = tmp_path / "report.json"
    proc = cli("prune", str(model_onnx), "-o", str(tmp_path / "half.gpir"), "--target-macs", "0.5",
               "--report", str(rep))
    assert proc.returncode == 0, proc.stderr
    macs = json.loads(rep.read_text())["macs"]
    assert abs(macs["after"] / macs["before"] / 0.5 - 1) <= 0.02, macs


def test_keep_keeps_the_named_layer(tmp_path, model_onnx):
    rep = tmp_path / "report.json"
    proc = cli("prune", str(model_onnx), "-o", str(tmp_path / "out.onnx"), "--keep", "features.5.block.0",
               "--report", str(rep))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(rep.read_text())
    layers = _layers(report)
    kept = layers["features.5.block.0"]
    assert kept["width_after"] == kept["width_before"] == 96
    assert layers["features.6.block.0"]["width_after"] < layers["features.6.block.0"]["width_before"]
    assert any("kept whole" in n and "features.5.block.0" in n for n in report["notes"])
    assert "kept whole" in proc.stdout  # the notes are in the printed report too


def test_taylor_with_calibration_inputs(tmp_path, model_onnx):
    rng = np.random.default_rng(1)
    by_name = tmp_path / "by_name.npz"
    np.savez(by_name, x=rng.standard_normal((1, 3, 64, 64)).astype(np.float32))
    in_order = tmp_path / "in_order.npz"
    np.savez(in_order, rng.standard_normal((1, 3, 64, 64)))  # float64, positional: arr_0
    for calib in (by_name, in_order):
        out, rep = tmp_path / f"{calib.stem}.onnx", tmp_path / f"{calib.stem}.json"
        proc = cli("prune", str(model_onnx), "-o", str(out), "--criterion", "taylor", "--calib", str(calib),
                   "--scope", "global", "--round-to", "8", "--report", str(rep))
        assert proc.returncode == 0, proc.stderr
        report = json.loads(rep.read_text())
        assert report["params"]["after"] < report["params"]["before"]
        pruned = [r for r in report["layers"] if r["width_after"] < r["width_before"]]
        assert pruned and all(r["width_after"] % 8 == 0 for r in pruned)
        onnx.checker.check_model(str(out))


def _calib(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "calib.npz"
    if kind == "wrong-shape":
        np.savez(path, x=np.zeros((1, 3, 32, 32), np.float32))
    elif kind == "two-arrays":
        np.savez(path, np.zeros((1, 3, 64, 64), np.float32), np.zeros((1, 3, 64, 64), np.float32))
    elif kind == "garbled":
        path.write_bytes(b"this is not an npz archive" * 20)
    elif kind == "truncated":
        np.savez(path, x=np.zeros((1, 3, 64, 64), np.float32))
        path.write_bytes(path.read_bytes()[:500])
    return path


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--channels", "1"], "--channels"),
        (["--channels", "-0.2"], "--channels"),
        (["--target-macs", "0"], "--target-macs"),
        (["--target-macs", "1.5"], "--target-macs"),
        (["--target-params", "nan"], "--target-params"),
        (["--criterion", "magic"], "--criterion"),
        (["--scope", "sideways"], "--scope"),
        (["--round-to", "0"], "--round-to"),
        (["--round-to", "fast"], "or 'auto'"),
        (["--keep", "no_such_layer"], "no_such_layer"),
        (["--criterion", "taylor"], "needs --calib"),
        (["--criterion", "taylor", "--calib", "missing"], "no such file"),
        (["--criterion", "taylor", "--calib", "wrong-shape"], "(1, 3, 32, 32)"),
        (["--criterion", "taylor", "--calib", "two-arrays"], "2 array(s)"),
        (["--criterion", "taylor", "--calib", "garbled"], "not an .npz"),
        (["--criterion", "taylor", "--calib", "truncated"], "cannot read calibration inputs"),
        (["--plot", "widths.jpg"], "PNG"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(tmp_path, model_onnx, args, needle):
    if "--calib" in args:
        args = [*args[:-1], str(_calib(tmp_path, args[-1]))]
    if "--plot" in args:
        args = [*args[:-1], str(tmp_path / args[-1])]
    before = set(tmp_path.iterdir())
    proc = cli("prune", str(model_onnx), "-o", str(tmp_path / "out.onnx"), "--report", str(tmp_path / "r.json"),
               *args)
    assert_one_line_error(proc, needle)
    assert set(tmp_path.iterdir()) == before


def test_failure_while_writing_leaves_nothing(tmp_path, model_onnx, monkeypatch, capsys):
    """The outputs are staged beside their paths and moved into place together: a failure in the
    last one (here the plot) must not leave the model or the report behind."""

    def broken_plot(self: PruneReport, path: object) -> None:
        raise GraphpruneError("the plot could not be drawn")

    monkeypatch.setattr(PruneReport, "plot", broken_plot)
    out = tmp_path / "out.onnx"
    out.write_bytes(b"an older model")  # an existing output stays as it was
    rc = gp_cli.main(["prune", str(model_onnx), "-o", str(out), "--report", str(tmp_path / "r.json"),
                      "--plot", str(tmp_path / "w.png")])
    assert rc == 2 and "the plot could not be drawn" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [out] and out.read_bytes() == b"an older model"


# ------------------------------------------------------------------------------------------------
# The report from Python
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoo_graphs() -> dict[str, gp.Graph]:
    return {name: gp.trace(ZOO[name].build(), ZOO[name].example_inputs()) for name in ("mobilenetv2", "convnext")}


def test_prune_with_report_matches_the_pruned_graph(zoo_graphs, tmp_path):
    graph = zoo_graphs["convnext"]
    pruned, report = prune_with_report(graph, 0.5, round_to=1)
    assert pruned.to_text() == gp.prune(graph, 0.5, round_to=1).to_text()  # prune() is the same code
    before, after = gp.cost(graph), gp.cost(pruned)
    assert report.params == (before.params, after.params) and report.macs == (before.macs, after.macs)
    assert [r.node for r in report.layers] == [n.name for n in weighted_layers(graph)]
    for row, node in zip(report.layers, weighted_layers(pruned), strict=True):
        assert row.width_after == node.outputs[0].type.shape[node.outputs[0].type.channel_axis]
        assert row.width_after <= row.width_before
        assert row.params_after == after.by_node()[row.node].params
    groups = gp.coupling_groups(graph)
    assert [(g.id, g.size, g.blocked, g.stats) for g in groups] == [
        (r.id, r.units_before, r.blocked, r.stats) for r in report.groups
    ]
    for g in report.groups:
        # round_to=1: a prunable group loses exactly half its units (local scope)
        assert g.units_after == (_half_removed(g.units_before) if g.blocked is None else g.units_before)
    # convnext prunes through LayerNorm / GroupNorm statistics: the table says where
    stats = [g for g in report.groups if g.stats and g.units_after < g.units_before]
    table = report.table()
    assert stats and "pruned across statistics" in table and all(repr(g.name) in table for g in stats)
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["params"]["after"] == after.params and len(doc["layers"]) == len(report.layers)
    png = tmp_path / "widths.png"
    report.plot(png)
    assert png.read_bytes().startswith(PNG_SIGNATURE) and list(tmp_path.iterdir()) == [png]


def test_report_defaults_and_notes(zoo_graphs):
    graph = zoo_graphs["mobilenetv2"]
    _, report = prune_with_report(graph, 0.5, keep=["blocks.1.conv.0"])
    widths = {r.node: (r.width_before, r.width_after) for r in report.layers}
    assert widths["blocks.1.conv.6"] == (24, 16)  # half of 24, rounded up to a multiple of 8
    assert widths["blocks.1.conv.0"] == (64, 64)
    assert any("kept whole" in n and "blocks.1.conv.0" in n for n in report.notes)
    # nothing removed: the pass reports no change, the report still has every layer and group
    unchanged, report = prune_with_report(graph, 0.0)
    assert unchanged.to_text() == graph.to_text()
    assert all(r.width_after == r.width_before and r.params_after == r.params_before for r in report.layers)
    assert report.params[0] == report.params[1] and len(report.groups) == len(gp.coupling_groups(graph))


def test_build_report_directly(zoo_graphs):
    graph = zoo_graphs["mobilenetv2"]
    coupling = analyze(graph)
    report = build_report(graph, graph.copy(), coupling, {}, notes=["nothing chosen"])
    assert all(r.width_after == r.width_before for r in report.layers)
    assert all(g.units_after == g.units_before for g in report.groups) and report.notes == ("nothing chosen",)
    with pytest.raises(ValueError, match="not in the pruned graph"):
        build_report(graph, zoo_graphs["convnext"], coupling, {})
