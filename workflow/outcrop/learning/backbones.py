"""ResNet backbones for C-band multispectral tiles of a few dozen pixels.

The ImageNet ResNet (He et al. 2016) opens with a 7x7 stride-2 convolution and a max-pool: a 32-px
tile would be 8 px before the first residual block and 1 px at the end, with nothing left of the
texture that tells rock units apart. Here the stem is a single 3x3 convolution that takes any number
of bands and keeps full resolution, and the stages halve it only three times (32 -> 4 px).

``resnet-small`` is the CPU model: a 16-channel stem and three stages of one basic block (32, 64,
128 channels), about 0.3 M parameters, cheap enough to train on the built-in demo in a minute or two on two cores.

>>> net = build_backbone("resnet-small", in_channels=7, embedding_dim=128)
>>> net(torch.zeros(4, 7, 32, 32)).shape
torch.Size([4, 128])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from outcrop.errors import OutcropError


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    """Identity when shapes agree, else a strided 1x1 projection (ResNet option B)."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34 block)."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.body = nn.Sequential(
            _conv3x3(c_in, width, stride),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            _conv3x3(width, c_out),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = _shortcut(c_in, c_out, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand by four, with a residual connection (ResNet-50 block)."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(c_in, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            _conv3x3(width, width, stride),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = _shortcut(c_in, c_out, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


@dataclass(frozen=True)
class ResNetSpec:
    """Shape of one architecture: block type, blocks per stage, stage widths, stride of each stage."""

    block: type[nn.Module]
    blocks: tuple[int, ...]
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    stem_width: int


ARCHITECTURES: dict[str, ResNetSpec] = {
    # The stem keeps full resolution with only 16 channels and the first stage halves it: the
    # full-resolution convolutions dominate the cost on a CPU, and this is where they are cheapest.
    "resnet-small": ResNetSpec(BasicBlock, (1, 1, 1), (32, 64, 128), (2, 2, 2), 16),
    "resnet18": ResNetSpec(BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), (1, 2, 2, 2), 64),
    "resnet50": ResNetSpec(Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), (1, 2, 2, 2), 64),
}


class ResNet(nn.Module):
    """Stem, residual stages, global average pool, then a linear map to ``embedding_dim``.

    The linear map is there only when the pooled width differs from ``embedding_dim``; the output is
    the representation that BYOL's projector reads during training and that embeddings are made of.
    """

    def __init__(self, spec: ResNetSpec, in_channels: int, embedding_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            _conv3x3(in_channels, spec.stem_width),
            nn.BatchNorm2d(spec.stem_width),
            nn.ReLU(inplace=True),
        ]
        c_in = spec.stem_width
        for n_blocks, width, stride in zip(spec.blocks, spec.widths, spec.strides):
            for i in range(n_blocks):
                block = spec.block(c_in, width, stride if i == 0 else 1)
                layers.append(block)
                c_in = width * spec.block.expansion  # type: ignore[attr-defined]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Identity() if c_in == embedding_dim else nn.Linear(c_in, embedding_dim)
        self.embedding_dim = embedding_dim
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def _init_weights(net: nn.Module) -> None:
    """He init for convolutions; the last BatchNorm of each residual body starts at zero.

    Zero-initialised residual branches make every block start as the identity, which lets small
    batches and short schedules train stably (Goyal et al. 2017).
    """
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    for m in net.modules():
        if isinstance(m, (BasicBlock, Bottleneck)):
            last = m.body[-1]
            assert isinstance(last, nn.BatchNorm2d)  # each block's body ends in its last norm
            nn.init.zeros_(last.weight)


def build_backbone(arch: str, in_channels: int, embedding_dim: int) -> ResNet:
    """The backbone named ``arch`` for ``in_channels`` bands, with ``embedding_dim`` outputs."""
    if arch not in ARCHITECTURES:
        raise OutcropError(f"encoder.arch: unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    if in_channels < 1 or embedding_dim < 1:
        raise OutcropError(
            f"encoder: need at least one band and one embedding dimension "
            f"(got {in_channels} bands, embedding_dim {embedding_dim})"
        )
    return ResNet(ARCHITECTURES[arch], in_channels, embedding_dim)
