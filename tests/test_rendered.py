"""The kept feature maps of rendered pictures (`draggan.rendered`): exact, found only for the same picture, bounded,
and what spares a learned drag from a picture on screen one generator pass."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from draggan.config import DragConfig, DragJob
from draggan.editor import Editor
from draggan.experiments.workbench import BenchSpec, load_bench, seed_latent
from draggan.methods import run_drag
from draggan.rendered import KEPT, RenderedFeatures
from stylegan2.networks import image_to_uint8
from stylegan2.testing import tiny_generator


@pytest.fixture(scope="module")
def toy():
    return load_bench(BenchSpec("toyfaces-64", "cpu", "toy"))


@pytest.fixture(autouse=True)
def empty_store():
    KEPT.clear()
    yield
    KEPT.clear()


def counted_features(G, monkeypatch) -> list[tuple[int, torch.Tensor]]:
    """Record (stop, latent) of every G.synthesis.features call."""
    calls, features = [], G.synthesis.features

    def spy(ws, stop=None, *args, **kwargs):
        calls.append((stop, ws.detach().clone()))
        return features(ws, stop, *args, **kwargs)
    monkeypatch.setattr(G.synthesis, "features", spy)
    return calls


def test_render_is_the_synthesis_image_and_keeps_the_maps():
    G = tiny_generator(resolution=32, channels=16, w_dim=32, seed=1)
    store = RenderedFeatures()
    ws = seed_latent(G, 3)
    image = store.render(G, ws, "const", 3)
    with torch.no_grad():
        assert np.array_equal(image, image_to_uint8(G.synthesis(ws, noise_mode="const")))
        want = G.synthesis.features(ws, stop=3, noise_mode="const")
    got = store.get(G, ws, "const", 3)
    assert got is not None and len(got) == 3 and all(torch.equal(a, b) for a, b in zip(got, want))
    assert len(store.get(G, ws, "const", 2)) == 2                     # fewer blocks: a prefix of the kept ones


def test_a_map_is_found_only_for_the_same_picture():
    G = tiny_generator(resolution=32, channels=16, w_dim=32, seed=1)
    store = RenderedFeatures()
    ws = seed_latent(G, 3)
    store.render(G, ws, "const", 3)
    nudged = ws.clone()
    nudged[0, 0, 0] = torch.nextafter(nudged[0, 0, 0], torch.tensor(float("inf")))
    assert store.get(G, nudged, "const", 3) is None                   # one ulp away: another picture
    assert store.get(G, ws, "none", 3) is None                        # another noise mode
    assert store.get(G, ws, "const", 4) is None                       # deeper than kept
    assert store.get(copy.deepcopy(G), ws, "const", 3) is None        # another generator, same weights
    assert store.get(G, ws, "const", 3) is not None
    store.render(G, ws, "random", 3)
    assert store.get(G, ws, "random", 3) is None                      # random noise: never kept
    with torch.no_grad():
        G.synthesis.blocks[0].conv1.weight.add_(0.0)                  # an in-place change (a PTI step): stale
    assert store.get(G, ws, "const", 3) is None
    assert len(store) == 0


def test_the_store_is_bounded_oldest_first():
    G = tiny_generator(resolution=32, channels=16, w_dim=32, seed=1)
    store = RenderedFeatures(max_entries=3)
    latents = [seed_latent(G, s) for s in range(5)]
    for ws in latents:
        store.render(G, ws, "const", 2)
    assert len(store) == 3
    assert [store.get(G, ws, "const", 2) is not None for ws in latents] == [False, False, True, True, True]
    one = store.nbytes // 3
    small = RenderedFeatures(max_bytes=2 * one)
    for ws in latents:
        small.render(G, ws, "const", 2)
    assert len(small) == 2 and small.nbytes <= 2 * one
    small.render(G, latents[0], "const", 4)                          # more than the whole budget: not kept
    assert small.get(G, latents[0], "const", 1) is None


@pytest.mark.parametrize("method", ["auto", "auto-refine"])
def test_a_learned_drag_from_a_kept_picture_is_the_same_drag_one_pass_shorter(toy, method, monkeypatch):
    G, block = toy.G, toy.auto.cfg.feature_block
    ws = seed_latent(G, 11)
    handles, targets = [[30.0, 26.0], [36.0, 40.0]], [[33.0, 24.0], [35.0, 44.0]]

    def drag():
        frames = list(run_drag(method, DragJob(G, ws, handles, targets, DragConfig.for_model("toyfaces-64"),
                                               auto=toy.auto)))
        return frames[-1]
    calls = counted_features(G, monkeypatch)
    cold = drag()
    cold_calls = list(calls)
    calls.clear()
    KEPT.render(G, ws, "const", block)
    calls.clear()
    warm = drag()
    assert cold_calls[0][0] == block and torch.equal(cold_calls[0][1], ws)
    assert len(calls) == len(cold_calls) - 1 and not any(torch.equal(w, ws) for _, w in calls)  # the start pass gone
    assert torch.equal(warm.latent, cold.latent) and np.array_equal(warm.image, cold.image)
    assert warm.handles_xy == cold.handles_xy


def test_the_editor_keeps_its_picture_and_each_auto_drag_end(toy, monkeypatch):
    editor = Editor.from_seed(toy.G, 5, auto=toy.auto)
    editor.image()
    calls = counted_features(toy.G, monkeypatch)
    cfg = DragConfig.for_model("toyfaces-64")
    for handles, targets in (([[30.0, 26.0]], [[33.0, 24.0]]), ([[33.0, 24.0]], [[35.0, 27.0]])):
        calls.clear()
        start = editor.latent.clone()
        *_, last = editor.drag(handles, targets, cfg, method="auto")
        assert last.done and not torch.equal(editor.latent, start)
        # the generator ran for the frames the drag showed, never for its start picture (the first drag's: the
        # editor's own picture; the second's: the first drag's last frame)
        assert calls and not any(torch.equal(w, start) for _, w in calls)
    # an editor without a predictor keeps nothing
    Editor.from_seed(toy.G, 6).image()
    assert KEPT.get(toy.G, seed_latent(toy.G, 6), "const", 1) is None
