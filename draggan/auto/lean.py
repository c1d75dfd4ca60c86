"""The rollout's arithmetic at batch 1, lean: the numbers of the nn.Transformer modules at a fraction of their cost.

`rollout` feeds the predictor one new query per autoregressive step. Through the modules
(`LatentPredictor.decode`, `LatentRegularizer.forward`) every step re-runs the decoder over the whole
prefix, projects the memory's keys and values again in every layer, builds a causal mask and walks the
modules' generic batched paths: about 1,800 ATen calls per edit at 5 steps, where a call costs
microseconds and the arithmetic (d_model 64 on the toy model) almost nothing. `LeanRollout` computes the
same values from the same weights (read from the modules, so the trained model's file loads unchanged),
as the modules define them (pre-norm layers, exact GELU, no dropout at inference), in fewer calls:
  - a key/value cache per predictor decoder layer: each step's one new query attends to the keys of the
    earlier steps, computed once (the decoder is causal: a position never depends on later ones);
  - the predictor's cross-attention folded per edit: the memory's keys and values never change during an
    edit, so the query projection times the keys (scores for every head in one matmul) and the values
    times the output projection (the attended output in one matmul) are multiplied out once;
  - the regularizer's query part made once per edit from the rows that never move (w0's rows >= `rows`);
  - constants multiplied into the weights once per model (`_Encoding`, `_Steps`: kept with it until a weight
    changes): the latents' standardization (w - mean) / std into the first layer that reads them and the
    std into the last layer that writes a latent; the position, step and token-kind embeddings into the
    biases they are added to; attention's 1/sqrt(head size) into the query projection; GELU's 1/sqrt 2 and
    1/2 into the layers around it (GELU(x) = (y + y erf y) / sqrt 2 with y = x / sqrt 2: two calls); the
    point MLP's coordinate features (normalized handle, target, 4 x their difference) into its weights, so
    it reads pixel coordinates;
  - fused q/k/v projections from the modules' own `in_proj_weight`, 2-D [tokens, d_model] activations
    (batch 1) so heads split and merge by views.
`tests/test_auto_lean.py` holds it to the modules within 1e-5 on random weights and on the shipped models.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from stylegan2.ops import derived

from .networks import AutoDragModel, LatentPredictor

_R = 1 / math.sqrt(2)


class _Affine(NamedTuple):
    """x @ w_t + b (w_t: a linear layer's weight, transposed, constants folded in; contiguous: MKL's small products
    take a third longer from a transposed view)."""
    w_t: torch.Tensor
    b: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b, x, self.w_t)


def _affine(weight: torch.Tensor, bias: torch.Tensor, in_scale: torch.Tensor | float | None = None,
            in_shift: torch.Tensor | None = None, out_scale: torch.Tensor | float = 1.0,
            extra: torch.Tensor | None = None) -> _Affine:
    """The linear layer y = W x + b read as y' = out_scale (W ((x - in_shift) / in_scale) + b) + extra:
    its input standardized (or divided by a number), its output scaled per feature and moved by `extra`
    (broadcast over tokens)."""
    if in_scale is not None:
        weight = weight / in_scale
    if in_shift is not None:
        bias = bias - weight @ in_shift
    scale = out_scale[:, None] if isinstance(out_scale, torch.Tensor) else out_scale
    weight, bias = weight * scale, bias * out_scale
    return _Affine(weight.t().contiguous(), bias if extra is None else bias + extra)


def _gelu2(y: torch.Tensor) -> torch.Tensor:
    """sqrt 2 * GELU(x) for y = x / sqrt 2: y + y erf(y) (the layers around it carry the constants)."""
    return torch.addcmul(y, y, torch.erf(y))


class _FF(NamedTuple):
    """Linear-GELU-Linear (`networks.mlp`, a layer's feed-forward block), the GELU's constants in the two linears."""
    first: _Affine
    second: _Affine

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(_gelu2(self.first(x)))


def _ff(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, in_scale: torch.Tensor | None = None,
        in_shift: torch.Tensor | None = None, out_scale: torch.Tensor | float = 1.0,
        extra: torch.Tensor | None = None) -> _FF:
    """`_FF` of two linear layers' weights; the input's standardization, the output's scale and `extra` as
    `_affine`'s. The first gives y = x / sqrt 2 of the GELU's x, the second reads sqrt 2 GELU(x)."""
    return _FF(_affine(w1, b1, in_scale, in_shift, _R),
               _affine(w2, b2, math.sqrt(2), out_scale=out_scale, extra=extra))


def _mlp(seq: nn.Sequential, **fold) -> _FF:
    """`_ff` of a `networks.mlp` (Linear, GELU, Linear)."""
    return _ff(seq[0].weight, seq[0].bias, seq[2].weight, seq[2].bias, **fold)


class _Norm(NamedTuple):
    shape: tuple[int, ...]
    weight: torch.Tensor
    bias: torch.Tensor
    eps: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.layer_norm(x, self.shape, self.weight, self.bias, self.eps)


def _norm(m: nn.LayerNorm) -> _Norm:
    return _Norm(tuple(m.normalized_shape), m.weight, m.bias, m.eps)


class _Attention(NamedTuple):
    heads: int
    qkv: _Affine           # the fused in_proj: q, k, v (q times 1/sqrt(head size))
    q: _Affine             # its parts, each its own contiguous copy
    kv: _Affine
    out: _Affine


def _attention(m: nn.MultiheadAttention) -> _Attention:
    assert m.batch_first and m._qkv_same_embed_dim and m.in_proj_bias is not None, \
        "LeanRollout reads batch-first attention with a fused in_proj (networks._encoder/_decoder)"
    d, H = m.embed_dim, m.num_heads
    scale = torch.ones(3 * d, dtype=m.in_proj_weight.dtype, device=m.in_proj_weight.device)
    scale[:d] = (d // H) ** -0.5
    qkv = _affine(m.in_proj_weight, m.in_proj_bias, out_scale=scale)
    return _Attention(H, qkv, _Affine(qkv.w_t[:, :d].contiguous(), qkv.b[:d]), _Affine(qkv.w_t[:, d:].contiguous(), qkv.b[d:]),
                      _affine(m.out_proj.weight, m.out_proj.bias))


class _Layer(NamedTuple):
    """A pre-norm encoder (cross None) or decoder layer."""
    norm1: _Norm
    self_attn: _Attention
    norm2: _Norm
    cross: _Attention | None
    norm3: _Norm | None
    ff: _FF


def _layer(m: nn.Module) -> _Layer:
    # The arithmetic below is that of the layers networks._encoder/_decoder build; refuse anything else.
    assert m.norm_first and (m.activation is F.gelu or isinstance(m.activation, nn.GELU)), \
        "LeanRollout reads pre-norm GELU layers (networks._encoder/_decoder)"
    ff = _ff(m.linear1.weight, m.linear1.bias, m.linear2.weight, m.linear2.bias)
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
    """Dot-product attention of q [heads, n, e] (already scaled) over k, v [heads, T, e] -> [n, heads * e], heads
    concatenated as nn.MultiheadAttention does; bias [T]: added to the scores (-inf: a padding key)."""
    kt = k.transpose(1, 2)
    scores = torch.bmm(q, kt) if bias is None else torch.baddbmm(bias, q, kt)
    return torch.bmm(scores.softmax(-1), v).transpose(0, 1).reshape(q.shape[1], -1)


def _self_attention(x: torch.Tensor, attn: _Attention, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Self-attention over all tokens of x [n, d]; bias as `_attend`'s."""
    q, k, v = attn.qkv(x).view(x.shape[0], 3, attn.heads, -1).permute(1, 2, 0, 3)  # each [heads, n, d/heads]
    return attn.out(_attend(q, k, v, bias))


def _cross_attention(x: torch.Tensor, attn: _Attention, memory: torch.Tensor) -> torch.Tensor:
    """x [n, d] attends to memory [T, d], no mask."""
    k, v = attn.kv(memory).view(memory.shape[0], 2, attn.heads, -1).permute(1, 2, 0, 3)
    return attn.out(_attend(_heads(attn.q(x), attn.heads), k, v))


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
    k, v = attn.kv(memory).view(T, 2, H, e).permute(1, 2, 0, 3)                      # each [H, T, e]
    wq, bq = attn.q.w_t.t().reshape(H, e, d), attn.q.b.view(H, 1, e)               # scaled already
    qk = torch.bmm(k, wq)                                                          # [H, T, d]
    qk_bias = torch.bmm(bq, k.transpose(1, 2)).view(H, T).masked_fill(pad[None], -math.inf).reshape(-1)
    vo = torch.bmm(v, attn.out.w_t.reshape(H, e, d))                                # [H, T, d]
    return _Folded(H, qk.reshape(H * T, d).t().contiguous(), qk_bias, vo.reshape(H * T, d), attn.out.b)


class _Encoding(NamedTuple):
    """What `encode` reads from a predictor, constants folded in (see the module's docstring)."""
    cells: _Affine            # the strided feature conv over a cell's C * s * s values, plus the position embedding
    feat: _FF                 # feat_mlp, plus the feature-token kind
    reduce: _Affine           # the 1x1 conv that reduces F0's channels before the patches are flattened
    points: _FF               # point_mlp on [handle patch, target patch, handle xy, target xy] (pixels), plus the kind
    memory: _FF
    offsets: torch.Tensor     # [P, P, 2] the grid_sample coordinates of a patch's samples around pixel (0, 0)
    encoder: list[_Layer]


def _encoding(pred: LatentPredictor, *_params: torch.Tensor) -> _Encoding:
    conv, P, a = pred.feat_conv, pred.cfg.patch, 2 / pred.image_size
    cells = _Affine(conv.weight.reshape(conv.out_channels, -1).t().contiguous(), conv.bias + pred.feat_pos)
    # point_mlp's first layer reads [ph, pt, h, t, 4 (t - h)] with h = a H - 1, t = a T - 1 (a = 2 / image size):
    # W_h h + W_t t + 4 W_d (t - h) = a (W_h - 4 W_d) H + a (W_t + 4 W_d) T - (W_h + W_t) 1.
    first, second = pred.point_mlp[0], pred.point_mlp[2]
    w_p, w_h, w_t, w_d = first.weight.split([first.in_features - 6, 2, 2, 2], dim=1)
    w_pts = torch.cat([w_p, a * (w_h - 4 * w_d), a * (w_t + 4 * w_d)], dim=1)
    points = _ff(w_pts, first.bias - (w_h + w_t).sum(dim=1), second.weight, second.bias, extra=pred.kind[1])
    # sample_patches' grid: ((xy + offset) + 0.5) a - 1 = (offset + 0.5) a - 1 + a xy
    r = torch.arange(P, dtype=conv.weight.dtype, device=conv.weight.device) - (P - 1) / 2
    offsets = (torch.stack(torch.meshgrid(r, r, indexing="xy"), dim=-1) + 0.5) * a - 1
    reduce = _affine(pred.patch_reduce.weight.flatten(1), pred.patch_reduce.bias)
    return _Encoding(cells, _mlp(pred.feat_mlp, extra=pred.kind[0]), reduce, points, _mlp(pred.memory_mlp), offsets,
                     _encoder_layers(pred.encoder))


class _Steps(NamedTuple):
    """What `LeanRollout` reads from a model, constants folded in (see the module's docstring)."""
    query: _FF                # predictor: standardization in; the second layer's bias per step is step_bias
    step_bias: torch.Tensor   # [n_steps, d]
    layers: list[_Layer]
    final: _Norm
    head: _FF                 # then GELU: its output is y = x / sqrt 2 of that GELU's x
    last: _Affine             # times std: the step in W units
    embed: _FF                # regularizer: standardization in, the noisy rows' position embedding in its bias
    reg_encoder: list[_Layer]
    reg_query: _FF | None     # the standardized clean rows in, the queries' position embedding in its bias
    reg_pos: torch.Tensor     # [rows, d] (the queries alone when no row is clean)
    reg_decoder: list[_Layer]
    reg_final: _Norm
    reg_head: _Affine         # times std


def _steps(model: AutoDragModel, *_params: torch.Tensor) -> _Steps:
    pred, reg, rows = model.predictor, model.regularizer, model.cfg.rows
    mean, std = model.w_mean, model.w_std
    query = _mlp(pred.query, in_scale=std.repeat(rows), in_shift=mean.repeat(rows))
    n_clean = model.num_ws - rows
    reg_query = _mlp(reg.query, in_scale=std.repeat(n_clean), in_shift=mean.repeat(n_clean),
                     extra=reg.pos_query.reshape(-1)) if reg.query is not None else None
    return _Steps(
        query=query, step_bias=query.second.b + pred.step_pos, layers=[_layer(m) for m in pred.decoder.layers],
        final=_norm(pred.decoder.norm), head=_mlp(pred.head[0], out_scale=_R),
        last=_affine(pred.head[2].weight, pred.head[2].bias, math.sqrt(2), out_scale=std.repeat(rows)),
        embed=_mlp(reg.embed_noisy, in_scale=std, in_shift=mean, extra=reg.pos_noisy),
        reg_encoder=_encoder_layers(reg.encoder), reg_query=reg_query, reg_pos=reg.pos_query,
        reg_decoder=[_layer(m) for m in reg.decoder.layers], reg_final=_norm(reg.decoder.norm),
        reg_head=_affine(reg.head.weight, reg.head.bias, out_scale=std))


def _kept(module: nn.Module, key: str, make) -> NamedTuple:
    """make(module), made once and again only when one of the module's tensors changed in place or was replaced
    (`stylegan2.ops.derived`). The tensors are listed once per module (walking its submodules costs more than the
    rollout's arithmetic); a model whose parameters are swapped for new objects must be built again."""
    tensors = module.__dict__.get("_lean_tensors")
    if tensors is None:
        tensors = module.__dict__["_lean_tensors"] = tuple(module.parameters()) + tuple(module.buffers())
    return derived(module, key, tensors, lambda *t: make(module, *t))


def encode(pred: LatentPredictor, feat0: torch.Tensor, handles_xy: torch.Tensor, targets_xy: torch.Tensor,
           point_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`pred.encode(...)` at batch 1, the same numbers in fewer calls: the strided feature conv (kernel = stride)
    as one matmul over the map's cells, the handles' and targets' patches in one sample, the encoder lean."""
    assert feat0.shape[0] == 1, "lean encode is batch 1"
    conv = pred.feat_conv
    s, C = conv.stride[0], feat0.shape[1]
    assert conv.kernel_size == (s, s) and conv.stride == (s, s) and conv.padding == (0, 0), "a strided patch conv"
    p = _kept(pred, "lean", _encoding)
    n = feat0.shape[2] // s
    cells = feat0[0, :, :n * s, :n * s].reshape(C, n, s, n, s).permute(1, 3, 0, 2, 4).reshape(n * n, C * s * s)
    tokens = p.feat(p.cells(cells))                                               # [T, d]
    K, P = handles_xy.shape[1], pred.cfg.patch
    xy = torch.cat([handles_xy[0], targets_xy[0]])                                # [2K, 2] pixels
    grid = torch.add(p.offsets, xy[:, None, None, :], alpha=2 / pred.image_size)   # [2K, P, P, 2]
    samples = F.grid_sample(feat0, grid.reshape(1, 2 * K * P, P, 2).to(feat0.dtype), mode="bilinear",
                            padding_mode="border", align_corners=False)           # [1, C, 2K*P, P]
    # the 1x1 reduction after sampling (the same sums: a bilinear sample's weights add up to 1), on 2K P^2 samples
    # instead of every cell of the map
    reduced = p.reduce(samples[0].reshape(C, -1).t())                             # [2K*P*P, c]
    ph, pt = reduced.view(2, K, P, P, -1).permute(0, 1, 4, 2, 3).reshape(2, K, -1)  # [K, c * P * P] each
    points = p.points(torch.cat([ph, pt, handles_xy[0], targets_xy[0]], dim=-1))  # [K, d]
    memory = p.memory(torch.cat([tokens, points]))                                # [T + K, d]
    pad = torch.cat([torch.zeros(n * n, dtype=torch.bool, device=feat0.device), ~point_mask[0]])
    bias = torch.zeros(pad.shape, dtype=memory.dtype, device=memory.device).masked_fill_(pad, -math.inf) \
        if bool(pad.any()) else None
    for layer in p.encoder:
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
        self.p = p = _kept(model, "lean", _steps)
        self.rows = model.cfg.rows
        self.tail = w0[:, self.rows:]                                              # [1, num_ws - rows, w_dim]
        # Predictor: each layer's cross-attention to this edit's memory folded, the step cache.
        self.cross = [_fold(layer.cross, memory[0], pad[0]) for layer in p.layers]
        heads, d = p.layers[0].self_attn.heads, p.step_bias.shape[1]
        self.cache = memory.new_empty(len(p.layers), 2, heads, model.cfg.n_steps, d // heads)
        self.step = 0
        # Regularizer: the query part read from the rows that never move (w0's), once.
        self.reg_query = p.reg_pos if p.reg_query is None else p.reg_query(self.tail.reshape(1, -1)).view(self.rows, -1)

    def predict(self, w_prev: torch.Tensor) -> torch.Tensor:
        """The next latent [1, num_ws, w_dim] after w_prev (w0 first, then each previous output)."""
        i, p = self.step, self.p
        assert i < self.cache.shape[3], "LeanRollout: more steps than the predictor has step embeddings"
        self.step += 1
        moving = w_prev[0, :self.rows]                                             # [rows, w_dim]
        x = torch.addmm(p.step_bias[i], _gelu2(p.query.first(moving.reshape(1, -1))), p.query.second.w_t)  # [1, d]
        for layer, cross, cache in zip(p.layers, self.cross, self.cache):
            attn = layer.self_attn
            q, kv = attn.qkv(layer.norm1(x)).view(3, attn.heads, 1, -1).split([1, 2])  # [1|2, heads, 1, e]
            cache[:, :, i:i + 1] = kv
            keys, values = cache[:, :, :i + 1]                                     # [heads, i + 1, e]
            x = x + attn.out(_attend(q[0], keys, values))
            x = x + cross(layer.norm2(x))
            x = x + layer.ff(layer.norm3(x))
        moved = p.last(_gelu2(p.head(p.final(x)))).view(self.rows, -1).add_(moving)  # [rows, w_dim]
        return torch.cat([moved[None], self.tail], dim=1)

    def regularize(self, w: torch.Tensor) -> torch.Tensor:
        """`model.regularize(w)` for a latent [1, num_ws, w_dim] whose rows past `rows` are w0's."""
        p = self.p
        moving = w[0, :self.rows]                                                  # [rows, w_dim]
        memory = p.embed(moving)                                                   # [rows, d]
        for layer in p.reg_encoder:
            memory = _residual(memory, layer, None)
        x = memory + self.reg_query
        for layer in p.reg_decoder:
            x = _residual(x, layer, memory)
        restored = p.reg_head(p.reg_final(x)).add_(moving)
        return torch.cat([restored[None], self.tail], dim=1)
