"""StyleGAN3 generator (Alias-Free GAN, configs T and R) in plain PyTorch, computing NVIDIA's function.

Read top to bottom (the config and the layers' geometry, derived from it as in the paper's appendix,
are in `stylegan3_config.py`): filter design (Kaiser-windowed sinc, radial jinc for R),
FIR resampling, the filtered leaky ReLU, then the layers and networks. Parameter and buffer
names follow NVIDIA's `training/networks_stylegan3.py`, so a `G_ema` state dict loads as it is
(its stored `up_filter` / `down_filter` buffers replace the ones designed here).

The signal is continuous in the paper's sense: every layer's feature map is a sampled
band-limited signal, with `margin_size` extra samples on each side (except the last two layers).
A layer: modulated conv (input scaled by its magnitude EMA), then bias, upsample with a low-pass
filter to a higher sampling rate, leaky ReLU there, low-pass and downsample (`filtered_lrelu`).
No custom CUDA ops: the same code runs on CPU, CUDA and MPS.

DragGAN reads a feature map of one *layer* (the 6th, `L5`), whole, margin included, resized to
the image: `SynthesisNetwork.blocks` lists the layers, so the drag engine treats each layer as
it treats a StyleGAN2 block (`features`, `image_from_features`, `blocks[i].resolution`).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .networks import FullyConnectedLayer, MappingNetwork, modulated_conv2d
from .stylegan3_config import LayerGeometry, StyleGAN3Config, geometry  # noqa: F401 (geometry re-exported)

LRELU_GAIN = math.sqrt(2.0)
LRELU_SLOPE = 0.2


# ----------------------------------------------------------------------------
# Filters (used when a generator is built from its config; a loaded file brings its own).

def kaiser_beta(numtaps: int, width: float) -> float:
    """Kaiser window beta for a transition band `width` (a fraction of Nyquist) with `numtaps` taps (Kaiser's formulas)."""
    atten = 2.285 * (numtaps - 1) * math.pi * width + 7.95
    if atten > 50:
        return 0.1102 * (atten - 8.7)
    if atten > 21:
        return 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    return 0.0


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False,
                          ) -> torch.Tensor | None:
    """Kaiser-windowed ideal low-pass, normalised to unit DC gain: 1-D sinc, or (radial) 2-D jinc. None for 1 tap."""
    if numtaps == 1:
        return None
    beta = kaiser_beta(numtaps, width / (fs / 2))
    window = np.kaiser(numtaps, beta)
    t = np.arange(numtaps) - (numtaps - 1) / 2
    if not radial:
        c = cutoff / (fs / 2)
        f = c * np.sinc(c * t) * window
    else:
        x = t / fs
        r = torch.from_numpy(np.hypot(*np.meshgrid(x, x)))
        # J1(2 pi fc r) / (pi r): the ideal circular low-pass; its limit at r = 0 is fc.
        jinc = torch.where(r > 0, torch.special.bessel_j1(2 * math.pi * cutoff * r) / (math.pi * r.clamp(min=1e-12)),
                           torch.full_like(r, cutoff))
        f = jinc.numpy() * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


# ----------------------------------------------------------------------------
# Resampling and the filtered leaky ReLU.

