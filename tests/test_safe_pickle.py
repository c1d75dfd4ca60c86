"""NVIDIA-style pickles load without running their code; hostile pickles are refused before acting.

The pickles are written here with NVIDIA's structure: each network pickles as a call of
`torch_utils.persistence._reconstruct_persistent_obj(meta)` with the module source, class name and
`__dict__` state, settings as `dnnlib.util.EasyDict`, tensors by torch's own reduction. Fake
`torch_utils` / `dnnlib` modules exist only while writing (pickle must be able to name them).
`write_nvidia_pickle` is also used by the checkpoint and command-line tests.
"""
from __future__ import annotations

import builtins
import collections
import contextlib
import io
import os
import pickle
import re
import subprocess
import sys
import types
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from stylegan2 import Generator, seed_to_z
from stylegan2.testing import tiny_generator
from stylegan2.safe_pickle import (CheckpointError, UnsafeCheckpointError, UnsupportedCheckpointError,
                                   generator_from_pickle, safe_load)

_FAKE_MODULES = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util", "dnnlib.tflib",
                 "dnnlib.tflib.network")


def _never_called(*args: Any) -> Any:
    raise AssertionError("only the safe unpickler reads these pickles")


class EasyDict(dict):
    """Pickles as dnnlib.util.EasyDict, like NVIDIA's settings."""


class TFNetwork:
    """Pickles as dnnlib.tflib.network.Network, like the original TensorFlow StyleGAN2 pickles."""

    def __init__(self, name: str):
        self.name = name

    def __getstate__(self) -> dict[str, Any]:
        return dict(version=4, name=self.name, static_kwargs={}, components={}, build_module_src="raise",
                    build_func_name="G_main", variables=[("G_mapping/Dense0/weight", np.zeros((2, 2), np.float32))])


@contextlib.contextmanager
def fake_nvidia_modules() -> Iterator[None]:
    """Make `torch_utils.persistence`, `dnnlib.util` and `dnnlib.tflib.network` nameable by pickle, briefly."""
    saved = {name: sys.modules.get(name) for name in _FAKE_MODULES}
    mods = {name: types.ModuleType(name) for name in _FAKE_MODULES}
    _never_called.__module__, _never_called.__qualname__ = "torch_utils.persistence", "_reconstruct_persistent_obj"
    mods["torch_utils.persistence"]._reconstruct_persistent_obj = _never_called
    EasyDict.__module__ = "dnnlib.util"
    mods["dnnlib.util"].EasyDict = EasyDict
    TFNetwork.__module__, TFNetwork.__qualname__ = "dnnlib.tflib.network", "Network"
    mods["dnnlib.tflib.network"].Network = TFNetwork
    sys.modules.update(mods)
    try:
        yield
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


class Persistent:
    """Pickles like an object of an NVIDIA `@persistence.persistent_class`."""

    def __init__(self, class_name: str, state: dict[str, Any], module_src: str = "pass"):
        self.class_name, self.state, self.module_src = class_name, state, module_src

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name,
                    state=self.state)
        return (_never_called, (meta,))


class Hostile:
    """Pickles as a call of `func(*args)`."""

    def __init__(self, func: Any, *args: Any):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def module_record(module: torch.nn.Module, module_src: str, init_kwargs: dict | None = None) -> Persistent:
    """`module` as NVIDIA pickles it: its nn.Module __dict__ (parameters, buffers, submodules, plain attributes)."""
    state: dict[str, Any] = {
        "training": False,
        "_parameters": collections.OrderedDict((k, torch.nn.Parameter(v.detach().clone(), requires_grad=False))
                                               for k, v in module._parameters.items()),
        "_buffers": collections.OrderedDict((k, v.clone()) for k, v in module._buffers.items()),
        "_non_persistent_buffers_set": set(),
        "_forward_hooks": collections.OrderedDict(),
        "_modules": collections.OrderedDict((k, module_record(m, module_src)) for k, m in module._modules.items()),
        "_init_args": (),
        "_init_kwargs": EasyDict(init_kwargs or {}),
    }
    state.update({k: v for k, v in vars(module).items() if type(v) in (int, float, str, bool, list)})
    return Persistent(type(module).__name__, state, module_src)


def nvidia_kwargs(G: Generator, nested: bool = False) -> EasyDict:
    """NVIDIA's Generator kwargs for `G`: flat (stylegan3 repo) or with synthesis_kwargs (stylegan2-ada-pytorch)."""
    cfg = G.config
    synthesis = EasyDict(channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                         num_fp16_res=cfg.num_fp16_res, conv_clamp=cfg.conv_clamp)
    kwargs = EasyDict(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
                      img_channels=cfg.img_channels, mapping_kwargs=EasyDict(num_layers=cfg.mapping_layers))
    if nested:
        kwargs["synthesis_kwargs"] = synthesis
    else:
        kwargs.update(synthesis)
    return kwargs


