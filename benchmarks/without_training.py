#!/usr/bin/env python3
"""Issue 29's protocol: trained (configs/cpu.yaml), hybrid (configs/hybrid-cpu.yaml) and
training-free models of the photographs in assets/photos, side by side.

    python benchmarks/without_training.py train  --threads 1          # both trainings per photo
    python benchmarks/without_training.py sample --threads 2          # 16 samples per kind + metrics
    python benchmarks/without_training.py table                       # the table and the figure
    python benchmarks/without_training.py sample --kinds hybrid --context-sigma 0 --variant tau0 --json J
    python benchmarks/without_training.py compare --variants "no context=J"   # variants, side by side

Every step is resumable: a finished training (its model.safetensors) or an evaluated kind (its
row in the JSON) is skipped. Training runs `sinddm train` in a child process, so its CPU seconds
(user + system, all threads) are measured apart from this script's; sampling is timed in a child
too. The same seeds everywhere: training seed 0, sampling seed 0, one batch size.
Results: benchmarks/results/without-training-DATE.json (one row per photo and kind), the figure
docs/images/without-training.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO / "assets/photos"
RESULTS = REPO / "benchmarks/results"
KINDS = {"trained": "configs/cpu.yaml", "hybrid": "configs/hybrid-cpu.yaml", "free": None}
MAX_PIXELS = 12000          # cpu.yaml's image size: the training-free model works at the same size
NUM = 16


def photos(names: list[str] | None) -> list[Path]:
    found = sorted(PHOTOS.glob("*.jpg"))
    if names:
        found = [p for p in found if p.stem in names]
    return found


def run_dir(root: Path, photo: Path, kind: str) -> Path:
    return root / f"{photo.stem}-{kind}"


def child_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def default_results(writing: bool) -> Path:
    """Today's results file, for the steps that write; for those that read, the newest one there is
    (a table made on another day than its runs), else today's."""
    today = RESULTS / f"without-training-{datetime.date.today()}.json"
    if writing or today.exists():
        return today
    dated = sorted(RESULTS.glob("without-training-[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9].json"))
    return dated[-1] if dated else today


def load_results(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {"date": str(datetime.date.today()), "machine": f"{os.cpu_count()}-core CPU", "rows": {}}


def save_results(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def train(args) -> None:
    data = load_results(args.json)
    for photo in photos(args.photos):
        for kind in ("trained", "hybrid"):
            if kind not in args.kinds:
                continue
            out = run_dir(args.runs, photo, kind)
            key = f"{photo.stem}/{kind}"
            if (out / "model.safetensors").exists() and "train_cpu_s" in data["rows"].get(key, {}):
                continue
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO))
            cmd = [sys.executable, "-m", "sinddm", "train", str(photo), "--config", str(REPO / KINDS[kind]),
                   "--out", str(out), "--seed", "0", "--quiet", "--overwrite"]
            print(f"{key}: training ({args.threads} thread(s)) ...", flush=True)
            c0, w0 = child_cpu_seconds(), time.perf_counter()
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall, cpu = time.perf_counter() - w0, child_cpu_seconds() - c0
            if res.returncode:
                print(f"{key}: training failed\n{res.stderr[-3000:]}", flush=True)
                continue
            row = data["rows"].setdefault(key, {})
            row.update(train_wall_s=round(wall, 1), train_cpu_s=round(cpu, 1), train_threads=args.threads,
                       train_load_after=round(os.getloadavg()[0], 2))
            save_results(args.json, data)
            print(f"{key}: {wall:.0f} s wall, {cpu:.0f} CPU s", flush=True)


