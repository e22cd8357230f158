#!/usr/bin/env python3
"""The closed-form patch denoiser (method §11): quality against the trained network, and speed.

    OMP_NUM_THREADS=1 python benchmarks/patch_denoiser.py quality --upto 1 --configs "K=1,p=7" "K=1,p=7,tau=0.3"
    OMP_NUM_THREADS=1 python benchmarks/patch_denoiser.py timing

`quality`: the shipped hubble-small model's network serves scales s < K, a `PatchDenoiser` the rest
(config keys: K, p, tau (context_sigma, "none"), merge, k (candidates), flips, p0 (scale 0's patch),
search (query/context), st (search_stride), rf (refresh), n (respaced blended steps at the patch
scales), n0 (respaced scale-0 steps); `--model` may be a picture (K=0 only); unset keys: p=7, mean merge, as in the 2026-12-06 runs).
Samples are drawn with `samplers.sample_pyramid` (seeded) up to scale `--upto` and compared with
that pyramid level: patch SWD, pixel diversity and the copy measure (mean coherent-region size);
the "net" config is the fully trained model. `timing`: seconds per denoiser call, exact against
approximate, at the shipped model's finest size and at ~50k px, projected to a whole sampling run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sinddm import samplers  # noqa: E402
from sinddm.checkpoint import load_model  # noqa: E402
from sinddm.eval.metrics import EvalSettings, evaluate  # noqa: E402
from sinddm.image_io import to_uint8  # noqa: E402
from sinddm.patch_denoiser import PatchDenoiser  # noqa: E402
from sinddm.pyramid import Pyramid  # noqa: E402
from sinddm.schedule import Schedule  # noqa: E402
from sinddm.sources import is_picture, open_model  # noqa: E402

MODEL = REPO / "assets/models/hubble-small.safetensors"


class Router(nn.Module):
    """Network for scales < K, patch denoiser for the rest; only the latter sees blurry/gamma."""

    takes_blurry = True

    def __init__(self, net, pd, k):
        super().__init__()
        self.net, self.pd, self.k = net, pd, k

    def forward(self, x, t, scale, blurry=None, gamma=None):
        if int(scale) < self.k:
            return self.net(x, t, scale)
        return self.pd(x, t, scale, blurry=blurry, gamma=gamma)


def parse(spec: str) -> dict:
    cfg = dict(K=99, p=7, tau=None, merge="mean", k=None, flips=False, p0=None, search="query", st=2, rf=1, n=None,
               n0=None, name=spec)
    if spec == "net":
        return cfg
    for item in spec.split(","):
        key, val = item.split("=")
        if key in ("K", "p", "k", "p0", "st", "rf", "t0", "n", "n0"):
            cfg[key] = None if val == "none" else int(val)
        elif key == "tau":
            cfg[key] = None if val == "none" else float(val)
        elif key == "flips":
            cfg[key] = val == "1"
        else:
            cfg[key] = val
    return cfg


def build(loaded, cfg, upto):
    if cfg["K"] > upto:
        return loaded.model
    n = loaded.pyramid.n_scales
    scales = list(range(cfg["K"], n))
    sizes = [cfg["p0"] if (s == 0 and cfg["p0"]) else cfg["p"] for s in range(n)]
    pd = PatchDenoiser(loaded.pyramid, loaded.schedule, scales=scales, patch_size=sizes,
                       context_sigma=cfg["tau"], candidates=cfg["k"], merge=cfg["merge"], flips=cfg["flips"],
                       search=cfg["search"], search_stride=cfg["st"], refresh=cfg["rf"])
    return Router(loaded.model, pd, cfg["K"])


def quality(args, loaded) -> list[dict]:
    rows = []
    sizes = loaded.pyramid.sizes_hw[:args.upto + 1]
    start_t = loaded.start_t[:args.upto + 1]
    if args.t0 is not None:
        start_t[0] = args.t0
    ref = loaded.pyramid.levels[args.upto]
    for spec in args.configs:
        cfg = parse(spec)
        model = build(loaded, cfg, args.upto)
        t0 = time.perf_counter()
        steps = [None] + [cfg["n"] if s >= cfg["K"] else None for s in range(1, len(sizes))]
        st = list(start_t)
        schedule0 = None
        if cfg["n0"]:
            schedule0 = Schedule.cosine_respaced(cfg["n0"])
            st[0] = schedule0.num_timesteps
        out = samplers.sample_pyramid(model, loaded.schedule, loaded.gammas, sizes, st, args.num,
                                      generator=torch.Generator().manual_seed(args.seed), blended_steps=steps,
                                      schedule0=schedule0)[-1]
        secs = time.perf_counter() - t0
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate([to_uint8(x) for x in out], 1)).save(
                Path(args.save) / f"{spec.replace('=', '').replace(',', '_')}.png")
        m = evaluate(ref, [to_uint8(x) for x in out], EvalSettings(sifid=False))["aggregate"]
        row = {"config": spec, "upto": args.upto, "num": args.num, "seconds": secs, "swd": m["swd"]["mean"],
               "swd_std": m["swd"]["std"], "pixel_diversity": m["pixel_diversity"],
               "copy_mean_region": m["copy_mean_region"]["mean"], "copy_max_region": m["copy_max_region"]["mean"]}
        rows.append(row)
        print(f"{spec:<40} SWD {row['swd']:.4f} ± {row['swd_std']:.4f}  diversity {row['pixel_diversity']:.3f}  "
              f"copy mean {row['copy_mean_region']:.4f} max {row['copy_max_region']:.4f}  {secs:.1f} s", flush=True)
    return rows


def timing(args, loaded) -> list[dict]:
    """Seconds per call at the finest scale (4 samples), exact vs candidates, and the difference."""
    rows = []
    for label, pyramid in (("shipped", loaded.pyramid), ("50k", None)):
        if pyramid is None:   # the same picture's finest level enlarged to ~50k px: keys and queries grow
            h, w = loaded.pyramid.sizes_hw[-1]
            f = (50_000 / (h * w)) ** 0.5
            big_side = (round(w * f), round(h * f))
            lv = [Image.fromarray(a).resize(big_side, Image.LANCZOS) for a in loaded.pyramid.levels[-2:]]
            small = np.array(lv[0].resize((round(big_side[0] / 1.394), round(big_side[1] / 1.394)), Image.LANCZOS))
            blurry = np.array(Image.fromarray(small).resize(big_side, Image.BILINEAR))
            pyramid = Pyramid(input_wh=big_side, scale_factor=1.394, levels=[small, np.array(lv[1])],
                              blurry=[None, blurry], blur_distance=[loaded.pyramid.blur_distance[-1]])
        s = pyramid.n_scales - 1
        hw = pyramid.sizes_hw[s]
        g = torch.Generator().manual_seed(0)
        num = args.num if label == "shipped" else args.num_big
        clean = pyramid.level_tensor(s)[None].repeat(num, 1, 1, 1)
        xb = pyramid.blurry_tensor(s)[None].repeat(num, 1, 1, 1)
        for t in args.ts:
            x = samplers.q_sample(loaded.schedule, 0.7 * clean + 0.3 * xb, t, torch.randn(clean.shape, generator=g))
            tt = torch.full((num,), t)
            res = {}
            for k in [None] + args.ks:
                for merge in args.merges:
                    pd = PatchDenoiser(pyramid, loaded.schedule, scales=[s], patch_size=args.p, candidates=k,
                                       context_sigma=args.tau, merge=merge)
                    c0 = time.perf_counter()
                    eps = pd(x, tt, s, blurry=xb, gamma=0.3)
                    secs = time.perf_counter() - c0
                    y = (samplers.predict_x0(loaded.schedule, x, t, eps) - 0.3 * xb) / 0.7
                    res[(k, merge)] = y
                    d = (y - res[(None, merge)]).abs()
                    row = {"size": label, "hw": list(hw), "t": t, "candidates": k, "merge": merge,
                           "threads": torch.get_num_threads(), "s_per_call": secs, "num": num,
                           "keys": getattr(pd, f"keys_{s}").shape[0],
                           "max_diff": float(d.max()), "mean_diff": float(d.mean())}
                    rows.append(row)
                    print(f"{label:>7} {hw[0]}x{hw[1]} t={t:>2} k={str(k):>4} {merge:<6} {secs:6.2f} s/call "
                          f"keys {row['keys']}  |Δx̂0| max {row['max_diff']:.4f} mean {row['mean_diff']:.5f}",
                          flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["quality", "timing"])
    ap.add_argument("--model", default=str(MODEL))
    ap.add_argument("--configs", nargs="+", default=["net", "K=1,p=7", "K=1,p=7,tau=0.3"])
    ap.add_argument("--upto", type=int, default=2, help="last scale sampled (compared with that level)")
    ap.add_argument("--t0", type=int, default=None, help="scale-0 steps (T[0])")
    ap.add_argument("--num", type=int, default=4)
    ap.add_argument("--max-pixels", type=int, default=12000, help="a picture as --model: its pixel cap")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--p", type=int, default=7)
    ap.add_argument("--tau", type=float, default=None)
    ap.add_argument("--ts", type=int, nargs="+", default=[40, 10, 2], help="timing: timesteps")
    ap.add_argument("--ks", type=int, nargs="+", default=[16, 64], help="timing: candidates")
    ap.add_argument("--merges", nargs="+", default=["mean", "centre"], help="timing: merge rules")
    ap.add_argument("--num-big", type=int, default=1, help="timing: samples at ~50k px")
    ap.add_argument("--json", help="append the rows to this JSON file")
    ap.add_argument("--save", help="quality: write each config's samples, side by side, into this folder")
    args = ap.parse_args()
    torch.manual_seed(0)
    loaded = open_model(args.model, max_pixels=args.max_pixels) if is_picture(args.model) else load_model(args.model)
    print(f"{args.what}: {loaded.pyramid.sizes_hw}, T = {loaded.start_t}, {torch.get_num_threads()} thread(s), "
          f"torch {torch.__version__}", flush=True)
    rows = quality(args, loaded) if args.what == "quality" else timing(args, loaded)
    if args.json:
        path = Path(args.json)
        data = json.loads(path.read_text()) if path.exists() else {"date": str(datetime.date.today()), "runs": []}
        data["runs"].append({"what": args.what, "argv": sys.argv[1:], "threads": torch.get_num_threads(),
                             "rows": rows})
        path.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
