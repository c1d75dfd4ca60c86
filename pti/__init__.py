"""Real photos -> (tuned generator, pivot latent) by Pivotal Tuning Inversion, for DragGAN editing.

    img, notes = load_image("photo.jpg", G.img_resolution)
    result = invert(G, img, load_inversion_loss(device), "fast", progress=..., cancel=event)
    # load_inversion_loss: LPIPS (load_perceptual) when its weights can be had, else the offline pixel loss
    save_embedding("photo.safetensors", result, G, model_spec)
    G_tuned, pivot_ws = load_embedding("photo.safetensors", device)   # -> DragSession(G_tuned, pivot_ws)

See docs/pti.md.
"""
from .embedding import EmbeddingError, EmbeddingInfo, embedding_info, load_embedding, save_embedding
from .image_io import ImageInputError, load_image, parse_crop, prepare_image
from .inversion import (PRESETS, InversionCancelled, InversionResult, PTIPreset, StageMetrics, get_preset, invert,
                        pivotal_tuning, project_w)
from .perceptual import PerceptualDistance, PerceptualWeightsError, VGG16Features, load_perceptual
from .pixel_loss import PixelDistance, load_inversion_loss

__all__ = ["EmbeddingError", "EmbeddingInfo", "ImageInputError", "InversionCancelled", "InversionResult", "PRESETS",
           "PTIPreset", "PerceptualDistance", "PerceptualWeightsError", "PixelDistance", "StageMetrics",
           "VGG16Features", "embedding_info", "get_preset", "invert", "load_embedding", "load_image",
           "load_inversion_loss", "load_perceptual", "parse_crop", "pivotal_tuning", "prepare_image", "project_w",
           "save_embedding"]
