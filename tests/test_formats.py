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
from stylegan2.checkpoints import load_generator
from stylegan2.safe_pickle import generator_from_pickle
from reference_pickles import write_reference_pickle
from test_checkpoints import hf_home  # noqa: F401  (fixture: an empty, offline Hugging Face home)
from test_hostile_loading import refused

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


# ----------------------------------------------------------------------------
# Hostile TensorFlow pickles: read as Network records of numpy arrays, bounded like the others.

class _HugeArray:
    """Pickles as numpy's own array rebuild (_reconstruct, then BUILD) claiming 10^10 floats over 4 bytes."""

    def __reduce__(self):
        return (np.zeros(1).__reduce__()[0], (np.ndarray, (0,), b"b"),
                (1, (100_000, 100_000), np.dtype("float32"), False, b"\0" * 4))


def _set_var(name: str, value):
    def edit(gs: dict) -> None:
        synthesis = gs["components"]["synthesis"]
        synthesis["variables"] = [(n, value if n == name else v) for n, v in synthesis["variables"]]
    return edit


def _cycle(gs: dict):
    gs["components"]["synthesis"]["components"] = {"again": gs}


TF_HOSTILE = {
    "transposed weight": (_set_var("8x8/Conv1/mod_weight", np.zeros((32, 512), np.float32)), "has shape [32, 512]"),
    "text for a weight": (_set_var("8x8/Conv1/bias", "x" * 64), "is a str, not a float array"),
    "integer weight": (_set_var("8x8/Conv1/bias", np.zeros(32, np.int64)), "not a float array"),
    "resolution bomb": (lambda gs: gs["static_kwargs"].update(resolution=1 << 20), "outside what this app loads"),
    "channel bomb": (lambda gs: gs["static_kwargs"].update(fmap_base=1 << 28, fmap_max=1 << 20),
                     "outside what this app loads"),
    "components cycle": (_cycle, "components nest deeper"),
    "setting of another type": (lambda gs: gs["static_kwargs"].update(architecture={"x": list(range(10**5))}),
                                "architecture=a dict; only 'skip'"),
    "too many variables": (lambda gs: gs["variables"].extend((f"v{i}", np.float32(0)) for i in range(5000)),
                           "more variables than any StyleGAN2 network"),
    "array claiming 40 GB": (_set_var("8x8/Conv1/bias", _HugeArray()), "corrupt or truncated pickle"),
}


@pytest.mark.parametrize("case", list(TF_HOSTILE))
def test_hostile_tensorflow_pickles_are_refused(reference_dir, tmp_path, hf_home, case):
    """Each refused with one line, in bounded time and memory (test_hostile_loading.refused)."""
    edit, match = TF_HOSTILE[case]
    path = write_tf_variant(reference_dir, tmp_path / "stylegan2-evil-config-f.pkl", edit)
    refused(lambda: load_generator(str(path)), match=match)


# ----------------------------------------------------------------------------
# StyleGAN-Human: 2:1 images, padded to the square the official app works on.

@pytest.fixture(scope="module")
def human(reference_dir, tmp_path_factory, marker):
    return load_reference(reference_dir, tmp_path_factory, marker, "human_res128")


def test_human_pickle_is_non_square_from_its_weights(human):
    G, _ = human
    assert not G.config.square and G.img_resolution == 128 and G.num_ws == 12
    assert tuple(G.synthesis.b4.const.shape) == (64, 4, 2)
    assert tuple(G.synthesis.b128.conv1.noise_const.shape) == (128, 64)
    assert (G.config.conv_clamp, G.config.channel_max) == (256, 64)


def test_human_mapping_images_and_block_features_match_the_reference(human):
    G, io = human
    check_mapping(G, io)
    check_synthesis(G, io, feat_batch=1)  # padded images (white) and features (zeros), as the official app
    with torch.no_grad():
        img = G.synthesis(io["ws_psi07"][:1])
    assert torch.equal(img[..., :32], torch.ones(1, 3, 128, 32)) and torch.equal(img[..., 96:], img[..., :32])


def test_human_block_features_pad_and_unpad_exactly(human):
    G, io = human
    ws = io["ws_psi07"][:1]
    with torch.no_grad():
        full = G.synthesis(ws)
        for stop in (2, 5, 6):
            feats = G.synthesis.features(ws, stop=stop)
            assert feats[-1].shape[-2:] == (G.synthesis.blocks[stop - 1].resolution,) * 2
            assert torch.equal(G.synthesis.image_from_features(ws, feats), full)


def _human_drag(reference_dir):
    io = load_file(str(reference_dir / "human_res128_io.safetensors"))
    meta = json.loads((reference_dir / "human_res128_io.json").read_text())["drag"]
    cfg = DragConfig(lr=meta["lr"], r1=meta["r1_arg"], r2=meta["r2_arg"], tracking="l2",
                     lambda_mask=meta["lambda_mask"], mask_term="features", hold=False, rows=meta["optimized_ws_rows"],
                     feature_block=meta["feature_idx"] + 1, max_steps=meta["steps"], precision="fp32")
    handles = [[c, r] for r, c in meta["handles_rowcol"]]
    targets = [[c, r] for r, c in meta["targets_rowcol"]]
    return io, cfg, handles, targets


