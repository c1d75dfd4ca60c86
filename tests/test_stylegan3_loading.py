"""NVIDIA StyleGAN3 pickles load through the allow-list unpickler, convert once to our safetensors, and are bounded.

The pickles are built here from the reference's record (`init_kwargs`, the class of every persistent
submodule, the layers' recorded geometry) and state dict, shaped as NVIDIA's training loop writes
them: numpy int arrays and float64 scalars in the layers' `__dict__`, no code.
"""
import collections
import json
import pickle

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from stylegan2 import checkpoints, safe_pickle
from stylegan2.checkpoints import CheckpointError, load_generator, read_generator_file, save_generator
from stylegan2.safe_pickle import UnsupportedCheckpointError, generator_from_pickle
from stylegan2.stylegan3 import Generator
from test_checkpoints import hf_home  # noqa: F401 (fixture)
from test_safe_pickle import EasyDict, Persistent, fake_nvidia_modules
from test_stylegan3 import NAMES, rel_err

BUFFERS = {"transform", "freqs", "phases", "magnitude_ema", "up_filter", "down_filter", "w_avg"}


def _attributes(record: dict) -> dict:
    """A layer's recorded geometry as NVIDIA's pickle holds it: numpy int arrays for sizes, float64 for rates."""
    out = {}
    for k, v in record.items():
        if k == "name" or k.endswith("_shape"):
            continue
        if k in ("in_size", "out_size", "size"):
            v = np.array(v, dtype=np.int64)
        elif isinstance(v, float):
            v = np.float64(v)
        out[k] = v
    return out


def _records(meta: dict, state: dict, path: str = "", kwargs: dict | None = None) -> Persistent:
    """The module at `path` (a state-dict prefix) as a persistent record, with its submodules."""
    prefix = f"{path}." if path else ""
    own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    children = list(dict.fromkeys(k.split(".")[0] for k in own if "." in k))
    body = {
        "training": True,  # the official app leaves the rebuilt module in training mode
        "_parameters": collections.OrderedDict((k, torch.nn.Parameter(v.clone(), requires_grad=False))
                                               for k, v in own.items() if "." not in k and k not in BUFFERS),
        "_buffers": collections.OrderedDict((k, v.clone()) for k, v in own.items() if "." not in k and k in BUFFERS),
        "_non_persistent_buffers_set": set(),
        "_modules": collections.OrderedDict((c, _records(meta, state, prefix + c)) for c in children),
        "_init_args": (),
        "_init_kwargs": EasyDict(kwargs or {}),
    }
    name = path.split(".")[-1]
    layers = {layer["name"]: layer for layer in meta["layers"]}
    if name in layers:
        body.update(_attributes(layers[name]))
    elif path == "synthesis.input":
        body.update(_attributes(meta["input"]))
    classes = meta["persistence"]["persistent_submodule_classes"]
    return Persistent(classes[path or "(top level)"], body, module_src="raise SystemExit('module_src ran')")


def sg3_pickle_bytes(meta: dict, state: dict, protocol: int = 4, kwargs: dict | None = None) -> bytes:
    kwargs = dict(meta["init_kwargs"] if kwargs is None else kwargs)
    kwargs["mapping_kwargs"] = EasyDict(kwargs.get("mapping_kwargs") or {})
    with fake_nvidia_modules():
        G = _records(meta, state, kwargs=EasyDict(kwargs))
        data = {"G": G, "D": Persistent("Discriminator", {"_modules": collections.OrderedDict()}), "G_ema": G,
                "augment_pipe": None, "training_set_kwargs": EasyDict(resolution=meta["img_resolution"])}
        return pickle.dumps(data, protocol=protocol)


@pytest.fixture(scope="module", params=NAMES)
def case(request, reference_dir):
    name = request.param
    return (json.loads((reference_dir / f"{name}.json").read_text()), load_file(str(reference_dir / f"{name}.safetensors")),
            load_file(str(reference_dir / f"{name}_io.safetensors")))