def nvidia_pickle_bytes(G_ema: Generator | None, G: Generator | None = None, protocol: int = 4,
                        module_src: str = "pass", nested: bool = False, **extra: Any) -> bytes:
    """A snapshot pickle shaped like NVIDIA's training loop writes it."""
    with fake_nvidia_modules():
        data: dict[str, Any] = {}
        for key, net in (("G", G if G is not None else G_ema), ("G_ema", G_ema)):
            if net is not None:
                data[key] = module_record(net, module_src, nvidia_kwargs(net, nested))
        data["D"] = Persistent("Discriminator", {"_parameters": collections.OrderedDict(),
                                                 "_modules": collections.OrderedDict(fc=torch.nn.Linear(2, 2))})
        data["augment_pipe"] = None
        data["training_set_kwargs"] = EasyDict(path="data.zip", resolution=32, use_labels=False, xflip=True)
        data["progress"] = {"cur_nimg": np.int64(25000), "pl_mean": np.array([0.5, 1.5], np.float32)}
        data.update(extra)
        return pickle.dumps(data, protocol=protocol)


def write_nvidia_pickle(path: Path, G_ema: Generator, **kwargs: Any) -> Path:
    """Write an NVIDIA-style snapshot pickle with this `G_ema` at `path`."""
    path.write_bytes(nvidia_pickle_bytes(G_ema, **kwargs))
    return path


def images(G: Generator, seed: int = 3) -> torch.Tensor:
    with torch.no_grad():
        return G(seed_to_z(seed, G.z_dim), truncation_psi=0.7, noise_mode="const")


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """A file that must never be created: hostile payloads and module_src try to."""
    return tmp_path / f"pwned_{uuid.uuid4().hex}"


def refused_without_running(path: Path, marker: Path, kind: type[Exception], match: str) -> None:
    """Loading `path` fails; first (whatever the error) the payload did not run, then the error is `kind`."""
    with pytest.raises(Exception) as err:
        generator_from_pickle(path)
    assert not marker.exists(), "the pickle's payload ran"
    assert isinstance(err.value, kind), f"{type(err.value).__name__}: {err.value}"
    assert re.search(match, str(err.value)), str(err.value)


# ----------------------------------------------------------------------------
# Loading.

@pytest.mark.parametrize("protocol,nested", [(4, False), (2, True), (3, False)])
def test_nvidia_pickle_gives_identical_images_without_running_module_src(tmp_path, marker, protocol, nested):
    G_ema, G_train = tiny_generator(seed=1), tiny_generator(seed=2)
    src = f"open({str(marker)!r}, 'w').write('module_src ran')"
    path = write_nvidia_pickle(tmp_path / "net.pkl", G_ema, G=G_train, protocol=protocol, module_src=src,
                               nested=nested)
    loaded = generator_from_pickle(path)
    assert loaded.config == G_ema.config
    assert torch.equal(images(loaded), images(G_ema))  # G_ema, not the training G
    assert not torch.equal(images(loaded), images(G_train))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert not marker.exists()


def test_falls_back_to_G_without_G_ema(tmp_path):
    G = tiny_generator(seed=4)
    path = tmp_path / "g_only.pkl"
    path.write_bytes(nvidia_pickle_bytes(None, G=G))
    assert torch.equal(images(generator_from_pickle(path)), images(G))


@pytest.mark.parametrize("nested,clamp,fp16", [(False, 256, 4), (True, None, 0)])
def test_omitted_conv_clamp_takes_the_default_of_the_code_that_wrote_the_record(tmp_path, nested, clamp, fp16):
    """Flat records (stylegan3's networks_stylegan2, DragGAN) default to conv_clamp 256 and 4 fp16 blocks;
    nested synthesis_kwargs (stylegan2-ada-pytorch, StyleGAN-Human) to None and 0."""
    G = tiny_generator()
    kwargs = nvidia_kwargs(G, nested=nested)
    for key in ("conv_clamp", "num_fp16_res"):
        (kwargs["synthesis_kwargs"] if nested else kwargs).pop(key)
    with fake_nvidia_modules():
        path = tmp_path / "noclamp.pkl"
        path.write_bytes(pickle.dumps({"G_ema": module_record(G, "pass", kwargs)}))
    loaded = generator_from_pickle(path)
    assert (loaded.config.conv_clamp, loaded.config.num_fp16_res) == (clamp, fp16)
    assert loaded.synthesis.b32.conv1.conv_clamp == clamp


