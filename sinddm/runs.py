"""Run folders as library code: create, resume and finish a training run, with every check the
command line makes (the folder, memory, the picture on resume), and convert a reference checkpoint.

A run folder holds model.safetensors, checkpoint.pt (+ checkpoints/), config.yaml, pyramid.png,
loss.csv/png and samples_grid.png (docs/training.md, "The run folder"). Notes and warnings go to stderr,
as the CLI shows them; problems raise `UserError` with one line that names the input.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

from .errors import UserError

# What `sinddm train` / `convert-reference` write into a run folder, and what the other commands
# write there by default (made from the run's model, so they go when the run is replaced).
RUN_ENTRIES = {"model.safetensors", "checkpoint.pt", "checkpoints", "config.yaml", "pyramid.png", "loss.csv",
               "loss.png", "samples_grid.png", "samples", "eval"}
RUN_PREFIXES = ("edit_",)
OVERWRITE_OR_RESUME = "--overwrite (or --resume to continue it)"


def _note(text: str) -> None:
    print(text, file=sys.stderr)


# -- output folders --------------------------------------------------------------------------

def check_parent(path: Path, what: str, flag: str = "--out") -> None:
    """The nearest existing ancestor of `path` must be a folder (else mkdir/save fail with a traceback)."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{what} '{path}': '{parent}' is a file, not a folder; choose another {flag}")


def check_writable(path: Path, what: str, flag: str = "--out") -> None:
    """Create and delete a file where the outputs will go (or in the nearest existing ancestor),
    so that a folder we may not write to fails now, in one line, not after minutes of work."""
    where = path
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as e:
        raise UserError(f"{what} '{path}': cannot write in '{where}' ({e.strerror or e}); "
                        f"choose another {flag} or fix its permissions") from None


def is_run_folder(path: Path) -> bool:
    """A run: a model or checkpoint, or (interrupted before its first save) config.yaml with pyramid.png."""
    return ((path / "model.safetensors").is_file() or (path / "checkpoint.pt").is_file()
            or ((path / "config.yaml").is_file() and (path / "pyramid.png").is_file()))


def clear_run_folder(path: Path) -> list[str]:
    """Remove the run's own entries (and save temporaries); return the names of the others, left alone."""
    kept = []
    for p in sorted(path.iterdir()):
        n = p.name
        if n in RUN_ENTRIES or n.startswith(RUN_PREFIXES) or (n.startswith(".") and n.endswith(".tmp")):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        else:
            kept.append(n)
    return kept


