"""The graphprune command: real subprocesses, exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = f"{ROOT / 'examples' / 'models.py'}:mobilenet_v2"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "graphprune", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("graphprune: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def conv_onnx(tmp_path_factory) -> Path:
    """A tiny ONNX conv model written with onnx.helper."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.ones(108, np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["y"], ["z"], name="relu")],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4, 8, 8])],
        [w],
    )
    path = tmp_path_factory.mktemp("m") / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_inspect_example_model():
    proc = cli("inspect", EXAMPLE)
    assert proc.returncode == 0, proc.stderr
    assert "total" in proc.stdout and "opaque to pruning: none" in proc.stdout
    assert "features.0" in proc.stdout  # layers carry their module names


def test_inspect_json(conv_onnx):
    proc = cli("inspect", str(conv_onnx), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["params"] == 108 and doc["macs"] == 4 * 8 * 8 * 3 * 9 and doc["opaque"] == []


def test_opt_writes_verified_onnx(tmp_path):
    out = tmp_path / "small.onnx"
    proc = cli("opt", EXAMPLE, "-p", "fold-bn,dce", "--verify", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "contracts verified" in proc.stdout
    onnx.checker.check_model(str(out), full_check=True)
    model = onnx.load(str(out))
    assert not [n for n in model.graph.node if n.op_type == "BatchNormalization"]


def test_truncated_and_garbage_files(tmp_path, conv_onnx):
    truncated = tmp_path / "truncated.onnx"
    data = conv_onnx.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert_one_line_error(cli("inspect", str(truncated)), "truncated.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot a model at all" * 10)
    assert_one_line_error(cli("inspect", str(garbage)), "garbage.onnx")
    assert_one_line_error(cli("inspect", str(tmp_path / "missing.onnx")), "missing.onnx", "no such file")


def test_failed_opt_writes_nothing(tmp_path, conv_onnx):
    out = tmp_path / "out.onnx"
    assert_one_line_error(cli("opt", str(conv_onnx), "-p", "fold-bn,nonsense", "-o", str(out)), "nonsense")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    assert_one_line_error(cli("opt", str(bad), "-p", "dce", "-o", str(out)), "bad.onnx")
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_shape_mismatch_names_the_node(tmp_path):
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 5, 3, 3], np.zeros(180, np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="stem_conv")],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        [w],
    )
    path = tmp_path / "mismatch.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert_one_line_error(cli("inspect", str(path)), "stem_conv")


def test_unknown_op_runs_opaquely_with_a_warning(tmp_path):
    axis = helper.make_tensor("axis", TensorProto.INT64, [], [1])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("CumSum", ["r", "axis"], ["y"], name="running_total")],
        "cumsum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [axis],
    )
    path = tmp_path / "cumsum.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    proc = cli("inspect", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "graphprune: warning:" in proc.stderr and "CumSum" in proc.stderr and "running_total" in proc.stderr
    assert "opaque to pruning (1): running_total (CumSum)" in proc.stdout


def test_gpir_output_round_trips(tmp_path, conv_onnx):
    out = tmp_path / "g.gpir"
    proc = cli("opt", str(conv_onnx), "-p", "dce", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    proc = cli("inspect", str(out), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["params"] == 108


def test_op_nobody_knows_is_refused_at_load(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], name="mystery", domain="com.acme")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "custom.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.acme", 1)])
    onnx.save(model, path)
    out = tmp_path / "out.onnx"
    assert_one_line_error(cli("opt", str(path), "-p", "dce", "-o", str(out)), "mystery", "Frobnicate",
                          "neither to graphprune nor to onnxruntime")
    assert not out.exists()