def sample_one(spec: str, out: str, num: int, max_pixels: int, candidates: int,
               context_sigma: float | None = 1.0, patch_steps: int | None = None) -> dict:
    """In the child: `num` samples (seed 0) of a run folder or picture, timed, then every metric.
    `candidates` > 0 makes the patch denoiser's scales approximate (model.patch_candidates);
    `context_sigma` is τ of the blurry context (0: none); `patch_steps` overrides model.patch_steps.
    Both patch settings override the model's config (`hybrid.PATCH_SETTINGS`)."""
    sys.path.insert(0, str(REPO))
    import torch

    from sinddm import hybrid
    from sinddm.checkpoint import load_model
    from sinddm.eval.run import evaluate_run
    from sinddm.image_io import write_images
    from sinddm.pipeline import generate
    from sinddm.sources import is_picture, open_model

    hybrid.PATCH_SETTINGS = dict(hybrid.PATCH_SETTINGS, candidates=candidates or None,
                                 context_sigma=context_sigma or None)
    loaded = open_model(spec, max_pixels=max_pixels) if is_picture(spec) else load_model(spec)
    if patch_steps:
        loaded.config.model.patch_steps = patch_steps
    w0, c0 = time.perf_counter(), time.process_time()
    imgs = generate(loaded, num, loaded.pyramid.sizes_hw, loaded.start_t, seed=0, progress=False)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    write_images(Path(out) / "samples", imgs)
    m = evaluate_run(loaded, out, num=num, samples_dir=Path(out) / "samples", progress=False)["aggregate"]
    return {"sample_wall_s": round(wall, 1), "sample_cpu_s": round(cpu, 1), "sample_threads": torch.get_num_threads(),
            "sample_hw": list(imgs[0].shape[-2:]), "num": num,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "swd": m["swd"]["mean"], "swd_std": m["swd"]["std"], "pixel_diversity": m["pixel_diversity"],
            "copy_mean_region": m["copy_mean_region"]["mean"], "copy_large_fraction": m["copy_large_fraction"]["mean"],
            "copy_max_region": m["copy_max_region"]["mean"],
            "sifid64": (m.get("sifid64") or {}).get("mean")}


def sample(args) -> None:
    data = load_results(args.json)
    for photo in photos(args.photos):
        for kind in args.kinds:
            key = f"{photo.stem}/{kind}"
            row = data["rows"].setdefault(key, {})
            if "swd" in row and not args.again:
                continue
            spec = str(photo) if kind == "free" else str(run_dir(args.runs, photo, kind))
            if kind != "free" and not (Path(spec) / "samples_grid.png").exists():   # written last, when done
                print(f"{key}: not trained yet, skipped", flush=True)
                continue
            out = run_dir(args.runs, photo, kind) / ("protocol-" + args.variant if args.variant else "protocol")
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO))
            res = subprocess.run([sys.executable, __file__, "child", "--spec", spec, "--out", str(out),
                                  "--candidates", str(args.candidates), "--context-sigma", str(args.context_sigma),
                                  "--patch-steps", str(args.patch_steps)],
                                 env=env, capture_output=True, text=True)
            if res.returncode:
                print(f"{key}: sampling failed\n{res.stderr[-3000:]}", flush=True)
                continue
            patch = kind != "trained"
            row.update(json.loads(res.stdout.strip().splitlines()[-1]), samples=str(out / "samples"),
                       patch_candidates=args.candidates if patch else None,
                       context_sigma=(args.context_sigma or None) if patch else None,
                       patch_steps=(args.patch_steps or None) if patch else None)
            save_results(args.json, data)
            print(f"{key}: {row['sample_wall_s']:.1f} s for {NUM} samples, SWD {row['swd']:.4f}, "
                  f"diversity {row['pixel_diversity']:.3f}, copy {100 * row['copy_large_fraction']:.1f} %", flush=True)