def _fir_pass(x: torch.Tensor, f: torch.Tensor, down: int, dim: int) -> torch.Tensor:
    """Convolve every channel of `x` [n, c, h, w] with the 1-D filter `f` along `dim` (2 rows, 3 cols), valid,
    keeping every `down`-th output."""
    c, k = x.shape[1], f.shape[0]
    shape, stride = ((c, 1, k, 1), (down, 1)) if dim == 2 else ((c, 1, 1, k), (1, down))
    return F.conv2d(x, f.flip(0).reshape(1, 1, *shape[2:]).expand(shape), stride=stride, groups=c)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1,
              padding: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad (x0, x1, y0, y1; negative crops), convolve with `f`, keep every down-th.

    x: [n, c, h, w]; f: 1-D [k] (applied separably, along columns then rows) or 2-D [k, k], or None (identity).
    The filter is scaled by `gain` overall (sqrt(gain) per pass when separable).
    """
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x0, x1, y0, y1 = padding
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0):x.shape[2] - max(-y1, 0), max(-x0, 0):x.shape[3] - max(-x1, 0)]
    if f is None:
        return x[:, :, ::down, ::down] * gain if gain != 1 else x[:, :, ::down, ::down]
    f = f.to(x.dtype) * gain ** (f.ndim / 2)
    if f.ndim == 1:
        return _fir_pass(_fir_pass(x, f, down, 3), f, down, 2)
    weight = f.flip([0, 1])[None, None].expand(c, 1, *f.shape)
    return F.conv2d(x, weight, stride=down, groups=c)


def _transposed_pass(x: torch.Tensor, f: torch.Tensor, up: int, pad0: int, pad1: int, dim: int) -> torch.Tensor:
    """Along `dim` (2 rows, 3 cols): insert up-1 zeros after each sample, pad (pad0, pad1), convolve with `f`.

    One transposed convolution computes the full convolution of the zero-stuffed signal without multiplying
    the zeros; the padding then becomes a crop (or zeros) of that full result. An equal crop of both ends
    (StyleGAN3's layers) is the transposed convolution's own `padding`: only the kept samples are computed.
    """
    c, k, n = x.shape[1], f.shape[0], x.shape[dim]
    shape, stride = ((c, 1, k, 1), (up, 1)) if dim == 2 else ((c, 1, 1, k), (1, up))
    weight = f.reshape(1, 1, *shape[2:]).expand(shape)
    lo, hi = pad0 - (k - 1), n * up + pad1 - ((n - 1) * up + k)  # crop (negative) or zero-pad (positive) each side
    if lo == hi <= 0:
        crop = (-lo, 0) if dim == 2 else (0, -lo)
        return F.conv_transpose2d(x, weight, stride=stride, padding=crop, groups=c)
    y = F.conv_transpose2d(x, weight, stride=stride, groups=c)  # (n-1)*up + k samples
    return F.pad(y, [lo, hi, 0, 0] if dim == 3 else [0, 0, lo, hi])


def upsample_separable(x: torch.Tensor, f: torch.Tensor, up: int, padding: tuple[int, int, int, int],
                       gain: float) -> torch.Tensor:
    """The fast path of `upfirdn2d(x, f, up=up, padding=padding, gain=gain)` for a 1-D filter: the same numbers
    up to float rounding (tested), about 2.5x faster on a CPU at StyleGAN3's sizes."""
    f = f.to(x.dtype) * math.sqrt(gain)
    x0, x1, y0, y1 = padding
    return _transposed_pass(_transposed_pass(x, f, up, x0, x1, 3), f, up, y0, y1, 2)


def upsample(x: torch.Tensor, f: torch.Tensor | None, up: int, padding: tuple[int, int, int, int],
             gain: float) -> torch.Tensor:
    """`upfirdn2d` upsampling, by transposed convolutions where they apply (1-D filter; CPU and CUDA).

    On a CPU a bfloat16 signal is upsampled in float32 and rounded once: oneDNN's bfloat16 depthwise
    transposed convolution is ~10x slower than its float32 one (measured), and it too sums in float32."""
    if f is not None and f.ndim == 1 and up > 1 and x.device.type in ("cpu", "cuda"):
        if x.dtype == torch.bfloat16 and x.device.type == "cpu":
            return upsample_separable(x.float(), f, up, padding, gain).to(x.dtype)
        return upsample_separable(x, f, up, padding, gain)
    return upfirdn2d(x, f, up=up, padding=padding, gain=gain)


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None, fd: torch.Tensor | None, b: torch.Tensor,
                   up: int, down: int, padding: tuple[int, int, int, int], gain: float, slope: float,
                   clamp: float | None, fast: bool = True) -> torch.Tensor:
    """The alias-free nonlinearity: bias, upsample (low-pass `fu`), leaky ReLU * gain, clamp, low-pass `fd` and
    downsample. x [n, c, h, w] -> [n, c, h', w'] with h' from the padding (see `geometry`).

    The bias joins the signal before upsampling: it is a constant of the continuous signal.
    fast=False runs the plain ops, the reference; fast (the default) computes the same numbers (tested) with
    `filtered_lrelu_fast`.
    """
    if fast:
        return filtered_lrelu_fast(x, fu, fd, b, up, down, padding, gain, slope, clamp)
    x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=up * up)
    x = F.leaky_relu(x, slope) if slope != 1 else x
    x = x * gain if gain != 1 else x
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return upfirdn2d(x, fd, down=down)


