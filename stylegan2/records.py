"""What NVIDIA pickles unpickle into, and the checks every reader of them shares.

`PickledObject` is the stand-in the safe unpickler (`stylegan2.safe_pickle`) builds for an
instance of a class it never imports: the class name and the pickled state. `module_state_dict`
walks a pickled `nn.Module` record into a flat state dict within a budget; `config_from_dict`
validates a generator config before anything is allocated from it; `describe_mismatch` says in
words how a file's tensor shapes differ from those its config implies. Readers of each format
(`safe_pickle` for PyTorch pickles, `tf_pickle` for TensorFlow ones) build on these.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import stat
from typing import Any, BinaryIO

import torch

from .errors import CheckpointError, UnsupportedCheckpointError
from .networks import GeneratorConfig

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




class PickledObject:
    """Stand-in for an instance of a class the unpickler never imports: its class name and state.

    `state` is the object's `__dict__` as pickled (for an `nn.Module`: `_parameters`,
    `_buffers`, `_modules`, ...). `find_class` makes one subclass per refused-but-recorded class
    name, so pickle's NEWOBJ/REDUCE/BUILD create these records instead of real objects.
    """

    class_name = "?"  # set on the per-class subclasses made by `record_class`

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


def record_class(class_name: str) -> type[PickledObject]:
    return type(class_name.rsplit(".", 1)[-1], (PickledObject,), {"class_name": class_name})



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



def brief_value(value: Any) -> str:
    """A setting's value for a message: short lists of numbers and scalars as written, else the type."""
    if isinstance(value, (list, tuple)) and len(value) <= 8 and all(type(v) in (int, float) for v in value):
        return repr(list(value))
    if value is None or type(value) in (bool, int, float, str):
        return shorten(repr(value), 40)
    return f"a {type(value).__name__}"



def describe_mismatch(shapes: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> str | None:
    """What differs between a file's tensor shapes and those its config implies, in words; None if they match."""
    if shapes == expected:
        return None
    sg3 = lambda names: any(k.startswith(("synthesis.input.", "synthesis.L0_")) for k in names)
    if sg3(shapes) and not sg3(expected):
        return "this is a StyleGAN3 generator, but the file says StyleGAN2"
    family = "StyleGAN3" if sg3(expected) else "StyleGAN2"
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k])
    parts = [f"{label}: {', '.join(shorten(k, 40) for k in keys[:2])}{' ...' if len(keys) > 2 else ''}"
             for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    return f"weights do not fit a {family} generator built from the file's own config (" + "; ".join(parts) + ")"


def config_from_dict(d: Any, where: str, kind: type = GeneratorConfig) -> Any:
    """`kind.from_dict(d)` (a GeneratorConfig, or another family's config class), validated; a one-line
    UnsupportedCheckpointError for anything malformed or out of bounds."""
    try:
        cfg = kind.from_dict(d)
    except (TypeError, ValueError, AttributeError) as e:
        raise UnsupportedCheckpointError(f"{where}: malformed generator arguments ({shorten(e)})") from None
    try:
        return cfg.validate()
    except CheckpointError as e:
        raise UnsupportedCheckpointError(f"{where}: {e}") from None
