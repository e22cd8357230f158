"""`sinddm eval-suite`: train and evaluate one run per picture and recipe, then tabulate.

Runs live in OUT/<recipe>/<image>/ (a complete run is reused, an interrupted one resumed),
their evaluations in .../eval/ (reused while the model, sampling and weights are the same);
OUT gets results.csv / results.md / results.json (`tables`) and samples.png: the protocol
for comparing recipes.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..checkpoint import load_model
from ..devices import resolve_device
from ..errors import UserError
from .cluster import ExecutorOptions, executor_options, gpu_slots, import_submitit, run_jobs, visible_gpu_ids
from .report import render_suite_samples
from .run import DEFAULT_NUM, check_inception_weights, weights_key
from .suite_job import Sampling, cached_metrics, eval_key, result_row, run_job, run_state, train_and_evaluate
from .tables import missing_row, paired_rows, write_tables

DEFAULT_OUT = Path("runs") / "eval-suite"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def run_suite(images_dir: str | Path, configs: Sequence[str | Path], out: str | Path | None = None, *,
              steps: int | None = None, num: int = DEFAULT_NUM, seed: int = 0, baseline: str | None = None,
              inception_weights: str | Path | None = None, device: str = "auto", batch_size: int | None = None,
              precision: str = "auto", progress: bool = True, executor: str | ExecutorOptions = "inline",
              threads: int | None = None, log: Callable[[str], None] = _stderr) -> dict:
    """Train (or reuse, or resume) and evaluate a run per picture in `images_dir` and recipe in
    `configs` (YAML files; a recipe is named after its file), then write the tables and
    samples.png into `out` (default runs/eval-suite). `steps` overrides the recipes' training
    steps; `baseline` names the recipe the others are compared with sample by sample (default:
    the first of several). Everything is checked before the first training starts; `log` gets
    a line per step. Returns results.json's content; its 'missing' lists the jobs that failed.

    `executor` ('inline', 'local', 'slurm' or ExecutorOptions): 'inline' runs the jobs one after
    another in this process; the others run each (picture, recipe) job in a process of its own
    through submitit (`cluster.run_jobs`), logging into OUT/logs/<recipe>/<image>.log, skip the
    finished ones and go on past a failed one. `threads`: torch's CPU threads in each job."""
    opts = executor if isinstance(executor, ExecutorOptions) else executor_options(executor=executor)
    if opts.executor != "inline":
        import_submitit()
    dev = resolve_device(str(device)) if opts.executor != "slurm" else _check_device_name(str(device))
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
    how = Sampling(num, seed, str(device), dev, batch_size, precision, inception_weights,
                   weights_key(inception_weights), progress)
    plan = [(r, img) for r in recipes for img in images]
    _check_pictures(images, {cfg.image.max_pixels for _, _, cfg in recipes})
    if opts.executor == "local":
        gpu_slots(opts, str(device), visible_gpu_ids())  # enough GPUs for --jobs, before anything runs
    # Check every existing run before the first (long) training starts.
    states = {(name, img): run_state(out / name / img.stem, cfg, img) for (name, _, cfg), img in plan}
    if opts.executor == "inline":
        results = _run_inline(plan, states, out, how, threads, log)
    else:
        results = _run_jobs(plan, states, out, how, opts, threads, log)
    rows, figure, evals = [], [], {}
    for (name, _, _), img in plan:
        row, m, entry = results[(name, img)]
        rows.append(row)
        evals[(name, img.name)] = m
        if entry is not None:
            figure.append(entry)
    paired = paired_rows(evals, baseline, names, [img.name for img in images]) if baseline else []
    doc = write_tables(out, rows, recipes, num=num, seed=seed, baseline=baseline, paired=paired)
    render_suite_samples(out / "samples.png", figure)
    return doc


