"""Unit importance criteria and channel selection: hand-checked small cases, zoo groups with bins,
and cost targets met with a fake cost function."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from graphprune.passes.analysis.coupling import Coupling, CouplingGroup, analyze
from graphprune.passes.analysis.importance import CRITERIA, lamp_normalize, unit_scores
from graphprune.passes.analysis.select import MAX_COST_EVALS, TARGET_TOLERANCE, SelectOptions, select
from torch import nn
from zoo import ZOO

import graphprune as gp

# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------


class TinyCNN(nn.Module):
    """conv1 -> bn1 -> relu -> conv2 -> relu -> mean -> fc: two prunable groups, one with a BN."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def tiny():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TinyCNN().eval()
        with torch.no_grad():  # a BN that is not the identity, with gammas of both signs
            model.bn1.weight.uniform_(-1, 1)
            model.bn1.bias.uniform_(-1, 1)
            model.bn1.running_mean.uniform_(-1, 1)
            model.bn1.running_var.uniform_(0.5, 2)
        x = torch.randn(2, 3, 8, 8)
    graph = gp.trace(model, (x,))
    coupling = analyze(graph)
    return model, x, graph, coupling


def group_with(coupling: Coupling, value: str, axes: tuple[int, ...]) -> CouplingGroup:
    for g in coupling.groups:
        if any(m.value.name == value and m.axes == axes for m in g.members):
            return g
    raise AssertionError(f"no group has %{value} on axes {axes}")


def p(model: nn.Module, name: str) -> np.ndarray:
    return dict(model.named_parameters())[name].detach().double().numpy()


def synthetic(*sizes: int, bins: dict[int, tuple[np.ndarray, ...]] | None = None) -> Coupling:
    """A coupling of bare prunable groups (no members): enough for select, which reads sizes and bins."""
    bins = bins or {}
    groups = tuple(CouplingGroup(i, n, (), None, bins.get(i, ()), (), f"g{i}") for i, n in enumerate(sizes))
    return Coupling(groups, np.zeros(0, np.int64), np.zeros(0, np.int64), {})


def kept(keep: dict[int, np.ndarray]) -> list[int]:
    return [int(keep[i].sum()) for i in sorted(keep)]


# ------------------------------------------------------------------------------------------------
# importance
# ------------------------------------------------------------------------------------------------


def test_l1_l2_match_hand_sums(tiny):
    model, _, graph, coupling = tiny
    g1 = group_with(coupling, "conv1.weight", (0,))
    g2 = group_with(coupling, "conv2.weight", (0,))
    assert g1.prunable and g2.prunable and (g1.size, g2.size) == (8, 6)
    w1, b1, gamma, beta = (p(model, n) for n in ("conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias"))
    w2, b2, fc = p(model, "conv2.weight"), p(model, "conv2.bias"), p(model, "fc.weight")
    # conv1's output channel u lives in conv1's filter u, its bias, the BN affine pair and conv2's
    # input slice u; BN running statistics are not weights
    l1_1 = np.abs(w1).sum((1, 2, 3)) + np.abs(b1) + np.abs(gamma) + np.abs(beta) + np.abs(w2).sum((0, 2, 3))
    sq_1 = (w1**2).sum((1, 2, 3)) + b1**2 + gamma**2 + beta**2 + (w2**2).sum((0, 2, 3))
    l1_2 = np.abs(w2).sum((1, 2, 3)) + np.abs(b2) + np.abs(fc).sum(0)
    sq_2 = (w2**2).sum((1, 2, 3)) + b2**2 + (fc**2).sum(0)
    l1, l2 = unit_scores(graph, coupling, "l1"), unit_scores(graph, coupling, "l2")
    np.testing.assert_allclose(l1[g1.id], l1_1, rtol=1e-6)
    np.testing.assert_allclose(l2[g1.id], np.sqrt(sq_1), rtol=1e-6)
    np.testing.assert_allclose(l1[g2.id], l1_2, rtol=1e-6)
    np.testing.assert_allclose(l2[g2.id], np.sqrt(sq_2), rtol=1e-6)
    # every group gets float64 scores, one per unit, blocked ones included
    for crit in ("l1", "l2", "bn", "random", "lamp"):
        s = unit_scores(graph, coupling, crit)
        assert set(s) == {g.id for g in coupling.groups}
        assert all(s[g.id].shape == (g.size,) and s[g.id].dtype == np.float64 for g in coupling.groups)


