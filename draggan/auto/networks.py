"""The two networks of Auto DragGAN (Cai et al. 2024): the Latent Regularizer and the Latent Predictor.

Both work on the first `cfg.rows` rows of W+ ("moving rows"); the other rows are copied. Latents are
standardized with the generator's per-dimension W statistics (`w_mean`, `w_std`, stored with the
model) before they enter a network, and both networks predict a *residual*: the regularizer adds
a correction to the corrupted rows, the predictor adds a step to the previous latent. Zero-initialised
output heads make an untrained regularizer the identity and an untrained predictor "no motion",
which trained faster than absolute outputs in our measurements (docs/auto_draggan.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AutoConfig


def mlp(d_in: int, d_out: int, hidden: int) -> nn.Sequential:
    """Linear-GELU-Linear."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


def _encoder(cfg: AutoConfig, layers: int) -> nn.Module:
    if layers == 0:
        return nn.Identity()
    layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.heads, cfg.ff_mult * cfg.d_model, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def _decoder(cfg: AutoConfig, layers: int) -> nn.TransformerDecoder:
    layer = nn.TransformerDecoderLayer(cfg.d_model, cfg.heads, cfg.ff_mult * cfg.d_model, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(cfg.d_model))


def _zero_head(d_in: int, d_out: int) -> nn.Linear:
    head = nn.Linear(d_in, d_out)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def sample_patches(feat: torch.Tensor, xy: torch.Tensor, image_size: int, patch: int) -> torch.Tensor:
    """`patch` x `patch` bilinear samples of `feat` (read as if resized to the image) around points.

    feat: [B, C, s, s]; xy: [B, K, 2] (x, y) image pixels -> [B, K, C, patch, patch].
    One bilinear sample of the native map at the resized map's pixel positions (align_corners=False);
    the border value repeats outside the map.
    """
    B, K = xy.shape[:2]
    r = torch.arange(patch, device=xy.device, dtype=xy.dtype) - (patch - 1) / 2
    offsets = torch.stack(torch.meshgrid(r, r, indexing="xy"), dim=-1)            # [P, P, 2] (dx, dy)
    pos = xy[:, :, None, None, :] + offsets                                        # [B, K, P, P, 2]
    grid = (pos + 0.5) / image_size * 2 - 1
    out = F.grid_sample(feat, grid.reshape(B, K * patch, patch, 2).to(feat.dtype), mode="bilinear",
                        padding_mode="border", align_corners=False)               # [B, C, K*P, P]
    return out.reshape(B, feat.shape[1], K, patch, patch).permute(0, 2, 1, 3, 4)


class LatentRegularizer(nn.Module):
    """Restores corrupted moving rows of a W+ latent from the clean rows (keeps edits on the manifold).

    Encoder: self-attention over the `rows` noisy rows (one token each). Decoder: `rows` queries made
    from the clean rows (an MLP, plus a position embedding, plus the query's own encoded noisy row),
    cross-attending to the encoded noisy rows.
    Input and output: w [B, num_ws, w_dim] (raw W+); rows >= `rows` pass through unchanged.
    """

    def __init__(self, cfg: AutoConfig, num_ws: int, w_dim: int):
        super().__init__()
        d, self.rows, self.n_clean = cfg.d_model, cfg.rows, num_ws - cfg.rows
        self.embed_noisy = mlp(w_dim, d, d)
        self.pos_noisy = nn.Parameter(0.02 * torch.randn(self.rows, d))
        self.encoder = _encoder(cfg, cfg.reg_enc_layers)
        self.query = mlp(self.n_clean * w_dim, self.rows * d, d) if self.n_clean else None
        self.pos_query = nn.Parameter(0.02 * torch.randn(self.rows, d))
        self.decoder = _decoder(cfg, cfg.reg_dec_layers)
        self.head = _zero_head(d, w_dim)

    def forward(self, w: torch.Tensor, w_mean: torch.Tensor, w_std: torch.Tensor) -> torch.Tensor:
        """w [B, num_ws, w_dim] -> restored [B, num_ws, w_dim]; w_mean, w_std: [w_dim] standardization."""
        x = (w - w_mean) / w_std                                                  # [B, num_ws, w_dim]
        noisy = x[:, :self.rows]
        memory = self.encoder(self.embed_noisy(noisy) + self.pos_noisy)           # [B, rows, d]
        # Each query also carries its own row's encoding: the decoder then learns a correction of that
        # row instead of first having to find it by position (the paper's queries are the clean rows only).
        q = self.pos_query + memory
        if self.query is not None:
            q = q + self.query(x[:, self.rows:].flatten(1)).view(len(w), self.rows, -1)
        restored = noisy + self.head(self.decoder(q, memory))                     # [B, rows, w_dim]
        return torch.cat([restored * w_std + w_mean, w[:, self.rows:]], dim=1)


