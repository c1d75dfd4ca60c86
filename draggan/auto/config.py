"""`AutoConfig`: every size and setting of Auto DragGAN in one typed, bounded dataclass.

Two presets: `paper` (the sizes of Cai et al. 2024) and `small` (sized to train on a 2-core CPU for
the 64-px toy-faces model in about two hours). See docs/auto_draggan.md for the choices the paper
leaves open and the measurements behind the small preset.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from stylegan2.errors import UserError


class AutoConfigError(UserError):
    """An Auto DragGAN config that is not one of ours or is out of bounds."""


@dataclasses.dataclass(frozen=True)
class AutoConfig:
    # --- the drag sequence -------------------------------------------------------------------
    rows: int = 6                     # W+ rows that move (pose, shape, layout); clipped to num_ws
    n_steps: int = 5                  # autoregressive sub-steps n (the paper's sweet spot)
    step_lambda: float = 0.3          # λ: w_i = w_{i-1} + λ (w* − w_{i-1}); 5 steps cover 1 − 0.7^5 = 83 %
    feature_block: int = 6            # 1-based synthesis block whose features F0 the predictor reads
    patch: int = 7                    # side of the feature patches at handles and targets (image pixels)
    max_points: int = 68              # most handle/target pairs one drag may have
    train_points: int = 16            # most pairs per training sample (1..this, uniformly)
    psi_min: float = 0.6              # training latents use truncation psi uniform in [psi_min, 1]
    # --- regularizer corruption ----------------------------------------------------------------
    corrupt_p: float = 0.25           # probability that a moving row is zeroed
    noise_std: float = 0.1            # std of the added Gaussian noise, in units of w's per-dim std
    # --- correspondences (pixels at 512 px; scaled by resolution / 512) -------------------------
    seq_threshold: float = 50.0       # a handle must move more than this from I_0 to I_n
    step_threshold: float = 30.0      # the drag loss uses pairs that move more than this per step
    flow_fb_tolerance: float = 8.0    # forward-backward flow disagreement allowed
    grid_stride: int = 32             # candidate points every this many pixels
    # --- network sizes ---------------------------------------------------------------------------
    d_model: int = 512                # transformer width
    heads: int = 8                    # attention heads
    ff_mult: int = 4                  # feed-forward width = ff_mult * d_model
    reg_enc_layers: int = 6           # regularizer self-attention encoder layers
    reg_dec_layers: int = 6           # regularizer cross-attention decoder layers
    pred_enc_layers: int = 6          # predictor self-attention encoder layers
    pred_dec_layers: int = 16         # predictor cross-attention decoder layers
    feat_stride: int = 4              # stride (= kernel) of the conv that turns F0 into tokens
    patch_channels: int = 32          # F0 channels kept (1x1 conv) before flattening a patch
    # --- losses ----------------------------------------------------------------------------------
    pred_weight: float = 0.1          # weight of L_pred (L1 to the pseudo latents)
    drag_weight: float = 1.0          # weight of L_drag (feature patches through the generator)
    # --- optimisation -------------------------------------------------------------------------------
    batch: int = 16                   # sequences (stage 2) per step; stage 1 uses 4x this many latents
    stage1_steps: int = 25_000        # regularizer-only steps (the paper: 50 epochs)
    stage2_steps: int = 75_000        # joint steps (the paper: 150 epochs)
    lr_stage1: float = 1e-3           # regularizer lr in stage 1
    lr_reg: float = 1e-5              # regularizer lr in stage 2
    lr_pred: float = 1e-5             # predictor peak lr in stage 2 (cosine annealing)
    lr_pred_min: float = 1e-7         # cosine floor
    cosine_period: int = 15_000       # stage-2 steps per cosine period (the paper: 30 epochs)
    warmup_steps: int = 0             # linear warm-up of both stage-2 lrs
    self_feed: float = 0.0            # share of stage-2 steps whose queries are the model's own predictions
                                      #   (as at inference) instead of the true sequence (0 = the paper)
    seed: int = 0                     # seed of all training randomness (data is a function of seed and step)

    def __post_init__(self) -> None:
        for name, lo, hi in _BOUNDS:
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise AutoConfigError(f"Auto DragGAN config {name}={value!r} is outside [{lo}, {hi}]; "
                                      f"the file is damaged or not ours")
        if self.d_model % self.heads:
            raise AutoConfigError(f"Auto DragGAN config d_model {self.d_model} is not a multiple of heads "
                                  f"{self.heads}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "AutoConfig":
        """Parse and bound-check; unknown or mistyped keys are an AutoConfigError, missing ones (a file
        from before the field existed) take their defaults."""
        try:
            raw: Any = json.loads(text)
        except ValueError:
            raise AutoConfigError("Auto DragGAN config is not JSON; the file is damaged or not ours") from None
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        if not isinstance(raw, dict) or not set(raw) <= set(fields):
            raise AutoConfigError("Auto DragGAN config has unknown keys; the file is damaged or from a "
                                  "newer version")
        for k, v in raw.items():
            want = float if fields[k] in (float, "float") else int
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (want is int and not isinstance(v, int)):
                raise AutoConfigError(f"Auto DragGAN config {k}={v!r} has the wrong type")
        return cls(**{k: (float(v) if fields[k] in (float, "float") else v) for k, v in raw.items()})


# Bounds keep a hostile file from asking for huge allocations (and keep the maths meaningful).
_BOUNDS: tuple[tuple[str, float, float], ...] = (
    ("rows", 1, 64), ("n_steps", 1, 32), ("step_lambda", 1e-3, 1.0), ("feature_block", 1, 16),
    ("patch", 1, 15), ("max_points", 1, 256), ("train_points", 1, 256), ("psi_min", 0.0, 1.0),
    ("corrupt_p", 0.0, 1.0), ("noise_std", 0.0, 10.0), ("seq_threshold", 0.0, 1024.0),
    ("step_threshold", 0.0, 1024.0), ("flow_fb_tolerance", 0.0, 1024.0), ("grid_stride", 1, 512),
    ("d_model", 8, 2048), ("heads", 1, 64), ("ff_mult", 1, 8), ("reg_enc_layers", 0, 32),
    ("reg_dec_layers", 1, 32), ("pred_enc_layers", 0, 32), ("pred_dec_layers", 1, 64), ("feat_stride", 1, 64),
    ("patch_channels", 1, 1024), ("pred_weight", 0.0, 1e3), ("drag_weight", 0.0, 1e3), ("batch", 1, 4096),
    ("stage1_steps", 0, 10**8), ("stage2_steps", 0, 10**8), ("lr_stage1", 0.0, 1.0), ("lr_reg", 0.0, 1.0),
    ("lr_pred", 0.0, 1.0), ("lr_pred_min", 0.0, 1.0), ("cosine_period", 1, 10**8), ("warmup_steps", 0, 10**8), ("self_feed", 0.0, 1.0),
    ("seed", 0, 2**31 - 1),
)

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # Measured on the 64-px toy model on one CPU thread (docs/auto_draggan.md, "Choosing the small preset").
    "small": dict(d_model=64, heads=4, ff_mult=2, reg_enc_layers=2, reg_dec_layers=2, pred_enc_layers=2,
                  pred_dec_layers=4, patch_channels=16, grid_stride=4, seq_threshold=24.0, step_threshold=4.0,
                  batch=8, stage1_steps=4_000, stage2_steps=8_000,
                  lr_stage1=1e-3, lr_reg=1e-4, lr_pred=1e-4, lr_pred_min=1e-6, cosine_period=8_000,
                  warmup_steps=100),
}


def preset(name: str, num_ws: int, feature_block: int | None = None, **overrides: Any) -> AutoConfig:
    """The named preset for a generator with `num_ws` W+ rows; `feature_block` None keeps the default (6)."""
    if name not in PRESETS:
        raise AutoConfigError(f"unknown Auto DragGAN preset {name!r}; choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[name], **overrides)
    if feature_block is not None:
        values["feature_block"] = feature_block
    values["rows"] = min(values.get("rows", AutoConfig.rows), num_ws)
    return AutoConfig(**values)
