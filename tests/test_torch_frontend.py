"""The torch frontend (trace) and the torch backend (to_torch) on small hand-written models.

Every model is checked three ways: the traced graph in the interpreter equals eager (float32, max
abs error <= 1e-4 x max(1, max |ref|)); the interpreter in float64 equals the module in double
precision (1e-9 relative); to_torch(graph) equals eager. Python float scalars in the models are
exactly representable in float32 on purpose: the IR stores a scalar in the dtype of the tensor it
meets (torch's promotion rule), so 0.1 would become 0.1f and differ from a double model by ~1e-8.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from graphprune.backends.torch import to_torch
from helpers import assert_close_scaled
from torch import nn

from graphprune.frontends import torch as torch_frontend
from graphprune.frontends.torch import trace
from graphprune.ir import ModelLoadError, Op

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel"),
]


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------


class ConvVariants(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.strided = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2, bias=False)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(8, 8, 5, padding=2, groups=8)
        self.same = nn.Conv2d(8, 6, 4, padding="same")
        self.reflect = nn.Conv2d(6, 6, 3, padding=1, padding_mode="reflect")
        self.up = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise(self.grouped(self.dilated(self.strided(x))))
        return self.up(self.reflect(self.same(x)))


class Conv1d3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(4, 6, 3, padding=1)
        self.t1 = nn.ConvTranspose1d(6, 4, 4, stride=2, padding=1)
        self.c3 = nn.Conv3d(2, 3, 3, padding=1)

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.t1(F.relu(self.c1(a))), self.c3(v)


class Dense(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.w = nn.Parameter(torch.randn(4, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)  # x is [B, T, 8]
        h = h @ self.w.t()  # x @ W.T written by hand
        return torch.matmul(h, h.transpose(-1, -2))


class Norms(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(8)
        self.gn = nn.GroupNorm(2, 8)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.inorm_plain = nn.InstanceNorm2d(8)
        self.ln = nn.LayerNorm([4, 4])
        self.ln_plain = nn.LayerNorm(4, elementwise_affine=False)
        self.rms = nn.RMSNorm(4, eps=1e-6)
        self.bn1d = nn.BatchNorm1d(8)
        with torch.no_grad():
            for m in (self.bn, self.bn1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
            for m in (self.gn, self.inorm, self.ln, self.rms):
                m.weight.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inorm_plain(self.inorm(self.gn(self.bn(x))))
        x = self.rms(self.ln_plain(self.ln(x)))
        return self.bn1d(x.mean(dim=(2, 3)))


class Activations(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.prelu = nn.PReLU(6, init=0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(x) + F.relu6(x * 4) + F.leaky_relu(x, 0.125) + self.prelu(x)
        b = F.gelu(x) + F.gelu(x, approximate="tanh") + F.silu(x) + torch.sigmoid(x) + torch.tanh(x)
        c = F.hardswish(x) + F.hardsigmoid(x) + F.hardtanh(x, -0.5, 0.75) + F.elu(x) + F.softplus(x) + F.mish(x)
        d = torch.erf(x) + torch.exp(-x.abs()) + torch.log(x.abs() + 1) + torch.sqrt(x.abs()) + torch.rsqrt(x.abs() + 1)
        e = torch.reciprocal(x.abs() + 2) + torch.sin(x) + torch.cos(x) - torch.neg(x) + x.pow(2) + torch.pow(2.0, x)
        f = torch.clamp(x, min=-0.25) + x.clamp(max=0.5) + torch.square(x) + x.softmax(1) + F.log_softmax(x, -1)
        g = torch.rsub(x, 1.0, alpha=2) + torch.sub(x, f, alpha=3) + torch.add(x, 2, alpha=0.5) + 3 - x
        return a + b + c + d + e + f + g


class Pooling(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (
            F.max_pool2d(x, 3, 2, 1, ceil_mode=True),
            F.max_pool2d(x, 2, ceil_mode=True),
            F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
            F.avg_pool2d(x, 3, 2, 1, count_include_pad=True),
            F.adaptive_avg_pool2d(x, (3, 2)),
            F.max_pool1d(x.flatten(2), 4),
            F.avg_pool1d(x.flatten(2), 3, 2),
            torch.amax(x, dim=(2, 3)),
        )


class Interpolate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (
            F.interpolate(x, scale_factor=2, mode="nearest"),
            F.interpolate(x, size=(7, 9), mode="nearest"),
            F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False),
            F.interpolate(x, size=(9, 6), mode="bilinear", align_corners=True),
            F.interpolate(x, scale_factor=1.5, mode="nearest-exact"),
            F.interpolate(x.flatten(2), scale_factor=2, mode="linear"),
            self.up(x),
        )


class Shuffle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(F.pixel_unshuffle(x, 2)), 2)


class Attention(nn.Module):
    """SDPA: causal with grouped-query heads, a float additive mask and a boolean mask."""

    def __init__(self, t: int = 6) -> None:
        super().__init__()
        self.t = t  # sequence length of the masks (a Python int, so torch.fx can trace them too)
        self.q = nn.Linear(16, 16)
        self.kv = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], self.t
        q = self.q(x).view(b, t, 4, 4).transpose(1, 2)  # 4 query heads
        k, v = self.kv(x).view(b, t, 2, 8).transpose(1, 2).chunk(2, dim=-1)  # 2 kv heads
        causal = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        bias = torch.triu(torch.full((t, t), -2.0), diagonal=1)
        k4, v4 = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
        masked = F.scaled_dot_product_attention(q, k4, v4, attn_mask=bias, scale=0.5)
        keep = torch.ones(t, t, dtype=torch.bool).tril()
        boolean = F.scaled_dot_product_attention(q, k4, v4, attn_mask=keep)
        return (causal + masked + boolean).transpose(1, 2).reshape(b, t, 16)


class Embeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.register_buffer("pick", torch.tensor([3, 0, 5]))

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        e = self.embed(ids)  # [B, T, 8]
        return (
            e.index_select(2, self.pick),
            e[:, self.pick],
            e.flip(-1),
            torch.roll(e, shifts=2, dims=1),
            ids.float() * 2 + 1,
        )


class DataMovement(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a, b = torch.chunk(x, 2, dim=1)  # x: [B, 6, 5, 4]
        p, q, r = torch.split(x, [1, 2, 3], dim=1)
        parts = x.unbind(2)
        first = x[:, 0]  # select
        stepped = x[:, 1::2, -3:, :-1]
        flat = x.flatten(1).view(x.shape[0], 3, -1).permute(0, 2, 1)
        rep = x[:, :1].expand(-1, 3, -1, -1) + x[:, 3:]
        stacked = torch.stack([a, b], dim=1)
        tiled = p.repeat(1, 2, 1, 3)
        return torch.cat([b, a * 2, q, r + p], dim=1), parts[3], first, stepped, flat, rep, stacked, tiled


class Conditional(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pos = x > 0
        w = torch.where(pos, x, 0.5 * x)
        m = x.masked_fill(x < -0.5, -1.0)
        logic = torch.logical_and(pos, x < 1) | (x == 0) | ~(x >= -1)
        return w + m, logic, (x != x.flip(0)).float() + (x <= 0.25).float()


class Pads(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (
            F.pad(x, (1, 2, 0, 3), value=0.5),
            F.pad(x, (2, 1, 1, 2), mode="reflect"),
            F.pad(x, (1, 1, 2, 0), mode="replicate"),
            F.pad(x, (-1, 2, 1, -2)),
            F.pad(x.flatten(2), (2, 3), mode="reflect"),
        )


class Reductions(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (
            x.mean(),
            x.sum(dim=1, keepdim=True),
            x.var(dim=(2, 3)),
            x.std(dim=-1, keepdim=True, unbiased=False),
            x.max(dim=1).values,
            F.normalize(x, dim=1),
            torch.linalg.vector_norm(x, dim=-1),
        )


class Tied(nn.Module):
    """A tied embedding / output projection and one convolution applied twice."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(12, 6)
        self.head = nn.Linear(6, 12, bias=False)
        self.head.weight = self.embed.weight
        self.shared = nn.Conv1d(6, 6, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids).transpose(1, 2)
        h = self.shared(F.relu(self.shared(h))).transpose(1, 2)
        return self.head(h)


