"""Our model file: one `.safetensors` with the generator's weights and its config as JSON metadata.

The tensors are the state dict under NVIDIA's names (`mapping.fc0.weight`, `synthesis.b4.const`,
...); the metadata holds `format` (`draggan-stylegan2`, or another family's, `register_file_format`)
and `draggan_config`, the generator's config as JSON. Everything is checked before a tensor is
read: the file's size, the header (`read_safetensors_header`), the config, and the tensors' shapes
against what that config implies. `stylegan2.checkpoints` finds, converts and caches files and
re-exports these names.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import threading
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import CheckpointError
from .networks import Generator
from .records import MAX_PICKLE_BYTES, config_from_dict, describe_mismatch, open_regular_file, shorten

FORMAT = "draggan-stylegan2"
CONFIG_KEY = "draggan_config"
MAX_MODEL_BYTES = MAX_PICKLE_BYTES  # larger model files are refused before reading
MAX_HEADER_BYTES = 1 << 20  # a safetensors header (tensor list + metadata); ours are under 64 KB

def write_safetensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str]) -> Path:
    """Write a `.safetensors` file atomically (a reader never sees half a file). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # unique per writer
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def generator_hash(G: Generator) -> str:
    """SHA-256 of the state dict (names, shapes and float32 values, in name order), as hex."""
    h = hashlib.sha256()
    for name, t in sorted(G.state_dict().items()):
        t = t.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def save_generator(G: Generator, path: str | os.PathLike[str]) -> Path:
    """Write `G` as one `.safetensors` file (weights + `draggan_config` metadata); atomic. Returns the path.

    The metadata's `format` is `G.file_format` when the network class has one (another generator
    family, registered with `register_file_format`), else ours (`draggan-stylegan2`).
    """
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in G.state_dict().items()}
    fmt = getattr(G, "file_format", FORMAT)
    metadata = {"format": fmt, CONFIG_KEY: json.dumps(G.config.to_dict(), sort_keys=True)}
    return write_safetensors(path, tensors, metadata)


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1}
_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


@dataclasses.dataclass(frozen=True)
class SafetensorsHeader:
    """What a `.safetensors` file says about itself, read without loading any tensor."""
    metadata: dict[str, str]               # the string metadata (`__metadata__`)
    shapes: dict[str, tuple[int, ...]]     # tensor name -> shape
    dtypes: dict[str, str]                 # tensor name -> safetensors dtype ("F32", "U8", ...)


def read_safetensors_header(path: str | os.PathLike[str], max_bytes: int = MAX_MODEL_BYTES,
                            max_header_bytes: int = MAX_HEADER_BYTES, what: str = "model file") -> SafetensorsHeader:
    """Read and check a `.safetensors` header: its size, JSON, dtypes, shapes and data offsets.

    Only the header is read (at most `max_header_bytes`); a file over `max_bytes` is refused unread.
    Raises CheckpointError (one line) for anything malformed, so a tensor read later cannot fail or surprise.
    """
    name = shorten(Path(path).name)
    bad = f"{name} is not a readable .safetensors file"
    with open_regular_file(path, max_bytes, what) as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(8)
        n = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if n < 2 or 8 + n > size:
            raise CheckpointError(f"{bad} (truncated or not safetensors)")
        if n > max_header_bytes:
            raise CheckpointError(f"{bad}: its header is {n} bytes, over this app's limit of {max_header_bytes}")
        try:
            header = json.loads(f.read(n))
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than any real header
            raise CheckpointError(f"{bad} (damaged header)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{bad} (damaged header)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{bad} (its metadata is not text)")
    shapes, dtypes = {}, {}
    for key, entry in header.items():
        problem = _tensor_entry_problem(entry, size - 8 - n)
        if problem:
            raise CheckpointError(f"{bad}: tensor {shorten(key, 60)} {problem}")
        shapes[key], dtypes[key] = tuple(entry["shape"]), entry["dtype"]
    return SafetensorsHeader(metadata, shapes, dtypes)


def _tensor_entry_problem(entry: object, data_bytes: int) -> str | None:
    """What is wrong with one header entry ({dtype, shape, data_offsets}); None when it is sound."""
    if not isinstance(entry, dict) or entry.get("dtype") not in _DTYPE_BYTES:
        return "has no known dtype"
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or len(shape) > 8 or not all(type(d) is int and d >= 0 for d in shape):
        return "has a malformed shape"
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_bytes):
        return "lies outside the file"
    if offsets[1] - offsets[0] != math.prod(shape) * _DTYPE_BYTES[entry["dtype"]]:
        return "has a size that does not match its shape"
    return None


# Our safetensors formats: metadata "format" -> (config dict, file name) -> (the state shapes that config
# implies, found without allocating; a function that builds the empty generator). Files without a
# "format" are ours. Another generator family adds itself with `register_file_format`.
FileFormat = Callable[[object, str], tuple[dict[str, tuple[int, ...]], Callable[[], torch.nn.Module]]]


def _stylegan2_file(config: object, name: str) -> tuple[dict[str, tuple[int, ...]], Callable[[], torch.nn.Module]]:
    cfg = config_from_dict(config, name)  # validated: nothing is allocated from an unchecked config
    return cfg.state_shapes(), lambda: Generator(cfg)


_FILE_FORMATS: dict[str, FileFormat] = {FORMAT: _stylegan2_file}


def register_file_format(name: str, reader: FileFormat) -> None:
    """Read `.safetensors` files whose metadata says `format` = `name` with `reader` (see `_FILE_FORMATS`)."""
    _FILE_FORMATS[name] = reader


def _read_safetensors(path: Path) -> Generator:
    header = read_safetensors_header(path)
    name = shorten(path.name)
    if CONFIG_KEY not in header.metadata:
        raise CheckpointError(f"{name} has no {CONFIG_KEY!r} metadata: it is not a generator saved by this app "
                              "(convert NVIDIA pickles with `python -m draggan convert`)")
    try:
        config = json.loads(header.metadata[CONFIG_KEY])
    except (ValueError, RecursionError):
        raise CheckpointError(f"{name}: its {CONFIG_KEY} metadata is not JSON; convert it again") from None
    fmt = header.metadata.get("format", FORMAT)
    if fmt not in _FILE_FORMATS:
        raise CheckpointError(f"{name} is a {shorten(fmt, 40)!r} file, which this app does not read")
    shapes, build = _FILE_FORMATS[fmt](config, name)
    problem = describe_mismatch(header.shapes, shapes)
    if problem is None and any(header.dtypes[k] not in _FLOAT_DTYPES for k in header.dtypes):
        problem = "its tensors must be floating point"
    if problem:
        raise CheckpointError(f"{name}: {problem}; convert it again")
    G = build()
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for damaged data
        raise CheckpointError(f"{name} is not a readable .safetensors file ({shorten(e)}); download or convert "
                              "it again") from None
    G.load_state_dict(state, strict=True)
    return G.eval().requires_grad_(False)
