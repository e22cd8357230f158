#!/usr/bin/env python3
"""What each lever of the CPU fast path buys: one training step at the finest scale of a config
(default configs/cpu.yaml on assets/hubble.jpg), every variant timed in the same process,
alternating, median of REPEATS rounds of STEPS steps (wall and process CPU ms per step).

    python benchmarks/cpu_levers.py --threads 1
    python benchmarks/cpu_levers.py --config configs/small.yaml --compile

Variants, each adding one lever to the one above:
  fp32            the exact path (NCHW, oneDNN's depthwise gradient, for-loop Adam)
  channels_last   the same in NHWC
  bf16            + bf16 autocast (fp32 master weights)
  depthwise       + sinddm.fast_cpu's depthwise gradient
  fused_adam      + fused Adam (the CPU fast path before the training network)
  training_net    + sinddm.fast_cpu_train's network as one Function: the CPU fast path as
                  `--precision fast` runs it
  fast_fp32       training_net without bf16: the fast path of a CPU without native bf16
  compile         + torch.compile (--compile; its first step, the compile, is reported apart)
glibc's malloc setting (`fast_cpu.keep_freed_memory`) is process-wide: it is on for all variants,
as in the library; --no-malloc-tuning measures them all without it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/cpu.yaml")
    ap.add_argument("--image", default="assets/hubble.jpg")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--no-malloc-tuning", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.no_malloc_tuning:
        os.environ["SINDDM_CPU_MALLOC"] = "0"
    import torch
    from PIL import Image

    from sinddm.config import load_config
    from sinddm.fast import FastOptions
    from sinddm.fast_cpu import cpu_bf16_native, cpu_model, keep_freed_memory
    from sinddm.pyramid import build_pyramid
    from sinddm.training import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    malloc = keep_freed_memory()
    cfg = load_config(REPO / args.config)
    pyr = build_pyramid(Image.open(REPO / args.image).convert("RGB"), cfg.image.max_pixels)
    s = pyr.n_scales - 1
    off = dict(autocast=False, channels_last=False, graphs=False, compile=False)
    variants = {
        "fp32": None,
        "channels_last": FastOptions(**dict(off, channels_last=True)),
        "bf16": FastOptions(**dict(off, channels_last=True, autocast=True)),
    }
    unused = Path(tempfile.gettempdir()) / "sinddm_bench_unused"
    trainers = {name: Trainer(cfg, pyr, unused, torch.device("cpu"), seed=0, fast_options=o)
                for name, o in variants.items()}
    trainers["fp32"] = Trainer(cfg, pyr, unused, torch.device("cpu"), seed=0, precision="fp32")
    # The fast depthwise gradient without fused Adam (nor the training network): Adam swapped back.
    bf16 = cpu_bf16_native()
    no_net = FastOptions(**dict(off, channels_last=True, autocast=bf16, cpu_kernels=True, cpu_net=False))
    dw = Trainer(cfg, pyr, unused, torch.device("cpu"), seed=0, fast_options=no_net)
    dw.optimizer = torch.optim.Adam(dw.model.parameters(), lr=cfg.train.lr)
    dw.lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(dw.optimizer, cfg.train.lr_milestones, cfg.train.lr_gamma)
    trainers["depthwise"] = dw
    trainers["fused_adam"] = Trainer(cfg, pyr, unused, torch.device("cpu"), seed=0, fast_options=no_net)
    trainers["training_net"] = Trainer(cfg, pyr, unused, torch.device("cpu"), seed=0, precision="fast", compile=False)
    # What a CPU without native bf16 gets: the same fast path in fp32.
    trainers["fast_fp32"] = Trainer(cfg, pyr, unused, torch.device("cpu"), seed=0,
                                    fast_options=FastOptions(**dict(off, channels_last=True, cpu_kernels=True)))
    first = {}
    if args.compile:
        trainers["compile"] = Trainer(cfg, pyr, unused, torch.device("cpu"), seed=0, precision="fast", compile=True)
    for name, tr in trainers.items():
        t0 = time.perf_counter()
        tr.train_step(scale=s)
        first[name] = round(time.perf_counter() - t0, 2)
        tr.train_step(scale=s)
    wall = {k: [] for k in trainers}
    cpu = {k: [] for k in trainers}
    names = list(trainers)
    for r in range(args.repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                trainers[name].train_step(scale=s)
            wall[name].append((time.perf_counter() - t0) * 1000 / args.steps)
            cpu[name].append((time.process_time() - c0) * 1000 / args.steps)
    h, w = pyr.sizes_hw[s]
    print(f"{cpu_model()}, {torch.get_num_threads()} threads, native bf16 {cpu_bf16_native()}, malloc tuning "
          f"{malloc}, torch {torch.__version__}, load {os.getloadavg()[0]:.2f}")
    print(f"{args.config}: width {cfg.model.dim}, batch {cfg.train.batch_size}, finest scale {h}x{w}; "
          f"median of {args.repeats} x {args.steps} steps")
    rows = []
    base = statistics.median(cpu["fp32"])
    for name in names:
        row = {"variant": name, "wall_ms": round(statistics.median(wall[name]), 1),
               "cpu_ms": round(statistics.median(cpu[name]), 1), "first_step_s": first[name]}
        rows.append(row)
        print(f"  {name:<14} {row['wall_ms']:7.1f} ms wall  {row['cpu_ms']:7.1f} ms CPU  x{base / row['cpu_ms']:.2f}"
              + (f"  (first step, i.e. compiling: {first[name]} s)" if name == "compile" else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_model(), "threads": torch.get_num_threads(),
                                               "config": args.config, "rows": rows, "malloc_tuning": malloc,
                                               "load": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
