"""Channel selection: which units of every coupling group to keep, from unit scores and a budget.

`select(coupling, scores, options, cost)` returns, for every group id, a boolean keep mask over the
group's units (True = kept). Groups that are not prunable, or that `keep_nodes` protects, keep all.

Budget (`SelectOptions`):

- ``channels``: the fraction of units to remove. ``local`` scope removes round(channels * size) units
  (half rounds up) from every prunable group; ``global`` scope ranks the units of all prunable groups
  together and removes the lowest `channels` fraction of all of them.
- ``target_macs`` / ``target_params`` (override `channels`): keep this fraction of the unpruned cost.
  The caller's `cost(keep) -> (macs, params)` measures the real pruned graph; the removal fraction
  (global) or the per-group ratio (local) is bisected until cost / cost(all kept) is within
  `TARGET_TOLERANCE` (relative) of the target, or as close as the granularity allows from below.
  With both targets, the binding one (the larger cost / target) is met and the other is over-met.

Per-group rules, applied after the budget says how many units a group should keep (K0):

- ``min_keep``: keep at least ceil(min_keep * size) units and at least 1 (and, wherever round_to
  applies, a positive multiple of it, so at least ``round_to``).
- ``bins``: every bins array of the group (unit -> bin, -1 = unconstrained) must keep the same
  number of units in every bin. One array with no free units: the top c units of every bin, the
  same c. Several arrays (a channel shuffle between two grouped convolutions gives two partitions of
  the same units), or free units: an exact 0/1 program (scipy's HiGHS `milp`) maximising the kept
  score under the balance constraints; for two partitions the constraint matrix is a bipartite
  incidence matrix, totally unimodular, so HiGHS solves it at the root.
- links (``coupling.links``: a grouped conv whose groups are filled by several coupling groups, such
  as ShuffleNet's over a concat): the linked groups keep the same count per bin, the smallest count
  at or above what any of them asks for; a linked group kept whole keeps the whole link.
- ``round_to``: the kept count is rounded *up* to a multiple of round_to, never above the group
  size (keeping the whole group is always allowed). With bins, only counts the bins can hold are
  candidates; if no multiple of round_to below the size is one, round_to is dropped for that group
  (noted) rather than leaving it unpruned.

The kept count is the smallest allowed count >= K0, so the rules only ever keep more than asked.

Global ranking uses `lamp_normalize` on every group's scores whatever the criterion: it is monotone
within a group (the same units are chosen inside a group) and rescales groups so that their largest
unit scores 1, which is what makes magnitudes of differently sized layers comparable. For scores that
are already LAMP (criterion "lamp") this applies LAMP twice: the order inside each group is unchanged,
only the cross-group trade-off shifts slightly. Inside a group the units are then picked by the
group's own scores.

Deterministic: ties in score are broken by unit index (the higher index is removed first, so equal
units keep a prefix), and across groups by group id (the higher id first). In the `milp` path ties are
broken as far as the solver's tolerances resolve them; HiGHS itself is deterministic.

Cost targets call `cost` at most `MAX_COST_EVALS` times (the unpruned evaluation included); masks
already measured are not measured again.

Notes on decisions (a group left unpruned because its bins cannot be balanced, a relaxed round_to,
a keep_nodes match) are logged at INFO and appended to `notes` when the caller passes a list.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from .coupling import Coupling, CouplingGroup, linked_to
from .importance import lamp_normalize

__all__ = ["TARGET_TOLERANCE", "MAX_COST_EVALS", "SelectOptions", "select"]

log = logging.getLogger(__name__)

TARGET_TOLERANCE = 0.02  # relative: |cost fraction / target - 1| <= 2%
MAX_COST_EVALS = 25  # calls of the caller's cost function per select(), the unpruned one included

Keep = dict[int, np.ndarray]
CostFn = Callable[[Keep], tuple[int, int]]


@dataclass(frozen=True)
class SelectOptions:
    # fraction of units to REMOVE (per group: local; of all prunable units: global); None: remove none
    channels: float | None = 0.5
    scope: str = "local"  # local | global
    round_to: int = 1  # kept unit counts rounded up to a multiple of this (groups with >= round_to units)
    min_keep: float = 0.1  # per-group minimum fraction of units kept (>= 1 unit, >= round_to when possible)
    target_macs: float | None = None  # keep this fraction of the original MACs (overrides channels)
    target_params: float | None = None  # keep this fraction of the original parameters (overrides channels)
    # regexes: a group with any member whose producing node, consumer node or value name fully
    # matches one of them is not pruned (a layer named here keeps its input and output channels)
    keep_nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.scope not in ("local", "global"):
            raise ValueError(f"SelectOptions.scope must be 'local' or 'global', got {self.scope!r}")
        if self.channels is not None and not 0.0 <= self.channels <= 1.0:
            raise ValueError(f"SelectOptions.channels is a fraction of units to remove in [0, 1], got {self.channels}")
        if self.round_to < 1:
            raise ValueError(f"SelectOptions.round_to must be >= 1, got {self.round_to}")
        if not 0.0 <= self.min_keep <= 1.0:
            raise ValueError(f"SelectOptions.min_keep is a fraction in [0, 1], got {self.min_keep}")
        for name in ("target_macs", "target_params"):
            t = getattr(self, name)
            if t is not None and not 0.0 < t <= 1.0:
                raise ValueError(
                    f"SelectOptions.{name} is the fraction of the original cost to keep, in (0, 1], got {t}"
                )
        for pattern in self.keep_nodes:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"SelectOptions.keep_nodes: bad regex {pattern!r}: {e}") from None

    @property
    def targets(self) -> tuple[tuple[int, float], ...]:
        """(index into cost()'s (macs, params), target fraction) for every target set."""
        return tuple((i, t) for i, t in enumerate((self.target_macs, self.target_params)) if t is not None)


def select(
    coupling: Coupling,
    scores: dict[int, np.ndarray],
    options: SelectOptions,
    cost: CostFn | None = None,
    *,
    notes: list[str] | None = None,
) -> Keep:
    """Keep masks for every group id (see the module docstring)."""
    sel = _Selector(coupling, scores, options, notes)
    if not options.targets:
        return sel.masks(options.channels or 0.0)
    if cost is None:
        raise ValueError(
            "target_macs / target_params need a cost function: select(..., cost=fn(keep) -> (macs, params))"
        )
    keep, met = _meet_target(sel, options, cost)
    if not met and options.scope == "local":
        # every group crosses its rounding step at the same fraction, so local steps can be coarser
        # than the tolerance; ranking across groups staggers the steps
        options = replace(options, scope="global")
        keep, met = _meet_target(_Selector(coupling, scores, options, notes), options, cost)
        state = "met" if met else "not met"
        sel.note(f"local steps were too coarse for the cost target: ranked globally instead ({state})")
    return keep


# ------------------------------------------------------------------------------------------------
# Per-group plans
# ------------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What a group allows: its scores, distinct bins partitions and the kept counts it can take."""

    group: CouplingGroup
    scores: np.ndarray
    bins: list[np.ndarray]
    allowed: np.ndarray  # ascending kept counts; the last is always the group size
    cache: dict[int, np.ndarray | None] = field(default_factory=dict)  # kept count -> mask (None: infeasible)

    @property
    def size(self) -> int:
        return self.group.size


class _Selector:
    def __init__(
        self, coupling: Coupling, scores: dict[int, np.ndarray], options: SelectOptions, notes: list[str] | None
    ) -> None:
        self.options = options
        self.notes = notes
        self.groups = coupling.groups
        self.plans: dict[int, _Plan] = {}
        patterns = [re.compile(p) for p in options.keep_nodes]
        for g in coupling.groups:
            if not g.prunable:
                continue
            hit = _keep_match(g, patterns)
            if hit is not None:
                self.note(f"group {g.id} {g.name!r}: kept whole, keep_nodes pattern /{hit[0]}/ matches {hit[1]!r}")
                continue
            s = np.asarray(scores.get(g.id, ()), dtype=np.float64).reshape(-1)
            if s.shape != (g.size,):
                raise ValueError(f"scores for group {g.id} {g.name!r}: expected {g.size} unit scores, got {s.size}")
            if not np.all(np.isfinite(s)):
                raise ValueError(f"scores for group {g.id} {g.name!r} are not all finite")
            bins = _distinct_partitions(g)
            self.plans[g.id] = _Plan(g, s, bins, self._allowed(g, bins))
        # linked groups keep the same count per bin (coupling.links): a partner kept whole keeps
        # the whole link
        whole = [g.id for g in coupling.groups if g.id not in self.plans]
        for g in linked_to(coupling.links, whole):
            self.plans.pop(g)
            self.note(f"group {g} {self.groups[g].name!r}: kept whole, its grouped channels are linked to a group "
                      "that is kept whole")
        self.links = [link for link in coupling.links if all(g in self.plans for g, _ in link)]
        # global ranking: every prunable unit, least important first (see the module docstring)
        ids = sorted(self.plans)
        if ids:
            vals = np.concatenate([lamp_normalize(self.plans[i].scores) for i in ids])
            gids = np.concatenate([np.full(self.plans[i].size, i) for i in ids])
            uids = np.concatenate([np.arange(self.plans[i].size) for i in ids])
            self.order_gid = gids[np.lexsort((-uids, -gids, vals))]
        else:
            self.order_gid = np.zeros(0, dtype=np.int64)

    def note(self, text: str) -> None:
        log.info(text)
        if self.notes is not None and text not in self.notes:
            self.notes.append(text)

    # -------------------------------------------------------------- counts

    def _allowed(self, g: CouplingGroup, bins: list[np.ndarray]) -> np.ndarray:
        n, o = g.size, self.options
        # the min_keep floor; a positive multiple of round_to is >= round_to, which gives the
        # "at least round_to" floor wherever round_to applies
        k_min = min(n, max(1, math.ceil(o.min_keep * n - 1e-9)))
        counts = np.arange(k_min, n)
        ok = np.ones(len(counts), dtype=bool)
        for b in bins:
            ok &= _bins_can_hold(b, counts)
        if o.round_to > 1 and n >= o.round_to:
            mult = ok & (counts % o.round_to == 0)
            if mult.any() or not bins:
                ok = mult
            elif ok.any():
                self.note(
                    f"group {g.id} {g.name!r}: its bins admit no kept count that is a multiple of "
                    f"round_to={o.round_to} below its size {n}; round_to is not applied to it"
                )
        return np.append(counts[ok], n)

    # -------------------------------------------------------------- masks

    def masks(self, x: float) -> Keep:
        """Keep masks at removal fraction `x` (global: of all prunable units; local: of every group)."""
        if self.options.scope == "global":
            removed = np.bincount(self.order_gid[: _round_half_up(x * len(self.order_gid))], minlength=len(self.groups))
            want = {i: p.size - int(removed[i]) for i, p in self.plans.items()}
        else:
            want = {i: p.size - _round_half_up(x * p.size) for i, p in self.plans.items()}
        keep = self._linked(want) if self.links else {}
        for g in self.groups:
            plan = self.plans.get(g.id)
            if g.id not in keep:
                keep[g.id] = np.ones(g.size, dtype=bool) if plan is None else self._mask(plan, want[g.id])
        return keep

    def _linked(self, want: dict[int, int]) -> Keep:
        """Masks of the linked groups: every link keeps the same count per bin in each of its groups,
        the smallest at or above what any of them wants. A group may sit in several links (ShuffleNet's
        stream feeds grouped convs of several widths), so counts are raised until every link agrees
        and every group's bins take its count; counts only grow and a whole group always fits."""
        want = dict(want)
        linked = sorted({g for link in self.links for g, _ in link})
        keep: Keep = {}
        changed = True
        while changed:
            changed = False
            for link in self.links:
                c = max(-(-want[g] // nb) for g, nb in link)
                for g, nb in link:
                    changed |= want[g] != c * nb
                    want[g] = c * nb
            for g in linked:
                keep[g] = self._mask(self.plans[g], want[g])
                k = int(keep[g].sum())
                changed |= k != want[g]
                want[g] = k
        return keep

    def _mask(self, plan: _Plan, k0: int) -> np.ndarray:
        """The group's mask at the smallest allowed kept count >= k0 that its bins can balance."""
        i = int(np.searchsorted(plan.allowed, k0, side="left"))
        while True:
            k = int(plan.allowed[i])
            if k not in plan.cache:
                plan.cache[k] = _choose(plan, k)
            mask = plan.cache[k]
            if mask is not None:
                return mask.copy()  # the caller may edit its masks; the cache must not change
            # a count the bins pass the counting test for but cannot balance: keep more
            self.note(
                f"group {plan.group.id} {plan.group.name!r}: bins cannot be balanced with {k} units kept; "
                f"trying {int(plan.allowed[i + 1])}"
            )
            i += 1


def _round_half_up(v: float) -> int:
    return int(math.floor(v + 0.5 + 1e-9))


def _keep_match(g: CouplingGroup, patterns: list[re.Pattern[str]]) -> tuple[str, str] | None:
    """(pattern, name) of the first keep_nodes pattern that fully matches a name around the group."""
    if not patterns:
        return None
    for m in g.members:
        v = m.value
        names = [v.name]
        if v.producer is not None:
            names.append(v.producer.name)
        names += [node.name for node, _ in v.uses]
        for name in names:
            for p in patterns:
                if name and p.fullmatch(name):
                    return p.pattern, name
    return None


def _distinct_partitions(g: CouplingGroup) -> list[np.ndarray]:
    """The group's bins arrays, relabelled 0.. in order of first appearance, duplicates dropped
    (two grouped convolutions over the same channels give the same partition twice)."""
    out: dict[bytes, np.ndarray] = {}
    for b in g.bins:
        b = np.asarray(b, dtype=np.int64)
        canon = np.full(len(b), -1, dtype=np.int64)
        present = b >= 0
        if present.any():
            _, first, inverse = np.unique(b[present], return_index=True, return_inverse=True)
            rank = np.argsort(np.argsort(first))  # bin labels in order of first appearance
            canon[present] = rank[inverse]
        if canon.max() >= 1:  # zero or one bin constrains nothing
            out.setdefault(canon.tobytes(), canon)
    return list(out.values())


def _bins_can_hold(b: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """For each kept count K: is there a per-bin count c with K - nbins * c units left to the
    unconstrained units? (necessary, and sufficient for one partition)"""
    sizes = np.bincount(b[b >= 0])
    nb, cmax, free = len(sizes), int(sizes.min()), int((b < 0).sum())
    lo = np.maximum(0, -((free - counts) // nb))  # ceil((K - free) / nb)
    hi = np.minimum(cmax, counts // nb)
    return lo <= hi


def _importance_order(scores: np.ndarray) -> np.ndarray:
    """Unit indices, least important first; among equal scores the higher index comes first."""
    idx = np.arange(len(scores))
    return np.lexsort((-idx, scores))


def _choose(plan: _Plan, k: int) -> np.ndarray | None:
    """The kept units of one group at kept count k, or None if its bins cannot be balanced at k."""
    n, s = plan.size, plan.scores
    mask = np.zeros(n, dtype=bool)
    if k >= n:
        return np.ones(n, dtype=bool)
    if not plan.bins:
        mask[_importance_order(s)[n - k :]] = True
        return mask
    if len(plan.bins) == 1 and (plan.bins[0] >= 0).all():
        b = plan.bins[0]
        sizes = np.bincount(b)
        if np.all(sizes == sizes[0]) and k % len(sizes) == 0:
            c = k // len(sizes)
            for j in range(len(sizes)):
                members = np.flatnonzero(b == j)
                mask[members[_importance_order(s[members])[len(members) - c :]]] = True
            return mask
    return _choose_milp(plan, k)


def _choose_milp(plan: _Plan, k: int) -> np.ndarray | None:
    """Maximise the kept score with k units kept and equal counts per bin in every partition."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    n, s = plan.size, plan.scores
    a = len(plan.bins)
    rows, cols, vals = [], [], []
    r = 0
    for i, b in enumerate(plan.bins):
        for j in range(int(b.max()) + 1):
            members = np.flatnonzero(b == j)
            rows += [r] * (len(members) + 1)
            cols += members.tolist() + [n + i]  # sum of x over the bin - c_i = 0
            vals += [1.0] * len(members) + [-1.0]
            r += 1
    rows += [r] * n
    cols += list(range(n))
    vals += [1.0] * n
    A = coo_matrix((vals, (rows, cols)), shape=(r + 1, n + a)).tocsr()
    lb = np.zeros(r + 1)
    ub = np.zeros(r + 1)
    lb[r] = ub[r] = k
    # scores scaled to [0, 1] plus a tie-break that prefers the lower index among equal scores
    scale = float(np.abs(s).max()) or 1.0
    w = s / scale + 1e-6 * (1.0 - np.arange(n) / n)
    c = np.concatenate([-w, np.zeros(a)])
    upper = np.concatenate([np.ones(n), [float(np.bincount(b[b >= 0]).min()) for b in plan.bins]])
    res = milp(
        c,
        constraints=LinearConstraint(A, lb, ub),
        integrality=np.ones(n + a),
        bounds=Bounds(np.zeros(n + a), upper),
        options={"mip_rel_gap": 0.0, "time_limit": 30.0},
    )
    if res.x is None or res.status not in (0, 1):
        return None
    mask = np.round(res.x[:n]).astype(bool)
    if int(mask.sum()) != k or not _balanced(plan.bins, mask):
        return None  # a time-limited or numerically loose answer is not used
    return mask


def _balanced(bins: list[np.ndarray], mask: np.ndarray) -> bool:
    for b in bins:
        counts = np.bincount(b[(b >= 0) & mask], minlength=int(b.max()) + 1)
        if not np.all(counts == counts[0]):
            return False
    return True


# ------------------------------------------------------------------------------------------------
# Cost targets
# ------------------------------------------------------------------------------------------------


def _meet_target(sel: _Selector, options: SelectOptions, cost: CostFn) -> tuple[Keep, bool]:
    """Bisect the removal fraction until the binding cost fraction is within tolerance of its target.

    The measure is r = max over targets of (cost fraction / target): r = 1 is on target, r > 1 over
    budget. r falls as the removal fraction grows (more units removed, never fewer), so bisection
    applies; masks already measured are not measured again.
    """
    targets = options.targets
    names = ("MACs", "params")
    measured: dict[bytes, tuple[float, tuple[float, ...]]] = {}  # masks -> (r, cost fractions)

    def key(keep: Keep) -> bytes:
        return b"|".join(np.packbits(keep[g.id]).tobytes() for g in sel.groups)

    full = {g.id: np.ones(g.size, dtype=bool) for g in sel.groups}
    base = cost(full)
    for i, _ in targets:
        if base[i] <= 0:
            raise ValueError(f"cannot target a fraction of the {names[i]}: the unpruned graph has {base[i]}")
    measured[key(full)] = (max(1.0 / t for _, t in targets), (1.0, 1.0))

    def measure(keep: Keep) -> float:
        k = key(keep)
        if k not in measured:
            if len(measured) >= MAX_COST_EVALS:  # `measured` holds the base evaluation too
                raise _OutOfEvals
            got = cost(keep)
            fracs = (got[0] / base[0], got[1] / base[1])
            measured[k] = (max(fracs[i] / t for i, t in targets), fracs)
        return measured[k][0]

    def ok(r: float) -> bool:
        return abs(r - 1.0) <= TARGET_TOLERANCE

    def describe(keep: Keep) -> str:
        fracs = measured[key(keep)][1]
        return ", ".join(f"{names[i]} {fracs[i]:.4f}" for i, _ in targets)

    asked = ", ".join(f"{names[i]} {t:g}" for i, t in targets)
    if ok(measure(full)):
        return full, True
    most = sel.masks(1.0)  # as much as the per-group rules allow
    r_most = measure(most)
    if r_most > 1.0 + TARGET_TOLERANCE:
        raise ValueError(
            f"cost target unreachable: {asked} of the original asked, but the most pruning allowed "
            f"(min_keep={options.min_keep}, round_to={options.round_to}, keep_nodes, blocked groups) keeps "
            f"{describe(most)}; lower min_keep or round_to, protect fewer groups, or raise the target"
        )
    if ok(r_most):
        return most, True
    lo, hi = 0.0, 1.0
    best, best_r = most, r_most  # the closest from below so far (r <= 1)
    try:
        for _ in range(60):  # the fraction's resolution; cost evaluations are capped by measure()
            mid = 0.5 * (lo + hi)
            keep = sel.masks(mid)
            r = measure(keep)
            if ok(r):
                return keep, True
            if r > 1.0:
                lo = mid
            else:
                hi = mid
                if r > best_r:
                    best, best_r = keep, r
            if hi - lo < 1e-9:
                break
    except _OutOfEvals:
        pass
    sel.note(
        f"cost target {asked} not met within {TARGET_TOLERANCE:.0%}: the closest from below keeps "
        f"{describe(best)} (the units are too coarse)"
    )
    return best, False


class _OutOfEvals(Exception):
    pass
