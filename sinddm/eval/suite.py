"""`sinddm eval-suite`: train and evaluate one run per picture and recipe, then tabulate.

Runs live in OUT/<recipe>/<image>/ (a complete run is reused, an interrupted one resumed),
their evaluations in .../eval/ (reused while the model, sampling and weights are the same);
OUT gets results.csv / results.md / results.json (`tables`) and samples.png: the protocol
for comparing recipes.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..checkpoint import load_model
from ..errors import UserError
from .report import SUITE_SAMPLES_PER_ROW, render_suite_samples
from .run import DEFAULT_NUM, check_inception_weights, evaluate_run, read_sample_dir, weights_key
from .schema import EVAL_FORMAT, METRICS_FILE, TABLE_METRICS
from .tables import paired_rows, write_tables

DEFAULT_OUT = Path("runs") / "eval-suite"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


@dataclass
class _Sampling:
    """How every run of a suite is trained and evaluated."""
    num: int
    seed: int
    device_name: str          # as given ('auto', 'cpu', 'cuda:1'): passed on to training
    device: torch.device
    batch_size: int | None
    precision: str
    inception_weights: str | Path | None
    weights_key: str | None
    progress: bool


def run_suite(images_dir: str | Path, configs: Sequence[str | Path], out: str | Path | None = None, *,
              steps: int | None = None, num: int = DEFAULT_NUM, seed: int = 0, baseline: str | None = None,
              inception_weights: str | Path | None = None, device: str = "auto", batch_size: int | None = None,
              precision: str = "auto", progress: bool = True,
              log: Callable[[str], None] = _stderr) -> dict:
    """Train (or reuse, or resume) and evaluate a run per picture in `images_dir` and recipe in
    `configs` (YAML files; a recipe is named after its file), then write the tables and
    samples.png into `out` (default runs/eval-suite). `steps` overrides the recipes' training
    steps; `baseline` names the recipe the others are compared with sample by sample (default:
    the first of several). Everything is checked before the first training starts; `log` gets
    a line per step. Returns results.json's content."""
    from ..devices import resolve_device

    dev = resolve_device(str(device))
    check_inception_weights(inception_weights)
    images = _list_images(Path(images_dir))
    recipes = _recipes(configs, steps)
    names = [name for name, _, _ in recipes]
    if baseline is not None and baseline not in names:
        raise UserError(f"--baseline '{baseline}': not one of the recipes ({', '.join(names)}); "
                        "give a config's file name without .yaml")
    baseline = baseline or (names[0] if len(names) > 1 else None)
    out = Path(out) if out else DEFAULT_OUT
    if out.exists() and not out.is_dir():
        raise UserError(f"suite folder '{out}': exists and is not a folder; choose another --out")
    how = _Sampling(num, seed, str(device), dev, batch_size, precision, inception_weights,
                    weights_key(inception_weights), progress)
    plan = [(r, img) for r in recipes for img in images]
    _check_pictures(images, {cfg.image.max_pixels for _, _, cfg in recipes})
    # Check every existing run before the first (long) training starts.
    states = {(name, img): _run_state(out / name / img.stem, cfg, img) for (name, _, cfg), img in plan}
    rows, figure, evals = [], [], {}
    for k, ((name, cfg_path, cfg), img) in enumerate(plan, start=1):
        tag = f"[{k}/{len(plan)}] {name} / {img.name}"
        row, m, entry = _one_run(tag, name, cfg_path, cfg, img, out / name / img.stem, states[(name, img)],
                                 how, log)
        rows.append(row)
        evals[(name, img.name)] = m
        if entry is not None:
            figure.append(entry)
    paired = paired_rows(evals, baseline, names, [img.name for img in images]) if baseline else []
    doc = write_tables(out, rows, recipes, num=num, seed=seed, baseline=baseline, paired=paired)
    render_suite_samples(out / "samples.png", figure)
    return doc


def _one_run(tag: str, name: str, cfg_path: Path, cfg, img: Path, run: Path, state: tuple[str, int],
             how: _Sampling, log: Callable[[str], None]) -> tuple[dict, dict, tuple | None]:
    """Train (unless complete) and evaluate (unless cached) one run: (table row, metrics, figure row)."""
    mode, step = state
    steps = cfg.train.steps
    log(f"{tag}: " + {"new": f"training {steps} steps", "restart": f"training {steps} steps (restart)",
                      "resume": f"resuming at step {step} -> {steps}",
                      "complete": f"reusing the run (step {step})"}[mode])
    train_s = None
    if mode != "complete":
        t0 = time.perf_counter()
        _train_run(img, cfg_path, run, steps=steps, mode=mode, device=how.device_name, seed=how.seed,
                   precision=how.precision, quiet=not how.progress)
        train_s = time.perf_counter() - t0
    loaded = load_model(run, how.device)
    eval_dir = run / "eval"
    m = _cached_metrics(eval_dir, _eval_key(loaded, how))
    if m is None:
        log(f"{tag}: evaluating {how.num} samples")
        m = evaluate_run(loaded, eval_dir, num=how.num, seed=how.seed, samples_dir=None, start_t=None,
                         device=how.device, batch_size=how.batch_size, precision=how.precision,
                         inception_weights=how.inception_weights, progress=how.progress)
    else:
        log(f"{tag}: reusing {eval_dir / METRICS_FILE}")
    h, w = m["training_image_hw"]
    row = {"recipe": name, "image": img.name, "size": f"{w}x{h}", "scales": loaded.pyramid.n_scales,
           "steps": loaded.step, "train_s": train_s, "samples": m["num_samples"]}
    for key in TABLE_METRICS:
        v = m["aggregate"].get(key)
        row[key] = v if key == "pixel_diversity" else (v["mean"] if v else None)
    row["skipped"] = m.get("skipped", {})
    entry = None
    if (eval_dir / "samples").is_dir():
        label = [f"{name} / {img.stem}", f"{loaded.step} steps, SWD {row['swd']:.4g}"]
        shown = min(SUITE_SAMPLES_PER_ROW, m["num_samples"])  # read only the PNGs the figure shows
        entry = (label, loaded.pyramid.levels[-1], read_sample_dir(eval_dir / "samples", shown)[0])
    return row, m, entry


