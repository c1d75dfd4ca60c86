"""Interleaved per pair in one process: draggan; auto and auto-refine with the shipped (light, n = 5) and the fast
(n = 3) predictor, start maps kept. Median ms per edit.

    HF_HUB_OFFLINE=1 PYTHONPATH=. python docs/results/auto_n3_interleaved.py 40 2 \
        models/toyfaces-64-auto-light.safetensors models/toyfaces-64-auto-n3.safetensors out.json
"""
import sys, json, statistics as st, torch
from draggan.experiments.workbench import BenchSpec, load_bench, edit, seed_latent, DragSettings, start_picture, load_predictor
from draggan.experiments.pairs import landmark_pairs
from draggan.rendered import KEPT
n, reps, light_path, xs_path, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
bench = load_bench(BenchSpec("toyfaces-64", detector="toy"))
G = bench.G
light, xs = load_predictor(light_path, G), load_predictor(xs_path, G)
pairs = landmark_pairs(G, bench.detector, n, 5, seed=0)
cfg = DragSettings().drag_config("toyfaces-64")
confs = [('draggan', 'draggan', light), ('auto light', 'auto', light), ('auto n3', 'auto', xs),
         ('refine light', 'auto-refine', light), ('refine n3', 'auto-refine', xs)]
T = {c[0]: [] for c in confs}
for rep in range(reps + 1):
    for p in pairs:
        w = seed_latent(G, p.seed_a, 0.7)
        for name, method, pred in confs:
            KEPT.clear(); bench.auto = pred
            img = start_picture(bench, w)
            r = edit(bench, method, w, p.handles_xy, p.targets_xy, cfg, image=img)
            if rep: T[name].append(r.seconds)
print('load', open('/proc/loadavg').read().split()[:3], 'threads', torch.get_num_threads())
d = st.median(T['draggan'])
for k, v in T.items():
    print(f'{k:14s} median {st.median(v)*1000:7.2f} ms  mean {st.mean(v)*1000:7.2f}  draggan/this {d/st.median(v):5.1f}x  this/draggan {st.median(v)/d:.2f}')
json.dump(T, open(out, 'w'))
