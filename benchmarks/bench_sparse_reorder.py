"""N:M permutations after an unconstrained prune and its reorder: who gets the channel order.

    python benchmarks/bench_sparse_reorder.py [--write]

For zoo models with residual or concat segments (tests/zoo.py, float64): `gp.prune(0.5, round_to=1,
constrained=False)` (reorder=search), then `permute-sparse{pattern=2:4}` with prefer=reorder, auto
and sparsity. Over the clusters of groups whose stripes straddle the reorder's runs (before this
policy, permute-sparse skipped them): the L1 magnitude 2:4 keeps over their readers with no
permutation, with each policy; the reorder's slices left and the bytes copied per inference that
the readers turned into gathers add; the time of the pass with auto.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from results import cpu_name, write_section  # noqa: E402
from test_prune import trace64  # noqa: E402

import graphprune as gp  # noqa: E402
from graphprune.ir import Op  # noqa: E402
from graphprune.pm import Pipeline  # noqa: E402

MODELS = ["resnet_bottleneck", "mobilenetv2", "densenet", "convnext"]


def row(name: str) -> str:
    graph, _ = trace64(name)
    pruned = gp.prune(graph, 0.5, round_to=1, constrained=False)
    slices = sum(n.op is Op.SLICE for n in pruned.nodes)
    cells, base, extra = [], 0.0, ""
    for prefer in ("reorder", "auto", "sparsity"):
        g = pruned.copy()
        t0 = time.perf_counter()
        res = Pipeline.parse(f"permute-sparse{{pattern=2:4,prefer={prefer}}}").run(g)
        secs = time.perf_counter() - t0
        shared = [r for r in res[0].stats["groups"] if r.method in ("within-runs", "free", "identity")
                  and (r.views_kept or r.views_broken)]
        base = sum(r.kept_identity for r in shared)
        kept = sum(r.kept for r in shared)
        left = sum(n.op is Op.SLICE for n in g.nodes)
        added = sum(r.bytes_after - r.bytes_before for r in shared)
        winners = "/".join(f"{w}:{sum(r.winner == w for r in shared)}" for w in ("both", "reorder", "sparsity",
                                                                                 "neither"))
        cells.append(f"{kept:.2f} (+{(kept / base - 1) * 100 if base else 0:.2f}%, {left}/{slices} slices, "
                     f"+{added} B)")
        if prefer == "auto":
            extra = f"{winners}, {secs * 1000:.0f} ms"
    return f"| {name} | {len(shared)} | {base:.2f} | " + " | ".join(cells) + f" | {extra} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = ap.parse_args()
    rows = [row(n) for n in MODELS]
    body = f"""Machine: {cpu_name()}; numpy float64. Command: `python benchmarks/bench_sparse_reorder.py --write`.

Clusters of groups whose 2:4 stripes straddle the reorder's runs (skipped by permute-sparse before
the shared policy): L1 magnitude kept over their readers; per policy: kept (gain, slices left of
those the reorder made, bytes per inference added by slices turned into gathers); auto's winners.

| model | clusters | no permutation | prefer=reorder | auto | prefer=sparsity | auto: winners, pass time |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    print(body)
    if args.write:
        write_section("## N:M permutations after unconstrained pruning + reorder (bench_sparse_reorder.py)", body)


if __name__ == "__main__":
    main()
