"""Find, download, convert and load generator checkpoints.

`load_generator(spec)` accepts
- a catalog name (`stylegan2/catalog.json`), e.g. `lions-512`;
- a Hub file `repo_id:filename` or `repo_id:filename@revision`, fetched with
  `huggingface_hub.hf_hub_download` (its cache, `HF_HOME`, `HF_HUB_OFFLINE`, a progress bar on
  the first download);
- a local `.pkl` (NVIDIA) or `.safetensors` (ours) path.

A catalog entry with a `url` (NVIDIA's StyleGAN3 pickles, on NGC) is downloaded by
`stylegan2.downloads` into the cache below (allowed https hosts only, bounded, resumed, offline
under `HF_HUB_OFFLINE`), then read as any local pickle.

Our file format is one `.safetensors` file: the generator's state dict under NVIDIA's names
(`mapping.fc0.weight`, `synthesis.b4.const`, ...) and, in the safetensors metadata,
`draggan_config` = the `GeneratorConfig` as JSON (plus `format` = `draggan-stylegan2`).

A `.pkl` (StyleGAN2, StyleGAN2-ADA, StyleGAN-Human, DragGAN, or an original TensorFlow
config-e/f pickle: `stylegan2.safe_pickle`'s readers by format) is read once with
`stylegan2.safe_pickle` (never `pickle.load`) and converted
into that format in the conversion cache, named by the pickle's SHA-256, so later loads never
touch pickle. The cache is `$DRAGGAN_CACHE`, else `<HF_HOME>/draggan` (by default
`~/.cache/huggingface/draggan`).

Loaded generators are shared per (file, device) in this process: they are in eval mode with
`requires_grad=False`; a caller that changes weights (e.g. pivotal tuning) must work on
`copy.deepcopy(G)`. `generator_cache` keeps the recently used ones (an LRU bounded by count and
bytes, `set_memory_cache_limits`) and finds again any that a caller still holds. Each
(file, device) has its own load lock, so a slow load or download never delays another model.

Everything read from a file is bounded before it is used: the file's size, the safetensors
header, the config (`GeneratorConfig.validate`) and the tensors' shapes against that config,
all before the generator is built. On a public server, `load_generator(..., allow_custom=False)`
loads catalog models only (`check_spec_allowed`), with one message whatever else was asked for.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import threading
import warnings
import weakref
from pathlib import Path
from typing import Callable, Iterator

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, HFValidationError,
                                    LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)
from tqdm.auto import tqdm

from . import catalog, downloads, safe_pickle
from .downloads import cache_dir  # noqa: F401 (re-exported: the conversion cache and the downloads share it)
from .networks import Generator
from .errors import CheckpointError, ModelNotAllowedError, UnsafeCheckpointError, UnsupportedCheckpointError
from .model_files import (CONFIG_KEY, FORMAT, MAX_HEADER_BYTES, MAX_MODEL_BYTES,  # noqa: F401 (re-exported)
                          FileFormat, SafetensorsHeader, _read_safetensors, generator_hash, read_safetensors_header,
                          register_file_format, save_generator, write_safetensors)
from .safe_pickle import open_regular_file, shorten

__all__ = ["CheckpointError", "ModelNotAllowedError", "UnsafeCheckpointError", "UnsupportedCheckpointError",
           "GeneratorCache", "SafetensorsHeader", "Source", "cache_dir", "check_spec_allowed", "clear_memory_cache",
           "generator_cache", "generator_hash", "load_generator", "locate", "portable_spec", "read_generator_file",
           "read_safetensors_header", "register_file_format", "resolve_device", "resolve_spec", "save_generator",
           "set_memory_cache_limits",
           "write_safetensors"]

log = logging.getLogger(__name__)

CONVERTER_VERSION = 2  # part of the cached file's name: bump when the pickle conversion changes (2: record defaults per codebase, non-square, TF)
MAX_SPEC_CHARS = 1024       # a model spec longer than any path or Hub file name is refused unread
HUB_TIMEOUT_S = 10          # seconds to wait for the Hub's answer (metadata request, each download read)
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
# Pickles, through the conversion cache.

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open_regular_file(path, MAX_MODEL_BYTES) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_pickle(path: Path) -> Generator:
    cached = cache_dir() / f"{_sha256(path)}-v{CONVERTER_VERSION}.safetensors"
    if cached.is_file():
        try:
            return _read_safetensors(cached)
        except CheckpointError as e:
            log.warning("converting %s again: %s", shorten(path.name), e)
    log.info("converting %s to %s (once)", shorten(path), cached)
    try:
        G = safe_pickle.generator_from_pickle(path, MAX_MODEL_BYTES)
    except CheckpointError as e:
        raise type(e)(f"{shorten(path.name)}: {e}") from None
    try:
        save_generator(G, cached)
    except OSError as e:  # a read-only cache costs time on the next load, nothing else
        warnings.warn(f"could not cache the converted {shorten(path.name)} in {cached.parent}: {e}", stacklevel=3)
    return G


def read_generator_file(path: str | os.PathLike[str]) -> Generator:
    """Read a local `.safetensors` (ours) or `.pkl` (NVIDIA, via the conversion cache) on the CPU.

    Raises CheckpointError (one line) for a missing, unreadable, oversized or invalid file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix == ".pkl":
        return _read_pickle(path)
    raise CheckpointError(f"{shorten(path.name)}: unsupported file type; pass an NVIDIA .pkl or a .safetensors "
                          "from this app")


