#!/usr/bin/env python3
"""How long `sinddm eval`'s metrics take: 50 samples at 250×200 px by default.

    python benchmarks/eval_speed.py                       # 50 samples, 250x200, all CPU threads
    python benchmarks/eval_speed.py --threads 2 --repeat 3
    python benchmarks/eval_speed.py --inception-weights pt_inception-2015-12-05-6726825d.pth

The training image is assets/rocket.jpg resized to WxH (LANCZOS); the "samples" are
made from it (16x16-tile shuffles, 2x2 collages of copied chunks, mirror images, with
a little noise), so that every metric works on realistic content. No model is run:
this times the metrics alone (sampling time depends on the model, see benchmarks/speed.py).
SIFID runs with the weights given, or found in torch's hub cache; without any it runs
with randomly initialised weights (same arithmetic, same time; the values are then
meaningless and not printed). Prints one line per metric and the total; --json writes them.
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

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sinddm.eval import inception  # noqa: E402
from sinddm.eval import metrics as M  # noqa: E402


def make_inputs(num: int, w: int, h: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    with Image.open(REPO / "assets" / "rocket.jpg") as im:
        ref = np.asarray(im.convert("RGB").resize((w, h), Image.LANCZOS))
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(num):
        kind = i % 3
        if kind == 0:  # 16x16 tiles shuffled
            t = 16
            hh, ww = h // t * t, w // t * t
            tiles = ref[:hh, :ww].reshape(hh // t, t, ww // t, t, 3).transpose(0, 2, 1, 3, 4).reshape(-1, t, t, 3)
            tiles = tiles[rng.permutation(len(tiles))]
            out = ref.copy()
            out[:hh, :ww] = tiles.reshape(hh // t, ww // t, t, t, 3).transpose(0, 2, 1, 3, 4).reshape(hh, ww, 3)
        elif kind == 1:  # 2x2 collage of chunks copied from random places
            out = np.empty_like(ref)
            bh, bw = h // 2, w // 2
            for by in range(2):
                for bx in range(2):
                    y, x = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
                    out[by * bh:(by + 1) * bh, bx * bw:(bx + 1) * bw] = ref[y:y + bh, x:x + bw]
            out[2 * bh:], out[:, 2 * bw:] = ref[2 * bh:], ref[:, 2 * bw:]
        else:
            out = ref[:, ::-1]
        noise = rng.normal(0, 4, out.shape)
        samples.append(np.clip(out + noise, 0, 255).astype(np.uint8))
    return ref, samples


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num", type=int, default=50)
    p.add_argument("--size", default="250x200", help="WxH of the training image and the samples")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=1, help="run N times, report the median")
    p.add_argument("--inception-weights", help="pytorch-fid weights (default: hub cache, else random init)")
    p.add_argument("--json", help="also write the timings here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    ref, samples = make_inputs(args.num, w, h)

    weights, why = inception.find_inception_weights(args.inception_weights)
    tmp = None
    real_weights = weights is not None
    if weights is None:
        tmp = tempfile.TemporaryDirectory()
        weights = Path(tmp.name) / "random_inception.pth"
        torch.manual_seed(0)
        torch.save(inception.FIDInceptionV3("pre_pool2").state_dict(), weights)

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    runs = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        result = M.evaluate(ref, samples, device=args.device, inception_weights=weights)
        wall = time.perf_counter() - t0
        runs.append({**result["timing_s"], "wall": wall})
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None

    print(f"eval metrics: {args.num} samples at {w}x{h} px on {args.device}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, median of {args.repeat}")
    if load:
        busy = " (above the core count: the machine was busy, timings are pessimistic)" if max(
            load[0], load_after[0]) > (os.cpu_count() or 1) else ""
        print(f"load average before {load[0]:.2f}, after {load_after[0]:.2f}{busy}")
    for k in ("swd", "copy", "sifid", "pixel_diversity", "wall"):
        print(f"  {k:<16} {med[k]:7.2f} s")
    print(f"SIFID weights: {weights if real_weights else 'random init (timing only; ' + str(why) + ')'}")
    agg = result["aggregate"]
    print(f"sanity: swd mean {agg['swd']['mean']:.4f}, copy_large_fraction mean "
          f"{agg['copy_large_fraction']['mean']:.3f}, pixel diversity {agg['pixel_diversity']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"num": args.num, "size_wh": [w, h], "threads": torch.get_num_threads(),
                                               "device": args.device, "load_before": load, "load_after": load_after,
                                               "median_s": med, "runs": runs}, indent=1))
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
