#!/usr/bin/env python3
"""Issue 28's target table: sampling time and peak memory of trained, hybrid and training-free
models, each in its own process (clean peak RSS) at 1 and 2 threads.

    PYTHONPATH=. python benchmarks/without_training_speed.py --threads 1 2 \
        --job net=runs/cpu-hubble --job hybrid=runs/hybrid-hubble \
        --job free50k=picture:assets/hubble.jpg:50000 --job free50k-exact=picture:assets/hubble.jpg:50000:exact \
        --json benchmarks/results/without-training-speed-DATE.json

A job is NAME=MODEL[:...]: a run folder or model file (sampled as its config says), or
picture:PATH:MAX_PIXELS[:exact] (training-free; `exact`: the exact posterior instead of the
approximate default). Every job draws `--num` pictures at the model's own size, seed 0, on the CPU.
The targets (#28): a hybrid within 2x the trained network's time at 12k px; a training-free model
at 50k px within 60 s; memory bounded.
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

    parts = spec.split(":")
    c0 = time.perf_counter()
    if parts[0] == "picture":
        if len(parts) > 3 and parts[3] == "exact":
            hybrid.PATCH_SETTINGS = dict(candidates=None)
        model = SinDDM.load(parts[1], device="cpu", max_pixels=int(parts[2]))
    else:
        model = SinDDM.load(spec, device="cpu")
    load_s = time.perf_counter() - c0
    c0 = time.perf_counter()
    out = model.sample(num=num, seed=0, output="tensor")
    secs = time.perf_counter() - c0
    return {"model": spec, "size_hw": list(out[0].shape[-2:]), "pixels": int(out[0].shape[-2] * out[0].shape[-1]),
            "num": num, "threads": torch.get_num_threads(), "load_s": load_s, "sample_s": secs,
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
    print(f"{'job':<16} {'thr':>3} {'size':>9} {'px':>6} {'sample s':>9} {'peak RSS MB':>11}  (load 1-min avg before)")
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
                  f"{row['sample_s']:>9.1f} {row['peak_rss_mb']:>11.0f}  ({load:.1f})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"date": str(datetime.date.today()), "argv": sys.argv[1:],
                                               "machine": f"{os.cpu_count()}-core CPU, shared", "rows": rows},
                                              indent=1))


if __name__ == "__main__":
    main()