def filtered_lrelu_fast(x: torch.Tensor, fu: torch.Tensor | None, fd: torch.Tensor | None, b: torch.Tensor,
                        up: int, down: int, padding: tuple[int, int, int, int], gain: float, slope: float,
                        clamp: float | None) -> torch.Tensor:
    """`filtered_lrelu`, faster: on a CPU the signal is channels-last (the depthwise FIR convolutions run 2-4x
    faster in that layout, the same sums), upsampling is by transposed convolutions (`upsample`), and the
    activation, gain and clamp share one buffer. Returns a contiguous tensor."""
    layout = torch.channels_last if x.device.type == "cpu" else torch.contiguous_format
    x = x.contiguous(memory_format=layout) + b.to(x.dtype).reshape(1, -1, 1, 1)
    x = upsample(x, fu, up, padding, gain=up * up)
    # x is a fresh buffer (the bias add or the upsampling made it): the activation, gain and clamp run in it,
    # but for a leaky ReLU autograd records (it keeps its output); autograd checks the rest.
    recorded = torch.is_grad_enabled() and x.requires_grad
    x = F.leaky_relu(x, slope, inplace=not recorded) if slope != 1 else x
    x = x.mul_(gain) if gain != 1 else x
    x = x.clamp_(-clamp, clamp) if clamp is not None else x
    return upfirdn2d(x, fd, down=down).contiguous()


# ----------------------------------------------------------------------------
# Layers.