def _image(G, io):
    with torch.no_grad():
        return G.synthesis(G.mapping(io["z"], truncation_psi=0.7))


@pytest.mark.parametrize("spelling", ["numpy._core", "numpy.core"])
def test_stylegan3_pickle_loads_and_matches_reference(case, tmp_path, spelling):
    meta, state, io = case
    data = sg3_pickle_bytes(meta, state, protocol=2)  # protocol 2 names globals as text lines
    assert b"numpy._core.multiarray\n_reconstruct" in data and b"numpy._core.multiarray\nscalar" in data
    data = data.replace(b"cnumpy._core.multiarray\n", f"c{spelling}.multiarray\n".encode())  # as numpy 1.x writes
    path = tmp_path / "stylegan3-t-test.pkl"
    path.write_bytes(data)
    G = generator_from_pickle(path)
    assert isinstance(G, Generator) and G.synthesis.layer_names == meta["layer_names"]
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    assert rel_err(_image(G, io), io["img_const"]) < 1e-4


def test_a_stored_input_transform_is_reset_to_the_identity_as_the_official_app_does(case, tmp_path):
    meta, state, io = case
    turned = {**state, "synthesis.input.transform": io["input_transform_buffer"]}
    G = generator_from_pickle_bytes(tmp_path, sg3_pickle_bytes(meta, turned))
    assert torch.equal(G.synthesis.input.transform, torch.eye(3))
    assert rel_err(_image(G, io), io["img_const"]) < 1e-4


def test_protocol_4_pickle_loads(case, tmp_path):
    meta, state, io = case
    path = tmp_path / "net.pkl"
    path.write_bytes(sg3_pickle_bytes(meta, state, protocol=4))
    assert rel_err(_image(generator_from_pickle(path), io), io["img_const"]) < 1e-4


def test_pickle_converts_once_to_stylegan3_safetensors(case, tmp_path, hf_home, monkeypatch):  # noqa: F811
    meta, state, io = case
    pkl = tmp_path / "net.pkl"
    pkl.write_bytes(sg3_pickle_bytes(meta, state))
    first = load_generator(str(pkl))
    cached = list((hf_home / "draggan").glob("*.safetensors"))
    assert len(cached) == 1
    with safe_open(str(cached[0]), "pt") as f:
        assert f.metadata()["format"] == "draggan-stylegan3"  # our file records the architecture
        assert json.loads(f.metadata()["draggan_config"]) == first.config.to_dict()

    def no_pickle(path):
        raise AssertionError("the second load must not unpickle")

    monkeypatch.setattr(safe_pickle, "generator_from_pickle", no_pickle)
    checkpoints.clear_memory_cache()
    second = load_generator(str(pkl))
    assert second is not first and isinstance(second, Generator)
    assert torch.equal(_image(second, io), _image(first, io))
    assert rel_err(_image(second, io), io["img_const"]) < 1e-4


def test_safetensors_round_trip(case, tmp_path):
    meta, state, io = case
    G = generator_from_pickle_bytes(tmp_path, sg3_pickle_bytes(meta, state))
    back = read_generator_file(save_generator(G, tmp_path / "g.safetensors"))
    assert isinstance(back, Generator) and back.config == G.config
    assert torch.equal(_image(back, io), _image(G, io))


def generator_from_pickle_bytes(tmp_path, data: bytes):
    path = tmp_path / "x.pkl"
    path.write_bytes(data)
    return generator_from_pickle(path)


# ----------------------------------------------------------------------------
# Bounded like every other format.

def test_out_of_bounds_config_is_refused_before_allocation(case, tmp_path):
    meta, state, _ = case
    huge = {**meta["init_kwargs"], "channel_max": 1 << 20}
    with pytest.raises(UnsupportedCheckpointError, match="channel_max"):
        generator_from_pickle_bytes(tmp_path, sg3_pickle_bytes(meta, state, kwargs=huge))
    many = {**meta["init_kwargs"], "num_layers": 10_000}
    with pytest.raises(UnsupportedCheckpointError, match="num_layers"):
        generator_from_pickle_bytes(tmp_path, sg3_pickle_bytes(meta, state, kwargs=many))


