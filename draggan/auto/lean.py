"""The rollout's arithmetic at batch 1, lean: the numbers of the nn.Transformer modules at under half their cost.

`rollout` feeds the predictor one new query per autoregressive step. Through the modules
(`LatentPredictor.decode`, `LatentRegularizer.forward`) every step re-runs the decoder over the whole
prefix, projects the memory's keys and values again in every layer, builds a causal mask and walks the
modules' generic batched paths: about 1,800 ATen calls per edit at 5 steps, where a call costs
microseconds and the arithmetic (d_model 64 on the toy model) almost nothing. `LeanRollout` computes the
same values from the same weights (read from the modules, so the trained model's file loads unchanged),
as the modules define them (pre-norm layers, exact GELU, no dropout at inference), with:
  - a key/value cache per predictor decoder layer: each step's one new query attends to the keys of the
    earlier steps, computed once (the decoder is causal: a position never depends on later ones);
  - the predictor's cross-attention folded per edit: the memory's keys and values never change during an
    edit, so the query projection times the keys (scores for every head in one matmul) and the values
    times the output projection (the attended output in one matmul) are multiplied out once;
  - the regularizer's query part made once per edit from the rows that never move (w0's rows >= `rows`);
  - fused q/k/v projections from the modules' own `in_proj_weight`, 2-D [tokens, d_model] activations
    (batch 1) so heads split and merge by views, and the weights gathered once per edit (`_Plan`).
`tests/test_auto_lean.py` holds it to the modules within 1e-5 on random weights and on the shipped model.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .networks import AutoDragModel, LatentPredictor, sample_patches


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU, x/2 (1 + erf(x / sqrt 2)), as ATen's own kernel computes it. F.gelu on a small CPU tensor
    costs several times this (it sets up a oneDNN primitive per call)."""
    return torch.erf(x * (1 / math.sqrt(2))).add_(1).mul_(x).mul_(0.5)


class _Norm(NamedTuple):
    shape: tuple[int, ...]
    weight: torch.Tensor
    bias: torch.Tensor
    eps: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)


class _Linear(NamedTuple):
    weight: torch.Tensor
    bias: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class _MLP(NamedTuple):
    """Linear-GELU-Linear (`networks.mlp`, a layer's feed-forward block)."""
    first: _Linear
    second: _Linear

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(gelu(self.first(x)))


class _Attention(NamedTuple):
    heads: int
    qkv: _Linear           # the fused in_proj: rows q, k, v
    out: _Linear


class _Layer(NamedTuple):
    """A pre-norm encoder (cross None) or decoder layer."""
    norm1: _Norm
    self_attn: _Attention
    norm2: _Norm
    cross: _Attention | None
    norm3: _Norm | None
    ff: _MLP


def _norm(m: nn.LayerNorm) -> _Norm:
    return _Norm(tuple(m.normalized_shape), m.weight, m.bias, m.eps)


def _linear(m: nn.Linear) -> _Linear:
    return _Linear(m.weight, m.bias)


def _mlp(seq: nn.Sequential) -> _MLP:
    return _MLP(_linear(seq[0]), _linear(seq[2]))


def _attention(m: nn.MultiheadAttention) -> _Attention:
    assert m.batch_first and m._qkv_same_embed_dim and m.in_proj_bias is not None, \
        "LeanRollout reads batch-first attention with a fused in_proj (networks._encoder/_decoder)"
    return _Attention(m.num_heads, _Linear(m.in_proj_weight, m.in_proj_bias), _linear(m.out_proj))


def _layer(m: nn.Module) -> _Layer:
    # The arithmetic below is that of the layers networks._encoder/_decoder build; refuse anything else.
    assert m.norm_first and (m.activation is F.gelu or isinstance(m.activation, nn.GELU)), \
        "LeanRollout reads pre-norm GELU layers (networks._encoder/_decoder)"
    ff = _MLP(_linear(m.linear1), _linear(m.linear2))
    if isinstance(m, nn.TransformerDecoderLayer):
        return _Layer(_norm(m.norm1), _attention(m.self_attn), _norm(m.norm2), _attention(m.multihead_attn),
                      _norm(m.norm3), ff)
    return _Layer(_norm(m.norm1), _attention(m.self_attn), _norm(m.norm2), None, None, ff)


