"""The models the app offers by name, read from `catalog.json` beside this file.

Each entry points at a file on the Hugging Face Hub (`repo_id`, `filename`, optional `revision`),
at a file inside this repository (`path`, relative to the repository root), or at an https `url`
on an allowed host (NVIDIA NGC; `filename` names the downloaded copy, `max_bytes` caps its size:
`stylegan2.downloads`).
`stylegan2.checkpoints.load_generator(name)` loads an entry by its name.

Entries come from published tables (DragGAN's `scripts/download_models.json`, the file list of
`DragGan/DragGan-Models`, the draggan 1.1.6 package's table of `ZeqiangLai/StyleGAN2-pkl`): each
says which (`source`), its `format` (which reader loads it), its image size and its licence as
that source states it. `verified` is true only for a file someone here downloaded and loaded;
`checked` says what was done (a location named by a table is not a file loaded).

The default model is `$DRAGGAN_MODEL` when set, else the first of the JSON's `default_order`
whose weights are on this machine (a repo-local file that exists, a Hub file already in the
Hugging Face cache, asked offline through huggingface_hub's cache API, or a URL file already
downloaded); real models come first, so
a Space that preloads Lions (or Human) opens on it, and the toy model, last, is what a machine with
nothing cached opens on, offline. Startup never reaches for the network.

An entry may carry `drag_defaults`: drag settings that suit the model better than DragConfig's
(which are the paper's, for 512-px models; radii are in 512-px units, so on a 64-px model the
default motion radius is under a pixel). The app's sliders and the `drag` command start from them.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import try_to_load_from_cache

from .downloads import cached_path
from .model_files import MAX_MODEL_BYTES
CATALOG_PATH = Path(__file__).with_name("catalog.json")
REPO_ROOT = Path(__file__).resolve().parents[1]
# The DragConfig fields an entry's drag_defaults may set, and their types.
DRAG_DEFAULT_KEYS = {"lr": float, "r1": float, "r2": float, "r3": float, "feature_block": int, "max_steps": int,
                     "lambda_mask": float}


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    """One named model. Exactly one of (repo_id + filename), path, or (url + filename) is set."""
    name: str                   # what --model and the app use, e.g. "lions-512"
    label: str                  # human-readable, for a dropdown
    resolution: int             # output side in pixels
    shows: str                  # what the images show
    licence: str                # licence of the weights, as far as known
    source: str                 # where the weights come from
    verified: bool = False      # True only once someone here downloaded and loaded the file at this location
    format: str = "stylegan2"   # the reader: stylegan2, stylegan2-ada, stylegan-human, stylegan2-tf, stylegan3
    height: int | None = None   # image rows when not square (StyleGAN-Human); None = resolution
    width: int | None = None    # image columns when not square; None = resolution
    checked: str = ""           # what was done to check the location (e.g. named by a table, not downloaded)
    repo_id: str | None = None  # Hub repository, e.g. "ZeqiangLai/StyleGAN2-pkl"
    filename: str | None = None  # file inside the Hub repository; for a url, the downloaded copy's name
    revision: str | None = None  # Hub branch, tag or commit; None = main
    path: str | None = None     # repo-local file, relative to the repository root
    url: str | None = None      # https file on an allowed host (stylegan2.downloads.ALLOWED_HOSTS)
    max_bytes: int = MAX_MODEL_BYTES  # a url download larger than this is refused
    notes: str = ""
    # DragConfig fields (keys of DRAG_DEFAULT_KEYS) that suit this model better than the paper's; read-only
    drag_defaults: dict[str, float] = dataclasses.field(default_factory=dict, hash=False)
    auto: str | None = None     # its Auto DragGAN predictor: a repo-local path, or a Hub "repo_id:filename"

    def __post_init__(self) -> None:
        where = [self.repo_id is not None, self.path is not None, self.url is not None]
        if sum(where) != 1 or (self.filename is None) == (self.path is None):
            raise ValueError(f"catalog entry {self.name!r}: give either repo_id and filename, or path, "
                             "or url and filename")
        if self.url is not None and (not self.filename.lower().endswith((".pkl", ".safetensors"))
                                     or self.filename != Path(self.filename).name):
            raise ValueError(f"catalog entry {self.name!r}: a url's filename is a plain .pkl or .safetensors name")
        if type(self.max_bytes) is not int or not 0 < self.max_bytes <= MAX_MODEL_BYTES:
            raise ValueError(f"catalog entry {self.name!r}: max_bytes must be a whole number from 1 to "
                             f"{MAX_MODEL_BYTES}")
        if (self.height is None) != (self.width is None) or max(self.height or 0, self.width or 0) > self.resolution:
            raise ValueError(f"catalog entry {self.name!r}: give both height and width, at most the resolution")
        if not isinstance(self.drag_defaults, dict):
            raise ValueError(f"catalog entry {self.name!r}: drag_defaults must be an object, "
                             f"e.g. {{\"r1\": 24}}")
        for key, value in self.drag_defaults.items():
            kind = DRAG_DEFAULT_KEYS.get(key)
            if kind is None:
                raise ValueError(f"catalog entry {self.name!r}: unknown drag_defaults key {key!r}; "
                                 f"allowed: {', '.join(DRAG_DEFAULT_KEYS)}")
            ok = isinstance(value, int) if kind is int else isinstance(value, (int, float))
            if isinstance(value, bool) or not ok or not math.isfinite(value) or value <= 0:
                what = "a whole number" if kind is int else "a number"
                raise ValueError(f"catalog entry {self.name!r}: drag_defaults {key} must be {what} > 0, "
                                 f"got {value!r}")

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the model's images (the app shows them padded to resolution x resolution)."""
        return (self.height or self.resolution, self.width or self.resolution)

    @property
    def is_local(self) -> bool:
        """True for a repo-local file, False for a Hub or URL file."""
        return self.path is not None

    @property
    def local_path(self) -> Path | None:
        """Absolute path of a repo-local entry's file (which may not exist yet); None for a Hub or URL entry."""
        return REPO_ROOT / self.path if self.path is not None else None

    @property
    def hub_spec(self) -> str | None:
        """The entry as a `repo_id:filename[@revision]` spec; None for a repo-local or URL entry."""
        if self.repo_id is None:
            return None
        return f"{self.repo_id}:{self.filename}" + (f"@{self.revision}" if self.revision else "")

    def is_available_offline(self) -> bool:
        """Whether the weights are on this machine: the local file exists, the Hub or URL file is cached."""
        if self.local_path is not None:
            return self.local_path.is_file()
        if self.url is not None:
            return cached_path(self.url, self.filename).is_file()
        cached = try_to_load_from_cache(self.repo_id, self.filename, revision=self.revision)
        return isinstance(cached, str)


