"""Read NVIDIA StyleGAN2 `.pkl` checkpoints without running any of their code.

NVIDIA's pickles (stylegan2-ada-pytorch, stylegan3, DragGAN) store each network as a
`torch_utils.persistence` object: the pickle asks to call
`torch_utils.persistence._reconstruct_persistent_obj(meta)`, where `meta` carries the Python
source of the network's module (`module_src`), the class name and the object's `__dict__`
(`_parameters`, `_buffers`, `_modules`, `_init_kwargs`, ...). A normal `pickle.load` would
execute that source and any other global the file names, so it is never used here.

`SafeUnpickler.find_class` is the only door through which a pickle reaches Python objects.
It hands out an explicit allowlist of harmless stand-ins (tensor and numpy rebuilders,
`OrderedDict`, `set`, plain dicts for `EasyDict`) and, for classes, records of the class name
and state (`PickledObject`) instead of the class itself. Anything else raises
`UnsafeCheckpointError` naming the refused global, before it could be called. Tensor storages
arrive as `torch.save` blobs and are read with `torch.load(weights_only=True)`.

`generator_from_pickle` then hands what came out to the first of the registered readers
(`PickleReader`, one per format; `register_reader` adds one) that claims it:
- "stylegan2": persistence records of a StyleGAN2 `Generator` (DragGAN, stylegan3's
  networks_stylegan2, stylegan2-ada-pytorch with nested `synthesis_kwargs`, StyleGAN-Human's
  non-square one): walks `G_ema` (or `G`) into a flat state dict under NVIDIA's names, takes
  `_init_kwargs` as the config (`generator_kwargs`) and builds our `Generator` with a strict
  `load_state_dict`;
- "stylegan2-tf": original TensorFlow pickles (`*-config-f.pkl`), whose `dnnlib.tflib.network.Network`
  objects arrive as records holding numpy arrays only, converted by `stylegan2.tf_pickle`.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO, Callable, NamedTuple

import numpy as np
import torch

from .errors import CheckpointError, UnsafeCheckpointError, UnsupportedCheckpointError  # noqa: F401 (re-exported)
from .networks import Generator
from .records import (MAX_PICKLE_BYTES, PickledObject, WalkBudget, brief_value,  # noqa: F401 (re-exported)
                      config_from_dict, describe_mismatch, module_state_dict, open_regular_file, record_class,
                      shorten)
from .tf_pickle import NETWORK_CLASS, generator_from_tf_records, is_tf_pickle


# ----------------------------------------------------------------------------
# Stand-ins that find_class hands out.


class _StandIn:
    """A named callable handed to the pickle; it refuses BUILD so a pickle cannot alter it."""

    __slots__ = ("name", "func")

    def __init__(self, name: str, func: Callable[..., Any]):
        self.name, self.func = name, func

    def __call__(self, *args: Any) -> Any:
        return self.func(*args)

    def __setstate__(self, state: Any) -> None:
        raise UnsafeCheckpointError(f"the pickle tries to modify {shorten(self.name)}: refused")


def _reconstruct_persistent_obj(meta: Any) -> PickledObject:
    # NEVER exec meta["module_src"]: that is exactly the code this module exists to avoid.
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise CheckpointError("unexpected torch_utils.persistence record (expected type 'class' with a state dict)")
    obj = record_class(str(meta.get("class_name", "?")))()
    obj.state = dict(meta["state"])
    return obj


class _Storage(NamedTuple):
    """A storage read from the pickle: raw bytes and the element type the tensors view them as."""
    data: torch.UntypedStorage
    dtype: torch.dtype


def _load_storage(blob: Any) -> _Storage:
    # A storage pickles as torch.save(storage) bytes; torch's weights-only reader refuses code.
    if not isinstance(blob, (bytes, bytearray)):
        raise CheckpointError("tensor storage is not a byte string")
    try:
        storage = torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"a tensor storage could not be read with torch.load(weights_only=True): {first}") from e
    if not isinstance(storage, torch.TypedStorage):
        raise CheckpointError(f"tensor storage blob holds a {type(storage).__name__}, not a typed storage")
    # The untyped bytes, as torch's own _rebuild_tensor uses them (TypedStorage's methods warn of deprecation).
    return _Storage(storage._untyped_storage, storage.dtype)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> torch.Tensor:
    """Tensor view of a storage, like torch._utils._rebuild_tensor(_v2), with bounds checked.

    `rest` (requires_grad, backward hooks, metadata) is ignored: we only need the values.
    """
    if not isinstance(storage, _Storage):
        raise CheckpointError("tensor data is not a torch storage")
    ints = lambda xs: isinstance(xs, (tuple, list, torch.Size)) and all(type(v) is int and v >= 0 for v in xs)
    if type(offset) is not int or offset < 0 or not ints(size) or not ints(stride) or len(size) != len(stride):
        raise CheckpointError("malformed tensor (offset, size or stride)")
    numel = storage.data.nbytes() // storage.dtype.itemsize
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0
    if extent > numel:
        raise CheckpointError("tensor reaches past the end of its storage (corrupt file?)")
    # set_ would silently grow the storage, hence the bounds check above.
    return torch.empty(0, dtype=storage.dtype).set_(storage.data, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *rest: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise CheckpointError("parameter data is not a tensor")
    return data  # a plain tensor: our Generator owns the Parameters


def _codecs_encode(text: Any, encoding: Any = "latin1") -> bytes:
    # Protocol 2 writes bytes as _codecs.encode(str, 'latin1'); nothing else is needed.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError("_codecs.encode is only allowed for latin1 byte strings")
    return text.encode("latin1")


def _numpy_dtype(*args: Any) -> np.dtype:
    # Object dtypes would let numpy hold arbitrary Python objects; networks never need them.
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise UnsafeCheckpointError("refused a numpy object dtype: the checkpoint should hold numbers only")
    return dtype


def _refuse_tensorflow(name: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"refused {name}: a TensorFlow pickle is read only as {NETWORK_CLASS} records of numpy arrays")


_NUMPY_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's own, whatever module numpy keeps it in
_NUMPY_SCALAR = np.float64(0).__reduce__()[0]

# (module, name) -> what the pickle gets. Classes and builtins here are immutable C types.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("dnnlib.util", "EasyDict"): dict,
    ("dnnlib", "EasyDict"): dict,
    ("numpy", "ndarray"): np.ndarray,
    **{(m, "_reconstruct"): _NUMPY_RECONSTRUCT for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): _NUMPY_SCALAR for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
}
_STAND_INS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "dtype"): _numpy_dtype,
}
# Classes recorded as PickledObject (never imported): plain torch layers and NVIDIA's own
# network classes when a fork pickled them without the persistence wrapper.
_RECORDED_MODULE_PREFIXES = ("torch.nn.modules.", "training.networks")


class SafeUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves globals only from an allowlist of harmless stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocol 2 spelling
            module = "builtins"
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if key in _STAND_INS:
            return _StandIn(f"{module}.{name}", _STAND_INS[key])
        if module.startswith(_RECORDED_MODULE_PREFIXES) or f"{module}.{name}" == NETWORK_CLASS:
            return record_class(f"{module}.{name}")
        if module.startswith("dnnlib.tflib") or module == "tensorflow" or module.startswith("tensorflow."):
            raise _refuse_tensorflow(shorten(f"{module}.{name}"))
        raise UnsafeCheckpointError(
            f"refused to load {shorten(f'{module}.{name}')}: the checkpoint asks for a global outside the allowlist, "
            "which could run code. Use a checkpoint from a trusted source")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError("refused: the pickle uses persistent ids (not an NVIDIA network pickle)")


def safe_load(file: BinaryIO) -> Any:
    """Unpickle `file` with `SafeUnpickler`. Never runs code from the file.

    Raises UnsafeCheckpointError for a refused global, CheckpointError for a corrupt or truncated file.
    """
    try:
        return SafeUnpickler(file).load()
    except CheckpointError:
        raise
    except RecursionError:  # a stand-in fed absurdly nested arguments
        raise CheckpointError("refused: the pickle nests its data too deeply for a network checkpoint") from None
    except Exception as e:  # any failure of the pickle machinery means a damaged file
        raise CheckpointError(f"corrupt or truncated pickle ({type(e).__name__}: {shorten(e)})") from None


# ----------------------------------------------------------------------------
# From the unpickled records to our Generator.


_GENERATOR_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


def generator_kwargs(obj: PickledObject) -> dict[str, Any]:
    """NVIDIA's Generator constructor arguments as the pickle recorded them (`_init_args`/`_init_kwargs`).

    What a record omits takes the default of the codebase that wrote it, told apart by the record's
    layout (the class is called `Generator` in all of them):
    - nested `synthesis_kwargs`: stylegan2-ada-pytorch's `training/networks.py` (and StyleGAN-Human,
      built on it), whose blocks default to `conv_clamp=None` and `num_fp16_res=0`;
    - flat: stylegan3's `networks_stylegan2` and DragGAN's copy of it, `conv_clamp=256`, `num_fp16_res=4`
      (stylegan3's train.py writes neither unless --fp32).
    So a file computes what the code that trained it computes. The official DragGAN app rebuilds every
    StyleGAN2 pickle with its own class, so it clamps a nested record without `conv_clamp` at 256; we
    follow the training code there (ADA's train.py always writes `conv_clamp`, so its files agree).
    """
    args = obj.state.get("_init_args") or ()
    kwargs = obj.state.get("_init_kwargs")
    if not isinstance(kwargs, dict) or not isinstance(args, (tuple, list)):
        raise CheckpointError(f"the pickled {obj.class_name} has no constructor arguments (_init_kwargs)")
    out = dict(zip(_GENERATOR_POSITIONAL, args))
    out.update(kwargs)
    for nested in ("synthesis_kwargs", "mapping_kwargs"):
        if not isinstance(out.get(nested) or {}, dict):
            raise CheckpointError(f"the pickled {shorten(obj.class_name)}'s {nested} is not a dict")
    nested = "synthesis_kwargs" in out
    synthesis = dict(out.get("synthesis_kwargs") or {})
    for key, ada, flat in (("conv_clamp", None, 256), ("num_fp16_res", 0, 4)):
        if key not in out and key not in synthesis:
            out[key] = ada if nested else flat
    return out


def is_square(state: dict[str, torch.Tensor]) -> bool:
    """False for StyleGAN-Human's generator, whose 4x4 constant is [C, 4, 2] (its records need not say)."""
    const = state.get("synthesis.b4.const")
    return not (const is not None and const.ndim == 3 and const.shape[1] == 2 * const.shape[2])


# Constructor settings our networks hard-code (NVIDIA's defaults). Other values would load
# without a key mismatch yet compute a different function, so they are refused.
_FIXED_SETTINGS = {"architecture": "skip", "activation": "lrelu", "resample_filter": [1, 3, 3, 1], "use_noise": True}


def _unsupported_setting(kwargs: dict[str, Any]) -> str | None:
    synthesis = {**kwargs, **dict(kwargs.get("synthesis_kwargs") or {})}
    checks = [(name, synthesis.get(name, ours), ours) for name, ours in _FIXED_SETTINGS.items()]
    checks.append(("mapping activation", dict(kwargs.get("mapping_kwargs") or {}).get("activation", "lrelu"), "lrelu"))
    for name, value, ours in checks:
        if (list(value) if isinstance(value, (list, tuple)) else value) != ours:
            return f"{name}={brief_value(value)}"
    return None



def _find_generator(data: Any) -> tuple[str, PickledObject]:
    if isinstance(data, PickledObject):
        return "the pickled network", data
    if isinstance(data, dict):
        for key in ("G_ema", "G"):
            if isinstance(data.get(key), PickledObject):
                return key, data[key]
        raise UnsupportedCheckpointError(
            f"no generator in this pickle: expected a dict with G_ema or G, found keys {[shorten(k, 30) for k in list(data)[:8]]}")
    raise UnsupportedCheckpointError(f"not an NVIDIA network pickle (top level is a {type(data).__name__})")



def generator_from_records(data: Any, budget: WalkBudget = WalkBudget()) -> Generator:
    """Build our `Generator` from `safe_load`'s result (a dict with G_ema/G, or one network record).

    The config is validated and the weights' shapes checked against it before the generator is built.
    A record that does not say `square` (the official renderer passes `square=False` itself, by file
    name) is non-square when its weights are (`is_square`). A record's `padding` is not read: a
    non-square generator always hands out the padded square the official app works on.
    """
    key, net = _find_generator(data)
    kwargs = generator_kwargs(net)
    setting = _unsupported_setting(kwargs)
    if setting:
        raise UnsupportedCheckpointError(f"{key} was built with {setting}; our StyleGAN2 supports the defaults only")
    state = module_state_dict(net, budget=budget)
    if "square" not in kwargs and "square" not in dict(kwargs.get("synthesis_kwargs") or {}):
        kwargs["square"] = is_square(state)
    cfg = config_from_dict(kwargs, key)
    problem = describe_mismatch({k: tuple(v.shape) for k, v in state.items()}, cfg.state_shapes())
    if problem:
        raise UnsupportedCheckpointError(f"{key}: {problem}")
    G = Generator(cfg)
    G.load_state_dict(state, strict=True)
    return G.eval().requires_grad_(False)


# ----------------------------------------------------------------------------
# Readers by format.

@dataclasses.dataclass(frozen=True)
class PickleReader:
    """One format of network pickle: whether `safe_load`'s result is of it, and how to build the generator."""
    format: str                                  # the catalog's "format" for files of this kind
    claims: Callable[[Any], bool]                # does this unpickled data belong to this reader?
    build: Callable[[Any, WalkBudget], torch.nn.Module]


def _is_persistence_records(data: Any) -> bool:
    return isinstance(data, (dict, PickledObject))


_READERS: list[PickleReader] = [
    PickleReader("stylegan2-tf", is_tf_pickle, generator_from_tf_records),
    PickleReader("stylegan2", _is_persistence_records, generator_from_records),  # the catch-all: says what it lacks
]
# Catalog formats each reader's format covers (the persistence reader reads three codebases' records).
FORMAT_ALIASES = {"stylegan2": ("stylegan2", "stylegan2-ada", "stylegan-human"), "stylegan2-tf": ("stylegan2-tf",)}


def register_reader(reader: PickleReader, aliases: tuple[str, ...] = ()) -> None:
    """Add a reader, tried before the ones already there (a format more specific than the catch-all)."""
    _READERS[:] = [r for r in _READERS if r.format != reader.format]
    _READERS.insert(0, reader)
    FORMAT_ALIASES[reader.format] = tuple(aliases) or (reader.format,)


def readable_formats() -> set[str]:
    """The catalog formats the registered readers read."""
    return {alias for r in _READERS for alias in FORMAT_ALIASES.get(r.format, (r.format,))}


def generator_from_data(data: Any, budget: WalkBudget = WalkBudget()) -> torch.nn.Module:
    """The generator in `safe_load`'s result, built by the first reader that claims it."""
    for reader in _READERS:
        if reader.claims(data):
            return reader.build(data, budget)
    raise UnsupportedCheckpointError(f"not a network pickle this app reads (top level is a {type(data).__name__})")


def generator_from_pickle(path: str | os.PathLike[str], max_bytes: int = MAX_PICKLE_BYTES) -> Generator:
    """Read a network `.pkl` safely and return its generator (`G_ema`, else `G`; TF: `Gs`) on the CPU.

    max_bytes: larger files are refused before reading; it also bounds the walk's tensor bytes.
    """
    path = Path(path)
    with open_regular_file(path, max_bytes) as f:
        head = f.read(4)
        if head.startswith(b"PK\x03\x04"):
            raise UnsupportedCheckpointError(
                f"{shorten(path.name)} is a torch.save zip archive, not an NVIDIA network pickle")
        f.seek(0)
        data = safe_load(f)
    return generator_from_data(data, WalkBudget(max_bytes=max_bytes))
