"""Auto DragGAN's speed on the toy oracle, every configuration interleaved per pair in one process (this machine's
speed drifts by tens of percent from minute to minute, so separate runs compare poorly): draggan; auto with the
previous predictor, computing the start maps itself (auto as of 3b9d0b4); the shipped predictor, cold; the shipped
predictor from a start picture whose maps were kept (auto now). The same for auto-refine.

    git show 3b9d0b4:models/toyfaces-64-auto.safetensors > old-auto.safetensors
    HF_HUB_OFFLINE=1 PYTHONPATH=. python docs/results/auto_interleaved.py 40 2 old-auto.safetensors out.json
"""
import sys, json, time, statistics as st, torch
from draggan.experiments.workbench import BenchSpec, load_bench, edit, render, seed_latent, DragSettings, start_picture, load_predictor
from draggan.experiments.pairs import landmark_pairs
from draggan.rendered import KEPT
n, reps = int(sys.argv[1]), int(sys.argv[2])
bench = load_bench(BenchSpec("toyfaces-64", detector="toy"))
G, light = bench.G, bench.auto
old = load_predictor(sys.argv[3], G)
pairs = landmark_pairs(G, bench.detector, n, 5, seed=0)
cfg = DragSettings().drag_config("toyfaces-64")
confs = [('draggan', 'draggan', light, False), ('auto old cold', 'auto', old, False), ('auto light cold', 'auto', light, False),
         ('auto light kept', 'auto', light, True), ('refine old cold', 'auto-refine', old, False), ('refine light kept', 'auto-refine', light, True)]
T = {c[0]: [] for c in confs}
for rep in range(reps + 1):
    for p in pairs:
        w = seed_latent(G, p.seed_a, 0.7)
        for name, method, pred, kept in confs:
            KEPT.clear(); bench.auto = pred
            img = start_picture(bench, w) if kept else render(G, w)
            r = edit(bench, method, w, p.handles_xy, p.targets_xy, cfg, image=img)
            if rep: T[name].append(r.seconds)
print('load', open('/proc/loadavg').read().split()[:3], 'threads', torch.get_num_threads())
d = st.median(T['draggan'])
for k, v in T.items():
    print(f'{k:18s} median {st.median(v)*1000:7.2f} ms  mean {st.mean(v)*1000:7.2f}  draggan/this {d/st.median(v):5.1f}x  this/draggan {st.median(v)/d:.2f}')
json.dump(T, open(sys.argv[4], 'w'))
