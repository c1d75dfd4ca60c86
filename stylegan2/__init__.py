"""StyleGAN2 networks (pure PyTorch) and safe checkpoint loading."""
from .errors import UserError
from .networks import Generator, GeneratorConfig, image_to_uint8, seed_to_z
from . import stylegan3_io  # noqa: F401,E402 (registers the StyleGAN3 readers of pickles and our files)

__all__ = ["Generator", "GeneratorConfig", "UserError", "image_to_uint8", "seed_to_z"]