def _encoder_layers(encoder: nn.Module) -> list[_Layer]:
    if not isinstance(encoder, nn.TransformerEncoder):
        return []                                                                 # 0 layers: nn.Identity
    assert encoder.norm is None, "LeanRollout: the encoder has no final norm"
    return [_layer(m) for m in encoder.layers]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[n, d] -> [heads, n, d / heads] (a view)."""
    return x.view(x.shape[0], heads, -1).transpose(0, 1)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention of q [heads, n, e] over k, v [heads, T, e] -> [n, heads * e], heads
    concatenated as nn.MultiheadAttention does; bias [T]: added to the scores (-inf: a padding key)."""
    scores = torch.bmm(q, k.transpose(1, 2)).mul_(q.shape[-1] ** -0.5)
    p = (scores.add_(bias) if bias is not None else scores).softmax(-1)
    return torch.bmm(p, v).transpose(0, 1).reshape(q.shape[1], -1)


def _self_attention(x: torch.Tensor, attn: _Attention, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Self-attention over all tokens of x [n, d]; bias as `_attend`'s."""
    n = x.shape[0]
    q, k, v = attn.qkv(x).view(n, 3, attn.heads, -1).permute(1, 2, 0, 3)         # each [heads, n, d/heads]
    return attn.out(_attend(q, k, v, bias))


def _cross_attention(x: torch.Tensor, attn: _Attention, memory: torch.Tensor) -> torch.Tensor:
    """x [n, d] attends to memory [T, d], no mask."""
    d, T = x.shape[1], memory.shape[0]
    q = _heads(F.linear(x, attn.qkv.weight[:d], attn.qkv.bias[:d]), attn.heads)
    k, v = F.linear(memory, attn.qkv.weight[d:], attn.qkv.bias[d:]).view(T, 2, attn.heads, -1).permute(1, 2, 0, 3)
    return attn.out(_attend(q, k, v))


def _residual(x: torch.Tensor, layer: _Layer, memory: torch.Tensor | None, bias: torch.Tensor | None = None,
              ) -> torch.Tensor:
    """One pre-norm layer over all tokens: x + SA(LN x) [+ CA(LN x, memory)] + FF(LN x); bias: the
    self-attention's key padding (encoder layers)."""
    x = x + _self_attention(layer.norm1(x), layer.self_attn, bias)
    if layer.cross is None:
        return x + layer.ff(layer.norm2(x))
    x = x + _cross_attention(layer.norm2(x), layer.cross, memory)
    return x + layer.ff(layer.norm3(x))


class _Folded(NamedTuple):
    """One query's cross-attention to a fixed memory, multiplied out: scores = x @ qk + qk_bias, [1, heads * T]
    (the query projection times each head's keys, scaled, padding at -inf); out = softmax per head @ vo +
    out bias (each head's values times its slice of the output projection), [heads * T, d]."""
    heads: int
    qk: torch.Tensor       # [d, heads * T]
    qk_bias: torch.Tensor  # [heads * T]
    vo: torch.Tensor       # [heads * T, d]
    out_bias: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.addmm(self.qk_bias, x, self.qk).view(self.heads, -1).softmax(-1)
        return torch.addmm(self.out_bias, p.view(1, -1), self.vo)


def _fold(attn: _Attention, memory: torch.Tensor, pad: torch.Tensor) -> _Folded:
    """Fold a cross-attention to memory [T, d] (pad [T] True = ignored) for single queries."""
    T, d = memory.shape
    H = attn.heads
    e = d // H
    w, b = attn.qkv.weight, attn.qkv.bias
    k, v = F.linear(memory, w[d:], b[d:]).view(T, 2, H, e).permute(1, 2, 0, 3)      # each [H, T, e]
    scale = e ** -0.5
    wq, bq = w[:d].view(H, e, d), b[:d].view(H, 1, e)
    qk = torch.bmm(k, wq).mul_(scale)                                              # [H, T, d]
    qk_bias = torch.bmm(bq, k.transpose(1, 2)).mul_(scale).view(H, T)              # [H, T]
    qk_bias = qk_bias.masked_fill(pad[None], -math.inf).reshape(-1)
    vo = torch.bmm(v, attn.out.weight.view(d, H, e).permute(1, 2, 0))            # [H, T, d]
    return _Folded(H, qk.reshape(H * T, d).t(), qk_bias, vo.reshape(H * T, d), attn.out.bias)


def encode(pred: LatentPredictor, feat0: torch.Tensor, handles_xy: torch.Tensor, targets_xy: torch.Tensor,
           point_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`pred.encode(...)` at batch 1, the same numbers in fewer calls: the strided feature conv (kernel = stride)
    as one matmul over the map's cells, the handles' and targets' patches in one sample, the encoder lean."""
    assert feat0.shape[0] == 1, "lean encode is batch 1"
    conv, cfg = pred.feat_conv, pred.cfg
    s, C = conv.stride[0], feat0.shape[1]
    assert conv.kernel_size == (s, s) and conv.stride == (s, s) and conv.padding == (0, 0), "a strided patch conv"
    n = feat0.shape[2] // s
    cells = feat0[0, :, :n * s, :n * s].reshape(C, n, s, n, s).permute(1, 3, 0, 2, 4).reshape(n * n, C * s * s)
    tokens = torch.addmm(conv.bias, cells, conv.weight.view(conv.out_channels, -1).t()) + pred.feat_pos
    tokens = _mlp(pred.feat_mlp)(tokens) + pred.kind[0]                           # [T, d]
    reduced = F.conv2d(feat0, pred.patch_reduce.weight, pred.patch_reduce.bias)
    K = handles_xy.shape[1]
    patches = sample_patches(reduced, torch.cat([handles_xy, targets_xy], dim=1), pred.image_size, cfg.patch)
    ph, pt = patches[0].reshape(2, K, -1)                                         # [K, c * P * P] each
    h = handles_xy[0] / pred.image_size * 2 - 1
    t = targets_xy[0] / pred.image_size * 2 - 1
    points = _mlp(pred.point_mlp)(torch.cat([ph, pt, h, t, (t - h) * 4], dim=-1)) + pred.kind[1]  # [K, d]
    memory = _mlp(pred.memory_mlp)(torch.cat([tokens, points]))                  # [T + K, d]
    pad = torch.cat([torch.zeros(n * n, dtype=torch.bool, device=feat0.device), ~point_mask[0]])
    bias = torch.zeros(pad.shape, dtype=memory.dtype, device=memory.device).masked_fill_(pad, -math.inf) \
        if bool(pad.any()) else None
    for layer in _encoder_layers(pred.encoder):
        memory = _residual(memory, layer, None, bias)
    return memory[None], pad[None]


class LeanRollout:
    """The predictor's and regularizer's inference for one edit at batch 1 (see the module's docstring).

        lean = LeanRollout(model, memory, pad, w0)   # memory, pad: `encode`'s (or the module's), batch 1
        w1 = lean.regularize(lean.predict(w0))        # each [1, num_ws, w_dim], as model.predict / regularize
        w2 = lean.regularize(lean.predict(w1))        # step i's input must be step i-1's output (the cache)

    `predict(w)` equals `model.predict(memory, pad, stack([w0, ..., w]))[:, -1]` and `regularize(w)` equals
    `model.regularize(w)` for latents whose rows past `rows` are w0's (as every rollout latent's are).
    Inference only: call it under torch.no_grad().
    """

    def __init__(self, model: AutoDragModel, memory: torch.Tensor, pad: torch.Tensor, w0: torch.Tensor):
        assert memory.shape[0] == 1 and w0.shape[0] == 1, "LeanRollout is batch 1"
        pred, reg = model.predictor, model.regularizer
        self.rows, self.mean, self.std = model.cfg.rows, model.w_mean, model.w_std
        self.tail = w0[:, self.rows:]                                              # [1, num_ws - rows, w_dim]
        # Predictor: its weights, each layer's cross-attention to this edit's memory folded, the step cache.
        self.query, self.step_pos = _mlp(pred.query), pred.step_pos
        self.layers = [_layer(m) for m in pred.decoder.layers]
        self.cross = [_fold(layer.cross, memory[0], pad[0]) for layer in self.layers]
        self.final = _norm(pred.decoder.norm)
        self.head = (_mlp(pred.head[0]), _linear(pred.head[2]))                   # Sequential(mlp, GELU, Linear)
        heads, d = self.layers[0].self_attn.heads, pred.step_pos.shape[1]
        self.cache = memory.new_empty(len(self.layers), 2, heads, pred.cfg.n_steps, d // heads)
        self.step = 0
        # Regularizer: its weights, and the query part read from the rows that never move (w0's), once.
        self.embed, self.pos_noisy = _mlp(reg.embed_noisy), reg.pos_noisy
        self.reg_encoder = _encoder_layers(reg.encoder)
        self.reg_decoder = [_layer(m) for m in reg.decoder.layers]
        self.reg_final, self.reg_head = _norm(reg.decoder.norm), _linear(reg.head)
        self.reg_query = reg.pos_query
        if reg.query is not None:
            x_tail = ((self.tail[0] - self.mean) / self.std).reshape(1, -1)          # [1, (num_ws - rows) w_dim]
            self.reg_query = self.reg_query + _mlp(reg.query)(x_tail).view(self.rows, -1)

    def predict(self, w_prev: torch.Tensor) -> torch.Tensor:
        """The next latent [1, num_ws, w_dim] after w_prev (w0 first, then each previous output)."""
        i = self.step
        assert i < self.cache.shape[3], "LeanRollout: more steps than the predictor has step embeddings"
        self.step += 1
        moving = w_prev[0, :self.rows]                                             # [rows, w_dim]
        x = self.query(((moving - self.mean) / self.std).view(1, -1)) + self.step_pos[i]  # [1, d]
        for layer, cross, cache in zip(self.layers, self.cross, self.cache):
            attn = layer.self_attn
            q, kv = attn.qkv(layer.norm1(x)).view(3, attn.heads, 1, -1).split([1, 2])  # [1|2, heads, 1, e]
            cache[:, :, i:i + 1] = kv
            keys, values = cache[:, :, :i + 1]                                     # [heads, i + 1, e]
            x = x + attn.out(_attend(q[0], keys, values))
            x = x + cross(layer.norm2(x))
            x = x + layer.ff(layer.norm3(x))
        mlp, last = self.head
        step = last(gelu(mlp(self.final(x))))                                      # [1, rows * w_dim]
        moved = moving + step.view(self.rows, -1) * self.std
        return torch.cat([moved[None], self.tail], dim=1)

    def regularize(self, w: torch.Tensor) -> torch.Tensor:
        """`model.regularize(w)` for a latent [1, num_ws, w_dim] whose rows past `rows` are w0's."""
        noisy = (w[0, :self.rows] - self.mean) / self.std                          # [rows, w_dim]
        memory = self.embed(noisy) + self.pos_noisy                               # [rows, d]
        for layer in self.reg_encoder:
            memory = _residual(memory, layer, None)
        x = memory + self.reg_query
        for layer in self.reg_decoder:
            x = _residual(x, layer, memory)
        restored = noisy + self.reg_head(self.reg_final(x))
        return torch.cat([(restored * self.std + self.mean)[None], self.tail], dim=1)
