"""Foundation benchmark: trace + verify time on a ResNet-50-sized model, and how it grows with depth.

    python benchmarks/bench_foundation.py [--write]     (--write updates benchmarks/RESULTS.md)

Times are the minimum of a few repetitions in one process (the machine is shared and noisy). The
goal from the issue: a model 4x deeper must take less than 5x as long to trace + verify.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from resnet import resnet50, resnet_deep  # noqa: E402
from results import best_of, cpu_name  # noqa: E402
from results import write_section as write_results  # noqa: E402

import graphprune as gp  # noqa: E402


def measure(model: torch.nn.Module, x: torch.Tensor, reps: int) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_trace, graph = best_of(lambda: gp.trace(model, (x,)), reps)
    t_verify, _ = best_of(graph.verify, reps)
    t_fold, _ = best_of(lambda: gp.optimize(graph, "fold-bn,dce", verify=False), reps)
    t_checked, _ = best_of(lambda: gp.optimize(graph, "fold-bn,dce", verify=True), 1)
    t_text, _ = best_of(lambda: gp.parse(str(graph)), reps)
    t_run, _ = best_of(lambda: graph.run(x.numpy()), reps)
    return {"nodes": len(graph), "trace": t_trace, "verify": t_verify, "fold_dce": t_fold, "checked": t_checked,
            "text_rt": t_text, "run": t_run}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="write the results into benchmarks/RESULTS.md")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    x = torch.randn(1, 3, 224, 224)
    rows = [
        ("ResNet-50 (16 blocks)", measure(resnet50(), x, args.reps)),
        ("ResNet 4x deeper (64 blocks)", measure(resnet_deep(4), x, args.reps)),
    ]
    base, deep = rows[0][1], rows[1][1]
    ratio = (deep["trace"] + deep["verify"]) / (base["trace"] + base["verify"])
    lines = [
        "| model | IR nodes | trace s | verify s | fold-bn+dce s | same, numerically verified s "
        "| print+parse s | interpreter f32 forward s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        cells = (f"{r['trace']:.3f} | {r['verify']:.4f} | {r['fold_dce']:.3f} | {r['checked']:.2f} | "
                 f"{r['text_rt']:.3f} | {r['run']:.3f}")
        lines.append(f"| {name} | {r['nodes']} | {cells} |")
    verdict = "met" if ratio < 5 else "NOT met"
    lines.append("")
    lines.append(f"4x deeper / base (trace + verify): **{ratio:.2f}x** (goal < 5x: {verdict})")
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(table)


def write_section(table: str) -> None:
    write_results(
        "## Foundation: trace + verify time",
        f"Machine: {os.cpu_count()} cores ({cpu_name()}), Python {platform.python_version()}, "
        f"torch {torch.__version__}, 2 torch threads, 1x3x224x224 input. Minimum of 3 runs in one process (the "
        "numerically verified\npipeline: one run; it computes the graph twice in float64). `verify` is the "
        "structural verifier.\nCommand: `.venv/bin/python benchmarks/bench_foundation.py --write`\n\n"
        f"{table}\n",
    )


if __name__ == "__main__":
    main()