def _check_device_name(name: str) -> torch.device:
    """For jobs that run elsewhere (SLURM): a valid name; the work here (reading runs) is on the CPU."""
    if name not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", name):
        raise UserError(f"--device {name}: unknown device; use auto, cpu or cuda")
    return torch.device("cpu")


def _run_inline(plan, states, out: Path, how: Sampling, threads: int | None, log) -> dict:
    """Every job in this process, one after another (an error stops the suite)."""
    if threads:
        torch.set_num_threads(threads)
    results = {}
    for k, ((name, cfg_path, cfg), img) in enumerate(plan, start=1):
        tag = f"[{k}/{len(plan)}] {name} / {img.name}"
        run = out / name / img.stem
        train_s, loaded, m = train_and_evaluate(tag, cfg_path, cfg.train.steps, img, run, states[(name, img)],
                                                how, log)
        row, entry = result_row(name, img, loaded, m, train_s, run / "eval")
        results[(name, img)] = (row, m, entry)
    return results


def _run_jobs(plan, states, out: Path, how: Sampling, opts: ExecutorOptions, threads: int | None, log) -> dict:
    """Every unfinished job through submitit; then the tables' rows from what the run folders hold."""
    (out / "logs").mkdir(parents=True, exist_ok=True)
    suite_log = open(out / "logs" / "suite.log", "a", buffering=1)

    def both(line: str) -> None:
        log(line)
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", file=suite_log)

    cpu = torch.device("cpu")
    specs, keys = [], []
    try:
        both(f"eval-suite: {len(plan)} jobs, executor {opts.executor}, at most {opts.jobs} at once")
        for k, ((name, cfg_path, cfg), img) in enumerate(plan, start=1):
            tag, run = f"[{k}/{len(plan)}] {name} / {img.name}", out / name / img.stem
            job_log = out / "logs" / name / f"{img.stem}.log"
            if states[(name, img)][0] == "complete" and _finished(run, cfg.train.steps, how, cpu):
                both(f"{tag}: finished, skipped (log {job_log})")
                continue
            keys.append((name, img))
            specs.append({"tag": tag, "config": str(cfg_path.resolve()), "steps": cfg.train.steps,
                          "image": str(img.resolve()), "run": str(run.resolve()), "state": states[(name, img)],
                          "log": str(job_log.resolve()), "threads": threads, "num": how.num, "seed": how.seed,
                          "device_name": how.device_name, "batch_size": how.batch_size, "precision": how.precision,
                          "inception_weights": (str(Path(how.inception_weights).resolve())
                                                if how.inception_weights else None)})
        outcomes = (run_jobs(run_job, specs, opts, out / "logs" / "submitit", how.device_name, both)
                    if specs else {})
    finally:
        suite_log.close()
    done = {keys[i]: o for i, o in outcomes.items()}
    results = {}
    for (name, _, cfg), img in plan:
        run = out / name / img.stem
        ok, value = done.get((name, img), (True, None))
        m = _finished(run, cfg.train.steps, how, cpu)
        if m is None:
            why = value if not ok else "no evaluation in the run folder"
            results[(name, img)] = (missing_row(name, img.name, why), None, None)
            continue
        row, entry = result_row(name, img, load_model(run, cpu), m, value if ok else None, run / "eval")
        results[(name, img)] = (row, m, entry)
    return results


def _finished(run: Path, steps: int, how: Sampling, device) -> dict | None:
    """The run's cached metrics when it is trained to `steps` and evaluated the way `how` says, else None."""
    from ..checkpoint import MODEL_FILE

    if not (run / MODEL_FILE).is_file():
        return None
    loaded = load_model(run / MODEL_FILE, device)
    return cached_metrics(run / "eval", eval_key(loaded, how)) if loaded.step == steps else None


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
        if name == "logs":
            raise UserError(f"--config '{p}': a recipe may not be named 'logs' (the suite keeps its job logs in "
                            "OUT/logs); rename the file")
        seen.add(name)
        out.append((name, Path(p), cfg))
    return out