class SynthesisInput(torch.nn.Module):
    """Fourier features: sinusoids of fixed frequencies and phases on a grid, rotated and translated per sample
    by an affine function of w, then mixed by a learned channel matrix."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        super().__init__()
        self.w_dim, self.channels = w_dim, channels
        self.size, self.sampling_rate, self.bandwidth = size, sampling_rate, bandwidth
        # Random frequencies in the disc of radius `bandwidth`, as NVIDIA's init (a loaded file brings its own).
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = torch.nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4, bias_init=0)
        with torch.no_grad():
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3))  # a user transform of the output (the app: identity)
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand([channels]) - 0.5)

    def transforms(self, w: torch.Tensor) -> torch.Tensor:
        """[batch, 3, 3]: rotation then translation from affine(w), then the stored user transform."""
        t = self.affine(w)                                     # [batch, 4]: (cos, sin, tx, ty), unnormalised
        t = t / t[:, :2].norm(dim=1, keepdim=True)             # a pure rotation; the shift scales with it
        batch = w.shape[0]
        rot = torch.eye(3, device=w.device).repeat(batch, 1, 1)
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        shift = torch.eye(3, device=w.device).repeat(batch, 1, 1)
        shift[:, 0, 2], shift[:, 1, 2] = -t[:, 2], -t[:, 3]
        return rot @ shift @ self.transform.unsqueeze(0)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """w [batch, w_dim] -> [batch, channels, size, size]."""
        m = self.transforms(w)
        freqs = self.freqs.unsqueeze(0) @ m[:, :2, :2]                                   # [batch, C, 2]
        phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ m[:, :2, 2:]).squeeze(2)  # [batch, C]
        # Frequencies the transform pushed towards Nyquist fade out instead of aliasing.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        theta = torch.eye(2, 3, device=w.device)
        theta[0, 0] = theta[1, 1] = 0.5 * self.size / self.sampling_rate
        grid = F.affine_grid(theta.unsqueeze(0), [1, 1, self.size, self.size], align_corners=False)  # [1, H, W, 2]
        x = (grid.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)  # [batch, H, W, C]
        x = torch.sin((x + phases.unsqueeze(1).unsqueeze(2)) * (2 * math.pi)) * amplitudes.unsqueeze(1).unsqueeze(2)
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


class SynthesisLayer(torch.nn.Module):
    """Modulated conv (input scaled by 1/sqrt(magnitude EMA)), then the filtered leaky ReLU; ToRGB when `is_torgb`."""

    def __init__(self, w_dim: int, geo: LayerGeometry, conv_clamp: float | None = 256):
        super().__init__()
        self.geo, self.w_dim, self.conv_clamp = geo, w_dim, conv_clamp
        self.is_torgb, self.use_fp16 = geo.is_torgb, geo.use_fp16
        self.in_channels, self.out_channels = geo.in_channels, geo.out_channels
        self.resolution = geo.out_size  # the feature map's side, margin included (what the drag resizes)
        self.affine = FullyConnectedLayer(w_dim, geo.in_channels, bias_init=1)
        k = geo.conv_kernel
        self.weight = torch.nn.Parameter(torch.randn([geo.out_channels, geo.in_channels, k, k]))
        self.bias = torch.nn.Parameter(torch.zeros([geo.out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.register_buffer("up_filter", design_lowpass_filter(
            geo.up_taps, geo.in_cutoff, geo.in_half_width * 2, geo.tmp_sampling_rate))
        self.register_buffer("down_filter", design_lowpass_filter(
            geo.down_taps, geo.out_cutoff, geo.out_half_width * 2, geo.tmp_sampling_rate, radial=geo.down_radial))

    def dtype_for(self, device: torch.device, use_fp16: bool | torch.dtype) -> torch.dtype:
        """float32, or for the layers NVIDIA runs in half precision: float16 on CUDA when asked, or the given dtype."""
        if isinstance(use_fp16, torch.dtype):
            return use_fp16 if self.use_fp16 else torch.float32
        return torch.float16 if (use_fp16 and self.use_fp16 and device.type == "cuda") else torch.float32

    def forward(self, x: torch.Tensor, w: torch.Tensor, use_fp16: bool | torch.dtype = False,
                fused_modconv: bool | None = None) -> torch.Tensor:
        """x [batch, in, in_size, in_size], w [batch, w_dim] -> [batch, out, out_size, out_size]."""
        g = self.geo
        x = x.to(self.dtype_for(x.device, use_fp16))
        styles = self.affine(w)                                        # [batch, in]
        if self.is_torgb:
            styles = styles / math.sqrt(g.in_channels * g.conv_kernel ** 2)
        # Full padding: in_size + kernel - 1 outputs, the filters' padding takes it from there.
        x = modulated_conv2d(x, self.weight, styles, padding=g.conv_kernel - 1, demodulate=not self.is_torgb,
                             fused=fused_modconv)
        x = x * self.magnitude_ema.rsqrt().to(x.dtype)  # input gain: conv is linear, so it may act on the output
        gain, slope = (1.0, 1.0) if self.is_torgb else (LRELU_GAIN, LRELU_SLOPE)
        return filtered_lrelu(x, self.up_filter, self.down_filter, self.bias, g.up_factor, g.down_factor,
                              g.padding, gain, slope, self.conv_clamp)

    def extra_repr(self) -> str:
        g = self.geo
        return (f"{g.in_size}->{g.out_size} px, {g.in_channels}->{g.out_channels} ch, "
                f"up {g.up_factor}, down {g.down_factor}, radial {g.down_radial}")


# ----------------------------------------------------------------------------
# Networks.

class SynthesisNetwork(torch.nn.Module):
    """W+ [batch, num_layers + 2, w_dim] -> image: the input takes row 0, layer i row i + 1."""

    supports_local_steps = False  # layers resample with wide filters and margins: no cropped drag steps

    def __init__(self, cfg: StyleGAN3Config):
        super().__init__()
        geo = geometry(cfg)
        self.w_dim, self.img_resolution, self.img_channels = cfg.w_dim, cfg.img_resolution, cfg.img_channels
        self.output_scale, self.margin_size = cfg.output_scale, cfg.margin_size
        self.num_ws = cfg.num_layers + 2
        self.input = SynthesisInput(cfg.w_dim, geo.input_channels, geo.input_size, geo.input_sampling_rate,
                                    geo.input_bandwidth)
        self.layer_names = [g.name for g in geo.layers]
        for g in geo.layers:
            setattr(self, g.name, SynthesisLayer(cfg.w_dim, g, cfg.conv_clamp))

    @property
    def blocks(self) -> list[SynthesisLayer]:
        """The layers, in order: what the drag engine indexes as StyleGAN2's blocks (feature block 6 = `L5`)."""
        return [getattr(self, name) for name in self.layer_names]

    def _rows(self, ws: torch.Tensor) -> list[torch.Tensor]:
        assert ws.ndim == 3 and ws.shape[1] == self.num_ws and ws.shape[2] == self.w_dim, ws.shape
        return ws.to(torch.float32).unbind(dim=1)

    def features(self, ws: torch.Tensor, stop: int | None = None, noise_mode: str = "const",
                 use_fp16: bool | torch.dtype = False, fused_modconv: bool | None = None) -> list[torch.Tensor]:
        """Outputs of layers 0 .. stop-1 (all if None), margins included; the last is ToRGB's before output_scale.

        noise_mode is accepted and ignored: StyleGAN3 has no noise inputs.
        """
        rows = self._rows(ws)
        x, feats = self.input(rows[0]), []
        for layer, w in list(zip(self.blocks, rows[1:]))[:stop]:
            x = layer(x, w, use_fp16, fused_modconv)
            feats.append(x)
        return feats

    def image_from_features(self, ws: torch.Tensor, feats: list[torch.Tensor], noise_mode: str = "const",
                            use_fp16: bool | torch.dtype = False, fused_modconv: bool | None = None) -> torch.Tensor:
        """Finish the image from the first len(feats) layers' outputs."""
        rows = self._rows(ws)
        x = feats[-1] if feats else self.input(rows[0])
        for layer, w in list(zip(self.blocks, rows[1:]))[len(feats):]:
            x = layer(x, w, use_fp16, fused_modconv)
        return x.to(torch.float32) * self.output_scale

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", use_fp16: bool | torch.dtype = False,
                return_features: bool = False, fused_modconv: bool | None = None):
        """ws [batch, num_ws, w_dim] -> image [batch, img_channels, res, res] (and every layer's output)."""
        feats = self.features(ws, None, noise_mode, use_fp16, fused_modconv)
        img = feats[-1].to(torch.float32) * self.output_scale
        return (img, feats) if return_features else img


class Generator(torch.nn.Module):
    """z -> mapping -> W+ -> synthesis -> image. Same names as NVIDIA's StyleGAN3 `G_ema`."""

    FORMAT = "draggan-stylegan3"  # the `format` our safetensors record for this architecture
    file_format = FORMAT          # what model_files.save_generator writes

    def __init__(self, config: StyleGAN3Config | None = None, **kwargs):
        super().__init__()
        self.config = config if config is not None else StyleGAN3Config.from_dict(kwargs)
        cfg = self.config
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.img_resolution, self.img_channels = cfg.img_resolution, cfg.img_channels
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg.z_dim, cfg.c_dim, cfg.w_dim, self.num_ws, cfg.mapping_layers,
                                      cfg.mapping_lr_multiplier)

    @property
    def block_resolutions(self) -> list[int]:
        """Each layer's feature map side, margin included."""
        return [layer.resolution for layer in self.synthesis.blocks]

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "const",
                use_fp16: bool | torch.dtype = False) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, use_fp16=use_fp16)


def state_shapes(cfg: StyleGAN3Config) -> dict[str, tuple[int, ...]]:
    """The state dict's tensor shapes of `Generator(cfg)`, found without allocating any weights."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in Generator(cfg).state_dict().items()}