class LatentPredictor(nn.Module):
    """Predicts the latent's motion w_1..w_n for a drag from F0, handle/target patches and positions.

    Memory tokens: F0 [B, C, s, s] through a strided conv (one token per `feat_stride`^2 cells, plus a
    learned 2-D position embedding), and one token per handle/target pair: MLP of the two 7x7 patches of
    F0 (channels first reduced by a 1x1 conv) and of the pair's normalised coordinates (the paper feeds
    patches only; without coordinates the target's *place* would be invisible to the network).
    A self-attention encoder mixes them (padding pairs masked out).
    Queries: MLP(standardized moving rows of w_{i-1}) + step embedding i, for i = 1..m; a causal
    cross-attention decoder and a zero-initialised head give the step w_i − w_{i-1}.
    """

    def __init__(self, cfg: AutoConfig, num_ws: int, w_dim: int, feat_channels: int, feat_size: int,
                 image_size: int):
        super().__init__()
        d, self.cfg, self.rows, self.image_size = cfg.d_model, cfg, cfg.rows, image_size
        stride = min(cfg.feat_stride, feat_size)
        self.feat_conv = nn.Conv2d(feat_channels, d, kernel_size=stride, stride=stride)
        n_tokens = (feat_size // stride) ** 2
        self.feat_pos = nn.Parameter(0.02 * torch.randn(n_tokens, d))
        self.feat_mlp = mlp(d, d, d)
        self.patch_reduce = nn.Conv2d(feat_channels, cfg.patch_channels, kernel_size=1)
        self.point_mlp = mlp(2 * cfg.patch_channels * cfg.patch ** 2 + 6, d, d)
        self.kind = nn.Parameter(0.02 * torch.randn(2, d))                        # feature token, point token
        self.memory_mlp = mlp(d, d, d)
        self.encoder = _encoder(cfg, cfg.pred_enc_layers)
        self.query = mlp(self.rows * w_dim, d, d)
        self.step_pos = nn.Parameter(0.02 * torch.randn(cfg.n_steps, d))
        self.decoder = _decoder(cfg, cfg.pred_dec_layers)
        self.head = nn.Sequential(mlp(d, d, d), nn.GELU(), _zero_head(d, self.rows * w_dim))

    def encode(self, feat0: torch.Tensor, handles_xy: torch.Tensor, targets_xy: torch.Tensor,
               point_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The drag's memory. feat0 [B, C, s, s]; handles_xy, targets_xy [B, K, 2] (x, y) pixels;
        point_mask [B, K] bool (False = padding). -> (memory [B, T + K, d], padding mask [B, T + K])."""
        B = len(feat0)
        tokens = self.feat_conv(feat0).flatten(2).transpose(1, 2) + self.feat_pos     # [B, T, d]
        tokens = self.feat_mlp(tokens) + self.kind[0]
        reduced = self.patch_reduce(feat0)
        ph = sample_patches(reduced, handles_xy, self.image_size, self.cfg.patch).flatten(2)  # [B, K, c*P*P]
        pt = sample_patches(reduced, targets_xy, self.image_size, self.cfg.patch).flatten(2)
        h = handles_xy / self.image_size * 2 - 1
        t = targets_xy / self.image_size * 2 - 1
        points = self.point_mlp(torch.cat([ph, pt, h, t, (t - h) * 4], dim=-1)) + self.kind[1]  # [B, K, d]
        memory = self.memory_mlp(torch.cat([tokens, points], dim=1))
        pad = torch.cat([torch.zeros(B, tokens.shape[1], dtype=torch.bool, device=feat0.device), ~point_mask], 1)
        if isinstance(self.encoder, nn.TransformerEncoder):
            memory = self.encoder(memory, src_key_padding_mask=pad)
        return memory, pad

    def decode(self, memory: torch.Tensor, pad: torch.Tensor, w_prev: torch.Tensor, w_mean: torch.Tensor,
               w_std: torch.Tensor) -> torch.Tensor:
        """Next latents for each prefix. w_prev [B, m, num_ws, w_dim] = w_0..w_{m-1} (m <= n_steps)
        -> [B, m, num_ws, w_dim] = ŵ_1..ŵ_m (ŵ_i sees w_0..w_{i-1} only)."""
        B, m = w_prev.shape[:2]
        x = ((w_prev[:, :, :self.rows] - w_mean) / w_std).flatten(2)              # [B, m, rows*w_dim]
        q = self.query(x) + self.step_pos[:m]
        causal = torch.triu(torch.ones(m, m, dtype=torch.bool, device=q.device), diagonal=1)
        out = self.decoder(q, memory, tgt_mask=causal, memory_key_padding_mask=pad)
        step = self.head(out).view(B, m, self.rows, -1) * w_std                    # [B, m, rows, w_dim]
        return torch.cat([w_prev[:, :, :self.rows] + step, w_prev[:, :, self.rows:]], dim=2)


class AutoDragModel(nn.Module):
    """Predictor + regularizer for one generator, with that generator's W statistics.

    `base_sha256` and `spec` say which generator the model was trained for (checked on load).
    """

    def __init__(self, cfg: AutoConfig, num_ws: int, w_dim: int, feat_channels: int, feat_size: int,
                 image_size: int, base_sha256: str = "", spec: str = ""):
        super().__init__()
        self.cfg, self.base_sha256, self.spec = cfg, base_sha256, spec
        self.num_ws, self.w_dim = num_ws, w_dim
        self.feat_channels, self.feat_size, self.image_size = feat_channels, feat_size, image_size
        self.register_buffer("w_mean", torch.zeros(w_dim))
        self.register_buffer("w_std", torch.ones(w_dim))
        self.regularizer = LatentRegularizer(cfg, num_ws, w_dim)
        self.predictor = LatentPredictor(cfg, num_ws, w_dim, feat_channels, feat_size, image_size)

    def regularize(self, w: torch.Tensor) -> torch.Tensor:
        """[..., num_ws, w_dim] -> same shape, moving rows restored onto the manifold."""
        shape = w.shape
        return self.regularizer(w.reshape(-1, *shape[-2:]), self.w_mean, self.w_std).reshape(shape)

    def predict(self, memory: torch.Tensor, pad: torch.Tensor, w_prev: torch.Tensor) -> torch.Tensor:
        """[B, m, num_ws, w_dim] prefixes -> [B, m, num_ws, w_dim] next latents (not regularized)."""
        return self.predictor.decode(memory, pad, w_prev, self.w_mean, self.w_std)
