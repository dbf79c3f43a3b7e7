"""Coupling analysis: the groups each coupling pattern must produce, and the reasons groups block."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from graphprune.passes.analysis.coupling import CouplingGroup, analyze
from torch import nn
from zoo import ZOO

import graphprune as gp


def groups_of(model: nn.Module, *inputs: torch.Tensor) -> tuple[gp.Graph, list[CouplingGroup]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = gp.trace(model.eval(), inputs)
    return graph, list(analyze(graph).groups)


def group_with(groups: list[CouplingGroup], value_name: str, axes: tuple[int, ...] = (0,)) -> CouplingGroup:
    """The group that owns `axes` of a value (a weight's OUT axis by default)."""
    found = [g for g in groups if any(m.value.name == value_name and m.axes == axes for m in g.members)]
    assert found, f"no group has member {value_name} on axes {axes}"
    return found[0]


def member(group: CouplingGroup, value_name: str, axes: tuple[int, ...] | None = None):
    return next(m for m in group.members if m.value.name == value_name and (axes is None or m.axes == axes))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = torch.relu(self.a(x))
        return self.head(y + self.b(y) + self.c(y))


def test_residual_add_couples_every_writer_and_reader():
    _, groups = groups_of(Residual(), torch.randn(1, 3, 6, 6))
    g = group_with(groups, "a.weight")
    names = {m.value.name for m in g.members}
    assert {"a.weight", "a.bias", "b.weight", "b.bias", "c.weight", "c.bias", "head.weight"} <= names
    assert g.size == 8 and g.prunable
    # b reads and writes the stream: both of its weight axes are members
    assert {m.axes for m in g.members if m.value.name == "b.weight"} == {(0,), (1,)}


class SplitSwap(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(10, 2, 1)

    def forward(self, x):
        p, q = self.a(x), self.b(x)
        cat = torch.cat([p, q], 1)
        left, right = torch.split(cat, [4, 6], 1)
        return self.head(torch.cat([right, left], 1))  # swapped order


def channel_map(groups: list[CouplingGroup], src: str, src_axes: tuple[int, ...], dst: str,
                dst_axes: tuple[int, ...]) -> dict[int, int]:
    """For every position of `src` along its member axis, the position of `dst` holding the same unit
    (groups split one conv's channels when they reach different readers: look in all of them)."""
    out = {}
    for g in groups:
        ms = [m for m in g.members if m.value.name == src and m.axes == src_axes]
        md = [m for m in g.members if m.value.name == dst and m.axes == dst_axes]
        if ms and md:
            for i, u in enumerate(ms[0].units):
                if u >= 0:
                    hits = np.flatnonzero(md[0].units == u)
                    assert len(hits) == 1
                    out[i] = int(hits[0])
    return out


def test_concat_and_split_offsets_are_exact():
    _, groups = groups_of(SplitSwap(), torch.randn(1, 3, 4, 4))
    # head input = [cat[4:10], cat[0:4]] = [a4, a5, b0, b1, b2, b3, a0, a1, a2, a3]
    assert channel_map(groups, "a.weight", (0,), "head.weight", (1,)) == {4: 0, 5: 1, 0: 6, 1: 7, 2: 8, 3: 9}
    assert channel_map(groups, "b.weight", (0,), "head.weight", (1,)) == {0: 2, 1: 3, 2: 4, 3: 5}


class Depthwise(nn.Module):
    def __init__(self, mult: int) -> None:
        super().__init__()
        self.pw = nn.Conv2d(3, 4, 1)
        self.dw = nn.Conv2d(4, 4 * mult, 3, padding=1, groups=4)
        self.head = nn.Conv2d(4 * mult, 2, 1)

    def forward(self, x):
        return self.head(self.dw(self.pw(x)))


@pytest.mark.parametrize("mult", [1, 2])
def test_depthwise_input_and_output_are_one_unit(mult):
    _, groups = groups_of(Depthwise(mult), torch.randn(1, 3, 5, 5))
    g = group_with(groups, "pw.weight")
    assert g.size == 4
    np.testing.assert_array_equal(member(g, "dw.weight", (0,)).units, np.repeat(np.arange(4), mult))
    np.testing.assert_array_equal(member(g, "head.weight", (1,)).units, np.repeat(np.arange(4), mult))


def test_grouped_conv_records_balanced_bins():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Conv2d(8, 2, 1))
    _, groups = groups_of(model, torch.randn(1, 3, 4, 4))
    g = group_with(groups, "0.weight")
    assert g.prunable and any(np.array_equal(b, [0, 0, 0, 0, 1, 1, 1, 1]) for b in g.bins)
    # the grouped weight's input axis is a per-group map: row o reads channel (o // 4) * 4 + j
    w_in = member(g, "1.weight", (0, 1)).units
    np.testing.assert_array_equal(w_in[:4], np.tile([0, 1, 2, 3], (4, 1)))
    np.testing.assert_array_equal(w_in[4:], np.tile([4, 5, 6, 7], (4, 1)))


def test_pixel_shuffle_unit_owns_its_r2_channels():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.PixelShuffle(2), nn.Conv2d(2, 2, 1))
    _, groups = groups_of(model, torch.randn(1, 3, 4, 4))
    g = group_with(groups, "0.weight")
    assert g.size == 2
    np.testing.assert_array_equal(member(g, "0.weight").units, [0, 0, 0, 0, 1, 1, 1, 1])


