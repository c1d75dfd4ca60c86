"""A PTI result as one `.safetensors` file: the pivot, the tuned weights, and what they belong to.

Tensors:
  `pivot_ws`  [1, num_ws, w_dim] float32, the pivot latent (W+ layout, all rows equal);
  `target`    [res, res, 3] uint8, the photo as it was inverted (after crop and resize);
  `G.<name>`  float32, every tensor of the generator's state dict that tuning changed
              (the synthesis weights and the optimized noise maps), stored whole.
Metadata (strings): `format` = "draggan-pti", `version`, `model_spec` (how to load the base
model), `base_sha256` (hash of the base model's state dict), `base_config` (its
GeneratorConfig as JSON), `image_size`, `preset` and `metrics` (JSON; its "loss" names the distance
the inversion optimized, e.g. "the offline pixel loss (no perceptual weights)").

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

from stylegan2.checkpoints import (MAX_HEADER_BYTES, MAX_SPEC_CHARS, CheckpointError, SafetensorsHeader,
                                   check_spec_allowed, generator_hash, read_safetensors_header, write_safetensors)
from stylegan2.networks import Generator, GeneratorConfig
from stylegan2.safe_pickle import shorten
from stylegan2.stylegan3_io import any_config_from_dict, build_generator

from .inversion import InversionResult

FORMAT = "draggan-pti"
VERSION = "1"
PREFIX = "G."
MAX_EMBEDDING_BYTES = 512 << 20  # an FFHQ-1024 embedding is about 120 MB
_REMAKE = "make it again with `python -m draggan invert`"


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
                               "tuning": dataclasses.asdict(result.tuning), "loss": result.loss}),
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
    target: np.ndarray | None   # [res, res, 3] uint8; None when saved without the photo


@dataclasses.dataclass(frozen=True)
class _Checked:
    """An embedding's header after every check: what the tensors will be, before any is read."""
    path: Path
    metadata: dict[str, str]
    config: GeneratorConfig      # the base model's, validated
    header: SafetensorsHeader


def _check_header(path: str | os.PathLike) -> _Checked:
    """Read and check an embedding's header (metadata, base config, every tensor's name, dtype and shape)."""
    path = Path(path)
    name = shorten(path.name)
    try:
        header = read_safetensors_header(path, MAX_EMBEDDING_BYTES, MAX_HEADER_BYTES, what="embedding file")
    except EmbeddingError:
        raise
    except CheckpointError as e:
        raise EmbeddingError(f"{e}; {_REMAKE}") from None
    meta = header.metadata
    if meta.get("format") != FORMAT:
        raise EmbeddingError(f"{name} is not a PTI embedding ({_REMAKE})")
    if meta.get("version") != VERSION:
        raise EmbeddingError(f"{name} is a version {shorten(meta.get('version'), 20)} embedding; this app reads "
                             f"version {VERSION}: {_REMAKE}")
    spec = meta.get("model_spec")
    if not isinstance(spec, str) or not spec.strip() or len(spec) > MAX_SPEC_CHARS or not spec.isprintable():
        raise EmbeddingError(f"{name} names its base model badly (empty, over {MAX_SPEC_CHARS} characters or "
                             f"with control characters); {_REMAKE}")
    try:
        config = any_config_from_dict(json.loads(meta.get("base_config", "")), name)  # StyleGAN2 or 3
        image_size = int(meta.get("image_size", ""))
        for key in ("preset", "metrics"):
            if not isinstance(json.loads(meta.get(key, "")), dict):
                raise ValueError(key)
    except CheckpointError as e:
        raise EmbeddingError(f"{e}; {_REMAKE}") from None
    except (ValueError, RecursionError):
        raise EmbeddingError(f"{name}: damaged metadata; {_REMAKE}") from None
    if image_size != config.img_resolution or len(meta.get("base_sha256", "")) != 64:
        raise EmbeddingError(f"{name}: its metadata contradicts itself; {_REMAKE}")
    problem = _tensor_problem(header, config)
    if problem:
        raise EmbeddingError(f"{name}: {problem}; {_REMAKE}")
    return _Checked(path, meta, config, header)


