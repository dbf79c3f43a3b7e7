"""Reorder planning: one channel order per segment so that readers read contiguous ranges.

After unconstrained pruning every reader of a segment (see transform/readers.py) reads its own
subset of the stream's channels through a reader gather: a copy of k channels per inference. A
reader whose channels sit in one contiguous range of the stream reads a Slice instead (a view: no
copy). The stream's channel order is free (a permutation of the producers' output channels,
propagated exactly through the coupling groups), so we pick it to make as many readers contiguous
as possible, weighing each reader by the bytes it would copy (k * the rest of its shape * item size;
symbolic sizes count 1), and to leave the rest as few contiguous runs as possible.

The model. A segment is a set of *blocks* (coupling groups: one for a residual stream, one per
concatenated layer output for a DenseNet concat). A reader reads one value whose channel axis is a
sequence of whole blocks in slot order, a block's order is free when its group is permutable. A
reader can be contiguous only if the blocks strictly inside the span it reads are read whole; then
it needs its channels of the first block to be a suffix of that block, of the last block a prefix,
or, in one block, a run. A prefix/suffix is a run containing a START/END sentinel fixed at the
block's ends, so every block gets a family of sets that must each be consecutive: the
consecutive-ones property (C1P) with fixed ends. Readers are made contiguous together iff every
block's family has C1P.

A read of a concat that only readers read (DenseNet) is split per concat input by the reorder pass
(each piece a slice or a gather of one producer's output, joined by a concat of the pieces, and the
original concat disappears); the planner then treats each piece as a reader of its own.

The search (`plan`):
- A family's C1P test works on *atoms*, the classes of channels with the same membership; m
  intervals on a line cut it into at most 2m+1 classes, so more atoms than that fails at once.
  Otherwise a depth-first search builds the atom order left to right, refusing any step that closes
  a set with members still to come or reopens a closed one, and memoises dead states (placed atoms,
  last atom): O(2^A * A) time in the worst case for A atoms, in practice nearly linear because C1P
  instances force almost every step. A node budget bounds it; running out counts as infeasible.
- Exact for small segments (at most `EXACT_READERS` = 8 readers that can be contiguous at all):
  subsets of readers in decreasing order of bytes saved, the first feasible one is optimal (at
  most 2^8 C1P tests, most rejected by the atom count).
- Larger segments: greedy in decreasing order of bytes (add a reader when the family stays C1P),
  then local improvement (trade one chosen reader for one or two others that save more bytes and
  fit, refill greedily, repeat; at most `LOCAL_TESTS` C1P tests), then the result is compared with
  UPSCALE's order and the better one kept (up to 32 readers).
- Inside each atom the channels are grouped by their membership in the readers left copying and
  the groups chained by similarity (nearest neighbour), so those readers read few runs.

`upscale_order` is UPSCALE's path-cover heuristic (Wan et al., ICML 2023, reorder.py), the baseline:
nesting, overlap graph, greedy best induced path cover, emission path by path; applied to each block
on its own (UPSCALE's multi-producer tuples are per-producer permutations too). Its objective is the
number of channels covered by paths, not bytes; its DFS is exponential in the readers per segment.

`evaluate` is the cost model shared by both: per reader the runs it reads, whether it is a view,
and the bytes it copies.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "EXACT_READERS",
    "ReaderCost",
    "ReaderSpec",
    "SegmentSpec",
    "evaluate",
    "plan",
    "total_bytes",
    "upscale_order",
]

EXACT_READERS = 8  # segments with at most this many contiguous-capable readers are solved exactly
UPSCALE_READERS = 32  # larger segments are not compared with UPSCALE's (exponential) path search
DFS_BUDGET = 200_000  # C1P search steps per test; exhausting it counts as "not C1P"
LOCAL_TESTS = 400  # C1P tests the local improvement of a large segment's greedy choice may make


@dataclass(frozen=True)
class ReaderSpec:
    """One reader: its input's channel axis is `layout` (block ids, each block whole in slot order);
    `reads` are (block, slot) pairs in the gather's order; `bytes_per_channel` what one copied
    channel costs per inference. `sortable`: the reader's own channel order may change (so a run
    read out of order is still a slice once the reader's weights are permuted)."""

    name: str
    layout: tuple[int, ...]
    reads: tuple[tuple[int, int], ...]
    bytes_per_channel: int
    sortable: bool = True
    # a read of a concat is split into one read per concat input (`pieces`: the blocks of each input,
    # in order) joined by a concat of the pieces: each piece is a slice or a gather of its own, and
    # the join copies every channel when there are several pieces. Empty: one read of the whole value.
    pieces: tuple[tuple[int, ...], ...] = ()

    def parts(self) -> list[ReaderSpec]:
        """The reads this reader is made of: itself, or one unsplit reader per nonempty piece."""
        if not self.pieces:
            return [self]
        out = []
        for k, blocks in enumerate(self.pieces):
            reads = tuple(bs for bs in self.reads if bs[0] in blocks)
            if reads:
                out.append(ReaderSpec(f"{self.name}#{k}", blocks, reads, self.bytes_per_channel, self.sortable))
        return out


