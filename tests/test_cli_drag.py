"""`python -m draggan drag` and `python -m draggan bench` on a tiny generator saved to disk."""
import json

import numpy as np
import pytest
from PIL import Image

from draggan.__main__ import main
from stylegan2.testing import tiny_generator
from stylegan2.checkpoints import save_generator


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(save_generator(tiny_generator(64, 32), tmp_path_factory.mktemp("m") / "tiny64.safetensors"))


def test_drag_writes_image_trace_and_videos(model_path, tmp_path, capsys):
    out, trace = tmp_path / "final.png", tmp_path / "trace.json"
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :40] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    rc = main(["drag", "--model", model_path, "--seed", "1", "--handles", "24,32", "--targets", "40,32",
               "--lr", "0.05", "--r1", "24", "--r2", "64", "--feature-block", "4", "--steps", "60",
               "--mask", str(tmp_path / "mask.png"), "--device", "cpu", "--out", str(out), "--trace", str(trace),
               "--video", str(tmp_path / "drag.gif"), "--video-plain", str(tmp_path / "plain.mp4")])
    assert rc == 0, capsys.readouterr().err
    assert Image.open(out).size == (64, 64)
    t = json.loads(trace.read_text())
    assert t["steps"][0] == {**t["steps"][0], "step": 0, "handles": [[24.0, 32.0]], "distances": [16.0]}
    assert [s["step"] for s in t["steps"]] == list(range(len(t["steps"])))
    assert all({"loss", "ms"} <= set(s) for s in t["steps"])
    assert t["settings"]["lr"] == 0.05 and t["settings"]["feature_block"] == 4
    assert t["result"]["distances"][0] < 16  # the handle got closer
    assert 2 <= Image.open(tmp_path / "drag.gif").n_frames <= len(t["steps"]) + 1  # repeated frames dropped
    assert (tmp_path / "plain.mp4").stat().st_size > 0


@pytest.mark.parametrize("args,message", [
    (["--handles", "1,1;2,2", "--targets", "3,3"], "give one --targets point per --handles point"),
    (["--handles", "1;2", "--targets", "3,3"], "--handles must be points like"),
    (["--handles", "nan,1", "--targets", "3,3"], "handle 1 is not a number"),
    (["--handles", "1,1", "--targets", "3,3", "--method", "auto"], "no Auto DragGAN predictor"),
    (["--handles", "100,1", "--targets", "3,3"], "outside the 64x64 image"),
])
def test_drag_bad_points_exit_2_with_a_message(model_path, tmp_path, capsys, args, message):
    rc = main(["drag", "--model", model_path, "--out", str(tmp_path / "x.png"), *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_drag_missing_model_exits_2(tmp_path, capsys):
    rc = main(["drag", "--model", str(tmp_path / "nope.safetensors"), "--handles", "1,1", "--targets", "3,3",
               "--out", str(tmp_path / "x.png")])
    assert rc == 2 and "nope.safetensors" in capsys.readouterr().err


def test_bench_app_line_streams_the_same_drag_through_the_app(model_path, capsys):
    """--app serves the app in a process of its own and drags through /drag as a client: same steps as the engine."""
    rc = main(["bench", "--model", model_path, "--steps", "2", "--device", "cpu", "--app", "--app-trials", "2", "--json"])
    assert rc == 0
    app = {r["model"]: r for r in json.loads(capsys.readouterr().out)["app"]}
    assert set(app) == {"toyfaces-64", model_path}
    for r in app.values():
        assert r["app_steps"] == r["engine_steps"] > 0 and r["app_steps_per_s"] > 0 and r["app_vs_engine"] > 0


def test_drag_takes_the_catalog_models_drag_defaults_unless_given(model_path, tmp_path, extra_catalog, capsys):
    extra_catalog({"name": "tiny-cli", "label": "Tiny", "path": model_path, "resolution": 64, "shows": "noise",
                   "licence": "test", "source": "tests",
                   "drag_defaults": {"r1": 24, "feature_block": 4, "max_steps": 3}})
    trace = tmp_path / "trace.json"
    args = ["drag", "--model", "tiny-cli", "--handles", "24,32", "--targets", "40,32", "--device", "cpu",
            "--out", str(tmp_path / "x.png"), "--trace", str(trace)]
    assert main(args) == 0, capsys.readouterr().err
    settings = json.loads(trace.read_text())["settings"]
    assert (settings["r1"], settings["feature_block"], settings["max_steps"]) == (24, 4, 3)
    assert (settings["r2"], settings["lr"]) == (13, 0.002)                 # not in drag_defaults: DragConfig's
    assert main(args + ["--r1", "10", "--steps", "2"]) == 0                # what the user passes wins
    settings = json.loads(trace.read_text())["settings"]
    assert (settings["r1"], settings["feature_block"], settings["max_steps"]) == (10, 4, 2)
    assert main(["drag", "--model", model_path, "--steps", "1"] + args[3:]) == 0  # a path: DragConfig's defaults
    settings = json.loads(trace.read_text())["settings"]
    assert (settings["r1"], settings["feature_block"], settings["r2"]) == (3, 6, 13)
