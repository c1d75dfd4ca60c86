"""Auto DragGAN: regularizer, predictor, training resume and the model file, on a tiny generator."""
from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from draggan.auto import AutoConfig, AutoConfigError, AutoModelError, load_auto_model, rollout, save_auto_model
from draggan.auto.data import make_batch
from draggan.auto.train import AutoTrainer
from draggan.config import DragInputError
from stylegan2.errors import UserError
from stylegan2.testing import tiny_generator

# A tiny model for a 32-px generator (4 blocks, num_ws 8): block 3 features (16x16), thresholds 0 so
# every consistent flow point of the random generator's images counts.
TINY = dict(d_model=32, heads=2, ff_mult=2, reg_enc_layers=1, reg_dec_layers=1, pred_enc_layers=1,
            pred_dec_layers=1, feature_block=3, feat_stride=4, patch_channels=4, patch=3, train_points=4,
            grid_stride=4, seq_threshold=0.0, step_threshold=0.0, batch=4, n_steps=3, step_lambda=0.5,
            stage1_steps=3, stage2_steps=100, lr_stage1=3e-3, lr_reg=1e-3, lr_pred=3e-3, lr_pred_min=1e-4,
            cosine_period=100, warmup_steps=0)


@pytest.fixture(scope="module")
def G():
    torch.set_num_threads(1)
    return tiny_generator(resolution=32, channels=16, w_dim=32, seed=0)


def tiny_cfg(G, **overrides) -> AutoConfig:
    return AutoConfig(**dict(TINY, rows=min(6, G.num_ws), **overrides))


def test_regularizer_restores_corrupted_latents(G):
    trainer = AutoTrainer(tiny_cfg(G, stage1_steps=100), G)
    held_out = 10**6  # a step the training never draws

    def errors() -> tuple[float, float]:
        with torch.no_grad():
            return trainer.regularizer_loss(held_out, 256).item()
    before = errors()
    for _ in range(100):
        assert trainer.train_step().keys() == {"reg"}
    after = errors()
    # The untrained regularizer is the identity (zero head): `before` is the corruption itself.
    assert after < 0.85 * before, (before, after)


@pytest.mark.parametrize("self_feed", [0.0, 1.0])
def test_trained_predictor_moves_handles_towards_targets(G, self_feed):
    """By construction of the pseudo drags, a target is where its handle goes when the latent becomes w_n:
    a predictor that learned these drags brings the rolled-out latent (regularizer included) towards w_n."""
    trainer = AutoTrainer(tiny_cfg(G, stage1_steps=0, self_feed=self_feed), G)
    batch = make_batch(G, trainer.cfg, step=7)
    assert batch.point_mask.any(dim=1).all()  # every sample has at least one pair
    rows = trainer.cfg.rows
    w0, w_n = batch.w_seq[:, 0, :rows], batch.w_seq[:, -1, :rows]

    def distance_to_w_n() -> float:
        trainer.model.eval()
        outs = []
        for b in range(len(batch.w_seq)):
            k = int(batch.point_mask[b].sum())
            h, t = batch.points_xy[b, 0, :k], batch.points_xy[b, -1, :k]
            outs.append(rollout(trainer.model, G, batch.w_seq[b, :1], h, t)[-1])
        trainer.model.train()
        return (torch.cat(outs)[:, :rows] - w_n).abs().mean().item()

    start = (w0 - w_n).abs().mean().item()
    assert distance_to_w_n() > 0.95 * start  # untrained: (almost) no motion
    first = trainer.train_step(batch)
    for _ in range(40):
        last = trainer.train_step(batch)
    assert last["pred"] < 0.8 * first["pred"] and last["drag"] < first["drag"]
    assert distance_to_w_n() < 0.7 * start