@dataclass(frozen=True)
class SegmentSpec:
    name: str
    sizes: tuple[int, ...]  # channels per block
    free: tuple[bool, ...]  # whether a block's order may change
    readers: tuple[ReaderSpec, ...]


@dataclass(frozen=True)
class ReaderCost:
    name: str
    channels: int
    runs: int
    view: bool  # a Slice (or nothing, when it reads every channel in order)
    bytes: int  # copied per inference


def _positions(seg: SegmentSpec, r: ReaderSpec, inv: Sequence[np.ndarray]) -> np.ndarray:
    offsets, off = {}, 0
    for b in r.layout:
        offsets.setdefault(b, off)
        off += seg.sizes[b]
    return np.array([offsets[b] + int(inv[b][s]) for b, s in r.reads], dtype=np.int64)


def evaluate(seg: SegmentSpec, orders: Sequence[np.ndarray]) -> list[ReaderCost]:
    """The cost of every reader when block b's new slot i holds old slot orders[b][i]."""
    inv = []
    for o in orders:
        iv = np.empty(len(o), dtype=np.int64)
        iv[np.asarray(o, dtype=np.int64)] = np.arange(len(o))
        inv.append(iv)
    out = []
    for r in seg.readers:
        parts = [_part_cost(seg, p, inv) for p in r.parts()]
        if len(parts) == 1:
            c = parts[0]
            out.append(ReaderCost(r.name, c.channels, c.runs, c.view, c.bytes))
            continue
        # several pieces: each copies unless a view, and their concat copies every channel
        k = sum(c.channels for c in parts)
        copied = sum(c.bytes for c in parts) + k * r.bytes_per_channel
        out.append(ReaderCost(r.name, k, sum(c.runs for c in parts), False, copied))
    return out


def _part_cost(seg: SegmentSpec, r: ReaderSpec, inv: Sequence[np.ndarray]) -> ReaderCost:
    pos = _positions(seg, r, inv)
    uniq = np.unique(pos)
    runs = int(1 + np.count_nonzero(np.diff(uniq) != 1)) if len(uniq) else 0
    in_order = r.sortable or bool(np.all(np.diff(pos) == 1))
    view = len(uniq) == len(pos) and runs == 1 and in_order
    return ReaderCost(r.name, len(pos), runs, view, 0 if view else len(pos) * r.bytes_per_channel)


def total_bytes(costs: Sequence[ReaderCost]) -> int:
    return sum(c.bytes for c in costs)


# ------------------------------------------------------------------------------------------------
# constraints: what a reader needs of each block to be contiguous
# ------------------------------------------------------------------------------------------------

START, END = -1, -2  # sentinels fixed at a block's ends


@dataclass
class _Need:
    sets: dict[int, frozenset[int]] = field(default_factory=dict)  # block -> slots (+ sentinels)
    feasible: bool = True


