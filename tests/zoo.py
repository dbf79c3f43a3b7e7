"""Topology zoo: small, deterministic, export-friendly PyTorch models.

Every model is written from scratch (no torchvision / timm) and covers one
family of graph topologies that a pruning toolkit must understand: residual
adds, depthwise / grouped convolutions, concatenation growth, gating
multiplies, channel shuffles, split / chunk / slice, flatten-into-linear,
attention (hand written and SDPA), grouped-query attention with rotary
embeddings and tied weights, layer scale, upsampling with skip connections,
plus a grab-bag of less common ops and a multi-input / multi-output model.

Usage::

    from zoo import ZOO
    entry = ZOO["resnet_bottleneck"]
    model = entry.build()            # eval() mode, seeded weights
    inputs = entry.example_inputs()  # tuple of tensors, seeded
    out = model(*inputs)

Conventions:

* ``build()`` seeds the global RNG with ``torch.manual_seed`` inside a
  ``torch.random.fork_rng`` block, so repeated calls give bit-identical weights
  and the caller's RNG state is left untouched.
* Normalisation layers are randomised (affine params, BatchNorm running
  statistics, layer-scale gammas) so that none of them is an identity map.
* All shapes are static; there is no data-dependent control flow, so every
  model goes through ``torch.export.export`` and
  ``torch.onnx.export(..., dynamo=True)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ZooEntry", "ZOO", "count_params"]


@dataclass(frozen=True)
class ZooEntry:
    name: str
    build: Callable[[], nn.Module]  # returns model in eval() mode
    example_inputs: Callable[[], tuple[torch.Tensor, ...]]  # seeded, deterministic


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def count_params(model: nn.Module) -> int:
    """Number of unique parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel dim of an NCHW tensor, written by hand (ConvNeXt style)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class HandRMSNorm(nn.Module):
    """RMSNorm written by hand (LLaMA style)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


_AFFINE_NORMS = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    ChannelsFirstLayerNorm,
    HandRMSNorm,
)


@torch.no_grad()
def _randomize_norms(model: nn.Module) -> None:
    """Make every normalisation layer non-trivial (uses the current global RNG)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if m.track_running_stats:
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        elif isinstance(m, _AFFINE_NORMS):
            w = getattr(m, "weight", None)
            b = getattr(m, "bias", None)
            if isinstance(w, torch.Tensor):
                w.uniform_(0.5, 1.5)
            if isinstance(b, torch.Tensor):
                b.uniform_(-0.2, 0.2)