def test_rollout_accepts_1_to_68_points_and_refuses_others(G):
    trainer = AutoTrainer(tiny_cfg(G), G)
    model = trainer.model.eval()
    w0 = G.mapping(torch.randn(1, G.z_dim))
    for k in (1, 68):
        xy = torch.rand(k, 2) * 31
        out = rollout(model, G, w0, xy.tolist(), (xy + 2).tolist())
        assert len(out) == trainer.cfg.n_steps and all(o.shape == w0.shape for o in out)
        # Rows past `rows` never move (identity and colour stay).
        assert torch.equal(out[-1][:, trainer.cfg.rows:], w0[:, trainer.cfg.rows:])
    assert len(rollout(model, G, w0, [[3, 4]], [[9, 9]], n_steps=1)) == 1
    with pytest.raises(DragInputError):
        rollout(model, G, w0, [[1, 1]] * 69, [[2, 2]] * 69)
    with pytest.raises(DragInputError):
        rollout(model, G, w0, [[1, 1], [3, 3]], [[2, 2]])
    with pytest.raises(DragInputError):
        rollout(model, G, w0, [[1, 1]], [[2, 2]], n_steps=trainer.cfg.n_steps + 1)


def test_resume_is_exact(G, tmp_path):
    cfg = tiny_cfg(G, stage1_steps=2)
    straight = AutoTrainer(cfg, G)
    for _ in range(5):
        straight.train_step()
    first = AutoTrainer(cfg, G)
    for _ in range(3):  # crosses into stage 2 before saving, so both optimizers carry state
        first.train_step()
    first.save(tmp_path / "checkpoint.pt")
    resumed = AutoTrainer.load(tmp_path / "checkpoint.pt", G)
    assert resumed.step_count == 3
    for _ in range(2):
        resumed.train_step()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["predictor.head.2.weight"], first.model.state_dict()["predictor.head.2.weight"])


def test_model_file_roundtrip_and_other_generator_refused(G, tmp_path):
    trainer = AutoTrainer(tiny_cfg(G), G, spec="tiny-a")
    for _ in range(4):
        trainer.train_step()
    path = save_auto_model(tmp_path / "auto.safetensors", trainer.model, G, "tiny-a")
    loaded = load_auto_model(path, G)
    assert loaded.spec == "tiny-a" and loaded.cfg == trainer.cfg
    w0 = G.mapping(torch.randn(1, G.z_dim))
    trainer.model.eval()
    assert torch.equal(rollout(loaded, G, w0, [[5, 6]], [[9, 12]])[-1],
                       rollout(trainer.model, G, w0, [[5, 6]], [[9, 12]])[-1])
    other = tiny_generator(resolution=32, channels=16, w_dim=32, seed=1)
    with pytest.raises(AutoModelError, match="another generator.*tiny-a") as err:
        load_auto_model(path, other)
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)


def _write(path, tensors, config: dict | str, G, **meta):
    from stylegan2.checkpoints import generator_hash
    from draggan.auto.files import generator_shape
    metadata = {"format": "draggan-auto-v1", "base_sha256": generator_hash(G), "spec": "x",
                "auto_config": config if isinstance(config, str) else json.dumps(config),
                "shape": json.dumps(generator_shape(G, TINY["feature_block"]), sort_keys=True)}
    save_file(tensors, str(path), metadata={**metadata, **meta})
    return path


def test_hostile_and_odd_files_refused(G, tmp_path):
    good = AutoTrainer(tiny_cfg(G), G).model
    tensors = {k: v.contiguous() for k, v in good.state_dict().items()}
    cfg = json.loads(good.cfg.to_json())
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(Payload()))
    cases = {
        "evil.safetensors": None,  # a pickle under our extension: never unpickled
        "garbage.safetensors": None,
        "huge.safetensors": lambda p: _write(p, tensors, {**cfg, "d_model": 10**6}, G),
        "wrong_keys.safetensors": lambda p: _write(p, tensors, {**cfg, "extra": 1}, G),
        "not_json.safetensors": lambda p: _write(p, tensors, "{", G),
        "not_a_dict.safetensors": lambda p: _write(p, tensors, "[1, 2]", G),
        "wrong_type.safetensors": lambda p: _write(p, tensors, {**cfg, "d_model": "32"}, G),
        "float_for_int.safetensors": lambda p: _write(p, tensors, {**cfg, "rows": 6.5}, G),
        "bad_shape.safetensors": lambda p: _write(p, {**tensors, "w_std": torch.ones(7)}, cfg, G),
        "missing.safetensors": lambda p: _write(p, {k: v for k, v in tensors.items() if k != "w_std"}, cfg, G),
        "not_ours.safetensors": lambda p: _write(p, tensors, cfg, G, format="draggan-generator"),
        "nan.safetensors": lambda p: _write(p, {**tensors, "w_std": torch.full_like(tensors["w_std"], float("nan"))},
                                            cfg, G),
    }
    (tmp_path / "garbage.safetensors").write_bytes(b"\xff" * 64)
    for name, make in cases.items():
        path = tmp_path / name
        if make is not None:
            make(path)
        with pytest.raises(UserError) as err:
            load_auto_model(path, G)
        assert isinstance(err.value, (AutoModelError, AutoConfigError)) and "\n" not in str(err.value), name
    assert not marker.exists()
    older = {k: v for k, v in cfg.items() if k != "self_feed"}  # a file from before the field existed
    assert load_auto_model(_write(tmp_path / "older.safetensors", tensors, older, G), G).cfg.self_feed == 0.0
    with pytest.raises(AutoModelError, match="train-auto"):
        load_auto_model(tmp_path / "absent.safetensors", G)


