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

`generator_from_pickle` then walks `G_ema` (or `G`) into a flat state dict under NVIDIA's names,
takes `_init_kwargs` as the config and builds our `Generator` with a strict `load_state_dict`.

Original TensorFlow pickles (`*-config-f.pkl`, `dnnlib.tflib.network.Network`) are detected
and refused with `UnsupportedCheckpointError`: converting them needs a name and layout mapping
that cannot be checked against TensorFlow's numbers here, so they are converted elsewhere.
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import io
import os
import pickle
import stat
from pathlib import Path
from typing import Any, BinaryIO, Callable, NamedTuple

import numpy as np
import torch

from .errors import UserError
from .networks import Generator, GeneratorConfig


class CheckpointError(UserError):
    """A checkpoint could not be found, read or used. The message says what to do.

    Defined here, the lowest layer, so the pickle reader can raise it; import it from
    `stylegan2.checkpoints`.
    """


class UnsafeCheckpointError(CheckpointError):
    """The pickle names a global outside the allowlist (it may try to run code)."""


class UnsupportedCheckpointError(CheckpointError):
    """A readable checkpoint of a kind this app cannot run (TensorFlow pickle, StyleGAN3, ...)."""


MAX_PICKLE_BYTES = 1 << 30  # NVIDIA's largest StyleGAN2 snapshots (G, D and G_ema at 1024 px) are ~400 MB


def shorten(text: Any, limit: int = 100) -> str:
    """`text` fit to echo in a one-line message: control characters as '?', at most `limit` characters.

    Containers are named by type only: their str() could be huge or nested past the recursion limit.
    """
    if not isinstance(text, (str, int, float, BaseException)):
        text = os.fspath(text) if isinstance(text, os.PathLike) else f"<{type(text).__name__}>"
    text = "".join(c if c.isprintable() else "?" for c in str(text)[:limit + 1])
    return text if len(text) <= limit else text[:limit - 3] + "..."


def open_regular_file(path: str | os.PathLike[str], max_bytes: int, what: str = "model file") -> BinaryIO:
    """Open `path` for reading if it is a regular file of at most `max_bytes`; one-line CheckpointError otherwise.

    Opened without blocking, so a FIFO in place of the file cannot hang the reader, then checked
    on the open descriptor (what is read is what was checked).
    """
    name = shorten(os.fspath(path))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CheckpointError(f"{what} not found: {name}") from None
    except OSError as e:
        why = {errno.ELOOP: "a symlink loop", errno.EISDIR: "a folder", errno.EACCES: "not readable",
               errno.ENAMETOOLONG: "a name too long"}.get(e.errno, e.strerror or "unreadable")
        raise CheckpointError(f"{what} {name} cannot be read ({why}): pass a .pkl or .safetensors file") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise CheckpointError(f"{what} {name} is {kind}: pass a .pkl or .safetensors file")
    f = os.fdopen(fd, "rb")
    if info.st_size > max_bytes:
        f.close()
        raise CheckpointError(f"{what} {name} is {info.st_size / 2**20:.0f} MB, over this app's limit of "
                              f"{max_bytes / 2**20:.0f} MB")
    return f


# ----------------------------------------------------------------------------
# Stand-ins that find_class hands out.

class PickledObject:
    """Stand-in for an instance of a class the unpickler never imports: its class name and state.

    `state` is the object's `__dict__` as pickled (for an `nn.Module`: `_parameters`,
    `_buffers`, `_modules`, ...). `find_class` makes one subclass per refused-but-recorded class
    name, so pickle's NEWOBJ/REDUCE/BUILD create these records instead of real objects.
    """

    class_name = "?"  # set on the per-class subclasses made by `_record_class`

    def __new__(cls, *args: Any, **kwargs: Any) -> "PickledObject":
        self = super().__new__(cls)
        self.state = {}
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # constructor arguments are ignored: only the state matters

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (__dict__, __slots__ values)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise CheckpointError(f"unexpected pickled state for {shorten(self.class_name)}: {type(state).__name__}")
        self.state = dict(state)

    def __repr__(self) -> str:
        return f"<pickled {self.class_name}>"


def _record_class(class_name: str) -> type[PickledObject]:
    return type(class_name.rsplit(".", 1)[-1], (PickledObject,), {"class_name": class_name})


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
    obj = _record_class(str(meta.get("class_name", "?")))()
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


