"""Find, download, convert and load generator checkpoints.

`load_generator(spec)` accepts
- a catalog name (`stylegan2/catalog.json`), e.g. `lions-512`;
- a Hub file `repo_id:filename` or `repo_id:filename@revision`, fetched with
  `huggingface_hub.hf_hub_download` (its cache, `HF_HOME`, `HF_HUB_OFFLINE`, a progress bar on
  the first download);
- a local `.pkl` (NVIDIA) or `.safetensors` (ours) path.

Our file format is one `.safetensors` file: the generator's state dict under NVIDIA's names
(`mapping.fc0.weight`, `synthesis.b4.const`, ...) and, in the safetensors metadata,
`draggan_config` = the `GeneratorConfig` as JSON (plus `format` = `draggan-stylegan2`).

An NVIDIA `.pkl` is read once with `stylegan2.safe_pickle` (never `pickle.load`) and converted
into that format in the conversion cache, named by the pickle's SHA-256, so later loads never
touch pickle. The cache is `$DRAGGAN_CACHE`, else `<HF_HOME>/draggan` (by default
`~/.cache/huggingface/draggan`).

Loaded generators are kept per (source, device) in this process and shared: they are in eval
mode with `requires_grad=False`. A caller that changes weights (e.g. pivotal tuning) must work
on `copy.deepcopy(G)`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import threading
import warnings
from pathlib import Path

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HFValidationError, LocalEntryNotFoundError,
                                    RepositoryNotFoundError, RevisionNotFoundError)
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from . import catalog, safe_pickle
from .networks import Generator, GeneratorConfig
from .safe_pickle import CheckpointError, UnsafeCheckpointError, UnsupportedCheckpointError

__all__ = ["CheckpointError", "UnsafeCheckpointError", "UnsupportedCheckpointError", "Source", "cache_dir",
           "clear_memory_cache", "generator_hash", "load_generator", "locate", "portable_spec", "read_generator_file", "resolve_device",
           "resolve_spec", "save_generator", "write_safetensors"]

log = logging.getLogger(__name__)

FORMAT = "draggan-stylegan2"
CONFIG_KEY = "draggan_config"
CONVERTER_VERSION = 1  # part of the cached file's name: bump when the pickle conversion changes
_HUB_SPEC = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+):(?P<file>[^@]+?)(?:@(?P<rev>[^@]+))?$")


# ----------------------------------------------------------------------------
# Devices.

def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda, then mps, then cpu; "cpu", "cuda", "cuda:1", "mps" are checked to exist.

    Raises ValueError naming the missing device and what to pass instead.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or mps") from e
    if dev.type == "cuda" and not (torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()):
        raise ValueError(f"device {device!r} is not available here: use --device auto or cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' is not available here: use --device auto or cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}: use auto, cpu, cuda or mps")
    return dev


# ----------------------------------------------------------------------------
# Our safetensors format.

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
    """Write `G` as one `.safetensors` file (weights + `draggan_config` metadata); atomic. Returns the path."""
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in G.state_dict().items()}
    metadata = {"format": FORMAT, CONFIG_KEY: json.dumps(G.config.to_dict(), sort_keys=True)}
    return write_safetensors(path, tensors, metadata)


def _read_safetensors(path: Path) -> Generator:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for damaged headers and data
        raise CheckpointError(f"{path} is not a readable .safetensors file ({e}); download or convert it again") from e
    if CONFIG_KEY not in metadata:
        raise CheckpointError(f"{path} has no {CONFIG_KEY!r} metadata: it is not a generator saved by this app "
                              "(convert NVIDIA pickles with `python -m draggan convert`)")
    try:
        G = Generator(GeneratorConfig.from_dict(json.loads(metadata[CONFIG_KEY])))
    except Exception as e:
        raise CheckpointError(f"{path}: bad {CONFIG_KEY} metadata ({e})") from e
    ours = G.state_dict()
    bad = sorted(set(ours) ^ set(state)) + sorted(k for k in set(ours) & set(state) if ours[k].shape != state[k].shape)
    if bad:
        raise CheckpointError(f"{path}: weights do not match its config ({', '.join(bad[:4])}"
                              f"{' ...' if len(bad) > 4 else ''}); convert it again")
    G.load_state_dict(state, strict=True)
    return G.eval().requires_grad_(False)


# ----------------------------------------------------------------------------
# Pickles, through the conversion cache.

def cache_dir() -> Path:
    """Where converted pickles go: $DRAGGAN_CACHE, else <HF_HOME>/draggan."""
    return Path(os.environ.get("DRAGGAN_CACHE") or Path(hf_constants.HF_HOME) / "draggan").expanduser()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_pickle(path: Path) -> Generator:
    cached = cache_dir() / f"{_sha256(path)}-v{CONVERTER_VERSION}.safetensors"
    if cached.is_file():
        try:
            return _read_safetensors(cached)
        except CheckpointError as e:
            log.warning("converting %s again: %s", path.name, e)
    log.info("converting %s to %s (once)", path, cached)
    try:
        G = safe_pickle.generator_from_pickle(path)
    except CheckpointError as e:
        raise type(e)(f"{path.name}: {e}") from e
    try:
        save_generator(G, cached)
    except OSError as e:  # a read-only cache costs time on the next load, nothing else
        warnings.warn(f"could not cache the converted {path.name} in {cached.parent}: {e}", stacklevel=3)
    return G


def read_generator_file(path: str | os.PathLike[str]) -> Generator:
    """Read a local `.safetensors` (ours) or `.pkl` (NVIDIA, via the conversion cache) on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix == ".pkl":
        return _read_pickle(path)
    raise CheckpointError(f"{path.name}: unsupported file type; pass an NVIDIA .pkl or a .safetensors from this app")