def _tensor_problem(header: SafetensorsHeader, config: GeneratorConfig) -> str | None:
    """What is wrong with the embedding's tensor list for a base model of `config`; None when all fit."""
    with torch.device("meta"):  # shapes only: nothing is allocated
        G = build_generator(config)
    shapes = {k: tuple(v.shape) for k, v in G.state_dict().items()}
    res = config.img_resolution
    want = {"pivot_ws": ((1, G.num_ws, G.w_dim), ("F32",)), "target": ((res, res, 3), ("U8",))}
    if "pivot_ws" not in header.shapes:
        return "it has no pivot latent"
    for key, shape in header.shapes.items():
        if key in want:
            expected, dtypes = want[key]
        elif key.startswith(PREFIX) and key[len(PREFIX):] in shapes:
            expected, dtypes = shapes[key[len(PREFIX):]], ("F32",)
        else:
            return f"tensor {shorten(key, 60)} does not belong to a StyleGAN2 embedding"
        if shape != expected or header.dtypes[key] not in dtypes:
            return (f"tensor {shorten(key, 60)} is {header.dtypes[key]} {list(shape)}, the base model needs "
                    f"{dtypes[0]} {list(expected)}")
    return None


def _read_tensors(checked: _Checked, names: list[str]) -> dict[str, torch.Tensor]:
    """The named tensors of a checked embedding; the pivot and the weights must be finite."""
    try:
        with safe_open(str(checked.path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in names}
    except Exception as e:  # safetensors raises its own error types for damaged data
        raise EmbeddingError(f"{shorten(checked.path.name)} is not a readable .safetensors file ({shorten(e)}); "
                             f"{_REMAKE}") from None
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise EmbeddingError(f"{shorten(checked.path.name)}: {key} holds NaN or infinite values; {_REMAKE}")
    return tensors


def embedding_info(path: str | os.PathLike) -> EmbeddingInfo:
    """The metadata and target photo of an embedding file, after checking its header; the weights are not read.

    Raises EmbeddingError (one line).
    """
    checked = _check_header(path)
    meta = checked.metadata
    target = _read_tensors(checked, ["target"])["target"].numpy() if "target" in checked.header.shapes else None
    return EmbeddingInfo(meta["model_spec"], int(meta["image_size"]), meta["base_sha256"],
                         json.loads(meta["base_config"]), json.loads(meta["preset"]), json.loads(meta["metrics"]),
                         target)


def load_embedding(path: str | os.PathLike, device: str | torch.device = "cpu",
                   base_G: Generator | Callable[[str], Generator] | None = None,
                   allow_custom: bool = True) -> tuple[Generator, torch.Tensor]:
    """-> (tuned generator, pivot ws [1, num_ws, w_dim]), both on `device`, ready for `DragSession(G, ws)`.

    base_G: the base model, or a function spec -> model, or None to load the file's `model_spec`
    with `stylegan2.checkpoints.load_generator`. The base is not modified (the tuned generator is a
    copy). allow_custom: False (a public server) accepts embeddings of catalog models only.
    The header is checked before any tensor is read, and the pivot and weights must be finite.
    Raises EmbeddingError for a bad file or a base model other than the one it was made with,
    ModelNotAllowedError for a non-catalog base where only the catalog is allowed, CheckpointError
    when the base model cannot be loaded.
    """
    checked = _check_header(path)
    meta, name = checked.metadata, shorten(checked.path.name)
    spec = meta["model_spec"]
    check_spec_allowed(spec, allow_custom)
    if base_G is None:
        from stylegan2.checkpoints import load_generator
        base_G = load_generator(spec, device, allow_custom=allow_custom)
    elif not isinstance(base_G, torch.nn.Module):  # a StyleGAN2 or StyleGAN3 generator
        base_G = base_G(spec)
    want, have = checked.config.to_dict(), base_G.config.to_dict()
    if want != have:
        diff = ", ".join(f"{k} {want.get(k)} (given {have.get(k)})" for k in sorted(set(want) | set(have))
                         if want.get(k) != have.get(k))
        raise EmbeddingError(f"{name} was made with model {shorten(spec)!r}, whose architecture differs from the "
                             f"model given: {diff}. Load it with that model")
    if generator_hash(base_G) != meta["base_sha256"]:
        raise EmbeddingError(f"{name} was made with model {shorten(spec)!r}, but the model given has other weights "
                             f"(same architecture). Load it with that model")
    tensors = _read_tensors(checked, [k for k in checked.header.shapes if k != "target"])
    G = copy.deepcopy(base_G).to(device)
    state = G.state_dict()
    with torch.no_grad():
        for key, t in tensors.items():
            if key.startswith(PREFIX):  # names and shapes were checked with the header
                state[key[len(PREFIX):]].copy_(t)
    pivot = tensors["pivot_ws"].to(device, torch.float32)
    return G.eval().requires_grad_(False), pivot