def _finalize(model: nn.Module) -> nn.Module:
    _randomize_norms(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _seeded_build(factory: Callable[[], nn.Module], seed: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return _finalize(factory())

    build.__name__ = f"build_{getattr(factory, '__name__', 'model')}"
    return build


def _image_inputs(*shapes: tuple[int, ...], seed: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    def example_inputs() -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(*s, generator=g) for s in shapes)

    return example_inputs


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------
# 1. ResNet with bottleneck blocks
# --------------------------------------------------------------------------------------


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False),
                nn.BatchNorm2d(cout),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetBottleneck(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3)
        self.layer1 = nn.Sequential(Bottleneck(16, 8, 32), Bottleneck(32, 8, 32))
        self.layer2 = nn.Sequential(Bottleneck(32, 16, 64, stride=2), Bottleneck(64, 16, 64))
        self.layer3 = nn.Sequential(Bottleneck(64, 32, 128, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# --------------------------------------------------------------------------------------
# 2. MobileNetV2
# --------------------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),  # depthwise
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False),  # linear bottleneck
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(inplace=True))
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 1, 1),  # t=1, residual
            InvertedResidual(16, 24, 2, 4),
            InvertedResidual(24, 24, 1, 4),  # residual
            InvertedResidual(24, 32, 2, 4),
            InvertedResidual(32, 32, 1, 4),  # residual
        )
        self.last = nn.Sequential(nn.Conv2d(32, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU6(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last(self.blocks(self.stem(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


# --------------------------------------------------------------------------------------
# 3. DenseNet
# --------------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        x = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(x)))


class DenseBlock(nn.Module):
    def __init__(self, num_layers: int, cin: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth) for i in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(self.relu(self.norm(x))))


class DenseNet(nn.Module):
    def __init__(self, num_classes: int = 10, growth: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.block1 = DenseBlock(3, 16, growth)  # 16 -> 40
        self.trans1 = Transition(40, 20)
        self.block2 = DenseBlock(3, 20, growth)  # 20 -> 44
        self.trans2 = Transition(44, 22)
        self.block3 = DenseBlock(2, 22, growth)  # 22 -> 38
        self.norm_final = nn.BatchNorm2d(38)
        self.fc = nn.Linear(38, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.trans1(self.block1(x))
        x = self.trans2(self.block2(x))
        x = F.relu(self.norm_final(self.block3(x)))
        x = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
        return self.fc(x)


# --------------------------------------------------------------------------------------
# 4. SE-Net
# --------------------------------------------------------------------------------------


class SEConv(nn.Module):
    """Squeeze-excitation with 1x1 convs (keeps NCHW shape throughout)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))
        return x * s


class SELinear(nn.Module):
    """Squeeze-excitation with Linear layers (flatten -> linear -> view back)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        s = F.adaptive_avg_pool2d(x, 1).flatten(1)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s.view(b, c, 1, 1)


class SEBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, se: str) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3, 1, act=False)
        self.se = SEConv(cout) if se == "conv" else SELinear(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = conv_bn(cin, cout, 1, stride, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.conv2(self.conv1(x)))
        return F.relu(out + self.shortcut(x))


class SENet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3)
        self.block1 = SEBasicBlock(16, 16, 1, "conv")
        self.block2 = SEBasicBlock(16, 32, 2, "linear")
        self.block3 = SEBasicBlock(32, 32, 1, "conv")
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))


# --------------------------------------------------------------------------------------
# 5. ShuffleNet (v1 units)
# --------------------------------------------------------------------------------------


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int = 4) -> None:
        super().__init__()
        self.stride = stride
        self.groups = groups
        branch_out = cout - cin if stride == 2 else cout
        # channels per conv group a multiple of the group count, so that a shuffled channel can be
        # pruned in every group at once (with 3 per group and 4 groups no selection keeps the groups)
        mid = cout // 3
        self.gconv1 = nn.Conv2d(cin, mid, 1, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.dwconv = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.gconv2 = nn.Conv2d(mid, branch_out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_out)
        if stride == 2:
            self.shortcut = nn.AvgPool2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.gconv1(x)))
        out = channel_shuffle(out, self.groups)
        out = self.bn2(self.dwconv(out))
        out = self.bn3(self.gconv2(out))
        if self.stride == 2:
            return F.relu(torch.cat([self.shortcut(x), out], 1))
        return F.relu(x + out)


class ShuffleNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 24, 3, 2)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.stage2 = nn.Sequential(ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1), ShuffleUnit(48, 48, 1))
        self.stage3 = nn.Sequential(ShuffleUnit(48, 96, 2), ShuffleUnit(96, 96, 1))
        self.fc = nn.Linear(96, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.pool(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# --------------------------------------------------------------------------------------
# 6. split / chunk / slice branches
# --------------------------------------------------------------------------------------


class SplitBranches(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 32, 3)
        # chunk(2) -> two halves of 16
        self.branch_a = conv_bn(16, 16, 3)
        self.branch_b = conv_bn(16, 16, 1)
        # split([8, 24])
        self.branch_p = conv_bn(8, 8, 3, groups=8)  # depthwise
        self.branch_q = conv_bn(24, 24, 3)
        # slice [:, 2:6]
        self.branch_s = conv_bn(4, 8, 3)
        # chunk(3) on 40 channels -> 14, 14, 12
        self.mix = conv_bn(40, 48, 1)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # 32 ch
        a, b = torch.chunk(x, 2, dim=1)
        x = torch.cat([self.branch_b(b), self.branch_a(a)], dim=1)  # swapped order, 32 ch
        p, q = torch.split(x, [8, 24], dim=1)
        y = torch.cat([self.branch_q(q), self.branch_p(p)], dim=1)  # swapped order, 32 ch
        s = self.branch_s(y[:, 2:6])  # 8 ch
        z = torch.cat([y, s], dim=1)  # 40 ch
        c0, c1, c2 = z.chunk(3, dim=1)  # 14, 14, 12
        z = torch.cat([c2, c0 * torch.sigmoid(c1), c1], dim=1)  # 40 ch
        z = self.mix(z)
        return self.fc(z.mean(dim=(2, 3)))


# --------------------------------------------------------------------------------------
# 7. flatten into linear (+ a 1-D conv model)
# --------------------------------------------------------------------------------------


class FlattenLinear(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 8, 3, 2), conv_bn(8, 16, 3, 2))  # 16x16 -> 4x4
        self.fc1 = nn.Linear(16 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)  # channel-major flatten: feature k -> channel k // 16
        return self.fc2(F.relu(self.fc1(x)))


class Conv1dNet(nn.Module):
    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(4, 16, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm1d(16)
        self.pool = nn.MaxPool1d(2)
        self.dw = nn.Conv1d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv1d(16, 32, 1)
        self.bn2 = nn.BatchNorm1d(32)
        self.gap = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = F.relu(self.bn2(self.pw(self.dw(x))))
        return self.fc(self.gap(x).flatten(1))


# --------------------------------------------------------------------------------------
# 8. ViT
# --------------------------------------------------------------------------------------


class ManualAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class SDPAAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, approximate: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, sdpa: bool, approximate: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SDPAAttention(dim, heads) if sdpa else ManualAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio, approximate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, img: int = 32, patch: int = 8, dim: int = 64, heads: int = 4, num_classes: int = 10):
        super().__init__()
        n_patches = (img // patch) ** 2
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.pos_embed = nn.Parameter(torch.randn(1, n_patches + 1, dim) * 0.1)
        self.blocks = nn.Sequential(
            ViTBlock(dim, heads, 2, sdpa=False, approximate="none"),
            ViTBlock(dim, heads, 2, sdpa=True, approximate="tanh"),
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # B, N, C
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


# --------------------------------------------------------------------------------------
# 9. LLaMA-style decoder
# --------------------------------------------------------------------------------------


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1 = x[..., :half]
    x2 = x[..., half:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    b, h_kv, s, d = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None, :, :].expand(b, h_kv, n_rep, s, d).reshape(b, h_kv * n_rep, s, d)


class GQAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.head_dim = head_dim
        self.q_proj = nn.Linear(dim, n_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(dim, n_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(dim, n_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * head_dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, k, cos, sin)
        n_rep = self.n_heads // self.n_kv_heads
        k = repeat_kv(k, n_rep)
        v = repeat_kv(v, n_rep)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out = out.transpose(1, 2).reshape(b, s, self.n_heads * self.head_dim)
        return self.o_proj(out)


class GatedMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, head_dim: int, hidden: int, torch_norm: bool):
        super().__init__()
        if torch_norm:
            self.input_norm: nn.Module = nn.RMSNorm(dim, eps=1e-6)
            self.post_attn_norm: nn.Module = nn.RMSNorm(dim, eps=1e-6)
        else:
            self.input_norm = HandRMSNorm(dim)
            self.post_attn_norm = HandRMSNorm(dim)
        self.attn = GQAttention(dim, n_heads, n_kv_heads, head_dim)
        self.mlp = GatedMLP(dim, hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.input_norm(x), cos, sin)
        return x + self.mlp(self.post_attn_norm(x))


class TinyLlama(nn.Module):
    def __init__(
        self,
        vocab: int = 128,
        dim: int = 64,
        n_heads: int = 4,
        n_kv_heads: int = 2,
        head_dim: int = 16,
        hidden: int = 128,
        max_seq: int = 32,
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(
            [
                DecoderLayer(dim, n_heads, n_kv_heads, head_dim, hidden, torch_norm=False),
                DecoderLayer(dim, n_heads, n_kv_heads, head_dim, hidden, torch_norm=True),
            ]
        )
        self.norm = HandRMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.embed.weight  # tied
        inv_freq = 1.0 / (rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        t = torch.arange(max_seq, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)  # max_seq, head_dim
        self.register_buffer("rope_cos", emb.cos(), persistent=False)
        self.register_buffer("rope_sin", emb.sin(), persistent=False)
        with torch.no_grad():
            self.embed.weight.normal_(0.0, 0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        s = tokens.shape[1]
        x = self.embed(tokens)
        cos = self.rope_cos[:s]
        sin = self.rope_sin[:s]
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


# --------------------------------------------------------------------------------------
# 10. ConvNeXt
# --------------------------------------------------------------------------------------


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.empty(dim).uniform_(0.1, 1.0))  # layer scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.dwconv(x)
        x = x.permute(0, 2, 3, 1)  # N C H W -> N H W C
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        x = self.gamma * x
        x = x.permute(0, 3, 1, 2)
        return shortcut + x


class ConvNeXt(nn.Module):
    def __init__(self, num_classes: int = 10, dims: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        d0, d1 = dims
        self.stem = nn.Sequential(nn.Conv2d(3, d0, 4, 4), nn.GroupNorm(1, d0, eps=1e-6))
        self.stage1 = nn.Sequential(ConvNeXtBlock(d0), ConvNeXtBlock(d0))
        self.downsample = nn.Sequential(ChannelsFirstLayerNorm(d0), nn.Conv2d(d0, d1, 2, 2))
        self.stage2 = nn.Sequential(ConvNeXtBlock(d1))
        self.norm = nn.LayerNorm(d1, eps=1e-6)
        self.head = nn.Linear(d1, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.downsample(self.stage1(self.stem(x))))
        x = self.norm(x.mean([-2, -1]))
        return self.head(x)


# --------------------------------------------------------------------------------------
# 11. U-Net
# --------------------------------------------------------------------------------------


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv_bn(cin, cout, 3), conv_bn(cout, cout, 3))


class UNet(nn.Module):
    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.enc1 = double_conv(3, 8)  # 32x32
        self.enc2 = double_conv(8, 16)  # 16x16
        self.enc3 = double_conv(16, 32)  # 8x8
        self.bottleneck = double_conv(32, 32)  # 4x4
        self.pool = nn.MaxPool2d(2)
        self.up3 = nn.ConvTranspose2d(32, 32, 2, stride=2)  # 4 -> 8
        self.dec3 = double_conv(64, 16)
        self.dec2 = double_conv(32, 8)  # after bilinear 8 -> 16, cat enc2
        self.dec1 = double_conv(16, 8)  # after nearest 16 -> 32, cat enc1
        self.out = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        b = self.bottleneck(self.pool(e3))
        d3 = self.dec3(torch.cat([self.up3(b), e3], dim=1))
        d2 = F.interpolate(d3, scale_factor=2, mode="bilinear", align_corners=False)
        d2 = self.dec2(torch.cat([d2, e2], dim=1))
        d1 = F.interpolate(d2, scale_factor=2, mode="nearest")
        d1 = self.dec1(torch.cat([e1, d1], dim=1))
        return self.out(d1)


# --------------------------------------------------------------------------------------
# 12. misc ops
# --------------------------------------------------------------------------------------


class MiscOps(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.prelu = nn.PReLU(16, init=0.2)
        self.conv_dil = nn.Conv2d(16, 16, 3, padding=2, dilation=2, bias=False)
        self.inorm = nn.InstanceNorm2d(16, affine=True)
        self.lrelu = nn.LeakyReLU(0.1)
        self.conv_grp = nn.Conv2d(16, 16, 3, padding=1, groups=2)
        self.hswish = nn.Hardswish()
        self.conv_padc = nn.Conv2d(16, 16, 3)  # after constant pad
        self.gate_conv = nn.Conv2d(16, 16, 1)
        self.hsig = nn.Hardsigmoid()
        self.conv_padr = nn.Conv2d(16, 16, 3)  # after reflect pad
        self.silu = nn.SiLU()
        self.unshuffle = nn.PixelUnshuffle(2)  # 16x16x16 -> 64x8x8
        self.conv_ps = nn.Conv2d(64, 32, 1)
        self.shuffle = nn.PixelShuffle(2)  # 32x8x8 -> 8x16x16
        self.tanh = nn.Tanh()
        self.avgpool = nn.AvgPool2d(2)  # 16 -> 8
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)  # 8 -> 4
        self.conv_tail = nn.Conv2d(8, 12, 3, padding=1)
        self.aap = nn.AdaptiveAvgPool2d((2, 2))
        self.fc = nn.Linear(12 + 12 + 12 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.gn(self.conv1(x)))
        x = self.lrelu(self.inorm(self.conv_dil(x)))
        x = self.hswish(self.conv_grp(x))
        x = self.conv_padc(F.pad(x, (1, 1, 1, 1), mode="constant", value=0.5))
        x = x * self.hsig(self.gate_conv(x))
        x = self.silu(self.conv_padr(F.pad(x, (1, 1, 1, 1), mode="reflect")))
        x = self.tanh(self.shuffle(self.conv_ps(self.unshuffle(x))))
        x = torch.clamp(x, -0.5, 0.8)
        x = self.maxpool(self.avgpool(x))
        x = self.conv_tail(x)  # 12 x 4 x 4
        x = torch.where(x > 0, x, 0.1 * x)
        y = torch.exp(-x.abs()) + torch.sqrt(torch.abs(x) + 1) + torch.reciprocal(torch.abs(x) + 1)
        m = y.mean(dim=(2, 3))
        s = y.sum(dim=(2, 3)) / 16.0
        p = self.aap(x).flatten(1)
        return self.fc(torch.cat([m, s, p], dim=1))


# --------------------------------------------------------------------------------------
# 13. multi input / multi output with a shared conv
# --------------------------------------------------------------------------------------


class MultiIO(nn.Module):
    def __init__(self, num_classes: int = 10, seg_classes: int = 3) -> None:
        super().__init__()
        self.shared = nn.Conv2d(3, 16, 3, padding=1, bias=False)  # applied to both inputs
        self.bn_a = nn.BatchNorm2d(16)
        self.bn_b = nn.BatchNorm2d(16)
        self.fuse = conv_bn(16, 32, 3, 2)
        self.fc = nn.Linear(32, num_classes)
        self.seg = nn.Conv2d(32, seg_classes, 1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = F.relu(self.bn_a(self.shared(x1)))
        b = F.relu(self.bn_b(self.shared(x2)))
        cls = self.fc(self.fuse(a + b).mean(dim=(2, 3)))
        seg = self.seg(torch.cat([a, b], dim=1))
        return cls, seg


# --------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------


def _token_inputs(vocab: int, seq: int, seed: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    def example_inputs() -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return (torch.randint(0, vocab, (1, seq), generator=g, dtype=torch.int64),)

    return example_inputs


def _entry(name: str, factory: Callable[[], nn.Module], inputs, seed: int) -> ZooEntry:
    return ZooEntry(name=name, build=_seeded_build(factory, seed), example_inputs=inputs)


_IMG32 = (1, 3, 32, 32)
_IMG16 = (1, 3, 16, 16)

ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        _entry("resnet_bottleneck", ResNetBottleneck, _image_inputs(_IMG32, seed=101), seed=1),
        _entry("mobilenetv2", MobileNetV2, _image_inputs(_IMG32, seed=102), seed=2),
        _entry("densenet", DenseNet, _image_inputs(_IMG32, seed=103), seed=3),
        _entry("se_net", SENet, _image_inputs(_IMG32, seed=104), seed=4),
        _entry("shufflenet", ShuffleNet, _image_inputs(_IMG32, seed=105), seed=5),
        _entry("split_branches", SplitBranches, _image_inputs(_IMG16, seed=106), seed=6),
        _entry("flatten_linear", FlattenLinear, _image_inputs(_IMG16, seed=107), seed=7),
        _entry("conv1d", Conv1dNet, _image_inputs((1, 4, 64), seed=114), seed=14),
        _entry("vit", ViT, _image_inputs(_IMG32, seed=108), seed=8),
        _entry("llama", TinyLlama, _token_inputs(128, 16, seed=109), seed=9),
        _entry("convnext", ConvNeXt, _image_inputs(_IMG32, seed=110), seed=10),
        _entry("unet", UNet, _image_inputs(_IMG32, seed=111), seed=11),
        _entry("misc_ops", MiscOps, _image_inputs(_IMG16, seed=112), seed=12),
        _entry("multi_io", MultiIO, _image_inputs(_IMG16, _IMG16, seed=113), seed=13),
    ]
}
