"""The StyleGAN3 generator's config (NVIDIA's constructor arguments) and the layer geometry it implies.

`geometry` derives every layer's cutoff, stopband, sampling rate, size (margin included), channels,
resampling factors, filter taps and padding from the config, as the Alias-Free GAN paper's appendix
sets them; `StyleGAN3Config.validate` bounds the config before anything is built from it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError
from .networks import _brief

# ----------------------------------------------------------------------------
# The config and the geometry it implies.

@dataclasses.dataclass
class StyleGAN3Config:
    """NVIDIA's StyleGAN3 Generator constructor arguments (flat synthesis kwargs, as its pickles store them)."""
    z_dim: int = 512
    c_dim: int = 0
    w_dim: int = 512
    img_resolution: int = 256
    img_channels: int = 3
    channel_base: int = 32768      # channels of a layer: rint(min(channel_base / 2 / cutoff, channel_max))
    channel_max: int = 512
    num_layers: int = 14           # synthesis layers, ToRGB excluded
    num_critical: int = 2          # critically sampled layers at the end
    first_cutoff: float = 2.0      # cutoff of the first layer (and the input's bandwidth)
    first_stopband: float = 2 ** 2.1
    last_stopband_rel: float = 2 ** 0.3
    margin_size: int = 10          # extra samples each side of every layer but the last two
    output_scale: float = 0.25
    num_fp16_res: int = 4
    conv_kernel: int = 3           # config R: 1
    filter_size: int = 6           # filter taps per resampling factor
    lrelu_upsampling: int = 2      # the leaky ReLU runs at this multiple of the higher sampling rate
    use_radial_filters: bool = False  # config R: radial down filters on the non-critical layers
    conv_clamp: float | None = 256
    magnitude_ema_beta: float = 0.999  # training only; kept so a converted file records it
    mapping_layers: int = 2
    mapping_lr_multiplier: float = 0.01

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StyleGAN3Config":
        """From NVIDIA's kwargs (synthesis kwargs flat, `mapping_kwargs` nested) or `to_dict`; unknown keys ignored."""
        flat = {k: v for k, v in dict(d).items() if k != "mapping_kwargs"}
        mapping = dict(d.get("mapping_kwargs") or {})
        for ours, theirs in (("mapping_layers", "num_layers"), ("mapping_lr_multiplier", "lr_multiplier")):
            if theirs in mapping:
                flat[ours] = mapping[theirs]
        names = {f.name for f in dataclasses.fields(cls)}
        plain = lambda v: v.item() if isinstance(v, (np.integer, np.floating, np.bool_)) else v
        return cls(**{k: plain(v) for k, v in flat.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "StyleGAN3Config":
        """Check every field against sane bounds before anything is allocated; raises CheckpointError."""
        problem = _config_problem(self)
        if problem:
            raise CheckpointError(f"the model's config is outside what this app loads: {problem}")
        return self


@dataclasses.dataclass(frozen=True)
class LayerGeometry:
    """One synthesis layer's sampling: what NVIDIA's layer records as attributes."""
    name: str
    is_torgb: bool
    is_critically_sampled: bool
    use_fp16: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    tmp_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    conv_kernel: int
    up_factor: int
    down_factor: int
    up_taps: int
    down_taps: int
    down_radial: bool
    padding: tuple[int, int, int, int]  # x0, x1, y0, y1 (negative: crop)


@dataclasses.dataclass(frozen=True)
class Geometry:
    input_channels: int
    input_size: int
    input_sampling_rate: float
    input_bandwidth: float
    layers: tuple[LayerGeometry, ...]


def geometry(cfg: StyleGAN3Config) -> Geometry:
    """Cutoffs, stopbands, sampling rates, sizes and channels of every layer (Alias-Free GAN, appendix).

    Cutoffs grow geometrically from first_cutoff to half the image resolution at the first critically
    sampled layer; each sampling rate is the smallest power of two above twice the stopband.
    """
    n, res = cfg.num_layers, cfg.img_resolution
    last_cutoff = res / 2
    last_stopband = last_cutoff * cfg.last_stopband_rel
    exponents = np.minimum(np.arange(n + 1) / (n - cfg.num_critical), 1)
    cutoffs = cfg.first_cutoff * (last_cutoff / cfg.first_cutoff) ** exponents
    stopbands = cfg.first_stopband * (last_stopband / cfg.first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + cfg.margin_size * 2
    sizes[-2:] = res
    channels = np.rint(np.minimum((cfg.channel_base / 2) / cutoffs, cfg.channel_max))
    channels[-1] = cfg.img_channels
    layers = []
    for i in range(n + 1):
        p = max(i - 1, 0)
        torgb = i == n
        kernel = 1 if torgb else cfg.conv_kernel
        tmp_rate = int(max(rates[p], rates[i]) * (1 if torgb else cfg.lrelu_upsampling))
        up, down = int(np.rint(tmp_rate / rates[p])), int(np.rint(tmp_rate / rates[i]))
        up_taps = cfg.filter_size * up if up > 1 and not torgb else 1
        down_taps = cfg.filter_size * down if down > 1 and not torgb else 1
        # Padding that makes out_size samples come out of in_size + kernel - 1 conv outputs.
        total = (int(sizes[i]) - 1) * down + 1 - (int(sizes[p]) + kernel - 1) * up + up_taps + down_taps - 2
        lo = (total + up) // 2
        critical = i >= n - cfg.num_critical
        layers.append(LayerGeometry(
            f"L{i}_{int(sizes[i])}_{int(channels[i])}", torgb, critical,
            bool(rates[i] * 2 ** cfg.num_fp16_res > res), int(channels[p]), int(channels[i]), int(sizes[p]),
            int(sizes[i]), int(rates[p]), int(rates[i]), tmp_rate, float(cutoffs[p]), float(cutoffs[i]),
            float(half_widths[p]), float(half_widths[i]), kernel, up, down, up_taps, down_taps,
            bool(cfg.use_radial_filters and not critical), (lo, total - lo, lo, total - lo)))
    return Geometry(int(channels[0]), int(sizes[0]), float(rates[0]), float(cutoffs[0]), tuple(layers))


# Bounds of StyleGAN3Config.validate: above every published StyleGAN3 generator, far below a memory bomb.
MAX_RESOLUTION = 1024
MAX_CHANNELS = 1024
MAX_LAYERS = 32
MAX_MARGIN = 64


def _config_problem(cfg: StyleGAN3Config) -> str | None:
    """The first field of `cfg` outside validate's bounds, as words; None when all fit."""
    ints = {"z_dim": (0, MAX_CHANNELS), "c_dim": (0, MAX_CHANNELS), "w_dim": (1, MAX_CHANNELS),
            "img_resolution": (16, MAX_RESOLUTION), "img_channels": (1, 4), "channel_base": (1, 1 << 20),
            "channel_max": (1, MAX_CHANNELS), "num_layers": (2, MAX_LAYERS), "num_critical": (0, MAX_LAYERS),
            "margin_size": (0, MAX_MARGIN), "num_fp16_res": (0, 16), "conv_kernel": (1, 7),
            "filter_size": (1, 16), "lrelu_upsampling": (1, 4), "mapping_layers": (1, 8)}
    for name, (lo, hi) in ints.items():
        value = getattr(cfg, name)
        if type(value) is not int or not lo <= value <= hi:
            return f"{name} = {_brief(value)} (expected a whole number in {lo}..{hi})"
    if cfg.img_resolution & (cfg.img_resolution - 1):
        return f"img_resolution = {cfg.img_resolution} (expected a power of two)"
    if cfg.num_critical >= cfg.num_layers:
        return f"num_critical = {cfg.num_critical} (expected fewer than num_layers = {cfg.num_layers})"
    if cfg.z_dim == 0 and cfg.c_dim == 0:
        return "z_dim = 0 and c_dim = 0 (the mapping network would have no input)"
    floats = {"first_cutoff": (0.5, 64), "first_stopband": (0.5, 64), "last_stopband_rel": (1, 4),
              "output_scale": (-16, 16), "mapping_lr_multiplier": (1e-6, 1), "magnitude_ema_beta": (0, 1)}
    for name, (lo, hi) in floats.items():
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            return f"{name} = {_brief(value)} (expected a number in {lo}..{hi})"
    clamp = cfg.conv_clamp
    if clamp is not None and (isinstance(clamp, bool) or not isinstance(clamp, (int, float))
                              or not math.isfinite(clamp) or clamp < 0):
        return f"conv_clamp = {_brief(clamp)} (expected None or a finite number >= 0)"
    if not isinstance(cfg.use_radial_filters, bool):
        return f"use_radial_filters = {_brief(cfg.use_radial_filters)} (expected true or false)"
    if cfg.first_cutoff > cfg.img_resolution / 2:
        return f"first_cutoff = {cfg.first_cutoff} is above half the image resolution"
    if min(layer.out_channels for layer in geometry(cfg).layers) < 1:
        return f"channel_base = {cfg.channel_base} leaves a layer without channels"
    return None