class Rotary(nn.Module):
    """Builds its rotary tables in forward from arange: everything constant is folded at import."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        inv = 1.0 / (100.0 ** (torch.arange(0, 8, 2, dtype=torch.float32) / 8))
        freqs = torch.outer(torch.arange(t, dtype=torch.float32), inv)
        emb = torch.cat([freqs, freqs], dim=-1)
        x1, x2 = x[..., :4], x[..., 4:]
        return x * emb.cos() + torch.cat([-x2, x1], dim=-1) * emb.sin()


class Cumsum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(self.conv(x), dim=1) * 2


class DynamicConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc(x.view(x.size(0), -1))


class DynamicTransformer(nn.Module):
    """Manual attention (4-D matmuls lowered to bmm by torch) and SDPA with a symbolic batch."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(16, 48)
        self.ln = nn.LayerNorm(16)
        self.proj = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln(x)).view(b, t, 3, 4, 4).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) * 0.5
        manual = att.softmax(-1) @ v
        fused = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out = (manual + fused).transpose(1, 2).reshape(b, t, c)
        return x + self.proj(out)


class MultiOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"a": self.a(x), "pair": (self.b(y), x + y)}  # type: ignore[dict-item]


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x


def _img(*shape: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    return lambda: (torch.randn(*shape),)


@dataclass
class Case:
    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[], tuple[torch.Tensor, ...]]
    fx: bool = True  # also check the fx fallback path
    kw: dict = field(default_factory=dict)


