"""Original TensorFlow StyleGAN2 pickles (config-e/f, `*-config-f.pkl`), converted without TensorFlow.

Such a file is a pickled tuple `(G, D, Gs)` of `dnnlib.tflib.network.Network` objects. The safe
unpickler (`stylegan2.safe_pickle`) records each one as a `PickledObject` whose state holds
`version`, `name`, `static_kwargs` (the build function's keyword arguments), `components` (name ->
Network: G has `synthesis` and `mapping`), `build_module_src` (the TensorFlow source: never run,
never read) and `variables`, a list of (name, value) with float numpy arrays and, for 0-d variables,
numpy float32 scalars. Nothing else comes through the unpickler.

`generator_from_tf_records` turns `Gs` (the moving average, as NVIDIA's `legacy.py` turns it into
`G_ema`; else `G`) into our `Generator`:
- the config from `static_kwargs` by `_KWARGS` (`channel_base` = 2 * `fmap_base`, `conv_clamp` None,
  `num_fp16_res` 0, as legacy.py); an unknown keyword, a `version` below 4, or a setting our
  network does not compute gets one line, never a guess;
- every tensor from one TF variable by `tf_sources` (the reference README's mapping: dense and
  modulation weights transposed, conv kernels [kh, kw, in, out] -> [out, in, kh, kw] and flipped
  for the up-sampling `Conv0_up`, `mod_bias` + 1, `dlatent_avg` of the top-level network ->
  `mapping.w_avg`, `noise{k}` -> `noise_const`); the FIR `resample_filter` buffers are not read;
- each variable's shape checked against what the validated config implies before it is converted,
  and the generator built only once everything fits. A missing variable is named; variables of
  another architecture (`ToRGB_lod*` of 'orig', `Skip` of a 'resnet' G) are refused by name; other
  extra variables are ignored, as legacy.py ignores them (e.g. `mapping/LabelConcat/weight`).
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

import numpy as np
import torch

from .errors import UnsupportedCheckpointError
from .networks import Generator, GeneratorConfig
from .records import PickledObject, WalkBudget, brief_value, config_from_dict, shorten

NETWORK_CLASS = "dnnlib.tflib.network.Network"
MIN_VERSION = 4        # legacy.py refuses older pickles
MAX_COMPONENT_DEPTH = 4  # Gs -> synthesis / mapping is depth 1
MAX_VARIABLES = 4096   # a 1024-px config-f Gs has about 300

# TF static kwarg -> our config key (None: checked but not stored) and legacy.py's default.
_KWARGS: dict[str, tuple[str | None, Any]] = {
    "latent_size": ("z_dim", 512), "label_size": ("c_dim", 0), "dlatent_size": ("w_dim", 512),
    "resolution": ("img_resolution", 1024), "num_channels": ("img_channels", 3),
    "fmap_base": ("channel_base", 16384), "fmap_max": ("channel_max", 512),
    "num_fp16_res": ("num_fp16_res", 0), "conv_clamp": ("conv_clamp", None),
    "mapping_layers": ("mapping_layers", 8), "mapping_lrmul": ("mapping_lr_multiplier", 0.01),
    "architecture": (None, "skip"), "resample_kernel": (None, [1, 3, 3, 1]), "use_noise": (None, True),
    "nonlinearity": (None, "lrelu"), "mapping_nonlinearity": (None, "lrelu"),
    "label_fmaps": (None, None), "mapping_fmaps": (None, None), "w_avg_beta": (None, 0.995),
}
_IGNORED_KWARGS = {"truncation_psi", "truncation_cutoff", "style_mixing_prob", "structure", "conditioning",
                   "fused_modconv"}


def is_tf_pickle(data: Any) -> bool:
    """Whether `safe_load`'s result is a TensorFlow network pickle: a tuple (G, D, Gs) of Network records."""
    return (isinstance(data, (tuple, list)) and len(data) == 3
            and all(isinstance(x, PickledObject) and x.class_name == NETWORK_CLASS for x in data))


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return list(value) if isinstance(value, (tuple, list)) else value


