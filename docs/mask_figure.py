"""docs/mask-before-after.png: one oracle pair dragged without a mask and with three of the mask terms.

    PYTHONPATH=. python docs/mask_figure.py [--pair 16] [--points 1] [--out docs/mask-before-after.png]

Panels: the start, the unmasked drag, the masked drag with the paper's term at the toy model's old default
(features, lambda 1.5), with the image term (version 3's first default, lambda 10) and with the hold (the
default); the editable box (landmarks + 8 px) in white,
handles as white rings, targets as black dots (the face's landmarks are coloured), and under each panel its
outside change (mean absolute pixel change outside the box), its MD to the target and its steps.
"""
from __future__ import annotations

import argparse
import dataclasses

import cv2
import numpy as np
import torch

from draggan.config import DragConfig
from draggan.experiments.landmarks import landmark_box
from draggan.experiments.pairs import landmark_pairs
from draggan.experiments.workbench import BenchSpec, edit, load_bench, render, seed_latent

SCALE = 4  # each 64-px panel drawn 256 px wide


def panel(image: np.ndarray, box: np.ndarray, pair, caption: str) -> np.ndarray:
    """The image enlarged, the box, the points and a caption under it."""
    big = cv2.resize(image, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)
    ys, xs = np.nonzero(box)
    cv2.rectangle(big, (int(xs.min()) * SCALE, int(ys.min()) * SCALE),
                  ((int(xs.max()) + 1) * SCALE - 1, (int(ys.max()) + 1) * SCALE - 1), (255, 255, 255), 1)
    for (hx, hy), (tx, ty) in zip(pair.handles_xy, pair.targets_xy):
        h, t = (int(hx * SCALE + SCALE / 2), int(hy * SCALE + SCALE / 2)), (int(tx * SCALE + SCALE / 2), int(ty * SCALE + SCALE / 2))
        cv2.arrowedLine(big, h, t, (255, 255, 255), 1, tipLength=0.25)
        cv2.circle(big, h, 5, (255, 255, 255), 2)   # the handle where it started: a white ring
        cv2.circle(big, t, 4, (0, 0, 0), -1)         # the target: a black dot
    text = np.full((40, big.shape[1], 3), 255, np.uint8)
    for i, line in enumerate(caption.split("\n")):
        cv2.putText(text, line, (4, 16 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([big, text])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", type=int, default=16)
    ap.add_argument("--points", type=int, default=1)
    ap.add_argument("--out", default="docs/mask-before-after.png")
    args = ap.parse_args()
    torch.manual_seed(0)
    bench = load_bench(BenchSpec("toyfaces-64", "cpu", "toy", None))
    pair = landmark_pairs(bench.G, bench.detector, args.pair + 1, args.points, 0, 0.7)[args.pair]
    w = seed_latent(bench.G, pair.seed_a, 0.7)
    start = render(bench.G, w)
    box = landmark_box(pair, 8, bench.G.img_resolution)
    editable = torch.from_numpy(box)
    new = DragConfig.for_model("toyfaces-64", max_steps=300, precision="fp32")
    old = dataclasses.replace(new, mask_term="features", lambda_mask=1.5)
    image_term = dataclasses.replace(new, mask_term="image", lambda_mask=10.0)
    runs = [("start", None, None), ("no mask", new, None), ("features, λ 1.5", old, editable),
            ("image term, λ 10", image_term, editable), (f"{new.mask_term} (the default)", new, editable)]
    panels = []
    for name, cfg, mask in runs:
        image, caption = start, name
        if cfg is not None:
            result = edit(bench, "draggan", w, pair.handles_xy, pair.targets_xy, cfg, image=start, editable=mask)
            image = result.image
            change = np.abs(image.astype(np.float64) - start)[~box].mean()
            found = bench.detector.detect(image, args.points)
            md = float(np.linalg.norm(found - np.asarray(pair.targets_xy), axis=1).mean())
            caption = f"{name}\noutside {change:.1f}, MD {md:.1f} px, {result.steps} steps"
        panels.append(panel(image, box, pair, caption.replace("λ", "lambda")))
    out = np.concatenate([np.concatenate([p, np.full((p.shape[0], 6, 3), 255, np.uint8)], 1) for p in panels], 1)
    cv2.imwrite(args.out, cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
    print(args.out)


if __name__ == "__main__":
    main()
