"""Our StyleGAN3 computes the same function as NVIDIA's (numbers in ../shared/reference/sg3*)."""
import json

import pytest
import torch
from safetensors.torch import load_file

from stylegan2.safe_pickle import CheckpointError
from stylegan2.stylegan3 import Generator, StyleGAN3Config, geometry

TOL = 1e-4  # relative to the reference tensor's largest magnitude
NAMES = ["sg3t_res128", "sg3r_res64"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def reference_generator(reference_dir, name: str) -> Generator:
    meta = json.loads((reference_dir / f"{name}.json").read_text())
    G = Generator(StyleGAN3Config.from_dict(meta["init_kwargs"]).validate())
    G.load_state_dict(load_file(str(reference_dir / f"{name}.safetensors")), strict=True)
    return G.eval().requires_grad_(False)


@pytest.fixture(scope="module", params=NAMES)
def case(request, reference_dir):
    name = request.param
    return (name, reference_generator(reference_dir, name), load_file(str(reference_dir / f"{name}_io.safetensors")),
            json.loads((reference_dir / f"{name}.json").read_text()))


def test_geometry_matches_every_layer_of_the_reference(case):
    name, G, _, meta = case
    geo = geometry(G.config)
    assert [g.name for g in geo.layers] == meta["layer_names"] == G.synthesis.layer_names
    assert G.num_ws == meta["num_ws"]
    assert (geo.input_channels, [geo.input_size] * 2) == (meta["input"]["channels"], meta["input"]["size"])
    for g, ref in zip(geo.layers, meta["layers"]):
        for key in ("is_torgb", "is_critically_sampled", "use_fp16", "in_channels", "out_channels",
                    "in_sampling_rate", "out_sampling_rate", "tmp_sampling_rate", "conv_kernel", "up_factor",
                    "down_factor", "up_taps", "down_taps", "down_radial"):
            assert getattr(g, key) == ref[key], (g.name, key)
        assert [g.in_size] * 2 == ref["in_size"] and [g.out_size] * 2 == ref["out_size"], g.name
        assert list(g.padding) == ref["padding"], g.name  # negative on the layers that crop
        for key in ("in_cutoff", "out_cutoff", "in_half_width", "out_half_width"):
            assert getattr(g, key) == pytest.approx(ref[key], rel=1e-12), (g.name, key)


def test_designed_filters_equal_the_stored_ones(case, reference_dir):
    """A generator built from its config (no file) designs the same Kaiser sinc / radial jinc filters."""
    name, G, _, _ = case
    fresh = Generator(G.config).state_dict()
    stored = load_file(str(reference_dir / f"{name}.safetensors"))
    filters = [k for k in stored if k.endswith(("up_filter", "down_filter"))]
    assert len(filters) == 28
    assert any(stored[k].ndim == 2 for k in filters) == name.startswith("sg3r")  # R: radial down filters
    for k in filters:
        assert fresh[k].shape == stored[k].shape and rel_err(fresh[k], stored[k]) < 1e-5, k


@pytest.mark.parametrize("key,psi,cutoff", [("ws_psi1", 1.0, None), ("ws_psi07", 0.7, None), ("ws_psi07_cut4", 0.7, 4)])
def test_mapping_matches_reference(case, key, psi, cutoff):
    _, G, io, _ = case
    with torch.no_grad():
        ws = G.mapping(io["z"], truncation_psi=psi, truncation_cutoff=cutoff)
    assert ws.shape == io[key].shape and rel_err(ws, io[key]) < TOL


def test_every_layer_output_matches_reference(case, reference_dir):
    name, G, io, _ = case
    ref = load_file(str(reference_dir / f"{name}_layers.safetensors"))
    with torch.no_grad():
        feats = G.synthesis.features(io["ws_psi07"][:1])
    assert len(feats) == len(ref) == 15
    for i, f in enumerate(feats):
        assert f.shape == ref[f"layer{i}"].shape, i  # margins included, except the last two layers
        assert rel_err(f, ref[f"layer{i}"]) < TOL, f"layer {i}"


@pytest.mark.parametrize("noise_mode,key", [("const", "img_const"), ("none", "img_none"), ("random", "img_const")])
def test_images_match_reference(case, noise_mode, key):
    _, G, io, _ = case
    with torch.no_grad():
        img = G.synthesis(io["ws_psi07"], noise_mode=noise_mode)
    assert img.shape == io[key].shape and rel_err(img, io[key]) < TOL


def test_input_transform_matches_reference(case):
    _, G, io, _ = case
    ws = io["ws_psi07"][:1]
    try:
        G.synthesis.input.transform.copy_(io["input_transform_buffer"])
        with torch.no_grad():
            img = G.synthesis(ws)
    finally:
        G.synthesis.input.transform.copy_(torch.eye(3))
    assert rel_err(img, io["img_const_transformed"]) < TOL
    assert rel_err(img, io["img_const"][:1]) > 0.05  # the transform did change the image


def test_early_stop_and_tail_give_the_same_image(case):
    _, G, io, _ = case
    ws = io["ws_psi07"][:1]
    with torch.no_grad():
        full = G.synthesis(ws)
        for stop in (1, 6, 15):
            feats = G.synthesis.features(ws, stop=stop)
            assert len(feats) == stop and torch.equal(G.synthesis.image_from_features(ws, feats), full)


def test_unfused_path_for_latent_gradients_matches_reference(case):
    """With a latent that needs gradients the modulated convs run unfused (the drag's path); same numbers."""
    _, G, io, _ = case
    img = G.synthesis(io["ws_psi07"].clone().requires_grad_(True))
    assert img.requires_grad and rel_err(img.detach(), io["img_const"]) < TOL


@pytest.mark.parametrize("field,value", [("img_resolution", 100), ("img_resolution", 4096), ("channel_max", 10 ** 6),
                                         ("num_layers", 1000), ("margin_size", -1), ("conv_kernel", 2.5),
                                         ("first_cutoff", float("nan")), ("num_critical", 14),
                                         ("use_radial_filters", "yes"), ("conv_clamp", -1)])
def test_config_out_of_bounds_is_refused_before_allocation(field, value):
    cfg = StyleGAN3Config(**{field: value})
    with pytest.raises(CheckpointError, match=field):
        cfg.validate()


def test_published_configs_pass_validation():
    for res in (256, 512, 1024):
        StyleGAN3Config(img_resolution=res).validate()
        StyleGAN3Config(img_resolution=res, channel_base=65536, channel_max=1024, conv_kernel=1,
                        use_radial_filters=True).validate()


@pytest.mark.parametrize("name", NAMES)
def test_fast_upsampling_equals_the_plain_op_with_gradients(reference_dir, name):
    """Transposed-convolution upsampling = zero insertion + pad/crop + FIR (upfirdn2d), for every layer's geometry."""
    from stylegan2.stylegan3 import upfirdn2d, upsample_separable
    G = reference_generator(reference_dir, name)
    gen = torch.Generator().manual_seed(0)
    for layer in G.synthesis.blocks[:-1]:  # ToRGB does not resample
        g = layer.geo
        side = g.in_size + g.conv_kernel - 1  # the modulated conv's output
        x = torch.randn([2, 3, side, side], generator=gen)
        a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        plain = upfirdn2d(a, layer.up_filter, up=g.up_factor, padding=g.padding, gain=g.up_factor ** 2)
        fast = upsample_separable(b, layer.up_filter, g.up_factor, g.padding, g.up_factor ** 2)
        assert fast.shape == plain.shape and rel_err(fast, plain) < 1e-5, g.name
        weight = torch.randn(plain.shape, generator=gen)
        (plain * weight).sum().backward()
        (fast * weight).sum().backward()
        assert rel_err(b.grad, a.grad) < 1e-5, g.name


@pytest.mark.parametrize("up,taps,padding", [(2, 12, (15, 14, 0, -3)), (3, 6, (-7, 2, 9, 0)), (4, 24, (0, 0, 0, 0))])
def test_fast_upsampling_equals_the_plain_op_for_any_padding(up, taps, padding):
    from stylegan2.stylegan3 import upfirdn2d, upsample_separable
    gen = torch.Generator().manual_seed(up)
    x, f = torch.randn([1, 2, 9, 11], generator=gen), torch.rand([taps], generator=gen)
    plain = upfirdn2d(x, f, up=up, padding=padding, gain=up * up)
    fast = upsample_separable(x, f, up, padding, up * up)
    assert fast.shape == plain.shape and rel_err(fast, plain) < 1e-5


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("grad", [False, True])
def test_fast_filtered_lrelu_equals_the_plain_one(reference_dir, name, grad):
    """Every layer's nonlinearity (ToRGB's included): the fast path's output (and, when autograd records, its
    gradients for the input and the bias) equal the plain ops' to float rounding."""
    from stylegan2.stylegan3 import filtered_lrelu
    G = reference_generator(reference_dir, name)
    gen = torch.Generator().manual_seed(1)
    for layer in G.synthesis.blocks:
        g = layer.geo
        side = g.in_size + g.conv_kernel - 1
        x = torch.randn([2, 3, side, side], generator=gen) * 40  # some values past the clamp (256 / sqrt 2)
        bias = torch.randn([3], generator=gen)
        gain, slope = (1.0, 1.0) if g.is_torgb else (2 ** 0.5, 0.2)
        outs, grads = [], []
        for fast in (False, True):
            xi, bi = x.clone().requires_grad_(grad), bias.clone().requires_grad_(grad)
            with torch.set_grad_enabled(grad):
                y = filtered_lrelu(xi, layer.up_filter, layer.down_filter, bi, g.up_factor, g.down_factor, g.padding,
                                   gain, slope, layer.conv_clamp, fast=fast)
            outs.append(y.detach())
            if grad:
                y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(2)))
                grads.append((xi.grad, bi.grad))
        assert outs[1].shape == outs[0].shape and rel_err(outs[1], outs[0]) < 1e-5, g.name
        assert (outs[0].abs() > 0).any()
        for fast_grad, plain_grad in zip(*grads) if grad else ():
            assert rel_err(fast_grad, plain_grad) < 1e-5, g.name


