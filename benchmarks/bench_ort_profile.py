"""Where onnxruntime spends the time of a pruned model: its own per-node profile, by kind of layer.

    python benchmarks/bench_ort_profile.py [--write] [--runs 200]

Why the realized speed-up of MobileNetV2 at 50% channels stays below its MACs ratio while ResNet-50's
does not (bench_pruning.py, goal 3): for each model, dense and pruned (graphprune, L1, local 50%,
round_to 1 and 16), onnxruntime's profiler (`SessionOptions.enable_profiling`) times every node; the
node times are summed by kind (1x1 conv, depthwise conv, other conv, Gemm/MatMul, the rest) and set
beside the MACs of that kind (gp.cost, per node of the graph before onnxruntime's fusions). A kind
whose time falls less than its MACs is where the speed-up is lost. One and two intra-op threads.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from graphprune.passes.analysis.cost import node_macs  # noqa: E402
from mobilenet import mobilenet_v2  # noqa: E402
from resnet import resnet50  # noqa: E402
from results import cpu_name, write_section  # noqa: E402

import graphprune as gp  # noqa: E402
from graphprune.ir import Graph, Op  # noqa: E402

KINDS = ("1x1 conv", "depthwise conv", "other conv", "gemm / matmul", "other ops")


def kind_of_conv(weight_shape: list[int], groups_is_channels: bool) -> str:
    if groups_is_channels:
        return "depthwise conv"
    return "1x1 conv" if all(d == 1 for d in weight_shape[2:]) else "other conv"


def macs_by_kind(graph: Graph) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for n in graph.nodes:
        if n.op is Op.CONV:
            w = list(n.inputs[1].type.shape)
            out[kind_of_conv(w, n.attrs.groups > 1 and w[1] == 1)] += node_macs(n)
        elif n.op in (Op.LINEAR, Op.MATMUL):
            out["gemm / matmul"] += node_macs(n)
    return out


def profile(path: Path, x: np.ndarray, threads: int, runs: int) -> tuple[float, dict[str, float]]:
    """Median latency (ms) and per-kind node time (ms per run) from onnxruntime's profile."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = str(path.with_suffix(""))
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {s.get_inputs()[0].name: x}
    for _ in range(20):
        s.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, feed)
        times.append(time.perf_counter() - t)
    events = json.loads(Path(s.end_profiling()).read_text())
    by: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        op, shapes = e["args"].get("op_name"), e["args"].get("input_type_shape", [])
        if op == "Conv" and len(shapes) > 1:
            w = list(shapes[1].values())[0]
            c_in = list(shapes[0].values())[0][1]
            kind = kind_of_conv(w, w[1] == 1 and c_in > 1)
        elif op in ("Gemm", "MatMul", "FusedGemm", "FusedMatMul"):
            kind = "gemm / matmul"
        else:
            kind = "other ops"
        by[kind] += e["dur"] / 1e3 / (runs + 20)
    return float(np.median(times)) * 1e3, by


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    rows, lines = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, factory in (("ResNet-50", resnet50), ("MobileNetV2", mobilenet_v2)):
            dense = gp.trace(factory().eval(), (torch.from_numpy(x),))
            variants = {"dense": dense}
            for r in (1, 16):
                variants[f"pruned, round_to {r}"] = gp.prune(dense, 0.5, criterion="l1", round_to=r, verify=False)
            macs = {v: macs_by_kind(g) for v, g in variants.items()}
            for threads in (1, 2):
                res = {}
                for v, g in variants.items():
                    path = Path(tmp) / f"{name}_{v.replace(' ', '_').replace(',', '')}.onnx"
                    gp.save(g, path)
                    res[v] = profile(path, x, threads, args.runs)
                for v, (ms, by) in res.items():
                    cells = []
                    for k in KINDS:
                        t, t0 = by.get(k, 0.0), res["dense"][1].get(k, 0.0)
                        m, m0 = macs[v].get(k, 0), macs["dense"].get(k, 0)
                        scale = f" ({t0 / t:.2f}x time, {m0 / m:.2f}x MACs)" if v != "dense" and t and m else ""
                        cells.append(f"{t:.3f}{scale}" if t else "-")
                    speed = res["dense"][0] / ms
                    total_macs = sum(macs["dense"].values()) / max(sum(macs[v].values()), 1)
                    rows.append(f"| {name} | {v} | {threads} | {ms:.3f} | {speed:.2f}x / {total_macs:.2f}x | "
                                + " | ".join(cells) + " |")
                    print(rows[-1], flush=True)
    head = ("| model | graph | threads | latency ms (median) | speed-up / MACs ratio | "
            + " | ".join(f"{k} ms" for k in KINDS) + " |")
    lines = [
        f"Machine: {cpu_name()}, Python {platform.python_version()}, onnxruntime {ort.__version__}, "
        f"{args.runs} runs per session. Command: `python benchmarks/bench_ort_profile.py --write`. Node times are "
        "onnxruntime's own profile (after its fusions: a conv includes its fused BN, activation and residual add), "
        "in ms per run; in brackets, for a pruned graph, how much that kind's time and its MACs fell against the "
        "dense graph.",
        "",
        head,
        "|" + "---|" * (5 + len(KINDS)),
        *rows,
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("## onnxruntime per-node profile: where a pruned model's speed-up goes", text)


if __name__ == "__main__":
    main()
