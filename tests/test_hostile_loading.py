"""Hostile model and embedding files, and hostile specs: each is refused with one line, in bounded time and memory.

The hostile files are built here. Every refusal is checked the same way (`refused`): a CheckpointError
whose message is one line of at most 300 characters. For the bombs, the peak growth of the resident
memory during the call is measured by sampling /proc/self/statm; the time limits are generous guards
against a hang (the measured times are a small fraction of them), not speed tests.
"""
from __future__ import annotations

import collections
import contextlib
import gc
import io
import json
import os
import pickle
import struct
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors import safe_open
from safetensors.torch import save_file

from pti.embedding import EmbeddingError, embedding_info, load_embedding
from stylegan2 import checkpoints, safe_pickle
from stylegan2.checkpoints import (NOT_ALLOWED, CheckpointError, GeneratorCache, ModelNotAllowedError,
                                   check_spec_allowed, generator_hash, load_generator, save_generator,
                                   write_safetensors)
from stylegan2.networks import Generator, GeneratorConfig
from stylegan2.testing import tiny_generator
from test_checkpoints import hf_home  # noqa: F401  (fixture: an empty, offline Hugging Face home)
from test_safe_pickle import Persistent, fake_nvidia_modules, module_record, nvidia_kwargs

MAX_GROWTH = 300 << 20  # bytes of resident memory a refused bomb may cost
HANG_GUARD_S = 30.0     # a refusal slower than this is a hang


# ----------------------------------------------------------------------------
# Measuring.

def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[list[int]]:
    """Yields a list that holds, after the block, the peak RSS growth during it (sampled every 5 ms)."""
    gc.collect()
    base, peak, done = rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes() - base)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()
        peak[0] = max(peak[0], rss_bytes() - base)


def refused(call: Callable[[], Any], kind: type[Exception] = CheckpointError, match: str = "") -> str:
    """Run `call`; it must raise `kind` with a one-line message under 300 characters containing `match`,
    within the hang guard and without growing memory past MAX_GROWTH. Returns the message."""
    start = time.perf_counter()
    with peak_rss_growth() as growth:
        with pytest.raises(Exception) as err:
            call()
    elapsed = time.perf_counter() - start
    msg = str(err.value)
    assert isinstance(err.value, kind), f"{type(err.value).__name__}: {msg[:300]}"
    assert "\n" not in msg and len(msg) <= 300, msg[:400]
    assert match in msg, msg
    assert elapsed < HANG_GUARD_S, elapsed
    assert growth[0] < MAX_GROWTH, f"{growth[0] / 2**20:.0f} MB"
    return msg


# ----------------------------------------------------------------------------
# Hostile pickles.

def snapshot(rec: Persistent) -> bytes:
    with fake_nvidia_modules():
        return pickle.dumps({"G_ema": rec}, protocol=4)


def shared_child_pickle(width: int = 100, levels: int = 5, tensor_mb: int = 12) -> bytes:
    """A real tiny G_ema plus one child shared `width` ways on each of `levels` levels (pickle stores it once)."""
    G = tiny_generator()
    with fake_nvidia_modules():
        rec = module_record(G, "pass", nvidia_kwargs(G))
        node = Persistent("Leaf", {"_parameters": collections.OrderedDict(w=torch.zeros(tensor_mb << 18)),
                                   "_modules": collections.OrderedDict()})
        for _ in range(levels):
            node = Persistent("Shared", {"_parameters": collections.OrderedDict(),
                                         "_modules": collections.OrderedDict((f"c{i}", node) for i in range(width))})
        rec.state["_modules"]["synthesis"].state["_modules"]["extra"] = node
        return pickle.dumps({"G_ema": rec}, protocol=4)


def config_bomb_pickle(**config: Any) -> bytes:
    """A tiny generator's weights under constructor arguments that ask for a huge one."""
    G = tiny_generator()
    kwargs = nvidia_kwargs(G)
    kwargs.update(config)
    with fake_nvidia_modules():
        return pickle.dumps({"G_ema": module_record(G, "pass", kwargs)}, protocol=4)


class Node:
    """Pickles as `torch.nn.modules.hostile.Node` (NEWOBJ, then BUILD with its __dict__): cycles can be written."""


@contextlib.contextmanager
def nameable_node() -> Iterator[None]:
    module = types.ModuleType("torch.nn.modules.hostile")
    Node.__module__, module.Node = module.__name__, Node
    sys.modules[module.__name__] = module
    try:
        yield
    finally:
        del sys.modules[module.__name__]