def test_human_drag_trace_matches_the_official_app(human, reference_dir):
    """Our engine, unchanged, on the padded square: the official trace (from its own drag_w0)."""
    G, _ = human
    io, cfg, handles, targets = _human_drag(reference_dir)
    session = DragSession(G, io["drag_w0"])
    session.set_mask(1 - io["drag_mask"].numpy())  # the reference's mask marks the FIXED area
    frames = list(session.drag(handles, targets, cfg))
    steps = frames[:-1]
    assert frames[-1].done and len(steps) == cfg.max_steps
    for i, f in enumerate(steps):  # measured: every step's tracked points equal (1 thread, as conftest runs)
        assert [[y, x] for x, y in f.handles_xy] == io["drag_points"][i].tolist(), f"step {i}"
        diff = np.abs(f.image.astype(int) - io["drag_images_uint8"][i].numpy().astype(int))
        assert diff.max() <= 1, f"step {i}"  # uint8 truncation of float noise
    assert [[y, x] for x, y in steps[-1].handles_xy] == [[80, 64], [28, 42]]  # the second handle moves, as the app's
    assert rel_err(session.latent, io["drag_w_final"]) < 1e-3  # Adam's 10 steps amplify float rounding (2.5e-4)


def test_human_latent_after_one_step_matches_the_official_app(human, reference_dir):
    G, _ = human
    io, cfg, handles, targets = _human_drag(reference_dir)
    cfg.max_steps = 1
    session = DragSession(G, io["drag_w0"])
    session.set_mask(1 - io["drag_mask"].numpy())
    for _ in session.drag(handles, targets, cfg):
        pass
    assert rel_err(session.latent, io["drag_ws_after_step"][:1]) < 1e-4


def test_human_converts_once_and_stays_non_square(human, reference_dir, tmp_path, monkeypatch):
    from stylegan2 import checkpoints
    monkeypatch.setenv("DRAGGAN_CACHE", str(tmp_path / "cache"))
    checkpoints.clear_memory_cache()
    path = write_reference_pickle(reference_dir, "human_res128", tmp_path / "stylegan_human_v2_128.pkl",
                                  tmp_path / "marker")
    checkpoints.load_generator(str(path))
    (cached,) = (tmp_path / "cache").glob("*.safetensors")
    again = checkpoints.read_generator_file(cached)
    assert again.config == human[0].config and not again.config.square
    io = human[1]
    with torch.no_grad():
        assert rel_err(again.synthesis(io["ws_psi07"]), io["img_const"]) < TOL
    checkpoints.clear_memory_cache()


def test_drag_steps_on_a_non_square_model_read_whole_padded_maps(human):
    """Local (cropped) steps would mix the padding into the crops: a non-square model runs whole maps."""
    from draggan.window import plan_window
    from stylegan2.testing import tiny_generator
    G, _ = human
    assert plan_window(G, 6, [[64.0, 64.0]], 10.0) is None
    assert plan_window(tiny_generator(resolution=128, channels=8), 6, [[64.0, 64.0]], 10.0) is not None


def test_a_drag_without_mask_on_a_tiny_non_square_generator_keeps_the_white_pad():
    from stylegan2.testing import tiny_generator
    G = tiny_generator(resolution=64, channels=16, square=False)
    session = DragSession.from_seed(G, 3)
    cfg = DragConfig(max_steps=4, r1=24, r2=48, lr=0.02, feature_block=4)
    frames = list(session.drag([[30, 20]], [[34, 20]], cfg))
    assert frames[-1].done and frames[-1].image.shape == (64, 64, 3)
    for f in frames:
        assert (f.image[:, :16] == 255).all() and (f.image[:, 48:] == 255).all()  # the pad stays white
    assert not (frames[-1].image[:, 16:48] == 255).all()


def test_a_record_whose_square_setting_contradicts_its_weights_is_refused(reference_dir, tmp_path):
    from stylegan2.errors import UnsupportedCheckpointError
    from stylegan2.records import config_from_dict
    path = write_reference_pickle(reference_dir, "human_res128", tmp_path / "h.pkl", tmp_path / "marker",
                                  edit_kwargs=lambda kw: kw.update(square=True))
    with pytest.raises(UnsupportedCheckpointError, match=r"do not fit .*wrong shape: synthesis\.b128\.conv0\.noise_const"):
        generator_from_pickle(path)
    with pytest.raises(UnsupportedCheckpointError, match="square = a str"):
        config_from_dict({"img_resolution": 64, "square": "no"}, "x")
    square_false = write_reference_pickle(reference_dir, "human_res128", tmp_path / "h2.pkl", tmp_path / "marker",
                                          edit_kwargs=lambda kw: kw.update(square=False))  # as stylegan_human's train.py
    assert not generator_from_pickle(square_false).config.square
