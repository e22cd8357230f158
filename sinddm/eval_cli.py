"""`sinddm eval` and `sinddm eval-suite`: quality metrics, a report page, a benchmark table.

`eval RUN_DIR` draws samples (or takes the PNGs of --samples DIR), computes the
metrics of `sinddm.metrics` against the run's training image (its finest pyramid
level) and writes metrics.json and report.png. `eval-suite IMAGES_DIR --config YAML
[YAML ...]` trains one run per image and recipe through `sinddm train`'s own code
path (reusing complete runs, resuming interrupted ones), evaluates each, and writes
results.csv / results.md / results.json: the protocol for comparing recipes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from .cli import _positive_int, _prepare_out, _seed
from .errors import UserError

EVAL_FORMAT = "sinddm-eval/1"
DEFAULT_NUM = 50
SKIP_NAMES = {"grid.png"}  # what `sinddm sample` writes beside the samples

# metric → (label in tables and the report, one-line meaning)
METRIC_INFO = {
    "pixel_diversity": ("pixel div.", "per-pixel grey std over samples / training image std (0 = all alike)"),
    "swd": ("patch SWD", "sliced W1 of 7x7 patches, up to 4 pyramid levels (0 = same patch statistics)"),
    "copy_mean_region": ("copy: mean region", "size of the coherent NNF region a pixel lies in (1 = one copied block)"),
    "copy_large_fraction": ("copy: in large regions", "share of pixels in coherent regions >= 5% of the image"),
    "copy_max_region": ("copy: largest region", "largest coherent NNF region, fraction of the image"),
    "sifid64": ("SIFID-64", "single-image FID, InceptionV3 before the 1st max pool (64 ch)"),
    "sifid192": ("SIFID-192", "single-image FID, InceptionV3 before the 2nd max pool (192 ch)"),
}
TABLE_METRICS = ["pixel_diversity", "swd", "copy_mean_region", "copy_large_fraction", "sifid64", "sifid192"]


# ---------------------------------------------------------------------------------------
# parsers
# ---------------------------------------------------------------------------------------

def add_parsers(sub) -> None:
    e = sub.add_parser(
        "eval", help="quality metrics of a trained model: metrics.json and a report page",
        description="Draw NUM samples from RUN_DIR (or take the PNGs in --samples DIR) and measure them "
                    "against the training image: pixel diversity, patch sliced-Wasserstein distance, "
                    "copying (nearest-neighbour-field regions) and SIFID at 64 and 192 channels (when "
                    "InceptionV3 weights are available locally). Writes metrics.json, report.png and, "
                    "for drawn samples, samples/ into --out.")
    e.add_argument("run", metavar="RUN_DIR", help="a run folder, model.safetensors or checkpoint.pt")
    e.add_argument("--num", type=_positive_int("--num"),
                   help=f"samples to draw (default {DEFAULT_NUM}); with --samples, the first NUM files")
    e.add_argument("--seed", type=_seed, default=0, help="sampling seed (default 0)")
    e.add_argument("--out", help="output folder (default: RUN_DIR/eval)")
    e.add_argument("--samples", metavar="DIR", help="evaluate the PNG files in DIR (except grid.png) "
                   "instead of drawing samples")
    add_common_arguments(e)
    e.add_argument("--start-t", nargs="+", type=int, metavar="T",
                   help="sampling start timesteps T[1] .. T[N-1] (or T[0] .. T[N-1]), as in 'sinddm sample'")
    e.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")

    s = sub.add_parser(
        "eval-suite", help="train and evaluate one run per image and recipe; one comparison table",
        description="For every picture in IMAGES_DIR and every --config recipe: train a run with 'sinddm "
                    "train' (a complete run in the same place is reused, an interrupted one resumed), "
                    "evaluate it like 'sinddm eval', and write OUT/results.csv, results.md, "
                    "results.json and samples.png (each run's first samples beside its training image). "
                    "Runs live in OUT/<recipe>/<image>/, their evaluations in .../eval/.")
    s.add_argument("images", metavar="IMAGES_DIR", help="a folder of training pictures")
    s.add_argument("--config", required=True, nargs="+", metavar="YAML",
                   help="one or more recipes (YAML configs) to compare")
    s.add_argument("--out", help="suite folder (default: runs/eval-suite)")
    s.add_argument("--steps", type=_positive_int("--steps"), help="training steps (overrides the configs)")
    s.add_argument("--num", type=_positive_int("--num"), default=DEFAULT_NUM,
                   help=f"samples per run (default {DEFAULT_NUM})")
    s.add_argument("--seed", type=_seed, default=0, help="training and sampling seed (default 0)")
    s.add_argument("--baseline", metavar="RECIPE",
                   help="recipe (config file name without .yaml) that results.md compares every other recipe "
                        "with, sample by sample, as 'sinddm eval-compare' (default: the first --config)")
    add_common_arguments(s)


def add_common_arguments(p) -> None:
    p.add_argument("--inception-weights", metavar="FILE",
                   help="pytorch-fid's pt_inception-2015-12-05-*.pth (default: looked up in torch's hub "
                        "cache; without it SIFID is skipped; nothing is downloaded)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    p.add_argument("--batch-size", type=_positive_int("--batch-size"),
                   help="samples per sampling batch (default as in 'sinddm sample': as many as fit in GPU memory, 4 on a CPU)")
    p.add_argument("--precision", choices=["auto", "fp32", "fast"], default="auto",
                   help="sampling (and training) precision, as in 'sinddm sample' (default auto)")
    p.add_argument("--threads", type=_positive_int("--threads"),
                   help="CPU threads for torch (default: torch's; 1 is often faster on a busy machine)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


# ---------------------------------------------------------------------------------------
# sinddm eval
# ---------------------------------------------------------------------------------------

def _read_sample_dir(folder: Path, num: int | None) -> tuple[list[np.ndarray], list[str]]:
    from .image_io import load_rgb

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


def _weights_key(inception_weights) -> str | None:
    from .eval.inception import find_inception_weights

    path, _ = find_inception_weights(inception_weights)
    return str(Path(path).resolve()) if path else None


def evaluate_run(loaded, out: Path, *, num: int | None, seed: int, samples_dir: str | None,
                 start_t: list[int] | None, device, batch_size: int | None, precision: str,
                 inception_weights: str | None, progress: bool) -> dict:
    """Draw (or read) samples, measure them, write metrics.json and report.png into `out`."""
    import torch

    from .cli import write_outputs
    from .image_io import to_uint8
    from .eval.metrics import evaluate
    from .pipeline import generate

    reference = loaded.pyramid.levels[-1]
    t0 = time.perf_counter()
    if samples_dir is not None:  # read (and checked) before the output folder exists
        samples, names = _read_sample_dir(Path(samples_dir), num)
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
    (out / "metrics.json").write_text(json.dumps(_json_clean(metrics), indent=1) + "\n")
    loss_csv = _loss_csv_for(loaded.path)
    render_report(out / "report.png", reference, samples, metrics, loss_csv,
                  title=f"sinddm eval: {_run_name(loaded.path)} (step {loaded.step})")
    return metrics


def _json_clean(x):
    """NaN/inf → None (JSON has no NaN)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_clean(v) for v in x]
    return x


