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