def _needs(seg: SegmentSpec, r: ReaderSpec) -> _Need:
    need = _Need()
    slots: dict[int, list[int]] = {}
    for b, s in r.reads:
        slots.setdefault(b, []).append(s)
    if not r.reads or len(set(r.reads)) != len(r.reads) or len(set(r.layout)) != len(r.layout):
        need.feasible = False  # a repeated channel is never a slice
        return need
    if not r.sortable:
        need.feasible = False  # its gather order is fixed; only a read already in order is a view
        return need
    touched = [i for i, b in enumerate(r.layout) if b in slots]
    first, last = touched[0], touched[-1]
    for i in range(first + 1, last):
        b = r.layout[i]
        if len(set(slots.get(b, ()))) != seg.sizes[b]:
            need.feasible = False  # a block in the middle of the span is not read whole
            return need
    for i in (first, last):
        b = r.layout[i]
        s = set(slots[b])
        if len(s) == seg.sizes[b]:
            continue  # read whole: contiguous in any order
        if first != last:
            s.add(END if i == first else START)
        need.sets[b] = frozenset(s)
    for b, s in need.sets.items():
        if not seg.free[b] and not _consecutive_in(list(range(seg.sizes[b])), s):
            need.feasible = False
    return need


def _consecutive_in(order: Sequence[int], s: frozenset[int] | set[int]) -> bool:
    seq = [START, *order, END]
    pos = sorted(i for i, x in enumerate(seq) if x in s)
    return pos[-1] - pos[0] + 1 == len(pos)


# ------------------------------------------------------------------------------------------------
# consecutive-ones with fixed ends
# ------------------------------------------------------------------------------------------------


def c1p_order(n: int, sets: Sequence[frozenset[int]], secondary: Sequence[frozenset[int]] = ()) -> list[int] | None:
    """An order of 0..n-1 in which every set (elements, START, END) is consecutive with START before
    and END after everything, or None. Inside each atom, channels are grouped by their membership in
    `secondary` (readers that will copy anyway) so those read few runs."""
    m = len(sets)
    elems = [START, *range(n), END]
    sig: dict[int, int] = {}
    for e in elems:
        sig[e] = sum(1 << j for j, s in enumerate(sets) if e in s)
    # atoms: START and END alone, the rest by signature
    atoms: dict[tuple[str, int], list[int]] = {("s", 0): [START], ("e", 0): [END]}
    for e in range(n):
        atoms.setdefault(("c", sig[e]), []).append(e)
    keys = list(atoms)
    if len(keys) > 2 * m + 3:  # more classes than m intervals can cut a line into (plus the ends)
        return None
    asig = [sig[atoms[k][0]] for k in keys]
    a_n = len(keys)
    i_start, i_end = 0, 1
    full = (1 << a_n) - 1
    dead: set[tuple[int, int]] = set()
    steps = [0]

    def union_sig(mask: int) -> int:
        u, i = 0, 0
        while mask:
            if mask & 1:
                u |= asig[i]
            mask >>= 1
            i += 1
        return u

    def dfs(placed: int, last: int, path: list[int]) -> list[int] | None:
        if placed == full:
            return path
        if (placed, last) in dead:
            return None
        steps[0] += 1
        if steps[0] > DFS_BUDGET:
            return None
        started = union_sig(placed)
        for a in range(a_n):
            if placed >> a & 1 or a == i_start or (a == i_end and placed | (1 << a) != full):
                continue
            rest = union_sig(full & ~placed & ~(1 << a))
            closing = asig[last] & ~asig[a]
            starting = asig[a] & ~asig[last]
            if closing & rest or starting & started:
                continue
            got = dfs(placed | (1 << a), a, [*path, a])
            if got is not None:
                return got
        dead.add((placed, last))
        return None

    found = dfs(1 << i_start, i_start, [i_start])
    if found is None:
        return None
    out: list[int] = []
    prev: int | None = None
    for a in found:
        chans = [e for e in atoms[keys[a]] if e >= 0]
        out += _chain_by_membership(chans, secondary, prev)
        if out:
            prev = out[-1]
    return out


