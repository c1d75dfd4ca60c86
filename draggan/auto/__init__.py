"""Auto DragGAN (Cai et al., ACM MM 2024): a learned drag that predicts the latent's motion.

`rollout(model, G, w0, handles_xy, targets_xy)` gives the predicted latents; `load_auto_model(path, G)`
reads a model file trained for G by `python -m draggan train-auto` (docs/auto_draggan.md).
"""
from .config import AutoConfig, AutoConfigError, preset
from .files import AutoModelError, load_auto_model, save_auto_model
from .networks import AutoDragModel, LatentPredictor, LatentRegularizer
from .rollout import rollout

__all__ = ["AutoConfig", "AutoConfigError", "AutoDragModel", "AutoModelError", "LatentPredictor",
           "LatentRegularizer", "load_auto_model", "preset", "rollout", "save_auto_model"]