def _train_run(image: Path, config_path: Path, run_dir: Path, *, steps: int, mode: str, device: str, seed: int,
               precision: str, quiet: bool) -> None:
    """Train one run folder to `steps` steps: from scratch (mode 'new'; 'restart' replaces what an
    interrupted first training left) or from its checkpoint (mode 'resume').

    The one place eval-suite trains: `runs.train_run`, with every check `sinddm train` makes."""
    from ..runs import train_run

    train_run(image, run_dir, None if mode == "resume" else config_path, steps=steps, seed=seed, device=device,
              precision=precision, resume=mode == "resume", overwrite=mode == "restart", progress=not quiet)


def _list_images(folder: Path) -> list[Path]:
    from PIL import Image

    if not folder.is_dir():
        raise UserError(f"images folder '{folder}': no such folder; give a folder of training pictures")
    exts = {e.lower() for e in Image.registered_extensions()}
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in exts and not p.name.startswith("."))
    if not files:
        raise UserError(f"images folder '{folder}': no pictures inside (PNG, JPEG, ...)")
    stems = [p.stem for p in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise UserError(f"images folder '{folder}': several pictures named '{dup[0]}' (different extensions); "
                        "rename one, runs are named after the picture")
    return files


def _check_pictures(images: list[Path], caps: set[int]) -> None:
    """Every picture readable and big enough for every recipe's pixel cap, before the first training."""
    from ..image_io import load_rgb
    from ..pyramid import build_pyramid

    for img in images:
        picture = load_rgb(img)
        for cap in sorted(caps):
            build_pyramid(picture, cap, name=f"image '{img}'")


def _recipes(paths: Sequence[str | Path], steps: int | None) -> list[tuple[str, Path, object]]:
    from ..config import load_config

    out, seen = [], set()
    for p in paths:
        cfg = load_config(p)
        if steps:
            cfg.train.steps = steps
        name = Path(p).stem
        if name in seen:
            raise UserError(f"--config '{p}': another recipe is also named '{name}'; give configs distinct "
                            "file names (runs are stored per recipe name)")
        seen.add(name)
        out.append((name, Path(p), cfg))
    return out


def _same_except_steps(a, b) -> bool:
    import copy

    a, b = copy.deepcopy(a), copy.deepcopy(b)
    a.train.steps = b.train.steps = 0
    return a == b


def _run_state(run: Path, cfg, image: Path) -> tuple[str, int]:
    """('new' | 'complete' | 'resume' | 'restart', step) for the run folder of one job."""
    from ..checkpoint import MODEL_FILE, TRAIN_STATE_FILE
    from ..config import load_config
    from ..image_io import load_rgb
    from ..pyramid import build_pyramid

    if not run.exists() or (run.is_dir() and not any(run.iterdir())):
        return "new", 0
    if not (run / "config.yaml").is_file():
        raise UserError(f"run folder '{run}': exists and is not a sinddm run; move it away or choose another --out")
    try:
        saved = load_config(run / "config.yaml")
    except UserError:
        saved = None
    if saved is None or not _same_except_steps(saved, cfg):
        raise UserError(f"run folder '{run}': was trained with a different recipe than the current config; "
                        "choose another --out or delete that run")
    if not (run / MODEL_FILE).is_file():
        return "restart", 0  # interrupted before its first save
    loaded = load_model(run / MODEL_FILE)
    pyr = build_pyramid(load_rgb(image), cfg.image.max_pixels, name=f"image '{image}'")
    if loaded.pyramid.sizes_hw != pyr.sizes_hw or not np.array_equal(loaded.pyramid.levels[-1], pyr.levels[-1]):
        raise UserError(f"run folder '{run}': was trained on another picture than '{image}'; "
                        "choose another --out or delete that run")
    if loaded.step == cfg.train.steps:
        return "complete", loaded.step
    if loaded.step > cfg.train.steps:
        raise UserError(f"run folder '{run}': was trained for {loaded.step} steps, more than the {cfg.train.steps} "
                        f"asked for; pass --steps {loaded.step} or choose another --out")
    if (run / TRAIN_STATE_FILE).is_file():
        return "resume", loaded.step
    return "restart", loaded.step


def _eval_key(loaded, how: _Sampling) -> dict:
    return {"model_step": loaded.step, "num_samples": how.num, "seed": how.seed,
            "start_t": list(loaded.start_t), "inception_weights": how.weights_key}


def _cached_metrics(eval_dir: Path, key: dict) -> dict | None:
    f = eval_dir / METRICS_FILE
    if not (f.is_file() and (eval_dir / "report.png").is_file()):
        return None
    try:
        m = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    if m.get("format") != EVAL_FORMAT or m.get("samples", {}).get("source") != "generated":
        return None
    have = {"model_step": m.get("model_step"), "num_samples": m.get("num_samples"),
            "seed": m["samples"].get("seed"), "start_t": m["samples"].get("start_t"),
            "inception_weights": m.get("inception_weights")}
    return m if have == key else None