# ----------------------------------------------------------------------------
# Which specs may be loaded.

NOT_ALLOWED = "Only the models listed in this app can be loaded here"


def check_spec_allowed(spec: object, allow_custom: bool) -> None:
    """Refuse `spec` unless it is a catalog name or `allow_custom` is set; touches no file and no network.

    The refusal is one fixed message, whatever the spec names (an existing file, a missing one, a
    Hub file), so a refused visitor learns nothing about the server's files. Raises ModelNotAllowedError.
    """
    if allow_custom and isinstance(spec, str):
        return
    if not isinstance(spec, str) or spec.strip() not in catalog.model_names():
        raise ModelNotAllowedError(f"{NOT_ALLOWED}: {catalog.names_hint()}")


# ----------------------------------------------------------------------------
# Specs: catalog names, Hub files, local paths.

@dataclasses.dataclass(frozen=True)
class Source:
    """Where a spec's file lives: a local path, a Hub file (repo_id, filename, revision), or a catalog URL."""
    spec: str                    # as the user gave it
    path: Path | None = None     # local file (may not exist)
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None  # None = main
    model_name: str | None = None  # catalog name, when the spec was one
    url: str | None = None       # a catalog entry's https file (filename: the downloaded copy's name)
    max_bytes: int = MAX_MODEL_BYTES  # the URL download's cap

    @property
    def key(self) -> tuple[str, ...]:
        """Names the file without touching the file system or the network (a path as given, made absolute)."""
        if self.path is not None:
            return ("file", os.path.abspath(self.path))
        if self.url is not None:
            return ("url", self.url)
        return ("hub", str(self.repo_id), str(self.filename), self.revision or "main")


def resolve_spec(spec: str) -> Source:
    """Parse a spec: catalog name, then an existing local path, then `repo_id:filename[@revision]`, then a path."""
    if not isinstance(spec, str) or len(spec) > MAX_SPEC_CHARS:
        raise CheckpointError(f"a model spec is text of at most {MAX_SPEC_CHARS} characters: pass a catalog name, "
                              "REPO_ID:FILE or a .pkl/.safetensors path")
    spec = spec.strip()
    if not spec:
        raise CheckpointError("no model given: pass a catalog name, REPO_ID:FILE or a .pkl/.safetensors path")
    if not spec.isprintable():
        raise CheckpointError("a model spec cannot contain control characters (newlines, tabs, ...)")
    if spec in catalog.model_names():
        entry = catalog.get_entry(spec)
        if entry.local_path is not None:
            return Source(spec, path=entry.local_path, model_name=spec)
        if entry.url is not None:
            return Source(spec, filename=entry.filename, url=entry.url, max_bytes=entry.max_bytes, model_name=spec)
        return Source(spec, repo_id=entry.repo_id, filename=entry.filename, revision=entry.revision, model_name=spec)
    path = Path(spec).expanduser()
    if _exists(path):
        return Source(spec, path=path)
    match = _HUB_SPEC.match(spec)
    if match:
        return Source(spec, repo_id=match["repo"], filename=match["file"], revision=match["rev"])
    if path.suffix.lower() in (".pkl", ".safetensors") or os.sep in spec or "/" in spec:
        return Source(spec, path=path)
    raise CheckpointError(f"unknown model {shorten(spec, 40)!r}: pass a catalog name ({catalog.names_hint()}), "
                          "REPO_ID:FILE[@REVISION] or a .pkl/.safetensors path")


def _exists(path: Path) -> bool:
    """Whether anything (even a broken or looping symlink) is at `path`; never raises."""
    try:
        return os.path.lexists(path)
    except (OSError, ValueError):
        return False


