"""Loading generators by spec: our safetensors format, pickle conversion cache, the Hub cache offline, the catalog."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hf_constants
from safetensors import safe_open
from safetensors.torch import save_file

from stylegan2 import catalog, checkpoints, safe_pickle, seed_to_z
from stylegan2.testing import tiny_generator
from stylegan2.checkpoints import CheckpointError, load_generator, resolve_device, save_generator
from test_safe_pickle import write_nvidia_pickle

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def images(G, seed: int = 5) -> torch.Tensor:
    with torch.no_grad():
        return G(seed_to_z(seed, G.z_dim), truncation_psi=0.7, noise_mode="const")


@pytest.fixture
def hf_home(tmp_path, monkeypatch) -> Path:
    """An empty, offline Hugging Face home; huggingface_hub read its settings at import, so patch those too."""
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("DRAGGAN_CACHE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    checkpoints.clear_memory_cache()
    yield home
    checkpoints.clear_memory_cache()


def put_in_hub_cache(home: Path, repo_id: str, filename: str, data: bytes, commit: str = COMMIT) -> Path:
    """Lay a file out as huggingface_hub's cache holds it: snapshots/<commit>/<file>, refs/main = commit."""
    repo_dir = home / "hub" / ("models--" + repo_id.replace("/", "--"))
    path = repo_dir / "snapshots" / commit / filename
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)  # no newline: the hub reads it verbatim
    return path


# ----------------------------------------------------------------------------
# Our format.

def test_safetensors_round_trip_gives_identical_images(tmp_path, hf_home):
    G = tiny_generator(seed=3)
    path = save_generator(G, tmp_path / "g.safetensors")
    loaded = load_generator(str(path))
    assert loaded.config == G.config
    assert torch.equal(images(loaded), images(G))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert load_generator(str(path)) is loaded  # loaded once per (source, device), then shared


