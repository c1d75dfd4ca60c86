"""StyleGAN2 generator in plain PyTorch, computing the same function as NVIDIA's.

Read top to bottom: small pieces first (activation, FIR resampling, equalized
linear layer, modulated convolution), then the layers, the blocks, the mapping
and synthesis networks, and the generator. Parameter and buffer names follow
NVIDIA's `training/networks_stylegan2.py`, so an NVIDIA state dict loads with
`load_state_dict` as it is.

Non-square generators (StyleGAN-Human: `square=False`, images twice as tall as wide) compute
their blocks at [r, r // 2] and, as the official DragGAN app builds them (`padding=True`), hand
out a square: images padded left and right with white (1.0), block features zero-padded in
width. Everything downstream (the drag engine, the app) works on that square unchanged: a
handle's (row, col) is in the padded image, as in the official app. (A true H x W engine, with
non-square tracking windows, masks and views, is future work; the padded square costs a third
more feature pixels in the drag step and nothing else.)

Where the official app's numbers differ from the function a file stores, we compute the stored
function, and say so: the app leaves the rebuilt network in training mode, so each mapping call
moves `w_avg` (StyleGAN-Human, ADA: by up to 0.026 per call, and a later seed sees a moved
average); ours never moves. StyleGAN-Human's and ADA's code runs `use_fp16` blocks in float16 on
any device unless `force_fp32` (images off by up to 6.5e-3); ours run float32 unless asked.

No custom CUDA ops and nothing compiled: the same code runs on CPU, CUDA and
Apple MPS. Float16 in the high-resolution blocks is used only on CUDA and only
when asked for (`use_fp16=True` at call time); float32 is the default.

DragGAN needs more than `forward`: `SynthesisNetwork.features` runs the blocks
up to a given one (the drag step's autograd stops there), and
`SynthesisNetwork.image_from_features` renders the image from those features
without repeating them.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import CheckpointError
from .frozen_styles import FrozenStyles, frozen_styles, kept_parts  # noqa: F401 (re-exported)
from .inference import inferring, synthesis_layer, to_rgb
from .ops import (LRELU_ALPHA, LRELU_GAIN, _conv, bias_act, modulated_conv2d,  # noqa: F401 (re-exported)
                  normalize_2nd_moment, setup_filter, upfirdn2d, upsample2d)


# ----------------------------------------------------------------------------
# Layers.

class FullyConnectedLayer(torch.nn.Module):
    """Linear layer with equalized learning rate (weights stored divided by lr_multiplier)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype) * self.bias_gain if self.bias_gain != 1 else b.to(x.dtype)
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 conv (optionally 2x up), noise, bias, leaky ReLU, clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1,
                 use_noise: bool = True, conv_clamp: float | None = None, resample_filter: list[float] = (1, 3, 3, 1),
                 kernel_size: int = 3, width: int | None = None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution, self.up, self.use_noise, self.conv_clamp = resolution, up, use_noise, conv_clamp
        self.width = resolution if width is None else width  # output columns (resolution // 2: StyleGAN-Human)
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, self.width]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const",
                fused_modconv: bool | None = None, origin: tuple[int, int] | None = None) -> torch.Tensor:
        """origin: `x` is a crop, and the output's pixel (0, 0) is this (row, col) of the full map (for the noise)."""
        if fused_modconv is None:  # as modulated_conv2d picks (the styles need gradients when w does)
            fused_modconv = not (torch.is_grad_enabled() and any(p.requires_grad for p in (w, *self.affine.parameters())))
        if fused_modconv and inferring(self, x, w):  # (its parts are kept by the layer, frozen styles or not)
            return synthesis_layer(self, x, w, noise_mode, origin)
        known, known_weight = kept_parts(self, w, x.dtype, fused_modconv)  # inside `frozen_styles`
        styles = self.affine(w) if known is None else None  # [batch, in]
        noise = None
        h, w_ = (self.resolution, self.width) if origin is None else (x.shape[2] * self.up, x.shape[3] * self.up)
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, h, w_], device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const if origin is None else self.noise_const[origin[0]:origin[0] + h, origin[1]:origin[1] + w_]
            noise = noise * self.noise_strength
        elif noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'const', 'random' or 'none', not {noise_mode!r}")
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, fused=fused_modconv, known=known,
                             known_weight=known_weight)
        return bias_act(x, self.bias.to(x.dtype), act="lrelu", clamp=self.conv_clamp, inplace=not x.requires_grad)


class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 conv to image channels, without demodulation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool | None = None) -> torch.Tensor:
        if fused_modconv is not False and inferring(self, x, w):
            return to_rgb(self, x, w)
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp, inplace=not x.requires_grad)


