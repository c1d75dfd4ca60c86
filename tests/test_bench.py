"""`python -m draggan bench`: the official code's step through its adapter (against a fake checkout made here:
the real one is never in this repository), and no ratio without it."""
import json
import textwrap

import pytest

from draggan.__main__ import main
from draggan.bench.measure import drag_points, make_generator, random_generator
from draggan.bench.official import OFFICIAL_ENTRY_POINTS, check_checkout, official_kwargs
from stylegan2.checkpoints import load_generator, save_generator
from stylegan2.testing import tiny_generator, tiny_stylegan3

# A stand-in for a DragGAN checkout with the same entry points: each logs what it was handed to $FAKE_OFFICIAL_LOG.
GENERATOR = """
    import torch
    from viz.log import log
    class Generator(torch.nn.Module):
        def __init__(self, *args, **kwargs):
            super().__init__()
            self.init_args, self.init_kwargs, self.sd = args, kwargs, {{}}
            self.img_resolution = kwargs["img_resolution"]
            log("generator", kind="{kind}", args=list(args), kwargs=kwargs)
        def load_state_dict(self, sd, strict=True):
            self.sd = dict(sd)
            log("load_state_dict", keys=sorted(sd), strict=strict)
        def state_dict(self):
            return self.sd
    """
FAKE = {
    "dnnlib/__init__.py": """
        class EasyDict(dict):
            def __getattr__(self, name):
                return self[name]
            def __setattr__(self, name, value):
                self[name] = value
        """,
    "training/__init__.py": "",
    "training/networks_stylegan2.py": GENERATOR.format(kind="stylegan2"),
    "training/networks_stylegan3.py": GENERATOR.format(kind="stylegan3"),
    "stylegan_human/__init__.py": "",
    "stylegan_human/training_scripts/__init__.py": "",
    "stylegan_human/training_scripts/sg2/__init__.py": "",
    "stylegan_human/training_scripts/sg2/training/__init__.py": "",
    "stylegan_human/training_scripts/sg2/training/networks.py": GENERATOR.format(kind="stylegan_human"),
    "viz/__init__.py": "",
    "viz/log.py": """
        import json, os
        def log(event, **kw):
            with open(os.environ["FAKE_OFFICIAL_LOG"], "a") as f:
                f.write(json.dumps({"event": event, "cwd": os.getcwd(), **kw}) + "\\n")
        """,
    "viz/renderer.py": """
        import torch
        from PIL import Image
        from viz.log import log
        def add_watermark_np(a):
            log("watermark", shape=list(a.shape))
            return a
        class Renderer:
            def __init__(self, disable_timing=False):
                self._device, self._pkl_data, self._networks = torch.device("cuda"), {}, {}
                log("renderer", disable_timing=disable_timing)
            def init_network(self, res, pkl=None, w0_seed=0, w_load=None, w_plus=True, noise_mode="const",
                             trunc_psi=0.7, trunc_cutoff=None, input_transform=None, lr=0.001, **kwargs):
                if "stylegan2" in pkl:  # the class by the file's name, as the official renderer picks it
                    from training.networks_stylegan2 import Generator
                    extra = {}
                elif "stylegan3" in pkl:
                    from training.networks_stylegan3 import Generator
                    extra = {}
                else:
                    from stylegan_human.training_scripts.sg2.training.networks import Generator
                    extra = dict(square=False, padding=True)
                data = self._pkl_data[pkl]["G_ema"]
                self.G = Generator(*data.init_args, **data.init_kwargs, **extra)
                self.G.load_state_dict(data.state_dict())
                log("init_network", pkl=pkl, w_load=list(w_load.shape), w_plus=w_plus, lr=lr,
                    device=str(self._device))
            def _render_drag_impl(self, res, points=[], targets=[], mask=None, lambda_mask=10, reg=0,
                                  feature_idx=5, r1=3, r2=12, trunc_psi=0.7, is_drag=False, to_pil=False, **kw):
                log("drag", points=[list(p) for p in points], targets=targets, feature_idx=feature_idx, r1=r1,
                    r2=r2, is_drag=is_drag, to_pil=to_pil, mask_sum=None if mask is None else float(mask.sum()))
                for j, p in enumerate(points):  # one pixel along the row each step
                    points[j] = [p[0] + 1, p[1]]
                res.image = Image.new("RGB", (self.G.img_resolution,) * 2)
        """,
    "gradio_utils/__init__.py": "",
    "gradio_utils/utils.py": """
        from viz.log import log
        def draw_points_on_image(image, points, curr_point=None, highlight_all=True, radius_scale=0.01):
            log("draw_points", points={str(k): v for k, v in points.items()}, size=list(image.size))
            return image
        """,
}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(save_generator(tiny_generator(64, 32), tmp_path_factory.mktemp("m") / "tiny64.safetensors"))


