"""Evaluate one trained model: draw (or read) samples, measure them, write metrics.json and report.png."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import LoadedModel, load_model
from ..errors import UserError
from .inception import find_inception_weights, load_inception
from .metrics import evaluate
from .report import render_report
from .schema import EVAL_FORMAT, METRICS_FILE, json_clean

DEFAULT_NUM = 50
SKIP_NAMES = {"grid.png"}  # what `sinddm sample` writes beside the samples
MODEL_FILES = ("model.safetensors", "checkpoint.pt")


def evaluate_run(model: LoadedModel | str | Path, out: str | Path | None = None, *, num: int | None = None,
                 seed: int = 0, samples_dir: str | Path | None = None, start_t: list[int] | None = None,
                 device: torch.device | str = "cpu", batch_size: int | None = None, precision: str = "auto",
                 inception_weights: str | Path | None = None, progress: bool = True) -> dict:
    """Draw `num` samples (default 50) with `seed`, or read the PNGs in `samples_dir` (the first
    `num`), measure them against the model's training image and write metrics.json, report.png
    and (for drawn samples) samples/ into `out` (default: RUN_DIR/eval). Returns metrics.json's
    content. `model` is a loaded model, a run folder, model.safetensors or checkpoint.pt;
    `start_t`, `batch_size` and `precision` are as in `sinddm.generate`."""
    from ..image_io import write_images as write_outputs
    from ..image_io import to_uint8
    from ..pipeline import generate

    loaded = model if isinstance(model, LoadedModel) else load_model(model, device)
    out = Path(out) if out is not None else default_eval_dir(loaded)
    reference = loaded.pyramid.levels[-1]
    t0 = time.perf_counter()
    if samples_dir is not None:  # read (and checked) before the output folder exists
        samples, names = read_sample_dir(Path(samples_dir), num)
        source = {"source": "folder", "folder": str(samples_dir)}
        out.mkdir(parents=True, exist_ok=True)
    else:
        num = num or DEFAULT_NUM
        out.mkdir(parents=True, exist_ok=True)
        imgs = generate(loaded, num, loaded.pyramid.sizes_hw, start_t or loaded.start_t, seed=seed,
                        batch_size=batch_size, device=device, progress=progress, precision=precision)
        write_outputs(out / "samples", imgs)
        samples = [to_uint8(x) for x in imgs]
        names = [f"sample_{i:03d}.png" for i in range(len(samples))]
        source = {"source": "generated", "folder": str(out / "samples"), "seed": seed,
                  "start_t": list(start_t or loaded.start_t), "precision": precision}
    sampling_s = time.perf_counter() - t0
    result = evaluate(reference, samples, device=torch.device(device), inception_weights=inception_weights,
                      progress=progress, names=names)
    result["timing_s"]["sampling"] = sampling_s
    sizes = {tuple(s.shape[:2]) for s in samples}
    metrics = {
        "format": EVAL_FORMAT,
        "model": str(loaded.path),
        "model_step": loaded.step,
        "training_image_hw": list(reference.shape[:2]),
        # identifies the picture, so that 'sinddm eval-compare' pairs only evaluations of the same one
        "reference_sha256": hashlib.sha256(np.ascontiguousarray(reference).tobytes()).hexdigest(),
        "num_samples": len(samples),
        "sample_hw": list(next(iter(sizes))) if len(sizes) == 1 else None,
        "samples": source,
        "inception_weights": result["settings"]["sifid"]["weights"],
        **result,
    }
    (out / METRICS_FILE).write_text(json.dumps(json_clean(metrics), indent=1) + "\n")
    render_report(out / "report.png", reference, samples, metrics, _loss_csv_for(loaded.path),
                  title=f"sinddm eval: {_run_name(loaded.path)} (step {loaded.step})")
    return metrics


def default_eval_dir(loaded: LoadedModel) -> Path:
    """RUN_DIR/eval for a model in a run folder, ./eval for a model file elsewhere."""
    return (loaded.path.parent if loaded.path.name in MODEL_FILES else Path(".")) / "eval"


def read_sample_dir(folder: Path, num: int | None) -> tuple[list[np.ndarray], list[str]]:
    """The PNGs of `folder` (not grid.png nor hidden files) in name order, the first `num`, as
    uint8 arrays, with their file names."""
    from ..image_io import load_rgb

    if not folder.is_dir():
        raise UserError(f"--samples '{folder}': no such folder; give the folder of sample PNGs")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() == ".png" and p.name not in SKIP_NAMES
                   and not p.name.startswith("."))
    if not files:
        raise UserError(f"--samples '{folder}': no PNG files (other than grid.png) inside")
    if num is not None:
        if num > len(files):
            raise UserError(f"--samples '{folder}': holds {len(files)} PNG files but --num asks for {num}")
        files = files[:num]
    try:
        return [np.asarray(load_rgb(p)) for p in files], [p.name for p in files]
    except UserError as e:
        raise UserError(f"--samples '{folder}': {e}") from None


def weights_key(inception_weights: str | Path | None) -> str | None:
    """The InceptionV3 weight file an evaluation would use (resolved), None without one."""
    path, _ = find_inception_weights(inception_weights)
    return str(Path(path).resolve()) if path else None


def check_inception_weights(path: str | Path | None) -> None:
    """An explicit --inception-weights file must exist and fit, before any long work starts."""
    if path is None:
        return
    if not Path(path).is_file():
        raise UserError(f"--inception-weights '{path}': no such file; give pytorch-fid's "
                        "pt_inception-2015-12-05-*.pth")
    try:
        load_inception(path, "pre_pool2")
    except ValueError as e:
        raise UserError(f"--inception-weights '{path}': {e}; give pytorch-fid's "
                        "pt_inception-2015-12-05-*.pth") from None


def _run_name(model_path: Path) -> str:
    p = Path(model_path)
    return p.parent.name if p.name in MODEL_FILES else p.name


def _loss_csv_for(model_path: Path) -> Path | None:
    p = Path(model_path)
    f = p.parent / "loss.csv"
    return f if f.is_file() else None
