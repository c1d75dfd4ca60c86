"""PTI on a StyleGAN3 generator: inversion, the embedding file, and a drag from it."""
import numpy as np
import torch

from draggan import DragConfig, DragSession
from pti import PerceptualDistance, VGG16Features, get_preset, invert, load_embedding, save_embedding
from stylegan2 import image_to_uint8
from stylegan2.checkpoints import clear_memory_cache, save_generator
from stylegan2.stylegan3 import Generator
from stylegan2.testing import tiny_stylegan3


def test_invert_save_load_and_drag_a_stylegan3_embedding(tmp_path):
    G = tiny_stylegan3(seed=4)
    model = save_generator(G, tmp_path / "sg3.safetensors")
    with torch.random.fork_rng(devices=[]):  # a thin random VGG: offline, in seconds
        torch.manual_seed(0)
        perc = PerceptualDistance(VGG16Features(width=1 / 16))
    with torch.no_grad():
        target = image_to_uint8(G.synthesis(G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(5)))))
    r = invert(G, target, perc, get_preset("fast", w_steps=20, tune_steps=10))
    assert r.projection.psnr_after > r.projection.psnr_before and r.tuning.psnr_after > r.projection.psnr_before + 5
    path = save_embedding(tmp_path / "e.safetensors", r, G, str(model))
    clear_memory_cache()
    tuned, ws = load_embedding(path, "cpu")  # the base model from the file's spec
    assert isinstance(tuned, Generator) and torch.equal(ws, r.pivot_ws)
    assert all(torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), r.G.state_dict().values()))
    s = DragSession(tuned, ws)
    assert np.array_equal(s.image(), r.image())
    frames = list(s.drag([[10, 10]], [[16, 14]], DragConfig(max_steps=3, lr=0.05, r1=48, r2=96)))
    assert frames[-1].done and not torch.equal(s.latent, ws)
