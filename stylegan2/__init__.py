"""StyleGAN2 networks (pure PyTorch) and safe checkpoint loading."""
from .errors import UserError
from .networks import Generator, GeneratorConfig, image_to_uint8, seed_to_z

__all__ = ["Generator", "GeneratorConfig", "UserError", "image_to_uint8", "seed_to_z"]
