"""The experiments of the DragGAN papers and the Qt reproduction, as library code (no Gradio).

  - `landmarks.run_landmarks`: face-landmark manipulation (MD before/after, success, steps, time, FID);
  - `reconstruction.run_reconstruction`: paired image reconstruction from optical flow (MSE, LPIPS);
  - `decay.run_decay`: mean distance decay MD(t)/MD(0) against wall time;
  - `nearest.run_nearest`: the Nearest radius R3 ablation.
Each takes a `workbench.Bench` (generator, detector, predictor), method names, a settings
dataclass and pairs, and returns a `report.ExperimentResult`. `python -m draggan experiment`
is the command; `--ray` runs the pairs as Ray actors (`ray_runner`).
"""
