#!/usr/bin/env python3
"""Time text-guided sampling against unguided sampling (method §6; target: a guided batch
of 16 at 250x200 costs at most 3x the unguided one on an H100/H200).

    # a trained run and the real CLIP (cached or --clip-checkpoint)
    python benchmarks/guidance_speed.py --run runs/rocket
    # no run, no weights (timing only): random width-160 denoiser on assets/rocket.jpg at
    # 249x200 (5 scales, as benchmarks/speed.py), random ViT-B/32 weights
    python benchmarks/guidance_speed.py --clip-pretrained none
    # tiny CPU smoke test of the script itself
    python benchmarks/guidance_speed.py --device cpu --dim 16 --batch 2 --start-t 4 3 3 3 6 \\
        --clip-model tests/data/tiny-clip.json --clip-pretrained none

Rows (each the mean of --repeats timed runs after one warm-up, same seed):
  unguided            sinddm.pipeline.generate: the library's sampler (precision 'fast' on
                      CUDA: bf16 + CUDA graphs); the baseline of the 3x target
  unguided-ddpm       the guided loop with no guide: DDPM at every scale, eager (what
                      guidance adds to, without CLIP)
  content / style     text-content (guided from scale 1, f .3, eta .3, lambda .2) and
                      text-style (finest scale only, f 1, eta .3, lambda .05)
  clip-step           one CLIP loss+gradient on batch x 16 views at the finest size
Prints a table and the ratios; --json writes them.
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


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up (kernels, cuDNN autotuning, CUDA graphs capture)
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sum(times) / len(times), out


def load_target(args, device):
    from sinddm.checkpoint import LoadedModel, load_model
    from sinddm.config import Config

    if args.run:
        return load_model(args.run, device)
    from PIL import Image

    from sinddm.model import Denoiser
    from sinddm.pyramid import build_pyramid

    img = Image.open(args.image).convert("RGB")
    if args.image_wh:
        img = img.resize(tuple(args.image_wh), Image.LANCZOS)
    pyr = build_pyramid(img, 10 ** 9)
    torch.manual_seed(0)
    config = Config()
    config.model.dim = args.dim
    return LoadedModel(model=Denoiser(args.dim).to(device).eval(), pyramid=pyr, config=config, step=0,
                       path=Path("random-weights"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="a run folder or model file (default: random weights, see --image/--dim)")
    p.add_argument("--image", default=str(REPO / "assets" / "rocket.jpg"))
    p.add_argument("--image-wh", type=int, nargs=2, default=[249, 200], metavar=("W", "H"))
    p.add_argument("--dim", type=int, default=160, help="random denoiser width (default 160, the paper's)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--start-t", type=int, nargs="+", help="T[0] .. T[N-1] (default: the pyramid's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fast"])
    p.add_argument("--clip-model", default="ViT-B-32")
    p.add_argument("--clip-pretrained", default="openai", help="'none': random weights (timing only)")
    p.add_argument("--clip-checkpoint")
    p.add_argument("--clip-views", default=None, help="reference, aspect or square (default: the library's)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--rows", default="unguided,unguided-ddpm,content,style,clip-step,clip-step-eager,augment")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    from sinddm.edits.clip import ClipSpec, load_clip
    from sinddm.edits.guidance import GuidanceParams, TextGuide, autocast_model, sample_guided
    from sinddm.pipeline import generate
    from sinddm.devices import resolve_device, resolve_precision

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    dtype = torch.bfloat16 if precision == "fast" else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    loaded = load_target(args, device)
    sizes = loaded.pyramid.sizes_hw
    start_t = list(args.start_t) if args.start_t else loaded.start_t
    if len(start_t) != len(sizes):
        p.error(f"--start-t needs {len(sizes)} values")
    t0 = time.perf_counter()
    spec = ClipSpec(args.clip_model, args.clip_pretrained, args.clip_checkpoint)
    clip = load_clip(spec, device, dtype=dtype or torch.float32)   # as `sinddm edit` loads it
    graphs = dtype is not None
    clip_load_s = time.perf_counter() - t0
    model = autocast_model(loaded.model.to(device).eval(), dtype)
    schedule = loaded.schedule.to(device)
    rows = args.rows.split(",")
    b = args.batch
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "clip_views": args.clip_views or "default",
           "precision": precision, "batch": b, "sizes_hw": [list(s) for s in sizes], "start_t": start_t,
           "clip": clip.name, "clip_random": clip.random_weights, "clip_load_s": round(clip_load_s, 2),
           "steps_total": sum(start_t), "times_s": {}}
    print(f"{res['device']}, precision {precision}, batch {b}, sizes {sizes}, T {start_t}, CLIP {clip.name}",
          flush=True)

    vk = {"views": args.clip_views} if args.clip_views else {}   # (older versions have no view modes)

    def guided(params, guide):
        def run():
            g = torch.Generator(device=device).manual_seed(0)
            if guide is not None:
                guide.generator = torch.Generator(device=device).manual_seed(1)
            return sample_guided(model, schedule, sizes, start_t, b, guide, params, generator=g, device=device)
        return run

    content = GuidanceParams(strength=0.3, fill_factor=0.3, momentum=0.2, guide_from=1)
    style = GuidanceParams(strength=0.3, fill_factor=1.0, momentum=0.05, guide_from=len(sizes) - 1)
    jobs = {
        "unguided": lambda: generate(loaded, b, sizes, start_t, seed=0, batch_size=b, device=device,
                                     progress=False, precision=precision),
        "unguided-ddpm": guided(content, None),
        "content": guided(content, TextGuide(clip, "a medieval castle", cuda_graphs=graphs, **vk)),
        "style": guided(style, TextGuide(clip, "Van Gogh Style", cuda_graphs=graphs, **vk)),
    }
    x = torch.rand(b, 3, *sizes[-1], device=device) * 2 - 1
    step_guide = TextGuide(clip, "a medieval castle", cuda_graphs=graphs,
                           generator=torch.Generator(device=device).manual_seed(0), **vk)
    eager_guide = TextGuide(clip, "a medieval castle", generator=torch.Generator(device=device).manual_seed(0), **vk)
    jobs["clip-step"] = lambda: step_guide.score_grad(x, "hq")
    jobs["clip-step-eager"] = lambda: eager_guide.score_grad(x, "hq")

    def augment_only():
        xx = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(step_guide.augment((xx + 1) / 2, step_guide.generator).sum(), xx)
        return g
    jobs["augment"] = augment_only
    for name in rows:
        if name not in jobs:
            p.error(f"unknown row {name}; use {', '.join(jobs)}")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            sec, _ = timed(jobs[name], device, args.repeats)
        except Exception as e:  # record and go on: one failing row must not lose the others
            res.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[:300]
            print(f"{name:>14}: FAILED {type(e).__name__}: {e}", flush=True)
            continue
        res["times_s"][name] = round(sec, 4)
        mem = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
        res.setdefault("peak_gib", {})[name] = round(mem, 2)
        print(f"{name:>14}: {sec:8.3f} s   peak {mem:6.2f} GiB", flush=True)
    if graphs and device.type == "cuda":
        # the graphed encoder must give what the eager one gives, on the same views
        views = torch.rand(b * 16, 3, *step_guide.augment.view_size(*sizes[-1]), device=device)
        out = []
        for gd in (step_guide, eager_guide):
            v = views.clone().requires_grad_(True)
            with torch.enable_grad():
                f = gd._encode(v)
                (g,) = torch.autograd.grad(f[:, 0].sum(), v)
            out.append((f.detach(), g))
        res["graph_vs_eager_max_abs"] = {"features": (out[0][0] - out[1][0]).abs().max().item(),
                                         "grad_rel": ((out[0][1] - out[1][1]).norm() / out[1][1].norm()).item()}
        print("graphed vs eager encoder:", res["graph_vs_eager_max_abs"], flush=True)
    t = res["times_s"]
    for name in ("content", "style"):
        for base in ("unguided", "unguided-ddpm"):
            if name in t and base in t:
                res[f"ratio_{name}_over_{base}"] = round(t[name] / t[base], 2)
                print(f"{name} / {base}: {t[name] / t[base]:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
