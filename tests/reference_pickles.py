"""Network pickles built from ../shared/reference records: the persistence layout NVIDIA's code writes, no code inside.

A reference JSON holds a generator's `init_args`/`init_kwargs` as `torch_utils.persistence` records
them (`init_kwargs_types` names the nested `dnnlib.util.EasyDict`s) and the class of every persistent
submodule; its `.safetensors` holds the state dict. `write_reference_pickle` assembles the snapshot
pickle a training run would have written (`{"G_ema": ...}`), with a `module_src` that would leave a
marker file behind if anything ever ran it.
"""
from __future__ import annotations

import collections
import json
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from test_safe_pickle import EasyDict, Persistent, fake_nvidia_modules

BUFFERS = ("w_avg", "noise_const", "resample_filter")


def _easydicts(kwargs: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, dict) and types.get(key) == "dnnlib.util.EasyDict":
            value = EasyDict(value)
        out[key] = value
    return out


def reference_record(meta: dict[str, Any], state: dict[str, torch.Tensor], module_src: str) -> Persistent:
    """The G_ema persistence record for a reference JSON (`meta`) and its state dict."""
    classes = meta["persistence"]["persistent_submodule_classes"]
    nodes: dict[str, dict[str, Any]] = {}
    for path in sorted(classes, key=lambda p: (p != "(top level)", p.count("."))):
        nodes[path] = {"training": False, "_parameters": collections.OrderedDict(),
                       "_buffers": collections.OrderedDict(), "_non_persistent_buffers_set": set(),
                       "_modules": collections.OrderedDict(), "_init_args": (), "_init_kwargs": EasyDict()}
    for key, value in state.items():
        owner, _, name = key.rpartition(".")
        group = "_buffers" if name in BUFFERS else "_parameters"
        value = value if group == "_buffers" else torch.nn.Parameter(value, requires_grad=False)
        nodes[owner or "(top level)"][group][name] = value
    records = {path: Persistent(classes[path], nodes[path], module_src) for path in nodes}
    for path, rec in records.items():
        if path != "(top level)":
            parent, _, name = path.rpartition(".")
            nodes[parent or "(top level)"]["_modules"][name] = rec
    top = nodes["(top level)"]
    top["_init_args"] = tuple(meta["init_args"])
    top["_init_kwargs"] = _easydicts(meta["init_kwargs"], meta.get("init_kwargs_types", {}))
    return records["(top level)"]


def write_reference_pickle(reference_dir: Path, name: str, path: Path, marker: Path,
                           edit_kwargs: Any = None) -> Path:
    """`{name}.json` + `{name}.safetensors` as a snapshot pickle at `path`; edit_kwargs(init_kwargs) may change the record."""
    meta = json.loads((reference_dir / f"{name}.json").read_text())
    if edit_kwargs is not None:
        edit_kwargs(meta["init_kwargs"])
    state = load_file(str(reference_dir / f"{name}.safetensors"))
    src = f"open({str(marker)!r}, 'w').write('module_src ran')"
    with fake_nvidia_modules():
        path.write_bytes(pickle.dumps({"G_ema": reference_record(meta, state, src)}, protocol=4))
    return path