class SynthesisBlock(torch.nn.Module):
    """One resolution: (const | 2x-up conv0), conv1, and the skip toRGB."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 use_fp16: bool = False, conv_clamp: float | None = 256, resample_filter: list[float] = (1, 3, 3, 1),
                 square: bool = True):
        super().__init__()
        self.in_channels, self.out_channels, self.resolution = in_channels, out_channels, resolution
        self.width = resolution if square else resolution // 2  # the map's columns
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, self.width]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp,
                                        resample_filter=resample_filter, width=self.width)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp,
                                    resample_filter=resample_filter, width=self.width)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def dtype_for(self, device: torch.device, use_fp16: bool | torch.dtype) -> torch.dtype:
        """The block's compute dtype: float32, or (for the blocks NVIDIA runs in half precision) float16 when
        use_fp16 is True on CUDA, or the given low-precision dtype on any device."""
        if isinstance(use_fp16, torch.dtype):
            return use_fp16 if self.use_fp16 else torch.float32
        return torch.float16 if (use_fp16 and self.use_fp16 and device.type == "cuda") else torch.float32

    def features(self, x: torch.Tensor | None, ws: torch.Tensor, noise_mode: str = "const",
                 use_fp16: bool | torch.dtype = False, fused_modconv: bool | None = None,
                 origin: tuple[int, int] | None = None) -> torch.Tensor:
        """The block's feature map `x` (no image). ws: [batch, num_conv + num_torgb, w_dim].

        origin: `x` is a crop of the previous block's map whose pixel (0, 0) is (row, col) / 2 there;
        the output is the crop of this block's map at `origin`, exact except near the crop's inner edges.
        """
        dtype = self.dtype_for(ws.device, use_fp16)
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            return self.conv1(x, ws[:, 0], noise_mode, fused_modconv)
        x = x.to(dtype)
        x = self.conv0(x, ws[:, 0], noise_mode, fused_modconv, origin)
        return self.conv1(x, ws[:, 1], noise_mode, fused_modconv, origin)

    def rgb(self, x: torch.Tensor, img: torch.Tensor | None, ws: torch.Tensor,
            fused_modconv: bool | None = None) -> torch.Tensor:
        """Add this block's toRGB of `x` to the upsampled running image."""
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, ws[:, self.num_conv], fused_modconv).to(torch.float32)
        return y if img is None else img + y

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str = "const",
                use_fp16: bool = False, fused_modconv: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(x, ws, noise_mode, use_fp16, fused_modconv)
        return x, self.rgb(x, img, ws, fused_modconv)


# ----------------------------------------------------------------------------
# Networks.

class SynthesisNetwork(torch.nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 4, conv_clamp: float | None = 256,
                 resample_filter: list[float] = (1, 3, 3, 1), square: bool = True):
        super().__init__()
        assert img_resolution >= 4 and img_resolution & (img_resolution - 1) == 0
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.square = square  # False: blocks are [r, r // 2] (StyleGAN-Human); outputs are padded to square
        log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim, res, img_channels,
                                   use_fp16=res >= fp16_resolution, conv_clamp=conv_clamp,
                                   resample_filter=resample_filter, square=square)
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    @property
    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def block_ws(self, ws: torch.Tensor) -> list[torch.Tensor]:
        """Split W+ [batch, num_ws, w_dim] into each block's rows (consecutive blocks share one row)."""
        assert ws.ndim == 3 and ws.shape[1] == self.num_ws and ws.shape[2] == self.w_dim, ws.shape
        out, idx = [], 0
        for block in self.blocks:
            out.append(ws.narrow(1, idx, block.num_conv + block.num_torgb))
            idx += block.num_conv
        return out

    def pad(self, x: torch.Tensor, value: float = 0.0) -> torch.Tensor:
        """A non-square map [.., r, r // 2] padded left and right with `value` to [.., r, r]; square maps as they are.

        The official app's `padding=True`: images with 1.0 (white), features with 0.
        """
        if self.square:
            return x
        side = (x.shape[-2] - x.shape[-1]) // 2
        return F.pad(x, [side, side], value=value)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of `pad`: the centre columns that the blocks computed."""
        if self.square or x.shape[-1] != x.shape[-2]:
            return x
        side = x.shape[-1] // 4
        return x[..., side:x.shape[-1] - side]

    def features(self, ws: torch.Tensor, stop: int | None = None, noise_mode: str = "const",
                 use_fp16: bool | torch.dtype = False) -> list[torch.Tensor]:
        """Feature maps `x` of blocks 0 .. stop-1 (all blocks if stop is None), no image; square (`pad`).

        The drag step calls this under autograd with stop = feature block + 1.
        """
        ws = ws.to(torch.float32)
        x, feats = None, []
        for block, cur_ws in list(zip(self.blocks, self.block_ws(ws)))[:stop]:
            x = block.features(x, cur_ws, noise_mode, use_fp16)
            feats.append(self.pad(x))
        return feats

    def image_from_features(self, ws: torch.Tensor, feats: list[torch.Tensor], noise_mode: str = "const",
                            use_fp16: bool | torch.dtype = False) -> torch.Tensor:
        """Finish the image from the first len(feats) blocks' features: their toRGBs, then the rest."""
        ws = ws.to(torch.float32)
        img = None
        feats = [self.unpad(f) for f in feats]
        x = feats[-1] if feats else None
        for i, (block, cur_ws) in enumerate(zip(self.blocks, self.block_ws(ws))):
            if i < len(feats):
                img = block.rgb(feats[i], img, cur_ws)
            else:
                x, img = block(x, img, cur_ws, noise_mode, use_fp16)
        return self.pad(img, 1.0)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", use_fp16: bool = False,
                return_features: bool = False, fused_modconv: bool | None = None):
        """ws [batch, num_ws, w_dim] -> image [batch, img_channels, res, res] in about [-1, 1] (padded: `pad`).

        fused_modconv: None picks per call (unfused when styles need gradients); True forces
        NVIDIA's inference path (the straightforward baseline uses it, as the official app does).
        """
        ws = ws.to(torch.float32)
        x = img = None
        feats = []
        for block, cur_ws in zip(self.blocks, self.block_ws(ws)):
            x, img = block(x, img, cur_ws, noise_mode, use_fp16, fused_modconv)
            if return_features:
                feats.append(self.pad(x))
        img = self.pad(img, 1.0)
        return (img, feats) if return_features else img