def test_l1_matches_member_sums(tiny):
    """The same numbers from the coupling's own members (what the criterion is defined over)."""
    _, _, graph, coupling = tiny
    l1 = unit_scores(graph, coupling, "l1")
    for g in coupling.groups:
        want = np.zeros(g.size)
        for m in g.weights():
            if m.value.name.endswith(("running_mean", "running_var")):
                continue
            a = np.abs(np.asarray(m.value.data, np.float64))
            red = a.sum(tuple(i for i in range(a.ndim) if i not in m.axes))
            for e, u in np.ndenumerate(m.units):
                if u >= 0:
                    want[u] += red[e]
        # float32 weights are summed in float32 (pairwise) before the float64 per-unit scores
        np.testing.assert_allclose(l1[g.id], want, rtol=1e-6)


def test_bn_picks_gammas_and_falls_back_to_l2(tiny):
    model, _, graph, coupling = tiny
    g1 = group_with(coupling, "conv1.weight", (0,))
    g2 = group_with(coupling, "conv2.weight", (0,))
    bn, l2 = unit_scores(graph, coupling, "bn"), unit_scores(graph, coupling, "l2")
    np.testing.assert_allclose(bn[g1.id], np.abs(p(model, "bn1.weight")), rtol=1e-7)
    np.testing.assert_array_equal(bn[g2.id], l2[g2.id])  # no BN in conv2's channel space


