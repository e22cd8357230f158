"""sinddm: SinDDM (Kulikov et al., ICML 2023), a diffusion model learned from a single image.

Start with `SinDDM` (load / train / sample / edit). The method is written down in docs/method.md.

Module map (library first; nothing below imports the CLI):
  api          SinDDM: the public object; the CLI is written on top of the same pieces
  pyramid      the multiscale pyramid, blur distances, output sizes            (method §1, §5.4)
  schedule     cosine schedule, start timesteps T[s], blend weights γ            (method §2)
  model        the denoiser ε_θ(x, t, s); knows nothing about schedules         (method §3)
  training     the training loop and its numeric guard                           (method §4)
  samplers     pure sampling functions: DDPM, blended finer steps, the pyramid   (method §5)
  patch_denoiser  the closed-form (training-free) denoiser over a level's own patches  (method §11)
  tiling       the denoiser on tiles with a receptive-field halo (exact), or on a torus (seamless)
  pipeline     seeded batches: the one batching loop of sampling and every edit
  editing      harmonization, style transfer, ROI-guided generation             (method §7)
  regions      boxes and ROI hooks;  masks: soft and binary masks
  text_edits   the four text-guided modes; guidance: CLIP loss, views, guided loops; clip: weights (§6)
  runs         run folders: create, resume, finish, convert a reference checkpoint
  devices      device and precision names, memory estimates and up-front checks
  checkpoint   model files and crash-safe training checkpoints;  config: strict YAML configs
  fast         the CUDA (and CPU) fast paths;  image_io, plots: pictures in and out
  eval         quality metrics, reports, eval-suite and eval-compare
  cli          the `sinddm` command line
"""

from .api import SinDDM
from .checkpoint import LoadedModel, load_model
from .config import Config, load_config
from .model import Denoiser
from .pipeline import generate
from .pyramid import Pyramid, build_pyramid
from .schedule import Schedule, blend_gammas, start_timesteps

__version__ = "0.1.0"

__all__ = ["Config", "Denoiser", "LoadedModel", "Pyramid", "Schedule", "SinDDM", "blend_gammas", "build_pyramid",
           "generate", "load_config", "load_model", "start_timesteps"]
