"""The Fréchet distance on Gaussians with known answers, and the FID wrapper with a stand-in feature extractor."""
import numpy as np
import pytest
import torch

from draggan.experiments.fid import fid, frechet_distance, statistics


def test_diagonal_covariances_match_the_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_a_shifted_mean_adds_its_squared_length_and_rotation_does_not_matter():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))                      # a random rotation
    a, b = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T               # same eigenvectors, full matrices
    shift = np.array([3.0, 0, 0, 4.0, 0])
    assert frechet_distance(np.zeros(5), s1, np.zeros(5), s1) == pytest.approx(0, abs=1e-9)
    assert frechet_distance(np.zeros(5), s1, shift, s1) == pytest.approx(25.0, rel=1e-9)
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(np.zeros(5), s1, np.zeros(5), s2) == pytest.approx(expected, rel=1e-9)


def test_agrees_with_the_scipy_sqrtm_form_on_random_covariances():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    s1, s2 = x @ x.T + 0.1 * np.eye(4), y @ y.T + 0.1 * np.eye(4)   # do not commute
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)


def _solid(red: int) -> np.ndarray:
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0] = red
    return img


def test_fid_wrapper_with_a_stand_in_extractor_gives_the_known_value():
    def red_mean(x: torch.Tensor) -> torch.Tensor:              # [B, 3, H, W] uint8 -> [B, 1]
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        return x[:, :1].float().mean(dim=(2, 3))

    # Set A: red 0 and 2 (mean 1, variance 2); set B: 10 and 14 (mean 12, variance 8).
    # FID = 11^2 + 2 + 8 - 2 sqrt(2 * 8) = 123.
    result = fid([_solid(0), _solid(2)], [_solid(10), _solid(14)], features=red_mean, batch=1)
    assert result.value == pytest.approx(123.0, rel=1e-9) and result.reason == ""
    mu, sigma = statistics(np.array([[0.0], [2.0]]))
    assert mu[0] == 1.0 and sigma == pytest.approx(2.0)


def test_fid_without_weights_offline_says_why_and_does_not_raise(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    result = fid([_solid(0), _solid(2)], [_solid(10), _solid(14)])
    assert result.value is None and result.reason.startswith("FID unavailable: ")
    assert fid([_solid(0)], [_solid(1), _solid(2)], features=lambda x: x.float()).reason.startswith("FID unavailable")
