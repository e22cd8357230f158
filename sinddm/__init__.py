"""sinddm: SinDDM (Kulikov et al., ICML 2023), a diffusion model learned from a single image.

Start with `SinDDM` (load / train / sample / edit). The method is written down in docs/method.md.

Module map (library first; nothing below imports the CLI).

The core, read first:
  pyramid      the multiscale pyramid, blur distances, output sizes            (method §1, §5.4)
  schedule     cosine schedule, start timesteps T[s], blend weights γ            (method §2)
  model        the denoiser ε_θ(x, t, s); knows nothing about schedules         (method §3)
  training     the training loop (method §4); its parts, each with its own checkpoint entries:
               numeric_guard (NaN/inf steps), loss_log (loss.csv, loss.png), train_checkpoints
  samplers     pure sampling functions: DDPM, blended finer steps, the pyramid   (method §5)
  pipeline     seeded batches: the one batching loop of sampling and every edit
  tiling       the denoiser on tiles with a receptive-field halo (exact), or on a torus (seamless)
  patch_denoiser  the closed-form (training-free) denoiser over a level's own patches  (method §11)
               patch_math: its tensor helpers (weighted means, exact top-k, search-grid spreading)
  hybrid       the network on the K coarsest scales, the patch denoiser on the rest   (method §11)

The public object and its checks:
  api          SinDDM: load / from_image / train, sample and every edit; the CLI calls it
  prepared, prepared_text   every operation as a checked call;  checks: the argument checks
  sources      what a MODEL argument names: a model file, a run, or a picture (training-free)

Rooms:
  edits/       harmonization, style transfer, ROI generation, regions, masks, text edits,
               CLIP guidance, CLIP weights and views                           (method §6, §7)
  fast/        the CUDA and CPU fast paths (bf16, channels_last, fused kernels, CUDA graphs)
  eval/        quality metrics, reports, eval-suite and eval-compare
  app/         the browser studio (Gradio) on top of SinDDM
  cli/         the `sinddm` command line

Around them: runs (run folders), checkpoint (model files, crash-safe checkpoints), config (strict
YAML configs), devices (device and precision names, memory checks), convert (reference
checkpoints), image_io and plots (pictures in and out), errors.
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
