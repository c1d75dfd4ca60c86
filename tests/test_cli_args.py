"""The command line's bad input: one line on stderr, exit status 2, before any work (issue 24, item 7)."""
from __future__ import annotations

import pytest

import draggan.commands.render  # noqa: F401 (imported before any test patches the loader it imports)
from draggan.__main__ import main
from stylegan2 import checkpoints
from stylegan2.checkpoints import save_generator
from stylegan2.testing import tiny_generator


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(save_generator(tiny_generator(64, 32), tmp_path_factory.mktemp("m") / "tiny64.safetensors"))


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a command gets as far as loading its generator."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded: the bad input was not caught before the work")
    monkeypatch.setattr(checkpoints, "load_generator", refuse)
    monkeypatch.setattr("draggan.commands.render.load_generator", refuse)


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and "Traceback" not in captured.err
    return lines[0]


DRAG = ["drag", "--handles", "20,30", "--targets", "26,30", "--device", "cpu"]


@pytest.mark.parametrize("argv,message", [
    (["render", "--seed", "-1"], "--seed: must be a whole number from 0 to 4294967295, got -1"),
    (["render", "--seed", "4294967296"], "got 4294967296"),
    (["render", "--seed", "1.5"], "got '1.5'"),
    ([*DRAG, "--seed", "-1"], "--seed: must be a whole number from 0 to 4294967295"),
    ([*DRAG, "--seed", "4294967296"], "got 4294967296"),
    ([*DRAG, "--fps", "0"], "--fps: must be a number > 0"),
    (["quality", "--seed", "-3"], "--seed: must be a whole number"),
])
def test_out_of_range_values_are_one_line_status_2(tmp_path, capsys, no_model_load, argv, message):
    rc = main([*argv, "--out", str(tmp_path / "x.png")] if argv[0] != "quality" else argv)
    assert rc == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "x.png").exists()


def test_argparse_errors_are_one_line_too(capsys):
    assert main(["drag", "--handles", "1,1"]) == 2  # --targets and --out missing
    line = one_error_line(capsys)
    assert "--targets" in line and "draggan drag --help" in line


def test_help_still_exits_0(capsys):
    assert main(["render", "--help"]) == 0
    assert "--seed" in capsys.readouterr().out


@pytest.mark.parametrize("flag,name,message", [
    ("--out", "nonexistent/dir/x.png", "the folder"),
    ("--out", "x.txt", "--out: name the image"),
    ("--out", "folder.png", "is a folder"),
    ("--video", "x.avi", "--video: name the video .gif, .mp4, .webm, not 'x.avi'"),
    ("--video-plain", "nonexistent/x.gif", "--video-plain: the folder"),
    ("--trace", "nonexistent/t.json", "--trace: the folder"),
])
def test_drag_outputs_are_checked_before_the_drag(model_path, tmp_path, capsys, monkeypatch, flag, name, message):
    """A drag that could not save its result does not run (today it ran the whole drag, then failed)."""
    import draggan.editor

    def no_drag(*args, **kwargs):
        raise AssertionError("the drag ran")
    monkeypatch.setattr(draggan.editor.DragSession, "drag", no_drag)
    (tmp_path / "folder.png").mkdir()
    out = {"--out": str(tmp_path / "final.png")}
    out[flag] = str(tmp_path / name)
    argv = [*DRAG, "--model", model_path, *[x for kv in out.items() for x in kv]]
    assert main(argv) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "final.png").exists()


def test_render_refuses_a_suffix_pillow_cannot_write_before_loading(tmp_path, capsys, no_model_load):
    assert main(["render", "--out", str(tmp_path / "x.nope")]) == 2
    assert "--out: name the image" in one_error_line(capsys)


@pytest.mark.parametrize("handles,targets,message", [
    ("1,1;2,2", "3,3", "give one --targets point per --handles point: 2 handles, 1 targets"),
    ("1,1", "3,3;4,4", "give one --targets point per --handles point: 1 handles, 2 targets"),
    ("", "3,3", "give at least one handle: --handles"),
])
def test_drag_point_messages_use_the_command_lines_words(model_path, tmp_path, capsys, handles, targets, message):
    rc = main(["drag", "--model", model_path, "--handles", handles, "--targets", targets,
               "--out", str(tmp_path / "x.png")])
    assert rc == 2
    line = one_error_line(capsys)
    assert message in line
    assert "click" not in line.lower() and "pressing Drag" not in line


def test_auto_steps_print_no_nan_loss(tmp_path, capsys, monkeypatch):
    """Auto's predicted steps have no loss: each says 'predicted' instead of 'loss nan'."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["drag", "--model", "toyfaces-64", "--method", "auto", "--handles", "20,30", "--targets", "26,30",
               "--device", "cpu", "--out", str(tmp_path / "a.png"), "--trace", str(tmp_path / "t.json")])
    err = capsys.readouterr().err
    assert rc == 0, err
    steps = [line for line in err.splitlines() if line.startswith("step")]
    assert steps and all("predicted" in line and "nan" not in line for line in steps)
    import json
    trace = json.loads((tmp_path / "t.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the trace"))
    assert all(s["loss"] is None for s in trace["steps"])


@pytest.mark.parametrize("argv,message", [
    (["--out", "nonexistent/e.safetensors"], "--out: the folder"),
    (["--out", "e.pkl"], "--out: name the embedding .safetensors, not 'e.pkl'"),
    (["--out", "e.safetensors", "--preview", "p.bmpx"], "--preview: name the image"),
    (["--out", "e.safetensors", "--seed", "-1"], "--seed: must be a whole number"),
])
def test_invert_checks_its_outputs_before_loading(tmp_path, capsys, no_model_load, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.png").write_bytes(b"")
    assert main(["invert", "--image", "photo.png", *argv]) == 2
    assert message in one_error_line(capsys)


@pytest.mark.parametrize("argv,message", [
    (["render", "--psi", "nan", "--out", "x.png"], "argument --psi: must be a number, got 'nan'"),
    (["render", "--cutoff", "-3", "--out", "x.png"], "argument --cutoff: must be a whole number >= 0, got '-3'"),
    ([*DRAG, "--psi", "inf", "--out", "x.png"], "argument --psi: must be a number, got 'inf'"),
    (["experiment", "landmarks", "--pairs", "0"], "argument --pairs: must be a whole number >= 1, got '0'"),
    (["quality", "--pairs", "-2"], "argument --pairs: must be a whole number >= 1"),
    (["quality", "--success-px", "0"], "argument --success-px: must be a number > 0"),
    (["experiment", "decay", "--frame-every", "0"], "argument --frame-every: must be a whole number >= 1"),
    (["invert", "--image", "p.png", "--out", "e.safetensors", "--steps-w", "-1"], "--steps-w: must be a whole number"),
])
def test_numbers_out_of_their_range_are_refused_while_parsing(capsys, no_model_load, argv, message):
    """`experiment --pairs 0` ran the default 100 pairs; `render --psi nan` wrote a garbage image."""
    assert main(argv) == 2
    assert message in one_error_line(capsys)
