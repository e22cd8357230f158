#!/usr/bin/env python3
"""What fewer scale-0 steps (`sinddm sample --scale0-steps K`) cost: time and quality.

    python benchmarks/scale0_steps.py                                  # the shipped small model, CPU
    python benchmarks/scale0_steps.py --model runs/x --steps 100 50 25 10 --num 24 --json out.json

For each K the same seeds draw NUM samples at the training size; prints seconds per sample
and `sinddm eval`'s metrics against the training image (patch SWD: lower is closer to the
image's patch statistics; pixel diversity; copy measure: mean coherent-region size, lower
is less copying). K = 100 is the paper's sampler.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sinddm.checkpoint import load_model  # noqa: E402
from sinddm.image_io import to_uint8  # noqa: E402
from sinddm.eval.metrics import EvalSettings, evaluate  # noqa: E402
from sinddm.pipeline import generate  # noqa: E402
from sinddm.devices import resolve_device  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "assets/models/hubble-small.safetensors"))
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 50, 25, 10])
    ap.add_argument("--num", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    device = resolve_device(args.device)
    loaded = load_model(args.model, device)
    reference = loaded.pyramid.levels[-1]
    sizes = loaded.pyramid.sizes_hw
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"model {args.model}: {loaded.pyramid.n_scales} scales, finest {sizes[-1][0]}x{sizes[-1][1]}, "
          f"T = {loaded.start_t}; {args.num} samples per K on {name}, torch {torch.__version__}")
    rows = []
    for k in args.steps:
        t0 = time.perf_counter()
        images = generate(loaded, args.num, sizes, loaded.start_t, seed=args.seed, device=device,
                          progress=False, scale0_steps=k)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        m = evaluate(reference, [to_uint8(x) for x in images], EvalSettings(sifid=False), device=device)
        agg = m["aggregate"]
        rows.append({"scale0_steps": k, "network_calls": k + sum(loaded.start_t[1:]),
                     "s_per_sample": seconds / args.num, "swd": agg["swd"]["mean"],
                     "swd_std": agg["swd"]["std"], "pixel_diversity": agg["pixel_diversity"],
                     "copy_mean_region": agg["copy_mean_region"]["mean"]})
        r = rows[-1]
        print(f"K={k:>3}  calls/sample {r['network_calls']:>3}  {r['s_per_sample']:.3f} s/sample  "
              f"SWD {r['swd']:.4f} ± {r['swd_std']:.4f}  diversity {r['pixel_diversity']:.3f}  "
              f"copy region {r['copy_mean_region']:.4f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "model": args.model,
                                               "num": args.num, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