class MappingNetwork(torch.nn.Module):
    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 8,
                 lr_multiplier: float = 0.01, layer_features: int | None = None, embed_features: int | None = None):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        embed_features = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        layer_features = w_dim if layer_features is None else layer_features
        sizes = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(sizes[i], sizes[i + 1], activation="lrelu",
                                                        lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        """z [batch, z_dim] -> ws [batch, num_ws, w_dim], truncated towards w_avg."""
        x = normalize_2nd_moment(z.to(torch.float32)) if self.z_dim > 0 else None
        if self.c_dim > 0:
            if c is None:
                raise ValueError("this generator is conditional: pass a class label c")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = y if x is None else torch.cat([x, y], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x = torch.cat([self.w_avg.lerp(x[:, :cutoff], truncation_psi), x[:, cutoff:]], dim=1)
        return x


@dataclasses.dataclass
class GeneratorConfig:
    """NVIDIA's Generator constructor arguments (architecture 'skip'), as stored in their pickles."""
    z_dim: int = 512            # input latent size
    c_dim: int = 0              # class label size; 0 = unconditional
    w_dim: int = 512            # intermediate latent size
    img_resolution: int = 256   # output side in pixels, a power of two
    img_channels: int = 3       # RGB
    channel_base: int = 32768   # channels at resolution r are min(channel_base // r, channel_max)
    channel_max: int = 512
    num_fp16_res: int = 4       # how many top resolutions may run in float16 on CUDA
    conv_clamp: float | None = 256  # clamp of every conv output (NVIDIA's default for StyleGAN2-ADA)
    mapping_layers: int = 8     # depth of the mapping MLP
    mapping_lr_multiplier: float = 0.01
    square: bool = True         # False: StyleGAN-Human's H x H/2 images (shown padded to H x H)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GeneratorConfig":
        """From NVIDIA's constructor kwargs (mapping_kwargs/synthesis_kwargs nested or flat); unknown keys ignored."""
        flat = dict(d)
        for nested in ("synthesis_kwargs", "mapping_kwargs"):
            flat.update({("mapping_" + k if nested == "mapping_kwargs" else k): v
                         for k, v in dict(d.get(nested) or {}).items()})
        if "mapping_num_layers" in flat:
            flat["mapping_layers"] = flat["mapping_num_layers"]
        names = {f.name for f in dataclasses.fields(cls)}
        # numpy scalars (a pickle may hold them) as plain Python numbers, so validate() sees their value
        plain = lambda v: v.item() if isinstance(v, (np.integer, np.floating)) else v
        return cls(**{k: plain(v) for k, v in flat.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "GeneratorConfig":
        """Check every field against sane bounds before anything is built from it; returns self.

        A file's config decides how much memory `Generator(config)` allocates, so a config read
        from a file must pass here first. Raises CheckpointError naming the first bad field.
        """
        problem = _config_problem(self)
        if problem:
            raise CheckpointError(f"the model's config is outside what this app loads: {problem}")
        return self

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """The state dict's tensor shapes of `Generator(self)`, found without allocating any weights."""
        with torch.device("meta"):
            return {k: tuple(v.shape) for k, v in Generator(self).state_dict().items()}


# Bounds of GeneratorConfig.validate: above every published StyleGAN2 generator, far below a memory bomb.
MAX_RESOLUTION = 1024
MAX_CHANNELS = 1024     # per synthesis block, and z_dim, w_dim, c_dim
MAX_CHANNEL_BASE = 1 << 20
MAX_MAPPING_LAYERS = 8
MAX_FP16_RES = 16


def _brief(value: Any) -> str:
    """A field's value for an error message: short scalars as they are, anything else by type."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)[:40]
    return f"a {type(value).__name__}"


def _config_problem(cfg: "GeneratorConfig") -> str | None:
    """The first field of `cfg` outside GeneratorConfig.validate's bounds, as words; None when all fit."""
    ints = {"z_dim": (0, MAX_CHANNELS), "c_dim": (0, MAX_CHANNELS), "w_dim": (1, MAX_CHANNELS),
            "img_resolution": (4, MAX_RESOLUTION), "img_channels": (1, 4), "channel_base": (1, MAX_CHANNEL_BASE),
            "channel_max": (1, MAX_CHANNELS), "num_fp16_res": (0, MAX_FP16_RES),
            "mapping_layers": (1, MAX_MAPPING_LAYERS)}
    if type(cfg.square) is not bool:
        return f"square = {_brief(cfg.square)} (expected true or false)"
    for name, (lo, hi) in ints.items():
        value = getattr(cfg, name)
        if type(value) is not int or not lo <= value <= hi:
            return f"{name} = {_brief(value)} (expected a whole number in {lo}..{hi})"
    res = cfg.img_resolution
    if res & (res - 1):
        return f"img_resolution = {res} (expected a power of two)"
    if cfg.z_dim == 0 and cfg.c_dim == 0:
        return "z_dim = 0 and c_dim = 0 (the mapping network would have no input)"
    if cfg.channel_base < res:
        return f"channel_base = {cfg.channel_base} leaves the {res}-px block without channels"
    clamp, lr = cfg.conv_clamp, cfg.mapping_lr_multiplier
    if clamp is not None and (isinstance(clamp, bool) or not isinstance(clamp, (int, float))
                              or not math.isfinite(clamp) or clamp < 0):
        return f"conv_clamp = {_brief(clamp)} (expected None or a finite number >= 0)"
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or not 0 < lr <= 1:
        return f"mapping_lr_multiplier = {_brief(lr)} (expected a number in (0, 1])"
    return None


class Generator(torch.nn.Module):
    """z -> mapping -> W+ -> synthesis -> image. Same names as NVIDIA's `G_ema`."""

    def __init__(self, config: GeneratorConfig | None = None, **kwargs):
        super().__init__()
        self.config = config if config is not None else GeneratorConfig.from_dict(kwargs)
        cfg = self.config
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.img_resolution, self.img_channels = cfg.img_resolution, cfg.img_channels
        self.synthesis = SynthesisNetwork(cfg.w_dim, cfg.img_resolution, cfg.img_channels, cfg.channel_base,
                                          cfg.channel_max, cfg.num_fp16_res, cfg.conv_clamp, square=cfg.square)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg.z_dim, cfg.c_dim, cfg.w_dim, self.num_ws, cfg.mapping_layers,
                                      cfg.mapping_lr_multiplier)

    @property
    def block_resolutions(self) -> list[int]:
        return self.synthesis.block_resolutions

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "const", use_fp16: bool = False) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, use_fp16=use_fp16)


def content_width(G: Any) -> int:
    """Columns of a generator's own picture within its square image: StyleGAN-Human's is half the side,
    padded with white to the square the app shows; other generators fill it."""
    res = G.img_resolution
    return res if getattr(G.synthesis, "square", True) else res // 2


def seed_to_z(seed: int, z_dim: int) -> torch.Tensor:
    """The official app's seed -> z: numpy RandomState(seed).randn(1, z_dim), as float32 [1, z_dim]."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).to(torch.float32)


def image_to_uint8(img: torch.Tensor) -> np.ndarray:
    """[1 or batch, 3, H, W] in [-1, 1] -> [H, W, 3] uint8 of the first image, as the official renderer rounds."""
    return (img[0].detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
