"""Real architectures from Hugging Face transformers (tiny random configs, no download): the trace
equals eager, attention heads and MLPs are prunable, and pruning half the channels passes the
masked-reference contract and exports to onnxruntime."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hf_zoo import MODELS, ONNX_MODELS, FirstOutput, example_input
from torch import nn

import graphprune as gp

pytestmark = pytest.mark.slow


def _trace(model: nn.Module, x: torch.Tensor) -> tuple[gp.Graph, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = gp.trace(model, (x,))
        with torch.no_grad():
            return graph, model(x).numpy()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hugging_face_model_prunes_exactly(name, tmp_path):
    factory, image, min_groups = MODELS[name]
    torch.manual_seed(0)
    model = FirstOutput(factory()).eval()
    x = example_input(image)
    # float64: the trace equals eager (HF computes rotary tables in float32 even in a double model,
    # hence 1e-6), and pruning passes the masked-reference contract
    x64 = x.double() if image else x
    graph, eager = _trace(model.double(), x64)
    np.testing.assert_allclose(graph.run(x64.numpy())[0], eager, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(eager).max()))
    groups = gp.coupling_groups(graph)
    assert sum(g.prunable for g in groups) >= min_groups
    pruned = gp.prune(graph, 0.5, round_to=1, verify=True)
    assert gp.cost(pruned).params < 0.8 * gp.cost(graph).params
    # float32 (what onnxruntime runs): the pruned export equals the interpreter
    graph32, _ = _trace(model.float(), x)
    pruned32 = gp.prune(graph32, 0.5, round_to=1)
    path = tmp_path / f"{name}.onnx"
    gp.save(pruned32, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    want = pruned32.run(x.numpy(), dtype="float32")[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("name", sorted(ONNX_MODELS))
def test_hugging_face_onnx_export_prunes_exactly(name, tmp_path):
    """The same through torch.onnx.export (the dynamo exporter, optimized): its decompositions, and its
    deduplicated initializers (the zero biases and unit norm scales of every layer become one tensor)."""
    import contextlib
    import io

    factory, image, min_groups = ONNX_MODELS[name]
    torch.manual_seed(0)
    model = FirstOutput(factory()).eval()
    x = example_input(image)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=True, optimize=True)
    graph = gp.load(path)
    assert sum(g.prunable for g in gp.coupling_groups(graph)) >= min_groups
    pruned = gp.prune(graph, 0.5, round_to=1, verify=True)
    assert gp.cost(pruned).params < 0.8 * gp.cost(graph).params
    gp.save(pruned, tmp_path / "pruned.onnx")
    sess = ort.InferenceSession(str(tmp_path / "pruned.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    want = pruned.run(x.numpy(), dtype="float32")[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()))
