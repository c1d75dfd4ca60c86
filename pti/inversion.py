"""Pivotal Tuning Inversion (Roich et al. 2021): a real photo -> (tuned generator, pivot latent).

Stage 1, W projection (NVIDIA's StyleGAN2-ADA projector, as PTI runs it): optimize one w,
starting at the mean of sampled w's, with Adam under a learning-rate ramp-up/ramp-down,
Gaussian noise on w that fades out (scaled by the spread of sampled w's), and the
per-layer noise maps optimized beside it under the multi-scale autocorrelation
regularizer. The loss is the perceptual distance (or, offline without its weights, the
pixel loss of `pti.pixel_loss`: see `load_inversion_loss`), plus optionally a pixel MSE. The
optimized noise maps are kept: they are written into the tuned copy's `noise_const`,
so the copy renders the pivot with noise_mode='const'.

Stage 2, pivotal tuning: fine-tune the copy's synthesis weights so that the pivot renders
the photo (pixel MSE + perceptual loss, Adam), until the perceptual distance is below a
threshold or the step budget is spent; PTI's locality regularizer is optional.

Every inversion works on its own `copy.deepcopy` of the generator; the generator passed
in is only read, so sessions can share it. Both stages call `progress(stage, step, total,
loss)` after each step and check `cancel` (a threading.Event) before each step: when it
is set they raise `InversionCancelled` before doing any more work, and the partial copy is
dropped.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import threading
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from stylegan2.networks import Generator, image_to_uint8

from .perceptual import PerceptualDistance
from .pixel_loss import PixelDistance

Progress = Callable[[str, int, int, float], None]  # (stage 'project' | 'tune', steps done, total steps, loss)
Distance = PerceptualDistance | PixelDistance  # what inversion optimizes: `features`, `distance`, `description`
STAGES = {"project": "Projecting", "tune": "Tuning"}


def stage_text(stage: str, loss: Distance | None = None) -> str:
    """A progress line's words for `stage` ('project' | 'tune'), naming the loss when it is the offline
    fallback: "Projecting with the offline pixel loss (no perceptual weights)"."""
    text = STAGES.get(stage, stage)
    return f"{text} with {loss.description}" if loss is not None and getattr(loss, "offline", False) else text


def loss_device(loss: Distance) -> torch.device:
    """The device a perceptual or pixel distance is on (from its first buffer)."""
    return next(loss.buffers()).device


class InversionCancelled(Exception):
    """The cancel event was set; the inversion stopped before its next step and kept nothing."""


@dataclasses.dataclass(frozen=True)
class PTIPreset:
    """Settings of an inversion. Defaults are PTI's own (its configs/hyperparameters.py and the
    projector it calls); see docs/pti.md for where each comes from."""
    name: str = "paper"
    # Stage 1: W projection
    w_steps: int = 450              # PTI first_inv_steps
    w_lr: float = 0.01              # peak Adam lr of the ramp (PTI's projector default; NVIDIA's own is 0.1)
    w_avg_samples: int = 600        # mapping samples for the start w and w_std (PTI passes 600; NVIDIA 10000)
    w_noise_factor: float = 0.05    # noise added to w starts at this times w_std ...
    w_noise_ramp: float = 0.75      # ... and fades (quadratically) to 0 over this fraction of the steps
    lr_rampup: float = 0.05         # fraction of steps for the lr to ramp up linearly
    lr_rampdown: float = 0.25       # fraction of steps for the cosine ramp down at the end
    noise_reg_weight: float = 1e5   # weight of the noise maps' autocorrelation penalty
    w_l2_weight: float = 0.0        # pixel MSE in stage 1 (PTI and NVIDIA: perceptual loss only)
    # Stage 2: pivotal tuning
    tune_steps: int = 350           # PTI max_pti_steps
    tune_lr: float = 3e-4           # PTI pti_learning_rate
    tune_l2_weight: float = 1.0     # PTI pt_l2_lambda
    tune_lpips_weight: float = 1.0  # PTI pt_lpips_lambda
    lpips_threshold: float = 0.06   # stop tuning once the perceptual distance is at most this (PTI)
    locality_weight: float = 0.0    # PTI's locality regularizer, weight of its MSE and of its LPIPS (PTI: 0.1 when on; off in its final config)
    locality_alpha: float = 30.0    # distance from the pivot of the regularizer's latents (PTI regulizer_alpha)
    # Both stages
    perceptual_size: int = 256      # images are area-downsampled to this before VGG (PTI: 256)

    def validate(self) -> None:
        if self.w_steps < 0 or self.tune_steps < 0:
            raise ValueError("step counts must be >= 0")
        if self.w_avg_samples < 2 or self.perceptual_size < 16:
            raise ValueError("w_avg_samples must be >= 2 and perceptual_size >= 16")
        for name in ("w_lr", "tune_lr", "w_noise_factor", "noise_reg_weight", "w_l2_weight", "tune_l2_weight",
                     "tune_lpips_weight", "locality_weight", "locality_alpha"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")


PRESETS: dict[str, PTIPreset] = {
    "paper": PTIPreset(),
    # Bearable on a CPU: under a quarter of the projection and a sixth of the tuning, VGG at 128 px.
    # To make up for the short schedules: NVIDIA's peak lr (0.1) for the projection, pixel MSE beside
    # the perceptual loss, and the tuning lr DragGAN's own PTI config uses (5e-4).
    "fast": PTIPreset(name="fast", w_steps=100, w_lr=0.1, w_l2_weight=1.0, tune_steps=60, tune_lr=5e-4,
                      perceptual_size=128),
}


def get_preset(name: str = "fast", **overrides) -> PTIPreset:
    """A preset by name ('paper' or 'fast'), with some fields replaced (e.g. w_steps=50)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    preset = dataclasses.replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
    preset.validate()
    return preset


