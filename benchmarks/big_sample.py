#!/usr/bin/env python3
"""Large outputs: peak memory and speed of tiled and untiled sampling, 1x to 64x the training area.

    python benchmarks/big_sample.py                              # shipped model, CPU, tile 128
    python benchmarks/big_sample.py --factors 1 4 16 64 --tile 128 --start-t 6 3 3 --json out.json

Each (area factor, mode) runs in its own process (a clean peak): the output is the training size
times sqrt(factor) on each side. Memory: on a CPU the process's peak RSS (ru_maxrss) minus its RSS
after loading the model; on CUDA the allocator's peak (max_memory_allocated). `images_mb` is what
the samplers' whole-image tensors take (devices._IMAGE_MAPS 3-channel float32 maps per image), so
`peak - images` is what the network's evaluation holds: it grows with the area untiled and stays
flat tiled once the image exceeds a few tiles. Speed: seconds per output megapixel at the given
steps, and microseconds per pixel-step (wall / sum over scales of pixels x steps). Untiled runs only
where `devices.memory_needed` fits the memory available. Prints a table; --json writes the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def one(args) -> dict:
    """One measurement in this process."""
    import torch

    from sinddm.checkpoint import load_model
    from sinddm.devices import _IMAGE_MAPS, available_memory, memory_needed
    from sinddm.pipeline import generate
    from sinddm.pyramid import sample_sizes

    device = torch.device(args.device)
    loaded = load_model(args.model, device)
    f = args.factor ** 0.5
    sizes = sample_sizes(loaded.pyramid.sizes_hw, loaded.pyramid.scale_factor, scale_hw=(f, f))
    start_t = args.start_t or loaded.start_t
    tile = args.tile if args.mode == "tiled" else None
    h, w = sizes[-1]
    row = {"factor": args.factor, "mode": args.mode, "h": h, "w": w, "mpx": h * w / 1e6, "tile": tile,
           "start_t": start_t}
    if tile is None and memory_needed(sizes, loaded.model.dim, 1) > (available_memory(device) or 2 ** 62):
        return {**row, "skipped": "does not fit untiled"}
    base = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2 ** 20
    t0 = time.perf_counter()
    generate(loaded, 1, sizes, start_t, seed=0, batch_size=1, device=device, progress=False,
             precision="fp32", tile=tile)
    secs = time.perf_counter() - t0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    images = h * w * 3 * 4 * _IMAGE_MAPS / 2 ** 20
    px_steps = sum(a * b * t for (a, b), t in zip(sizes, start_t))
    return {**row, "seconds": secs, "s_per_mpx": secs / row["mpx"], "us_per_px_step": secs / px_steps * 1e6,
            "peak_mb": peak - base, "images_mb": images, "net_mb": peak - base - images}


def table(rows: list[dict]) -> str:
    head = "| area | size (h×w) | mode | peak MB | images MB | peak − images MB | s/Mpx | µs/px-step |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['factor']}× | {r['h']}×{r['w']} | {r['mode']} | {r['skipped']} | | | | |")
            continue
        mode = f"tiled {r['tile']}" if r["tile"] else "untiled"
        lines.append(f"| {r['factor']}× | {r['h']}×{r['w']} | {mode} | {r['peak_mb']:.0f} | {r['images_mb']:.0f} | "
                     f"{r['net_mb']:.0f} | {r['s_per_mpx']:.0f} | {r['us_per_px_step']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "assets/models/hubble-small.safetensors"))
    ap.add_argument("--factors", type=float, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--start-t", type=int, nargs="+", help="steps per scale (default: the model's)")
    ap.add_argument("--modes", nargs="+", default=["untiled", "tiled"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--factor", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return
    rows = []
    for factor in args.factors:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--one", "--factor", str(factor), "--mode", mode, "--model", args.model,
                   "--tile", str(args.tile), "--device", args.device]
            if args.start_t:
                cmd += ["--start-t", *map(str, args.start_t)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr)
    import torch

    load = os.getloadavg()
    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                       f"{torch.get_num_threads()} torch threads", "torch": torch.__version__,
            "load_avg_1_5_15": load, "device": args.device}
    print(f"{meta['machine']}; torch {meta['torch']}; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
