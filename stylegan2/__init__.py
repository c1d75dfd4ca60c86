"""StyleGAN2 networks (pure PyTorch) and safe checkpoint loading."""
from .networks import Generator, GeneratorConfig, image_to_uint8, seed_to_z, tiny_generator

__all__ = ["Generator", "GeneratorConfig", "image_to_uint8", "seed_to_z", "tiny_generator"]