# ----------------------------------------------------------------------------
# Specs: catalog names, Hub files, local paths.

@dataclasses.dataclass(frozen=True)
class Source:
    """Where a spec's file lives: a local path, or a Hub file (repo_id, filename, revision)."""
    spec: str                    # as the user gave it
    path: Path | None = None     # local file (may not exist)
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None  # None = main
    model_name: str | None = None  # catalog name, when the spec was one

    @property
    def key(self) -> tuple[str, ...]:
        """Identifies the file for the in-process cache (without touching the network)."""
        if self.path is not None:
            return ("file", str(self.path.resolve()))
        return ("hub", str(self.repo_id), str(self.filename), self.revision or "main")


def resolve_spec(spec: str) -> Source:
    """Parse a spec: catalog name, then an existing local path, then `repo_id:filename[@revision]`, then a path."""
    spec = spec.strip()
    if not spec:
        raise CheckpointError("no model given: pass a catalog name, REPO_ID:FILE or a .pkl/.safetensors path")
    if spec in catalog.model_names():
        entry = catalog.get_entry(spec)
        if entry.local_path is not None:
            return Source(spec, path=entry.local_path, model_name=spec)
        return Source(spec, repo_id=entry.repo_id, filename=entry.filename, revision=entry.revision, model_name=spec)
    path = Path(spec).expanduser()
    if path.exists():
        return Source(spec, path=path)
    match = _HUB_SPEC.match(spec)
    if match:
        return Source(spec, repo_id=match["repo"], filename=match["file"], revision=match["rev"])
    if path.suffix.lower() in (".pkl", ".safetensors") or os.sep in spec or "/" in spec:
        return Source(spec, path=path)
    raise CheckpointError(f"unknown model {spec!r}: pass a catalog name ({', '.join(catalog.model_names())}), "
                          "REPO_ID:FILE[@REVISION] or a .pkl/.safetensors path")


