#!/usr/bin/env python3
"""Issue 28's target table: sampling time and peak memory of trained, hybrid and training-free
models, each in its own process (clean peak RSS), at the given thread counts.

    PYTHONPATH=. python benchmarks/without_training_speed.py --threads 1 2 \
        --job net=runs/photos/autumn-mountains-trained --job hybrid=runs/photos/autumn-mountains-hybrid \
        --job "hybrid-k16=runs/photos/autumn-mountains-hybrid|candidates=16" \
        --job free50k=picture:assets/photos/autumn-mountains.jpg:50000 \
        --json benchmarks/results/without-training-speed-DATE.json

A job is NAME=MODEL[|KEY=VALUE,...]: MODEL is a run folder or model file, or picture:PATH:MAX_PIXELS
(training-free). The keys change the patch denoiser's settings for that job (`hybrid.PATCH_SETTINGS`:
candidates, search_stride, context_sigma, ...; `steps`: model.patch_steps, 0 for every step).
Every job draws `--num` pictures at the model's own size, seed 0, on the CPU, and reports wall and
CPU seconds (CPU seconds hold up better on a shared machine). The targets (#28): a hybrid within 2x
the trained network's time at 12k px; a training-free model, 4 pictures at 50k px within 60 s.
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


def one(spec: str, num: int) -> dict:
    sys.path.insert(0, str(REPO))
    import torch

    from sinddm import hybrid
    from sinddm.api import SinDDM

    spec, _, opts = spec.partition("|")
    settings = dict(hybrid.PATCH_SETTINGS)
    steps = "default"
    for item in filter(None, opts.split(",")):
        key, val = item.split("=")
        if key == "steps":
            steps = int(val) or None
        else:
            settings[key] = None if val == "none" else (float(val) if "." in val else int(val))
    hybrid.PATCH_SETTINGS = settings
    parts = spec.split(":")
    c0 = time.perf_counter()
    if parts[0] == "picture":
        model = SinDDM.load(parts[1], device="cpu", max_pixels=int(parts[2]))
    else:
        model = SinDDM.load(spec, device="cpu")
    if steps != "default":
        model.loaded.config.model.patch_steps = steps
    load_s = time.perf_counter() - c0
    c0, p0 = time.perf_counter(), time.process_time()
    out = model.sample(num=num, seed=0, output="tensor")
    secs, cpu = time.perf_counter() - c0, time.process_time() - p0
    return {"model": spec, "options": opts, "size_hw": list(out[0].shape[-2:]),
            "pixels": int(out[0].shape[-2] * out[0].shape[-1]), "num": num, "threads": torch.get_num_threads(),
            "load_s": load_s, "sample_s": secs, "sample_cpu_s": cpu,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", action="append", default=[], help="NAME=MODEL (see above)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--num", type=int, default=4)
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.num)))
        return
    rows = []
    print(f"{'job':<16} {'thr':>3} {'size':>9} {'px':>6} {'sample s':>9} {'CPU s':>7} {'peak RSS MB':>11}  (load before)")
    for threads in args.threads:
        for job in args.job:
            name, spec = job.split("=", 1)
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
            load = os.getloadavg()[0]
            res = subprocess.run([sys.executable, __file__, "--one", spec, "--num", str(args.num)], env=env,
                                 capture_output=True, text=True)
            if res.returncode:
                print(f"{name}: failed\n{res.stderr[-2000:]}", flush=True)
                continue
            row = dict(json.loads(res.stdout.strip().splitlines()[-1]), job=name, load_before=load)
            rows.append(row)
            print(f"{name:<16} {threads:>3} {row['size_hw'][0]:>4}x{row['size_hw'][1]:<4} {row['pixels']:>6} "
                  f"{row['sample_s']:>9.1f} {row['sample_cpu_s']:>7.1f} {row['peak_rss_mb']:>11.0f}  ({load:.1f})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"date": str(datetime.date.today()), "argv": sys.argv[1:],
                                               "machine": f"{os.cpu_count()}-core CPU, shared", "rows": rows},
                                              indent=1))


if __name__ == "__main__":
    main()
