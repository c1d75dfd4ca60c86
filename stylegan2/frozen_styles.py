"""Weights modulated once for the style rows a drag keeps fixed (`FrozenStyles`, `frozen_styles`).

`SynthesisLayer.forward` asks `kept_parts` for what its modulated convolution would compute from its
weight and styles; outside `with frozen_styles(...)`, or for a row that is not a kept one, the answer
is None and the layer computes them itself.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch

from .ops import conv_layout, modulated_weight, unfused_parts, weight_parts


class FrozenStyles:
    """What the layers whose style rows stay fixed compute from their weights and styles, computed once.

    A drag optimizes the first rows of W+ and keeps the rest; every layer driven by a kept row has the
    same styles, demodulation and modulated weight at every step and frame. Given the synthesis
    network, the latent and the first kept row, this knows which `SynthesisLayer` reads which row (as
    `block_ws` hands them out); inside `with frozen_styles(...)`, such a layer whose style row still has
    the value it had here (and whose weights were not changed in place since) takes them from here,
    per path and dtype: the same numbers (`modulated_conv2d`'s `known`), and its output carries no
    gradient to that row: only for rows no gradient is wanted for. Every other layer takes what its
    unfused path computes from its weight alone (`known_weight`). Anything else computes as without it.
    """

    def __init__(self, synthesis: torch.nn.Module, ws: torch.Tensor, first_row: int):
        self.rows: dict[torch.nn.Module, torch.Tensor] = {}
        self.parts: dict[tuple[torch.nn.Module, torch.dtype, bool], tuple[tuple[int, ...], tuple]] = {}
        if ws.shape[0] != 1:
            return
        idx = 0
        for block in synthesis.blocks:
            layers = [block.conv1] if block.num_conv == 1 else [block.conv0, block.conv1]
            for i, layer in enumerate(layers):
                if idx + i >= first_row:
                    self.rows[layer] = ws[0, idx + i].detach().to(torch.float32).clone()
            idx += block.num_conv

    @staticmethod
    def _versions(layer: torch.nn.Module) -> tuple[int, ...]:
        return layer.weight._version, layer.affine.weight._version, layer.affine.bias._version

    def known(self, layer: torch.nn.Module, w: torch.Tensor, dtype: torch.dtype, fused: bool) -> tuple | None:
        """`layer`'s parts for style row `w` [1, w_dim] on the fused or unfused path in `dtype`; None where
        the row is not a kept one (or changed), or the layer's own weights need gradients."""
        row = self.rows.get(layer)
        if (row is None or w.shape[0] != 1 or layer.weight.requires_grad or layer.affine.weight.requires_grad
                or not torch.equal(w.detach()[0].to(row.device, row.dtype), row)):
            return None
        key = (layer, dtype, fused)
        versions, parts = self.parts.get(key, (None, None))
        if versions != self._versions(layer):
            with torch.no_grad():
                styles = layer.affine(row[None].to(w.dtype))
                parts = ((conv_layout(modulated_weight(layer.weight, styles, True, dtype), 1, layer.up),) if fused
                         else unfused_parts(layer.weight, styles, True, dtype, layer.up))
            self.parts[key] = self._versions(layer), parts
        return parts

    def known_weight(self, layer: torch.nn.Module, dtype: torch.dtype) -> tuple | None:
        """What any layer's unfused path computes from its weight alone (`weight_parts`), once per dtype
        (again when the weight changed in place); None while the weight needs gradients."""
        if layer.weight.requires_grad:
            return None
        key = (layer, dtype, "weight")
        versions, parts = self.parts.get(key, (None, None))
        if versions != layer.weight._version:
            with torch.no_grad():
                parts = weight_parts(layer.weight, True, dtype, layer.up)
            self.parts[key] = layer.weight._version, parts
        return parts


_FROZEN: contextvars.ContextVar[FrozenStyles | None] = contextvars.ContextVar("frozen_styles", default=None)


@contextlib.contextmanager
def frozen_styles(frozen: FrozenStyles | None) -> Iterator[None]:
    """Within: layers with a kept style row use what `frozen` computed (see FrozenStyles). None: no change."""
    token = _FROZEN.set(frozen)
    try:
        yield
    finally:
        _FROZEN.reset(token)




def kept_parts(layer: torch.nn.Module, w: torch.Tensor, dtype: torch.dtype, fused: bool,
               ) -> tuple[tuple | None, tuple | None]:
    """Inside `frozen_styles`: (`FrozenStyles.known`, or where that is None and the path is unfused,
    `FrozenStyles.known_weight`) for this layer; elsewhere (None, None)."""
    frozen = _FROZEN.get()
    if frozen is None:
        return None, None
    known = frozen.known(layer, w, dtype, fused)
    return known, frozen.known_weight(layer, dtype) if known is None and not fused else None
