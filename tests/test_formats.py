"""Every StyleGAN2 checkpoint format the official app loads, against ../shared/reference numbers.

StyleGAN2-ADA (`ada_res64*`) and StyleGAN-Human (`human_res128*`) are read from pickles built here
from the reference records (no code inside); the TensorFlow config-f pickle is the reference's own file.
"""
from __future__ import annotations

import json
import pickle
import uuid

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from draggan import DragConfig, DragSession
from stylegan2.safe_pickle import generator_from_pickle
from reference_pickles import write_reference_pickle

TOL = 1e-4  # relative to the reference tensor's largest magnitude, as tests/test_generator_parity.py


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def marker(tmp_path_factory):
    return tmp_path_factory.mktemp("marker") / f"pwned_{uuid.uuid4().hex}"


def load_reference(reference_dir, tmp_path_factory, marker, name: str):
    path = write_reference_pickle(reference_dir, name, tmp_path_factory.mktemp(name) / f"{name}.pkl", marker)
    G = generator_from_pickle(path)
    assert not marker.exists(), "the record's module_src ran"
    return G, load_file(str(reference_dir / f"{name}_io.safetensors"))


def check_mapping(G, io):
    with torch.no_grad():
        for key, psi, cutoff in (("ws_psi1", 1.0, None), ("ws_psi07", 0.7, None), ("ws_psi07_cut4", 0.7, 4)):
            assert rel_err(G.mapping(io["z"], truncation_psi=psi, truncation_cutoff=cutoff), io[key]) < TOL, key


def check_synthesis(G, io, feat_batch: int):
    with torch.no_grad():
        for mode in ("const", "none"):
            img = G.synthesis(io["ws_psi07"], noise_mode=mode)
            assert img.shape == io[f"img_{mode}"].shape and rel_err(img, io[f"img_{mode}"]) < TOL, mode
        _, feats = G.synthesis(io["ws_psi07"][:feat_batch], return_features=True)
    keys = sorted(k for k in io if k.startswith("feat") and k.endswith("_const"))
    assert len(feats) == len(keys)
    for i, f in enumerate(feats):
        ref = io[f"feat{i}_const"]
        assert f.shape == ref.shape and rel_err(f, ref) < TOL, f"block {i}"


# ----------------------------------------------------------------------------
# StyleGAN2-ADA.

@pytest.fixture(scope="module")
def ada(reference_dir, tmp_path_factory, marker):
    return load_reference(reference_dir, tmp_path_factory, marker, "ada_res64")


def test_ada_pickle_reads_its_nested_record(ada, reference_dir):
    G, _ = ada
    meta = json.loads((reference_dir / "ada_res64.json").read_text())
    synthesis = meta["init_kwargs"]["synthesis_kwargs"]
    assert (G.img_resolution, G.num_ws, G.block_resolutions) == (64, meta["num_ws"], meta["block_resolutions"])
    assert (G.config.channel_base, G.config.channel_max, G.config.conv_clamp, G.config.mapping_layers) == (
        synthesis["channel_base"], synthesis["channel_max"], synthesis["conv_clamp"], 2)
    assert G.config.square


def test_ada_mapping_images_and_block_features_match_the_reference(ada):
    G, io = ada
    check_mapping(G, io)
    check_synthesis(G, io, feat_batch=3)


# ----------------------------------------------------------------------------
# TensorFlow config-f pickles.

class TFNet:
    """Pickles as dnnlib.tflib.network.Network with the given state (NEWOBJ + BUILD), as TensorFlow's pickles."""

    def __init__(self, state: dict):
        self.state = state

    def __getstate__(self) -> dict:
        return self.state


def tf_states(reference_dir) -> list[dict]:
    """The reference pickle's (G, D, Gs) states, as our unpickler reads them, components as nested dicts."""
    from stylegan2.safe_pickle import safe_load

    def plain(rec) -> dict:
        state = dict(rec.state)
        state["components"] = {k: plain(v) for k, v in state["components"].items()}
        state["variables"] = list(state["variables"])
        return state

    with open(reference_dir / "tf_config_f_res128.pkl", "rb") as f:
        return [plain(rec) for rec in safe_load(f)]


def tf_pickle_bytes(states: list) -> bytes:
    import sys
    from test_safe_pickle import fake_nvidia_modules

    made: dict[int, TFNet] = {}  # one object per state: a cycle of components pickles as a cycle

    def net(state) -> TFNet:
        if id(state) not in made:
            made[id(state)] = TFNet({})
            made[id(state)].state = {**state, "components": {k: net(v) for k, v in state["components"].items()}}
        return made[id(state)]

    with fake_nvidia_modules():
        TFNet.__module__, TFNet.__qualname__ = "dnnlib.tflib.network", "Network"
        sys.modules["dnnlib.tflib.network"].Network = TFNet
        return pickle.dumps(tuple(net(s) for s in states), protocol=4)