@pytest.fixture
def fake_official(tmp_path, monkeypatch):
    root = tmp_path / "DragGAN"
    for name, text in FAKE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_OFFICIAL_LOG", str(log))  # spawned processes inherit it
    return root, log


def test_bench_official_drives_the_checkouts_renderer_in_its_own_process(model_path, fake_official, capsys):
    root, log = fake_official
    rc = main(["bench", "--model", model_path, "--official", str(root), "--steps", "2", "--device", "cpu", "--json"])
    assert rc == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    rows = out["results"]
    assert rows[0]["method"].startswith("official") and rows[0]["points_drawn"] is True
    assert [r["speedup"] for r in rows][0] == 1.0 and rows[0]["memory_ratio"] == 1.0
    assert [r["method"].split(",")[0].split(" ")[0] for r in rows[1:]] == ["draggan"] * 3 + ["straightforward"]
    for r in rows:  # every ratio is against the official line
        assert r["resolution"] == 64 and r["ms_per_step"] > 0
        assert r["speedup"] == round(rows[0]["ms_per_step"] / r["ms_per_step"], 2)

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert {c["cwd"] for c in calls} == {str(root)}               # run from the checkout (its font is relative)
    G = load_generator(model_path, "cpu")
    built = [c for c in calls if c["event"] == "generator"]
    assert len(built) == 1 and built[0]["kind"] == "stylegan2"     # built by the renderer, from the record
    assert built[0]["kwargs"] == json.loads(json.dumps(official_kwargs(G.config)))
    loads = [c for c in calls if c["event"] == "load_state_dict"]
    assert loads[0]["keys"] == sorted(G.state_dict()) and loads[0]["strict"] is True
    init = next(c for c in calls if c["event"] == "init_network")
    assert "stylegan2" in init["pkl"] and init["w_load"] == [1, G.num_ws, G.w_dim] and init["w_plus"] is True
    assert init["device"] == "cpu" and init["lr"] == 0.002        # the bench's device and our step size
    drags = [c for c in calls if c["event"] == "drag"]
    assert not drags[0]["is_drag"] and drags[0]["to_pil"]          # the first image, as the app opens
    steps = drags[1:]
    assert len(steps) == 3 and all(c["is_drag"] and c["to_pil"] for c in steps)  # the set-up step + 2 timed
    handles, targets = drag_points(64)
    assert steps[0]["points"] == [[round(y), round(x)] for x, y in handles]       # (row, col) whole pixels
    assert steps[0]["targets"] == [[y, x] for x, y in targets]
    assert steps[1]["points"] == [[r + 1, c] for r, c in steps[0]["points"]]      # the renderer's tracked points
    assert (steps[0]["feature_idx"], steps[0]["r1"], steps[0]["r2"], steps[0]["mask_sum"]) == (4, 3, 13, 0.0)
    frames = [c for c in calls if c["event"] == "draw_points"]
    assert len(frames) == 3 and len([c for c in calls if c["event"] == "watermark"]) == 3  # a frame per step
    last = steps[-1]["points"]
    assert frames[-1]["points"]["0"]["start_temp"] == [last[0][1], last[0][0] + 1]  # (x, y), tracked by the step
    assert frames[-1]["points"]["1"]["target"] == targets[1]