def _chain_by_membership(chans: list[int], secondary: Sequence[frozenset[int]], prev: int | None) -> list[int]:
    """Channels grouped by membership in `secondary`, classes chained nearest-neighbour from `prev`'s."""
    if not secondary or len(chans) <= 1:
        return chans
    classes: dict[int, list[int]] = {}
    for c in chans:
        classes.setdefault(sum(1 << j for j, s in enumerate(secondary) if c in s), []).append(c)
    cur = sum(1 << j for j, s in enumerate(secondary) if prev in s) if prev is not None else 0
    out = []
    left = set(classes)
    while left:
        nxt = min(left, key=lambda k: (bin(k ^ cur).count("1"), k))
        out += classes[nxt]
        left.remove(nxt)
        cur = nxt
    return out


# ------------------------------------------------------------------------------------------------
# the planner
# ------------------------------------------------------------------------------------------------


def _orders_for(seg: SegmentSpec, needs: list[_Need], chosen: Sequence[int]) -> list[np.ndarray] | None:
    """Block orders that make every chosen reader contiguous, or None."""
    orders = []
    chosen_set = set(chosen)
    for b in range(len(seg.sizes)):
        sets = [needs[i].sets[b] for i in chosen if b in needs[i].sets]
        if not seg.free[b]:
            orders.append(np.arange(seg.sizes[b]))
            continue
        secondary = [
            frozenset(s for bb, s in r.reads if bb == b)
            for i, r in enumerate(seg.readers)
            if i not in chosen_set
        ]
        order = c1p_order(seg.sizes[b], sets, [s for s in secondary if s])
        if order is None:
            return None
        orders.append(np.asarray(order, dtype=np.int64))
    return orders


def plan(seg: SegmentSpec) -> list[np.ndarray]:
    """The block orders (new slot i holds old slot order[i]) with the fewest bytes copied. A split
    reader's pieces are planned as readers of their own (its concat's copy does not depend on the
    order)."""
    if any(r.pieces for r in seg.readers):
        parts = tuple(p for r in seg.readers for p in r.parts())
        return _plan(SegmentSpec(seg.name, seg.sizes, seg.free, parts), seg)
    return _plan(seg, seg)


def _plan(seg: SegmentSpec, whole: SegmentSpec) -> list[np.ndarray]:
    needs = [_needs(seg, r) for r in seg.readers]
    weight = [r.bytes_per_channel * len(r.reads) for r in seg.readers]
    cand = [i for i, n in enumerate(needs) if n.feasible and n.sets]
    if len(cand) <= EXACT_READERS:
        subsets = sorted(
            (c for k in range(len(cand), -1, -1) for c in itertools.combinations(cand, k)),
            key=lambda c: (-sum(weight[i] for i in c), len(c)),
        )
        for chosen in subsets:
            orders = _orders_for(seg, needs, chosen)
            if orders is not None:
                return orders
        raise AssertionError("the empty subset is always feasible")
    chosen = _improve(seg, needs, weight, cand, _greedy(seg, needs, weight, cand, []))
    best = _orders_for(seg, needs, chosen)
    assert best is not None
    if len(whole.readers) > UPSCALE_READERS:
        return best  # UPSCALE's path search is exponential in the readers: not run on huge segments
    theirs = upscale_order(whole)
    key = lambda o: (total_bytes(evaluate(whole, o)), sum(c.runs for c in evaluate(whole, o)))  # noqa: E731
    return best if key(best) <= key(theirs) else theirs


def _greedy(seg: SegmentSpec, needs: list[_Need], weight: list[int], cand: list[int], chosen: list[int]) -> list[int]:
    """`chosen` plus every other candidate, heaviest first, that keeps the families C1P."""
    chosen = list(chosen)
    for i in sorted((i for i in cand if i not in chosen), key=lambda i: -weight[i]):
        if _orders_for(seg, needs, [*chosen, i]) is not None:
            chosen.append(i)
    return chosen


