"""`python -m draggan render` and `convert` on tiny generators; bad input exits 2 with one clear line."""
from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest
import torch
from huggingface_hub import constants as hf_constants
from PIL import Image

from draggan.__main__ import main
from stylegan2 import checkpoints, image_to_uint8, seed_to_z
from stylegan2.testing import tiny_generator
from stylegan2.checkpoints import load_generator, save_generator
from test_safe_pickle import Hostile, write_nvidia_pickle


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """Offline, with an empty Hugging Face home and conversion cache of its own."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DRAGGAN_CACHE", str(tmp_path / "draggan_cache"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    checkpoints.clear_memory_cache()
    yield
    checkpoints.clear_memory_cache()


def render(model, out, *extra: str) -> int:
    return main(["render", "--model", str(model), "--out", str(out), "--device", "cpu", *extra])


def test_render_writes_the_generators_image_for_each_seed(tmp_path):
    G = tiny_generator(resolution=32, seed=1)
    model = save_generator(G, tmp_path / "tiny.safetensors")
    assert render(model, tmp_path / "s1.png", "--seed", "1") == 0
    assert render(model, tmp_path / "s2.png", "--seed", "2") == 0
    a, b = (np.asarray(Image.open(tmp_path / f"s{i}.png")) for i in (1, 2))
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, b)
    with torch.no_grad():
        expected = image_to_uint8(G(seed_to_z(1, G.z_dim), truncation_psi=0.7, noise_mode="const"))
    assert np.array_equal(a, expected)  # the PNG is lossless: exactly the generator's pixels


def test_render_options_change_the_image(tmp_path):
    model = save_generator(tiny_generator(seed=2), tmp_path / "tiny.safetensors")
    outs = {}
    for name, extra in {"default": [], "psi1": ["--psi", "1"], "cut": ["--cutoff", "1"],
                        "nonoise": ["--noise", "none"]}.items():
        assert render(model, tmp_path / f"{name}.png", "--seed", "4", *extra) == 0
        outs[name] = np.asarray(Image.open(tmp_path / f"{name}.png"))
    for name in ("psi1", "cut", "nonoise"):
        assert not np.array_equal(outs[name], outs["default"]), name


@pytest.mark.parametrize("model,message", [
    ("owner/models:net.pkl", "net.pkl from Hub repo owner/models is needed.*hf download owner/models net.pkl"),
    ("missing/dir/net.pkl", "model file not found: missing/dir/net.pkl"),
    ("no-such-model", "unknown model 'no-such-model'"),
])
def test_render_bad_model_exits_2_with_one_line(tmp_path, capsys, model, message):
    assert render(model, tmp_path / "x.png") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "x.png").exists()


def test_render_unavailable_device_exits_2(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    model = save_generator(tiny_generator(), tmp_path / "tiny.safetensors")
    assert main(["render", "--model", str(model), "--out", str(tmp_path / "y.png"), "--device", "cuda"]) == 2
    assert "not available" in capsys.readouterr().err


def test_convert_pickle_to_safetensors_keeps_the_images(tmp_path, capsys):
    G = tiny_generator(seed=5)
    pkl = write_nvidia_pickle(tmp_path / "net.pkl", G)
    out = tmp_path / "net.safetensors"
    assert main(["convert", str(pkl), str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    converted = load_generator(str(out))
    z = seed_to_z(0, G.z_dim)
    with torch.no_grad():
        assert torch.equal(converted(z), G(z))


def test_convert_refuses_hostile_and_missing_pickles(tmp_path, capsys):
    evil = tmp_path / "evil.pkl"
    marker = tmp_path / "pwned"
    evil.write_bytes(pickle.dumps(Hostile(os.system, f"touch {marker}")))
    assert main(["convert", str(evil), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "refused to load posix.system" in err or "refused to load nt.system" in err
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()
    assert main(["convert", str(tmp_path / "none.pkl"), str(tmp_path / "out.safetensors")]) == 2
    assert "model file not found" in capsys.readouterr().err