def write_tf_variant(reference_dir, path, edit) -> object:
    states = tf_states(reference_dir)
    edit(states[2])  # Gs
    path.write_bytes(tf_pickle_bytes(states))
    return path


@pytest.fixture(scope="module")
def tf(reference_dir):
    return (generator_from_pickle(reference_dir / "tf_config_f_res128.pkl"),
            load_file(str(reference_dir / "tf_config_f_res128_io.safetensors")))


def test_tf_pickle_converts_exactly_as_legacy_py(tf, reference_dir):
    G, _ = tf
    meta = json.loads((reference_dir / "tf_config_f_res128.json").read_text())
    kw = meta["converted_init_kwargs"]
    assert (G.config.channel_base, G.config.channel_max, G.config.conv_clamp, G.config.num_fp16_res,
            G.config.mapping_layers) == (kw["channel_base"], kw["channel_max"], kw["conv_clamp"], kw["num_fp16_res"],
                                         kw["mapping_kwargs"]["num_layers"])
    expected = load_file(str(reference_dir / "tf_config_f_res128_converted.safetensors"))
    ours = G.state_dict()
    assert sorted(ours) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(ours[key], value), key


def test_tf_pickle_renders_as_the_official_app(tf):
    G, io = tf
    check_mapping(G, io)
    check_synthesis(G, io, feat_batch=1)


def test_tf_pickle_converts_once_through_the_loader(reference_dir, tmp_path, monkeypatch):
    from stylegan2 import checkpoints, safe_pickle
    monkeypatch.setenv("DRAGGAN_CACHE", str(tmp_path / "cache"))
    checkpoints.clear_memory_cache()
    path = tmp_path / "stylegan2-cat-config-f.pkl"
    path.write_bytes((reference_dir / "tf_config_f_res128.pkl").read_bytes())
    first = checkpoints.load_generator(str(path))
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    monkeypatch.setattr(safe_pickle, "generator_from_pickle", lambda *a: pytest.fail("unpickled twice"))
    checkpoints.clear_memory_cache()
    again = checkpoints.load_generator(str(path))
    for key, value in first.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    checkpoints.clear_memory_cache()


def _add_static(**kw):
    return lambda gs: gs["static_kwargs"].update(kw)


def _rename_torgb(gs):
    synthesis = gs["components"]["synthesis"]
    synthesis["variables"] = [(n.replace("128x128/ToRGB/", "128x128/ToRGB_lod0/"), v)
                              for n, v in synthesis["variables"]]


def _drop(name):
    def edit(gs):
        synthesis = gs["components"]["synthesis"]
        synthesis["variables"] = [(n, v) for n, v in synthesis["variables"] if n != name]
    return edit


PROBES = {  # the JSON's probes of legacy.py, and what we say
    "static_kwargs + fmap_decay": (_add_static(fmap_decay=1.0), "unknown TensorFlow setting 'fmap_decay'"),
    "version 3": (lambda gs: gs.update(version=3), "pickle version 3 is older than 4"),
    "synthesis 128x128/ToRGB/* renamed ToRGB_lod0/*": (_rename_torgb, "architecture 'orig' (ToRGB_lod variables)"),
    "top level + ToRGB_lod0/weight": (lambda gs: gs["variables"].append(("ToRGB_lod0/weight", np.zeros(3, np.float32))),
                                      "architecture 'orig'"),
    "static_kwargs architecture=resnet (no Skip variables)": (_add_static(architecture="resnet"),
                                                              "architecture='resnet'; only 'skip'"),
    "missing variable": (_drop("64x64/Conv1/mod_bias"), "has no variable synthesis/64x64/Conv1/mod_bias"),
}


@pytest.mark.parametrize("probe", list(PROBES))
def test_tf_variants_legacy_py_refuses_get_one_clear_line(reference_dir, tmp_path, probe):
    from stylegan2.errors import UnsupportedCheckpointError
    meta = json.loads((reference_dir / "tf_config_f_res128.json").read_text())
    assert probe in meta["probes"] or probe == "missing variable"
    edit, message = PROBES[probe]
    path = write_tf_variant(reference_dir, tmp_path / "variant.pkl", edit)
    with pytest.raises(UnsupportedCheckpointError) as err:
        generator_from_pickle(path)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize("probe", ["static_kwargs + mapping_fmaps=512", "mapping + LabelConcat/weight"])
def test_tf_variants_legacy_py_converts_convert_the_same(tf, reference_dir, tmp_path, probe):
    meta = json.loads((reference_dir / "tf_config_f_res128.json").read_text())
    assert meta["probes"][probe] == "converts"
    extra = ("LabelConcat/weight", np.ones((4, 4), np.float32))
    edit = (_add_static(mapping_fmaps=512) if "fmaps" in probe
            else lambda gs: gs["components"]["mapping"]["variables"].append(extra))
    G = generator_from_pickle(write_tf_variant(reference_dir, tmp_path / "variant.pkl", edit))
    for key, value in tf[0].state_dict().items():
        assert torch.equal(G.state_dict()[key], value), key
