"""Our generator computes the same function as NVIDIA's (numbers in ../shared/reference/)."""
import json

import pytest
import torch
from safetensors.torch import load_file

from stylegan2 import Generator, GeneratorConfig, seed_to_z

from stylegan2.testing import tiny_generator

TOL = 1e-4  # relative to the reference tensor's largest magnitude


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def ref_G(reference_dir):
    cfg = json.loads((reference_dir / "sg2_res128.json").read_text())
    G = Generator(GeneratorConfig.from_dict(cfg))
    G.load_state_dict(load_file(str(reference_dir / "sg2_res128.safetensors")), strict=True)
    assert G.num_ws == cfg["num_ws"] and G.block_resolutions == cfg["block_resolutions"]
    return G.eval()


@pytest.fixture(scope="module")
def ref(reference_dir):
    return load_file(str(reference_dir / "sg2_res128_drag_lr0.03.safetensors"))


@pytest.mark.parametrize("key,psi,cutoff", [("ws_psi1", 1.0, None), ("ws_psi07", 0.7, None), ("ws_psi07_cut4", 0.7, 4)])
def test_mapping_matches_reference(ref_G, ref, key, psi, cutoff):
    with torch.no_grad():
        ws = ref_G.mapping(ref["z"], truncation_psi=psi, truncation_cutoff=cutoff)
    assert rel_err(ws, ref[key]) < TOL
    if cutoff is not None:  # rows past the cutoff are untruncated
        assert rel_err(ws[:, cutoff:], ref["ws_psi1"][:, cutoff:]) < TOL


@pytest.mark.parametrize("noise_mode,key", [("const", "img_const"), ("none", "img_none")])
def test_synthesis_matches_reference(ref_G, ref, noise_mode, key):
    with torch.no_grad():
        img = ref_G.synthesis(ref["ws_psi07"], noise_mode=noise_mode)
    assert img.shape == ref[key].shape
    assert rel_err(img, ref[key]) < TOL


def test_every_block_feature_matches_reference(ref_G, ref):
    with torch.no_grad():
        _, feats = ref_G.synthesis(ref["ws_psi07"], noise_mode="const", return_features=True)
    assert len(feats) == 6
    for i, f in enumerate(feats):
        assert f.shape == ref[f"feat{i}_const"].shape
        assert rel_err(f, ref[f"feat{i}_const"]) < TOL, f"block {i}"


def test_early_stop_and_tail_give_the_same_image(ref_G, ref):
    ws = ref["ws_psi07"][:1]
    with torch.no_grad():
        full = ref_G.synthesis(ws)
        for stop in (1, 4, 6):
            feats = ref_G.synthesis.features(ws, stop=stop)
            assert len(feats) == stop
            assert torch.allclose(ref_G.synthesis.image_from_features(ws, feats), full, atol=1e-5)


def test_noise_modes_differ_and_random_is_random():
    G = tiny_generator()
    ws = G.mapping(seed_to_z(1, G.z_dim))
    with torch.no_grad():
        const = G.synthesis(ws, noise_mode="const")
        none = G.synthesis(ws, noise_mode="none")
        r1, r2 = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
    assert not torch.allclose(const, none)
    assert not torch.allclose(r1, r2)
    assert torch.equal(const, G.synthesis(ws, noise_mode="const"))


def test_seed_to_z_is_numpy_randomstate():
    import numpy as np
    z = seed_to_z(42, 512)
    assert z.shape == (1, 512) and z.dtype == torch.float32
    assert np.allclose(z.numpy(), np.random.RandomState(42).randn(1, 512).astype(np.float32))
    assert not torch.equal(z, seed_to_z(43, 512))


def test_unfused_path_for_latent_gradients_matches_fused(ref_G, ref):
    """With a latent that needs gradients the modulated convs run unfused; same numbers."""
    ws = ref["ws_psi07"].clone()
    with torch.no_grad():
        fused = ref_G.synthesis(ws)
    unfused = ref_G.synthesis(ws.requires_grad_(True))
    assert unfused.requires_grad
    assert rel_err(unfused.detach(), fused) < TOL
    assert rel_err(unfused.detach(), ref["img_const"]) < TOL
    forced = ref_G.synthesis(ws, fused_modconv=True)  # NVIDIA's path, as the official app runs it
    assert forced.requires_grad and rel_err(forced.detach(), ref["img_const"]) < TOL
    with torch.no_grad():
        assert rel_err(ref_G.synthesis(ws, fused_modconv=False), ref["img_const"]) < TOL
