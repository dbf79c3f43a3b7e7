"""Sanity tests for the topology zoo (tests/zoo.py).

Each model must be deterministic, finite, small, exportable with
``torch.export.export`` and exportable to ONNX (dynamo exporter) with
onnxruntime matching eager within 1e-4 relative to the output scale.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from zoo import ZOO, ZooEntry, count_params  # noqa: E402

# torch internals (pytree pickling during export) emit this; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")

REQUIRED = {
    "resnet_bottleneck",
    "mobilenetv2",
    "densenet",
    "se_net",
    "shufflenet",
    "split_branches",
    "flatten_linear",
    "vit",
    "llama",
    "convnext",
    "unet",
    "misc_ops",
    "multi_io",
}

NAMES = sorted(ZOO)


def _as_tuple(out) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _run(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return _as_tuple(model(*inputs))


def _assert_close_scaled(actual, expected, rtol: float = 1e-4) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        a = torch.as_tensor(a)
        assert a.shape == e.shape, (a.shape, e.shape)
        scale = e.abs().max().item()
        err = (a - e).abs().max().item()
        assert err <= rtol * max(scale, 1e-12), f"max abs err {err:.3e} vs output scale {scale:.3e}"


def test_zoo_has_required_entries():
    assert REQUIRED <= set(ZOO)
    for name, entry in ZOO.items():
        assert isinstance(entry, ZooEntry)
        assert entry.name == name


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_finite_small(name):
    entry = ZOO[name]
    m1, m2 = entry.build(), entry.build()
    assert not m1.training and all(not m.training for m in m1.modules())
    assert count_params(m1) < 2_000_000

    sd1, sd2 = m1.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k

    x1, x2 = entry.example_inputs(), entry.example_inputs()
    assert isinstance(x1, tuple) and all(isinstance(t, torch.Tensor) for t in x1)
    for a, b in zip(x1, x2, strict=True):
        assert torch.equal(a, b)

    out_a = _run(m1, x1)
    out_b = _run(m1, x1)
    out_c = _run(m2, x2)
    for a, b, c in zip(out_a, out_b, out_c, strict=True):
        assert torch.isfinite(a).all()
        assert torch.equal(a, b)
        assert torch.equal(a, c)
        assert a.float().std() > 0  # non-trivial output

    # Batch norms must not be identity maps.
    for mod in m1.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            assert not torch.allclose(mod.running_var, torch.ones_like(mod.running_var))
            assert not torch.allclose(mod.running_mean, torch.zeros_like(mod.running_mean))


@pytest.mark.parametrize("name", NAMES)
def test_torch_export(name):
    entry = ZOO[name]
    model, inputs = entry.build(), entry.example_inputs()
    ep = torch.export.export(model, inputs)
    call_targets = {n.target for n in ep.graph.nodes if n.op == "call_function"}
    assert call_targets
    expected = _run(model, inputs)
    with torch.no_grad():
        got = _as_tuple(ep.module()(*inputs))
    _assert_close_scaled(got, expected, rtol=1e-5)

    dec = ep.run_decompositions()
    with torch.no_grad():
        got_dec = _as_tuple(dec.module()(*inputs))
    _assert_close_scaled(got_dec, expected, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_roundtrip(name, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")

    entry = ZOO[name]
    model, inputs = entry.build(), entry.example_inputs()
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, inputs, str(path), dynamo=True, external_data=False)
    assert path.exists()

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sess_inputs = sess.get_inputs()
    assert len(sess_inputs) == len(inputs)
    feeds = {i.name: t.numpy() for i, t in zip(sess_inputs, inputs, strict=True)}
    got = [torch.from_numpy(o) for o in sess.run(None, feeds)]
    _assert_close_scaled(got, _run(model, inputs), rtol=1e-4)