def test_train_auto_command_runs_resumes_and_exports(G, tmp_path, capsys):
    from draggan.__main__ import main
    from stylegan2.checkpoints import save_generator

    model_path = str(save_generator(G, tmp_path / "tiny.safetensors"))
    out, export = tmp_path / "run", tmp_path / "auto.safetensors"
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    common = ["train-auto", "--model", model_path, "--out", str(out), "--export", str(export), "--device", "cpu"]
    assert main([*common, "--resume", "--steps", "1"]) == 2  # nothing to resume
    assert "no " in capsys.readouterr().err
    assert main([*common, *sets, "--set", "stage1_steps=2", "--steps", "3"]) == 0
    first = load_auto_model(export, G)
    assert main([*common, *sets, "--steps", "3"]) == 2  # would overwrite the run
    assert main([*common, "--resume", "--steps", "4"]) == 0
    log = (out / "log.txt").read_text()
    assert "start at step 0/102" in log and "resume at step 3/102" in log and "stopped at step 4/102" in log
    assert "handle-target distance" in log and len(list(out.glob("drags-*.png"))) == 2
    second = load_auto_model(export, G)
    assert first.cfg == second.cfg and first.cfg.stage1_steps == 2
    head = "predictor.head.2.weight"
    assert not torch.equal(first.state_dict()[head], second.state_dict()[head])


def test_rollout_feeds_each_regularized_prediction_back_unless_told_not_to(G):
    """Each step predicts from the sequence so far, whose last latent went through the regularizer."""
    from types import SimpleNamespace

    class Stub:
        cfg = SimpleNamespace(n_steps=3, max_points=4, feature_block=2)
        num_ws, w_dim = G.num_ws, G.w_dim
        predictor = SimpleNamespace(encode=lambda feat, h, t, mask: (None, None))

        def predict(self, memory, pad, seq):      # [1, m, num_ws, w_dim] -> the next latent of each prefix
            return seq + 1.0

        def regularize(self, w):
            return w * 2.0

    w0 = torch.zeros(1, G.num_ws, G.w_dim)
    reg = rollout(Stub(), G, w0, [[1, 1]], [[3, 3]])
    assert [float(w.mean()) for w in reg] == [2.0, 6.0, 14.0]   # (0+1)*2, (2+1)*2, (6+1)*2
    plain = rollout(Stub(), G, w0, [[1, 1]], [[3, 3]], use_regularizer=False, n_steps=2)
    assert [float(w.mean()) for w in plain] == [1.0, 2.0]


# -- the learned drag methods: generator passes per edit, outputs as computed the long way -----------------

def _moving_model(G):
    """A predictor whose untrained (zero) heads are replaced by random ones: every step moves the latent."""
    model = AutoTrainer(tiny_cfg(G), G).model.eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(5)
    for head in (model.predictor.head[2], model.regularizer.head):
        head.weight.copy_(0.05 * torch.randn(head.weight.shape, generator=gen))
    return model