# ----------------------------------------------------------------------------
# Refusals.

HOSTILE = {
    "os.system": lambda m: Hostile(os.system, f"touch {m}"),
    "builtins.eval": lambda m: Hostile(builtins.eval, f"open({str(m)!r}, 'w')"),
    "builtins.exec": lambda m: Hostile(builtins.exec, f"open({str(m)!r}, 'w')"),
    "subprocess.Popen": lambda m: Hostile(subprocess.Popen, ["touch", str(m)]),
    "builtins.getattr": lambda m: Hostile(getattr, str(m), "upper"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_global_at_top_level_is_refused_before_it_runs(tmp_path, marker, name):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(HOSTILE[name](marker)))
    refused = "posix.system" if name == "os.system" and os.name == "posix" else name
    refused_without_running(path, marker, UnsafeCheckpointError, refused)


def test_hostile_global_inside_the_persistence_state_is_refused(tmp_path, marker):
    path = tmp_path / "evil.pkl"
    path.write_bytes(nvidia_pickle_bytes(tiny_generator(), G=None, sneaky=Persistent(
        "Generator", {"_parameters": {}, "payload": HOSTILE["os.system"](marker)})))
    refused_without_running(path, marker, UnsafeCheckpointError, "system")


def test_hostile_pickle_inside_a_tensor_storage_blob_is_refused(tmp_path, marker):
    blob = pickle.dumps(HOSTILE["os.system"](marker), protocol=2)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Hostile(torch.storage._load_from_bytes, blob)}))
    refused_without_running(path, marker, CheckpointError, "weights_only")


def test_numpy_object_arrays_are_refused(tmp_path):
    path = tmp_path / "objects.pkl"
    path.write_bytes(nvidia_pickle_bytes(tiny_generator(), extra=np.array([1, "a"], dtype=object)))
    with pytest.raises(UnsafeCheckpointError, match="object dtype"):
        generator_from_pickle(path)


def test_tensorflow_code_other_than_the_network_record_is_refused(tmp_path, marker):
    path = tmp_path / "stylegan2-cat-config-f.pkl"
    with fake_nvidia_modules():
        sys.modules["dnnlib.tflib.network"].run = _never_called
        _never_called.__module__, _never_called.__qualname__ = "dnnlib.tflib.network", "run"
        path.write_bytes(pickle.dumps((TFNetwork("G"), Hostile(_never_called, str(marker)), TFNetwork("Gs"))))
    refused_without_running(path, marker, UnsafeCheckpointError, "dnnlib.tflib.network.run: a TensorFlow pickle")


def test_stylegan3_generator_is_named_as_such(tmp_path):
    G = tiny_generator()
    with fake_nvidia_modules():
        rec = module_record(G, "pass", nvidia_kwargs(G))
        synthesis = rec.state["_modules"]["synthesis"].state
        synthesis["_modules"] = collections.OrderedDict(
            input=Persistent("SynthesisInput", {"_parameters": collections.OrderedDict(),
                                                "_buffers": collections.OrderedDict(freqs=torch.zeros(4, 2))}))
        path = tmp_path / "sg3.pkl"
        path.write_bytes(pickle.dumps({"G_ema": rec}))
    with pytest.raises(UnsupportedCheckpointError, match="StyleGAN3"):
        generator_from_pickle(path)


def test_weights_that_do_not_fit_the_config_are_listed(tmp_path):
    G = tiny_generator()
    with fake_nvidia_modules():
        rec = module_record(G, "pass", nvidia_kwargs(G))
        del rec.state["_modules"]["mapping"].state["_buffers"]["w_avg"]
        path = tmp_path / "broken.pkl"
        path.write_bytes(pickle.dumps({"G_ema": rec}))
    with pytest.raises(UnsupportedCheckpointError, match="missing: mapping.w_avg"):
        generator_from_pickle(path)


@pytest.mark.parametrize("setting,value", [("architecture", "orig"), ("resample_filter", [1, 2, 1]),
                                           ("mapping_kwargs", EasyDict(num_layers=2, activation="linear"))])
def test_settings_our_network_hard_codes_are_checked(tmp_path, setting, value):
    G = tiny_generator()
    kwargs = nvidia_kwargs(G)
    kwargs[setting] = value
    with fake_nvidia_modules():
        path = tmp_path / "other.pkl"
        path.write_bytes(pickle.dumps({"G_ema": module_record(G, "pass", kwargs)}))
    with pytest.raises(UnsupportedCheckpointError, match="built with .*(orig|1, 2, 1|linear)"):
        generator_from_pickle(path)