CASES = [
    Case("conv_variants", ConvVariants, _img(2, 3, 16, 16)),
    Case("conv1d_3d", Conv1d3d, lambda: (torch.randn(2, 4, 10), torch.randn(1, 2, 4, 5, 6))),
    Case("dense", Dense, _img(2, 5, 8)),
    Case("norms", Norms, _img(2, 8, 4, 4)),
    Case("activations", Activations, _img(2, 6, 5, 5)),
    Case("pooling", Pooling, _img(2, 3, 9, 11)),
    Case("interpolate", Interpolate, _img(1, 2, 5, 4)),
    Case("shuffle", Shuffle, _img(1, 4, 6, 8)),
    Case("attention", Attention, _img(2, 6, 16)),
    Case("embeddings", Embeddings, lambda: (torch.randint(0, 20, (2, 7)),)),
    Case("data_movement", DataMovement, _img(2, 6, 5, 4)),
    Case("conditional", Conditional, _img(3, 8)),
    Case("pads", Pads, _img(1, 2, 5, 6)),
    Case("reductions", Reductions, _img(2, 3, 4, 5)),
    Case("tied", Tied, lambda: (torch.randint(0, 12, (2, 5)),)),
    Case("rotary", Rotary, _img(2, 5, 8), fx=False),  # x.shape[1] in python: not fx-traceable
    Case("multi_output", MultiOutput, lambda: (torch.randn(2, 4), torch.randn(2, 4))),
    Case("dynamic_transformer", DynamicTransformer, _img(2, 5, 16)),
]
FX_CASES = [c for c in CASES if c.fx]


def _build(case: Case) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    model = case.build().eval()
    torch.manual_seed(1)
    return model, case.inputs()


def _flat(out: object) -> list[torch.Tensor]:
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _eager(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in _flat(model(*inputs))]


_TRACED: dict[tuple[str, str], object] = {}


def _traced(case: Case, method: str = "auto"):
    key = (case.name, method)
    if key not in _TRACED:
        model, inputs = _build(case)
        _TRACED[key] = (trace(model, inputs, method=method), model, inputs)
    return _TRACED[key]


def _check_all(graph, model, inputs) -> None:
    arrays = [t.numpy() for t in inputs]
    ref = _eager(model, inputs)
    assert_close_scaled(graph.run(*arrays), ref, 1e-4, "interpreter float32")
    with torch.no_grad():
        got = to_torch(graph)(*inputs)
    assert_close_scaled(_flat(got), ref, 1e-4, "to_torch")

    double = copy.deepcopy(model).double()
    inputs64 = tuple(t.double() if t.is_floating_point() else t for t in inputs)
    ref64 = _eager(double, inputs64)
    got64 = graph.run(*[t.numpy() for t in inputs64], dtype="float64")
    for g, r in zip(got64, ref64, strict=True):
        if r.dtype == np.float64:
            assert g.dtype == np.float64
    assert_close_scaled(got64, ref64, 1e-9, "interpreter float64")


# ---------------------------------------------------------------------------------------------
# parity
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_export_path_matches_eager(case: Case) -> None:
    graph, model, inputs = _traced(case)
    assert not graph.find(Op.OPAQUE), [n.name for n in graph.find(Op.OPAQUE)]
    _check_all(graph, model, inputs)


