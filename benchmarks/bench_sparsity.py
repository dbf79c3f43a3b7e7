"""Kept magnitude and time of N:M channel permutations: plain / deal / fast / strong, beside PyTorch.

    python benchmarks/bench_sparsity.py [--write] [--strong-seconds 60] [--zoo-seconds 5] [--reps 3]

1. 512x512 matrices, 2:4 along the columns (the input channels), L1 magnitude kept:
   - Gaussian: W = randn(512, 512)
   - log-uniform columns: W = randn(512, 512) * scale[col], scale = exp(U(log 0.1, log 10)) (the
     matrices of tests/test_sparsity.py)
   - lognormal columns: scale = exp(N(0, 1))
   Columns: the share of |W| kept by plain 2:4 (no permutation), by PyTorch's WeightNormSparsifier
   (torch.ao.pruning, sparse_block_shape=(1, 4), zeros_per_block=2: the peer, without permutation),
   by graphprune's deal / fast (the default) / strong search, and the per-row bound (the largest 50%
   of every row, which no 2:4 mask can beat). Efficacy = the share of the gap between plain and the
   bound that a permutation closes. Times: best of --reps (strong: one run of --strong-seconds).
2. Real layers: every zoo model (tests/zoo.py, float64), `permute-sparse` on its 2:4 layers (the
   defaults: first and last layers dense), summed over the coupling groups it permutes: magnitude
   kept by 2:4 over the groups' readers with plain / fast / strong (--zoo-seconds per model) and the
   time of the pass. These layers are randomly initialised, close to the Gaussian case.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from graphprune.passes.analysis.permutation_search import nm_kept, nm_search  # noqa: E402
from graphprune.passes.transform.sparse_permute import PermuteForSparsity  # noqa: E402
from results import best_of, cpu_name, write_section  # noqa: E402

from graphprune.pm import AnalysisManager  # noqa: E402


def matrices(size: int = 512) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((size, size))
    return {
        "Gaussian": base,
        "log-uniform columns [0.1, 10]": base * np.exp(rng.uniform(np.log(0.1), np.log(10.0), size)),
        "lognormal columns (sigma 1)": base * np.exp(rng.standard_normal(size)),
    }


def torch_24(w: np.ndarray) -> tuple[float, np.ndarray]:
    """PyTorch's 2:4 mask (WeightNormSparsifier), its time and the sparse weight."""
    from torch.ao.pruning import WeightNormSparsifier

    def run() -> np.ndarray:
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=torch.float64)
        lin.weight.data = torch.tensor(w)
        model = torch.nn.Sequential(lin)
        sp = WeightNormSparsifier(sparsity_level=1.0, sparse_block_shape=(1, 4), zeros_per_block=2)
        sp.prepare(model, [{"tensor_fqn": "0.weight"}])
        sp.step()
        sp.squash_mask()
        return model[0].weight.detach().numpy()

    return best_of(run, 1)


def matrix_rows(strong_seconds: float, reps: int) -> list[str]:
    rows = []
    for name, w in matrices().items():
        z = np.abs(w)
        total = z.sum()
        plain = nm_kept(z, 2, 4)
        bound = np.sort(z, 1)[:, z.shape[1] // 2 :].sum()
        t_torch, sparse = torch_24(w)
        kept_torch = np.abs(sparse).sum()
        cells = [f"{plain / total * 100:.2f}", f"{kept_torch / total * 100:.2f} ({t_torch * 1000:.0f} ms)"]
        for method in ("deal", "fast", "strong"):
            if method == "strong":
                t0 = time.perf_counter()
                res = nm_search(z, 2, 4, method="strong", time_budget=strong_seconds)
                t = time.perf_counter() - t0
            else:
                t, res = best_of(lambda m=method, z=z: nm_search(z, 2, 4, method=m), reps)
            eff = (res.kept - plain) / (bound - plain) * 100
            cells.append(f"{res.kept / total * 100:.2f} ({eff:.1f}%, {_secs(t)})")
        cells.append(f"{bound / total * 100:.2f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    return rows


def zoo_rows(zoo_seconds: float) -> list[str]:
    from test_prune import NAMES, trace64

    rows = []
    for name in NAMES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph, _ = trace64(name)
        cells = []
        base = None
        for search in ("fast", "strong"):
            g = graph.copy()
            p = PermuteForSparsity(pattern="2:4", search=search, time_budget=zoo_seconds, progress=False)
            t0 = time.perf_counter()
            res = p.run(g, AnalysisManager(g, check_preserved=False))
            t = time.perf_counter() - t0
            groups = res.stats["groups"]
            if not groups:
                break
            base = sum(r.kept_identity for r in groups)
            kept = sum(r.kept for r in groups)
            cells.append(f"{kept:.2f} (+{(kept / base - 1) * 100:.2f}%, {_secs(t)})")
        if base is None:
            rows.append(f"| {name} | - | - | - | every group skipped (channel shuffle layouts) |")
        else:
            n_groups = len(groups)
            rows.append(f"| {name} | {base:.2f} | {cells[0]} | {cells[1]} | {n_groups} groups |")
        print(rows[-1], flush=True)
    return rows


def _secs(t: float) -> str:
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.1f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="write the tables into benchmarks/RESULTS.md")
    ap.add_argument("--strong-seconds", type=float, default=60.0)
    ap.add_argument("--zoo-seconds", type=float, default=5.0)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    head = ("| matrix | plain 2:4 | PyTorch 2:4 | deal | fast (default) | strong | row-50% bound |\n"
            "|---|---|---|---|---|---|---|")
    mat = matrix_rows(args.strong_seconds, args.reps)
    zhead = ("| model | plain 2:4 | fast (default) | strong | groups |\n"
             "|---|---|---|---|---|")
    zoo = zoo_rows(args.zoo_seconds)
    cmd = (f"python benchmarks/bench_sparsity.py --write --strong-seconds {args.strong_seconds:g} "
           f"--zoo-seconds {args.zoo_seconds:g} --reps {args.reps}")
    body = f"""Machine: {cpu_name()}, 2 torch threads; numpy float64. Command: `{cmd}`.

512x512 matrices, 2:4 along the input channels (columns): % of the L1 magnitude kept, (efficacy: share
of the gap from plain 2:4 to the row-50% bound closed, time). PyTorch's WeightNormSparsifier makes the
same mask as plain 2:4 (no permutation), with its time. strong = every stripe pair (ASP-style stripe
groups of 8 channels, all 35 splits) with escapes, within {args.strong_seconds:g} s.

{head}
{chr(10).join(mat)}

Zoo models (tests/zoo.py, random init, float64): L1 magnitude kept by 2:4 over the readers of the
coupling groups `permute-sparse` permutes, plain / fast / strong ({args.zoo_seconds:g} s per model), with the
time of the whole pass. The permutation is checked exact by the test suite; the kept magnitude never
falls below plain by construction.

{zhead}
{chr(10).join(zoo)}
"""
    print(body)
    if args.write:
        write_section("## N:M channel permutations (bench_sparsity.py)", body)


if __name__ == "__main__":
    main()
