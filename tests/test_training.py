"""The training loop: D learns, resume is exact, exports load back; the shipped toy-face model loads."""
from pathlib import Path

import numpy as np
import pytest
import torch

from draggan.toyfaces import face_batch
from stylegan2 import seed_to_z
from stylegan2.discriminator import Discriminator, DiscriminatorConfig
from stylegan2.checkpoints import read_generator_file, save_generator
from stylegan2.training import TrainConfig, Trainer, tile, to_tensor

MODEL = Path(__file__).resolve().parents[1] / "models" / "toyfaces-64.safetensors"


def tiny_config(**overrides) -> TrainConfig:
    cfg = dict(resolution=16, z_dim=16, g_channel_base=128, g_channel_max=16, d_channel_base=128, d_channel_max=16,
               mapping_layers=2, batch=8, seed=1)
    cfg.update(overrides)
    return TrainConfig(**cfg)


def reals_for(trainer: Trainer) -> torch.Tensor:
    """The trainer's next batch of toy faces, as `train` feeds them."""
    cfg = trainer.cfg
    return to_tensor(face_batch(cfg.data_seed + trainer.nimg, cfg.batch, cfg.resolution))


def params_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_discriminator_names_and_shapes_follow_nvidia():
    D = Discriminator(DiscriminatorConfig(img_resolution=16, channel_base=128, channel_max=16))
    names = set(D.state_dict())
    for name in ["b16.fromrgb.weight", "b16.conv0.weight", "b16.conv1.bias", "b16.skip.weight", "b8.conv0.weight",
                 "b4.conv.weight", "b4.fc.weight", "b4.out.bias", "b16.conv1.resample_filter"]:
        assert name in names, name
    assert "b8.fromrgb.weight" not in names and "b16.skip.bias" not in names
    assert D(torch.randn(8, 3, 16, 16)).shape == (8, 1)


def test_discriminator_steps_lower_its_loss_with_G_fixed():
    torch.manual_seed(0)
    trainer = Trainer(tiny_config())
    reals = to_tensor(face_batch(0, 8, 16))
    with torch.no_grad():
        fakes = trainer.G(torch.randn(8, 16), noise_mode="const")
    g_before = params_of(trainer.G)
    losses = [trainer.d_step(reals, fakes)["loss_D"] for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(torch.equal(v, trainer.G.state_dict()[k]) for k, v in g_before.items())


def test_training_steps_count_images_and_track_w_avg():
    trainer = Trainer(tiny_config())
    assert trainer.G.mapping.w_avg.abs().sum() == 0
    for _ in range(3):
        stats = trainer.step(reals_for(trainer))
    assert trainer.nimg == 24 and trainer.steps == 3
    assert {"loss_G", "loss_D"} <= set(stats) and all(np.isfinite(v) for v in stats.values())
    w_avg = trainer.G.mapping.w_avg
    assert w_avg.abs().sum() > 0 and torch.equal(w_avg, trainer.G_ema.mapping.w_avg)
    # the EMA generator lags behind G
    assert not torch.equal(trainer.G_ema.mapping.fc0.weight, trainer.G.mapping.fc0.weight)


def test_ema_half_life():
    trainer = Trainer(tiny_config(ema_kimg=0.008, ema_rampup=0))  # half-life = one batch of 8
    with torch.no_grad():
        for p in trainer.G.parameters():
            p.add_(1.0)
    before = params_of(trainer.G_ema)
    trainer.update_ema()
    for name, p in trainer.G_ema.named_parameters():
        torch.testing.assert_close(p, before[name] + 0.5)


def test_resume_continues_exactly(tmp_path):
    torch.manual_seed(123)
    a = Trainer(tiny_config())
    for _ in range(2):
        a.step(reals_for(a))
    a.save(tmp_path / "checkpoint.pt")
    for _ in range(2):
        a.step(reals_for(a))

    torch.manual_seed(999)  # resuming must not depend on the RNG state of the new process
    b = Trainer.load(tmp_path / "checkpoint.pt")
    assert b.nimg == 16 and b.steps == 2
    for _ in range(2):
        b.step(reals_for(b))
    assert b.nimg == a.nimg == 32
    for name in ("G", "D", "G_ema"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name


def test_export_loads_back_identical(tmp_path):
    trainer = Trainer(tiny_config())
    trainer.step(reals_for(trainer))
    path = tmp_path / "g.safetensors"
    save_generator(trainer.G_ema, path)
    G = read_generator_file(path)
    z = torch.randn(2, 16)
    with torch.no_grad():
        expected = trainer.G_ema(z, truncation_psi=0.7)
        assert torch.equal(G.eval()(z, truncation_psi=0.7), expected)


def test_sample_grid_layout():
    trainer = Trainer(tiny_config())
    grid, imgs = trainer.sample_grid(seeds=range(4), columns=4)
    assert imgs.shape == (8, 16, 16, 3) and grid.shape == (32, 64, 3)
    assert np.array_equal(grid[16:32, 16:32], imgs[5])
    assert np.array_equal(tile(imgs, 4), grid)


@pytest.mark.skipif(not MODEL.exists(), reason="models/toyfaces-64.safetensors not exported yet")
def test_toyfaces_model_loads_and_is_small():
    assert MODEL.stat().st_size < 8 * 2 ** 20
    G = read_generator_file(MODEL)
    assert G.img_resolution == 64
    with torch.no_grad():
        img = G.eval()(seed_to_z(0, G.z_dim), truncation_psi=0.7)
    assert img.shape == (1, 3, 64, 64) and torch.isfinite(img).all()


def test_train_command_starts_refuses_to_overwrite_and_resumes(tmp_path):
    from draggan.__main__ import main
    out, export = tmp_path / "run", tmp_path / "g.safetensors"
    tiny = ["--resolution", "16", "--batch", "8", "--channel-base", "128", "--channel-max", "16", "--z-dim", "16",
            "--export", str(export)]
    assert main(["train", "--out", str(out), "--kimg", "0.016", *tiny]) == 0
    assert Trainer.load(out / "checkpoint.pt").nimg == 16 and export.exists() and (out / "reals.png").exists()
    assert main(["train", "--out", str(out), "--kimg", "0.032", *tiny]) == 2  # would overwrite the run
    assert main(["train", "--out", str(out), "--kimg", "0.032", "--resume", "--export", str(export)]) == 0
    assert Trainer.load(out / "checkpoint.pt").nimg == 32
    log = (out / "log.txt").read_text()
    assert "resume at kimg 0.0" in log and "all landmarks found in" in log
