"""The feature maps of pictures already rendered, kept a while, so that a learned drag from a picture on screen
does not run the generator to its feature block a second time.

A learned drag (`methods._predicted`) reads the start latent's feature map at the drag block twice over (the
handles' reference features and the predictor's F0). The app has always rendered that latent already: it is
the picture the user clicked on, drawn by `Editor.image()` or as the last frame of the previous drag. Rendering
it through `render` here (the features to the block, then the rest of the generator from them, the same image
as `G.synthesis`) keeps the maps; the drag finds them with `get`. On the 64-px toy model that pass is about a
quarter of an Auto edit.

Exact by construction: a map is found only for the same generator object with the same weights (every
parameter's and buffer's in-place version counter, so a PTI tuning step or a `load_state_dict` invalidates it),
the same noise mode (never 'random'), the same latent bit for bit (a digest of its float32 bytes) and at least
the blocks asked for; it is what `G.synthesis.features(ws, stop)` returns there, computed in fp32 without
gradients. Bounded: at most `max_entries` latents and `max_bytes` of maps in all (the oldest go first); one
process-wide store, `KEPT`, shared by the sessions (a map is a function of the latent alone: two sessions with
the same latent would compute the same one).
"""
from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import torch

from stylegan2.networks import image_to_uint8


class _Entry(NamedTuple):
    generator: weakref.ref
    version: int
    feats: tuple[torch.Tensor, ...]
    nbytes: int


_TENSORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # G -> its synthesis tensors (walking the modules
                                                                  # costs 0.7 ms on the toy model, the sum 10 us)


def _version(G: torch.nn.Module) -> int:
    """The sum of G's synthesis parameters' and buffers' in-place version counters: it grows with every in-place
    change (an optimizer step, `load_state_dict`, `copy_`)."""
    tensors = _TENSORS.get(G)
    if tensors is None:
        tensors = _TENSORS[G] = (*G.synthesis.parameters(), *G.synthesis.buffers())
    return sum(t._version for t in tensors)


def _key(G: torch.nn.Module, ws: torch.Tensor, noise_mode: str) -> tuple:
    data = ws.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return id(G), noise_mode, str(ws.device), tuple(ws.shape), hashlib.blake2b(data, digest_size=16).digest()


class RenderedFeatures:
    """Feature maps of recently rendered latents (see the module's docstring)."""

    def __init__(self, max_entries: int = 8, max_bytes: int = 64 << 20):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def put(self, G: torch.nn.Module, ws: torch.Tensor, noise_mode: str, feats: list[torch.Tensor]) -> None:
        """Keep `feats`, G.synthesis.features(ws, stop=len(feats), noise_mode) computed in fp32 without gradients
        (the caller's word). Not kept: noise 'random', gradients, more than max_bytes."""
        if noise_mode == "random" or not feats or any(f.requires_grad or f.dtype != torch.float32 for f in feats):
            return
        nbytes = sum(f.numel() * f.element_size() for f in feats)
        if nbytes > self.max_bytes:
            return
        key = _key(G, ws, noise_mode)
        entry = _Entry(weakref.ref(G), _version(G), tuple(feats), nbytes)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None and len(old.feats) > len(feats) and old.version == entry.version:
                entry = old                                   # the deeper maps of the same picture stay
            self._entries[key] = entry
            total = sum(e.nbytes for e in self._entries.values())
            while len(self._entries) > self.max_entries or total > self.max_bytes:
                total -= self._entries.popitem(last=False)[1].nbytes

    def get(self, G: torch.nn.Module, ws: torch.Tensor, noise_mode: str, stop: int) -> list[torch.Tensor] | None:
        """The maps of blocks 1..stop of the picture of `ws`, if kept (and still exact), else None."""
        if noise_mode == "random":
            return None
        key = _key(G, ws, noise_mode)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and (entry.generator() is not G or entry.version != _version(G)):
                del self._entries[key]                        # a dead generator's id reused, or G changed
                entry = None
            if entry is None or len(entry.feats) < stop:
                return None
            self._entries.move_to_end(key)
            return list(entry.feats[:stop])

    def render(self, G: torch.nn.Module, ws: torch.Tensor, noise_mode: str, stop: int) -> np.ndarray:
        """The picture of ws [1, num_ws, w_dim] as uint8 [H, W, 3], the same as `G.synthesis(ws)`'s, its maps of
        blocks 1..stop kept on the way."""
        with torch.no_grad():
            feats = G.synthesis.features(ws, stop=stop, noise_mode=noise_mode)
            image = image_to_uint8(G.synthesis.image_from_features(ws, feats, noise_mode))
        self.put(G, ws, noise_mode, feats)
        return image

    def picture(self, G: torch.nn.Module, ws: torch.Tensor, noise_mode: str, auto=None) -> np.ndarray:
        """The picture of ws, as uint8 [H, W, 3]. auto: G's learned predictor, when a learned drag may start from
        this picture: then rendered through `render`, its maps to the predictor's block kept; None: `G.synthesis`."""
        if auto is None:
            with torch.no_grad():
                return image_to_uint8(G.synthesis(ws, noise_mode=noise_mode))
        return self.render(G, ws, noise_mode, auto.cfg.feature_block)


KEPT = RenderedFeatures()
