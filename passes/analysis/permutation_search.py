"""Choosing a channel permutation that raises the magnitude a sparsity pattern keeps (pure numpy).

The problem, for N:M: `Z` [rows, S] holds |w| of every reader of a channel group, one column per
channel (rows of all readers stacked); the columns are cut into stripes of M consecutive slots and
each row keeps its N largest per stripe. A permutation `perm` puts channel `perm[i]` into slot `i`;
the kept magnitude `nm_kept(Z[:, perm])` depends only on which channels share a stripe.

- `plain`: the identity (no permutation).
- `deal` (the fast default's start): sort channels by L1 importance and deal them snake-wise
  across the stripes, so each stripe gets one channel from every quantile: large channels stop
  competing with each other inside one stripe. O(S log S).
- stripe-pair refinement: for a pair of stripes (2M channels), try every way to split them into two
  stripes (35 for M=4; for M > 4, every single swap between the two) and keep the best. The fast
  default refines a few random perfect matchings of the stripes; the strong search (NVIDIA ASP's
  stripe-group search with W = 2M) refines every pair, applies the best disjoint improvements,
  recomputes the pairs it touched, and escapes local optima by random channel swaps, until no pair
  improves, `escapes` escapes found nothing, or the time budget is spent.

For blocks of C slots the objective is the sum of the k largest block sums of each layer (k fixed by
the target density); `cluster` sorts channels by importance so that large channels share blocks, and
the strong search tries random swaps between blocks, kept when they raise the objective.

Every search returns the best order it saw, compared with the identity: it never keeps less than no
permutation.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BlockObjective",
    "SharedWeight",
    "block_search",
    "deal",
    "nm_kept",
    "nm_search",
    "nm_search_within",
]


def _topn_lanes(lanes: list[np.ndarray], n: int) -> np.ndarray:
    """Sum of the n largest of m same-shaped arrays, elementwise: an odd-even transposition sorting
    network of min/max over whole arrays (numpy sorts along a short axis one row at a time, which is
    ten times slower here)."""
    x = list(lanes)
    m = len(x)
    for rnd in range(m):
        for i in range(rnd % 2, m - 1, 2):
            lo, hi = np.minimum(x[i], x[i + 1]), np.maximum(x[i], x[i + 1])
            x[i], x[i + 1] = lo, hi
    out = x[m - n].copy()
    for v in x[m - n + 1 :]:
        out += v
    return out


def nm_kept(z: np.ndarray, n: int, m: int) -> float:
    """Magnitude kept by N:M on the columns of z [rows, S] in their current order."""
    groups = z.reshape(z.shape[0], -1, m)
    return float(_topn_lanes([groups[..., j] for j in range(m)], n).sum())


def deal(importance: np.ndarray, m: int) -> np.ndarray:
    """Sort by importance (descending) and deal snake-wise across the S/m stripes."""
    s = len(importance)
    g = s // m
    order = np.argsort(-np.asarray(importance), kind="stable")
    k = np.arange(s)
    rnd, j = k // g, k % g
    stripe = np.where(rnd % 2 == 0, j, g - 1 - j)
    perm = np.empty(s, np.int64)
    perm[stripe * m + rnd] = order
    return perm


def _arrangements(m: int) -> np.ndarray:
    """Ways to rearrange two stripes (2m positions: the first m form stripe A): row 0 is the identity.
    Every split of the 2m channels into two stripes for m <= 4; every single swap for larger m."""
    if math.comb(2 * m - 1, m - 1) <= 70:
        rows = []
        for rest in itertools.combinations(range(1, 2 * m), m - 1):
            a = (0, *rest)
            rows.append([*a, *(i for i in range(2 * m) if i not in a)])
        return np.asarray(rows, np.int64)
    rows = [list(range(2 * m))]
    for i in range(m):
        for j in range(m, 2 * m):
            r = list(range(2 * m))
            r[i], r[j] = r[j], r[i]
            rows.append(r)
    return np.asarray(rows, np.int64)


class _NM:
    """Stripe bookkeeping for N:M refinement: the channels of every stripe and its kept value."""

    def __init__(self, z: np.ndarray, n: int, m: int, perm: np.ndarray) -> None:
        self.z, self.n, self.m = z, n, m
        # [S, rows]: a channel's column is one contiguous row; float32 halves the memory traffic of the
        # search (the candidates are compared in float64 at the end)
        self.zt = np.ascontiguousarray(z.T, dtype=np.float32)
        self.arr = _arrangements(m)
        self.cols = perm.reshape(-1, m).copy()
        self.value = self.stripe_values(self.cols)  # [G]

    def stripe_values(self, cols: np.ndarray) -> np.ndarray:
        """Kept magnitude of stripes given by their channels (cols [..., m]) -> [...]."""
        vals = self.zt[cols]  # [..., m, rows]
        return _topn_lanes([vals[..., j, :] for j in range(self.m)], self.n).sum(-1)

    @property
    def perm(self) -> np.ndarray:
        return self.cols.reshape(-1).copy()

    def best_splits(self, pairs: np.ndarray, chunk_elems: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
        """For each pair of stripes: the gain of its best arrangement, and that arrangement's index."""
        k, m = self.arr.shape[0], self.m
        per = max(1, chunk_elems // max(1, self.z.shape[0] * k * 2 * m))
        gains, best = np.empty(len(pairs)), np.empty(len(pairs), np.int64)
        for start in range(0, len(pairs), per):
            p = pairs[start : start + per]
            both = np.concatenate([self.cols[p[:, 0]], self.cols[p[:, 1]]], axis=1)  # [P, 2m]
            chans = both[:, self.arr]  # [P, K, 2m]
            total = self.stripe_values(chans[..., :m]) + self.stripe_values(chans[..., m:])  # [P, K]
            idx = total.argmax(1)
            best[start : start + per] = idx
            gains[start : start + per] = total[np.arange(len(p)), idx] - total[:, 0]
        return gains, best

    def apply(self, s: int, t: int, arrangement: int) -> None:
        both = np.concatenate([self.cols[s], self.cols[t]])[self.arr[arrangement]]
        self.cols[s], self.cols[t] = both[: self.m], both[self.m :]
        self.value[[s, t]] = self.stripe_values(self.cols[[s, t]])

    def refine(self, pairs: np.ndarray, eps: float) -> float:
        """Best arrangement of every (disjoint) pair; returns the total gain."""
        if len(pairs) == 0:
            return 0.0
        gains, best = self.best_splits(pairs)
        gained = 0.0
        for (s, t), g, a in zip(pairs, gains, best, strict=True):
            if g > eps:
                self.apply(int(s), int(t), int(a))
                gained += g
        return gained


@dataclass
class SearchResult:
    perm: np.ndarray
    kept: float  # magnitude kept with perm
    kept_identity: float  # magnitude kept without a permutation
    seconds: float
    method: str  # which candidate won: identity, deal, refine, strong, cluster, swap


def nm_search(
    z: np.ndarray,
    n: int,
    m: int,
    *,
    method: str = "fast",
    time_budget: float = 10.0,
    escapes: int = 100,
    rounds: int = 6,
    sample_rows: int = 512,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
) -> SearchResult:
    """A permutation of the columns of z [rows, S] (S a multiple of m) that raises the N:M kept
    magnitude. method: "plain" (identity), "deal" (sort and deal only), "fast" (deal, then `rounds`
    random stripe matchings refined), "strong" (fast, then every stripe pair, with escapes, within
    `time_budget` seconds). The fast refinement sees at most `sample_rows` rows."""
    t0 = time.perf_counter()
    z = np.abs(np.asarray(z, np.float64))
    s = z.shape[1]
    if s % m:
        raise ValueError(f"{s} columns do not split into stripes of {m}")
    ident = np.arange(s)
    base = nm_kept(z, n, m)
    best_perm, best_kept, how = ident, base, "identity"
    g = s // m
    if method == "plain" or g < 2:
        return SearchResult(ident, base, base, time.perf_counter() - t0, how)
    if method not in ("deal", "fast", "strong"):
        raise ValueError(f"unknown permutation search {method!r}; expected plain, deal, fast or strong")
    eps = 1e-6 * max(base, 1e-300) / g  # gains below float32 noise of a stripe are not gains
    rng = np.random.default_rng(seed)
    # the fast refinement works on a uniform sample of at most `sample_rows` rows (the objective is a sum
    # over rows, so the sample ranks arrangements alike); every candidate is measured on all rows
    rows = z
    if method != "strong" and z.shape[0] > sample_rows:
        rows = z[np.sort(rng.choice(z.shape[0], sample_rows, replace=False))]
    st = _NM(rows, n, m, deal(z.sum(0), m))

    def consider(perm: np.ndarray, name: str) -> None:
        nonlocal best_perm, best_kept, how
        kept = nm_kept(z[:, perm], n, m)  # float64, like the identity's
        if kept > best_kept:
            best_perm, best_kept, how = perm, kept, name

    consider(st.perm, "deal")
    if method in ("fast", "strong"):
        for _ in range(rounds):
            order = rng.permutation(g)[: g - g % 2].reshape(-1, 2)
            # a round that gains less than 0.01% is the end of what random matchings find cheaply
            if st.refine(order, eps) <= 1e-4 * float(st.value.sum()) and method == "fast":
                break
        consider(st.perm, "refine")
    if method == "strong":
        consider(*_strong(st, t0, time_budget, escapes, eps, seed, progress))
    return SearchResult(best_perm, best_kept, base, time.perf_counter() - t0, how)


def _strong(st: _NM, t0: float, budget: float, escapes: int, eps: float, seed: int,
            progress: Callable[[float, str], None] | None) -> tuple[np.ndarray, str]:
    """Every stripe pair refined, best disjoint improvements first; random escapes at local optima.
    Returns the best order seen."""
    rng = np.random.default_rng(seed + 1)
    best_perm, best_kept = st.perm, float(st.value.sum())
    g = st.cols.shape[0]
    all_pairs = np.asarray(list(itertools.combinations(range(g), 2)), np.int64)
    gains, best = np.full(len(all_pairs), -np.inf), np.zeros(len(all_pairs), np.int64)
    stale = np.ones(len(all_pairs), bool)
    left = escapes

    def out_of_time() -> bool:
        return time.perf_counter() - t0 > budget

    while not out_of_time():
        # recompute the stale pairs in chunks so the budget can stop the work in the middle
        todo = np.flatnonzero(stale)
        for start in range(0, len(todo), 512):
            part = todo[start : start + 512]
            gains[part], best[part] = st.best_splits(all_pairs[part])
            stale[part] = False
            if progress is not None:
                progress(time.perf_counter() - t0, f"kept {float(st.value.sum()):.6g}")
            if out_of_time():
                break
        if stale.any():
            break
        touched: set[int] = set()
        for i in np.argsort(-gains, kind="stable"):
            if gains[i] <= eps:
                break
            s, t = (int(x) for x in all_pairs[i])
            if s in touched or t in touched:
                continue
            st.apply(s, t, int(best[i]))
            touched.update((s, t))
        kept = float(st.value.sum())
        if kept > best_kept + eps:
            best_perm, best_kept = st.perm, kept
        if not touched:
            if left <= 0:
                break
            left -= 1
            # escape: swap one channel between two random stripes, then climb again from there
            s, t = rng.choice(g, 2, replace=False)
            i, j = rng.integers(st.m, size=2)
            st.cols[s, i], st.cols[t, j] = st.cols[t, j], st.cols[s, i]
            st.value[[s, t]] = st.stripe_values(st.cols[[s, t]])
            touched = {int(s), int(t)}
        mark = np.isin(all_pairs[:, 0], list(touched)) | np.isin(all_pairs[:, 1], list(touched))
        stale |= mark
    return best_perm, "strong"


# ------------------------------------------------------------------------------------------------
# blocks
# ------------------------------------------------------------------------------------------------


@dataclass
class BlockObjective:
    """One layer's share of a block objective: `z` [rows, S] (|w| summed over the block's other
    extent), blocks of `width` consecutive columns, `fixed` block sums of the layer outside this
    channel group, and `keep`: how many of the layer's blocks survive."""

    z: np.ndarray
    width: int
    keep: int
    fixed: np.ndarray

    def value(self, perm: np.ndarray) -> float:
        zz = self.z[:, perm]
        sums = zz.reshape(zz.shape[0], -1, self.width).sum(-1).reshape(-1)
        allb = np.concatenate([sums, self.fixed])
        k = min(self.keep, allb.size)
        return float(np.partition(allb, allb.size - k)[allb.size - k :].sum()) if k else 0.0


def block_search(
    objectives: list[BlockObjective],
    *,
    method: str = "fast",
    time_budget: float = 10.0,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
) -> SearchResult:
    """A permutation of the S shared columns that raises the kept magnitude of every layer's top
    blocks. fast: the identity or `cluster` (channels sorted by importance, so large ones share
    blocks), whichever keeps more; strong: then random swaps between blocks within the budget."""
    t0 = time.perf_counter()
    s = objectives[0].z.shape[1]

    def total(perm: np.ndarray) -> float:
        return sum(o.value(perm) for o in objectives)

    ident = np.arange(s)
    base = total(ident)
    best_perm, best_kept, how = ident, base, "identity"
    if method == "plain":
        return SearchResult(ident, base, base, time.perf_counter() - t0, how)
    if method not in ("deal", "fast", "strong"):
        raise ValueError(f"unknown permutation search {method!r}; expected plain, deal, fast or strong")
    importance = sum(o.z.sum(0) for o in objectives)
    cluster = np.argsort(-np.asarray(importance), kind="stable")
    kept = total(cluster)
    eps = 1e-12 * max(base, 1e-300)
    if kept > best_kept + eps:
        best_perm, best_kept, how = cluster, kept, "cluster"
    if method == "strong":
        rng = np.random.default_rng(seed)
        perm = best_perm.copy()
        cur = best_kept
        width = max(o.width for o in objectives)
        while time.perf_counter() - t0 < time_budget:
            i, j = rng.integers(s, size=2)
            if i // width == j // width:
                continue
            perm[[i, j]] = perm[[j, i]]
            new = total(perm)
            if new > cur + eps:
                cur = new
            else:
                perm[[i, j]] = perm[[j, i]]
            if progress is not None:
                progress(time.perf_counter() - t0, f"kept {cur:.6g}")
        if cur > best_kept + eps:
            best_perm, best_kept, how = perm, cur, "swap"
    return SearchResult(best_perm, best_kept, base, time.perf_counter() - t0, how)



# ------------------------------------------------------------------------------------------------
# N:M within classes: a channel order shared by layers whose stripes straddle several classes
# ------------------------------------------------------------------------------------------------


@dataclass
class SharedWeight:
    """One layer's share of a shared N:M objective: `z` [rows, C] (|w| per input column, stripes of m
    consecutive columns) and `slot` [C]: the shared slot each column reads (-1: a column whose
    channel order is fixed). Every slot a weight reads, it reads once."""

    z: np.ndarray
    slot: np.ndarray

    def columns(self, perm: np.ndarray) -> np.ndarray:
        """When slot s holds the channel of slot perm[s]: the original column each column now holds."""
        col_of = np.full(len(perm), -1, np.int64)
        live = self.slot >= 0
        col_of[self.slot[live]] = np.flatnonzero(live)
        src = np.arange(self.z.shape[1])
        src[live] = col_of[perm[self.slot[live]]]
        return src


def nm_search_within(
    weights: list[SharedWeight],
    classes: list[np.ndarray],
    n: int,
    m: int,
    *,
    slots: int,
    time_budget: float = 10.0,
    sample_rows: int = 512,
    seed: int = 0,
) -> tuple[SearchResult, list[float], list[float]]:
    """A permutation of the `slots` shared slots (`perm[s]`: the slot whose channel moves into slot s; channels
    trade places only within a class) that raises the N:M magnitude kept over every weight. The
    layers read the slots at different offsets (a reorder's slices start anywhere), so their stripes
    straddle the classes and no single stripe layout exists: this is a steepest-ascent swap search.
    Each round prices every swap inside a class on every weight at once (the value of a stripe with
    one lane replaced by every other column of the class: O(k^2 * m * rows) per class of k slots and
    weight), applies the best swaps that share no stripe (so their gains add exactly), and stops when
    no swap gains or the budget is spent. Returns the result and the kept magnitude per weight with
    the identity and with the result; never keeps less than the identity."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    size = slots
    col_of = []  # per weight: the column of every slot (-1: not read)
    for w in weights:
        c = np.full(size, -1, np.int64)
        live = np.flatnonzero(w.slot >= 0)
        c[w.slot[live]] = live
        col_of.append(c)
    # the search sees a uniform sample of rows (the objective is a sum over rows); float32 halves traffic
    rows = [w.z if w.z.shape[0] <= sample_rows else w.z[np.sort(rng.choice(w.z.shape[0], sample_rows, False))]
            for w in weights]
    zt = [np.ascontiguousarray(np.abs(r).T, dtype=np.float32) for r in rows]  # [C, rows]
    perm = np.arange(size)

    def kept_all(p: np.ndarray) -> list[float]:
        return [nm_kept(np.abs(w.z)[:, w.columns(p)], n, m) for w in weights]

    base = kept_all(perm)
    if not weights:
        return SearchResult(perm, 0.0, 0.0, time.perf_counter() - t0, "identity"), base, base
    eps = 1e-6 * max(sum(base), 1e-300) / max(size, 1)
    while time.perf_counter() - t0 < time_budget:
        swaps: list[tuple[float, int, int, int]] = []  # (gain, class, a, b)
        for ci, cls in enumerate(classes):
            k = len(cls)
            if k < 2:
                continue
            gain = np.zeros((k, k))
            for w, t, c in zip(weights, zt, col_of, strict=True):
                cols = c[cls]
                if np.all(cols < 0):
                    continue
                cur = t[w.columns(perm)]  # [C, rows] in the current order
                if np.any(cols < 0):
                    continue  # the weight reads the class whole or not at all (checked by the caller)
                stripe, lane = cols // m, cols % m
                lanes = cur[(stripe[:, None] * m + np.arange(m))]  # [k, m, rows]
                value = _topn_lanes([lanes[:, j] for j in range(m)], n).sum(-1)  # [k]
                # stripe of slot a with its lane replaced by the column of slot b: [k(a), k(b)], in chunks of a
                v = np.empty((k, k))
                step = max(1, 4_000_000 // (k * m * cur.shape[1] + 1))
                for lo in range(0, k, step):
                    hi = min(k, lo + step)
                    trial = np.repeat(lanes[lo:hi, None], k, axis=1)  # [a, b, m, rows]
                    trial[np.arange(hi - lo)[:, None], np.arange(k)[None, :], lane[lo:hi, None]] = cur[cols][None]
                    v[lo:hi] = _topn_lanes([trial[:, :, j] for j in range(m)], n).sum(-1)
                d = v + v.T - value[:, None] - value[None, :]
                d[stripe[:, None] == stripe[None, :]] = 0.0  # a swap inside one stripe changes nothing
                gain += d
            a, b = np.triu_indices(k, 1)
            g = gain[a, b]
            good = np.flatnonzero(g > eps)
            swaps += [(float(g[i]), ci, int(a[i]), int(b[i])) for i in good]
        if not swaps:
            break
        touched: set[tuple[int, int]] = set()  # (weight, stripe)
        applied = 0
        for _, ci, a, b in sorted(swaps, reverse=True):
            sa, sb = int(classes[ci][a]), int(classes[ci][b])
            hit = {(wi, int(np.flatnonzero(w.slot == s)[0]) // m) for wi, w in enumerate(weights)
                   for s in (sa, sb) if np.any(w.slot == s)}
            if hit & touched:
                continue
            touched |= hit
            perm[[sa, sb]] = perm[[sb, sa]]
            applied += 1
        if not applied:
            break
    kept = kept_all(perm)
    if sum(kept) <= sum(base):
        perm, kept = np.arange(size), base
    how = "identity" if np.array_equal(perm, np.arange(size)) else "within-runs"
    return SearchResult(perm, sum(kept), sum(base), time.perf_counter() - t0, how), base, kept
