"""StyleGAN3 generators from NVIDIA pickles (through the allow-list unpickler) and from our safetensors.

Two entry points, each called from one place of the generic loaders:
- `is_stylegan3_record` / `generator_from_record`: `safe_pickle.generator_from_records` hands over a
  pickled generator whose synthesis network has an `input` and `L0_*` layers (NVIDIA's
  `networks_stylegan3`). Its constructor arguments become a `StyleGAN3Config`, validated before
  anything is allocated; the geometry the pickled layers record (sizes, padding, resampling factors:
  numpy ints and arrays) must equal the one the config implies; the tensors' shapes must equal the
  config's; then the state dict loads strictly.
- `read_safetensors`: `checkpoints` hands over a `.safetensors` whose metadata `format` is
  `draggan-stylegan3` (what `save_generator` writes for our StyleGAN3 `Generator`).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from .model_files import register_file_format
from .safe_pickle import (CheckpointError, PickledObject, PickleReader, UnsupportedCheckpointError, WalkBudget,
                          _find_generator, config_from_dict, generator_kwargs, module_state_dict, register_reader,
                          shorten)
from .stylegan3 import Generator, StyleGAN3Config, geometry, state_shapes

FORMAT = Generator.FORMAT
# Layer attributes NVIDIA's SynthesisLayer records that decide the function it computes (others: training only).
_CHECKED_ATTRIBUTES = ("in_size", "out_size", "padding", "up_factor", "down_factor", "conv_kernel", "is_torgb",
                       "down_radial", "in_channels", "out_channels")


def _children(record: Any) -> dict[str, Any]:
    modules = record.state.get("_modules") if isinstance(record, PickledObject) else None
    return modules if isinstance(modules, dict) else {}


def is_stylegan3_record(net: PickledObject) -> bool:
    """Whether a pickled generator is NVIDIA's StyleGAN3: its synthesis has an `input` and layers `L0_...`."""
    layers = _children(_children(net).get("synthesis"))
    return "input" in layers and any(isinstance(k, str) and k.startswith("L0_") for k in layers)


def config_from_kwargs(d: Any, where: str) -> StyleGAN3Config:
    """`StyleGAN3Config.from_dict(d)`, validated; UnsupportedCheckpointError (one line) for anything wrong."""
    return config_from_dict(d, where, StyleGAN3Config)


def shape_problem(shapes: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> str | None:
    """What differs between a file's tensor shapes and those its StyleGAN3 config implies; None if they match."""
    if shapes == expected:
        return None
    for label, keys in (("missing", sorted(set(expected) - set(shapes))),
                        ("unexpected", sorted(set(shapes) - set(expected))),
                        ("wrong shape", sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k]))):
        if keys:
            return (f"weights do not fit a StyleGAN3 generator built from the file's own config ({label}: "
                    f"{shorten(keys[0], 60)}{' ...' if len(keys) > 1 else ''})")
    return None


def _plain(value: Any) -> Any:
    """A pickled attribute as plain Python: numpy arrays as lists, numpy scalars as numbers."""
    if isinstance(value, np.ndarray) and value.size <= 16:
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return value


def geometry_problem(net: PickledObject, cfg: StyleGAN3Config) -> str | None:
    """Where the pickled layers' recorded geometry differs from the one `cfg` implies; None if it agrees."""
    synthesis = _children(net).get("synthesis")
    layers = _children(synthesis)
    geo = geometry(cfg)
    for g in geo.layers:
        record = layers.get(g.name)
        if not isinstance(record, PickledObject):
            return f"its layers are not those of its config (no {g.name})"
        ours = {"in_size": [g.in_size] * 2, "out_size": [g.out_size] * 2, "padding": list(g.padding)}
        for attr in _CHECKED_ATTRIBUTES:
            if attr in record.state:
                theirs, expected = _plain(record.state[attr]), ours.get(attr, getattr(g, attr))
                if theirs != expected:
                    return f"layer {g.name} records {attr} = {shorten(repr(theirs), 40)}, its config implies {expected}"
    recorded = _children(synthesis).get("input")
    for attr, expected in (("size", [geo.input_size] * 2), ("sampling_rate", geo.input_sampling_rate),
                           ("bandwidth", geo.input_bandwidth)):
        theirs = _plain(recorded.state.get(attr, expected)) if isinstance(recorded, PickledObject) else expected
        same = theirs == expected if isinstance(expected, list) else (
            isinstance(theirs, (int, float)) and math.isclose(theirs, expected, rel_tol=1e-9))
        if not same:
            return f"its input records {attr} = {shorten(repr(theirs), 40)}, its config implies {expected}"
    return None


def generator_from_record(key: str, net: PickledObject, budget: WalkBudget = WalkBudget()) -> Generator:
    """Our StyleGAN3 `Generator` from a pickled NVIDIA StyleGAN3 generator record (see the module doc)."""
    kwargs = generator_kwargs(net)
    if "conv_clamp" not in (net.state.get("_init_kwargs") or {}):
        kwargs.pop("conv_clamp", None)  # NVIDIA's StyleGAN3 layers default to 256 (generator_kwargs: StyleGAN2's None)
    cfg = config_from_kwargs(kwargs, key)
    problem = geometry_problem(net, cfg)
    state = module_state_dict(net, budget=budget) if problem is None else {}
    problem = problem or shape_problem({k: tuple(v.shape) for k, v in state.items()}, state_shapes(cfg))
    if problem:
        raise UnsupportedCheckpointError(f"{key}: {problem}")
    # The official app (init_network) and NVIDIA's gen_images.py both overwrite the input's user transform
    # (identity unless asked); a pickle saved with another one renders as they render it.
    state["synthesis.input.transform"] = torch.eye(3)
    G = Generator(cfg)
    G.load_state_dict(state, strict=True)
    return G.eval().requires_grad_(False)


def _file_format(config: Any, name: str):
    """How `model_files` reads our StyleGAN3 `.safetensors` (format draggan-stylegan3): shapes, then a builder."""
    cfg = config_from_kwargs(config, name)  # validated: nothing is allocated from an unchecked config
    return state_shapes(cfg), lambda: Generator(cfg)


def _claims(data: Any) -> bool:
    try:
        return is_stylegan3_record(_find_generator(data)[1])
    except CheckpointError:
        return False


def _from_data(data: Any, budget: WalkBudget) -> Generator:
    return generator_from_record(*_find_generator(data), budget)


# Registered once, when the package is imported (stylegan2/__init__.py imports this module).
register_reader(PickleReader("stylegan3", _claims, _from_data), ("stylegan3",))
register_file_format(FORMAT, _file_format)


# ----------------------------------------------------------------------------
# For files that record a generator's config without its architecture (PTI embeddings).

def is_stylegan3_config(d: Any) -> bool:
    """Whether a config dict (our `to_dict`) is a StyleGAN3 one: only StyleGAN3's has layer margins."""
    return isinstance(d, dict) and "margin_size" in d and "num_critical" in d


def any_config_from_dict(d: Any, where: str):
    """The validated StyleGAN3Config or GeneratorConfig a config dict describes; one-line CheckpointError otherwise."""
    return config_from_kwargs(d, where) if is_stylegan3_config(d) else config_from_dict(d, where)


def build_generator(config: Any) -> torch.nn.Module:
    """`Generator(config)` of the architecture the (validated) config belongs to."""
    from .networks import Generator as StyleGAN2Generator
    return Generator(config) if isinstance(config, StyleGAN3Config) else StyleGAN2Generator(config)
