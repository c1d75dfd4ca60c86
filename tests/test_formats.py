"""Every StyleGAN2 checkpoint format the official app loads, against ../shared/reference numbers.

StyleGAN2-ADA (`ada_res64*`) and StyleGAN-Human (`human_res128*`) are read from pickles built here
from the reference records (no code inside); the TensorFlow config-f pickle is the reference's own file.
"""
from __future__ import annotations

import json
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