def _run_name(model_path: Path) -> str:
    p = Path(model_path)
    return p.parent.name if p.name in ("model.safetensors", "checkpoint.pt") else p.name


def _loss_csv_for(model_path: Path) -> Path | None:
    p = Path(model_path)
    f = p.parent / "loss.csv"
    return f if f.is_file() else None


def _summary_pairs(m: dict, short: bool = False) -> list[tuple[str, str]]:
    """(label, value text) per metric; `short` leaves the reasons for skipping out."""
    agg, skipped = m["aggregate"], m["skipped"]
    pairs = []
    for key in TABLE_METRICS:
        label = METRIC_INFO[key][0]
        v = agg.get(key)
        if key == "pixel_diversity":
            why = "" if short else f" ({skipped.get(key)})"
            pairs.append((label, f"{v:.4g}" if v is not None else f"skipped{why}"))
        elif v is None:
            why = skipped.get("sifid", "no values") if key.startswith("sifid") else "no values"
            pairs.append((label, "skipped" + ("" if short else f" ({why})")))
        else:
            pairs.append((label, f"{v['mean']:.4g} ± {v['std']:.2g}  (min {v['min']:.4g}, max {v['max']:.4g})"))
    return pairs


def _summary_lines(m: dict, short: bool = False) -> list[str]:
    return [f"  {label:<22} {text}" for label, text in _summary_pairs(m, short)]


