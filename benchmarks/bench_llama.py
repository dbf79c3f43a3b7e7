"""LLaMA-scale analysis: a 32-layer LLaMA-7B-shaped decoder built on the meta device, traced and
analysed for channel coupling. Goal: analysis in under 10 s.

    python benchmarks/bench_llama.py [--write] [--reps 3] [--profile]

Times are minima of --reps runs in one process: building the model on meta, gp.trace (torch.export
+ translation; constants on meta get types and no data) and the coupling analysis
(passes/analysis/coupling.py analyze), for LLaMA-7B's multi-head attention and a grouped-query
variant with 8 kv heads. --profile adds cProfile's top functions of one trace and one analysis.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from graphprune.passes.analysis.coupling import Coupling, analyze  # noqa: E402
from llama import llama_7b  # noqa: E402
from results import best_of, cpu_name  # noqa: E402
from results import write_section as write_results  # noqa: E402

import graphprune as gp  # noqa: E402
from graphprune.ir.graph import Graph  # noqa: E402

SEQ = 16  # example sequence length (shapes only: nothing is computed on meta)
GOAL_S = 10.0


def build(kv_heads: int) -> torch.nn.Module:
    with torch.device("meta"):
        return llama_7b(kv_heads=kv_heads)


def trace(model: torch.nn.Module) -> Graph:
    tokens = torch.zeros(1, SEQ, dtype=torch.int64, device="meta")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gp.trace(model, (tokens,))


def export(model: torch.nn.Module) -> Any:
    """torch.export + decompositions only: the part of gp.trace that graphprune does not own."""
    from graphprune.frontends.torch import _export

    tokens = torch.zeros(1, SEQ, dtype=torch.int64, device="meta")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _export(model, (tokens,), False)


def profile(fn: Callable[[], Any], top: int, sort: str, only: str = "") -> str:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats(sort)
    if only:
        stats.print_stats(only, top)
    else:
        stats.print_stats(top)
    root = str(HERE.parent) + "/"
    lines = [line.replace(root, "") for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    return "\n".join(lines[start : start + top + 1])


def describe(c: Coupling) -> str:
    prunable = [g for g in c.groups if g.prunable]
    units = sum(g.size for g in prunable)
    return f"{len(c.groups)} groups, {len(prunable)} prunable ({units:,} units)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="write the results into benchmarks/RESULTS.md")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="add cProfile's hotspots of trace and analysis")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows, verdicts, profiles = [], [], []
    for label, kv in (("LLaMA-7B shape, MHA (32 kv heads)", 32), ("GQA variant (8 kv heads)", 8)):
        t_build, model = best_of(lambda kv=kv: build(kv), args.reps)
        params = sum(p.numel() for p in model.parameters())
        t_trace, graph = best_of(lambda model=model: trace(model), args.reps)
        t_export, _ = best_of(lambda model=model: export(model), args.reps)
        t_analyze, coupling = best_of(lambda graph=graph: analyze(graph), args.reps)
        macs = gp.cost(graph).macs
        total = t_trace + t_analyze
        rows.append(
            f"| {label} | {params / 1e9:.2f} B | {macs / 1e9:.1f} G | {len(graph)} | {t_build:.2f} | {t_trace:.2f} | "
            f"{t_export:.2f} | {t_analyze:.2f} | {total:.2f} | {describe(coupling)} |"
        )
        verdicts.append(
            f"- {label}: coupling analysis {t_analyze:.2f} s (goal < {GOAL_S:.0f} s: "
            f"**{'met' if t_analyze < GOAL_S else 'NOT met'}**); trace + analysis {total:.2f} s "
            f"(**{'met' if total < GOAL_S else 'NOT met'}** with the trace included)."
        )
        if args.profile:
            hot_trace = profile(lambda model=model: trace(model), 12, "cumulative", "graphprune/")
            hot_analyze = profile(lambda graph=graph: analyze(graph), 8, "tottime")
            profiles.append(f"gp.trace, {label}:\n\n```\n{hot_trace}\n```")
            profiles.append(f"coupling analyze, {label}:\n\n```\n{hot_analyze}\n```")
    table = "\n".join(
        [
            f"| model | params | MACs (seq {SEQ}) | IR nodes | build on meta s | gp.trace s | of which torch.export s "
            "| coupling analysis s | trace + analysis s | groups |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            *verdicts,
        ]
    )
    if profiles:
        table += ("\n\nHotspots (cProfile, one run each; gp.trace: graphprune's functions by cumulative time, "
                  "analysis: by own time):\n\n" + "\n\n".join(profiles))
    print(table)
    if args.write:
        write_section(table, args)


def write_section(table: str, args: argparse.Namespace) -> None:
    flags = " --profile" if args.profile else ""
    write_results(
        "## LLaMA-scale analysis on the meta device",
        f"Machine: {os.cpu_count()} cores ({cpu_name()}), Python {platform.python_version()}, "
        f"torch {torch.__version__}, 2 torch threads.\n"
        "A 32-layer LLaMA-7B-shaped decoder (benchmarks/llama.py: hidden 4096, 32 heads, intermediate 11008, vocab "
        "32000, RMSNorm, rotary, SwiGLU, untied head) built under `torch.device(\"meta\")` and traced with meta "
        f"tokens [1, {SEQ}]. Minimum of {args.reps} runs in one process.\n"
        f"Command: `python benchmarks/bench_llama.py --write{flags}`\n\n"
        f"{table}\n",
    )


if __name__ == "__main__":
    main()
