"""Which Auto DragGAN predictor goes with a model: the catalog entry's "auto" file, loaded once per generator."""
from __future__ import annotations

import logging
import threading
import weakref
from pathlib import Path

from stylegan2 import catalog
from stylegan2.errors import UserError
from stylegan2.networks import Generator

log = logging.getLogger(__name__)
_cache: "weakref.WeakKeyDictionary[Generator, dict]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def predictor_file(spec: str) -> Path | None:
    """The predictor file the catalog names for model `spec` (repo-local, or fetched from the Hub), or None."""
    try:
        name = catalog.get_entry(spec).auto
    except KeyError:
        return None
    if not name:
        return None
    local = catalog.REPO_ROOT / name
    if local.is_file() or ":" not in name:
        return local if local.is_file() else None
    from huggingface_hub import hf_hub_download
    repo, filename = name.split(":", 1)
    try:
        return Path(hf_hub_download(repo, filename, etag_timeout=10))
    except Exception as e:  # offline, missing: the model simply has no Auto method here
        log.warning("Auto DragGAN predictor %s for %s is unavailable: %s", name, spec, e)
        return None


def predictor_for(spec: str, G: Generator):
    """The Auto DragGAN predictor of catalog model `spec` for its generator `G`, or None if it has none.

    Loaded once per generator and kept as long as the generator lives. A file made for other
    weights is refused by `load_auto_model` (a UserError), and the model then has no Auto method.
    """
    path = predictor_file(spec)
    if path is None:
        return None
    with _lock:
        per_g = _cache.setdefault(G, {})
        if path not in per_g:
            from .auto import load_auto_model
            try:
                per_g[path] = load_auto_model(path, G, next(G.parameters()).device)
            except UserError as e:
                log.warning("Auto DragGAN predictor %s does not fit %s: %s", path.name, spec, e)
                per_g[path] = None
        return per_g[path]
