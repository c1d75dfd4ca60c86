"""StyleGAN2 discriminator ('resnet' architecture) in plain PyTorch, for training our own models.

Structure and parameter names follow NVIDIA's `training/networks_stylegan2.py`
(`b{res}.fromrgb`, `b{res}.conv0`, `b{res}.conv1`, `b{res}.skip`, `b4.conv`, `b4.fc`,
`b4.out`), so the layout reads the same as theirs. Unconditional only (c_dim = 0).
Every layer uses equalized learning rate: weights are initialised N(0, 1) and scaled by
1/sqrt(fan_in) at run time. Downsampling low-pass filters with the FIR filter [1, 3, 3, 1].
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .networks import FullyConnectedLayer, LRELU_GAIN, bias_act, setup_filter, upfirdn2d


def downsample_pad(filter_size: int, kernel_size: int, padding: int) -> int:
    """Padding before a 2x-down FIR + strided conv (NVIDIA's conv2d_resample, down=2)."""
    assert filter_size == 4 and kernel_size in (1, 3)
    return padding + (filter_size - 2 + 1) // 2


class Conv2dLayer(torch.nn.Module):
    """Equalized-lr conv, optionally 2x down (FIR low-pass then stride 2), bias, activation, clamp."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1, resample_filter: list[float] = (1, 3, 3, 1),
                 conv_clamp: float | None = None):
        super().__init__()
        assert down in (1, 2)
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.kernel_size, self.padding = kernel_size, kernel_size // 2
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels])) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = LRELU_GAIN if activation == "lrelu" else 1.0

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight * self.weight_gain
        if self.down == 1:
            x = F.conv2d(x, w, padding=self.padding)
        else:
            p = downsample_pad(self.resample_filter.shape[-1], self.kernel_size, self.padding)
            x = upfirdn2d(x, self.resample_filter, pad=(p, p, p, p))
            if self.kernel_size == 1:  # downsample first, then the 1x1 conv
                x = F.conv2d(x[:, :, ::2, ::2], w)
            else:
                x = F.conv2d(x, w, stride=2)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class DiscriminatorBlock(torch.nn.Module):
    """One resolution: (fromrgb at the top), conv0, conv1 with 2x down, and a 1x1 residual skip."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int,
                 conv_clamp: float | None = None):
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))  # the two branches are summed at half variance each
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y + x


class MinibatchStdLayer(torch.nn.Module):
    """Append the std-dev over groups of samples as extra channels (lets D see a lack of variety)."""

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        assert n % g == 0, f"batch {n} must be a multiple of the minibatch-std group size {g}"
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)       # [group, n/group, F, c/F, h, w]
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])   # [n/group, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [n, F, h, w]
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(torch.nn.Module):
    """The 4x4 block: minibatch std, conv, fully connected, one logit."""

    def __init__(self, in_channels: int, resolution: int = 4, mbstd_group_size: int = 4, mbstd_num_channels: int = 1,
                 conv_clamp: float | None = None):
        super().__init__()
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1)))  # [batch, 1]


@dataclasses.dataclass
class DiscriminatorConfig:
    """NVIDIA's Discriminator constructor arguments we support (architecture 'resnet', unconditional)."""
    img_resolution: int = 64    # input side in pixels, a power of two
    img_channels: int = 3       # RGB
    channel_base: int = 32768   # channels at resolution r are min(channel_base // r, channel_max)
    channel_max: int = 512
    conv_clamp: float | None = 256  # clamp of conv outputs, as NVIDIA's training configs
    mbstd_group_size: int = 4   # samples per minibatch-std group; the batch must be a multiple
    mbstd_num_channels: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Discriminator(torch.nn.Module):
    """image [batch, C, R, R] in about [-1, 1] -> realness logit [batch, 1]."""

    def __init__(self, config: DiscriminatorConfig | None = None):
        super().__init__()
        self.config = cfg = config if config is not None else DiscriminatorConfig()
        res = cfg.img_resolution
        assert res >= 8 and res & (res - 1) == 0, "img_resolution must be a power of two >= 8"
        self.block_resolutions = [2 ** i for i in range(int(np.log2(res)), 2, -1)]
        ch = {r: min(cfg.channel_base // r, cfg.channel_max) for r in self.block_resolutions + [4]}
        for r in self.block_resolutions:
            block = DiscriminatorBlock(ch[r] if r < res else 0, ch[r], ch[r // 2], cfg.img_channels,
                                       conv_clamp=cfg.conv_clamp)
            setattr(self, f"b{r}", block)
        self.b4 = DiscriminatorEpilogue(ch[4], 4, cfg.mbstd_group_size, cfg.mbstd_num_channels,
                                        conv_clamp=cfg.conv_clamp)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        assert img.shape[1:] == (cfg.img_channels, cfg.img_resolution, cfg.img_resolution), img.shape
        x = None
        for r in self.block_resolutions:
            x = getattr(self, f"b{r}")(x, img)
        return self.b4(x)