def tf_config(static_kwargs: Any, where: str) -> GeneratorConfig:
    """Our validated config from a TF network's `static_kwargs`, as legacy.py converts them."""
    if not isinstance(static_kwargs, dict) or not all(isinstance(k, str) for k in static_kwargs):
        raise UnsupportedCheckpointError(f"{where}: static_kwargs is not a dict of names")
    unknown = sorted(set(static_kwargs) - set(_KWARGS) - _IGNORED_KWARGS)
    if unknown:
        raise UnsupportedCheckpointError(
            f"{where}: unknown TensorFlow setting {shorten(unknown[0], 40)!r}; only StyleGAN2 config-e/f "
            "generators are converted (as NVIDIA's legacy.py)")
    values = {k: _plain(static_kwargs.get(k, default)) for k, (_, default) in _KWARGS.items()}
    w_dim = values["dlatent_size"]
    for name in ("label_fmaps", "mapping_fmaps"):  # None means w_dim; only that network is ours
        if values[name] not in (None, w_dim):
            raise UnsupportedCheckpointError(f"{where}: {name}={brief_value(values[name])} is not supported "
                                             "(our mapping network uses w_dim features)")
    for name, (key, default) in _KWARGS.items():
        if key is None and name not in ("label_fmaps", "mapping_fmaps", "w_avg_beta") and values[name] != default:
            raise UnsupportedCheckpointError(f"{where}: {name}={brief_value(values[name])}; only "
                                             f"{default!r} generators (StyleGAN2 config-e/f) are converted")
    fmap_base = values["fmap_base"]
    config = {key: values[name] for name, (key, _) in _KWARGS.items() if key is not None}
    config["channel_base"] = 2 * fmap_base if type(fmap_base) is int else fmap_base
    return config_from_dict(config, where)


# Transforms: (TF shape from our shape, our tensor from the TF array).
_TRANSFORMS: dict[str, tuple[Callable[[tuple], tuple], Callable[[np.ndarray], np.ndarray]]] = {
    "": (lambda s: s, lambda a: a),
    "T": (lambda s: s[::-1], lambda a: a.T),
    "+1": (lambda s: s, lambda a: a + np.float32(1)),
    "[0]": (lambda s: (1, *s), lambda a: a[0]),
    "[0,0]": (lambda s: (1, 1, *s), lambda a: a[0, 0]),
    "conv": (lambda s: (s[2], s[3], s[1], s[0]), lambda a: a.transpose(3, 2, 0, 1)),
    "flip": (lambda s: (s[2], s[3], s[1], s[0]), lambda a: a[::-1, ::-1].transpose(3, 2, 0, 1)),
}


def tf_sources(cfg: GeneratorConfig) -> dict[str, tuple[str, str]]:
    """Our tensor name -> (TF variable name, transform) for every parameter and buffer but the FIR filters."""
    out = {"mapping.w_avg": ("dlatent_avg", "")}
    for i in range(cfg.mapping_layers):
        out |= {f"mapping.fc{i}.weight": (f"mapping/Dense{i}/weight", "T"),
                f"mapping.fc{i}.bias": (f"mapping/Dense{i}/bias", "")}
    if cfg.c_dim:
        out |= {"mapping.embed.weight": ("mapping/LabelEmbed/weight", "T"),
                "mapping.embed.bias": ("mapping/LabelEmbed/bias", "")}
    for log2 in range(2, int(math.log2(cfg.img_resolution)) + 1):
        r = 2 ** log2
        ours, theirs = f"synthesis.b{r}", f"synthesis/{r}x{r}"
        if r == 4:
            out[f"{ours}.const"] = (f"{theirs}/Const/const", "[0]")
            layers = [("conv1", "Conv", "conv", 0)]
        else:
            layers = [("conv0", "Conv0_up", "flip", 2 * log2 - 5), ("conv1", "Conv1", "conv", 2 * log2 - 4)]
        for layer, name, kernel, noise in layers + [("torgb", "ToRGB", "conv", None)]:
            out |= {f"{ours}.{layer}.weight": (f"{theirs}/{name}/weight", kernel),
                    f"{ours}.{layer}.bias": (f"{theirs}/{name}/bias", ""),
                    f"{ours}.{layer}.affine.weight": (f"{theirs}/{name}/mod_weight", "T"),
                    f"{ours}.{layer}.affine.bias": (f"{theirs}/{name}/mod_bias", "+1")}
            if noise is not None:
                out |= {f"{ours}.{layer}.noise_strength": (f"{theirs}/{name}/noise_strength", ""),
                        f"{ours}.{layer}.noise_const": (f"synthesis/noise{noise}", "[0,0]")}
    return out