def test_corrupt_or_foreign_safetensors_give_clear_errors(tmp_path, hf_home):
    good = save_generator(tiny_generator(), tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(good[: len(good) // 3])
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="not a readable .safetensors"):
        load_generator(str(tmp_path / "cut.safetensors"))
    with pytest.raises(CheckpointError, match="not a readable .safetensors"):
        load_generator(str(tmp_path / "junk.safetensors"))
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="no 'draggan_config' metadata"):
        load_generator(str(tmp_path / "other.safetensors"))


def test_missing_local_files_and_unknown_specs_say_so(tmp_path, hf_home):
    with pytest.raises(CheckpointError, match="model file not found: .*nothing.pkl"):
        load_generator(str(tmp_path / "nothing.pkl"))
    with pytest.raises(CheckpointError, match="unknown model 'lions'.*lions-512.*REPO_ID:FILE"):
        load_generator("lions")


# ----------------------------------------------------------------------------
# Pickles convert once.

def test_pickle_is_converted_once_then_read_from_the_cache(tmp_path, hf_home, monkeypatch):
    G = tiny_generator(seed=7)
    pkl = write_nvidia_pickle(tmp_path / "net.pkl", G)
    first = load_generator(str(pkl))
    cached = list((hf_home / "draggan").glob("*.safetensors"))  # default cache: <HF_HOME>/draggan
    assert len(cached) == 1
    with safe_open(str(cached[0]), "pt") as f:
        assert json.loads(f.metadata()["draggan_config"]) == G.config.to_dict()

    def no_pickle(path):
        raise AssertionError("the second load must not unpickle")

    monkeypatch.setattr(safe_pickle, "generator_from_pickle", no_pickle)
    checkpoints.clear_memory_cache()
    second = load_generator(str(pkl))
    assert second is not first
    assert torch.equal(images(second), images(G))


def test_conversion_cache_is_keyed_by_content_not_name(tmp_path, hf_home, monkeypatch):
    old, new = tiny_generator(seed=11), tiny_generator(seed=12)
    pkl = write_nvidia_pickle(tmp_path / "net.pkl", old)
    assert torch.equal(images(checkpoints.read_generator_file(pkl)), images(old))
    write_nvidia_pickle(pkl, new)  # same name, same size, other weights
    conversions = []
    real = safe_pickle.generator_from_pickle
    monkeypatch.setattr(safe_pickle, "generator_from_pickle", lambda *a: conversions.append(a) or real(*a))
    assert torch.equal(images(checkpoints.read_generator_file(pkl)), images(new))
    assert len(conversions) == 1 and len(list((hf_home / "draggan").glob("*.safetensors"))) == 2


def test_draggan_cache_overrides_the_cache_dir(tmp_path, hf_home, monkeypatch):
    monkeypatch.setenv("DRAGGAN_CACHE", str(tmp_path / "mine"))
    load_generator(str(write_nvidia_pickle(tmp_path / "net.pkl", tiny_generator())))
    assert len(list((tmp_path / "mine").glob("*.safetensors"))) == 1
    assert not (hf_home / "draggan").exists()


# ----------------------------------------------------------------------------
# The Hub, offline.

def test_offline_hub_file_not_cached_says_what_to_fetch(hf_home):
    with pytest.raises(CheckpointError) as err:
        load_generator("someone/stylegan2-models:nets/horse.pkl")
    msg = str(err.value)
    assert "nets/horse.pkl from Hub repo someone/stylegan2-models" in msg
    assert "HF_HUB_OFFLINE" in msg and "`hf download someone/stylegan2-models nets/horse.pkl`" in msg
    assert "--model PATH" in msg and "\n" not in msg


def test_cached_hub_files_load_offline(hf_home):
    G = tiny_generator(seed=8)
    data = save_generator(G, hf_home / "tmp.safetensors").read_bytes()
    put_in_hub_cache(hf_home, "someone/stylegan2-models", "nets/tiny.safetensors", data)
    assert torch.equal(images(load_generator("someone/stylegan2-models:nets/tiny.safetensors")), images(G))
    pinned = load_generator(f"someone/stylegan2-models:nets/tiny.safetensors@{COMMIT}")
    assert torch.equal(images(pinned), images(G))


def test_catalog_name_loads_a_cached_hub_pickle_offline(tmp_path, hf_home):
    entry = catalog.get_entry("lions-512")
    G = tiny_generator(seed=9)
    put_in_hub_cache(hf_home, entry.repo_id, entry.filename,
                     write_nvidia_pickle(tmp_path / "lions.pkl", G).read_bytes())
    assert entry.is_available_offline()
    assert torch.equal(images(load_generator("lions-512")), images(G))


# ----------------------------------------------------------------------------
# Catalog entries and the default.

def test_catalog_entries_carry_what_the_app_needs():
    entries = catalog.list_models()
    assert len(entries) >= 20 and len({e.name for e in entries}) == len(entries)
    readable = safe_pickle.readable_formats() | {"stylegan3"}  # StyleGAN3's reader comes with its generator
    assert {"stylegan2", "stylegan2-ada", "stylegan-human", "stylegan2-tf"} <= safe_pickle.readable_formats()
    for e in entries:
        assert e.label and e.resolution >= 4 and e.shows and e.licence and e.source and e.checked, e.name
        assert e.format in readable, (e.name, e.format)
        assert [e.hub_spec is not None, e.is_local, e.url is not None].count(True) == 1, e.name
        assert e.repo_id in (None, "DragGan/DragGan-Models", "ZeqiangLai/StyleGAN2-pkl"), e.name  # canonical names
        assert e.url is None or (e.url.startswith("https://api.ngc.nvidia.com/") and e.format == "stylegan3"), e.name
        assert e.verified == e.is_local, e.name  # only what was loaded here is verified
        if not e.verified:
            assert "not downloaded" in e.checked
    human = catalog.get_entry("human-512")
    assert (human.format, human.image_size, human.resolution) == ("stylegan-human", (512, 256), 512)
    assert catalog.get_entry("cat-256").format == "stylegan2-tf"  # TensorFlow pickles are no longer left out
    assert catalog.get_entry("toyfaces-64").path == "models/toyfaces-64.safetensors"
    with pytest.raises(KeyError, match="lions-512"):
        catalog.get_entry("no-such-model")


def test_catalog_drag_defaults_are_checked_when_the_catalog_is_read(tmp_path, monkeypatch):
    assert catalog.drag_defaults("toyfaces-64") == {"lr": 0.016, "r1": 24, "r2": 48, "feature_block": 4}
    assert catalog.drag_defaults("lions-512") == {} and catalog.drag_defaults("some/file.pkl") == {}
    entry = {"name": "x", "label": "X", "path": "x.safetensors", "resolution": 64, "shows": "x", "licence": "x",
             "source": "x"}
    for defaults, message in [({"radius": 3}, "unknown drag_defaults key 'radius'; allowed: lr, r1"),
                              ({"feature_block": 2.5}, "drag_defaults feature_block must be a whole number > 0"),
                              ({"r1": -1}, "drag_defaults r1 must be a number > 0"),
                              ({"lr": True}, "drag_defaults lr must be a number"),
                              ([24], "drag_defaults must be an object")]:
        path = tmp_path / "catalog.json"
        path.write_text(json.dumps({"default_order": ["x"], "models": [entry | {"drag_defaults": defaults}]}))
        monkeypatch.setattr(catalog, "CATALOG_PATH", path)
        catalog._read_catalog.cache_clear()
        try:
            with pytest.raises(ValueError, match=f"catalog entry 'x': {re.escape(message)}"):
                catalog.list_models()
        finally:
            catalog._read_catalog.cache_clear()


def test_default_is_the_first_model_already_here_real_ones_before_the_toy(tmp_path, hf_home, monkeypatch):
    """A fake Hub cache (HF_HUB_CACHE at a tmp dir laid out as huggingface_hub's cache): nothing is downloaded."""
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.delenv("DRAGGAN_MODEL", raising=False)
    monkeypatch.setattr(catalog, "REPO_ROOT", tmp_path)
    order = catalog._read_catalog()[1]
    assert order[-1] == "toyfaces-64" and order[:2] == ("lions-512", "human-512")
    assert catalog.default_model() == "toyfaces-64"  # nothing at all here: the toy, whose file is missing too
    with pytest.raises(CheckpointError, match="'toyfaces-64' is not available: .*does not exist yet"):
        load_generator("toyfaces-64")
    save_generator(tiny_generator(resolution=64), tmp_path / "models" / "toyfaces-64.safetensors")
    assert catalog.default_model() == "toyfaces-64"  # a machine with nothing cached opens on the toy, offline
    human = catalog.get_entry("human-512")
    put_in_hub_cache(hf_home, human.repo_id, human.filename, b"cached", commit="1" * 40)
    assert catalog.default_model() == "human-512"  # a real model cached beats the toy
    lions = catalog.get_entry("lions-512")
    (hf_home / "hub" / ("models--" + lions.repo_id.replace("/", "--")) / "snapshots" / ("1" * 40)
     / lions.filename).write_bytes(b"cached too")  # same repo and commit as human's file
    assert catalog.default_model() == "lions-512"  # the first of default_order wins
    monkeypatch.setenv("DRAGGAN_MODEL", "ffhq-512")
    assert catalog.default_model() == "ffhq-512"


# ----------------------------------------------------------------------------
# Devices.

def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert auto.type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' is not available here"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu-please")


def test_the_space_preloads_a_catalog_model_it_opens_on():
    """README's front matter: preload_from_hub names a catalog file that default_order puts before the toy."""
    front = (Path(__file__).resolve().parents[1] / "README.md").read_text().split("---\n")[1]
    preload = re.search(r"preload_from_hub:\n  - (\S+) (\S+)\n", front)
    repos = set(re.findall(r"^  - (\S+/\S+)$", front.split("preload_from_hub:")[0], flags=re.M))
    entry = next(e for e in catalog.list_models() if (e.repo_id, e.filename) == preload.groups())
    order = catalog._read_catalog()[1]
    assert order.index(entry.name) < order.index("toyfaces-64")
    assert {e.repo_id for e in catalog.list_models() if e.repo_id} <= repos  # the Space links every repo it uses


def test_readme_models_table_is_the_catalogs():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert readme.count(catalog.TABLE_START) == 1 and readme.count(catalog.TABLE_END) == 1
    assert catalog.with_models_table(readme) == readme, "regenerate: catalog.with_models_table(README)"
    table = catalog.models_table()
    assert len(table.splitlines()) == 2 + len(catalog.list_models())
    assert "| `human-512` | full-body people | 512 x 256 | StyleGAN-Human |" in table
    assert "| `cat-256` | cats | 256 x 256 | StyleGAN2 (TensorFlow) |" in table
    assert ("| `stylegan3-t-ffhq-1024` | human faces (aligned, FFHQ) | 1024 x 1024 | StyleGAN3 | NVIDIA Source Code "
            "License for StyleGAN3 (non-commercial") in table
    assert "| `stylegan3-t-ffhq-1024x1024.pkl` from api.ngc.nvidia.com (URL, not the Hub) |" in table


def test_safetensors_of_an_unknown_format_say_so_and_a_registered_format_loads(tmp_path, hf_home, monkeypatch):
    G = tiny_generator(seed=2)
    path = save_generator(G, tmp_path / "g.safetensors")
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["format"] == checkpoints.FORMAT
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    other = tmp_path / "other.safetensors"
    save_file(tensors, str(other), metadata=meta | {"format": "someone-elses-gan"})
    with pytest.raises(CheckpointError, match="'someone-elses-gan' file, which this app does not read"):
        load_generator(str(other))
    from stylegan2 import model_files
    monkeypatch.setitem(model_files._FILE_FORMATS, "someone-elses-gan", model_files._stylegan2_file)
    assert torch.equal(images(load_generator(str(other))), images(G))
