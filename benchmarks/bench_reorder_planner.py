"""The reorder planner on segments too large for its exact search: greedy, greedy + local improvement
(what `plan` runs), UPSCALE's path cover, against the optimum found by brute force.

    python benchmarks/bench_reorder_planner.py [--write] [--instances 300]

Random single-block segments of 4-7 channels read by 9-12 readers (more than EXACT_READERS = 8, so
`plan` takes its greedy path), each reader a random subset of 2 or more channels with a random
weight (bytes per channel). Reported: bytes a reader would copy that the choice makes copy-free, as a
share of the optimum over all subsets of readers (brute force), and how many instances fall short
of the optimum. Deterministic (seeded); no timing.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from graphprune.passes.analysis import reorder as R  # noqa: E402
from graphprune.passes.analysis.reorder import ReaderSpec, SegmentSpec  # noqa: E402
from results import write_section  # noqa: E402


def instance(rng: np.random.Generator) -> SegmentSpec:
    size = int(rng.integers(4, 8))
    readers = []
    for i in range(int(rng.integers(9, 13))):
        sel = sorted(rng.choice(size, int(rng.integers(2, size)), replace=False).tolist())
        readers.append(ReaderSpec(f"r{i}", (0,), tuple((0, s) for s in sel), int(rng.integers(1, 20))))
    return SegmentSpec("s", (size,), (True,), tuple(readers))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--instances", type=int, default=300)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    saved = {"greedy": 0, "greedy + local improvement (plan)": 0, "UPSCALE": 0, "optimum": 0}
    short = dict.fromkeys(saved, 0)
    for _ in range(args.instances):
        seg = instance(rng)
        needs = [R._needs(seg, r) for r in seg.readers]
        weight = [r.bytes_per_channel * len(r.reads) for r in seg.readers]
        cand = [i for i, n in enumerate(needs) if n.feasible and n.sets]
        greedy = R._greedy(seg, needs, weight, cand, [])
        total = sum(weight)
        got = {
            "greedy": sum(weight[i] for i in greedy),
            "greedy + local improvement (plan)": total - R.total_bytes(R.evaluate(seg, R.plan(seg))),
            "UPSCALE": total - R.total_bytes(R.evaluate(seg, R.upscale_order(seg))),
            "optimum": max(
                sum(weight[i] for i in c)
                for k in range(len(cand) + 1)
                for c in itertools.combinations(cand, k)
                if R._orders_for(seg, needs, c) is not None
            ),
        }
        for k, v in got.items():
            saved[k] += v
            short[k] += v < got["optimum"]
    rows = [f"| {k} | {100 * v / saved['optimum']:.1f}% | {short[k]} |" for k, v in saved.items()]
    text = "\n".join([
        f"Command: `python benchmarks/bench_reorder_planner.py --write --instances {args.instances}`. "
        f"{args.instances} random segments (one block of 4-7 channels, 9-12 readers of 2+ channels, random "
        "bytes per channel; seeded). Copy-free bytes: what the readers made contiguous would otherwise copy, "
        "summed over the instances, as a share of the brute-force optimum (`plan` also keeps UPSCALE's order "
        "when that is better).",
        "",
        "| planner | copy-free bytes (share of optimum) | instances below the optimum |",
        "|---|---|---|",
        *rows,
    ])
    print(text)
    if args.write:
        write_section("## Reorder planner on segments beyond the exact search", text)


if __name__ == "__main__":
    main()