@pytest.mark.parametrize("kind", ["stylegan3", "stylegan_human"])
def test_bench_official_builds_the_class_the_official_app_picks_for_each_kind(kind, tmp_path, fake_official, capsys):
    """StyleGAN3 and StyleGAN-Human go to the official renderer as their pickles would: a file name that picks
    their class, their record's arguments (Human's nested, without the `square` the renderer adds itself) and a
    state dict with every name; the drag reads the same feature map as ours (StyleGAN3: layer L5)."""
    G = tiny_stylegan3(32) if kind == "stylegan3" else tiny_generator(32, 16, square=False)
    path = str(save_generator(G, tmp_path / f"{kind}.safetensors"))
    root, log = fake_official
    rc = main(["bench", "--model", path, "--official", str(root), "--steps", "1", "--device", "cpu",
               "--lines", "scripts", "--json"])
    assert rc == 0, capsys.readouterr().err
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [r["method"] for r in rows] == ["official DragGAN, as its app", "draggan, as scripts (frame every 10)"]

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    built = [c for c in calls if c["event"] == "generator"]
    assert [c["kind"] for c in built] == [kind]
    kwargs = built[0]["kwargs"]
    if kind == "stylegan3":
        assert kwargs["mapping_kwargs"] == {"num_layers": 2, "lr_multiplier": 0.01}
        assert (kwargs["channel_base"], kwargs["num_layers"], kwargs["margin_size"]) == (512, 14, 10)
    else:
        assert kwargs["synthesis_kwargs"]["channel_base"] == 16 * 32 and "channel_base" not in kwargs
        assert (kwargs["square"], kwargs["padding"]) == (False, True)  # from the renderer, not from the record
    init = next(c for c in calls if c["event"] == "init_network")
    assert kind in init["pkl"] and "stylegan2" not in init["pkl"]
    load = next(c for c in calls if c["event"] == "load_state_dict")
    assert load["keys"] == sorted(load_generator(path, "cpu").state_dict()) and load["strict"]
    step = next(c for c in calls if c["event"] == "drag" and c["is_drag"])
    assert step["feature_idx"] == (5 if kind == "stylegan3" else 3)  # L5; the last of a 32-px StyleGAN2's 4 blocks


def test_bench_random_generators_of_each_kind(capsys):
    rc = main(["bench", "--random-res", "64", "--arch", "human", "--steps", "1", "--lines", "scripts,stand-in",
               "--device", "cpu", "--json"])
    assert rc == 0, capsys.readouterr().err
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [r["model"] for r in rows] == ["human-64"] * 2 and rows[0]["resolution"] == 64
    assert [r["method"].split(" ")[0] for r in rows] == ["draggan,", "straightforward"]
    G = make_generator(("human", 64), "cpu")
    assert (G.config.square, G.config.channel_base, G.synthesis.blocks[-1].width) == (False, 32768, 32)
    R = random_generator("stylegan3-r", 64)
    assert (R.config.conv_kernel, R.config.use_radial_filters, R.config.channel_base) == (1, True, 65536)


@pytest.mark.parametrize("lines", ["", "app,nope"])
def test_bench_lines_must_name_known_lines(lines, capsys):
    assert main(["bench", "--random-res", "64", "--lines", lines]) == 2
    err = capsys.readouterr().err
    assert "use some of app,every,scripts,stand-in" in err and len(err.strip().splitlines()) == 1


