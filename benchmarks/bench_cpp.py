"""The cpp backend against its peers, side by side, on this machine.

1. Kernels: a 256x256 1x1 convolution on 56x56 pixels, dense and sparse (CSR at 90% zeros, 4x1 blocks at
   70% block sparsity, 2:4), as built artifacts, against numpy (OpenBLAS) W @ X and onnxruntime Conv on
   the same shapes, one thread and two.
2. Break-even: the sparsity at which each sparse kernel matches the dense GEMM (host, and wasm32 under
   node), the table backends/cpp/breakeven.py holds.
3. Whole model: MobileNetV2 (1.0, 224x224), 50% of the channels pruned, 1x1 layers 80% 4x1-block sparse:
   the artifact against onnxruntime running the same pruned ONNX.
4. Size of the host build without weights (runtime + generated code).

    python benchmarks/bench_cpp.py [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from graphprune.backends import cpp

import graphprune as gp
from graphprune.ir.ops import Op

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mobilenet import mobilenet_v2  # noqa: E402
from resnet import resnet50  # noqa: E402
from results import best_of, cpu_name, write_section  # noqa: E402

C, HW = 256, 56
FLOP = 2 * C * C * HW * HW
WORK = Path(tempfile.gettempdir()) / "gp-bench-cpp"
ROUNDS = 9  # interleaved rounds per comparison (see interleaved; with 5, a run's 1-thread kernels could all
# land in a loaded minute: dense 4.28 against 2.8-3.1 ms in the runs before and after)


def sparsify(w: np.ndarray, kind: str, sparsity: float, rng: np.random.Generator) -> np.ndarray:
    """Zero `sparsity` of the weights (csr), of the nb x 1 output-channel blocks (blockN), or 2 of 4."""
    w = w.copy()
    if kind == "csr":
        w[rng.random(w.shape) < sparsity] = 0
    elif kind.startswith("block"):
        nb = int(kind[5:])
        keep = rng.random((w.shape[0] // nb, *w.shape[1:])) >= sparsity
        w *= np.repeat(keep, nb, axis=0)
    elif kind == "nm2:4":
        g = w.reshape(w.shape[0], -1, 4)
        np.put_along_axis(g, np.argsort(np.abs(g), axis=2)[:, :, :2], 0, axis=2)
    return w


def conv_graph(w: np.ndarray) -> gp.Graph:
    conv = torch.nn.Conv2d(C, C, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w.reshape(C, C, 1, 1)))
    return gp.trace(conv.eval(), (torch.zeros(1, C, HW, HW),))


def interleaved(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """The best of `rounds` measurements of each candidate, taken in turns: the machine is shared and its
    load drifts, so candidates measured minutes apart are not comparable."""
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            best[k] = min(best[k], fn())
    return best


def time_artifact(art: cpp.Artifact, x: list[np.ndarray], reps: int) -> float:
    """Seconds per run: in process on the host; wasm32 through the runner's own --repeat timer (node)."""
    if art.target == "host":
        out = art.run(*x)  # then reused: the timing covers the model, not numpy's page faults
        return best_of(lambda: art.run(*x, out=out), reps)[0]
    with tempfile.TemporaryDirectory() as tmp:
        for i, a in enumerate(x):
            np.save(Path(tmp) / f"in{i}.npy", a)
        out = subprocess.run(
            [
                "node",
                "--no-warnings",
                str(art.out_dir / "model.mjs"),
                "--threads",
                "1",
                "--repeat",
                str(reps),
                *[f"in{i}.npy" for i in range(len(x))],
            ],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return float(out.split("min_ms")[1].split()[0]) / 1e3


def ort_session(graph: gp.Graph, threads: int) -> tuple[ort.InferenceSession, str]:
    path = WORK / f"{graph.name}-{id(graph)}.onnx"
    gp.save(graph, path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    # onnxruntime's workers spin between jobs by default, as gprt's pool does between layers: both run as
    # they ship (with spinning off, its 2-thread MobileNetV2 took 1.71 ms against 1.54 ms)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess, sess.get_inputs()[0].name


def ort_timer(graph: gp.Graph, x: np.ndarray, threads: int, reps: int) -> Callable[[], float]:
    sess, name = ort_session(graph, threads)
    sess.run(None, {name: x})
    return lambda: best_of(lambda: sess.run(None, {name: x}), reps)[0]


def time_numpy(threads: int, reps: int) -> float:
    """OpenBLAS W @ X in a fresh process (its thread count is fixed at import)."""
    code = (
        f"import numpy as np, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from results import best_of\n"
        f"w = np.random.default_rng(0).standard_normal(({C}, {C}), dtype=np.float32)\n"
        f"x = np.random.default_rng(1).standard_normal(({C}, {HW * HW}), dtype=np.float32)\n"
        f"w @ x; print(best_of(lambda: w @ x, {reps})[0])"
    )
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    return float(
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    )


def build(graph: gp.Graph, tag: str, **kw) -> cpp.Artifact:
    return gp.compile(graph, "cpp", out_dir=WORK / tag, **kw)


def kernels(reps: int) -> tuple[str, dict[str, float]]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((C, C)).astype(np.float32) / 16
    x = [rng.standard_normal((1, C, HW, HW)).astype(np.float32)]
    cases = [
        ("dense", "off", w),
        ("CSR, 90% zeros", "csr", sparsify(w, "csr", 0.9, rng)),
        ("4x1 blocks, 70% zero blocks", "block4", sparsify(w, "block4", 0.7, rng)),
        ("8x1 blocks, 70% zero blocks", "block8", sparsify(w, "block8", 0.7, rng)),
        ("2:4", "nm2:4", sparsify(w, "nm2:4", 0.5, rng)),
    ]
    rows = [
        "| Kernel | Threads | graphprune cpp ms | GFLOP/s (dense-equivalent) | onnxruntime dense ms | "
        "numpy (OpenBLAS) ms | cpp vs onnxruntime dense |",
        "|---|---|---|---|---|---|---|",
    ]
    g_dense = conv_graph(w)
    timers: dict[str, Callable[[], float]] = {}
    for threads in (1, 2):
        timers[f"ort{threads}"] = ort_timer(g_dense, x[0], threads, reps)
        timers[f"numpy{threads}"] = lambda threads=threads: time_numpy(threads, reps)
        for _, fmt, wk in cases:
            art = build(conv_graph(wk), f"k-{fmt}-{threads}", sparse=fmt, threads=threads)
            assert set(art.sparse_layers.values()) <= {fmt}, art.sparse_layers
            timers[f"{fmt}{threads}"] = lambda art=art: time_artifact(art, x, reps)
    figures = interleaved(timers, ROUNDS)
    for threads in (1, 2):
        t_ort, t_np = figures[f"ort{threads}"], figures[f"numpy{threads}"]
        for label, fmt, _ in cases:
            t = figures[f"{fmt}{threads}"]
            rows.append(
                f"| {label} | {threads} | {t * 1e3:.3f} | {FLOP / t / 1e9:.1f} | {t_ort * 1e3:.3f} | "
                f"{t_np * 1e3:.3f} | {t_ort / t:.2f}x |"
            )
    return "\n".join(rows), figures


def breakeven(target: str, reps: int) -> tuple[str, dict[str, float]]:
    """Interpolated sparsity (of stored weights) where each format's time crosses the dense time."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((C, C)).astype(np.float32) / 16
    x = [rng.standard_normal((1, C, HW, HW)).astype(np.float32)]
    dense = build(conv_graph(w), f"be-{target}-dense", target=target, sparse="off")
    timers: dict[str, Callable[[], float]] = {"dense": lambda: time_artifact(dense, x, reps)}
    stored: dict[str, float] = {}
    for fmt in ("csr", "block4", "block8", "nm2:4"):
        for s in (0.5,) if fmt == "nm2:4" else (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
            wk = sparsify(w, fmt, s, rng)
            art = build(conv_graph(wk), f"be-{target}-{fmt}-{s}", target=target, sparse=fmt)
            stored[f"{fmt}@{s}"] = cpp.packing.stored_weights(wk, fmt) / wk.size
            timers[f"{fmt}@{s}"] = lambda art=art: time_artifact(art, x, reps)
    times = interleaved(timers, ROUNDS if target == "host" else 2)
    t_dense = times["dense"]
    rows = [f"dense: {t_dense * 1e3:.3f} ms"]
    table: dict[str, float] = {}
    for fmt in ("csr", "block4", "block8", "nm2:4"):
        points = [(1 - stored[k], t) for k, t in times.items() if k.startswith(fmt + "@")]
        points.sort()
        rows.append(f"{fmt}: " + ", ".join(f"{s:.2f} -> {t * 1e3:.3f} ms" for s, t in points))
        # lowest sparsity at which the format is no slower than dense, interpolated between measurements
        be = 1.0
        for (s0, t0), (s1, t1) in zip(points, points[1:], strict=False):
            if t0 > t_dense >= t1:
                be = s0 + (s1 - s0) * (t0 - t_dense) / (t0 - t1)
                break
        if points[0][1] <= t_dense:
            be = points[0][0]
        table[fmt] = round(be, 3)
    return "\n".join(f"- {r}" for r in rows), table


_MODEL: list = []


def sparse_mobilenet() -> tuple[gp.Graph, list[np.ndarray]]:
    """MobileNetV2 1.0 at 224x224, 50% of the channels pruned, 80% of the 4x1 blocks of every 1x1 conv zero."""
    if not _MODEL:
        torch.manual_seed(0)  # the same weights, so the same channels pruned and blocks zeroed, in every run
        model = mobilenet_v2()
        x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        g = gp.prune(gp.trace(model, (x,)), channels=0.5)
        rng = np.random.default_rng(2)
        for node in g.find(Op.CONV):
            w = node.inputs[1]
            if w.type.shape[2:] == (1, 1) and node.attrs.groups == 1 and w.type.shape[0] % 4 == 0:
                data = np.asarray(w.data)
                sparse = sparsify(data.reshape(data.shape[0], -1), "block4", 0.8, rng).reshape(data.shape)
                g.replace_const_data(w, sparse)
        _MODEL.append((g, [x.numpy()]))
    return _MODEL[0]


def whole_model(reps: int) -> tuple[str, dict[str, float]]:
    g, xs = sparse_mobilenet()
    ref = g.run(*xs)
    rows = ["| Build | Threads | ms | vs onnxruntime (pruned ONNX) |", "|---|---|---|---|"]
    timers: dict[str, Callable[[], float]] = {}
    nsparse = 0
    builds = (("off", "auto"), ("unfused", "off"), ("auto", "auto"))  # (key, fuse); key "off": dense kernels
    nfused = {}
    for threads in (1, 2):
        timers[f"ort{threads}"] = ort_timer(g, xs[0], threads, reps)
        for key, fuse in builds:
            sparse = "off" if key == "off" else "auto"
            art = build(g, f"mnv2-{key}-{threads}", sparse=sparse, threads=threads, fuse=fuse)
            # relative to the output's scale: the pruned, randomly initialised model's logits are tiny
            scale = max(float(np.abs(r).max()) for r in ref)
            err = max(float(np.abs(o - r).max()) for o, r in zip(art.run(*xs), ref, strict=True)) / scale
            assert err < 1e-4, err
            nsparse = max(nsparse, len(art.sparse_layers))
            if key == "auto":
                nfused[threads] = (art.out_dir / "model.cpp").read_text().count("gprt::fused_block(")
            timers[f"{key}{threads}"] = lambda art=art: time_artifact(art, xs, reps)
    figures = interleaved(timers, ROUNDS)
    for threads in (1, 2):
        t_ort = figures[f"ort{threads}"]
        rows.append(f"| onnxruntime, pruned ONNX with the same zeros | {threads} | {t_ort * 1e3:.2f} | 1.00x |")
        for label, key in (
            ("graphprune cpp, dense kernels", "off"),
            (f"graphprune cpp, sparse where measured faster ({nsparse} layers), no fused chains", "unfused"),
            (f"graphprune cpp, sparse where measured faster, {nfused[threads]} chains fused (default)", "auto"),
        ):
            t = figures[f"{key}{threads}"]
            rows.append(f"| {label} | {threads} | {t * 1e3:.2f} | {t_ort / t:.2f}x |")
    return "\n".join(rows), figures


def dense_models(reps: int) -> str:
    """Unpruned ResNet-50 and MobileNetV2 at 224x224 on dense kernels against onnxruntime, one thread."""
    rows = ["| Model (dense, unpruned) | onnxruntime ms | graphprune cpp ms | vs onnxruntime |", "|---|---|---|---|"]
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    xs = [x.numpy()]
    for name, factory, n in (("ResNet-50", resnet50, max(2, reps // 3)), ("MobileNetV2", mobilenet_v2, reps)):
        g = gp.trace(factory().eval(), (x,))
        art = build(g, f"dense-{name}", sparse="off", threads=1)
        cpp_timer = lambda art=art, n=n: time_artifact(art, xs, n)  # noqa: E731
        t = interleaved({"ort": ort_timer(g, xs[0], 1, n), "cpp": cpp_timer}, ROUNDS)
        rows.append(f"| {name} | {t['ort'] * 1e3:.2f} | {t['cpp'] * 1e3:.2f} | {t['ort'] / t['cpp']:.2f}x |")
    return "\n".join(rows)


NODE_BENCH = Path(__file__).resolve().parent / "wasm"


def time_ort_web(onnx_path: Path, x: np.ndarray, reps: int) -> float:
    """onnxruntime-web (wasm backend, SIMD, one thread) in node, on the same ONNX and input."""
    inp = WORK / "ort_web_input.npy"
    np.save(inp, x)
    out = subprocess.run(
        ["node", "--no-warnings", str(NODE_BENCH / "ort_web.mjs"), str(onnx_path), str(inp), str(reps)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.split("min_ms")[1].split()[0]) / 1e3


def wasm_vs_ort_web(reps: int) -> tuple[str, dict[str, float]]:
    """The wasm32 artifact in node against onnxruntime-web in node: the 1x1 layer and the whole model."""
    if not (NODE_BENCH / "node_modules" / "onnxruntime-web").is_dir():
        return f"(skipped: run `npm install --prefix {NODE_BENCH}` for onnxruntime-web)", {}
    rng = np.random.default_rng(3)
    w = rng.standard_normal((C, C)).astype(np.float32) / 16
    xk = [rng.standard_normal((1, C, HW, HW)).astype(np.float32)]
    g_model, xm = sparse_mobilenet()
    rows = ["| Workload | onnxruntime-web ms | graphprune wasm32 ms | speed-up |", "|---|---|---|---|"]
    figures: dict[str, float] = {}
    cases = [
        ("1x1 conv 256x256 on 56x56, dense", conv_graph(w), xk, "off"),
        ("1x1 conv, 90% zeros (CSR)", conv_graph(sparsify(w, "csr", 0.9, rng)), xk, "auto"),
        ("MobileNetV2 pruned 50%, dense kernels", g_model, xm, "off"),
        ("MobileNetV2 pruned 50%, 1x1 layers 80% block-sparse, sparse kernels", g_model, xm, "auto"),
    ]
    for i, (label, g, x, sparse) in enumerate(cases):
        path = WORK / f"web-{i}.onnx"
        gp.save(g, path)
        art = build(g, f"web-{i}-{sparse}", target="wasm32", sparse=sparse)
        timers = {
            "web": lambda path=path, x=x: time_ort_web(path, x[0], reps),
            "ours": lambda art=art, x=x: time_artifact(art, x, reps),
        }
        t = interleaved(timers, 2)
        figures[f"{i}"] = t["web"] / t["ours"]
        rows.append(f"| {label} | {t['web'] * 1e3:.2f} | {t['ours'] * 1e3:.2f} | {t['web'] / t['ours']:.2f}x |")
    return "\n".join(rows), figures


def size() -> str:
    model = mobilenet_v2()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    g = gp.prune(gp.trace(model, (x,)), channels=0.5)
    art = build(g, "size", weights="bin")
    lib = art.out_dir / "libmodel.so"
    stripped = WORK / "libmodel.stripped.so"
    subprocess.run(["strip", "-o", str(stripped), str(lib)], check=True)
    text = subprocess.run(["size", "-A", str(stripped)], capture_output=True, text=True, check=True).stdout
    code = sum(int(line.split()[1]) for line in text.splitlines() if line.startswith((".text", ".rodata", ".data")))
    return (
        f"libmodel.so of MobileNetV2 pruned 50%, weights in model_weights.bin: {lib.stat().st_size / 1024:.0f} KB "
        f"as built, {stripped.stat().st_size / 1024:.0f} KB stripped (.text + .rodata + .data "
        f"{code / 1024:.0f} KB; libstdc++ linked dynamically)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--skip-wasm", action="store_true")
    args = ap.parse_args()
    load_before = f"{os.getloadavg()[0]:.1f}"
    reps = 3 if args.quick else 8
    WORK.mkdir(parents=True, exist_ok=True)
    k_table, k = kernels(reps)
    print(k_table, flush=True)
    be_host, table_host = breakeven("host", reps)
    print(be_host, table_host, flush=True)
    be_wasm, table_wasm = ("(skipped)", {}) if args.skip_wasm else breakeven("wasm32", 3)
    print(be_wasm, table_wasm, flush=True)
    # a whole-model measurement spans about 0.1 s: after another candidate's runs, onnxruntime's idle
    # workers keep spinning for a while and the model's weights are out of cache, which took the best
    # of 8 runs of the 2-thread artifact to 1.05 ms against 0.86 ms for the best of 100
    m_table, m = whole_model(reps * 12)
    print(m_table, flush=True)
    d_table = dense_models(reps)
    print(d_table, flush=True)
    w_table, wf = ("(skipped)", {}) if args.skip_wasm else wasm_vs_ort_web(3)
    print(w_table, flush=True)
    sz = size()
    print(sz)
    goals = [
        ("dense >= 0.8x onnxruntime (1 thread)", k["ort1"] / k["off1"], 0.8),
        ("CSR 90% >= 4.5x onnxruntime dense (1 thread)", k["ort1"] / k["csr1"], 4.5),
        ("4x1 blocks 70% >= 2.5x onnxruntime dense (1 thread)", k["ort1"] / k["block41"], 2.5),
        ("2:4 no slower than our dense (1 thread)", k["off1"] / k["nm2:41"], 1.0),
        ("whole model >= 2x onnxruntime (1 thread)", m["ort1"] / m["auto1"], 2.0),
        ("whole model >= 2x onnxruntime (2 threads)", m["ort2"] / m["auto2"], 2.0),
    ]
    if wf:
        goals += [
            ("wasm32 dense at least as fast as onnxruntime-web (whole model)", wf["2"], 1.0),
            ("wasm32 sparse >= 2x onnxruntime-web (whole model)", wf["3"], 2.0),
        ]
    rows = [f"| {name} | {got:.2f}x | {'met' if got >= need else 'NOT met'} |" for name, got, need in goals]
    size_kb = float(sz.split(" KB stripped")[0].rsplit(" ", 1)[1])
    rows.append(f"| host build without weights < 300 KB | {size_kb:.0f} KB | {'met' if size_kb < 300 else 'NOT met'} |")
    goal_rows = "\n".join(rows)
    load_after = f"{os.getloadavg()[0]:.1f}"
    lock = NODE_BENCH / "node_modules" / "onnxruntime-web" / "package.json"
    ort_web_version = json.loads(lock.read_text())["version"] if lock.exists() else "(not installed)"
    node_version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    body = f"""Machine: {cpu_name()}, {os.cpu_count()} cores (shared with other jobs; best of {reps} runs,
of {reps * 12} for the pruned MobileNetV2).
Command: `python benchmarks/bench_cpp.py`. Builds: g++ -march=native, runtime -O3, generated code
-O2 (AVX-512 vectors of the gprt vector abstraction), onnxruntime {ort.__version__},
numpy {np.__version__} (OpenBLAS in a subprocess with OPENBLAS_NUM_THREADS set).

### Kernels: 256x256 1x1 convolution on 56x56 pixels ({FLOP / 1e6:.0f} MFLOP dense)

{k_table}

### Break-even sparsity (stored-weight sparsity where the sparse kernel matches our dense GEMM)

host: {table_host}
{be_host}

wasm32 (node {node_version}, SIMD128): {table_wasm}
{be_wasm}

Measurements like these make the table in backends/cpp/breakeven.py that decides dense or sparse per
layer; it is not rewritten from each run, since single runs swing (the wasm32 ones, two rounds in node,
most: block8 0.31 in the table, 0.77 in one run).

### Whole model: MobileNetV2 1.0 224x224, 50% channels pruned, 1x1 layers 80% 4x1-block sparse

{m_table}

### Dense whole models (1 thread)

{d_table}

### wasm32: the artifact in node against onnxruntime-web {ort_web_version} in node (wasm backend, SIMD, 1 thread)

{w_table}

### Size

{sz}

### Notes

- The machine is shared (load average {load_before} before and {load_after} after this run, on its 2
  cores): one kernel measured minutes apart varies by up to 2x, so the candidates of one table are
  measured in interleaved rounds; compare within a table.
- Sparse kernels read each pixel tile (64 pixels for CSR and 4x1 blocks, 32 for 8x1 blocks and 2:4
  on AVX-512) from a contiguous copy where the tile's input rows are read three times or more (nonzero
  blocks per input row): in place, input rows P = 3136 floats apart fall into a few L1 sets and evict
  each other (every 16th row shares a 4 KB offset), which halved the kernels' speed and made them swing
  with the load of the machine's other jobs. Tiles narrow enough for the copy to stay in L1 (32 pixels)
  were slower (CSR 90%: 0.80 against 0.61 ms), and so were 128-pixel CSR tiles (0.75 ms) and software
  prefetch of the rows a few nonzeros ahead. A project layer (96 -> 16 at 80%: 0.8 blocks per input
  row) reads each row about once, and there the copy cost more than the FMAs: read in place, MobileNetV2's
  28 x 28 projects went 9.7 -> 3.8 us (whole model: 1.01 ms always copied; 0.97, 0.95, 0.95 and 0.95 ms
  with a threshold of 1, 2, 3 and 4 blocks per row; 3 also reads the 14 x 14 projects, 2.4 blocks per
  row, in place: 14.5 -> 13.1 us). The last tile of a layer is copied zero-padded and runs the full-tile
  kernel, or the one-vector kernel when it is one vector or less (14 x 14: 196 = 3 x 64 + 4 pixels; it
  had run a whole 64-pixel tile for its last 4: 1.17 -> 1.13 ms).
- Two threads: the pool's workers (and the caller) spin for about 50-100 us before they sleep: layers
  hand out work back to back, and a condition-variable wake per layer had made two threads slower than
  one on the whole model (pruned MobileNetV2 on dense kernels: 2.50 ms before, 2.00 ms after, one thread
  2.69 ms). The second core is shared with other jobs, so 2-thread figures swing more than 1-thread ones.
  onnxruntime runs with its default spinning workers too (with spinning off its 2-thread time of the
  whole model was 1.71 against 1.54 ms; earlier runs of this script had it off).
- Two threads, where the data lives: each core has its own L2, so how the workers share a layer decides
  which core holds its output. A per-layer profile of the sparse MobileNetV2 on two threads (an
  instrumented model.cpp, per-layer minima of 1000 runs) showed most layers below 28 x 28 no faster than
  on one: an expand split by pixel tiles fed a depthwise layer split by channels, so half of every
  expanded tensor crossed between the cores, twice per block. Now (gprt::split_in_bands) a plane is
  shared in bands of rows once each worker's part is 16 KB or more (the 112 x 112 layers and the fused
  chains' bands), else by channels: an expand (at least twice as many outputs as inputs) on a smaller
  plane splits its output rows and the depthwise layer after it its channels, so each reads what its own
  core wrote; projects split pixel tiles. Bands on every plane were worse (a 96 x 28 x 28 depthwise layer
  21 us in bands against 11 us in channels: runs shorter than a page restart the prefetchers at every
  plane). With it: a sparse 1x1 layer adds the residual that follows it per tile (the nine adds had taken
  2 to 4 us each on two threads, reading both operands from the other core), fused chains get as many
  bands for every default thread (the 112 x 112 chain: 7 -> 8 bands, 90 -> 84 us), and buffers of 1 MB
  or more sit on 2 MB pages (0.79 -> 0.76 ms). The default build on two threads went from 1.01-1.04 to
  0.78-0.80 ms in interleaved comparisons (one thread unchanged, 1.16 ms). Tried and dropped: the
  expand computing a few channels at a time for the depthwise layer to read from L1 (each group walks
  every pixel tile again: the two fused chains 141 -> 263 and 108 -> 223 us on one thread), an arena
  without reuse (8.6 MB instead of 1.6, same time), two vectors per step in the flat depthwise kernel
  (no change: its unaligned loads bound it, about 13 cycles per output vector).
- Two threads, fused chains: the layers below 28 x 28 still scaled badly (a 192 -> 32 project on 14 x 14,
  10.8 us on one thread, 11.2 on two): a project reads every channel of its pixels, and the depthwise
  layer before it wrote half of them on the other core. On several threads `fuse="auto"` now also fuses
  every expand chain whose band per thread recomputes at most a third more expanded rows than it owns:
  a band's rows then stay on one core from the block's input to its output. The default build on two
  threads went 0.73 -> 0.66 ms (interleaved, best of 15 x 200 runs; one thread unchanged); fusing the
  7 x 7 chains too (4-row bands recomputing half again) gave 0.69 against 0.67. Tried and dropped: every
  layer in bands (0.88 against 0.70 ms: the 14 x 14 expands' tiles split into partial ones), the 56 x 56
  expand in pixel tiles with its stride-2 depthwise layer in bands (expand 33 -> 24 us, depthwise
  18 -> 32 us), one pixel range per worker for 1x1 layers (balanced, but the 14 x 14 projects took
  12.5 against 11.2 us: more walks over the nonzeros), a pool that takes its mutex only to sleep or wake
  (an empty parallel_for 0.8-2 us -> 50 ns, the whole model unchanged).
- One thread, this round: (1) 3x3 stride-1 depthwise layers whose rows fit one vector (14 x 14 on
  AVX-512) hold each row in one vector, read and written through lane masks (gprt::vload_part and
  vstore_part, one masked instruction on AVX-512), with the left and right taps that vector shifted a
  lane: 192 x 14 x 14 15-18 -> 10 us (the flat kernel's unaligned loads split across cache lines; on
  7 x 7 this was slower, 24 against 19 us, so the flat kernel keeps those); (2) the fused stride-2 chain
  (48 x 112 x 112) reads its input rows split into even and odd columns, so the expand writes them split
  and the depthwise layer reads every tap with a plain load and no branch (a 16-row band 13.4 -> 9.7 us;
  the whole model 1.00 -> 0.98 ms); (3) the sparse changes above. The whole model on one thread went
  1.16 -> 0.98-1.02 ms in interleaved comparisons.
- The channels-last depthwise kernel of small images moves channels and pixels through VW x VW
  transposes in registers (log2(VW) rounds of two-vector shuffles) instead of scalar copies, and finds
  each pixel's place in its tile without a division: 288 x 14 x 14 stride 2, 24-27 -> 14.7 us. On 7 x 7
  stride 1 it still does not beat the flat kernel (16-20 against 17 us for 480 channels), so the flat
  kernel keeps those.
- Dense: the gprt GEMM (8x3 AVX-512 register tile, packed panels) runs at OpenBLAS and onnxruntime speed
  here, so no library stands behind the kernel interface.
- 2:4: four output rows at a time over the 32-pixel tile (8 independent accumulators); each kept weight
  is one broadcast and two L1 loads for two FMAs, so it does half of dense's FMAs at about the same
  cost per FMA.
- Whole model: per-layer profile (an instrumented build of the generated model.cpp with a timer around
  every step, per-step minima of 300 runs, 1 thread, sparse auto). Earlier rounds took it from 1.71 to
  about 1.20 ms: fused chains ([1x1 expand] -> depthwise -> 1x1 project [+ residual] as one kernel,
  gprt::fused_block, one band of output rows at a time in a 512 KB workspace that stays in L2, where the
  chain's expanded and depthwise tensors exceed 1.5 MB: here the first two expand blocks; fusing the
  smaller ones made each 5 to 15 us slower), the stride-2 3x3 depthwise read in place (even and odd
  columns from two row vectors, the left tap a lane shift), per-kernel-column partial sums in the
  depthwise row kernels, a flat kernel for narrow images, the sparse kernels' zero-padded last tile, a
  vector global average pool. This round (same profile, interleaved builds): (1) the stride-1 3x3
  depthwise reads its input in place too (two output rows from the four input rows they share, the first
  vector's left tap and the last vector's right tap a lane shift with a zero in, the last vector ending at
  the row's end), with no copy of every channel into a zero-padded plane, four output rows from six input
  rows where there are 32 vector registers: 16 x 112 x 112 75 -> 41 us, the fused 56 x 56 block (its bands
  have no top padding but the first) 141 -> 110 us, and on AVX-512 it replaces the flat kernel on 28 x 28
  (96 channels: 24 -> 17 us; with 4-wide vectors rows narrower than two vectors stay on the flat kernel,
  which kept the wasm32 whole model at 4.35 ms against 4.52 before this round, 4.73 with them in place, in
  one interleaved comparison); (2) the stem (3 -> 16, 3x3 stride 2 on 224 x 224) reads the image in place
  the same way instead of splitting every channel into even and odd columns, computes every output channel
  from one input row while it is in L1, and covers the row's rest with 2 or 3 vectors instead of an
  overlapping 4 (112 columns are 7 vectors): 141 -> 98 us; (3) the in-place stride-2 depthwise also on
  rows narrower than two vectors (28 x 28 -> 14 x 14, 192 channels: 35 -> 13 us, it had gone through a
  padded plane and a grid), its left taps summed over the kernel rows before their one lane shift (7
  shuffles per vector, not 9: a few per cent). The profile now sums to about 1.05 ms (the whole run takes
  about 0.1 ms longer: the layers do not start with their data in cache). By perf samples the 4x1-block
  sparse kernel takes about 40%: on the layers with 8 to 16 input channels a block row has one or two
  nonzero blocks, so its 16 output vectors' stores and the relu6 clamps (two ops per vector on the FMA
  ports) bound it, not its FMAs; the depthwise kernels about 33% (the 14 x 14 and 7 x 7 layers by
  per-channel setup and the channels-last transposes; the stride-2 ones at about half their FMA rate, not
  bound by their shuffles alone), the stem 9%, the classifier's 640 x 1000 GEMV 7% (81 us: 2.5 MB of
  weights streamed from L3 at about 31 GB/s). Tried and dropped: the in-place stride-2 kernel on 14 x 14
  -> 7 x 7 (as fast as the channels-last one), a tile copy in the sparse kernel without reloads of its
  captured sizes (no change), fusing the 16 x 112 x 112 depthwise with its project (no expand; 67 -> 87
  us: the band's input rows are copied), six rows per depthwise pass. In a quiet interleaved comparison
  after these changes (best of 5 x 200 runs each) the default build took 1.18 ms against onnxruntime's
  2.20 ms, 1.86x; the rounds since (see the bullets above) brought it to about 1.0 ms.
- Dense whole models (the table above; the issue's dense goal is the one 1x1 shape of the kernel table):
  onnxruntime's blocked convolutions are faster on ResNet-50's 3x3 and 7x7 layers. This round: the max and
  average pools became separable and threaded (the 64 x 112 x 112 stem pool took 2.3 ms as a scalar loop
  per tap), a column strip's last GEMM tile is only as wide as its columns (7x7 3x3 convs 6.3 -> 5.0 ms
  each), and non-1x1 convs gather im2col panels as they pack them instead of writing KH*KW copies of the
  input first (same speed, 7.2 MB less workspace on a 64-channel 3x3 layer at 56 x 56): ResNet-50 0.54x ->
  0.58-0.64x (two runs). By perf samples packing the weights takes about 16% of it (repacked every run) and
  the 7x7 layers run the register tile at about a third of its rate; prepacked weights and a GEMM with
  output channels as the vector dimension for layers with few pixels are what is left.
- CSR at 90%: 4.0x to 5.6x onnxruntime over the full runs of this script and the kernel table alone in
  the last round, with the kernel unchanged: with 5 interleaved rounds a run's 1-thread kernels could
  all fall in a loaded minute (that run: dense 4.28 ms, CSR 0.78-0.81, against 2.8-3.3 and 0.60-0.67 ms
  in the others), hence 9 rounds now. Per nonzero the kernel does one broadcast and four loads from the
  64 KB tile for four FMAs; the tile widths and the prefetch above (and 4 accumulator sets) did not
  change that.
- onnxruntime-web: `npm install --prefix benchmarks/wasm` (version above), node, numThreads 1, simd on.
  Its whole-model time is far above native onnxruntime's; which of its wasm builds node loads was not
  investigated.

### Goals of the issue

| Goal | Measured | |
|---|---|---|
{goal_rows}
"""
    print(body)
    if not args.no_write:
        write_section("## C++ backend: kernels, break-even and whole model against onnxruntime", body)


if __name__ == "__main__":
    main()