def test_flatten_linear_owns_h_times_w_features():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 5))
    _, groups = groups_of(model, torch.randn(1, 3, 3, 3))
    g = group_with(groups, "0.weight")
    np.testing.assert_array_equal(member(g, "3.weight", (1,)).units, np.repeat(np.arange(4), 9))


def test_attention_heads_and_grouped_query_ratio():
    vit = ZOO["vit"]
    _, groups = groups_of(vit.build(), *vit.example_inputs())
    heads = [g for g in groups if g.name.endswith("attn.qkv")]
    assert heads and all(g.size == 4 and g.prunable for g in heads)  # 4 heads, one unit each
    llama = ZOO["llama"]
    _, groups = groups_of(llama.build(), *llama.example_inputs())
    attn = [g for g in groups if g.name.endswith("q_proj")]
    # 4 query heads over 2 kv heads: a unit is one kv head and its 2 query heads
    assert attn and all(g.size == 2 and g.prunable for g in attn)
    q = member(attn[0], "layers.0.attn.q_proj.weight", (0,)).units
    k = member(attn[0], "layers.0.attn.k_proj.weight", (0,)).units
    np.testing.assert_array_equal(q, np.repeat([0, 1], 32))
    np.testing.assert_array_equal(k, np.repeat([0, 1], 16))


class MaskedAttention(nn.Module):
    """Self-attention with a causal mask shared by the heads, or an additive bias per head (ALiBi)."""

    def __init__(self, per_head: bool) -> None:
        super().__init__()
        self.qkv, self.out = nn.Linear(16, 48), nn.Linear(16, 16)
        bias = torch.randn(4, 6, 6) if per_head else torch.zeros(1, 6, 6).masked_fill(torch.ones(6, 6).triu(1) > 0,
                                                                                        -1e9)
        self.register_buffer("bias", bias)

    def forward(self, x):
        q, k, v = self.qkv(x).view(1, 6, 3, 4, 4).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
        return self.out(y.transpose(1, 2).reshape(1, 6, 16))


@pytest.mark.parametrize("per_head", [False, True])
def test_attention_masks_keep_heads_prunable(per_head):
    torch.manual_seed(0)
    model = MaskedAttention(per_head).double()
    x = torch.randn(1, 6, 16, dtype=torch.float64)
    graph, groups = groups_of(model, x)
    heads = group_with(groups, "qkv.weight")
    assert heads.prunable
    mask_members = [m for m in heads.members if m.value.name == "bias"]
    # a mask per head loses the rows of the pruned heads; a shared mask is not a member
    assert len(mask_members) == per_head
    pruned = gp.prune(graph, 0.5, round_to=1, verify=True)
    assert [o.shape for o in pruned.run(x.numpy())] == [(1, 6, 16)]
    if per_head:
        assert next(c for c in pruned.constants if c.name == "bias").type.shape[0] < 4


def test_gated_mlp_and_tied_embedding():
    llama = ZOO["llama"]
    _, groups = groups_of(llama.build(), *llama.example_inputs())
    mlp = group_with(groups, "layers.0.mlp.gate_proj.weight")
    names = {(m.value.name, m.axes) for m in mlp.weights()}
    assert {("layers.0.mlp.gate_proj.weight", (0,)), ("layers.0.mlp.up_proj.weight", (0,)),
            ("layers.0.mlp.down_proj.weight", (1,))} <= names
    stream = group_with(groups, "layers.0.input_norm.weight")
    assert ("embed.weight", (1,)) in {(m.value.name, m.axes) for m in stream.weights()}
    assert stream.stats  # RMSNorm statistics: removal is not zeroing
    vocab = [g for g in groups if ("embed.weight", (0,)) in {(m.value.name, m.axes) for m in g.members}]
    assert vocab and vocab[0].blocked and "model output" in vocab[0].blocked


def test_channels_last_layer_norm_is_coupled_through_permutes():
    convnext = ZOO["convnext"]
    _, groups = groups_of(convnext.build(), *convnext.example_inputs())
    g = [g for g in groups if any("norm" in m.value.name for m in g.weights()) and g.prunable]
    assert g and any(s.startswith("layer_norm") for grp in g for s in grp.stats)