def test_bench_without_official_prints_how_to_get_it_and_no_ratio(model_path, capsys):
    rc = main(["bench", "--model", model_path, "--steps", "2", "--device", "cpu"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("--official" in line and "XingangPan/DragGAN" in line for line in lines)
    rows = [line for line in lines if "ms/step" in line]
    assert len(rows) == 4 and any("straightforward" in r for r in rows) and any("draggan" in r for r in rows)
    assert all(r.rstrip().endswith("MB peak") for r in rows)       # no "xN speed", against the stand-in or anything


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "nowhere", "no such folder"),
    (lambda p: (p / "viz").mkdir() or p, "not a DragGAN checkout (no viz/renderer.py"),
])
def test_bench_official_refuses_a_folder_that_is_no_checkout(tmp_path, capsys, make, message):
    rc = main(["bench", "--random-res", "64", "--official", str(make(tmp_path)), "--steps", "2"])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_check_checkout_names_every_entry_point(tmp_path):
    for name in OFFICIAL_ENTRY_POINTS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert check_checkout(tmp_path) == str(tmp_path.resolve())


def test_bench_profile_accounts_for_the_whole_step_by_part_and_block(model_path, capsys):
    rc = main(["bench", "--profile", "--model", model_path, "--steps", "3", "--device", "cpu", "--json"])
    assert rc == 0, capsys.readouterr().err
    p, stand_in = json.loads(capsys.readouterr().out)["profiles"]
    assert (p["line"], stand_in["line"]) == ("ours, as the app", "straightforward (stand-in)")
    assert p["resolution"] == 64 and p["steps"] == 3 and p["frames"] >= 1
    parts = p["parts"]
    for name in ("forward to the feature block", "tracking", "loss", "backward", "optimizer", "frames: image"):
        assert parts[name] > 0, name
    assert sum(parts.values()) == pytest.approx(p["ms_per_step"], abs=0.05)  # the rest closes the sum
    assert all(v >= 0 for v in parts.values())                            # parts do not overlap
    # Arithmetic: ours skips the image tail and weight gradients in a step; the stand-in's step makes a whole image.
    assert 0 < p["gflop_per_step"] < stand_in["gflop_per_step"] and stand_in["gflop_per_step"] > stand_in["gflop_per_image"]
    # A frame of ours finishes the image from the step's whole maps: at most a whole image's arithmetic.
    assert 0 < p["gflop_per_frame"] <= p["gflop_per_image"] and "gflop_per_frame" not in stand_in
    blocks = p["blocks"]
    # A 64-px generator's feature block is its last (b64): every block runs forward and backward with autograd;
    # only the optimized rows' layers need gradients, but every layer up to the features is on the loss's path.
    for res in (4, 8, 16, 32, 64):
        assert blocks[f"b{res} forward"] > 0 and blocks[f"b{res} backward"] > 0 and blocks[f"b{res} frame"] > 0
    assert sum(v for k, v in blocks.items() if k.endswith("forward")) <= parts["forward to the feature block"]
    assert sum(v for k, v in blocks.items() if k.endswith("backward")) <= parts["backward"]
    assert "generator forward (every block, image too)" not in parts   # ours never runs the whole generator with autograd
    whole = stand_in["parts"]
    for name in ("generator forward (every block, image too)", "resize the feature map", "backward", "optimizer",
                 "frames: uint8"):
        assert whole[name] > 0, name
    assert stand_in["frames"] == 3 + 1 and sum(whole.values()) == pytest.approx(stand_in["ms_per_step"], abs=0.05)
    forwards = sum(v for k, v in stand_in["blocks"].items() if k.endswith(" forward"))
    assert 0 < forwards <= whole["generator forward (every block, image too)"]  # its image comes with the step's forward


def test_profile_timers_count_a_part_without_the_parts_it_calls():
    from draggan.bench.profile import Timers

    ticks = iter(range(100))
    timers = Timers(clock=lambda: float(next(ticks)))
    inner = timers.wrap(lambda: None, "inner")                 # 1 tick
    outer = timers.wrap(lambda: (inner(), inner()), "outer")  # 5 ticks, 2 of them inside `inner`
    outer()
    assert dict(timers.seconds) == {"inner": 2.0, "outer": 3.0}