@pytest.mark.parametrize("case", FX_CASES, ids=[c.name for c in FX_CASES])
def test_fx_path_matches_eager(case: Case) -> None:
    graph, model, inputs = _traced(case, "fx")
    assert not graph.find(Op.OPAQUE), [n.name for n in graph.find(Op.OPAQUE)]
    _check_all(graph, model, inputs)


def test_both_paths_translate_to_the_same_ops() -> None:
    for name in ("conv_variants", "norms", "attention"):
        case = next(c for c in CASES if c.name == name)
        a, b = _traced(case)[0], _traced(case, "fx")[0]
        ops_a = sorted(n.op.value for n in a if n.op not in (Op.RESHAPE, Op.SQUEEZE, Op.UNSQUEEZE))
        ops_b = sorted(n.op.value for n in b if n.op not in (Op.RESHAPE, Op.SQUEEZE, Op.UNSQUEEZE))
        assert ops_a == ops_b, name


# ---------------------------------------------------------------------------------------------
# what the graph looks like
# ---------------------------------------------------------------------------------------------


def test_high_level_ops_survive() -> None:
    ops = {n.op for n in _traced(CASES[0])[0]}
    assert {Op.CONV, Op.CONV_TRANSPOSE, Op.PAD} <= ops
    attn = _traced(next(c for c in CASES if c.name == "attention"))[0]
    atts = attn.find(Op.ATTENTION)
    assert len(atts) == 3
    assert atts[0].attrs.is_causal and atts[0].attrs.enable_gqa
    assert len(atts[1].inputs) == 4 and atts[1].attrs.scale == 0.5
    assert not attn.find(Op.MATMUL) and not attn.find(Op.SOFTMAX)
    norms = _traced(next(c for c in CASES if c.name == "norms"))[0]
    counts = {op: len(norms.find(op)) for op in (Op.BATCH_NORM, Op.GROUP_NORM, Op.INSTANCE_NORM, Op.LAYER_NORM)}
    assert counts == {Op.BATCH_NORM: 2, Op.GROUP_NORM: 1, Op.INSTANCE_NORM: 2, Op.LAYER_NORM: 2}
    assert len(norms.find(Op.RMS_NORM)) == 1


def test_names_sources_and_inputs() -> None:
    graph, model, _ = _traced(CASES[0])
    assert [v.name for v in graph.inputs] == ["x"]
    assert graph.inputs[0].type.channel_axis == 1
    conv = next(n for n in graph.find(Op.CONV) if n.name == "strided")
    w = conv.inputs[1]
    assert w.name == "strided.weight" and w.source == "strided.weight"
    np.testing.assert_array_equal(w.data, model.strided.weight.detach().numpy())
    assert {n.name for n in graph.find(Op.CONV)} >= {"strided", "dilated", "grouped", "depthwise", "same"}
    assert graph.name == "ConvVariants"
    assert trace(nn.ReLU(), (torch.randn(2),), name="act").name == "act"
    emb = _traced(next(c for c in CASES if c.name == "embeddings"))[0]
    assert emb.inputs[0].name == "ids" and emb.inputs[0].type.channel_axis is None


def test_tied_parameters_are_one_constant() -> None:
    graph = _traced(next(c for c in CASES if c.name == "tied"))[0]
    table = [c for c in graph.constants if c.source == "embed.weight"]
    assert len(table) == 1
    assert {n.op for n in table[0].consumers} == {Op.GATHER, Op.LINEAR}
    shared = graph.value("shared.weight")
    assert len(shared.consumers) == 2
    assert not any(c.name.startswith("head.") for c in graph.constants)


def test_constant_computations_are_folded() -> None:
    graph = _traced(next(c for c in CASES if c.name == "rotary"))[0]
    ops = {n.op for n in graph}
    assert ops <= {Op.MUL, Op.ADD, Op.SLICE, Op.NEG, Op.CONCAT}, ops
    assert len(graph) == 7


def test_linear_written_by_hand_becomes_linear() -> None:
    graph = _traced(next(c for c in CASES if c.name == "dense"))[0]
    linears = graph.find(Op.LINEAR)
    assert [n.inputs[1].name for n in linears] == ["fc.weight", "w"]
    assert len(graph.find(Op.MATMUL)) == 1


def test_batched_matmul_keeps_heads() -> None:
    """x @ y on 4-D tensors reaches torch.export as view + bmm + view; the IR keeps one 4-D MATMUL."""
    graph = _traced(next(c for c in CASES if c.name == "dynamic_transformer"))[0]
    mms = graph.find(Op.MATMUL)
    assert len(mms) == 2 and all(n.output.type.rank == 4 for n in mms)


