#!/usr/bin/env python3
"""What each lever of the CPU fast path buys: one training step at the finest scale of a config
(default configs/cpu.yaml on assets/hubble.jpg; --all-scales: every scale and their mean), every
variant timed in the same process in a shuffled order each round (on a VM whose speed swings, no
variant should always follow the same one), median of REPEATS rounds of STEPS steps (wall and
process CPU ms per step).

    python benchmarks/cpu_levers.py --threads 1
    python benchmarks/cpu_levers.py --config configs/small.yaml --compile
    python benchmarks/cpu_levers.py --threads 2 --variants fused_adam,training_net --all-scales --repeats 24

Variants, each adding one lever to the one above:
  fp32            the exact path (NCHW, oneDNN's depthwise gradient, for-loop Adam)
  channels_last   the same in NHWC
  bf16            + bf16 autocast (fp32 master weights)
  depthwise       + sinddm.fast.cpu's depthwise gradient
  fused_adam      + fused Adam (the CPU fast path before the training network)
  training_net    + sinddm.fast.cpu_train's network as one Function: the CPU fast path as
                  `--precision fast` runs it
  fast_fp32       training_net without bf16: the fast path of a CPU without native bf16
  compile         + torch.compile (--compile; its first step, the compile, is reported apart)
glibc's malloc setting (`fast_cpu.keep_freed_memory`) is process-wide: it is on for all variants,
as in the library; --no-malloc-tuning measures them all without it.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: _report
from _report import cpu_model, write_json  # noqa: E402


VARIANTS = ("fp32", "channels_last", "bf16", "depthwise", "fused_adam", "training_net", "fast_fp32", "compile")


def build(name: str, cfg, pyr, unused: Path):
    """The trainer of one variant (module docstring)."""
    import torch

    from sinddm.fast import FastOptions
    from sinddm.fast.cpu import cpu_bf16_native
    from sinddm.training import Trainer

    cpu = torch.device("cpu")
    off = dict(autocast=False, channels_last=False, graphs=False, compile=False)
    no_net = FastOptions(**dict(off, channels_last=True, autocast=cpu_bf16_native(), cpu_kernels=True, cpu_net=False))
    if name == "fp32":
        return Trainer(cfg, pyr, unused, cpu, seed=0, precision="fp32")
    if name in ("channels_last", "bf16"):
        return Trainer(cfg, pyr, unused, cpu, seed=0,
                       fast_options=FastOptions(**dict(off, channels_last=True, autocast=name == "bf16")))
    if name == "depthwise":  # the fast depthwise gradient without fused Adam: Adam swapped back
        tr = Trainer(cfg, pyr, unused, cpu, seed=0, fast_options=no_net)
        tr.optimizer = torch.optim.Adam(tr.model.parameters(), lr=cfg.train.lr)
        tr.lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(tr.optimizer, cfg.train.lr_milestones, cfg.train.lr_gamma)
        return tr
    if name == "fused_adam":
        return Trainer(cfg, pyr, unused, cpu, seed=0, fast_options=no_net)
    if name == "training_net":
        return Trainer(cfg, pyr, unused, cpu, seed=0, precision="fast", compile=False)
    if name == "fast_fp32":  # what a CPU without native bf16 gets: the same fast path in fp32
        return Trainer(cfg, pyr, unused, cpu, seed=0,
                       fast_options=FastOptions(**dict(off, channels_last=True, cpu_kernels=True)))
    if name == "compile":
        return Trainer(cfg, pyr, unused, cpu, seed=0, precision="fast", compile=True)
    raise SystemExit(f"--variants: unknown variant '{name}' (one of {', '.join(VARIANTS)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/cpu.yaml")
    ap.add_argument("--image", default="assets/hubble.jpg")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS[:-1]),
                    help="comma list (default all but compile); fp32 is always measured, as the baseline")
    ap.add_argument("--all-scales", action="store_true",
                    help="every scale, and the mean over scales (the expected step), not only the finest")
    ap.add_argument("--compile", action="store_true", help="add the compile variant")
    ap.add_argument("--no-malloc-tuning", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.no_malloc_tuning:
        os.environ["SINDDM_CPU_MALLOC"] = "0"
    import torch
    from PIL import Image

    from sinddm.config import load_config
    from sinddm.fast.cpu import cpu_bf16_native, keep_freed_memory
    from sinddm.pyramid import build_pyramid

    if args.threads:
        torch.set_num_threads(args.threads)
    malloc = keep_freed_memory()
    cfg = load_config(REPO / args.config)
    pyr = build_pyramid(Image.open(REPO / args.image).convert("RGB"), cfg.image.max_pixels)
    names = ["fp32"] + [n for n in args.variants.split(",") if n and n != "fp32"]
    if args.compile and "compile" not in names:
        names.append("compile")
    unused = Path(tempfile.gettempdir()) / "sinddm_bench_unused"
    trainers = {name: build(name, cfg, pyr, unused) for name in names}
    scales = list(range(pyr.n_scales)) if args.all_scales else [pyr.n_scales - 1]
    first = {name: [] for name in names}
    wall = {name: {s: [] for s in scales} for name in names}
    cpu = {name: {s: [] for s in scales} for name in names}
    order = random.Random(0)  # a shuffled order each round: no variant always runs after the same one
    for s in scales:
        for name, tr in trainers.items():
            t0 = time.perf_counter()
            tr.train_step(scale=s)
            first[name].append(round(time.perf_counter() - t0, 2))
            tr.train_step(scale=s)
        for _ in range(args.repeats):
            for name in order.sample(names, len(names)):
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(args.steps):
                    trainers[name].train_step(scale=s)
                wall[name][s].append((time.perf_counter() - t0) * 1000 / args.steps)
                cpu[name][s].append((time.process_time() - c0) * 1000 / args.steps)
    print(f"{cpu_model()}, {torch.get_num_threads()} threads, native bf16 {cpu_bf16_native()}, malloc tuning "
          f"{malloc}, torch {torch.__version__}, load {os.getloadavg()[0]:.2f}")
    where = (f"scales {', '.join('x'.join(map(str, pyr.sizes_hw[s])) for s in scales)} (mean over scales)"
             if args.all_scales else "finest scale " + "x".join(map(str, pyr.sizes_hw[scales[0]])))
    print(f"{args.config}: width {cfg.model.dim}, batch {cfg.train.batch_size}, {where}; "
          f"median of {args.repeats} x {args.steps} steps, order shuffled each round")
    med = lambda d: sum(statistics.median(v) for v in d.values()) / len(d)  # noqa: E731
    rows = []
    base = med(cpu["fp32"])
    for name in names:
        row = {"variant": name, "wall_ms": round(med(wall[name]), 1), "cpu_ms": round(med(cpu[name]), 1),
               "first_step_s": first[name],
               "by_scale_wall_ms": {s: round(statistics.median(v), 1) for s, v in wall[name].items()}}
        rows.append(row)
        print(f"  {name:<14} {row['wall_ms']:7.1f} ms wall  {row['cpu_ms']:7.1f} ms CPU  x{base / row['cpu_ms']:.2f}"
              + (f"  (first steps, i.e. compiling: {first[name]} s)" if name == "compile" else ""))
    if args.json:
        write_json(args.json, {"cpu": cpu_model(), "threads": torch.get_num_threads(), "config": args.config,
                               "scales": scales, "rows": rows, "malloc_tuning": malloc, "load": os.getloadavg()})


if __name__ == "__main__":
    main()