def cycle_pickle() -> bytes:
    G = tiny_generator()
    root = Node()
    root.__dict__.update(_parameters={}, _buffers={}, _modules={"loop": root}, _init_kwargs=json.loads(json.dumps(nvidia_kwargs(G))))
    with nameable_node():
        return pickle.dumps({"G_ema": root}, protocol=2)


_CLASS_MEMO = struct.pack("<I", 10**6)  # a memo slot the spliced kwargs pickle never uses


def _text(s: str) -> bytes:
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def deep_chain_pickle(depth: int, kwargs: dict, deep_list: int = 0) -> bytes:
    """{"G_ema": a `_modules` chain `depth` records deep}, written as opcodes (pickle.dumps would recurse).

    deep_list > 0 also sets the root's resample_filter to a list nested that deep.
    """
    new = b"j" + _CLASS_MEMO + b")\x81"  # LONG_BINGET class, EMPTY_TUPLE, NEWOBJ
    body = pickle.dumps(json.loads(json.dumps(kwargs)), protocol=2)[2:-1]  # plain dicts  # the dict, left on the stack
    if deep_list:
        body += _text("resample_filter") + b"]" * deep_list + b"a" * (deep_list - 1) + b"s"
    root = new + b"}" + _text("_init_kwargs") + body + b"s" + _text("_modules") + b"}" + _text("m")
    level = new + b"}" + _text("_modules") + b"}" + _text("m")
    chain = root + level * (depth - 1) + new + b"ssb" * depth  # SETITEM m, SETITEM _modules, BUILD
    head = b"\x80\x02c" + b"torch.nn.modules.hostile\nNode\n" + b"r" + _CLASS_MEMO
    return head + b"}" + _text("G_ema") + chain + b"s."


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_shared_child_pickle_is_refused_in_bounded_time_and_memory(tmp_path, hf_home):
    path = write(tmp_path / "shared.pkl", shared_child_pickle())
    assert path.stat().st_size > 12 << 20  # the issue's 12 MB file
    refused(lambda: load_generator(str(path)), match="appears twice")


def test_shared_child_is_walked_once_by_the_record_walk():
    rec = safe_pickle.safe_load(io.BytesIO(shared_child_pickle(width=3, levels=2, tensor_mb=0)))
    with pytest.raises(CheckpointError, match="synthesis.extra.c0.c1 appears twice"):
        safe_pickle.module_state_dict(rec["G_ema"])


@pytest.mark.parametrize("config", [dict(w_dim=40000, z_dim=40000), dict(img_resolution=1 << 20),
                                    dict(channel_max=40000, channel_base=1 << 30), dict(z_dim=float("nan"))])
def test_config_bomb_pickle_is_refused_before_building(tmp_path, hf_home, config):
    path = write(tmp_path / "bomb.pkl", config_bomb_pickle(**config))
    refused(lambda: load_generator(str(path)), match="outside what this app loads")


def safetensors_with_config(path: Path, config: dict, G: Generator | None = None) -> Path:
    G = G or tiny_generator()
    save_file({k: v.contiguous() for k, v in G.state_dict().items()}, str(path),
              metadata={"format": checkpoints.FORMAT, checkpoints.CONFIG_KEY: json.dumps(config)})
    return path


def test_config_bomb_safetensors_is_refused_before_building(tmp_path, hf_home):
    config = tiny_generator().config.to_dict() | {"w_dim": 40000, "z_dim": 40000}
    path = safetensors_with_config(tmp_path / "bomb.safetensors", config)
    refused(lambda: load_generator(str(path)), match="_dim = 40000")


def test_a_large_config_over_tiny_tensors_is_refused_before_allocating(tmp_path, hf_home):
    big = GeneratorConfig(z_dim=1024, w_dim=1024, img_resolution=1024, channel_base=1 << 20, channel_max=1024)
    assert sum(np.prod(s) for s in big.state_shapes().values()) * 4 > 700 << 20  # ~800 MB if it were built
    path = safetensors_with_config(tmp_path / "big.safetensors", big.to_dict())
    refused(lambda: load_generator(str(path)), match="weights do not fit")
    pkl = write(tmp_path / "big.pkl", config_bomb_pickle(**{k: v for k, v in big.to_dict().items()
                                                            if k not in ("mapping_layers", "mapping_lr_multiplier")}))
    refused(lambda: load_generator(str(pkl)), match="weights do not fit")


def test_modules_cycle_is_refused(tmp_path, hf_home):
    path = write(tmp_path / "cycle.pkl", cycle_pickle())
    refused(lambda: load_generator(str(path)), match="loop appears twice")