def portable_spec(spec: str) -> str:
    """`spec` as a file made from the model should name it: local files by absolute path (so the
    name still works from another folder), anything else as given."""
    try:
        source = resolve_spec(spec)
    except CheckpointError:
        return spec
    if source.path is not None and source.model_name is None and source.path.is_file():
        return str(source.path.resolve())
    return spec


class _SilentBar(tqdm):
    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _download(source: Source, progress: bool) -> Path:
    repo, file, rev = source.repo_id, source.filename, source.revision
    where = f"{file} from Hub repo {repo}" + (f" (revision {rev})" if rev else "")
    fetch = f"`hf download {repo} {file}" + (f" --revision {rev}" if rev else "") + "`"
    try:
        return Path(hf_hub_download(repo, file, revision=rev, tqdm_class=None if progress else _SilentBar))
    except LocalEntryNotFoundError as e:
        why = "HF_HUB_OFFLINE is set" if hf_constants.is_offline_mode() else "the Hub cannot be reached"
        raise CheckpointError(f"{where} is needed but is not in the Hugging Face cache and {why}. "
                              f"Fetch it into the Hugging Face cache (HF_HOME) with {fetch} while online, "
                              "or pass a local copy with --model PATH") from e
    except GatedRepoError as e:
        raise CheckpointError(f"Hub repo {repo} is gated: accept its terms on the Hub and log in (`hf auth login`)") from e
    except RepositoryNotFoundError as e:
        raise CheckpointError(f"Hub repo {repo} not found (or private: log in with `hf auth login`)") from e
    except RevisionNotFoundError as e:
        raise CheckpointError(f"Hub repo {repo} has no revision {rev!r}") from e
    except EntryNotFoundError as e:
        raise CheckpointError(f"Hub repo {repo} has no file {file!r}") from e
    except HFValidationError as e:
        raise CheckpointError(f"{source.spec!r} is not a valid Hub file spec (REPO_ID:FILE[@REVISION]): {e}") from e
    except Exception as e:  # HTTP errors, a connection dropped mid-download (the HTTP library's own types), disk full
        raise CheckpointError(f"could not download {where} ({type(e).__name__}: {e}); "
                              f"retry, or fetch it with {fetch}") from e


def locate(spec: str, progress: bool = True) -> Path:
    """The local file for `spec`, downloading a Hub file into the Hugging Face cache when needed."""
    return _locate(resolve_spec(spec), progress)


def _locate(source: Source, progress: bool) -> Path:
    if source.path is None:
        return _download(source, progress)
    if not source.path.is_file():
        if source.model_name is not None:
            raise CheckpointError(f"model {source.model_name!r} is not available: {source.path} does not exist yet; "
                                  "pick another --model")
        raise CheckpointError(f"model file not found: {source.path}")
    return source.path


# ----------------------------------------------------------------------------
# The one entry point.

_loaded: dict[tuple[tuple[str, ...], str], Generator] = {}
_lock = threading.Lock()


def clear_memory_cache() -> None:
    """Forget the generators loaded in this process (the files on disk stay)."""
    with _lock:
        _loaded.clear()


def load_generator(spec: str, device: str | torch.device = "cpu", progress: bool = True) -> Generator:
    """Load a generator once per (source, device) and share it read-only (eval mode, no grads).

    spec: catalog name, `repo_id:filename[@revision]`, or a local `.pkl` / `.safetensors` path.
    device: "cpu", "cuda", "mps" or "auto" (see `resolve_device`).
    progress: show a progress bar while downloading from the Hub.
    Raises CheckpointError (or a subclass) with a one-line message saying what to do;
    ValueError for a device that is not available.
    """
    dev = resolve_device(device)
    source = resolve_spec(spec)
    with _lock:  # one load at a time: two sessions asking at once share one read
        key = (source.key, str(dev))
        if key not in _loaded:
            G = read_generator_file(_locate(source, progress))
            _loaded[key] = G.to(dev).eval().requires_grad_(False)
        return _loaded[key]
