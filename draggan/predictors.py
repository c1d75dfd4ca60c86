"""Which Auto DragGAN predictor goes with a model: the catalog entry's "auto" file, loaded once per generator."""
from __future__ import annotations

import threading
import weakref
from pathlib import Path

from stylegan2 import catalog
from stylegan2.networks import Generator

ROOT = Path(__file__).resolve().parents[1]
_cache: "weakref.WeakKeyDictionary[Generator, dict]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def predictor_path(spec: str) -> Path | None:
    """The predictor file the catalog names for model `spec` (repo-relative), or None."""
    try:
        name = getattr(catalog.get_entry(spec), "auto", None)
    except KeyError:
        return None
    return ROOT / name if name else None


def predictor_for(spec: str, G: Generator):
    """The Auto DragGAN predictor of catalog model `spec` for its generator `G`, or None if it has none.

    Loaded once per generator and kept as long as the generator lives. A file made for other
    weights is refused by `load_auto_model` (a UserError).
    """
    path = predictor_path(spec)
    if path is None or not path.exists():
        return None
    with _lock:
        per_g = _cache.setdefault(G, {})
        if path not in per_g:
            from .auto import load_auto_model
            per_g[path] = load_auto_model(path, G, next(G.parameters()).device)
        return per_g[path]