# ---------------------------------------------------------------------------------------------
# opaque ops, dynamic batch, fallback and errors
# ---------------------------------------------------------------------------------------------


def test_unknown_op_becomes_opaque_with_a_warning() -> None:
    torch.manual_seed(0)
    model, x = Cumsum().eval(), torch.randn(1, 3, 4, 4)
    with pytest.warns(UserWarning, match=r"op aten\.cumsum\.default at node 'cumsum' is not known to graphprune"):
        graph = trace(model, (x,))
    (node,) = graph.find(Op.OPAQUE)
    assert node.attrs.source == "torch" and node.attrs.op_name == "aten.cumsum.default"
    assert node.output.type.shape == (1, 4, 4, 4)
    _check_all(graph, model, (x,))


@pytest.mark.parametrize("build,shape", [(DynamicConvNet, (3, 8, 8)), (DynamicTransformer, (5, 16))])
def test_dynamic_batch(build: Callable[[], nn.Module], shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():
        if isinstance(model, DynamicConvNet):
            model.bn.running_mean.uniform_(-0.5, 0.5)
    graph = trace(model, (torch.randn(1, *shape),), dynamic_batch=True)
    assert graph.inputs[0].type.shape == ("N", *shape)
    for n in graph.find(Op.RESHAPE):
        assert n.attrs.shape[0] in (0, -1), (n.name, n.attrs.shape)
    module = to_torch(graph)
    for batch in (1, 3):
        x = torch.randn(batch, *shape)
        ref = _eager(model, (x,))
        assert_close_scaled(graph.run(x.numpy()), ref, 1e-4, f"interpreter batch {batch}")
        with torch.no_grad():
            assert_close_scaled([module(x)], ref, 1e-4, f"to_torch batch {batch}")


def test_dynamic_batch_that_cannot_be_expressed_says_why() -> None:
    class ClsToken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cls = nn.Parameter(torch.zeros(1, 1, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)

    with pytest.raises(ModelLoadError, match="symbolic"):
        trace(ClsToken().eval(), (torch.randn(2, 3, 4),), dynamic_batch=True)
    graph = trace(ClsToken().eval(), (torch.randn(2, 3, 4),))  # static batch is fine
    assert graph.outputs[0].type.shape == (2, 4, 4)


def test_auto_falls_back_to_fx_when_export_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated torch.export failure")

    monkeypatch.setattr(torch_frontend, "_export", broken)
    graph, model, inputs = _traced(CASES[0], "fx")
    fallback = trace(model, inputs)
    assert str(fallback) == str(graph)


def test_module_neither_path_captures() -> None:
    with pytest.raises(ModelLoadError) as info:
        trace(DataDependent(), (torch.randn(2, 3),))
    msg = str(info.value)
    assert "DataDependent" in msg and "torch.export" in msg and "symbolic_trace" in msg
    assert "control flow" in msg
    with pytest.raises(ModelLoadError, match="torch.export could not capture DataDependent"):
        trace(DataDependent(), (torch.randn(2, 3),), method="export")


def test_training_mode_is_traced_in_eval_and_restored() -> None:
    torch.manual_seed(0)
    model = Norms().train()
    model.ln.eval()
    x = torch.randn(2, 8, 4, 4)
    with pytest.warns(UserWarning, match="training mode"):
        graph = trace(model, (x,))
    assert model.training and model.bn.training and not model.ln.training
    model.eval()
    assert_close_scaled(graph.run(x.numpy()), _eager(model, (x,)), 1e-4)


@pytest.mark.parametrize(
    "inputs,error",
    [
        (torch.randn(1, 3), "wrap a single tensor"),
        ([torch.randn(1, 3)], "tuple of tensors, got list"),
        ((torch.randn(1, 3), 3), r"example_inputs\[1\] is a int"),
        ((torch.randn(1, 3, dtype=torch.complex64),), "does not support"),
    ],
)
def test_bad_example_inputs(inputs: object, error: str) -> None:
    with pytest.raises(TypeError, match=error):
        trace(nn.Linear(3, 2), inputs)  # type: ignore[arg-type]


def test_bad_module_and_method() -> None:
    with pytest.raises(TypeError, match="torch.nn.Module"):
        trace(lambda x: x, (torch.randn(2),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        trace(nn.ReLU(), (torch.randn(2),), method="jit")


def test_to_torch_module_is_exportable_and_owns_parameters() -> None:
    graph, model, inputs = _traced(CASES[0])
    module = to_torch(graph)
    names = dict(module.named_parameters())
    assert "strided__weight" in names and module.const_names["strided.weight"] == "strided__weight"
    assert names["strided__weight"].requires_grad  # trainable, e.g. to fine-tune after pruning
    ep = torch.export.export(module, inputs, strict=False)
    assert_close_scaled(_flat(ep.module()(*inputs)), _eager(model, inputs), 1e-4)
    double = copy.deepcopy(module).double()
    arrays64 = [t.double().numpy() for t in inputs]
    with torch.no_grad():
        got64 = double(*[torch.from_numpy(a) for a in arrays64])
    assert_close_scaled([got64], graph.run(*arrays64, dtype="float64"), 1e-9)


def test_to_torch_constant_names_never_clash() -> None:
    from graphprune.ir import Graph, TensorType
    from graphprune.ir.types import DType

    g = Graph("g")
    x = g.add_input("x", TensorType(DType.F32, (2,)))
    a = g.add_const("forward", np.ones(2, np.float32))
    b = g.add_const("input_names", np.full(2, 2, np.float32))
    c = g.add_const("0.w", np.full(2, 3, np.float32))
    y = g.add_node(Op.MUL, [g.add_node(Op.ADD, [x, a]).output, b]).output
    g.set_outputs([g.add_node(Op.SUB, [y, c]).output])
    module = to_torch(g)
    assert set(module.const_names.values()) == {"forward_1", "input_names_1", "c_0__w"}
    assert_close_scaled([module(torch.zeros(2))], [np.full(2, -1.0)])


@pytest.mark.parametrize(
    "mode,coord,nearest",
    [
        ("nearest", "asymmetric", "floor"),
        ("nearest", "half_pixel", "round_prefer_ceil"),
        ("nearest", "half_pixel", "round_prefer_floor"),
        ("nearest", "align_corners", "ceil"),
        ("linear", "align_corners", "floor"),
        ("linear", "half_pixel", "floor"),
        ("linear", "pytorch_half_pixel", "floor"),
        ("linear", "asymmetric", "floor"),
    ],
)
@pytest.mark.parametrize("sizes,scales", [((7, 3), ()), ((1, 8), ()), ((10, 8), (2.0, 2.0))])
def test_to_torch_resize_matches_interpreter(mode: str, coord: str, nearest: str, sizes: tuple, scales: tuple) -> None:
    from graphprune.ir import Graph, TensorType
    from graphprune.ir.ops import ResizeAttrs
    from graphprune.ir.types import DType

    g = Graph("g")
    x = g.add_input("x", TensorType(DType.F32, (1, 2, 5, 4), 1))
    node = g.add_node(Op.RESIZE, [x], ResizeAttrs(sizes, scales, mode, coord, nearest), name="resize")
    g.set_outputs(node.outputs)
    data = torch.randn(1, 2, 5, 4)
    with torch.no_grad():
        got = to_torch(g)(data)
    assert_close_scaled([got], g.run(data.numpy()), 1e-6)


def test_bilinear_to_size_one_samples_the_centre() -> None:
    class Down(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, size=(1, 3), mode="bilinear")

    x = torch.randn(1, 2, 4, 6)
    graph = trace(Down(), (x,))
    assert graph.find(Op.RESIZE)[0].attrs.coordinate_transformation == "half_pixel"
    _check_all(graph, Down(), (x,))


def test_to_torch_rejects_onnx_opaque_nodes() -> None:
    from graphprune.ir import ExportError, Graph, TensorType
    from graphprune.ir.opaque import onnx_attrs
    from graphprune.ir.types import DType

    g = Graph("g")
    x = g.add_input("x", TensorType(DType.F32, (2,)))
    t = TensorType(DType.F32, (2,))
    node = g.add_node(Op.OPAQUE, [x], onnx_attrs("Celu", b"", {"": 17}), types=[t], name="celu")
    g.set_outputs(node.outputs)
    with pytest.raises(ExportError, match="'celu'.*ONNX op opaque to graphprune cannot run in torch"):
        to_torch(g)


def test_no_graphprune_warnings_on_supported_models() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, inputs = _build(next(c for c in CASES if c.name == "activations"))
        trace(model, inputs)
    assert not [w for w in caught if "graphprune" in str(w.message)]