class Unknown(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.b(torch.cumsum(self.a(x), dim=1))


def test_opaque_ops_and_model_boundaries_block_with_a_reason():
    _, groups = groups_of(Unknown(), torch.randn(1, 3, 4, 4))
    assert "opaque op aten.cumsum" in (group_with(groups, "a.weight").blocked or "")
    assert "model input" in (group_with(groups, "x", (1,)).blocked or "")
    out = [g for g in groups if g.blocked and "model output" in g.blocked]
    assert out


def test_channels_mixed_with_an_untracked_tensor_block():
    class Mix(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.b = nn.Conv2d(4, 2, 1)

        def forward(self, x, extra):
            return self.b(self.a(x) + extra)

    _, groups = groups_of(Mix(), torch.randn(1, 3, 4, 4), torch.randn(1, 4, 4, 4))
    assert group_with(groups, "a.weight").blocked  # extra's channels come from a model input


def test_channel_slicing_keeps_exact_indices():
    class Slice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.b = nn.Conv2d(4, 2, 1)
            self.c = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            y = self.a(x)
            return self.b(y[:, 2:6]) + self.c(y)

    _, groups = groups_of(Slice(), torch.randn(1, 3, 4, 4))
    assert channel_map(groups, "a.weight", (0,), "b.weight", (1,)) == {2: 0, 3: 1, 4: 2, 5: 3}


def test_shuffle_units_are_whole_columns():
    shuffle = ZOO["shufflenet"]
    _, groups = groups_of(shuffle.build(), *shuffle.example_inputs())
    g = group_with(groups, "stage2.1.gconv1.weight")
    assert g.prunable
    w = member(g, "stage2.1.gconv1.weight", (0,)).units
    # 16 channels in 4 conv groups: a unit is one position in every group
    np.testing.assert_array_equal(w, np.tile(np.arange(4), 4))
    # the stream (a concat of the shortcut and the branch, read by grouped convs) is prunable: its
    # producers are linked to keep the same count per conv group
    assert group_with(groups, "stem.0.weight").prunable
    assert group_with(groups, "stage3.0.gconv2.weight").prunable


class ConcatGrouped(nn.Module):
    """Two producers concatenated into a grouped conv with 4 groups: a's 8 channels fill conv
    groups 0-1, b's (`wb` channels) the rest when wb = 8."""

    def __init__(self, wb: int = 8) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(3, wb, 1)
        self.g = nn.Conv2d(8 + wb, 8, 3, padding=1, groups=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.g(torch.cat([self.a(x), self.b(x)], 1))


def test_grouped_conv_over_a_concat_links_the_producers():
    graph, groups = groups_of(ConcatGrouped(), torch.randn(1, 3, 5, 5))
    a, b = group_with(groups, "a.weight"), group_with(groups, "b.weight")
    assert a.prunable and b.prunable and a.id != b.id
    links = analyze(graph).links
    assert links == (((a.id, 2), (b.id, 2)),)
    for scope in ("local", "global"):
        # b's channels are made far more important: global ranking wants to prune a harder, but the
        # conv groups must keep the same count, so a keeps as many per bin as b does
        scaled = graph.copy()
        w = scaled.value("b.weight")
        scaled.replace_const_data(w, w.data * 100)
        pruned = gp.prune(scaled, 0.5, scope=scope, round_to=1, verify=True)
        conv = next(n for n in pruned.nodes if n.op is gp.Op.CONV and n.attrs.groups == 4)
        assert conv.inputs[0].type.shape[1] < 16 and conv.inputs[0].type.shape[1] % 4 == 0
        widths = [pruned.value(n).type.shape[0] for n in ("a.weight", "b.weight")]
        assert widths[0] == widths[1], (scope, widths)


def test_grouped_conv_over_a_concat_misaligned_stays_blocked():
    # 8 + 4 channels in 4 conv groups of 3: conv group 2 mixes a's and b's channels
    _, groups = groups_of(ConcatGrouped(wb=4), torch.randn(1, 3, 5, 5))
    assert "drawn unevenly" in (group_with(groups, "a.weight").blocked or "")


def test_linked_partner_kept_whole_keeps_the_link_whole():
    graph, _ = groups_of(ConcatGrouped(), torch.randn(1, 3, 5, 5))
    pruned, report = gp.prune_with_report(graph, 0.5, round_to=1, keep=["a"], verify=True)
    assert pruned.value("a.weight").type.shape[0] == 8
    assert pruned.value("b.weight").type.shape[0] == 8
    assert any("linked" in n for n in report.notes), report.notes


def test_channel_padding_adds_unprunable_channels():
    class Pad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.b = nn.Conv2d(6, 2, 1)

        def forward(self, x):
            return self.b(F.pad(self.a(x), (0, 0, 0, 0, 1, 1)))  # one zero channel on each side

    graph, groups = groups_of(Pad(), torch.randn(1, 3, 4, 4))
    assert channel_map(groups, "a.weight", (0,), "b.weight", (1,)) == {0: 1, 1: 2, 2: 3, 3: 4}
    assert group_with(groups, "a.weight").prunable
    pruned = gp.prune(graph, 0.5)
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    assert pruned.run(x)[0].shape == (1, 2, 4, 4)
