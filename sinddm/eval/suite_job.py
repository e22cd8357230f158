"""One eval-suite job: train (or reuse, or resume) one run folder and evaluate it.

`train_and_evaluate` is what every executor runs for a (picture, recipe) pair: in the suite's
process (`inline`) or, through `run_job`, in a process of its own (submitit's local or SLURM
executor) that writes everything it prints into the job's log file. `run_state`,
`cached_metrics` and `result_row` let the suite decide, before and after the jobs, what is
finished and what goes into the tables.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..checkpoint import load_model
from ..errors import UserError
from .cluster import usable_cpus
from .report import SUITE_SAMPLES_PER_ROW
from .run import evaluate_run, read_sample_dir, weights_key
from .schema import EVAL_FORMAT, METRICS_FILE, TABLE_METRICS


@dataclass
class Sampling:
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


def train_and_evaluate(tag: str, cfg_path: Path, steps: int, img: Path, run: Path, state: tuple[str, int],
                       how: Sampling, log: Callable[[str], None]) -> tuple[float | None, object, dict]:
    """Train (unless complete) and evaluate (unless cached) one run: (training seconds, model, metrics)."""
    mode, step = state
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
    m = cached_metrics(eval_dir, eval_key(loaded, how))
    if m is None:
        log(f"{tag}: evaluating {how.num} samples")
        m = evaluate_run(loaded, eval_dir, num=how.num, seed=how.seed, samples_dir=None, start_t=None,
                         device=how.device, batch_size=how.batch_size, precision=how.precision,
                         inception_weights=how.inception_weights, progress=how.progress)
    else:
        log(f"{tag}: reusing {eval_dir / METRICS_FILE}")
    return train_s, loaded, m


def result_row(name: str, img: Path, loaded, m: dict, train_s: float | None,
               eval_dir: Path) -> tuple[dict, tuple | None]:
    """A finished run's table row and its samples.png entry (None without samples)."""
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
    return row, entry


def _train_run(image: Path, config_path: Path, run_dir: Path, *, steps: int, mode: str, device: str, seed: int,
               precision: str, quiet: bool) -> None:
    """Train one run folder to `steps` steps: from scratch (mode 'new'; 'restart' replaces what an
    interrupted first training left) or from its checkpoint (mode 'resume').

    The one place eval-suite trains: `runs.train_run`, with every check `sinddm train` makes."""
    from ..runs import train_run

    train_run(image, run_dir, None if mode == "resume" else config_path, steps=steps, seed=seed, device=device,
              precision=precision, resume=mode == "resume", overwrite=mode == "restart", progress=not quiet)


# -- a job in a process of its own ---------------------------------------------------------

def run_job(spec: dict) -> float | None:
    """The function submitit runs for one (picture, recipe) pair; returns the training seconds.

    `spec` (plain values): tag, config, steps, image, run, state, log (the job's log file, appended
    to), threads (torch's CPU threads; None: the CPUs this process may use) and `Sampling`'s fields
    but `device`, which is resolved here, where the job runs. Everything the job prints goes to its
    log; an error ends it with one 'error: ...' line there and is raised again, so the executor
    records the job as failed."""
    from ..devices import resolve_device

    log_path = Path(spec["log"])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        def log(line: str) -> None:
            print(line, file=f, flush=True)

        threads = spec.get("threads") or usable_cpus()
        torch.set_num_threads(threads)
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        log(f"{spec['tag']}: pid {os.getpid()}, {threads} CPU threads, CUDA_VISIBLE_DEVICES={gpus!r}")
        try:
            dev = resolve_device(spec["device_name"])
            how = Sampling(spec["num"], spec["seed"], spec["device_name"], dev, spec["batch_size"],
                           spec["precision"], spec["inception_weights"], weights_key(spec["inception_weights"]),
                           progress=False)
            train_s, _, _ = train_and_evaluate(spec["tag"], Path(spec["config"]), spec["steps"], Path(spec["image"]),
                                               Path(spec["run"]), tuple(spec["state"]), how, log)
        except BaseException as e:
            if not isinstance(e, UserError):
                traceback.print_exc(file=f)
            log(f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": "))
            raise
        log(f"{spec['tag']}: done")
        return train_s


# -- what exists -----------------------------------------------------------------------------

def _same_except_steps(a, b) -> bool:
    import copy

    a, b = copy.deepcopy(a), copy.deepcopy(b)
    a.train.steps = b.train.steps = 0
    return a == b


def run_state(run: Path, cfg, image: Path) -> tuple[str, int]:
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


def eval_key(loaded, how: Sampling) -> dict:
    return {"model_step": loaded.step, "num_samples": how.num, "seed": how.seed,
            "start_t": list(loaded.start_t), "inception_weights": how.weights_key}


def cached_metrics(eval_dir: Path, key: dict) -> dict | None:
    """eval/metrics.json when it was made the way `key` says (and report.png is there), else None."""
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