def test_100k_deep_module_chain_is_refused_without_recursion(tmp_path, hf_home):
    path = write(tmp_path / "deep.pkl", deep_chain_pickle(100_000, nvidia_kwargs(tiny_generator())))
    refused(lambda: load_generator(str(path)), match="deeper or larger than any StyleGAN2 generator")


def test_100k_deep_nested_setting_is_refused(tmp_path, hf_home):
    path = write(tmp_path / "deeplist.pkl", deep_chain_pickle(1, nvidia_kwargs(tiny_generator()), deep_list=100_000))
    refused(lambda: load_generator(str(path)), match="resample_filter=a list")


def test_oversized_pickle_is_refused_unread(tmp_path, hf_home, monkeypatch):
    path = write(tmp_path / "big.pkl", b"\x80\x04" + b"N" * 4096 + b".")
    monkeypatch.setattr(checkpoints, "MAX_MODEL_BYTES", 1024)
    refused(lambda: load_generator(str(path)), match="over this app's limit")


# ----------------------------------------------------------------------------
# Hostile safetensors headers.

def raw_safetensors(path: Path, header: bytes, declared: int | None = None, data: bytes = b"") -> Path:
    return write(path, struct.pack("<Q", len(header) if declared is None else declared) + header + data)


@pytest.mark.parametrize("case", ["huge header", "deep header", "deep config", "offsets past the end",
                                  "size mismatch", "not an object"])
def test_hostile_safetensors_headers_are_refused(tmp_path, hf_home, case):
    deep = b"[" * 100_000 + b"]" * 100_000
    meta = {"format": checkpoints.FORMAT, checkpoints.CONFIG_KEY: deep.decode()}
    entry = lambda dtype, shape, a, b: {"w": {"dtype": dtype, "shape": shape, "data_offsets": [a, b]}}
    header = {"huge header": json.dumps({"__metadata__": {"pad": "x" * (2 << 20)}}).encode(),
              "deep header": deep,
              "deep config": json.dumps({"__metadata__": meta}).encode(),
              "offsets past the end": json.dumps(entry("F32", [1 << 20], 0, 4 << 20)).encode(),
              "size mismatch": json.dumps(entry("F32", [4, 4], 0, 8)).encode(),
              "not an object": b"[1, 2, 3]"}[case]
    path = raw_safetensors(tmp_path / "x.safetensors", header, data=b"\0" * 8)
    refused(lambda: load_generator(str(path)), match="safetensors" if case != "deep config" else "not JSON")


def test_header_declaring_terabytes_is_refused(tmp_path, hf_home):
    path = raw_safetensors(tmp_path / "x.safetensors", b"{}", declared=1 << 40)
    refused(lambda: load_generator(str(path)), match="truncated or not safetensors")


# ----------------------------------------------------------------------------
# Paths that are not model files.

def test_symlink_loop_is_one_line(tmp_path, hf_home):
    a, b = tmp_path / "a.pkl", tmp_path / "b.pkl"
    a.symlink_to(b)
    b.symlink_to(a)
    refused(lambda: load_generator(str(a)), match="symlink loop")


def test_directory_and_fifo_as_model_are_one_line(tmp_path, hf_home):
    (tmp_path / "dir.pkl").mkdir()
    refused(lambda: load_generator(str(tmp_path / "dir.pkl")), match="is a folder")
    (tmp_path / "model.safetensors").mkdir()
    refused(lambda: load_generator(str(tmp_path / "model.safetensors")), match="is a folder")
    os.mkfifo(tmp_path / "fifo.pkl")  # opening it for reading without a writer would block
    refused(lambda: load_generator(str(tmp_path / "fifo.pkl")), match="not a regular file")


def test_huge_or_control_character_specs_are_not_echoed(tmp_path, hf_home):
    refused(lambda: load_generator("x" * 5_000_000), match="at most 1024 characters")
    refused(lambda: load_generator("a\nb.pkl"), match="control characters")
    long_missing = str(tmp_path / ("n" * 200 + ".pkl"))
    assert "..." in refused(lambda: load_generator(long_missing), match="model file not found")
    assert "..." in refused(lambda: load_generator("z" * 500), match="unknown model")


# ----------------------------------------------------------------------------
# Access policy.