def prepare_out(path: Path, overwrite: bool, what: str, flag_hint: str = "--overwrite",
                remove: bool = True) -> None:
    """Check an output folder before any work: a folder (or nothing yet) we can write in, and empty
    unless `overwrite`; with `remove`, an existing run is replaced (its own entries removed)."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} '{path}': exists and is not a folder; choose another --out")
    check_parent(path, what)
    check_writable(path, what)
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise UserError(f"{what} '{path}': exists and is not empty; choose another --out or pass {flag_hint}")
        if remove:
            if not is_run_folder(path):
                raise UserError(f"{what} '{path}': is not a sinddm run folder; --overwrite only replaces runs, "
                                "choose another --out")
            kept = clear_run_folder(path)
            if kept:
                _note(f"note: {what} '{path}': replaced the run; left {len(kept)} other entries as they were "
                      f"({', '.join(kept[:4])}{', ...' if len(kept) > 4 else ''})")


def default_run_dir(image: str | Path) -> Path:
    """runs/<image name>: where `sinddm train IMAGE` writes without --out."""
    return Path("runs") / Path(image).stem


def write_run_files(out: Path, config, pyramid) -> None:
    """config.yaml and pyramid.png of a new run (the model files come from training or conversion)."""
    from .checkpoint import atomic_write_bytes
    from .plots import pyramid_preview
    from .schedule import Schedule, start_timesteps

    atomic_write_bytes(out / "config.yaml", config.to_yaml().encode())
    pyramid_preview(pyramid, out / "pyramid.png", start_timesteps(Schedule.cosine(), pyramid.blur_distance))


# -- training runs ---------------------------------------------------------------------------

def create_run(image: Image.Image, out: Path, config=None, *, image_name: str, seed: int = 0,
               device: torch.device, precision: str = "auto", steps: int | None = None,
               overwrite: bool = False):
    """A new run in `out` (checked and, with `overwrite`, replaced): config and preview written,
    the `Trainer` made. A Ctrl-C before training starts leaves no half-made run behind."""
    from .config import Config
    from .devices import check_train_memory
    from .pyramid import build_pyramid
    from .training import Trainer

    config = config or Config()
    pyr = build_pyramid(image, config.image.max_pixels, name=f"image '{image_name}'")
    check_train_memory(pyr.sizes_hw, config, device)
    prepare_out(out, overwrite, "run folder", OVERWRITE_OR_RESUME)
    if steps:
        config.train.steps = steps
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_run_files(out, config, pyr)
        return Trainer(config, pyr, out, device, seed=seed, source=image_name, precision=precision)
    except KeyboardInterrupt:
        # Before training starts (it stops on Ctrl-C after a step and saves): a new run holding
        # only a config and a preview would block the next try, so it goes; other files stay.
        clear_run_folder(out)
        if not any(out.iterdir()):
            out.rmdir()
        raise


def resume_run(image: Image.Image, out: Path, config=None, *, image_name: str, device: torch.device,
               precision: str = "auto"):
    """The run in `out` from its newest good checkpoint; refuses another picture than its own."""
    from .devices import check_train_memory
    from .pyramid import build_pyramid
    from .training import Trainer

    trainer = Trainer.resume(out, device, config, precision=precision)
    if build_pyramid(image, trainer.config.image.max_pixels).sizes_hw != trainer.pyramid.sizes_hw:
        raise UserError(f"--resume: image '{image_name}' is not the image the run in '{out}' was trained on")
    if trainer.resume_note:
        _note(f"resume: {trainer.resume_note}")
    check_train_memory(trainer.pyramid.sizes_hw, trainer.config, device)
    return trainer


def _announce(trainer, out: Path, device, steps: int) -> None:
    from .config import ema_warning, scale_batch_sizes

    sizes = " ".join(f"{w}x{h}" for h, w in trainer.pyramid.sizes_hw)
    batches = scale_batch_sizes(trainer.config.train, trainer.pyramid.n_scales)
    batch = str(batches[0]) if len(set(batches)) == 1 else "/".join(map(str, batches)) + " (coarse to fine)"
    n, k = trainer.pyramid.n_scales, trainer.trained_scales
    hybrid = "" if k == n else f" (hybrid: the network learns the {k} coarsest, the patch denoiser serves the rest)"
    _note(f"training {out} on {device}: {n} scales (w x h: {sizes}){hybrid}, network width "
          f"{trainer.config.model.dim}, batch {batch}, precision {trainer.precision}, "
          f"steps {trainer.step} -> {steps}")
    warning = ema_warning(trainer.config.train, steps)
    if warning:
        _note(f"warning: {warning}")
    unused = len(trainer.config.train.coarse_batch_sizes) - trainer.pyramid.n_scales
    if unused > 0:
        _note(f"warning: train.coarse_batch_sizes lists {unused} more batch size(s) than this image has scales "
              f"({trainer.pyramid.n_scales}); the extra ones are unused")


def train_run(image: str | Path | Image.Image, out: str | Path | None = None, config=None, *,
              steps: int | None = None, seed: int = 0, device: str | torch.device = "auto",
              precision: str = "auto", resume: bool = False, overwrite: bool = False,
              progress: bool = True, image_name: str | None = None) -> Path:
    """Train (or with `resume`, continue) a run on `image` (a path or a PIL picture) into `out`
    (default runs/<image name>), then write its sample grid; returns the run folder.

    `config`: a `Config`, a YAML path, or None (the paper's recipe). Ctrl-C / SIGTERM stop after
    the current step, save it, and raise `TrainingStopped`.
    """
    from .checkpoint import atomic_write_bytes
    from .config import Config, load_config
    from .devices import resolve_device
    from .image_io import load_rgb

    if resume and overwrite:
        raise UserError("--resume continues the run in --out and --overwrite replaces it; give one of them")
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    in_memory = isinstance(image, Image.Image)
    if out is None:
        if in_memory:
            raise UserError("train: give `out` (a run folder) when training on a picture object")
        out = default_run_dir(image)
    out = Path(out)
    if config is not None and not isinstance(config, Config):
        config = load_config(config)
    picture = image.convert("RGB") if in_memory else load_rgb(image)
    image_name = image_name or ("(picture)" if in_memory else str(image))
    if resume:
        trainer = resume_run(picture, out, config, image_name=image_name, device=device, precision=precision)
    else:
        trainer = create_run(picture, out, config, image_name=image_name, seed=seed, device=device,
                             precision=precision, steps=steps, overwrite=overwrite)
    total = steps or trainer.config.train.steps
    if resume and trainer.step >= total:
        _note(f"{out}: already at step {trainer.step} of {total}; nothing to train (pass --steps N to train "
              "longer)")
        return out
    if steps:
        trainer.config.train.steps = total
        atomic_write_bytes(out / "config.yaml", trainer.config.to_yaml().encode())
    _announce(trainer, out, device, total)
    trainer.train(total, progress=progress)
    finish_run(out, trainer.config.train.grid_samples, device, seed, progress, precision)
    n_skipped = trainer.guard.skipped_steps
    skipped = f"; {n_skipped} steps with a NaN/inf loss were skipped" if n_skipped else ""
    _note(f"done: {out / 'model.safetensors'} (sample with: sinddm sample {out}){skipped}")
    return out


def finish_run(out: Path, n: int, device, seed: int, progress: bool, precision: str) -> None:
    """samples_grid.png: the training image and `n` samples of the finished model (none for n = 0)."""
    if not n:
        return
    from .checkpoint import load_model
    from .image_io import make_grid, to_uint8
    from .pipeline import generate

    loaded = load_model(out, device)
    imgs = generate(loaded, n, loaded.pyramid.sizes_hw, loaded.start_t, seed=seed, device=device,
                    progress=progress, precision=precision)
    real = loaded.pyramid.levels[-1]
    Image.fromarray(make_grid([real] + [to_uint8(x) for x in imgs])).save(out / "samples_grid.png")


def convert_reference(checkpoint: str | Path, image: str | Path, out: str | Path, max_pixels: int | None = None,
                      overwrite: bool = False) -> Path:
    """A run folder (model.safetensors, config.yaml, pyramid.png) from a checkpoint of the
    published code and the picture it was trained on; returns the model file's path."""
    from .checkpoint import MODEL_FILE, save_model
    from .config import Config
    from .convert import load_reference_checkpoint
    from .image_io import load_rgb
    from .model import infer_width
    from .pyramid import build_pyramid

    from .pyramid import DEFAULT_MAX_PIXELS

    max_pixels = max_pixels or DEFAULT_MAX_PIXELS
    weights = load_reference_checkpoint(str(checkpoint))
    pyr = build_pyramid(load_rgb(image), max_pixels, name=f"image '{image}'")
    config = Config()
    config.model.dim = infer_width(weights)
    config.image.max_pixels = max_pixels
    out = Path(out)
    prepare_out(out, overwrite, "run folder")
    out.mkdir(parents=True, exist_ok=True)
    write_run_files(out, config, pyr)
    save_model(out / MODEL_FILE, weights, pyr, config, step=0, source=f"reference:{checkpoint}")
    _note(f"wrote {out / MODEL_FILE} (width {config.model.dim}, {pyr.n_scales} scales)")
    return out / MODEL_FILE
