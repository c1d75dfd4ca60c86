"""A PTI result as one `.safetensors` file: the pivot, the tuned weights, and what they belong to.

Tensors:
  `pivot_ws`  [1, num_ws, w_dim] float32, the pivot latent (W+ layout, all rows equal);
  `target`    [res, res, 3] uint8, the photo as it was inverted (after crop and resize);
  `G.<name>`  float32, every tensor of the generator's state dict that tuning changed
              (the synthesis weights and the optimized noise maps), stored whole.
Metadata (strings): `format` = "draggan-pti", `version`, `model_spec` (how to load the base
model), `base_sha256` (hash of the base model's state dict), `base_config` (its
GeneratorConfig as JSON), `image_size`, `preset` and `metrics` (JSON).

Why whole tensors rather than differences from the base: safetensors does not compress, so a
difference takes the same space, and whole tensors reload bit-exactly (base + (tuned - base) is
not tuned in float32). The unchanged tensors (the mapping network) are not stored: they come from
the base model, which the hash pins down. The file is about the size of the synthesis network
in float32: 33 MB for the 256-px model of docs/pti.md, about 120 MB for FFHQ-1024.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import safe_open

from stylegan2.checkpoints import CheckpointError, generator_hash, write_safetensors
from stylegan2.networks import Generator

from .inversion import InversionResult

FORMAT = "draggan-pti"
VERSION = "1"
PREFIX = "G."


class EmbeddingError(CheckpointError):
    """An embedding file that cannot be used as asked; the message says what to do."""


def save_embedding(path: str | os.PathLike, result: InversionResult, base_G: Generator, model_spec: str) -> Path:
    """Write `result` (tuned from `base_G`, loadable again with `model_spec`) to `path`; atomic."""
    path = Path(path)
    base_state = base_G.state_dict()
    tensors = {"pivot_ws": result.pivot_ws.detach().to("cpu", torch.float32).contiguous(),
               "target": torch.from_numpy(np.ascontiguousarray(result.target))}
    for name, t in result.G.state_dict().items():
        if not torch.equal(t, base_state[name].to(t.device)):
            tensors[PREFIX + name] = t.detach().to("cpu", torch.float32).contiguous()
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "model_spec": model_spec,
        "base_sha256": generator_hash(base_G),
        "base_config": json.dumps(base_G.config.to_dict(), sort_keys=True),
        "image_size": str(base_G.img_resolution),
        "preset": json.dumps(dataclasses.asdict(result.preset)),
        "metrics": json.dumps({"projection": dataclasses.asdict(result.projection),
                               "tuning": dataclasses.asdict(result.tuning)}),
    }
    return write_safetensors(path, tensors, metadata)


@dataclasses.dataclass
class EmbeddingInfo:
    """What an embedding file says about itself (read without loading any model)."""
    model_spec: str
    image_size: int
    base_sha256: str
    base_config: dict
    preset: dict
    metrics: dict
    target: np.ndarray          # [res, res, 3] uint8


def _read(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    path = Path(path)
    if not path.is_file():
        raise EmbeddingError(f"embedding file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise EmbeddingError(f"{path} is not a readable .safetensors file ({e}); make it again with "
                             "`python -m draggan invert`") from None
    if metadata.get("format") != FORMAT:
        raise EmbeddingError(f"{path} is not a PTI embedding (make one with `python -m draggan invert`)")
    if metadata.get("version") != VERSION:
        raise EmbeddingError(f"{path} is a version {metadata.get('version')} embedding; this app reads version "
                             f"{VERSION}: make it again with `python -m draggan invert`")
    if "pivot_ws" not in tensors:
        raise EmbeddingError(f"{path} has no pivot latent; make it again with `python -m draggan invert`")
    return metadata, tensors


def embedding_info(path: str | os.PathLike) -> EmbeddingInfo:
    """The metadata and target photo of an embedding file. Raises EmbeddingError."""
    meta, tensors = _read(path)
    return EmbeddingInfo(meta["model_spec"], int(meta["image_size"]), meta["base_sha256"],
                         json.loads(meta["base_config"]), json.loads(meta["preset"]), json.loads(meta["metrics"]),
                         tensors["target"].numpy() if "target" in tensors else None)


def load_embedding(path: str | os.PathLike, device: str | torch.device = "cpu",
                   base_G: Generator | Callable[[str], Generator] | None = None) -> tuple[Generator, torch.Tensor]:
    """-> (tuned generator, pivot ws [1, num_ws, w_dim]), both on `device`, ready for `DragSession(G, ws)`.

    base_G: the base model, or a function spec -> model, or None to load the file's `model_spec`
    with `stylegan2.checkpoints.load_generator`. The base is not modified (the tuned generator is a
    copy). Raises EmbeddingError for a bad file or a base model other than the one it was made
    with, CheckpointError when the base model cannot be loaded.
    """
    meta, tensors = _read(path)
    spec = meta["model_spec"]
    if base_G is None:
        from stylegan2.checkpoints import load_generator
        base_G = load_generator(spec, device)
    elif not isinstance(base_G, Generator):
        base_G = base_G(spec)
    want = json.loads(meta["base_config"])
    have = base_G.config.to_dict()
    if want != have:
        diff = ", ".join(f"{k} {want.get(k)} (given {have.get(k)})" for k in sorted(set(want) | set(have))
                         if want.get(k) != have.get(k))
        raise EmbeddingError(f"{Path(path).name} was made with model {spec!r}, whose architecture differs from the "
                             f"model given: {diff}. Load it with that model")
    if generator_hash(base_G) != meta["base_sha256"]:
        raise EmbeddingError(f"{Path(path).name} was made with model {spec!r}, but the model given has other weights "
                             f"(same architecture). Load it with that model")
    G = copy.deepcopy(base_G).to(device)
    state = G.state_dict()
    with torch.no_grad():
        for key, t in tensors.items():
            if not key.startswith(PREFIX):
                continue
            name = key[len(PREFIX):]
            if name not in state or state[name].shape != t.shape:
                raise EmbeddingError(f"{Path(path).name}: tensor {name} does not fit the model; make it again")
            state[name].copy_(t)
    pivot = tensors["pivot_ws"].to(device, torch.float32)
    if pivot.shape != (1, G.num_ws, G.w_dim):
        raise EmbeddingError(f"{Path(path).name}: pivot latent is {tuple(pivot.shape)}, the model needs "
                             f"{(1, G.num_ws, G.w_dim)}; make it again")
    return G.eval().requires_grad_(False), pivot