def _refuse_tensorflow(name: str) -> UnsupportedCheckpointError:
    return UnsupportedCheckpointError(
        f"this is an original TensorFlow StyleGAN pickle ({name}); only PyTorch pickles are read. "
        "Convert it to a PyTorch .pkl elsewhere (e.g. NVIDIA's stylegan2-ada-pytorch legacy.py, "
        "in a sandbox: it runs pickle) and pass that file")


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
        if module.startswith(_RECORDED_MODULE_PREFIXES):
            return _record_class(f"{module}.{name}")
        if module.startswith("dnnlib.tflib") or module == "tensorflow" or module.startswith("tensorflow."):
            raise _refuse_tensorflow(shorten(f"{module}.{name}"))
        raise UnsafeCheckpointError(
            f"refused to load {shorten(f'{module}.{name}')}: the checkpoint asks for a global outside the allowlist, "
            "which could run code. Use a checkpoint from a trusted source")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError("refused: the pickle uses persistent ids (not an NVIDIA network pickle)")


def safe_load(file: BinaryIO) -> Any:
    """Unpickle `file` with `SafeUnpickler`. Never runs code from the file.

    Raises UnsafeCheckpointError for a refused global, UnsupportedCheckpointError for a
    TensorFlow pickle, CheckpointError for a corrupt or truncated file.
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

@dataclasses.dataclass(frozen=True)
class WalkBudget:
    """Limits of `module_state_dict`'s walk; a StyleGAN2 generator at 1024 px stays far inside them."""
    max_modules: int = 2048         # module records in the tree (a generator has about 150)
    max_depth: int = 16             # nesting of submodules (a generator has 4)
    max_tensors: int = 4096         # parameters and buffers (a generator has about 300)
    max_bytes: int = MAX_PICKLE_BYTES  # their total size


def module_state_dict(obj: PickledObject, prefix: str = "", budget: WalkBudget = WalkBudget()
                      ) -> dict[str, torch.Tensor]:
    """Flat state dict of a pickled `nn.Module` record: parameters and persistent buffers of the tree.

    Walks with its own stack (no recursion), visits each record once and refuses a record met
    twice (a shared submodule or a cycle: a generator has neither), and stops at `budget`.
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    total_bytes = 0
    stack: list[tuple[PickledObject, str, int]] = [(obj, prefix, 0)]
    while stack:
        node, pre, depth = stack.pop()
        if id(node) in seen:
            raise CheckpointError(f"submodule {shorten(pre.rstrip('.'))} appears twice in the network (shared or "
                                  "cyclic): a StyleGAN2 generator has neither")
        seen.add(id(node))
        if depth > budget.max_depth or len(seen) + len(stack) > budget.max_modules:
            raise CheckpointError("the network's module tree is deeper or larger than any StyleGAN2 generator")
        for name, value in _module_tensors(node, pre):
            out[name] = value
            total_bytes += value.numel() * value.element_size()
            if len(out) > budget.max_tensors or total_bytes > budget.max_bytes:
                raise CheckpointError("the network holds more tensors or bytes than any StyleGAN2 generator")
        children = node.state.get("_modules") or {}
        if not isinstance(children, dict):
            raise CheckpointError(f"_modules of {shorten(pre or obj.class_name)} is not a dict")
        for name, child in reversed(list(children.items())):
            if child is None:
                continue
            if not isinstance(child, PickledObject) or not isinstance(name, str):
                raise CheckpointError(f"submodule {shorten(f'{pre}{name}')} is a {type(child).__name__}, not a module")
            stack.append((child, f"{pre}{name}.", depth + 1))
    return out


def _module_tensors(node: PickledObject, prefix: str) -> list[tuple[str, torch.Tensor]]:
    """(prefixed name, tensor) of one record's own parameters and persistent buffers."""
    state = node.state
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    if not isinstance(non_persistent, (set, frozenset)):
        raise CheckpointError(f"_non_persistent_buffers_set of {shorten(prefix or node.class_name)} is not a set")
    out = []
    for group in ("_parameters", "_buffers"):
        entries = state.get(group) or {}
        if not isinstance(entries, dict):
            raise CheckpointError(f"{group} of {shorten(prefix or node.class_name)} is not a dict")
        for name, value in entries.items():
            if value is None or (group == "_buffers" and name in non_persistent):
                continue
            if not isinstance(name, str) or not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{shorten(f'{prefix}{name}')} in {shorten(node.class_name)} is a "
                                      f"{type(value).__name__}, not a tensor")
            out.append((prefix + name, value))
    return out


_GENERATOR_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


