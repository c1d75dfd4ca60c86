"""Fréchet Inception Distance between two sets of images.

The distance itself is ours (`frechet_distance`, eigen-based, real and stable for the
rank-deficient covariances of small sets). The features are torch-fidelity's InceptionV3
(the TensorFlow FID network, bit-compatible with the reference implementation), whose
weights torch.hub fetches on first use into its cache. torch-fidelity's package import
pulls in torchvision, which does not import beside our CPU torch build; its Inception
module needs only torch, so we load that module without the package's __init__.
Offline with no cached weights, `fid` returns "FID unavailable: <why>" instead of a number.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .detectors import INSTALL_HINT

FeatureFn = Callable[[torch.Tensor], torch.Tensor]  # images [B, 3, H, W] uint8 -> features [B, D] float
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # the name torch-fidelity's URL ends in


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) for Gaussians N(mu, S) of dimension D.

    mu: [D]; sigma: [D, D] symmetric positive semi-definite. The square root of the symmetric
    S1^1/2 S2 S1^1/2 has the same trace as (S1 S2)^1/2 and comes from eigh, so it stays real.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    assert mu1.shape == mu2.shape and sigma1.shape == sigma2.shape == mu1.shape * 2, (mu1.shape, sigma1.shape)
    vals, vecs = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T                 # S1^1/2
    middle = root1 @ sigma2 @ root1
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root)


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (unbiased, as the reference FID) of features [N, D]."""
    assert features.ndim == 2 and features.shape[0] >= 2, features.shape
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


@dataclasses.dataclass
class FidResult:
    """A FID, or why there is none."""
    value: float | None
    reason: str = ""   # set when value is None: "FID unavailable: ..."


def _torch_fidelity_inception_module() -> types.ModuleType:
    """torch_fidelity.feature_extractor_inceptionv3, imported without running the package's __init__."""
    if "torch_fidelity" not in sys.modules:
        spec = importlib.util.find_spec("torch_fidelity")
        if spec is None:
            raise ImportError(f"torch-fidelity is not installed ({INSTALL_HINT})")
        try:
            importlib.import_module("torch_fidelity")
        except ImportError:  # its __init__ needs torchvision; the Inception module does not
            sys.modules.pop("torch_fidelity", None)
            package = types.ModuleType("torch_fidelity")
            package.__path__ = list(spec.submodule_search_locations)
            sys.modules["torch_fidelity"] = package
    return importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")


def inception_features(device: torch.device | str = "cpu", weights: str | os.PathLike | None = None) -> FeatureFn:
    """The 2048-d pool features of the FID InceptionV3 as a function of uint8 images [B, 3, H, W].

    weights: a local copy of torch-fidelity's weights file; None fetches it on first use into
    torch.hub's cache. Offline (HF_HUB_OFFLINE=1 or no network) and not cached: raises OSError.
    """
    module = _torch_fidelity_inception_module()
    if weights is None:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
        if cached.is_file():
            weights = cached
        elif os.environ.get("HF_HUB_OFFLINE") == "1":
            raise OSError(f"offline (HF_HUB_OFFLINE=1) and the Inception weights are not cached at {cached}")
    try:
        net = module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                 feature_extractor_weights_path=None if weights is None else str(weights))
    except Exception as e:  # urllib's URLError and HTTPError, or a damaged download
        raise OSError(f"the Inception weights could not be fetched ({type(e).__name__}: {e})") from None
    net = net.to(device)

    def features(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(images.to(device))[0]

    return features


def fid(images_a: Sequence[np.ndarray], images_b: Sequence[np.ndarray], features: FeatureFn | None = None,
        device: torch.device | str = "cpu", batch: int = 32) -> FidResult:
    """FID between two image sets ([H, W, 3] uint8 each, at least 2 per set).

    features: an image -> feature function (tests inject a small one); None = the FID InceptionV3,
    and when its weights cannot be had the result says why instead of failing.
    """
    if min(len(images_a), len(images_b)) < 2:
        return FidResult(None, "FID unavailable: needs at least 2 images per set")
    if features is None:
        try:
            features = inception_features(device)
        except (ImportError, OSError) as e:
            return FidResult(None, f"FID unavailable: {e}")

    def embed(images: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.stack(images[i:i + batch])).permute(0, 3, 1, 2).contiguous()  # [B, 3, H, W]
            out.append(features(x).double().cpu().numpy())
        return np.concatenate(out)

    return FidResult(frechet_distance(*statistics(embed(images_a)), *statistics(embed(images_b))))