def tf_variables(net: PickledObject, where: str) -> dict[str, Any]:
    """Every variable of `net` and its components, named as legacy.py names them ('mapping/Dense0/weight')."""
    out: dict[str, Any] = {}
    stack: list[tuple[PickledObject, str, int]] = [(net, "", 0)]
    while stack:
        node, prefix, depth = stack.pop()
        if not isinstance(node, PickledObject) or node.class_name != NETWORK_CLASS:
            raise UnsupportedCheckpointError(f"{where}: component {shorten(prefix.rstrip('/'))!r} is not a Network")
        if depth > MAX_COMPONENT_DEPTH:
            raise UnsupportedCheckpointError(f"{where}: components nest deeper than a StyleGAN2 network's")
        variables, components = node.state.get("variables"), node.state.get("components") or {}
        if not isinstance(variables, (list, tuple)) or not isinstance(components, dict):
            raise UnsupportedCheckpointError(f"{where}: a Network's variables or components are malformed")
        for item in variables:
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
                raise UnsupportedCheckpointError(f"{where}: a variable is not a (name, value) pair")
            out[prefix + item[0]] = item[1]
            if len(out) > MAX_VARIABLES:
                raise UnsupportedCheckpointError(f"{where}: more variables than any StyleGAN2 network has")
        for name, comp in components.items():
            stack.append((comp, f"{prefix}{name}/", depth + 1))
    return out


_OTHER_ARCHITECTURE = [(re.compile(r"(^|/)ToRGB_lod\d+/"), "architecture 'orig' (ToRGB_lod variables)"),
                       (re.compile(r"^synthesis/\d+x\d+/Skip/"), "a 'resnet' generator (Skip variables)")]


def _tensor(name: str, value: Any, transform: str, shape: tuple[int, ...], where: str) -> torch.Tensor:
    """One TF variable as our tensor, its type and shape checked first."""
    if isinstance(value, np.floating):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
        raise UnsupportedCheckpointError(f"{where}: TensorFlow variable {shorten(name, 60)} is a "
                                         f"{type(value).__name__}, not a float array")
    tf_shape, convert = _TRANSFORMS[transform]
    if tuple(value.shape) != tuple(tf_shape(shape)):
        raise UnsupportedCheckpointError(f"{where}: TensorFlow variable {shorten(name, 60)} has shape "
                                         f"{list(value.shape)[:6]}, expected {list(tf_shape(shape))}")
    return torch.from_numpy(np.ascontiguousarray(convert(value.astype(np.float32, copy=False))))


def generator_from_tf_records(data: Any, budget: WalkBudget = WalkBudget()) -> Generator:
    """Our `Generator` from a TF pickle's (G, D, Gs) records: Gs converted as legacy.py converts it."""
    net = data[2]  # Gs: legacy.py makes G_ema of it
    where = f"TensorFlow network {shorten(net.state.get('name', 'Gs'), 20)}"
    version = net.state.get("version")
    if type(version) is not int or version < MIN_VERSION:
        raise UnsupportedCheckpointError(f"{where}: pickle version {brief_value(version)} is older than "
                                         f"{MIN_VERSION}, the oldest NVIDIA's converter reads")
    cfg = tf_config(net.state.get("static_kwargs"), where)
    variables = tf_variables(net, where)
    for name in variables:
        for pattern, what in _OTHER_ARCHITECTURE:
            if pattern.search(name):
                raise UnsupportedCheckpointError(f"{where} is {what}: only StyleGAN2 skip generators (config-e/f) "
                                                 "are converted")
    shapes = cfg.state_shapes()
    state, total = {}, 0
    for ours, (theirs, transform) in tf_sources(cfg).items():
        if theirs not in variables:
            raise UnsupportedCheckpointError(f"{where} has no variable {shorten(theirs, 60)} (for {ours}); "
                                             "not a StyleGAN2 config-e/f generator, or a damaged file")
        state[ours] = _tensor(theirs, variables[theirs], transform, shapes[ours], where)
        total += state[ours].numel() * 4
        if total > budget.max_bytes:
            raise UnsupportedCheckpointError(f"{where}: more weight bytes than this app's limit")
    G = Generator(cfg)
    filters = {k: v for k, v in G.state_dict().items() if k.endswith("resample_filter")}
    G.load_state_dict(state | filters, strict=True)
    return G.eval().requires_grad_(False)