@dataclasses.dataclass
class StageMetrics:
    """How one stage went. PSNR in dB against the target; perceptual = the distance it optimizes."""
    steps: int                  # steps actually run (tuning may stop early at the threshold)
    seconds: float
    psnr_before: float
    psnr_after: float
    perceptual_before: float
    perceptual_after: float


@dataclasses.dataclass
class InversionResult:
    G: Generator                # the tuned per-session copy (eval, requires_grad off)
    pivot_ws: torch.Tensor      # [1, num_ws, w_dim]
    target: np.ndarray          # [res, res, 3] uint8, what was inverted
    preset: PTIPreset
    projection: StageMetrics
    tuning: StageMetrics
    loss: str = "the perceptual loss"  # the description of the distance it optimized (see pti.pixel_loss)

    @torch.no_grad()
    def image(self) -> np.ndarray:
        """The reconstruction, [res, res, 3] uint8."""
        return image_to_uint8(self.G.synthesis(self.pivot_ws, noise_mode="const"))


def psnr(img: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (img is clamped to that range first)."""
    mse = float((img.detach().float().clamp(-1, 1) - target).square().mean())
    return 10 * math.log10(4.0 / max(mse, 1e-12))


def target_tensor(target: np.ndarray, G: Generator) -> torch.Tensor:
    """[res, res, 3] uint8 -> [1, 3, res, res] float32 in [-1, 1] on G's device."""
    res = G.img_resolution
    if not (isinstance(target, np.ndarray) and target.dtype == np.uint8 and target.shape == (res, res, 3)):
        got = f"{target.dtype} {target.shape}" if isinstance(target, np.ndarray) else type(target).__name__
        raise ValueError(f"the target must be a [{res}, {res}, 3] uint8 image for this {res}-px model, got {got}; "
                         f"prepare photos with pti.image_io.load_image(path, {res})")
    device = next(G.parameters()).device
    return torch.from_numpy(target).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise InversionCancelled("the inversion was cancelled")


def _noise_buffers(G: Generator) -> list[torch.Tensor]:
    return [buf for name, buf in G.synthesis.named_buffers() if name.endswith("noise_const")]


def _noise_regularization(noise_maps: list[torch.Tensor]) -> torch.Tensor:
    """Squared autocorrelation at 1-px shifts, at every scale down to 8x8 (NVIDIA's projector)."""
    reg = noise_maps[0].new_zeros([])
    for v in noise_maps:
        noise = v[None, None]  # [1, 1, H, W]
        while True:
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return reg


@torch.no_grad()
def _measure(G: Generator, ws: torch.Tensor, target: torch.Tensor, target_feats: list[torch.Tensor],
             perceptual: Distance, size: int) -> tuple[float, float]:
    img = G.synthesis(ws, noise_mode="const")
    return psnr(img, target), float(perceptual.distance(target_feats, perceptual.features(img, size)).sum())


def w_statistics(G: Generator, samples: int) -> tuple[torch.Tensor, float]:
    """Mean [1, w_dim] and spread (root mean squared distance to the mean) of `samples` mapped z's.

    Fixed z's (RandomState(123), as NVIDIA's projector) so that inversions are repeatable.
    """
    if G.c_dim > 0:
        raise ValueError("inversion needs an unconditional generator (this one takes class labels)")
    device = next(G.parameters()).device
    z = torch.from_numpy(np.random.RandomState(123).randn(samples, G.z_dim)).float().to(device)
    with torch.no_grad():
        w = G.mapping(z)[:, 0]  # [samples, w_dim]
    w_avg = w.mean(dim=0, keepdim=True)
    return w_avg, float((w - w_avg).square().sum(dim=1).mean().sqrt())


def project_w(G: Generator, target: np.ndarray, perceptual: Distance, preset: PTIPreset,
              progress: Progress | None = None, cancel: threading.Event | None = None, seed: int = 0,
              ) -> tuple[torch.Tensor, StageMetrics]:
    """Stage 1. Returns the pivot ws [1, num_ws, w_dim] and the stage's metrics.

    Optimizes G's noise_const buffers in place and leaves them there: pass a per-session copy.
    """
    _check(cancel)
    t0 = time.perf_counter()
    G.eval().requires_grad_(False)
    device = next(G.parameters()).device
    size = preset.perceptual_size
    target_t = target_tensor(target, G)                                      # [1, 3, res, res]
    target_feats = perceptual.features(target_t, size)
    w_avg, w_std = w_statistics(G, preset.w_avg_samples)                     # [1, w_dim], scalar
    psnr0, perc0 = _measure(G, w_avg[:, None].repeat(1, G.num_ws, 1), target_t, target_feats, perceptual, size)

    gen = torch.Generator().manual_seed(seed)
    noise_bufs = _noise_buffers(G)
    w_opt = w_avg.clone().requires_grad_(True)                               # [1, w_dim]
    opt = torch.optim.Adam([w_opt] + noise_bufs, betas=(0.9, 0.999), lr=preset.w_lr)
    total = preset.w_steps
    steps = 0
    try:
        for buf in noise_bufs:
            buf.requires_grad_(True)
        for step in range(total):
            _check(cancel)
            t = step / total
            w_noise_scale = w_std * preset.w_noise_factor * max(0.0, 1.0 - t / preset.w_noise_ramp) ** 2
            lr_ramp = min(1.0, (1.0 - t) / preset.lr_rampdown) if preset.lr_rampdown > 0 else 1.0
            lr_ramp = 0.5 - 0.5 * math.cos(lr_ramp * math.pi)
            lr_ramp = lr_ramp * (min(1.0, t / preset.lr_rampup) if preset.lr_rampup > 0 else 1.0)
            for group in opt.param_groups:
                group["lr"] = preset.w_lr * lr_ramp

            w_noise = torch.randn(w_opt.shape, generator=gen).to(device) * w_noise_scale
            ws = (w_opt + w_noise)[:, None].repeat(1, G.num_ws, 1)           # [1, num_ws, w_dim]
            img = G.synthesis(ws, noise_mode="const")
            loss = perceptual.distance(target_feats, perceptual.features(img, size)).sum()
            if preset.w_l2_weight > 0:
                loss = loss + preset.w_l2_weight * F.mse_loss(img, target_t)
            if noise_bufs and preset.noise_reg_weight > 0:
                loss = loss + preset.noise_reg_weight * _noise_regularization(noise_bufs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # keep each noise map zero-mean, unit-variance
                for buf in noise_bufs:
                    buf -= buf.mean()
                    buf *= buf.square().mean().rsqrt()
            steps += 1
            if progress is not None:
                progress("project", steps, total, float(loss.detach()))
    finally:
        for buf in noise_bufs:
            buf.requires_grad_(False)
            buf.grad = None
    pivot = w_opt.detach()[:, None].repeat(1, G.num_ws, 1)                   # [1, num_ws, w_dim]
    psnr1, perc1 = _measure(G, pivot, target_t, target_feats, perceptual, size)
    return pivot, StageMetrics(steps, time.perf_counter() - t0, psnr0, psnr1, perc0, perc1)


def pivotal_tuning(G: Generator, pivot_ws: torch.Tensor, target: np.ndarray, perceptual: Distance,
                   preset: PTIPreset, progress: Progress | None = None, cancel: threading.Event | None = None,
                   base_G: Generator | None = None, seed: int = 0) -> StageMetrics:
    """Stage 2: fine-tune G's synthesis weights in place (pass a per-session copy) around pivot_ws.

    base_G, the untuned generator, is needed only for the locality regularizer (locality_weight > 0).
    """
    _check(cancel)
    t0 = time.perf_counter()
    assert pivot_ws.shape == (1, G.num_ws, G.w_dim), pivot_ws.shape
    if preset.locality_weight > 0 and base_G is None:
        raise ValueError("the locality regularizer needs base_G, the generator before tuning")
    device = next(G.parameters()).device
    size = preset.perceptual_size
    pivot_ws = pivot_ws.detach().to(device, torch.float32)
    target_t = target_tensor(target, G)
    target_feats = perceptual.features(target_t, size)
    psnr0, perc0 = _measure(G, pivot_ws, target_t, target_feats, perceptual, size)

    gen = torch.Generator().manual_seed(seed + 1)
    threshold = getattr(perceptual, "stop_threshold", None)
    threshold = preset.lpips_threshold if threshold is None else threshold  # LPIPS's scale, not the pixel loss's
    params = list(G.synthesis.parameters())
    opt = torch.optim.Adam(params, lr=preset.tune_lr)
    total = preset.tune_steps
    steps = 0
    G.eval()
    try:
        G.synthesis.requires_grad_(True)
        for _ in range(total):
            _check(cancel)
            img = G.synthesis(pivot_ws, noise_mode="const")
            dist = perceptual.distance(target_feats, perceptual.features(img, size)).sum()
            if float(dist.detach()) <= threshold:  # PTI tests before stepping
                break
            loss = preset.tune_l2_weight * F.mse_loss(img, target_t) + preset.tune_lpips_weight * dist
            if preset.locality_weight > 0:
                loss = loss + preset.locality_weight * _locality_loss(G, base_G, pivot_ws, perceptual, preset, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            if progress is not None:
                progress("tune", steps, total, float(loss.detach()))
    finally:
        G.requires_grad_(False)
        for p in params:
            p.grad = None
    psnr1, perc1 = _measure(G, pivot_ws, target_t, target_feats, perceptual, size)
    return StageMetrics(steps, time.perf_counter() - t0, psnr0, psnr1, perc0, perc1)


def _locality_loss(G: Generator, base_G: Generator, pivot_ws: torch.Tensor, perceptual: Distance,
                   preset: PTIPreset, gen: torch.Generator) -> torch.Tensor:
    """PTI's locality regularizer: away from the pivot, the tuned G should render what base_G renders.

    One latent at distance `locality_alpha` from the pivot, towards a random truncated (psi 0.5) w;
    noise_mode 'none' as in PTI. MSE + perceptual distance between the two renderings.
    """
    device = pivot_ws.device
    with torch.no_grad():
        z = torch.randn([1, base_G.z_dim], generator=gen).to(device)
        w = base_G.mapping(z, truncation_psi=0.5)                           # [1, num_ws, w_dim]
        direction = w - pivot_ws
        w_r = pivot_ws + preset.locality_alpha * direction / direction.norm()
        old = base_G.synthesis(w_r, noise_mode="none")
    new = G.synthesis(w_r, noise_mode="none")
    size = preset.perceptual_size
    return F.mse_loss(new, old) + perceptual(new, old, size).sum()


def invert(G: Generator, target: np.ndarray, perceptual: Distance, preset: PTIPreset | str = "fast",
           progress: Progress | None = None, cancel: threading.Event | None = None, seed: int = 0,
           ) -> InversionResult:
    """Both stages on a per-session deep copy of G; G itself is only read.

    target: [res, res, 3] uint8 at G's resolution (see pti.image_io). Raises InversionCancelled
    when `cancel` is set (checked before every step), ValueError for a bad target or preset.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    preset.validate()
    target_tensor(target, G)  # fail on a bad target before the (large) copy
    g_dev, p_dev = next(G.parameters()).device, loss_device(perceptual)
    if g_dev != p_dev:
        raise ValueError(f"the generator is on {g_dev} but the perceptual network on {p_dev}: "
                         f"load it with load_perceptual({str(g_dev)!r})")
    _check(cancel)
    work = copy.deepcopy(G).eval().requires_grad_(False)
    pivot, projection = project_w(work, target, perceptual, preset, progress, cancel, seed)
    tuning = pivotal_tuning(work, pivot, target, perceptual, preset, progress, cancel, base_G=G, seed=seed)
    return InversionResult(work, pivot, target.copy(), preset, projection, tuning,
                           getattr(perceptual, "description", "the perceptual loss"))