@pytest.mark.parametrize("name", NAMES)
def test_fast_filtered_lrelu_in_bfloat16_stays_within_bfloat16_rounding(reference_dir, name):
    """bfloat16 layers (precision bf16, what `auto` picks on CPUs with native bf16): the fast path upsamples in
    float32 and rounds once; its output is bfloat16, within a few bfloat16 roundings of the float32 result."""
    from stylegan2.stylegan3 import filtered_lrelu
    G = reference_generator(reference_dir, name)
    gen = torch.Generator().manual_seed(3)
    for layer in G.synthesis.blocks[:-1]:
        g = layer.geo
        side = g.in_size + g.conv_kernel - 1
        x, bias = torch.randn([1, 3, side, side], generator=gen) * 40, torch.randn([3], generator=gen)
        run = lambda x, fast: filtered_lrelu(x, layer.up_filter, layer.down_filter, bias, g.up_factor, g.down_factor,
                                             g.padding, 2 ** 0.5, 0.2, layer.conv_clamp, fast=fast)
        exact, fast = run(x.bfloat16().float(), False), run(x.bfloat16(), True)
        assert fast.dtype == torch.bfloat16 and fast.shape == exact.shape, g.name
        assert rel_err(fast.float(), exact) < 2 ** -6, g.name  # bfloat16 keeps 8 significant bits
