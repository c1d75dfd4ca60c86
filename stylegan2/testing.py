"""Helpers for tests and benchmarks: small generators with random, non-trivial weights, built in code."""
from __future__ import annotations

import torch

from .networks import Generator, GeneratorConfig


def tiny_generator(resolution: int = 32, channels: int = 32, w_dim: int = 32, seed: int = 0,
                   square: bool = True) -> Generator:
    """A small generator with random, non-trivial weights (for tests and benchmarks without a checkpoint).

    Noise strengths and `w_avg` are set away from their zero init so every code path matters.
    square=False: a StyleGAN-Human-like generator (resolution x resolution/2, shown padded to square).
    """
    cfg = GeneratorConfig(z_dim=w_dim, w_dim=w_dim, img_resolution=resolution, channel_base=channels * resolution,
                          channel_max=channels, mapping_layers=2, square=square)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = Generator(cfg)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.copy_(0.1 * torch.rand([], generator=gen))
            elif name.endswith("bias") and "affine" not in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        G.mapping.w_avg.copy_(0.5 * torch.randn(w_dim, generator=gen))
    return G.eval().requires_grad_(False)


def tiny_stylegan3(resolution: int = 32, channels: int = 16, w_dim: int = 32, seed: int = 0, radial: bool = False):
    """A small StyleGAN3 generator (config T, or R with `radial`) with random, non-trivial weights.

    Layer magnitudes, biases, the input's affine (zero at NVIDIA's init: no rotation or shift) and `w_avg`
    are set away from their init so every code path matters.
    """
    from .stylegan3 import Generator as StyleGAN3Generator, StyleGAN3Config

    cfg = StyleGAN3Config(z_dim=w_dim, w_dim=w_dim, img_resolution=resolution, channel_base=channels * 32,
                          channel_max=channels, conv_kernel=1 if radial else 3, use_radial_filters=radial).validate()
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = StyleGAN3Generator(cfg)
    with torch.no_grad():
        for name, t in G.state_dict().items():  # the state dict's tensors share storage with the module's
            if name.endswith("magnitude_ema"):
                t.copy_(0.5 + torch.rand([], generator=gen))
            elif name.endswith("bias") and "affine" not in name and "mapping" not in name:
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
            elif name == "synthesis.input.affine.weight":
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
        G.mapping.w_avg.copy_(0.5 * torch.randn(w_dim, generator=gen))
    return G.eval().requires_grad_(False)