def _check_weights(path: str | None) -> None:
    """An explicit --inception-weights file must exist and fit, before any long work starts."""
    from .eval.inception import load_inception

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


def _apply_threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def cmd_eval(args) -> int:
    from .cli import load_run, parse_start_t
    from .training import resolve_device

    device = resolve_device(args.device)
    _apply_threads(args)
    _check_weights(args.inception_weights)
    if args.samples is not None and not Path(args.samples).is_dir():
        raise UserError(f"--samples '{args.samples}': no such folder; give the folder of sample PNGs")
    loaded = load_run(args.run, device)
    start_t = parse_start_t(args.start_t, loaded.start_t) if args.samples is None else None
    default_out = (loaded.path.parent if loaded.path.name in ("model.safetensors", "checkpoint.pt")
                   else Path(".")) / "eval"
    out = Path(args.out) if args.out else default_out
    _prepare_out(out, args.overwrite, "output folder", remove=False)
    m = evaluate_run(loaded, out, num=args.num, seed=args.seed, samples_dir=args.samples, start_t=start_t,
                     device=device, batch_size=args.batch_size, precision=args.precision,
                     inception_weights=args.inception_weights, progress=not args.quiet)
    shw, thw = m["sample_hw"], m["training_image_hw"]
    # Patch SWD, copying and SIFID compare patch statistics, so other sizes are fair; say which.
    of = "" if shw == thw else (" of mixed sizes" if shw is None else f" of {shw[1]}x{shw[0]} px")
    print(f"{m['num_samples']} samples{of} vs the training image "
          f"({thw[1]}x{thw[0]} px), metrics in "
          f"{m['timing_s']['total']:.1f} s:", file=sys.stderr)
    print("\n".join(_summary_lines(m, short=True)), file=sys.stderr)
    for k, why in m["skipped"].items():
        if k != "lpips_diversity":
            print(f"  {k} skipped: {why}", file=sys.stderr)
    print(f"wrote {out / 'metrics.json'} and {out / 'report.png'}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------
# sinddm eval-suite
# ---------------------------------------------------------------------------------------

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
    from .image_io import load_rgb
    from .pyramid import build_pyramid

    for img in images:
        picture = load_rgb(img)
        for cap in sorted(caps):
            build_pyramid(picture, cap, name=f"image '{img}'")


def _recipes(paths: list[str], steps: int | None) -> list[tuple[str, Path, object]]:
    from .config import load_config

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
    from .checkpoint import MODEL_FILE, TRAIN_STATE_FILE, load_model
    from .config import load_config
    from .image_io import load_rgb
    from .pyramid import build_pyramid

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


def _train(image: Path, cfg_path: Path, run: Path, steps: int, args, mode: str) -> None:
    from .cli import build_parser, cmd_train

    argv = ["train", str(image), "--out", str(run), "--steps", str(steps), "--device", args.device,
            "--seed", str(args.seed), "--precision", args.precision]
    if mode == "resume":
        argv.append("--resume")
    else:
        argv += ["--config", str(cfg_path)]
        if mode == "restart":
            argv.append("--overwrite")
    if args.quiet:
        argv.append("--quiet")
    cmd_train(build_parser().parse_args(argv))


def _eval_key(loaded, args, weights_key) -> dict:
    return {"model_step": loaded.step, "num_samples": args.num, "seed": args.seed,
            "start_t": list(loaded.start_t), "inception_weights": weights_key}


def _cached_metrics(eval_dir: Path, key: dict) -> dict | None:
    f = eval_dir / "metrics.json"
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


def cmd_eval_suite(args) -> int:
    from .checkpoint import load_model
    from .training import resolve_device

    device = resolve_device(args.device)
    _apply_threads(args)
    _check_weights(args.inception_weights)
    images = _list_images(Path(args.images))
    recipes = _recipes(args.config, args.steps)
    names = [name for name, _, _ in recipes]
    if args.baseline is not None and args.baseline not in names:
        raise UserError(f"--baseline '{args.baseline}': not one of the recipes ({', '.join(names)}); "
                        "give a config's file name without .yaml")
    baseline = args.baseline or (names[0] if len(names) > 1 else None)
    out = Path(args.out) if args.out else Path("runs") / "eval-suite"
    if out.exists() and not out.is_dir():
        raise UserError(f"suite folder '{out}': exists and is not a folder; choose another --out")
    weights_key = _weights_key(args.inception_weights)
    plan = [(r, img) for r in recipes for img in images]
    _check_pictures(images, {cfg.image.max_pixels for _, _, cfg in recipes})
    # Check every existing run before the first (long) training starts.
    states = {}
    for (name, _, cfg), img in plan:
        states[(name, img)] = _run_state(out / name / img.stem, cfg, img)
    rows, figure, evals = [], [], {}
    for k, ((name, cfg_path, cfg), img) in enumerate(plan, start=1):
        run = out / name / img.stem
        state, step = states[(name, img)]
        steps = cfg.train.steps
        print(f"[{k}/{len(plan)}] {name} / {img.name}: "
              + {"new": f"training {steps} steps", "restart": f"training {steps} steps (restart)",
                 "resume": f"resuming at step {step} -> {steps}", "complete": f"reusing the run (step {step})"}[state],
              file=sys.stderr)
        train_s = None
        if state != "complete":
            t0 = time.perf_counter()
            _train(img, cfg_path, run, steps, args, state)
            train_s = time.perf_counter() - t0
        loaded = load_model(run, device)
        eval_dir = run / "eval"
        key = _eval_key(loaded, args, weights_key)
        m = _cached_metrics(eval_dir, key)
        if m is None:
            print(f"[{k}/{len(plan)}] {name} / {img.name}: evaluating {args.num} samples", file=sys.stderr)
            m = evaluate_run(loaded, eval_dir, num=args.num, seed=args.seed, samples_dir=None, start_t=None,
                             device=device, batch_size=args.batch_size, precision=args.precision,
                             inception_weights=args.inception_weights, progress=not args.quiet)
        else:
            print(f"[{k}/{len(plan)}] {name} / {img.name}: reusing {eval_dir / 'metrics.json'}", file=sys.stderr)
        h, w = m["training_image_hw"]
        row = {"recipe": name, "image": img.name, "size": f"{w}x{h}", "scales": loaded.pyramid.n_scales,
               "steps": loaded.step, "train_s": train_s, "samples": m["num_samples"]}
        for key_ in TABLE_METRICS:
            v = m["aggregate"].get(key_)
            row[key_] = v if key_ == "pixel_diversity" else (v["mean"] if v else None)
        row["skipped"] = m.get("skipped", {})
        rows.append(row)
        evals[(name, img.name)] = m
        if (eval_dir / "samples").is_dir():
            label = [f"{name} / {img.stem}", f"{loaded.step} steps, SWD {row['swd']:.4g}"]
            shown = min(SUITE_SAMPLES_PER_ROW, m["num_samples"])  # read only the PNGs the figure shows
            figure.append((label, loaded.pyramid.levels[-1], _read_sample_dir(eval_dir / "samples", shown)[0]))
    paired = _paired_rows(evals, baseline, names, [img.name for img in images]) if baseline else []
    write_tables(out, rows, recipes, args, baseline, paired)
    render_suite_samples(out / "samples.png", figure)
    print(f"wrote {out / 'results.csv'}, {out / 'results.md'}, {out / 'results.json'} and {out / 'samples.png'}",
          file=sys.stderr)
    return 0


TABLE_COLUMNS = ["recipe", "image", "size", "scales", "steps", "train_s", "samples"] + TABLE_METRICS


def _mean_rows(rows: list[dict], recipes) -> list[dict]:
    out = []
    for name, _, _ in recipes:
        mine = [r for r in rows if r["recipe"] == name]
        if len(mine) < 2:
            continue
        mean = {"recipe": name, "image": "(mean)", "size": "", "scales": "", "steps": "", "samples": "",
                "train_s": None}
        ts = [r["train_s"] for r in mine if r["train_s"] is not None]
        mean["train_s"] = sum(ts) / len(ts) if ts else None
        for k in TABLE_METRICS:
            vals = [r[k] for r in mine if r[k] is not None]
            mean[k] = sum(vals) / len(vals) if len(vals) == len(mine) else None
        out.append(mean)
    return out


PAIRED_METRICS = ["swd", "sifid64", "sifid192"]


def _paired_rows(evals: dict, baseline: str, recipes: list[str], images: list[str]) -> list[dict]:
    """Per recipe and image: paired differences against the baseline recipe's run on that image;
    with several images a '(mean)' row averages them (standard errors combined as independent)."""
    from .eval_compare import compare

    out = []
    for name in recipes:
        if name == baseline:
            continue
        mine = []
        for img in images:
            c = compare(evals[(baseline, img)], evals[(name, img)], f"{baseline}/{img}", f"{name}/{img}")
            row = {"recipe": name, "image": img, "pairs": c["pairs"]}
            for k in PAIRED_METRICS:
                d = c["metrics"][k]
                row[k] = None if d is None else {"mean": d["mean"], "se": d["se"]}
            pd = c["pixel_diversity"]
            row["pixel_diversity"] = (None if pd["base"] is None or pd["other"] is None
                                      else pd["other"] - pd["base"])
            mine.append(row)
        out += mine
        if len(mine) > 1:
            mean = {"recipe": name, "image": "(mean)", "pairs": sum(r["pairs"] for r in mine)}
            for k in PAIRED_METRICS:
                ds = [r[k] for r in mine]
                mean[k] = None if None in ds else {
                    "mean": sum(d["mean"] for d in ds) / len(ds),
                    "se": math.sqrt(sum(d["se"] ** 2 for d in ds)) / len(ds)}
            pds = [r["pixel_diversity"] for r in mine]
            mean["pixel_diversity"] = None if None in pds else sum(pds) / len(pds)
            out.append(mean)
    return out


def _paired_lines(baseline: str, paired: list[dict], args) -> list[str]:
    from .eval_compare import plus_minus

    metrics = [k for k in PAIRED_METRICS if any(r[k] is not None for r in paired)]
    lines = ["", f"## Paired differences against `{baseline}`", "",
             f"Each run's per-sample metric minus that of the `{baseline}` run on the same picture, averaged "
             f"over the {args.num} samples; every run draws its samples with seed {args.seed}, so sample i "
             "of two runs starts from the same noise and most of the sample-to-sample spread cancels. "
             "± is the standard error of that mean (negative = better than the baseline for these "
             "metrics); `sinddm eval-compare` gives the full comparison of two runs.", "",
             "| recipe | image | " + " | ".join(f"Δ {METRIC_INFO[k][0]}" for k in metrics)
             + f" | Δ {METRIC_INFO['pixel_diversity'][0]} |",
             "|---|---|" + "---:|" * (len(metrics) + 1)]
    for r in paired:
        cells = ["–" if r[k] is None else plus_minus(r[k]["mean"], r[k]["se"]) for k in metrics]
        pd = r["pixel_diversity"]
        cells.append("–" if pd is None else f"{pd:+.3f}")
        lines.append(f"| {r['recipe']} | {r['image']} | " + " | ".join(cells) + " |")
    return lines


def _fmt_cell(key: str, v) -> str:
    if v is None:
        return "–"
    if key == "train_s":
        return f"{v:.0f}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_tables(out: Path, rows: list[dict], recipes, args, baseline: str | None = None,
                 paired: list[dict] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    means = _mean_rows(rows, recipes)
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(TABLE_COLUMNS)
    for r in rows + means:
        wr.writerow(["" if r.get(c) is None else (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c])
                     for c in TABLE_COLUMNS])
    (out / "results.csv").write_text(buf.getvalue())

    headers = {"train_s": "train s", "pixel_diversity": METRIC_INFO["pixel_diversity"][0]}
    headers.update({k: METRIC_INFO[k][0] for k in TABLE_METRICS})
    lines = ["# sinddm eval-suite", "",
             f"Recipes: {', '.join(f'`{n}` ({p})' for n, p, _ in recipes)}; {args.num} samples per run, "
             f"seed {args.seed}. Lower is better for patch SWD and SIFID; copy columns measure how much of a "
             "sample is one coherent block of the training image (lower = less copying); pixel diversity is 0 "
             "when every sample is the same picture and grows with variation (noise scores about 1 or more).", "",
             "| " + " | ".join(headers.get(c, c) for c in TABLE_COLUMNS) + " |",
             "|" + "|".join("---" if c in ("recipe", "image") else "---:" for c in TABLE_COLUMNS) + "|"]
    for r in rows + means:
        lines.append("| " + " | ".join(_fmt_cell(c, r.get(c)) for c in TABLE_COLUMNS) + " |")
    reasons = sorted({f"{k}: {v}" for r in rows for k, v in r["skipped"].items()})
    if reasons:
        lines += ["", "Skipped: " + "; ".join(reasons) + "."]
    lines += ["", "Metric definitions: " + "; ".join(f"**{METRIC_INFO[k][0]}**: {METRIC_INFO[k][1]}"
                                                     for k in TABLE_METRICS) + "."]
    if paired:
        lines += _paired_lines(baseline, paired, args)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    doc = {"rows": rows, "means": means}
    if paired:
        doc["paired"] = {"baseline": baseline, "rows": paired}
    (out / "results.json").write_text(json.dumps(_json_clean(doc), indent=1) + "\n")


