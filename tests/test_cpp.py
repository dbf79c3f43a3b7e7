"""The cpp backend: generated C++ built with real compilers, run on the host (in process), on aarch64
(qemu-user) and on wasm32 (node), compared with the reference interpreter.

Tolerance: float32 kernels against the float64 interpreter, max |err| <= 1e-4 x max(1, max |ref|) per
output (the kernels reorder sums, and fused FMAs round differently from numpy).
A target whose toolchain is missing is skipped with the message naming the package; CI installs all.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import onnx
import pytest
from graphprune.backends import cpp
from graphprune.backends.cpp import codegen, packing, toolchain
from helpers import assert_close_scaled
from onnx import TensorProto, helper, numpy_helper
from zoo import ZOO

import graphprune as gp
from graphprune.cli import main
from graphprune.ir.ops import Op, OpaqueAttrs
from graphprune.ir.types import DType, TensorType

REL = 1e-4
CROSS = sorted(ZOO)  # every zoo model on every target (slow: emulated)


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    """Object files cached for this session only: every session builds the runtime once per target."""
    mp = pytest.MonkeyPatch()
    mp.setenv("GRAPHPRUNE_CACHE", str(tmp_path_factory.mktemp("gp-cache")))
    yield
    mp.undo()


def need(target: str) -> None:
    try:
        toolchain.find(target)
        toolchain.runner_prefix(target)
    except toolchain.ToolchainError as e:
        pytest.skip(str(e))


_GRAPHS: dict[tuple[str, bool], tuple[gp.Graph, list[np.ndarray]]] = {}


def zoo_graph(name: str, pruned: bool = False) -> tuple[gp.Graph, list[np.ndarray]]:
    key = (name, pruned)
    if key not in _GRAPHS:
        entry = ZOO[name]
        g = gp.trace(entry.build(), entry.example_inputs())
        if pruned:
            g = gp.prune(g, channels=0.5)
        _GRAPHS[key] = (g, [t.numpy() for t in entry.example_inputs()])
    return _GRAPHS[key]


def check(graph: gp.Graph, inputs, target: str, out_dir, **kw) -> cpp.Artifact:
    need(target)
    art = gp.compile(graph, "cpp", target=target, out_dir=out_dir, **kw)
    assert_close_scaled(art.run(*inputs), graph.run(*inputs), rel=REL, what=f"{target} {out_dir}")
    return art


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_host_dense(name, tmp_path):
    g, ins = zoo_graph(name)
    check(g, ins, "host", tmp_path, threads=2)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_host_pruned(name, tmp_path):
    g, ins = zoo_graph(name, pruned=True)
    check(g, ins, "host", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["aarch64", "wasm32"])
@pytest.mark.parametrize("name", CROSS)
def test_zoo_cross(name, target, tmp_path):
    g, ins = zoo_graph(name)
    check(g, ins, target, tmp_path, threads=2)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["aarch64", "wasm32"])
def test_pruned_cross(target, tmp_path):
    g, ins = zoo_graph("mobilenetv2", pruned=True)
    check(g, ins, target, tmp_path, weights="bin")


@pytest.mark.parametrize("name", ["resnet_bottleneck", "split_branches", "convnext"])
def test_contiguous_reads_are_views(name, tmp_path):
    """After unconstrained pruning + reorder a reader's contiguous channels are a Slice, and a chunk
    of a batch-1 tensor a Split: both become pointers into the tensor they read, no copy."""
    entry = ZOO[name]
    g = gp.prune(gp.trace(entry.build(), entry.example_inputs()), 0.5, constrained=False, round_to=1)
    views = [n for n in g.nodes if n.op in (Op.SLICE, Op.SPLIT)]
    assert views, f"{name}: no slice or split to lower"
    check(g, [t.numpy() for t in entry.example_inputs()], "host", tmp_path)
    src = (tmp_path / "model.cpp").read_text()
    assert src.count("(a view: no copy)") + src.count("(views: no copy)") >= len(views)


# ---- sparse layers: weights sparsified here, from numpy ----


def sparsify(w: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    w = w.copy()
    flat = w.reshape(w.shape[0], -1)
    if kind == "csr":  # 90% unstructured zeros
        flat[rng.random(flat.shape) < 0.9] = 0
    elif kind in ("block4", "block8"):  # 70% of the nb x 1 output-channel blocks zero
        nb = int(kind[5:])
        keep = rng.random((flat.shape[0] // nb, flat.shape[1])) >= 0.7
        flat[: flat.shape[0] // nb * nb] *= np.repeat(keep, nb, axis=0)
    else:  # 2:4 along the input channels
        g = flat.reshape(flat.shape[0], -1, 4)
        drop = np.argsort(np.abs(g), axis=2)[:, :, :2]
        np.put_along_axis(g, drop, 0, axis=2)
    return w


def sparse_model(kind: str, cout: int = 36) -> tuple[gp.Graph, list[np.ndarray]]:
    """1x1 convs (one with an odd width: leftover rows) and a linear over 24 tokens, sparsified."""
    import torch

    rng = np.random.default_rng(0)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(32, cout, 1)
            self.b = torch.nn.Conv2d(cout, 64, 1)
            self.fc = torch.nn.Linear(64, 40)

        def forward(self, x):
            y = torch.nn.functional.relu6(self.b(torch.relu(self.a(x))))
            return self.fc(y.flatten(2).transpose(1, 2))

    torch.manual_seed(0)
    m = M().eval()
    with torch.no_grad():
        for layer in (m.a, m.b, m.fc):
            layer.weight.copy_(torch.from_numpy(sparsify(layer.weight.numpy(), kind, rng)))
    x = torch.randn(1, 32, 9, 9)  # 81 pixels: a full pixel tile of every kernel, one vector, a scalar tail
    return gp.trace(m, (x,)), [x.numpy()]


def conv_paths_model() -> tuple[gp.Graph, list[np.ndarray]]:
    """The dense conv kernels' special paths on shapes that reach them with AVX-512 vectors (and with
    4-wide ones): the few-channel stem (3x3, stride 2: read in place from an even width, from split
    planes on an odd one), stride-1 3x3 depthwise read in place (rows of 66, 20 and 17: overlapping last
    vectors, an odd row count; rows of one vector or less, 9, 14 and 16, through lane masks), depthwise
    row kernels (3x3 and 5x5, stride 1 and 2, odd widths: partial last vectors; stride 2 read in place
    from an even width, 66, and an odd one, 33, and from rows narrower than two vectors, 20 and 13), the
    channels-last depthwise of small images (24 channels: a block of 16 and 8 left over) and the flat
    stride-1 depthwise of narrow images (5x5 on rows of 9, 3x3 on rows of 5, fewer rows than the kernel
    has: masked taps and zero guards)."""
    import torch

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.dw1 = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.dw5 = torch.nn.Conv2d(8, 8, 5, padding=2, groups=8)
            self.dw2 = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
            self.pw = torch.nn.Conv2d(8, 24, 1)
            self.dw_small = torch.nn.Conv2d(24, 24, 3, stride=2, padding=1, groups=24)
            self.dw_small2 = torch.nn.Conv2d(24, 24, 3, stride=2, padding=1, groups=24)
            self.flat3 = torch.nn.Conv2d(24, 24, 3, padding=1, groups=24)
            self.flat5 = torch.nn.Conv2d(24, 24, 5, padding=2, groups=24)
            self.dw_small3 = torch.nn.Conv2d(24, 24, 3, stride=2, padding=1, groups=24)
            self.flat3b = torch.nn.Conv2d(24, 24, 3, padding=1, groups=24)
            self.few2 = torch.nn.Conv2d(2, 8, 3, padding=1)  # the few-channel kernel, stride 1, C = 2
            # stride 2 read in place from rows narrower than two vectors (the reads run into later rows
            # and past the channel's end), an even width and an odd one
            self.dw_narrow = torch.nn.Conv2d(3, 3, 3, stride=2, padding=1, groups=3)
            self.stem_odd = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)  # 2 OW > W: the split planes
            self.dw_in_place = torch.nn.Conv2d(3, 3, 3, padding=1, groups=3)  # stride 1, rows of 20 and 17

        def forward(self, x):
            few = self.few2(x[:, :2])
            narrow = self.dw_narrow(x[:, :, :17, :20]), self.dw_narrow(x[:, :, :16, :13])  # 9 x 10, 8 x 7
            narrow = (*narrow, self.stem_odd(x[:, :, :, :131]), self.dw_in_place(x[:, :, :7, :20]),
                      self.dw_in_place(x[:, :, :5, :17]), self.dw_in_place(x[:, :, :14, :14]),
                      self.dw_in_place(x[:, :, :6, :16]))
            x = torch.nn.functional.relu6(self.stem(x))  # 8 x 20 x 66
            x = self.dw5(torch.relu(self.dw1(x)))
            x = self.pw(torch.nn.functional.relu6(self.dw2(x)))  # 24 x 10 x 33
            x = self.dw_small2(torch.relu(self.dw_small(x)))  # 24 x 3 x 9
            x = self.flat5(torch.relu(self.flat3(x)))
            return self.flat3b(self.dw_small3(x)), few, *narrow  # 24 x 2 x 5

    torch.manual_seed(0)
    x = torch.randn(1, 3, 40, 132)
    return gp.trace(M().eval(), (x,)), [x.numpy()]


def test_conv_paths_host(tmp_path):
    g, ins = conv_paths_model()
    check(g, ins, "host", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["aarch64", "wasm32"])
def test_conv_paths_cross(target, tmp_path):
    g, ins = conv_paths_model()
    check(g, ins, target, tmp_path)


def pool_model() -> tuple[gp.Graph, list[np.ndarray]]:
    """Max and average pools over every parameter the separable kernel handles: stride 1, 2 and 3,
    padding, dilation, ceil mode (windows that run past the pads), count_include_pad on and off, 1-D."""
    import torch

    F = torch.nn.functional

    class M(torch.nn.Module):
        def forward(self, x):
            return (
                F.max_pool2d(x, 3, 2, 1),  # ResNet's stem pool
                F.max_pool2d(x, 3, 1, 1),
                F.max_pool2d(x, (2, 3), (3, 2), (1, 0), dilation=(2, 1), ceil_mode=True),
                F.avg_pool2d(x, 3, 2, 1),
                F.avg_pool2d(x, 3, 2, 1, count_include_pad=False, ceil_mode=True),
                F.avg_pool2d(x, (1, 4), (1, 3)),
                F.max_pool1d(x[:, :, 0], 5, 2, 2),
                F.avg_pool1d(x[:, :, 1], 2, 2),
            )

    x = torch.randn(2, 5, 13, 40, generator=torch.Generator().manual_seed(0))
    return gp.trace(M().eval(), (x,)), [x.numpy()]


@pytest.mark.parametrize("threads", [1, 2])
def test_pools_host(threads, tmp_path):
    g, ins = pool_model()
    check(g, ins, "host", tmp_path, threads=threads)


def fused_model(kind: str = "block4", width: int = 19) -> tuple[gp.Graph, list[np.ndarray]]:
    """Three chains fused_block takes, on odd image heights: expand -> depthwise 3x3 -> project + residual
    (batch 2), expand -> depthwise 3x3 stride 2 -> project (relu6 after the expand and the depthwise),
    and a depthwise 5x5 -> project without an expand; the 1x1 layers sparsified as `kind`. An even width
    (38: 19 output columns, a vector and 3) sends the stride-2 chain through rows split into even and odd
    columns (dw_s2_split)."""
    import torch

    rng = np.random.default_rng(1)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.e1, self.d1, self.p1 = (torch.nn.Conv2d(16, 40, 1), torch.nn.Conv2d(40, 40, 3, padding=1, groups=40),
                                         torch.nn.Conv2d(40, 16, 1))
            self.e2, self.d2, self.p2 = (torch.nn.Conv2d(16, 36, 1),
                                         torch.nn.Conv2d(36, 36, 3, stride=2, padding=1, groups=36),
                                         torch.nn.Conv2d(36, 24, 1, bias=False))
            self.d3, self.p3 = torch.nn.Conv2d(24, 24, 5, padding=2, groups=24), torch.nn.Conv2d(24, 20, 1)

        def forward(self, x):
            x = x + self.p1(torch.relu(self.d1(torch.relu(self.e1(x)))))
            relu6 = torch.nn.functional.relu6
            x = self.p2(relu6(self.d2(relu6(self.e2(x)))))  # 24 x 6 x 10
            return torch.relu(self.p3(self.d3(x)))

    torch.manual_seed(0)
    m = M().eval()
    with torch.no_grad():
        for layer in (m.e1, m.p1, m.e2, m.p2, m.p3):
            layer.weight.copy_(torch.from_numpy(sparsify(layer.weight.numpy(), kind, rng)))
    x = torch.randn(2, 16, 11, width)  # 19: the stride-1 depthwise read in place in bands, one vector + 3
    return gp.trace(m, (x,)), [x.numpy()]


@pytest.mark.parametrize(
    ("sparse", "band_bytes", "threads", "width"),
    [("block4", 6000, 1, 19), ("csr", 6000, 2, 19), ("off", 1 << 30, 2, 19), ("off", 2000, 1, 19),
     ("block4", 6000, 2, 38), ("off", 1 << 30, 2, 38)],
)
def test_fused_chains_host(sparse, band_bytes, threads, width, tmp_path, monkeypatch):
    """fused_block against the interpreter: bands of one to a few rows (the top and bottom bands with the
    padding, rows read by two bands), dense and sparse 1x1 layers, threads over bands and, with one
    band, inside each layer; rows split into even and odd columns for the stride-2 chain (width 38)."""
    monkeypatch.setattr(codegen, "BAND_BYTES", band_bytes)
    g, ins = fused_model("block4" if sparse == "block4" else "csr", width)
    art = check(g, ins, "host", tmp_path, sparse=sparse, threads=threads, fuse="on")
    src = (tmp_path / "model.cpp").read_text()
    assert src.count("gprt::fused_block(") == 3
    assert "gprt::binary(" not in src  # the residual add is inside the first chain
    if sparse != "off":
        assert len(art.sparse_layers) == 5, art.sparse_layers


def test_fused_auto_only_where_tensors_spill(tmp_path):
    """"auto" leaves small chains unfused (they stay in cache anyway); "off" never fuses; "on" gives the
    same bytes for the same graph. On several threads "auto" fuses the expand chains whose band per thread
    recomputes at most a third more rows than it owns: both on two threads (6 and 3 output rows per
    band), only the stride-2 one on four (3 rows of a stride-1 3x3 layer read 5)."""
    g, _ = fused_model()
    for fuse in ("auto", "off"):
        files, _ = cpp.generate_files(g, fuse=fuse)
        assert b"fused_block(" not in files["model.cpp"]
    for threads, chains in ((2, [b"e1", b"e2"]), (4, [b"e2"]), (2, None)):
        files, _ = cpp.generate_files(g, threads=threads, fuse="auto" if chains else "off")
        fused = re.findall(rb"// fused: conv (\w+) ->", files["model.cpp"])
        assert fused == (chains or []), (threads, fused)
    with pytest.raises(gp.GraphpruneError, match="fuse='yes'"):
        cpp.generate_files(g, fuse="yes")
    # fused code is deterministic too: the same graph gives byte-identical files
    first, _ = cpp.generate_files(g, fuse="on", sparse="block4")
    again, _ = cpp.generate_files(fused_model()[0], fuse="on", sparse="block4")
    assert first == again and first["model.cpp"].count(b"fused_block(") == 3


def split_model(kind: str) -> tuple[gp.Graph, list[np.ndarray]]:
    """An inverted-residual block unfused on a plane large enough for bands on two and three workers
    (97 x 130: 49 rows after stride 2), and one on a small plane (11 x 19): the expand splits its
    output rows there, the depthwise its channels. The projects add their residual as they store (a relu
    after the second add), batch 2; the 1x1 layers sparsified as `kind` (20 and 44 rows: leftover rows
    for 8x1 blocks)."""
    import torch

    rng = np.random.default_rng(3)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.e1, self.p1 = torch.nn.Conv2d(8, 20, 1), torch.nn.Conv2d(20, 8, 1)
            self.d1 = torch.nn.Conv2d(20, 20, 3, padding=1, groups=20)
            self.d2 = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
            self.e3, self.p3 = torch.nn.Conv2d(8, 44, 1), torch.nn.Conv2d(44, 8, 1)
            self.d3 = torch.nn.Conv2d(44, 44, 3, padding=1, groups=44)

        def forward(self, x):
            x = x + self.p1(torch.relu(self.d1(torch.nn.functional.relu6(self.e1(x)))))
            x = self.d2(x)  # 97 x 130 -> 49 x 65: stride 2 in bands
            y = torch.nn.functional.interpolate(x, size=(11, 19))
            return x, torch.relu(y + self.p3(self.d3(torch.relu(self.e3(y)))))

    torch.manual_seed(2)
    m = M().eval()
    with torch.no_grad():
        for layer in (m.e1, m.p1, m.e3, m.p3):
            layer.weight.copy_(torch.from_numpy(sparsify(layer.weight.numpy(), kind, rng)))
    x = torch.randn(2, 8, 97, 130)
    return gp.trace(m, (x,)), [x.numpy()]


@pytest.mark.parametrize(("kind", "threads"), [("block8", 1), ("block8", 2), ("csr", 3), ("nm2:4", 2)])
def test_thread_splits_and_folded_residuals_host(kind, threads, tmp_path):
    """Workers split planes in bands (depthwise rows, pixel tiles) or channels (depthwise channels, the
    expand's output rows) by the plane's size; a sparse 1x1 layer folds the residual add after it."""
    g, ins = split_model(kind)
    art = check(g, ins, "host", tmp_path, sparse=kind, threads=threads, fuse="off")
    assert sorted(art.sparse_layers) == ["e1", "e3", "p1", "p3"], art.sparse_layers
    src = (tmp_path / "model.cpp").read_text()
    assert "B_ADD" not in src and src.count("gprt::spmm_") == 8  # two calls per layer (batch 2)


@pytest.mark.parametrize("threads", [2, 3])
def test_fused_bands_share_evenly_over_threads(threads, monkeypatch):
    """A fused chain's bands come in a multiple of the default thread count (as many for every worker)."""
    monkeypatch.setattr(codegen, "BAND_BYTES", 6000)
    files, _ = cpp.generate_files(fused_model()[0], threads=threads, fuse="on")
    pattern = rb"FusedShape kD\d+ = \{\{([\d, ]+)\}, \{[\d, ]+\}, \{[\d, ]+\}, (\d+)\}"
    shapes = re.findall(pattern, files["model.cpp"])
    assert len(shapes) == 3
    for conv, band in shapes:
        oh = int(conv.split(b",")[5])
        bands = -(-oh // int(band))
        assert bands % threads == 0 or bands == oh, (oh, band)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["aarch64", "wasm32"])
@pytest.mark.parametrize("width", [19, 38])
def test_fused_chains_cross(target, width, tmp_path, monkeypatch):
    monkeypatch.setattr(codegen, "BAND_BYTES", 3000)
    g, ins = fused_model(width=width)
    check(g, ins, target, tmp_path, sparse="block4", fuse="on", threads=2)


@pytest.mark.parametrize("fmt", ["csr", "block4", "block8", "nm2:4"])
def test_sparse_formats_host(fmt, tmp_path):
    g, ins = sparse_model(fmt)
    art = check(g, ins, "host", tmp_path, sparse=fmt, threads=2)
    assert sorted(art.sparse_layers.values()) == [fmt] * 3, art.sparse_layers


@pytest.mark.slow
@pytest.mark.parametrize("target", ["aarch64", "wasm32"])
@pytest.mark.parametrize("fmt", ["csr", "block4", "nm2:4"])
def test_sparse_formats_cross(fmt, target, tmp_path):
    g, ins = sparse_model(fmt)
    art = check(g, ins, target, tmp_path, sparse=fmt)
    assert sorted(art.sparse_layers.values()) == [fmt] * 3


def test_sparse_auto_follows_the_break_even_table(tmp_path):
    """At 90% zeros the table picks a sparse kernel on the 1x1 convs; a dense model stays dense."""
    g, ins = sparse_model("csr")
    art = check(g, ins, "host", tmp_path / "s")
    isa = cpp.host_isa("host")
    for node in g.find(Op.CONV):
        w = np.asarray(node.inputs[1].data).reshape(node.inputs[1].type.shape[0], -1)
        want = packing.choose(w, 24, isa).fmt
        assert art.sparse_layers.get(codegen.sanitize(node.name), "dense") == want
    assert "csr" in art.sparse_layers.values() or "block4" in art.sparse_layers.values()
    dense, dins = zoo_graph("mobilenetv2")
    assert gp.compile(dense, out_dir=tmp_path / "d").sparse_layers == {}


def test_packing_round_trips():
    rng = np.random.default_rng(1)
    w = sparsify(rng.standard_normal((13, 24)).astype(np.float32), "csr", rng)
    for nb in (1, 4, 8):
        p = packing.pack_block(w, nb)
        # walk the stream like the kernel does and rebuild W
        back = np.zeros_like(w)
        pos, k, v = p.incs[0], 1, 0
        rows = [list(range(r, r + nb)) for r in range(0, 13 // nb * nb, nb)] + [[r] for r in range(13 // nb * nb, 13)]
        for rs, cnt in zip(rows, p.counts, strict=True):
            for _ in range(cnt):
                back[rs, pos] = p.values[v : v + len(rs)]
                v += len(rs)
                pos += p.incs[k]
                k += 1
        np.testing.assert_array_equal(back, w)
        assert pos == p.incs[0]  # the last increment wraps back
    w24 = sparsify(rng.standard_normal((6, 16)).astype(np.float32), "nm2:4", rng)
    q = packing.pack_nm(w24, 2, 4)
    back = np.zeros_like(w24)
    for r in range(6):
        for j in range(8):
            back[r, j // 2 * 4 + q.idx[r, j]] = q.values[r, j]
    np.testing.assert_array_equal(back, w24)


# ---- safety: hostile names, -o, determinism, errors ----

HOSTILE = ['x"; system("rm -rf /"); //', "a\nb */ #include </etc/passwd>", "../../evil/../name", "w\\0'; }}{{"]


def hostile_onnx(path) -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), HOSTILE[1])
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), HOSTILE[3])
    nodes = [
        helper.make_node(
            "Conv", [HOSTILE[0], HOSTILE[1], HOSTILE[3]], [HOSTILE[2]], name=HOSTILE[0], pads=[1, 1, 1, 1]
        ),
        helper.make_node("Relu", [HOSTILE[2]], ["y/../../out"], name=HOSTILE[1]),
    ]
    graph = helper.make_graph(
        nodes,
        HOSTILE[3],
        [helper.make_tensor_value_info(HOSTILE[0], TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y/../../out", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w, b],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_hostile_names_compile_to_safe_code(tmp_path):
    hostile_onnx(tmp_path / "h.onnx")
    g = gp.load(tmp_path / "h.onnx")
    out = tmp_path / "deep" / "out"
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    check(g, [x], "host", out)
    text = b"".join(p.read_bytes() for p in out.rglob("*") if p.suffix in (".h", ".cpp", ".txt", ".mjs"))
    for piece in ('system("rm', "*/ #include", "/etc/passwd", "../../evil", "w\\0'", "y/../../out"):
        assert piece.encode() not in text, piece
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert all(str(p).startswith("deep/out/") or p.name == "h.onnx" for p in written), written


def test_output_is_deterministic(tmp_path):
    g, _ = zoo_graph("se_net")
    a, _ = cpp.generate_files(cpp.prepare(g))
    b, _ = cpp.generate_files(cpp.prepare(zoo_graph("se_net")[0].copy()))
    assert a == b
    gp.compile(g, out_dir=tmp_path / "1")
    gp.compile(g, out_dir=tmp_path / "2")
    for name in ("model.h", "model.cpp", "model_weights.cpp", "CMakeLists.txt"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name
    digest = hashlib.sha256((tmp_path / "1" / "libmodel.a").read_bytes()).hexdigest()
    assert digest == hashlib.sha256((tmp_path / "2" / "libmodel.a").read_bytes()).hexdigest()


def test_unlowerable_op_names_the_node_and_writes_nothing(tmp_path):
    g = gp.Graph("m")
    x = g.add_input("x", TensorType(DType.F32, (1, 4)))
    node = g.add_node(
        Op.OPAQUE, [x], OpaqueAttrs("onnx", "MyCustomOp", ""), types=[TensorType(DType.F32, (1, 4))], name="custom_1"
    )
    g.set_outputs([node.outputs[0]])
    with pytest.raises(codegen.CompileError, match=r"node custom_1: .*cannot lower opaque op MyCustomOp"):
        gp.compile(g, out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_weights_beside_the_library(tmp_path):
    g, ins = zoo_graph("flatten_linear")
    art = check(g, ins, "host", tmp_path, weights="bin")
    assert (tmp_path / "model_weights.bin").is_file() and not (tmp_path / "model_weights.cpp").exists()
    assert not art.embedded


def test_arena_reuses_memory():
    g, _ = zoo_graph("densenet")
    _, gen = cpp.generate_files(cpp.prepare(g))
    total = sum(int(np.prod(v.type.shape)) * 4 for n in g.nodes for v in n.outputs)
    assert 0 < gen.arena_bytes < total / 2


def test_missing_toolchain_names_the_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(toolchain.ToolchainError, match="g\\+\\+-aarch64-linux-gnu"):
        toolchain.find("aarch64")
    with pytest.raises(toolchain.ToolchainError, match="qemu-user"):
        toolchain.runner_prefix("aarch64")
    with pytest.raises(toolchain.ToolchainError, match="clang-16"):
        toolchain.find("wasm32")


def test_cli_compile(tmp_path, capsys):
    hostile_onnx(tmp_path / "m.onnx")
    assert (
        main(
            ["compile", str(tmp_path / "m.onnx"), "--target", "host", "-o", str(tmp_path / "b"), "--threads", "2"]
            + ["--fuse", "on"]
        )
        == 0
    )
    assert (tmp_path / "b" / "runner").is_file() and (tmp_path / "b" / "libmodel.so").is_file()
    (tmp_path / "file").write_text("x")
    assert main(["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err
    assert "not a folder" in err and "Traceback" not in err


NO_HEAP = r"""
#include <cstdio>
#include <cstdlib>
#include <new>
#include <vector>
#include "model.h"
static long allocs = 0;
extern "C" void* __real_malloc(size_t);
extern "C" void* __wrap_malloc(size_t n) { allocs++; return __real_malloc(n); }
void* operator new(size_t n) { allocs++; void* p = std::malloc(n); if (!p) throw std::bad_alloc(); return p; }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
int main() {
    std::vector<std::vector<char>> ins(gp_model_num_inputs()), outs(gp_model_num_outputs());
    std::vector<const void*> ip; std::vector<void*> op;
    for (auto& v : ins) { v.assign(1 << 20, 0); ip.push_back(v.data()); }
    for (auto& v : outs) { v.assign(1 << 20, 0); op.push_back(v.data()); }
    gp_model* m = gp_model_create(nullptr, 2);
    long before = allocs;
    for (int i = 0; i < 3; i++) gp_model_run(m, ip.data(), op.data());
    std::printf("%ld\n", allocs - before);
    gp_model_destroy(m);
}
"""


@pytest.mark.parametrize("name", ["vit", "unet"])
def test_run_allocates_nothing(name, tmp_path):
    """operator new and malloc are counted around gp_model_run (two threads): zero calls."""
    import subprocess

    g, _ = zoo_graph(name)
    gp.compile(g, out_dir=tmp_path, threads=2)
    (tmp_path / "t.cpp").write_text(NO_HEAP)
    tc = toolchain.find("host")
    exe = tmp_path / "t"
    subprocess.run([*tc.cxx, "-O1", f"-I{tmp_path}", str(tmp_path / "t.cpp"), str(tmp_path / "libmodel.a"),
                    "-Wl,--wrap=malloc", "-pthread", "-o", str(exe)], check=True)
    assert subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.strip() == "0"


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["-march=haswell"], ["-DGPRT_SCALAR"], ["-msse2", "-mno-avx"]],
                         ids=["avx2", "scalar", "sse"])
def test_other_vector_paths(flags, tmp_path):
    """The same generated folder rebuilt for the AVX2, SSE and scalar paths of the vector abstraction
    (the host build uses AVX-512 where the CPU has it), dense and sparse kernels included."""
    import subprocess

    g, ins = sparse_model("block4")
    gp.compile(g, out_dir=tmp_path, sparse="auto")
    tc = toolchain.find("host")
    srcs = [tmp_path / "model.cpp", tmp_path / "model_weights.cpp", *sorted((tmp_path / "runtime" / "src").glob("*.cpp")),
            tmp_path / "runtime" / "tools" / "runner.cpp"]
    exe = tmp_path / "runner_isa"
    subprocess.run([*tc.cxx, "-std=c++17", "-O1", *flags, "-DGP_WEIGHTS_EMBEDDED", f"-I{tmp_path}",
                    f"-I{tmp_path / 'runtime' / 'include'}", *map(str, srcs), "-pthread", "-o", str(exe)], check=True)
    np.save(tmp_path / "in0.npy", ins[0])
    subprocess.run([str(exe), "--threads", "2", "-o", "out", "in0.npy"], cwd=tmp_path, check=True)
    assert_close_scaled([np.load(tmp_path / "out0.npy")], g.run(*ins), rel=REL, what=" ".join(flags))
