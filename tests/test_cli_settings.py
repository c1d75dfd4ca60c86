"""The drag commands' flags come from draggan.config.SETTINGS and --method from the registry (issue 20)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from draggan import config
from draggan.__main__ import main
from draggan.commands._settings import flags_of
from draggan.config import SETTINGS, DragFrame
from draggan.methods import MethodSpec, register_method, unregister_method
from stylegan2.checkpoints import save_generator
from stylegan2.testing import tiny_generator


def help_text(capsys, *argv: str) -> str:
    assert main([*argv, "--help"]) == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare with single spaces


@pytest.mark.parametrize("command", [["drag"], ["quality"], ["experiment", "landmarks"]])
def test_every_setting_has_its_flag_and_help_in_each_drag_command(capsys, command):
    text = help_text(capsys, *command)
    # Frame pacing is not the batch commands' (their frames are not shown; experiment's --frame-every is decay's).
    frames = set() if command == ["drag"] else {"frame_every", "frame_interval_s", "frame_share"}
    shown = [name for name in SETTINGS if name not in frames]
    assert all(flags_of(name)[0] + " " in text for name in shown)
    assert not any(SETTINGS[name].help in text for name in frames)
    for name in shown:
        s = SETTINGS[name]
        assert " ".join(s.help.split()) in text, name
        if s.kind in ("int", "float"):
            assert f"({s.minimum:g} " in text or f"{s.minimum:g} to {s.maximum:g}" in text, name


def test_a_settings_help_and_bounds_are_read_from_settings(capsys, monkeypatch):
    """Change one Setting: the flag's help and its check follow, in every command."""
    r1 = dataclasses.replace(SETTINGS["r1"], help="a dummy help for the motion radius", maximum=7.0)
    monkeypatch.setitem(SETTINGS, "r1", r1)
    assert "--r1 X a dummy help for the motion radius (1 to 7; default the model's, else 3)" in help_text(capsys, "drag")
    assert "a dummy help for the motion radius" in help_text(capsys, "experiment", "landmarks")
    assert main(["drag", "--handles", "1,1", "--targets", "2,2", "--out", "x.png", "--r1", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --r1: must be between 1 and 7, got 8" in err


def test_a_new_setting_gets_a_flag(capsys, monkeypatch):
    wobble = config.Setting(name="wobble", label="Wobble", kind="int", minimum=0, maximum=3, help="how much to wobble")
    monkeypatch.setitem(SETTINGS, "wobble", wobble)
    monkeypatch.setattr(config.DragConfig, "wobble", 0, raising=False)
    assert "--wobble N how much to wobble (0 to 3; default 0)" in help_text(capsys, "drag")


@pytest.fixture
def dummy_method():
    def run(job):
        image = np.zeros((job.G.img_resolution,) * 2 + (3,), np.uint8)
        yield DragFrame(0, job.handles_xy, job.targets_xy, [0.0] * len(job.handles_xy), float("nan"), 0.0, image,
                        done=True, reason="reached", latent=job.w_start, start_xy=job.handles_xy)
    register_method(MethodSpec("dummy-test", "Dummy (test)", run, help="a method registered by a test"))
    yield "dummy-test"
    unregister_method("dummy-test")


def test_a_registered_method_shows_in_method_choices_and_runs(dummy_method, capsys, tmp_path):
    text = help_text(capsys, "drag")
    assert "--method {draggan," in text and "dummy-test}" in text and "dummy-test = Dummy (test)" in text
    assert "dummy-test = Dummy (test)" in help_text(capsys, "experiment", "landmarks")
    assert "dummy-test+nearest" in help_text(capsys, "quality")
    model = save_generator(tiny_generator(32, 16), tmp_path / "tiny.safetensors")
    out = tmp_path / "out.png"
    rc = main(["drag", "--model", str(model), "--method", dummy_method, "--handles", "4,4", "--targets", "9,9",
               "--device", "cpu", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert "reached after 0 steps" in capsys.readouterr().out and out.exists()


def test_an_unregistered_method_is_refused_in_one_line(capsys):
    assert main(["drag", "--method", "dummy-test", "--handles", "1,1", "--targets", "2,2", "--out", "x.png"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'dummy-test'" in err