def test_policy_refusal_is_the_same_message_whatever_the_spec_names(tmp_path, hf_home, monkeypatch):
    existing = save_generator(tiny_generator(), tmp_path / "real.safetensors")
    specs = [str(existing), str(tmp_path / "missing.pkl"), "someone/models:net.pkl", "/etc/passwd",
             "x" * 100_000, "lions-512/../../etc/passwd"]

    def no_file_access(*args: Any) -> None:
        raise AssertionError("the policy is applied before touching files or the network")

    monkeypatch.setattr(checkpoints, "resolve_spec", no_file_access)
    messages = {refused(lambda: load_generator(spec, allow_custom=False), ModelNotAllowedError) for spec in specs}
    assert len(messages) == 1 and messages.pop().startswith(NOT_ALLOWED)
    check_spec_allowed("lions-512", allow_custom=False)  # catalog names pass
    check_spec_allowed(str(existing), allow_custom=True)
    with pytest.raises(ModelNotAllowedError):
        check_spec_allowed(None, allow_custom=True)  # type: ignore[arg-type]


def test_catalog_names_still_load_when_custom_models_are_off(tmp_path, hf_home, monkeypatch):
    from stylegan2 import catalog
    monkeypatch.setattr(catalog, "REPO_ROOT", tmp_path)
    G = tiny_generator(resolution=64)
    save_generator(G, tmp_path / "models" / "toyfaces-64.safetensors")
    assert generator_hash(load_generator("toyfaces-64", allow_custom=False)) == generator_hash(G)


# ----------------------------------------------------------------------------
# Hostile embeddings.

def embedding(path: Path, G: Generator, pivot: torch.Tensor | None = None, target: np.ndarray | None = None,
              **metadata: str) -> Path:
    """An embedding file for base `G`, written directly (no inversion): zero pivot and target unless given."""
    res = G.img_resolution
    tensors = {"pivot_ws": torch.zeros(1, G.num_ws, G.w_dim) if pivot is None else pivot,
               "target": torch.from_numpy(np.zeros((res, res, 3), np.uint8) if target is None else target)}
    meta = {"format": "draggan-pti", "version": "1", "model_spec": "tiny", "base_sha256": generator_hash(G),
            "base_config": json.dumps(G.config.to_dict()), "image_size": str(res),
            "preset": json.dumps({"name": "fast"}), "metrics": json.dumps({})} | metadata
    return write_safetensors(path, tensors, meta)


def test_a_sound_embedding_loads(tmp_path):
    G = tiny_generator()
    pivot = torch.randn(1, G.num_ws, G.w_dim)
    G2, ws = load_embedding(embedding(tmp_path / "e.safetensors", G, pivot), "cpu", base_G=G)
    assert torch.equal(ws, pivot) and generator_hash(G2) == generator_hash(G)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_pivot_is_refused(tmp_path, value):
    G = tiny_generator()
    pivot = torch.zeros(1, G.num_ws, G.w_dim)
    pivot[0, 1, 2] = value
    path = embedding(tmp_path / "e.safetensors", G, pivot)
    refused(lambda: load_embedding(path, "cpu", base_G=G), EmbeddingError, "pivot_ws holds NaN or infinite")


@pytest.mark.parametrize("which,shape", [("target", (32, 32, 4)), ("target", (4000, 4000, 3)),
                                         ("pivot_ws", (1, 2000, 32)), ("pivot_ws", (32,))])
def test_wrong_shaped_target_or_pivot_is_refused_from_the_header(tmp_path, which, shape):
    G = tiny_generator()
    kw = {"target": np.zeros(shape, np.uint8)} if which == "target" else {"pivot": torch.zeros(shape)}
    path = embedding(tmp_path / "e.safetensors", G, **kw)
    refused(lambda: embedding_info(path), EmbeddingError, f"tensor {which} is")
    refused(lambda: load_embedding(path, "cpu", base_G=G), EmbeddingError, "the base model needs")


@pytest.mark.parametrize("spec", ["x" * 100_000, "a\nb", "", "tab\there"])
def test_hostile_model_spec_is_refused(tmp_path, spec):
    path = embedding(tmp_path / "e.safetensors", tiny_generator(), model_spec=spec)
    refused(lambda: embedding_info(path), EmbeddingError, "names its base model badly")


def test_embedding_header_over_the_bound_is_refused(tmp_path):
    path = embedding(tmp_path / "e.safetensors", tiny_generator(), preset=json.dumps({"pad": "x" * (2 << 20)}))
    refused(lambda: embedding_info(path), EmbeddingError, "over this app's limit")