def test_taylor_matches_autograd_on_the_original_model(tiny):
    model, x, graph, coupling = tiny
    with pytest.raises(ValueError, match="taylor needs calibration inputs"):
        unit_scores(graph, coupling, "taylor")
    scores = unit_scores(graph, coupling, "taylor", calib=[x.numpy()])
    for g in coupling.groups:
        if g.prunable:  # (a channel the ReLU always zeroes gets no gradient, so not every unit)
            assert np.count_nonzero(scores[g.id]) >= g.size // 2, g
    # |w * dL/dw| with L = 0.5 * mean(out^2), computed on the torch model the graph came from
    model.zero_grad()
    with torch.enable_grad():
        (0.5 * model(x).pow(2).mean()).backward()
    prod = {n: (q.detach() * q.grad).abs().double().numpy() for n, q in model.named_parameters()}
    g1 = group_with(coupling, "conv1.weight", (0,))
    g2 = group_with(coupling, "conv2.weight", (0,))
    want1 = (
        prod["conv1.weight"].sum((1, 2, 3))
        + prod["conv1.bias"]
        + prod["bn1.weight"]
        + prod["bn1.bias"]
        + prod["conv2.weight"].sum((0, 2, 3))
    )
    want2 = prod["conv2.weight"].sum((1, 2, 3)) + prod["conv2.bias"] + prod["fc.weight"].sum(0)
    np.testing.assert_allclose(scores[g1.id], want1, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(scores[g2.id], want2, rtol=1e-4, atol=1e-9)


def test_random_is_seeded_and_unknown_criterion_fails(tiny):
    _, _, graph, coupling = tiny
    a = unit_scores(graph, coupling, "random", seed=3)
    b = unit_scores(graph, coupling, "random", seed=3)
    c = unit_scores(graph, coupling, "random", seed=4)
    assert all(np.array_equal(a[i], b[i]) for i in a)
    assert not all(np.array_equal(a[i], c[i]) for i in a)
    assert set(CRITERIA) == {"l1", "l2", "bn", "taylor", "random", "lamp"}
    with pytest.raises(ValueError, match="unknown importance criterion"):
        unit_scores(graph, coupling, "fpgm")


def test_lamp_formula():
    # squares 1, 4, 9: lamp = 1/14, 4/13, 9/9
    np.testing.assert_allclose(lamp_normalize(np.array([1.0, 2.0, 3.0])), [1 / 14, 4 / 13, 1.0])
    np.testing.assert_allclose(lamp_normalize(np.array([3.0, 1.0, 2.0])), [1.0, 1 / 14, 4 / 13])
    # ties count each other in the denominator, so tied units score the same
    np.testing.assert_allclose(lamp_normalize(np.array([2.0, 2.0, 1.0])), [0.5, 0.5, 1 / 9])
    np.testing.assert_array_equal(lamp_normalize(np.zeros(3)), np.zeros(3))
    assert lamp_normalize(np.zeros(0)).shape == (0,)
    # scale-free and order-preserving
    s = np.random.default_rng(0).random(20)
    np.testing.assert_allclose(lamp_normalize(1e3 * s), lamp_normalize(s))
    assert np.array_equal(np.argsort(lamp_normalize(s)), np.argsort(s))


def test_lamp_criterion_is_normalised_l2(tiny):
    _, _, graph, coupling = tiny
    lamp, l2 = unit_scores(graph, coupling, "lamp"), unit_scores(graph, coupling, "l2")
    for g in coupling.groups:
        np.testing.assert_allclose(lamp[g.id], lamp_normalize(l2[g.id]))
        assert lamp[g.id].max() == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------
# selection: budgets and per-group rules
# ------------------------------------------------------------------------------------------------


def test_local_removes_round_r_times_size_lowest():
    rng = np.random.default_rng(1)
    sizes = (10, 7, 16, 2)
    coupling = synthetic(*sizes)
    scores = {i: rng.random(n) for i, n in enumerate(sizes)}
    keep = select(coupling, scores, SelectOptions(channels=0.3, min_keep=0.0))
    for i, n in enumerate(sizes):
        r = round(0.3 * n)  # 3, 2, 5, 1 (no halves here)
        assert int((~keep[i]).sum()) == r
        removed = np.flatnonzero(~keep[i])
        assert set(removed) == set(np.argsort(scores[i])[:r]), i


def test_local_on_a_traced_model_removes_the_lowest():
    e = ZOO["resnet_bottleneck"]
    graph = gp.trace(e.build(), e.example_inputs())
    coupling = analyze(graph)
    scores = unit_scores(graph, coupling, "l1")
    keep = select(coupling, scores, SelectOptions(channels=0.25, min_keep=0.0))
    pruned = 0
    for g in coupling.groups:
        if not g.prunable:
            assert keep[g.id].all()
            continue
        r = math.floor(0.25 * g.size + 0.5)
        assert int((~keep[g.id]).sum()) == r
        assert scores[g.id][~keep[g.id]].max() <= scores[g.id][keep[g.id]].min()
        pruned += r > 0
    assert pruned > 5


def test_ties_keep_the_lower_indices_and_selection_is_deterministic():
    coupling = synthetic(8)
    keep = select(coupling, {0: np.ones(8)}, SelectOptions(channels=0.5, min_keep=0.0))
    assert keep[0].tolist() == [True] * 4 + [False] * 4
    keep = select(coupling, {0: np.ones(8)}, SelectOptions(channels=0.5, min_keep=0.0, scope="global"))
    assert keep[0].tolist() == [True] * 4 + [False] * 4


def test_global_prefers_groups_with_smaller_normalised_scores():
    flat = np.ones(8)  # every unit as important as the others: LAMP 1/8 each
    steep = 2.0 ** np.arange(8)  # a few units carry the group: the small ones have tiny LAMP scores
    coupling = synthetic(8, 8)
    opts = SelectOptions(channels=0.25, scope="global", min_keep=0.0)
    for scale_flat, scale_steep in [(1.0, 1.0), (1e-6, 1.0), (1.0, 1e3)]:
        keep = select(coupling, {0: scale_flat * flat, 1: scale_steep * steep}, opts)
        # 4 of 16 units go, all from the steep group, whatever the raw magnitudes of the groups
        assert kept(keep) == [8, 4]
        assert keep[1].tolist() == [False] * 4 + [True] * 4
    # local scope treats the groups alike
    keep = select(coupling, {0: flat, 1: steep}, SelectOptions(channels=0.25, min_keep=0.0))
    assert kept(keep) == [6, 6]


def test_global_fraction_counts_all_prunable_units():
    rng = np.random.default_rng(2)
    coupling = synthetic(20, 30, 50)
    scores = {i: rng.random(g.size) for i, g in enumerate(coupling.groups)}
    keep = select(coupling, scores, SelectOptions(channels=0.4, scope="global", min_keep=0.0))
    assert sum(kept(keep)) == 100 - 40


def test_round_to():
    coupling = synthetic(10, 6, 32)
    scores = {i: np.arange(g.size, dtype=float) for i, g in enumerate(coupling.groups)}
    keep = select(coupling, scores, SelectOptions(channels=0.5, round_to=4, min_keep=0.0))
    # 10: keep 5 -> 8; 6: keep 3 -> 4; 32: keep 16
    assert kept(keep) == [8, 4, 16]
    keep = select(coupling, scores, SelectOptions(channels=0.2, round_to=8, min_keep=0.0))
    # 10: keep 8, a multiple; 6 < round_to: keep 5 as asked; 32: keep 26 -> the next multiple of 8
    # is the whole group
    assert kept(keep) == [8, 5, 32]
    # the round-up keeps the best units
    assert keep[0].tolist() == [False] * 2 + [True] * 8
    e = ZOO["resnet_bottleneck"]
    graph = gp.trace(e.build(), e.example_inputs())
    coupling = analyze(graph)
    scores = unit_scores(graph, coupling, "l2")
    for scope in ("local", "global"):
        keep = select(coupling, scores, SelectOptions(channels=0.6, round_to=8, scope=scope))
        for g in coupling.groups:
            k = int(keep[g.id].sum())
            assert k == g.size or k % 8 == 0, (scope, g, k)
            if g.prunable and g.size >= 8:
                assert k >= 8


def test_min_keep():
    coupling = synthetic(16, 10, 3)
    scores = {i: np.arange(g.size, dtype=float) for i, g in enumerate(coupling.groups)}
    keep = select(coupling, scores, SelectOptions(channels=0.95, min_keep=0.25))
    assert kept(keep) == [4, 3, 1]  # ceil(0.25 * n), at least one
    keep = select(coupling, scores, SelectOptions(channels=1.0, scope="global", min_keep=0.25))
    assert kept(keep) == [4, 3, 1]
    keep = select(coupling, scores, SelectOptions(channels=1.0, min_keep=0.0))
    assert kept(keep) == [1, 1, 1]  # never an empty group
    keep = select(coupling, scores, SelectOptions(channels=1.0, min_keep=0.0, round_to=4))
    assert kept(keep) == [4, 4, 1]  # at least round_to when the group has that many


def test_unprunable_groups_keep_everything():
    groups = (
        CouplingGroup(0, 8, (), "model input %x"),
        CouplingGroup(1, 1, ()),
        CouplingGroup(2, 8, ()),
    )
    coupling = Coupling(groups, np.zeros(0, np.int64), np.zeros(0, np.int64), {})
    keep = select(coupling, {0: np.arange(8.0), 1: np.ones(1), 2: np.arange(8.0)}, SelectOptions(channels=0.5))
    assert kept(keep) == [8, 1, 4]
    assert select(coupling, {2: np.arange(8.0)}, SelectOptions(channels=None))[2].all()


def test_keep_nodes_leaves_matching_groups_whole():
    e = ZOO["resnet_bottleneck"]
    graph = gp.trace(e.build(), e.example_inputs())
    coupling = analyze(graph)
    scores = unit_scores(graph, coupling, "l2")
    notes: list[str] = []
    keep = select(coupling, scores, SelectOptions(channels=0.5, keep_nodes=(r"layer1\.0\.conv2",)), notes=notes)
    out = group_with(coupling, "layer1.0.conv2.weight", (0,))  # conv2's output channels
    inp = group_with(coupling, "layer1.0.conv2.weight", (1,))  # and its input channels
    assert keep[out.id].all() and keep[inp.id].all()
    assert any("'layer1.0.conv2'" in n for n in notes)
    others = [g for g in coupling.groups if g.prunable and g.id not in (out.id, inp.id)]
    assert others and all(int(keep[g.id].sum()) == g.size - round(0.5 * g.size) for g in others)
    # a pattern must match a whole name: a prefix alone keeps nothing
    keep = select(coupling, scores, SelectOptions(channels=0.5, keep_nodes=(r"layer1\.0\.conv",)))
    assert not keep[out.id].all()


def test_bad_options_and_scores():
    with pytest.raises(ValueError, match="scope"):
        SelectOptions(scope="layer")
    with pytest.raises(ValueError, match="channels"):
        SelectOptions(channels=1.5)
    with pytest.raises(ValueError, match="bad regex"):
        SelectOptions(keep_nodes=("(",))
    with pytest.raises(ValueError, match="expected 8 unit scores"):
        select(synthetic(8), {0: np.ones(7)}, SelectOptions())
    with pytest.raises(ValueError, match="need a cost function"):
        select(synthetic(8), {0: np.ones(8)}, SelectOptions(target_macs=0.5))


# ------------------------------------------------------------------------------------------------
# bins
# ------------------------------------------------------------------------------------------------


def assert_bins_balanced(coupling: Coupling, keep: dict[int, np.ndarray]) -> int:
    """Every bins array of every group keeps equally many units per bin; returns how many binned
    groups were actually pruned."""
    pruned = 0
    for g in coupling.groups:
        for b in g.bins:
            sel = (b >= 0) & keep[g.id]
            counts = np.bincount(b[sel], minlength=int(b.max()) + 1)
            assert np.all(counts == counts[0]), (g, b, keep[g.id], counts)
        pruned += bool(g.bins) and not keep[g.id].all()
    return pruned


# a channel shuffle between two grouped convs: unit u sits in bin u // 3 of one conv and in bin
# SHUFFLED[u] of the other (the partition shufflenet's gconv1 groups have)
BLOCKS = np.arange(12) // 3
SHUFFLED = np.array([0, 1, 2, 0, 1, 3, 0, 2, 3, 1, 2, 3])


def test_two_partitions_are_balanced_and_optimal():
    rng = np.random.default_rng(5)
    scores = rng.random(12)
    coupling = synthetic(12, bins={0: (BLOCKS, BLOCKS, SHUFFLED)})
    keep = select(coupling, {0: scores}, SelectOptions(channels=0.5, min_keep=0.0))
    # 6 kept is not a multiple of the 4 bins: the next count the bins hold is 8, two per bin
    assert kept(keep) == [8]
    assert assert_bins_balanced(coupling, keep) == 1
    best = max(
        (c for c in itertools.combinations(range(12), 8)
         if all(np.all(np.bincount(b[list(c)], minlength=4) == 2) for b in (BLOCKS, SHUFFLED))),
        key=lambda c: scores[list(c)].sum(),
    )  # fmt: skip
    assert sorted(np.flatnonzero(keep[0])) == sorted(best)
    keep = select(coupling, {0: scores}, SelectOptions(channels=0.8, min_keep=0.0))
    assert kept(keep) == [4] and assert_bins_balanced(coupling, keep) == 1


def test_one_partition_keeps_the_top_per_bin_and_round_to():
    scores = np.array([5, 4, 3, 2, 1, 0, 10, 11, 12, 13, 14, 15], dtype=float)
    coupling = synthetic(12, bins={0: (np.arange(12) // 6,)})
    keep = select(coupling, {0: scores}, SelectOptions(channels=0.5, min_keep=0.0))
    # the best 6 overall are all in bin 1; balanced: the best 3 of each bin
    assert np.flatnonzero(keep[0]).tolist() == [0, 1, 2, 9, 10, 11]
    # round_to=4 with 2 bins: kept counts 8 (4 per bin)
    keep = select(coupling, {0: scores}, SelectOptions(channels=0.5, min_keep=0.0, round_to=4))
    assert np.flatnonzero(keep[0]).tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    # 3 bins of 4 and round_to=8: no multiple of 8 below 12 is a multiple of 3, round_to is dropped
    coupling = synthetic(12, bins={0: (np.arange(12) // 4,)})
    notes: list[str] = []
    keep = select(coupling, {0: scores}, SelectOptions(channels=0.5, min_keep=0.0, round_to=8), notes=notes)
    assert kept(keep) == [6] and assert_bins_balanced(coupling, keep) == 1
    assert any("round_to" in n for n in notes)


@pytest.mark.parametrize("name", ["shufflenet", "misc_ops"])
def test_zoo_bins_are_respected(name):
    e = ZOO[name]
    graph = gp.trace(e.build(), e.example_inputs())
    coupling = analyze(graph)
    if not any(g.prunable and g.bins for g in coupling.groups):
        pytest.skip(f"{name}: the coupling analysis gives no prunable group with bins")
    scores = unit_scores(graph, coupling, "l2")
    pruned = 0
    for opts in (
        SelectOptions(channels=0.5),
        SelectOptions(channels=0.3, round_to=4),
        SelectOptions(channels=0.6, scope="global"),
    ):
        pruned += assert_bins_balanced(coupling, select(coupling, scores, opts))
    assert pruned > 0


# ------------------------------------------------------------------------------------------------
# cost targets
# ------------------------------------------------------------------------------------------------


class FakeCost:
    """MACs: sum over groups of size * (kept fraction)^2 (a layer shrinks on both sides); params:
    the kept units. Counts its calls."""

    def __init__(self, coupling: Coupling) -> None:
        self.sizes = {g.id: g.size for g in coupling.groups}
        self.calls = 0

    def __call__(self, keep: dict[int, np.ndarray]) -> tuple[int, int]:
        self.calls += 1
        macs = sum(1000 * n * (keep[i].sum() / n) ** 2 for i, n in self.sizes.items())
        return int(round(macs)), int(sum(keep[i].sum() for i in self.sizes))


@pytest.mark.parametrize("scope", ["local", "global"])
@pytest.mark.parametrize("target", [0.7, 0.4, 0.25])
def test_target_macs_lands_within_tolerance(scope, target):
    rng = np.random.default_rng(7)
    coupling = synthetic(64, 128, 96, 256, 32)
    scores = {g.id: rng.random(g.size) * (g.id + 1) for g in coupling.groups}
    cost = FakeCost(coupling)
    keep = select(coupling, scores, SelectOptions(target_macs=target, scope=scope, min_keep=0.05), cost)
    macs, _ = cost(keep)
    full, _ = cost({g.id: np.ones(g.size, bool) for g in coupling.groups})
    assert abs(macs / full / target - 1) <= TARGET_TOLERANCE
    assert cost.calls - 2 <= MAX_COST_EVALS


def test_target_params_and_both_targets():
    rng = np.random.default_rng(8)
    coupling = synthetic(64, 128, 96)
    scores = {g.id: rng.random(g.size) for g in coupling.groups}
    cost = FakeCost(coupling)
    keep = select(coupling, scores, SelectOptions(target_params=0.5, scope="global"), cost)
    assert abs(sum(kept(keep)) / 288 / 0.5 - 1) <= TARGET_TOLERANCE
    # both: the binding one (MACs 0.3 needs more pruning than params 0.6) is met, the other over-met
    keep = select(coupling, scores, SelectOptions(target_macs=0.3, target_params=0.6), cost)
    macs, params = cost(keep)
    full_macs, full_params = cost({g.id: np.ones(g.size, bool) for g in coupling.groups})
    assert params / full_params <= 0.6 * (1 + TARGET_TOLERANCE)
    assert abs(macs / full_macs / 0.3 - 1) <= TARGET_TOLERANCE


def test_target_unreachable_and_coarse():
    coupling = synthetic(16, 16)
    scores = {g.id: np.arange(16.0) for g in coupling.groups}
    cost = FakeCost(coupling)
    # min_keep 0.5 keeps at least a quarter of these MACs
    with pytest.raises(ValueError, match="unreachable"):
        select(coupling, scores, SelectOptions(target_macs=0.1, min_keep=0.5), cost)
    # groups of 2 units: in local scope the MAC fraction is 1 or 0.25, so 0.5 cannot be met and the
    # closest from below is 0.25
    coarse = synthetic(2, 2)
    notes: list[str] = []
    keep = select(
        coarse, {0: np.arange(2.0), 1: np.arange(2.0)}, SelectOptions(target_macs=0.5, min_keep=0.0), FakeCost(coarse),
        notes=notes,
    )  # fmt: skip
    assert kept(keep) == [1, 1]
    assert any("not met" in n for n in notes)
    # target 1: nothing to prune
    assert all(m.all() for m in select(coupling, scores, SelectOptions(target_macs=1.0), cost).values())