def table(args) -> None:
    """The markdown table (stdout) and one picture per photograph (training image, then a row of
    samples per kind with its times) under docs/images/without-training/."""
    data = load_results(args.json)
    rows = data["rows"]
    print("| photograph | kind | train CPU s | 16 samples, s | patch SWD | diversity | copy share |")
    print("|---|---|---|---|---|---|---|")
    for photo in photos(args.photos):
        for kind in KINDS:
            r = rows.get(f"{photo.stem}/{kind}", {})
            if "swd" not in r:
                continue
            train_s = f"{r['train_cpu_s']:.0f}" if "train_cpu_s" in r else ("–" if kind == "free" else "?")
            print(f"| {photo.stem} | {kind} | {train_s} | {r['sample_wall_s']:.1f} | {r['swd']:.4f} ± {r['swd_std']:.4f} "
                  f"| {r['pixel_diversity']:.3f} | {100 * r['copy_large_fraction']:.1f} % |")
        figure(photo, rows, args.figures)
    print()
    names = [p.stem for p in photos(args.photos) if all("swd" in rows.get(f"{p.stem}/{k}", {}) for k in KINDS)]
    print(f"means over the {len(names)} photographs with all three kinds:")
    print("| | " + " | ".join(KINDS) + " |")
    print("|---|" + "---|" * len(KINDS))
    for label, key, fmt in (("training, CPU s", "train_cpu_s", "{:.0f}"), ("16 samples, wall s", "sample_wall_s", "{:.0f}"),
                            ("16 samples, CPU s", "sample_cpu_s", "{:.0f}"), ("patch SWD", "swd", "{:.4f}"),
                            ("diversity", "pixel_diversity", "{:.3f}"), ("copy share", "copy_large_fraction", "{:.1%}")):
        cells = []
        for kind in KINDS:
            vals = [rows[f"{n}/{kind}"].get(key) for n in names]
            vals = [v for v in vals if v is not None]
            cells.append(fmt.format(sum(vals) / len(vals)) if vals else "–")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    summary = targets(rows, [p.stem for p in photos(args.photos)])
    for line in summary:
        print(line)


def targets(rows: dict, names: list[str]) -> list[str]:
    """Issue 29's targets for the hybrid against cpu.yaml, photograph by photograph, then over all
    of them (how many meet each, and the diversity of the means)."""
    out, pairs = [], []
    for name in names:
        a, b = rows.get(f"{name}/trained", {}), rows.get(f"{name}/hybrid", {})
        if "swd" not in a or "swd" not in b or "train_cpu_s" not in a or "train_cpu_s" not in b:
            continue
        pairs.append((a, b))
        out.append(f"{name}: training {b['train_cpu_s'] / a['train_cpu_s']:.2f}x (≤ 0.33), "
                   f"SWD {b['swd']:.4f} vs {a['swd']:.4f} ({'≤' if b['swd'] <= a['swd'] else '>'}), "
                   f"diversity {b['pixel_diversity'] / a['pixel_diversity']:.2f}x (≥ 0.85), copy "
                   f"{100 * (b['copy_large_fraction'] - a['copy_large_fraction']):+.1f} points (≤ +5)")
    n = len(pairs)
    if not n:
        return out

    def count(ok) -> int:
        return sum(ok(a, b) for a, b in pairs)

    def mean(kind: int, key: str) -> float:
        return sum(p[kind][key] for p in pairs) / n

    out += [f"hybrid training at most a third of cpu.yaml's on {count(lambda a, b: b['train_cpu_s'] <= a['train_cpu_s'] / 3)}"
            f" of {n} photographs",
            f"hybrid SWD at most cpu.yaml's on {count(lambda a, b: b['swd'] <= a['swd'])} of {n} photographs"
            " (target: two thirds)",
            f"hybrid diversity at least 0.85x cpu.yaml's on "
            f"{count(lambda a, b: b['pixel_diversity'] >= 0.85 * a['pixel_diversity'])} of {n} photographs; "
            f"of the means {mean(1, 'pixel_diversity') / mean(0, 'pixel_diversity'):.2f}x",
            f"hybrid copy share at most cpu.yaml's + 5 points on "
            f"{count(lambda a, b: b['copy_large_fraction'] <= a['copy_large_fraction'] + 0.05)} of {n} photographs"]
    return out


def figure(photo: Path, rows: dict, folder: Path, per_row: int = 4) -> None:
    """folder/NAME.png: the training image, then a row of samples per kind with its times."""
    labelled = []
    for kind in KINDS:
        r = rows.get(f"{photo.stem}/{kind}", {})
        if "samples" in r:
            name = {"trained": "cpu.yaml", "hybrid": "hybrid-cpu.yaml", "free": "training-free"}[kind]
            train_s = f"{r['train_cpu_s']:.0f} CPU s of training" if "train_cpu_s" in r else "no training"
            labelled.append((f"{name}: {train_s}; 16 samples in {r['sample_cpu_s']:.0f} CPU s; patch SWD "
                             f"{r['swd']:.3f}", Path(r["samples"])))
    if labelled:
        contact_sheet(photo, labelled, folder / f"{photo.stem}.png", per_row)


