"""sinddm: SinDDM (Kulikov et al., ICML 2023) — a diffusion model learned from a single image."""

from .checkpoint import LoadedModel, load_model
from .config import Config, load_config
from .model import Denoiser
from .pipeline import generate
from .pyramid import Pyramid, build_pyramid
from .schedule import Schedule, blend_gammas, start_timesteps

__version__ = "0.1.0"

__all__ = ["Config", "Denoiser", "LoadedModel", "Pyramid", "Schedule", "blend_gammas", "build_pyramid",
           "generate", "load_config", "load_model", "start_timesteps"]
