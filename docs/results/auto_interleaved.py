"""Auto DragGAN's speed on the toy oracle, every configuration interleaved per pair in one process (this machine's
speed drifts by tens of percent from minute to minute, so separate runs compare poorly). Median ms per edit.

A configuration is METHOD (draggan) or METHOD:PREDICTOR_FILE:kept|cold (kept: the start picture rendered through
draggan.rendered, as the app renders it; cold: the edit computes the start maps itself).

    # before/after of 2026-12-06 (auto as of 3b9d0b4: its first predictor, cold; now: the light one, kept)
    git show 3b9d0b4:models/toyfaces-64-auto.safetensors > old-auto.safetensors
    HF_HUB_OFFLINE=1 PYTHONPATH=. python docs/results/auto_interleaved.py 40 2 out.json draggan \
        auto:old-auto.safetensors:cold auto:models/toyfaces-64-auto-light.safetensors:cold \
        auto:models/toyfaces-64-auto-light.safetensors:kept \
        auto-refine:old-auto.safetensors:cold auto-refine:models/toyfaces-64-auto-light.safetensors:kept
    # the shipped predictor against the fast variant (n = 3)
    HF_HUB_OFFLINE=1 PYTHONPATH=. python docs/results/auto_interleaved.py 40 2 out.json draggan \
        auto:models/toyfaces-64-auto-light.safetensors:kept auto:models/toyfaces-64-auto-n3.safetensors:kept \
        auto-refine:models/toyfaces-64-auto-light.safetensors:kept auto-refine:models/toyfaces-64-auto-n3.safetensors:kept
"""
import json
import statistics as st
import sys

import torch

from draggan.experiments.pairs import landmark_pairs
from draggan.experiments.workbench import (BenchSpec, DragSettings, edit, load_bench, load_predictor, render, seed_latent,
                                           start_picture)
from draggan.rendered import KEPT

n, reps, out, names = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
bench = load_bench(BenchSpec("toyfaces-64", detector="toy"))
G = bench.G
loaded = {}
confs = []
for name in names:
    method, path, start = (name.split(":") + [None, "kept"])[:3]
    if path is not None and path not in loaded:
        loaded[path] = load_predictor(path, G)
    confs.append((name, method, loaded.get(path, bench.auto), start == "kept"))
pairs = landmark_pairs(G, bench.detector, n, 5, seed=0)
cfg = DragSettings().drag_config("toyfaces-64")
T = {c[0]: [] for c in confs}
for rep in range(reps + 1):                        # round 0 warms up, unrecorded
    for p in pairs:
        w = seed_latent(G, p.seed_a, 0.7)
        for name, method, pred, kept in confs:
            KEPT.clear()
            bench.auto = pred
            img = start_picture(bench, w) if kept else render(G, w)
            r = edit(bench, method, w, p.handles_xy, p.targets_xy, cfg, image=img)
            if rep:
                T[name].append(r.seconds)
print("load", open("/proc/loadavg").read().split()[:3], "threads", torch.get_num_threads())
base = st.median(T[names[0]])
for k, v in T.items():
    print(f"{k:60s} median {st.median(v) * 1000:7.2f} ms  mean {st.mean(v) * 1000:7.2f}  "
          f"first/this {base / st.median(v):5.1f}x")
json.dump(T, open(out, "w"))