@functools.lru_cache(maxsize=1)
def _read_catalog() -> tuple[tuple[CatalogEntry, ...], tuple[str, ...]]:
    data = json.loads(CATALOG_PATH.read_text(encoding="utf-8"))
    entries = tuple(CatalogEntry(**entry) for entry in data["models"])
    names = [e.name for e in entries]
    assert len(set(names)) == len(names), "duplicate names in catalog.json"
    order = tuple(data["default_order"])
    assert order and set(order) <= set(names), "default_order must name catalog entries"
    return entries, order


def list_models() -> list[CatalogEntry]:
    """All catalog entries, in the JSON's order."""
    return list(_read_catalog()[0])


def model_names() -> list[str]:
    """The names `load_generator` accepts as catalog names."""
    return [e.name for e in list_models()]


def names_hint(shown: int = 6) -> str:
    """The first catalog names, for a one-line message: 'a, b, c, ... (24 in all, in stylegan2/catalog.json)'."""
    names = model_names()
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown])}, ... ({len(names)} in all, in stylegan2/catalog.json)"


def get_entry(name: str) -> CatalogEntry:
    """The entry called `name`; KeyError listing the known names otherwise."""
    for entry in list_models():
        if entry.name == name:
            return entry
    raise KeyError(f"no model {name!r} in the catalog; known: {names_hint()}")


def drag_defaults(spec: str) -> dict[str, float]:
    """The drag_defaults of the catalog model `spec`; {} for anything else (a path, a Hub file)."""
    for entry in list_models():
        if entry.name == spec:
            return dict(entry.drag_defaults)
    return {}


def default_model() -> str:
    """The model to start with: $DRAGGAN_MODEL, else the first of `default_order` available offline, else the last."""
    override = os.environ.get("DRAGGAN_MODEL", "").strip()
    if override:
        return override
    order = _read_catalog()[1]
    for name in order:
        if get_entry(name).is_available_offline():
            return name
    return order[-1]


TABLE_START, TABLE_END = "<!-- models:start -->", "<!-- models:end -->"
FORMAT_NAMES = {"stylegan2": "StyleGAN2 (PyTorch)", "stylegan2-ada": "StyleGAN2-ADA", "stylegan-human": "StyleGAN-Human",
                "stylegan2-tf": "StyleGAN2 (TensorFlow)", "stylegan3": "StyleGAN3"}


def models_table() -> str:
    """The README's "Models" table, from the catalog: name, what it shows, size, format, licence, where it is."""
    rows = ["| Name | Shows | Size (H x W) | Format | Licence | File |", "|---|---|---|---|---|---|"]
    for e in list_models():
        h, w = e.image_size
        where = (f"`{e.path}` (this repository)" if e.is_local else f"`{e.repo_id}` `{e.filename}`" if e.repo_id
                 else f"`{e.filename}` from {urlsplit(e.url).hostname} (URL, not the Hub)")
        cells = [f"`{e.name}`", e.shows, f"{h} x {w}", FORMAT_NAMES.get(e.format, e.format), e.licence, where]
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def with_models_table(readme: str) -> str:
    """`readme` with the text between TABLE_START and TABLE_END replaced by `models_table()`."""
    head, rest = readme.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_START}\n{models_table()}{TABLE_END}{tail}"