def contact_sheet(photo: Path, labelled: list[tuple[str, Path]], out: Path, per_row: int = 4) -> None:
    """The training image, then per (label, folder) a labelled row of the folder's first samples."""
    from PIL import Image, ImageDraw

    from sinddm.image_io import load_rgb

    rows = [(text, [Image.open(f).convert("RGB") for f in sorted(folder.glob("sample_*.png"))[:per_row]])
            for text, folder in labelled]
    w, h = rows[0][1][0].size
    pad, label = 4, 16
    train = load_rgb(photo)
    train.thumbnail((w, h))
    sheet = Image.new("RGB", (pad + (per_row + 1) * (w + pad), pad + len(rows) * (h + label + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (text, imgs) in enumerate(rows):
        y = pad + i * (h + label + pad)
        draw.text((pad, y), text, fill="black")
        if i == 0:
            sheet.paste(train, (pad, y + label))
        for j, im in enumerate(imgs):
            sheet.paste(im, (pad + (j + 1) * (w + pad), y + label))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def compare(args) -> None:
    """One picture per photograph of variants measured with `sample --variant NAME --json J`: rows of
    cpu.yaml, the hybrid as the table has it, then each NAME=J given to --variants."""
    base = load_results(args.json)["rows"]
    variants = [(label, load_results(Path(path))["rows"]) for label, path in (v.rsplit("=", 1) for v in args.variants)]
    for photo in photos(args.photos):
        labelled = []
        for text, rows, kind in [("cpu.yaml", base, "trained"), ("hybrid-cpu.yaml, context tau 1", base, "hybrid"),
                                 *[(f"hybrid-cpu.yaml, {name}", rows, "hybrid") for name, rows in variants]]:
            r = rows.get(f"{photo.stem}/{kind}", {})
            if "swd" in r:
                labelled.append((f"{text}: patch SWD {r['swd']:.3f}, diversity {r['pixel_diversity']:.2f}",
                                 Path(r["samples"])))
        if len(labelled) > 2:
            contact_sheet(photo, labelled, args.figures / f"variants-{photo.stem}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["train", "sample", "table", "compare", "child"])
    ap.add_argument("--again", action="store_true", help="sample: redo kinds already measured")
    ap.add_argument("--candidates", type=int, default=16,
                    help="sample: the patch denoiser's candidates for hybrid and training-free (0: exact)")
    ap.add_argument("--context-sigma", type=float, default=1.0,
                    help="sample: τ of the patch denoiser's blurry context (0: none; default 1, the library's)")
    ap.add_argument("--patch-steps", type=int, default=0,
                    help="sample: the patch scales' respaced steps (0: the model's model.patch_steps)")
    ap.add_argument("--variant", default="",
                    help="sample: a name for these settings: samples go to <run>/protocol-NAME "
                         "(use with its own --json)")
    ap.add_argument("--variants", nargs="*", default=[], metavar="LABEL=JSON",
                    help="compare: variants measured with sample --variant, each as its label and its --json")
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--photos", nargs="*", help="photo names (stems) to use (default: all in assets/photos)")
    ap.add_argument("--kinds", nargs="*", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=Path, default=REPO / "runs/photos", help="run folders go here")
    ap.add_argument("--json", type=Path,
                    help="results file (default: train and sample write today's "
                         "benchmarks/results/without-training-DATE.json; table and compare read the newest)")
    ap.add_argument("--figures", type=Path, default=REPO / "docs/images/without-training",
                    help="table: the per-photograph pictures go here")
    args = ap.parse_args()
    if args.json is None:
        args.json = default_results(args.what in ("train", "sample"))
    if args.what == "child":
        print(json.dumps(sample_one(args.spec, args.out, NUM, MAX_PIXELS, args.candidates,
                                    args.context_sigma, args.patch_steps)))
        return
    {"train": train, "sample": sample, "table": table, "compare": compare}[args.what](args)


if __name__ == "__main__":
    main()