def _improve(seg: SegmentSpec, needs: list[_Need], weight: list[int], cand: list[int], chosen: list[int]) -> list[int]:
    """Local improvement of a greedy choice: give up one chosen reader for one or two others that
    save more bytes together and fit with the rest, then refill greedily; repeat while the bytes
    saved grow (they strictly do, so it ends). At most LOCAL_TESTS C1P tests: each round tries the
    lightest chosen readers first and, for each, the heaviest replacements first, O(c * n^2) tests
    for c chosen of n readers."""
    tests = 0
    while tests < LOCAL_TESTS:
        saved = sum(weight[i] for i in chosen)
        rest = sorted((i for i in cand if i not in chosen), key=lambda i: -weight[i])
        swaps = [(i,) for i in rest] + list(itertools.combinations(rest, 2))
        better = None
        for out in sorted(chosen, key=lambda i: weight[i]):
            base = [i for i in chosen if i != out]
            for add in sorted(swaps, key=lambda a: -sum(weight[i] for i in a)):
                if sum(weight[i] for i in add) <= weight[out] or tests >= LOCAL_TESTS:
                    break
                tests += 1
                if _orders_for(seg, needs, [*base, *add]) is not None:
                    better = _greedy(seg, needs, weight, cand, [*base, *add])
                    break
            if better is not None:
                break
        if better is None or sum(weight[i] for i in better) <= saved:
            return chosen
        chosen = better
    return chosen


# ------------------------------------------------------------------------------------------------
# UPSCALE's heuristic (the baseline)
# ------------------------------------------------------------------------------------------------


def upscale_order(seg: SegmentSpec) -> list[np.ndarray]:
    """UPSCALE's reordering, block by block: `members[c]` are the slots reader c reads."""
    orders = []
    for b in range(len(seg.sizes)):
        if not seg.free[b]:
            orders.append(np.arange(seg.sizes[b]))
            continue
        members = [sorted({s for bb, s in r.reads if bb == b}) for r in seg.readers]
        members = [m for m in members if m]
        order = _upscale_block(members)
        rest = [s for s in range(seg.sizes[b]) if s not in set(order)]
        orders.append(np.asarray(order + rest, dtype=np.int64))
    return orders


def _upscale_block(members: list[list[int]]) -> list[int]:
    sets = [frozenset(m) for m in members]
    n = len(sets)
    # 1. nesting: a set inside another is its child (equal sets: the later is the child)
    parent: list[int | None] = [None] * n
    for a in range(n):
        best = None
        for b in range(n):
            if a != b and sets[a] <= sets[b] and (sets[a] != sets[b] or b < a):
                if best is None or len(sets[b]) < len(sets[best]):
                    best = b
        parent[a] = best
    children: dict[int, list[int]] = {i: [] for i in range(n)}
    for a, p in enumerate(parent):
        if p is not None:
            children[p].append(a)

    def emit(node: int, within: frozenset[int]) -> list[int]:
        out: list[int] = []
        for c in children[node]:
            out += [x for x in emit(c, within) if x not in out]
        return out + sorted(x for x in sets[node] & within if x not in out)

    top = [i for i in range(n) if parent[i] is None]
    # 2. overlap graph between top-level sets; 3. greedy cover by best induced paths
    adj = {a: [b for b in top if b != a and sets[a] & sets[b]] for a in top}
    covered: set[int] = set()
    paths: list[list[int]] = []
    while len(covered) < len(top):
        best_path: list[int] = []
        best_val = -1
        for s in top:
            if s in covered:
                continue
            stack = [[s]]
            while stack:
                path = stack.pop()
                val = sum(len(sets[x]) for x in path) - sum(
                    len(sets[x] & sets[y]) for x, y in zip(path, path[1:], strict=False)
                )
                if val > best_val:
                    best_val, best_path = val, path
                banned = set(path[:-1]) | {y for x in path[:-1] for y in adj[x]}
                for t in adj[path[-1]]:
                    if t not in covered and t not in path and t not in banned:
                        stack.append([*path, t])
        paths.append(best_path)
        covered |= set(best_path)
    # 4. emission: [shared with predecessor] + [exclusive] + [shared with successor]
    order: list[int] = []
    seen: set[int] = set()
    for path in paths:
        for k, x in enumerate(path):
            inner = emit(x, sets[x])
            prev = sets[path[k - 1]] if k > 0 else frozenset()
            nxt = sets[path[k + 1]] if k + 1 < len(path) else frozenset()
            parts = [[c for c in inner if c in prev], [c for c in inner if c not in prev and c not in nxt],
                     [c for c in inner if c in nxt and c not in prev]]
            for part in parts:
                for c in part:
                    if c not in seen:
                        seen.add(c)
                        order.append(c)
    return order