def test_embedding_config_bomb_and_stray_tensors_are_refused(tmp_path):
    G = tiny_generator()
    bomb = json.dumps(G.config.to_dict() | {"w_dim": 40000})
    path = embedding(tmp_path / "bomb.safetensors", G, base_config=bomb)
    refused(lambda: embedding_info(path), EmbeddingError, "w_dim = 40000")
    stray = tmp_path / "stray.safetensors"
    save_file({"pivot_ws": torch.zeros(1, G.num_ws, G.w_dim), "G.not.a.weight": torch.zeros(3)}, str(stray),
              metadata=dict(format="draggan-pti", version="1", model_spec="tiny", base_sha256=generator_hash(G),
                            base_config=json.dumps(G.config.to_dict()), image_size="32", preset="{}", metrics="{}"))
    refused(lambda: load_embedding(stray, "cpu", base_G=G), EmbeddingError, "does not belong")


def test_public_server_refuses_embeddings_of_non_catalog_models(tmp_path, hf_home):
    G = tiny_generator()
    model = save_generator(G, tmp_path / "tiny.safetensors")
    path = embedding(tmp_path / "e.safetensors", G, model_spec=str(model))
    msg = refused(lambda: load_embedding(path, "cpu", allow_custom=False), ModelNotAllowedError)
    assert msg == refused(lambda: load_generator("/no/such.pkl", allow_custom=False), ModelNotAllowedError)
    G2, _ = load_embedding(path, "cpu")  # a trusted setup loads it
    assert generator_hash(G2) == generator_hash(G)


# ----------------------------------------------------------------------------
# The generator cache.

@pytest.fixture
def small_cache(monkeypatch) -> GeneratorCache:
    cache = GeneratorCache(max_models=2)
    monkeypatch.setattr(checkpoints, "generator_cache", cache)
    return cache


def counting_reads(monkeypatch) -> list[str]:
    reads: list[str] = []
    real = checkpoints.read_generator_file

    def read(path):
        reads.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(checkpoints, "read_generator_file", read)
    return reads


def test_lru_bounds_the_cache_and_a_held_generator_is_reused(tmp_path, hf_home, small_cache, monkeypatch):
    paths = [str(save_generator(tiny_generator(seed=i), tmp_path / f"g{i}.safetensors")) for i in range(3)]
    reads = counting_reads(monkeypatch)
    held = load_generator(paths[0])
    load_generator(paths[1])
    load_generator(paths[2])
    assert len(small_cache.cached_keys()) == 2 and reads == ["g0.safetensors", "g1.safetensors", "g2.safetensors"]
    assert load_generator(paths[0]) is held  # evicted from the LRU, still in use: found, not loaded again
    assert reads == ["g0.safetensors", "g1.safetensors", "g2.safetensors"]
    gc.collect()  # g1 was evicted by g0's return and nobody holds it
    load_generator(paths[1])
    assert reads[-1] == "g1.safetensors" and len(reads) == 4


def test_byte_limit_keeps_only_the_most_recent(tmp_path, hf_home, small_cache):
    small_cache.set_limits(max_bytes=1)
    for i in range(3):
        load_generator(str(save_generator(tiny_generator(seed=i), tmp_path / f"g{i}.safetensors")))
    assert [key[0][1] for key in small_cache.cached_keys()] == [os.path.realpath(tmp_path / "g2.safetensors")]


def test_clear_memory_cache_forgets_even_held_generators(tmp_path, hf_home):
    path = str(save_generator(tiny_generator(), tmp_path / "g.safetensors"))
    first = load_generator(path)
    checkpoints.clear_memory_cache()
    assert load_generator(path) is not first


def test_a_slow_load_does_not_block_another_model(tmp_path, hf_home, small_cache, monkeypatch):
    slow, fast = (str(save_generator(tiny_generator(seed=i), tmp_path / f"{n}.safetensors"))
                  for i, n in enumerate(["slow", "fast"]))
    release, started = threading.Event(), threading.Event()
    real = checkpoints.read_generator_file

    def read(path):
        if Path(path).name == "slow.safetensors":
            started.set()
            assert release.wait(HANG_GUARD_S)
        return real(path)

    monkeypatch.setattr(checkpoints, "read_generator_file", read)
    results: list[Generator] = []
    threads = [threading.Thread(target=lambda: results.append(load_generator(slow))) for _ in range(2)]
    for t in threads:
        t.start()
    assert started.wait(HANG_GUARD_S)
    try:
        assert load_generator(fast).img_resolution == 32  # returns while "slow" is still loading
        assert all(t.is_alive() for t in threads)
    finally:
        release.set()
        for t in threads:
            t.join()
    assert len(results) == 2 and results[0] is results[1]  # two callers, one load