def generator_kwargs(obj: PickledObject) -> dict[str, Any]:
    """NVIDIA's Generator constructor arguments as the pickle recorded them (`_init_args`/`_init_kwargs`)."""
    args = obj.state.get("_init_args") or ()
    kwargs = obj.state.get("_init_kwargs")
    if not isinstance(kwargs, dict) or not isinstance(args, (tuple, list)):
        raise CheckpointError(f"the pickled {obj.class_name} has no constructor arguments (_init_kwargs)")
    out = dict(zip(_GENERATOR_POSITIONAL, args))
    out.update(kwargs)
    for nested in ("synthesis_kwargs", "mapping_kwargs"):
        if not isinstance(out.get(nested) or {}, dict):
            raise CheckpointError(f"the pickled {shorten(obj.class_name)}'s {nested} is not a dict")
    synthesis = dict(out.get("synthesis_kwargs") or {})
    # NVIDIA's blocks default to conv_clamp=None; our config's default (256) is for new models.
    if "conv_clamp" not in out and "conv_clamp" not in synthesis:
        out["conv_clamp"] = None
    return out


# Constructor settings our networks hard-code (NVIDIA's defaults). Other values would load
# without a key mismatch yet compute a different function, so they are refused.
_FIXED_SETTINGS = {"architecture": "skip", "activation": "lrelu", "resample_filter": [1, 3, 3, 1], "use_noise": True}


def _unsupported_setting(kwargs: dict[str, Any]) -> str | None:
    synthesis = {**kwargs, **dict(kwargs.get("synthesis_kwargs") or {})}
    checks = [(name, synthesis.get(name, ours), ours) for name, ours in _FIXED_SETTINGS.items()]
    checks.append(("mapping activation", dict(kwargs.get("mapping_kwargs") or {}).get("activation", "lrelu"), "lrelu"))
    for name, value, ours in checks:
        if (list(value) if isinstance(value, (list, tuple)) else value) != ours:
            return f"{name}={_brief_value(value)}"
    return None


def _brief_value(value: Any) -> str:
    """A setting's value for a message: short lists of numbers and scalars as written, else the type."""
    if isinstance(value, (list, tuple)) and len(value) <= 8 and all(type(v) in (int, float) for v in value):
        return repr(list(value))
    if value is None or type(value) in (bool, int, float, str):
        return shorten(repr(value), 40)
    return f"a {type(value).__name__}"


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


def describe_mismatch(shapes: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> str | None:
    """What differs between a file's tensor shapes and those its config implies, in words; None if they match."""
    if shapes == expected:
        return None
    if any(k.startswith(("synthesis.input.", "synthesis.L0_")) for k in shapes):
        return "this is a StyleGAN3 generator; only StyleGAN2 generators are supported"
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k])
    parts = [f"{label}: {', '.join(shorten(k, 40) for k in keys[:2])}{' ...' if len(keys) > 2 else ''}"
             for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    return "weights do not fit a StyleGAN2 generator built from the file's own config (" + "; ".join(parts) + ")"


def config_from_dict(d: Any, where: str) -> GeneratorConfig:
    """`GeneratorConfig.from_dict(d)`, validated; CheckpointError (one line) for anything malformed or out of bounds."""
    try:
        cfg = GeneratorConfig.from_dict(d)
    except (TypeError, ValueError, AttributeError) as e:
        raise UnsupportedCheckpointError(f"{where}: malformed generator arguments ({shorten(e)})") from None
    try:
        return cfg.validate()
    except CheckpointError as e:
        raise UnsupportedCheckpointError(f"{where}: {e}") from None


def generator_from_records(data: Any, budget: WalkBudget = WalkBudget()) -> Generator:
    """Build our `Generator` from `safe_load`'s result (a dict with G_ema/G, or one network record).

    The config is validated and the weights' shapes checked against it before the generator is built.
    """
    key, net = _find_generator(data)
    from . import stylegan3_io  # imports this module
    if stylegan3_io.is_stylegan3_record(net):
        return stylegan3_io.generator_from_record(key, net, budget)
    kwargs = generator_kwargs(net)
    setting = _unsupported_setting(kwargs)
    if setting:
        raise UnsupportedCheckpointError(f"{key} was built with {setting}; our StyleGAN2 supports the defaults only")
    cfg = config_from_dict(kwargs, key)
    state = module_state_dict(net, budget=budget)
    problem = describe_mismatch({k: tuple(v.shape) for k, v in state.items()}, cfg.state_shapes())
    if problem:
        raise UnsupportedCheckpointError(f"{key}: {problem}")
    G = Generator(cfg)
    G.load_state_dict(state, strict=True)
    return G.eval().requires_grad_(False)


def generator_from_pickle(path: str | os.PathLike[str], max_bytes: int = MAX_PICKLE_BYTES) -> Generator:
    """Read an NVIDIA StyleGAN2 `.pkl` safely and return its `G_ema` (else `G`) as our `Generator` on the CPU.

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
    return generator_from_records(data, WalkBudget(max_bytes=max_bytes))