@pytest.mark.parametrize("frame_every", [1, 2, 1000])
@pytest.mark.parametrize("feature_block", [3, 2])  # the predictor's block (F0 shared) and an earlier one
def test_auto_frames_are_the_rollouts_latents_drawn_and_tracked_the_long_way(G, frame_every, feature_block):
    """Each frame of `auto`: the rollout's latent (F0 computed on its own), the whole generator's image of it,
    and the handles tracked on a fresh pass with the start image's reference features. The frames shown are
    those at every frame_every-th predicted step, and the last."""
    from draggan import engine, methods
    from draggan.config import DragConfig, DragJob

    model = _moving_model(G)
    w0 = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(3)), None, truncation_psi=0.7)
    handles, targets = [[10.0, 12.0], [20.0, 9.0]], [[14.0, 15.0], [17.0, 11.0]]
    cfg = DragConfig(feature_block=feature_block, r2=64, frame_every=frame_every)
    frames = list(methods.run_drag("auto", DragJob(G, w0, handles, targets, cfg, auto=model)))
    expected = rollout(model, G, w0, handles, targets)
    n = len(expected)
    assert [f.step for f in frames] == [i for i in range(1, n + 1) if i % frame_every == 0 or i == n] + [n]
    refs = engine.reference_features(G, w0, handles, feature_block, "const")
    start = engine.rowcol(handles, "cpu")
    for frame in frames:
        ws = expected[frame.step - 1]
        assert torch.allclose(frame.latent, ws, atol=1e-6)
        assert not torch.allclose(ws, w0, atol=1e-3)  # the latent moved: a wrong step index would show
        assert (frame.image.astype(int) - engine.render(G, ws, "const").astype(int)).__abs__().max() <= 1
        feat = G.synthesis.features(ws, stop=feature_block)[-1]
        window = engine.square_offsets(cfg.radius_px(cfg.r2, 32) + 5, "cpu")
        points = engine.track_points(feat, start, refs, window, cfg.tracking, 32)
        assert sum(frame.handles_xy, []) == pytest.approx(sum(engine.xy(points), []), abs=1e-4)
    assert frames[-1].done


def _count_passes(G, monkeypatch) -> dict[str, int]:
    """Counts of generator passes: to a feature block (`features`), from features on, and whole images."""
    counts = {"features": 0, "from_features": 0, "whole": 0}
    synthesis = G.synthesis
    for name, key in (("features", "features"), ("image_from_features", "from_features"), ("forward", "whole")):
        real = getattr(synthesis, name)

        def counted(*a, _real=real, _key=key, **k):
            counts[_key] += 1
            return _real(*a, **k)
        monkeypatch.setattr(synthesis, name, counted)
    return counts


def test_an_auto_edit_runs_the_generator_once_to_the_block_for_the_start_and_once_for_the_last_frame(
        G, monkeypatch):
    """One frame shown (the last): the start's features serve the reference features and the predictor's F0;
    the last latent's features serve its tracking and then finish its image."""
    from draggan import methods
    from draggan.config import DragConfig, DragJob

    model = _moving_model(G)
    w0 = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(3)), None, truncation_psi=0.7)
    counts = _count_passes(G, monkeypatch)
    job = DragJob(G, w0, [[10.0, 12.0]], [[14.0, 15.0]], DragConfig(feature_block=3, frame_every=1000), auto=model)
    frames = list(methods.run_drag("auto", job))
    assert frames[-1].done and frames[-1].step == model.cfg.n_steps
    assert counts == {"features": 2, "from_features": 1, "whole": 0}


def test_auto_refine_draws_the_handover_latent_once(G, monkeypatch):
    """The last predicted latent is the optimizer's first: auto-refine does not draw it before handing over
    (the optimizer's first frame does), nor compute the start's features twice."""
    from draggan import methods
    from draggan.config import DragConfig, DragJob

    model = _moving_model(G)
    w0 = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(3)), None, truncation_psi=0.7)
    counts = _count_passes(G, monkeypatch)
    cfg = DragConfig(feature_block=3, frame_every=1000, max_steps=1, local="off")
    frames = list(methods.run_drag("auto-refine", DragJob(G, w0, [[10.0, 12.0]], [[14.0, 15.0]], cfg, auto=model)))
    n = model.cfg.n_steps
    assert [f.step for f in frames] == [n, n + 1] and frames[-1].done
    # start (1), last prediction tracked (1), the optimizer's step (1); its frame, then the final image
    assert counts == {"features": 3, "from_features": 1, "whole": 1}