# ---------------------------------------------------------------------------------------
# the report page (Pillow only)
# ---------------------------------------------------------------------------------------

def _font(size: int = 13):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _fit(img, max_w: int, max_h: int):
    from PIL import Image

    k = min(max_w / img.width, max_h / img.height)
    size = (max(1, round(img.width * k)), max(1, round(img.height * k)))
    return img.resize(size, Image.LANCZOS if k < 1 else Image.NEAREST)


def _bar_chart(values: list[float | None], title: str, size: tuple[int, int]):
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    f, fs = _font(13), _font(11)
    d.text((w // 2, 4), title, fill="black", font=f, anchor="ma")
    left, right, top, bottom = 52, 10, 24, 22
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    vals = [v if v is not None and math.isfinite(v) else None for v in values]
    finite = [v for v in vals if v is not None]
    if not finite:
        d.text((w // 2, h // 2), "skipped", fill=(120, 120, 120), font=f, anchor="mm")
        return img
    lo = min(0.0, min(finite))
    hi = max(finite)
    hi = hi if hi > lo else lo + 1.0
    pw, ph = w - left - right, h - top - bottom
    n = len(vals)
    bw = pw / n

    def ypix(v):
        return top + (1 - (v - lo) / (hi - lo)) * ph

    for i, v in enumerate(vals):
        if v is None:
            continue
        x0 = left + i * bw + (0.15 * bw if bw > 3 else 0)
        x1 = max(x0 + 1, left + (i + 1) * bw - (0.15 * bw if bw > 3 else 0))
        ya, yb = sorted((ypix(v), ypix(0)))
        d.rectangle([x0, ya, max(x0, x1 - 1), yb], fill=(31, 119, 180))
    mean = sum(finite) / len(finite)
    y = ypix(mean)
    for x in range(left, w - right, 8):
        d.line([x, y, min(x + 4, w - right), y], fill=(214, 39, 40), width=1)
    for v in (lo, hi):
        d.text((left - 4, ypix(v)), f"{v:.3g}", fill="black", font=fs, anchor="rm")
    d.text((w - right, h - bottom + 4), f"mean {mean:.4g} (red), {len(finite)} samples", fill=(214, 39, 40),
           font=fs, anchor="ra")
    d.text((left, h - bottom + 4), "sample 0 ->", fill="black", font=fs, anchor="la")
    return img


def _loss_image(loss_csv: Path | None, size: tuple[int, int]):
    from PIL import Image, ImageDraw

    from .plots import loss_curve

    steps, losses = [], []
    if loss_csv is not None:
        try:
            for line in loss_csv.read_text().splitlines()[1:]:
                s, l = line.split(",")[:2]
                steps.append(int(s))
                losses.append(float(l))
        except (OSError, ValueError):
            steps, losses = [], []
    if not steps:
        img = Image.new("RGB", size, "white")
        ImageDraw.Draw(img).text((size[0] // 2, size[1] // 2), "no loss.csv in the run folder",
                                 fill=(120, 120, 120), font=_font(13), anchor="mm")
        return img
    return loss_curve(steps, losses, size=size)


def render_report(path: Path, reference: np.ndarray, samples: list[np.ndarray], metrics: dict,
                  loss_csv: Path | None, title: str) -> None:
    """One page: training image, sample grid, aggregate metrics, loss curve, per-sample bars."""
    from PIL import Image, ImageDraw

    from .image_io import make_grid

    W, pad = 1280, 16
    f_title, f, fs = _font(18), _font(13), _font(12)

    # Row 1: training image | samples.
    row_h = 300
    ref_img = _fit(Image.fromarray(reference), 360, row_h)
    n = len(samples)
    ncol = max(1, min(n, math.ceil(math.sqrt(n * 1.8))))
    grid = Image.fromarray(make_grid(samples, pad=2, ncol=ncol))
    grid_img = _fit(grid, W - 3 * pad - ref_img.width, row_h)

    # Row 2: aggregate text | loss curve.
    agg_pairs = _summary_pairs(metrics, short=True)
    info = [title,
            f"{metrics['num_samples']} samples ({metrics['samples']['source']}"
            + (f", seed {metrics['samples'].get('seed')}" if metrics["samples"].get("seed") is not None else "")
            + f"), training image {metrics['training_image_hw'][1]}x{metrics['training_image_hw'][0]} px",
            f"metrics took {metrics['timing_s']['total']:.1f} s"]
    loss = _loss_image(loss_csv, (560, 300))

    # Row 3: per-sample bars.
    rows = metrics["per_sample"]
    chart_keys = [k for k in ("swd", "copy_mean_region", "copy_large_fraction", "copy_max_region",
                              "sifid64", "sifid192")]
    cw, ch = (W - 4 * pad) // 3, 190
    charts = [_bar_chart([r.get(k) for r in rows], f"{METRIC_INFO[k][0]} per sample", (cw, ch))
              for k in chart_keys]

    legend = [f"{METRIC_INFO[k][0]}: {METRIC_INFO[k][1]}" for k in TABLE_METRICS + ["copy_max_region"]]
    skipped = [f"skipped {k}: {v}" for k, v in metrics.get("skipped", {}).items()]
    text_h = 18 * (len(legend) + len(skipped)) + pad
    H = (pad + 30 + 20 + row_h + pad + 300 + pad + 2 * (ch + pad) + text_h + pad)
    page = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(page)
    y = pad
    d.text((pad, y), title, fill="black", font=f_title)
    y += 30
    d.text((pad, y), f"training image ({reference.shape[1]}x{reference.shape[0]})", fill="black", font=fs)
    d.text((2 * pad + ref_img.width, y), f"samples 0..{n - 1} (row-major)", fill="black", font=fs)
    y += 20
    page.paste(ref_img, (pad, y))
    page.paste(grid_img, (2 * pad + ref_img.width, y))
    y += row_h + pad
    head = info[1:] + ["", "aggregate over samples (mean ± std):"]
    for i, line in enumerate(head):
        d.text((pad, y + 18 * i), line, fill="black", font=f)
    for i, (label, text) in enumerate(agg_pairs, start=len(head)):
        d.text((pad + 8, y + 18 * i), label, fill="black", font=f)
        d.text((pad + 175, y + 18 * i), text, fill="black", font=f)
    page.paste(loss, (W - pad - loss.width, y))
    y += 300 + pad
    for i, c in enumerate(charts):
        r, col = divmod(i, 3)
        page.paste(c, (pad + col * (cw + pad), y + r * (ch + pad)))
    y += 2 * (ch + pad)
    for i, line in enumerate(legend + skipped):
        d.text((pad, y + 18 * i), line, fill=(60, 60, 60) if i < len(legend) else (160, 60, 0), font=fs)
    page.save(path)


SUITE_SAMPLES_PER_ROW = 6


def render_suite_samples(path: Path, entries: list[tuple[list[str], np.ndarray, list[np.ndarray]]],
                         row_h: int = 128) -> None:
    """One row per run: its label lines, the training image, then its first samples, all at
    `row_h` px tall (small pictures are enlarged without smoothing), so recipes compare by eye."""
    from PIL import Image, ImageDraw

    if not entries:
        return
    pad, label_w = 8, 230
    rows = [[_fit(Image.fromarray(a), 4 * row_h, row_h) for a in [ref, *samples[:SUITE_SAMPLES_PER_ROW]]]
            for _, ref, samples in entries]
    width = label_w + max(sum(im.width + pad for im in row) for row in rows) + pad
    page = Image.new("RGB", (width, pad + len(rows) * (row_h + pad) + 16), "white")
    d = ImageDraw.Draw(page)
    f = _font(13)
    d.text((label_w, pad // 2), "training image, then the first samples", fill=(90, 90, 90), font=_font(12))
    for r, ((label, _, _), row) in enumerate(zip(entries, rows)):
        y = 16 + pad + r * (row_h + pad)
        for i, line in enumerate(label):
            d.text((pad, y + 18 * i), line, fill="black", font=f)
        x = label_w
        for i, im in enumerate(row):
            page.paste(im, (x, y))
            x += im.width + (2 * pad if i == 0 else pad)
    page.save(path)


COMMANDS = {"eval": cmd_eval, "eval-suite": cmd_eval_suite}