def test_legacy_converted_settings_are_accepted(tmp_path):
    G = tiny_generator(seed=6)
    kwargs = nvidia_kwargs(G)  # what NVIDIA's legacy.py writes for converted TensorFlow networks
    kwargs.update(architecture="skip", activation="lrelu", resample_filter=[1, 3, 3, 1], use_noise=True)
    kwargs["mapping_kwargs"].update(activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.995, embed_features=None)
    with fake_nvidia_modules():
        path = tmp_path / "legacy.pkl"
        path.write_bytes(pickle.dumps({"G_ema": module_record(G, "pass", kwargs)}))
    assert torch.equal(images(generator_from_pickle(path)), images(G))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "zip"])
def test_damaged_files_give_a_clear_error(tmp_path, damage):
    good = nvidia_pickle_bytes(tiny_generator())
    if damage == "zip":
        buf = io.BytesIO()
        torch.save({"w": torch.zeros(2)}, buf)
    data = {"truncated": good[: len(good) // 2], "garbage": b"not a pickle at all\n" * 200, "empty": b"",
            "zip": buf.getvalue() if damage == "zip" else b""}[damage]
    path = tmp_path / "bad.pkl"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="zip archive" if damage == "zip" else "corrupt or truncated|refused"):
        generator_from_pickle(path)


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage is deprecated, yet it is what tensors pickle
        storage = torch.arange(4.0).storage()  # 4 elements; the tensor below claims a million
    path = tmp_path / "oob.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Hostile(torch._utils._rebuild_tensor_v2, storage,
                                                    0, (1000, 1000), (1000, 1), False, collections.OrderedDict())}))
    with pytest.raises(CheckpointError, match="past the end"):
        generator_from_pickle(path)


@pytest.mark.parametrize("offset,size,stride,ok", [
    (0, (10,), (1,), True), (1, (9,), (1,), True), (1, (10,), (1,), False),  # the last element, and one past
    (0, (2, 5), (5, 1), True), (0, (2, 5), (6, 1), False), (9, (1, 1), (0, 0), True), (10, (1,), (1,), False),
    (0, (0,), (1,), True), (0, (10,), (-1,), False), (-1, (1,), (1,), False), (0, (-1,), (1,), False),
])
def test_a_tensor_view_is_checked_against_its_storage_to_the_element(offset, size, stride, ok):
    from stylegan2.safe_pickle import _rebuild_tensor, _Storage
    storage = _Storage(torch.arange(10.0).untyped_storage(), torch.float32)  # 10 elements
    if ok:
        t = _rebuild_tensor(storage, offset, size, stride)
        assert tuple(t.shape) == size and (t.numel() == 0 or t.flatten()[0].item() == offset)
    else:
        with pytest.raises(CheckpointError, match="past the end|malformed tensor"):
            _rebuild_tensor(storage, offset, size, stride)


@pytest.mark.parametrize("module,name", [("builtins", "getattr"), ("builtins", "eval"), ("__builtin__", "exec"),
                                         ("builtins", "__import__"), ("os", "system"), ("posix", "system"),
                                         ("subprocess", "Popen"), ("torch", "load"), ("numpy", "load"),
                                         ("pickle", "loads"), ("torch.nn.modules", "os")])
def test_a_global_outside_the_allow_list_is_refused_when_named(module, name):
    """The pickle only names the global (GLOBAL, STOP): refused before anything could call it."""
    with pytest.raises(UnsafeCheckpointError, match="outside the allowlist"):
        safe_load(io.BytesIO(f"c{module}\n{name}\n.".encode()))


def test_a_pickle_cannot_modify_a_stand_in():
    with pytest.raises(UnsafeCheckpointError, match="tries to modify"):
        safe_load(io.BytesIO(b"ctorch._utils\n_rebuild_tensor\n}b."))  # GLOBAL, EMPTY_DICT, BUILD


def test_errors_live_in_the_lowest_layer_and_are_re_exported():
    import ast
    import inspect

    from stylegan2 import checkpoints, errors, networks, safe_pickle
    tree = ast.parse(inspect.getsource(errors))
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]  # imports nothing
    for name in ("CheckpointError", "UnsafeCheckpointError", "UnsupportedCheckpointError"):
        assert getattr(safe_pickle, name) is getattr(checkpoints, name) is getattr(errors, name)
    assert checkpoints.ModelNotAllowedError is errors.ModelNotAllowedError
    assert issubclass(errors.ModelNotAllowedError, errors.UserError)
    assert networks.CheckpointError is errors.CheckpointError  # validate() raises it without a lazy import
