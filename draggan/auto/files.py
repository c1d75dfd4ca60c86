"""The Auto DragGAN model file: one `.safetensors` with predictor + regularizer weights.

Metadata: `format` = "draggan-auto-v1", `auto_config` (AutoConfig JSON), `base_sha256` (the generator
it was trained for, `stylegan2.checkpoints.generator_hash`), `spec` (that generator's model spec) and
`shape` (num_ws, w_dim, feature channels and size, image size). Loading never unpickles; the header is
checked (sizes bounded, every tensor's name and shape against a model built from the config) before
any weight is read.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from stylegan2.checkpoints import generator_hash, write_safetensors
from stylegan2.errors import UserError
from stylegan2.networks import Generator

from .config import AutoConfig
from .networks import AutoDragModel

FORMAT = "draggan-auto-v1"
MAX_FILE_BYTES = 2 << 30  # far above the paper preset (~0.5 GB); a larger file is not ours


class AutoModelError(UserError):
    """An Auto DragGAN model file that cannot be used (not ours, damaged, or for another generator)."""


def generator_shape(G: Generator, feature_block: int) -> dict[str, int]:
    """What the networks' sizes depend on: num_ws, w_dim and the feature block's channels and size."""
    if not 1 <= feature_block <= len(G.synthesis.blocks):
        raise AutoModelError(f"feature block {feature_block} does not exist: this generator has "
                             f"{len(G.synthesis.blocks)} synthesis blocks")
    block = G.synthesis.blocks[feature_block - 1]
    return {"num_ws": G.num_ws, "w_dim": G.w_dim, "feat_channels": block.out_channels,
            "feat_size": block.resolution, "image_size": G.img_resolution}


def new_model(cfg: AutoConfig, G: Generator, spec: str = "") -> AutoDragModel:
    """A fresh model sized for G (weights from torch's global RNG; seed it first for reproducibility)."""
    return AutoDragModel(cfg, **generator_shape(G, cfg.feature_block), base_sha256=generator_hash(G), spec=spec)


def save_auto_model(path: str | os.PathLike[str], model: AutoDragModel, G: Generator, spec: str) -> Path:
    """Write the model file atomically; records G's hash and `spec`. Returns the path."""
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    shape = generator_shape(G, model.cfg.feature_block)
    metadata = {"format": FORMAT, "auto_config": model.cfg.to_json(), "base_sha256": generator_hash(G),
                "spec": spec, "shape": json.dumps(shape, sort_keys=True)}
    return write_safetensors(path, tensors, metadata)


def load_auto_model(path: str | os.PathLike[str], G: Generator, device: str | torch.device = "cpu"
                    ) -> AutoDragModel:
    """Read a model file made for `G`; AutoModelError (one line) for anything else. Eval mode, no grads."""
    path = Path(path)
    if not path.is_file():
        raise AutoModelError(f"no Auto DragGAN model at {path}; train one with `python -m draggan train-auto`")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise AutoModelError(f"{path} is too large to be an Auto DragGAN model")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise AutoModelError(f"{path} is not an Auto DragGAN model file (format {meta.get('format')!r})")
            cfg = AutoConfig.from_json(meta.get("auto_config", ""))
            base = meta.get("base_sha256", "")
            if base != generator_hash(G):
                raise AutoModelError(f"{path} was trained for another generator ({meta.get('spec') or 'unnamed'}, "
                                     f"sha256 {base[:12]}); train one for this model with `python -m draggan "
                                     f"train-auto`")
            shape = generator_shape(G, cfg.feature_block)
            if meta.get("shape") != json.dumps(shape, sort_keys=True):
                raise AutoModelError(f"{path} records generator sizes {meta.get('shape')} that do not match")
            with torch.device("meta"):
                skeleton = AutoDragModel(cfg, **shape)
            want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
            keys = set(f.keys())
            if keys != set(want) or any(tuple(f.get_slice(k).get_shape()) != want[k] for k in keys):
                raise AutoModelError(f"{path} holds tensors that do not match its config; the file is damaged")
            tensors = {k: f.get_tensor(k) for k in keys}
    except SafetensorError as e:
        raise AutoModelError(f"{path} is not a readable safetensors file ({e})") from None
    model = AutoDragModel(cfg, **shape, base_sha256=base, spec=meta.get("spec", ""))
    model.load_state_dict(tensors)
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise AutoModelError(f"{path} holds non-finite weights; the file is damaged")
    return model.to(device).eval().requires_grad_(False)
