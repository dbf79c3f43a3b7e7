"""Frontend and backend parity on every zoo model (marked slow; CI runs them).

trace -> interpreter == eager; trace -> save -> onnxruntime == eager; torch.onnx.export -> load ->
interpreter == onnxruntime on the original file; to_torch() == eager; text print -> parse -> print
identical; ONNX import -> export -> import structurally equal (same text form).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers import as_numpy, assert_close_scaled, structurally_equal
from zoo import ZOO

import graphprune as gp
from graphprune.inputs import sample_inputs

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]
NAMES = sorted(ZOO)


def eager(name):
    entry = ZOO[name]
    model, inputs = entry.build(), entry.example_inputs()
    with torch.no_grad():
        out = model(*inputs)
    return model, inputs, as_numpy(out)


def ort_run(path_or_bytes, arrays):
    sess = ort.InferenceSession(path_or_bytes, providers=["CPUExecutionProvider"])
    feeds = {i.name: a for i, a in zip(sess.get_inputs(), arrays, strict=True)}
    return sess.run(None, feeds)


@pytest.fixture(scope="module")
def traced():
    cache = {}

    def get(name):
        if name not in cache:
            model, inputs, ref = eager(name)
            cache[name] = (gp.trace(model, inputs), model, inputs, ref)
        return cache[name]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_trace_matches_eager(name, traced):
    graph, _, inputs, ref = traced(name)
    graph.verify()
    assert_close_scaled(graph.run(*as_numpy(inputs)), ref, what=f"{name} interpreter")


@pytest.mark.parametrize("name", NAMES)
def test_saved_onnx_matches_eager(name, traced, tmp_path):
    graph, _, inputs, ref = traced(name)
    path = tmp_path / f"{name}.onnx"
    gp.save(graph, path)
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    assert_close_scaled(ort_run(str(path), as_numpy(inputs)), ref, what=f"{name} onnxruntime")


@pytest.mark.parametrize("name", NAMES)
def test_to_torch_matches_eager(name, traced):
    graph, _, inputs, ref = traced(name)
    module = graph.to_torch()
    with torch.no_grad():
        out = module(*inputs)
    assert_close_scaled(as_numpy(out), ref, what=f"{name} to_torch")


@pytest.mark.parametrize("name", NAMES)
def test_text_round_trip(name, traced):
    graph = traced(name)[0]
    text = str(graph)
    assert str(gp.parse(text)) == text
    full = graph.to_text(full=True)
    back = gp.parse(full)
    assert back.to_text(full=True) == full
    x = sample_inputs(graph)
    for a, b in zip(graph.run(*x), back.run(*x), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_torch_onnx_export_then_load(name, tmp_path):
    model, inputs, ref = eager(name)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, str(path), dynamo=True, external_data=False)
    graph = gp.load(path)
    graph.verify()
    arrays = as_numpy(inputs)
    assert_close_scaled(graph.run(*arrays), ort_run(str(path), arrays), what=f"{name} loaded onnx")
    # import -> export -> import (at the file's opset) gives a structurally equal graph
    import onnx
    from graphprune.backends.onnx import to_onnx

    opset = next(o.version for o in onnx.load(str(path)).opset_import if o.domain == "")
    assert structurally_equal(gp.load(to_onnx(graph, opset=opset)), graph) == []
