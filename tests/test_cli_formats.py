"""`python -m draggan drag --model PATH` on files of each format the official code makes (../shared/reference)."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from draggan.__main__ import main
from reference_pickles import write_reference_pickle
from stylegan2 import checkpoints


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRAGGAN_CACHE", str(tmp_path / "cache"))
    checkpoints.clear_memory_cache()
    yield tmp_path / "cache"
    checkpoints.clear_memory_cache()


def model_file(reference_dir, tmp_path, kind: str) -> str:
    if kind == "tf":  # the reference's own TF-layout pickle, under the official download list's name
        path = tmp_path / "stylegan2-cat-config-f.pkl"
        path.write_bytes((reference_dir / "tf_config_f_res128.pkl").read_bytes())
        return str(path)
    name = {"ada": "ada_res64", "human": "human_res128"}[kind]
    return str(write_reference_pickle(reference_dir, name, tmp_path / f"{name}.pkl", tmp_path / "marker"))


@pytest.mark.parametrize("kind,size", [("tf", 128), ("human", 128), ("ada", 64)])
def test_drag_command_on_each_format_writes_image_trace_and_video(reference_dir, tmp_path, cache, capsys, kind, size):
    out, trace, video = tmp_path / "final.png", tmp_path / "trace.json", tmp_path / "drag.gif"
    handle, target = f"{size // 2},{size // 2 + 8}", f"{size // 2},{size // 2 - 4}"
    rc = main(["drag", "--model", model_file(reference_dir, tmp_path, kind), "--seed", "0", "--handles", handle,
               "--targets", target, "--lr", "0.005", "--steps", "4", "--device", "cpu", "--out", str(out),
               "--trace", str(trace), "--video", str(video), "--video-plain", str(tmp_path / "plain.gif")])
    assert rc == 0, capsys.readouterr().err
    assert Image.open(out).size == (size, size)
    t = json.loads(trace.read_text())
    assert t["steps"][0]["handles"] == [[size / 2, size / 2 + 8]] and len(t["steps"]) == 4
    assert t["settings"]["resolution"] == size
    gif = Image.open(video)
    plain = Image.open(tmp_path / "plain.gif")
    width = size // 2 if kind == "human" else size  # StyleGAN-Human's video is its own picture, not the white pad
    for v in (gif, plain):  # the model's aspect, enlarged for viewing
        assert v.size[1] >= size and v.size[1] % size == 0 and v.n_frames >= 2
        assert v.size[0] * size == v.size[1] * width
    assert len(list(cache.glob("*.safetensors"))) == 1  # converted once
    if kind == "human":  # the padded square: white columns either side, as the official app shows it
        img = Image.open(out).convert("RGB")
        assert img.getpixel((2, 64)) == (255, 255, 255) and img.getpixel((125, 64)) == (255, 255, 255)
