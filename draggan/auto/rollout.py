"""Inference: roll the predictor out n steps from the user's handles and targets."""
from __future__ import annotations

import torch

from draggan.config import DragInputError
from stylegan2.networks import Generator

from .lean import LeanRollout, encode
from .networks import AutoDragModel


def points_tensor(points_xy: list[list[float]] | torch.Tensor, device: torch.device) -> torch.Tensor:
    """(x, y) pixel list -> [1, K, 2] float32 tensor."""
    return torch.as_tensor(points_xy, dtype=torch.float32, device=device).reshape(1, -1, 2)


def rollout(model: AutoDragModel, G: Generator, w0: torch.Tensor, handles_xy: list[list[float]] | torch.Tensor,
            targets_xy: list[list[float]] | torch.Tensor, *, n_steps: int | None = None,
            use_regularizer: bool = True, noise_mode: str = "const",
            start_features: list[torch.Tensor] | None = None, lean: bool = True) -> list[torch.Tensor]:
    """Predict the drag's latents ŵ1..ŵn autoregressively, each (optionally) through the regularizer.

    w0: [1, num_ws, w_dim] on G's device; handles_xy, targets_xy: K (x, y) image pixels, 1 <= K <=
    cfg.max_points. n_steps: None = the model's n (at most that). start_features: the feature maps of w0's
    blocks 1..k (`G.synthesis.features(w0, stop=k)`) when the caller has them: F0 is read from there if
    k >= cfg.feature_block instead of running the generator again. lean: compute each step with `LeanRollout`
    (the same numbers as the modules, a key/value cache instead of re-running the prefix; an AutoDragModel
    only); False: through the modules (`model.predict`, `model.regularize`). Returns n tensors [1, num_ws, w_dim].
    """
    with torch.inference_mode():  # no autograd bookkeeping per call (the rollout is a few hundred small ones)
        latents = _rollout(model, G, w0, handles_xy, targets_xy, n_steps, use_regularizer, noise_mode,
                           start_features, lean)
    return [w.clone() for w in latents]  # ordinary tensors again: a drag may go on from them under autograd


def _rollout(model: AutoDragModel, G: Generator, w0: torch.Tensor, handles_xy, targets_xy, n_steps: int | None,
             use_regularizer: bool, noise_mode: str, start_features: list[torch.Tensor] | None,
             lean: bool) -> list[torch.Tensor]:
    cfg = model.cfg
    n = cfg.n_steps if n_steps is None else n_steps
    if not 1 <= n <= cfg.n_steps:
        raise DragInputError(f"Auto DragGAN predicts 1 to {cfg.n_steps} steps; asked for {n}")
    device = w0.device
    h, t = points_tensor(handles_xy, device), points_tensor(targets_xy, device)
    if h.shape != t.shape or not 1 <= h.shape[1] <= cfg.max_points:
        raise DragInputError(f"Auto DragGAN needs 1 to {cfg.max_points} handles, each with a target; got "
                             f"{h.shape[1]} handles and {t.shape[1]} targets")
    assert w0.shape == (1, model.num_ws, model.w_dim), w0.shape
    if start_features is not None and len(start_features) >= cfg.feature_block:
        feat0 = start_features[cfg.feature_block - 1]                                # [1, C, s, s]
    else:
        feat0 = G.synthesis.features(w0, stop=cfg.feature_block, noise_mode=noise_mode)[-1]
    mask = torch.ones(1, h.shape[1], dtype=torch.bool, device=device)
    seq = [w0]
    if lean and isinstance(model, AutoDragModel):
        memory, pad = encode(model.predictor, feat0, h, t, mask)
        steps = LeanRollout(model, memory, pad, w0)
        predict, regularize = (lambda: steps.predict(seq[-1])), steps.regularize
    else:
        memory, pad = model.predictor.encode(feat0, h, t, mask)
        predict = lambda: model.predict(memory, pad, torch.stack(seq, dim=1))[:, -1]  # noqa: E731
        regularize = model.regularize
    for _ in range(n):
        nxt = predict()                                                            # [1, num_ws, w_dim]
        seq.append(regularize(nxt) if use_regularizer else nxt)
    return seq[1:]