def portable_spec(spec: str) -> str:
    """`spec` as a file made from the model should name it: local files by absolute path (so the
    name still works from another folder), anything else as given."""
    try:
        source = resolve_spec(spec)
    except CheckpointError:
        return spec
    if source.path is not None and source.model_name is None and source.path.is_file():
        return os.path.realpath(source.path)
    return spec


class _SilentBar(tqdm):
    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _hub_reachable(repo: str, file: str, rev: str | None) -> bool:
    """One metadata request, no retries, `HUB_TIMEOUT_S` at most: can the Hub be asked at all?

    hf_hub_download alone retries an unreachable Hub for tens of seconds when the file is not cached;
    after a failed probe it is asked for the cached copy only.
    """
    try:
        get_hf_file_metadata(hf_hub_url(repo, file, revision=rev), timeout=HUB_TIMEOUT_S)
    except HfHubHTTPError:  # the Hub answered (404, gated, ...): hf_hub_download will say what it said
        return True
    except Exception:  # no connection, a timeout, a proxy: the HTTP library's own types
        return False
    return True


def _download(source: Source, progress: bool) -> Path:
    repo, file, rev = source.repo_id, source.filename, source.revision
    where = shorten(f"{file} from Hub repo {repo}" + (f" (revision {rev})" if rev else ""), 200)
    fetch = shorten(f"`hf download {repo} {file}" + (f" --revision {rev}" if rev else "") + "`", 200)
    offline = hf_constants.is_offline_mode()
    try:
        reachable = not offline and _hub_reachable(repo, file, rev)
        return Path(hf_hub_download(repo, file, revision=rev, etag_timeout=HUB_TIMEOUT_S,
                                    local_files_only=not reachable, tqdm_class=None if progress else _SilentBar))
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        raise CheckpointError(f"{where} is needed but is not in the Hugging Face cache and {why}. "
                              f"Fetch it into the Hugging Face cache (HF_HOME) with {fetch} while online, "
                              "or pass a local copy with --model PATH") from None
    except GatedRepoError:
        raise CheckpointError(f"Hub repo {repo} is gated: accept its terms on the Hub and log in "
                              "(`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"Hub repo {repo} not found (or private: log in with `hf auth login`)") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"Hub repo {repo} has no revision {shorten(rev)!r}") from None
    except EntryNotFoundError:
        raise CheckpointError(f"Hub repo {repo} has no file {shorten(file)!r}") from None
    except HFValidationError as e:
        raise CheckpointError(f"{shorten(source.spec)!r} is not a valid Hub file spec (REPO_ID:FILE[@REVISION]): "
                              f"{shorten(e)}") from None
    except Exception as e:  # HTTP errors, a connection dropped mid-download (the HTTP library's own types), disk full
        raise CheckpointError(f"could not download {where} ({type(e).__name__}: {shorten(e)}); "
                              f"retry, or fetch it with {fetch}") from None


def locate(spec: str, progress: bool = True) -> Path:
    """The local file for `spec`, downloading a Hub file into the Hugging Face cache (a URL file into
    `cache_dir()/downloads`) when needed."""
    return _locate(resolve_spec(spec), progress)


def _locate(source: Source, progress: bool) -> Path:
    if source.url is not None:
        return downloads.fetch(source.url, source.filename, source.max_bytes, progress)
    if source.path is None:
        return _download(source, progress)
    if source.model_name is not None and not _exists(source.path):
        raise CheckpointError(f"model {source.model_name!r} is not available: {source.path} does not exist yet; "
                              "pick another --model")
    _file_identity(source.path)  # one line for a missing file, a folder, a FIFO, a symlink loop, a huge file
    return source.path


def _read_located(source: Source, progress: bool) -> Generator:
    """The generator in `source`'s file; a downloaded URL file that cannot be read is removed from the cache
    (a download whose length the server did not say may have been cut), so the next load fetches it again."""
    path = _locate(source, progress)
    try:
        return read_generator_file(path)
    except CheckpointError as e:
        if source.url is None:
            raise
        path.unlink(missing_ok=True)
        raise type(e)(f"{e} (the downloaded copy was removed: the next load downloads it again)") from None


def _file_identity(path: Path) -> tuple[str, ...]:
    """The file as it is now (real path, inode, size, mtime): a file replaced under its name is another file."""
    with open_regular_file(path, MAX_MODEL_BYTES) as f:
        st = os.fstat(f.fileno())
    return ("file", os.path.realpath(path), str(st.st_dev), str(st.st_ino), str(st.st_size), str(st.st_mtime_ns))


# ----------------------------------------------------------------------------
# Generators in memory.

def _nbytes(G: Generator) -> int:
    return sum(t.numel() * t.element_size() for t in G.state_dict().values())


class GeneratorCache:
    """Loaded generators by key: an LRU of the recently used, bounded by count and bytes, plus weak
    references to every one still alive, so one evicted while a caller still holds it is found again
    instead of being loaded a second time (memory is bounded by the LRU plus what callers hold).

    Each key has its own lock, held while that key loads: two callers asking for one model share one
    load, and a slow load of one model never delays another.
    """

    def __init__(self, max_models: int = 4, max_bytes: int = 2 << 30):
        self.max_models = max_models  # generators kept alive by the cache itself
        self.max_bytes = max_bytes    # their total weight bytes (the most recent one is kept even if over)
        self._lru: collections.OrderedDict[tuple, tuple[Generator, int]] = collections.OrderedDict()
        self._alive: weakref.WeakValueDictionary[tuple, Generator] = weakref.WeakValueDictionary()
        self._loading: dict[tuple, list] = {}  # key -> [lock, number of callers using it]
        self._lock = threading.Lock()  # guards the maps above; never held while loading

    def get(self, key: tuple, load: Callable[[], Generator]) -> Generator:
        """The generator for `key`, calling `load()` (under the key's own lock) only when none is alive."""
        G = self._lookup(key)
        if G is not None:
            return G
        with self._key_lock(key):
            G = self._lookup(key)  # loaded while this caller waited for the lock
            if G is None:
                G = load()
                with self._lock:
                    self._alive[key] = G
                    self._keep(key, G)
        return G

    def _lookup(self, key: tuple) -> Generator | None:
        with self._lock:
            G = self._alive.get(key)
            if G is not None:
                self._keep(key, G)
            return G

    def _keep(self, key: tuple, G: Generator) -> None:
        """Mark `key` most recently used, then drop the least recent beyond the limits (lock held)."""
        self._lru[key] = self._lru.pop(key, None) or (G, _nbytes(G))
        total = sum(size for _, size in self._lru.values())
        while len(self._lru) > 1 and (len(self._lru) > self.max_models or total > self.max_bytes):
            total -= self._lru.popitem(last=False)[1][1]

    @contextlib.contextmanager
    def _key_lock(self, key: tuple) -> Iterator[None]:
        with self._lock:
            entry = self._loading.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._loading[key]

    def set_limits(self, max_models: int | None = None, max_bytes: int | None = None) -> None:
        """Change the bounds (None: unchanged) and apply them now."""
        with self._lock:
            self.max_models = self.max_models if max_models is None else max(1, int(max_models))
            self.max_bytes = self.max_bytes if max_bytes is None else max(0, int(max_bytes))
            if self._lru:
                key, (G, _) = next(reversed(self._lru.items()))
                self._keep(key, G)

    def cached_keys(self) -> list[tuple]:
        """Keys the LRU keeps alive, least recently used first."""
        with self._lock:
            return list(self._lru)

    def clear(self) -> None:
        """Forget every generator (callers still holding one keep it)."""
        with self._lock:
            self._lru.clear()
            self._alive.clear()


generator_cache = GeneratorCache()


def clear_memory_cache() -> None:
    """Forget the generators loaded in this process (the files on disk stay)."""
    generator_cache.clear()


def set_memory_cache_limits(max_models: int | None = None, max_bytes: int | None = None) -> None:
    """Bound how many generators, and how many weight bytes, the cache keeps alive (None: unchanged)."""
    generator_cache.set_limits(max_models, max_bytes)


# ----------------------------------------------------------------------------
# The one entry point.

def load_generator(spec: str, device: str | torch.device = "cpu", progress: bool = True,
                   allow_custom: bool = True) -> Generator:
    """Load a generator once per (file, device) and share it read-only (eval mode, no grads).

    spec: catalog name, `repo_id:filename[@revision]`, or a local `.pkl` / `.safetensors` path.
    device: "cpu", "cuda", "mps" or "auto" (see `resolve_device`).
    progress: show a progress bar while downloading from the Hub.
    allow_custom: False (a public server) loads catalog names only, checked before any file or
    network access; anything else raises ModelNotAllowedError with one fixed message.
    Raises CheckpointError (or a subclass) with a one-line message saying what to do;
    ValueError for a device that is not available.
    """
    check_spec_allowed(spec, allow_custom)
    dev = resolve_device(device)
    source = resolve_spec(spec)
    # A local file is keyed by what it is now (a replaced file loads anew); a Hub file by its name,
    # as the download itself, under that key's lock, must not delay other models.
    key = _file_identity(_locate(source, progress)) if source.path is not None else source.key

    def load() -> Generator:
        return _read_located(source, progress).to(dev).eval().requires_grad_(False)

    return generator_cache.get((key, str(dev)), load)