# ----------------------------------------------------------------------------
# The Hub, unreachable.

def test_unreachable_hub_is_asked_once_then_the_cache_only(hf_home, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    probes, downloads = [], []

    def probe(url, timeout=None):
        probes.append(timeout)
        raise ConnectionError("no route to host")

    def download(repo, file, **kwargs):
        downloads.append(kwargs)
        raise LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(checkpoints, "get_hf_file_metadata", probe)
    monkeypatch.setattr(checkpoints, "hf_hub_download", download)
    msg = refused(lambda: load_generator("someone/models:net.pkl"), match="the Hub cannot be reached")
    assert "hf download someone/models net.pkl" in msg
    assert probes == [checkpoints.HUB_TIMEOUT_S]
    assert downloads[0]["local_files_only"] and downloads[0]["etag_timeout"] == checkpoints.HUB_TIMEOUT_S


# -- the record walk's budget, each limit at its bound (planted bugs slipped past the pickle-level tests) ----

def _module(params: int = 0, numel: int = 1, children: dict | None = None):
    from stylegan2.records import record_class
    node = record_class("torch.nn.modules.module.Module")()
    node.state = {"_parameters": {f"p{i}": torch.zeros(numel) for i in range(params)}, "_modules": children or {}}
    return node


def _chain(depth: int):
    node = _module(1)
    for _ in range(depth):
        node = _module(children={"c": node})
    return node


@pytest.mark.parametrize("budget,tree,ok", [
    (dict(max_modules=11), lambda: _module(children={f"c{i}": _module() for i in range(10)}), True),
    (dict(max_modules=10), lambda: _module(children={f"c{i}": _module() for i in range(10)}), False),
    (dict(max_depth=5), lambda: _chain(5), True),
    (dict(max_depth=4), lambda: _chain(5), False),
    (dict(max_tensors=5), lambda: _module(5), True),
    (dict(max_tensors=4), lambda: _module(5), False),
    (dict(max_bytes=400), lambda: _module(1, numel=100), True),
    (dict(max_bytes=399), lambda: _module(1, numel=100), False),
])
def test_the_record_walk_stops_at_each_limit_of_its_budget(budget, tree, ok):
    from stylegan2.records import WalkBudget, module_state_dict
    walk = lambda: module_state_dict(tree(), budget=WalkBudget(**budget))
    if ok:
        assert isinstance(walk(), dict)
    else:
        with pytest.raises(CheckpointError, match="deeper or larger|more tensors or bytes"):
            walk()


def _safetensors_file(path, entry: dict, data: bytes) -> str:
    header = json.dumps({"w": entry}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return str(path)


@pytest.mark.parametrize("entry,problem", [
    (dict(dtype="F32", shape=[2], data_offsets=[0, 8]), None),
    (dict(dtype="F32", shape=[3], data_offsets=[0, 8]), "size that does not match its shape"),
    (dict(dtype="F32", shape=[1], data_offsets=[0, 8]), "size that does not match its shape"),
    (dict(dtype="F32", shape=[4], data_offsets=[0, 16]), "lies outside the file"),
    (dict(dtype="F32", shape=[2], data_offsets=[4, 12]), "lies outside the file"),
    (dict(dtype="F32", shape=[-2], data_offsets=[0, 8]), "malformed shape"),
    (dict(dtype="F32", shape=[2], data_offsets=[8, 0]), "lies outside the file"),
])
def test_each_safetensors_entry_must_fit_its_shape_and_the_file(tmp_path, entry, problem):
    from stylegan2.model_files import read_safetensors_header
    path = _safetensors_file(tmp_path / "m.safetensors", entry, bytes(8))  # 8 data bytes
    if problem is None:
        assert read_safetensors_header(path).shapes == {"w": (2,)}
    else:
        with pytest.raises(CheckpointError, match=problem):
            read_safetensors_header(path)


def test_a_model_file_with_integer_tensors_is_refused(tmp_path):
    from stylegan2.checkpoints import read_generator_file
    from stylegan2.model_files import save_generator
    path = save_generator(tiny_generator(), tmp_path / "ok.safetensors")
    read_generator_file(path)
    with safe_open(str(path), framework="pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    name = next(iter(tensors))
    tensors[name] = tensors[name].to(torch.int32)
    save_file(tensors, str(tmp_path / "int.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match="must be floating point"):
        read_generator_file(tmp_path / "int.safetensors")