def test_recorded_geometry_must_match_the_config(case, tmp_path):
    """A fork whose layers pad differently would load without a key mismatch and compute another function."""
    meta, state, _ = case
    changed = json.loads(json.dumps(meta))
    changed["layers"][3]["padding"] = [0, 0, 0, 0]
    with pytest.raises(UnsupportedCheckpointError, match="padding"):
        generator_from_pickle_bytes(tmp_path, sg3_pickle_bytes(changed, state))


def test_weights_that_do_not_fit_the_config_are_refused(case, tmp_path):
    meta, state, _ = case
    bad = dict(state)
    key = next(k for k in bad if k.endswith("L5_52_32.weight"))
    bad[key] = torch.zeros(3, 3, 1, 1)
    with pytest.raises(UnsupportedCheckpointError, match="wrong shape"):
        generator_from_pickle_bytes(tmp_path, sg3_pickle_bytes(meta, bad))
    missing = {k: v for k, v in state.items() if not k.endswith("magnitude_ema")}
    with pytest.raises(UnsupportedCheckpointError, match="missing"):
        generator_from_pickle_bytes(tmp_path, sg3_pickle_bytes(meta, missing))


def test_tampered_stylegan3_safetensors_is_refused(case, tmp_path):
    meta, state, _ = case
    G = generator_from_pickle_bytes(tmp_path, sg3_pickle_bytes(meta, state))
    path = save_generator(G, tmp_path / "g.safetensors")
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    config = json.loads(metadata["draggan_config"])
    for field, value in (("img_resolution", 1 << 16), ("margin_size", 10_000), ("channel_max", 64)):
        tampered = tmp_path / f"{field}.safetensors"
        checkpoints.write_safetensors(tampered, tensors, {**metadata,
                                                          "draggan_config": json.dumps({**config, field: value})})
        with pytest.raises(CheckpointError, match=field if field != "channel_max" else "do not fit"):
            read_generator_file(tampered)


# ----------------------------------------------------------------------------
# The command line on a StyleGAN3 pickle.

def test_cli_drags_a_stylegan3_pickle_as_the_reference(case, reference_dir, tmp_path, hf_home, capsys):  # noqa: F811
    """`python -m draggan drag --model X.pkl` with the reference's settings and mask follows its tracked points."""
    from PIL import Image

    from draggan.__main__ import main

    meta, state, io = case
    name = "sg3t_res128" if meta["img_resolution"] == 128 else "sg3r_res64"
    drag = json.loads((reference_dir / f"{name}_io.json").read_text())["drag"]
    pkl = tmp_path / "stylegan3-test.pkl"
    pkl.write_bytes(sg3_pickle_bytes(meta, state))
    Image.fromarray(((1 - io["drag_mask"].numpy()) * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    points = lambda rc: ";".join(f"{c},{r}" for r, c in rc)
    out, trace = tmp_path / "final.png", tmp_path / "trace.json"
    rc = main(["drag", "--model", str(pkl), "--seed", "0", "--handles", points(drag["handles_rowcol"]),
               "--targets", points(drag["targets_rowcol"]), "--lr", str(drag["lr"]), "--r1", str(drag["r1_arg"]),
               "--r2", str(drag["r2_arg"]), "--tracking", "l2", "--steps", str(drag["steps"]), "--precision", "fp32",
               "--mask", str(tmp_path / "mask.png"), "--mask-term", "features", "--lambda-mask", "20",  # the official's
               "--device", "cpu", "--out", str(out), "--trace", str(trace), "--video", str(tmp_path / "drag.gif")])
    assert rc == 0, capsys.readouterr().err
    res = meta["img_resolution"]
    assert Image.open(out).size == (res, res) and Image.open(tmp_path / "drag.gif").n_frames >= 2
    steps = json.loads(trace.read_text())["steps"]
    for i, s in enumerate(steps[:4]):
        assert [[y, x] for x, y in s["handles"]] == io["drag_points"][i].tolist(), f"step {i}"

