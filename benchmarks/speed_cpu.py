#!/usr/bin/env python3
"""The CPU plan of benchmarks/speed.py: fp32 (the exact path) against fast (the CPU fast path),
measured in the same process, alternating, so both see the same load.

    python benchmarks/speed.py                         # on a machine without CUDA: this plan
    python benchmarks/speed_cpu.py --threads 2 --main-job
    python benchmarks/speed_cpu.py --configs cpu --modes fp32,fast,compile --repeats 3

For each config (smoke, cpu, small by default) on assets/hubble.jpg at the config's
max_pixels, one worker process builds an fp32 and a fast trainer from the same seed and, per
scale, times REPEATS rounds of STEPS training steps of each (the order flips every round);
the figure is the median ms per step, per scale and averaged over scales (the expected step:
training draws scales uniformly). Then it samples 4 images through the pyramid (batch 4, the
CPU default, through `sinddm.generate`) with each precision, REPEATS times alternating, and
reports the median seconds. Wall and process CPU seconds are both kept: on a shared machine
wall time includes waiting for a core, CPU time does not. The load average is recorded
before and after every section.

--main-job also times the shipped model's README command end to end (`sinddm sample` of it,
4 samples at 1x2, process start-up included), alternating `--precision fp32` and the default.
--modes ...,compile adds fast + torch.compile training (first step per scale = compile time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: _report
from _report import cpu_model, write_json  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "speed_cpu.json"
CONFIGS = ("smoke", "cpu", "small")
TARGETS = {"cpu_train_speedup": 2.0, "cpu_sample_speedup": 2.0, "main_job_s": 15.0}
NET_REL_L2 = 2e-2  # the stated fp32-vs-fast tolerance on network outputs (tests/test_fast_cpu.py)
SAMPLE_NUM = 4


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(t: tuple[float, float]) -> tuple[float, float]:
    return time.perf_counter() - t[0], time.process_time() - t[1]


def med(xs: list[float], nd: int = 3) -> float:
    return round(statistics.median(xs), nd)


# -- worker: one config ------------------------------------------------------------------------

def worker(spec: dict, out_path: str) -> None:
    sys.path.insert(0, str(REPO))
    import torch
    from PIL import Image

    from sinddm.checkpoint import LoadedModel
    from sinddm.config import load_config
    from sinddm.pipeline import generate
    from sinddm.pyramid import build_pyramid
    from sinddm.training import Trainer

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    res: dict = {"config": spec["config"], "threads": torch.get_num_threads(), "load_start": load()}

    def save():
        write_json(out_path, res)

    cfg = load_config(REPO / "configs" / f"{spec['config']}.yaml")
    pyr = build_pyramid(Image.open(REPO / spec["image"]).convert("RGB"), cfg.image.max_pixels)
    res.update(sizes_hw=[list(s) for s in pyr.sizes_hw], dim=cfg.model.dim, batch=cfg.train.batch_size)
    cpu = torch.device("cpu")
    modes = spec["modes"]
    kw = {"fp32": dict(precision="fp32"), "fast": dict(precision="fast", compile=False),
          "compile": dict(precision="fast", compile=True)}
    trainers = {m: Trainer(cfg, pyr, Path(tempfile.gettempdir()) / "sinddm_bench_unused", cpu, seed=0, **kw[m])
                for m in modes}
    res["status"] = {m: tr.fast_status() for m, tr in trainers.items()}

    # Training: per scale, first step (one-off costs), warm-up, then alternating rounds.
    tr_res = res["train"] = {m: {"ms_per_step": [], "cpu_ms_per_step": [], "first_step_s": []} for m in modes}
    for s in range(pyr.n_scales):
        for m, tr in trainers.items():
            t = clock()
            tr.train_step(scale=s)
            tr_res[m]["first_step_s"].append(round(since(t)[0], 2))
            for _ in range(spec["warmup"]):
                tr.train_step(scale=s)
        wall = {m: [] for m in modes}
        cpu_t = {m: [] for m in modes}
        for r in range(spec["repeats"]):
            for m in (modes if r % 2 == 0 else modes[::-1]):
                t = clock()
                for _ in range(spec["steps"]):
                    trainers[m].train_step(scale=s)
                w, c = since(t)
                wall[m].append(1000 * w / spec["steps"])
                cpu_t[m].append(1000 * c / spec["steps"])
        for m in modes:
            tr_res[m]["ms_per_step"].append(med(wall[m], 1))
            tr_res[m]["cpu_ms_per_step"].append(med(cpu_t[m], 1))
        print(f"[{spec['config']}] scale {s} {pyr.sizes_hw[s]}: "
              + ", ".join(f"{m} {tr_res[m]['ms_per_step'][-1]} ms" for m in modes) + f" (load {load()})", flush=True)
        save()
    for m in modes:
        for k in ("ms_per_step", "cpu_ms_per_step"):
            tr_res[m][k.replace("ms_per_step", "mean_ms")] = round(sum(tr_res[m][k]) / pyr.n_scales, 1)
    res["load_after_train"] = load()

    # Sampling: 4 images, batch 4, through the library's generate (the CLI's path).
    model = trainers["fp32"].model if "fp32" in trainers else trainers[modes[0]].model
    loaded = LoadedModel(model=model, pyramid=pyr, config=cfg, step=0, path=Path("bench"))
    st = loaded.start_t
    samp = res["sample"] = {"num": SAMPLE_NUM, "batch": SAMPLE_NUM, "start_t": st}
    precisions = [p for p in ("fp32", "fast") if p in modes]
    wall = {p: [] for p in precisions}
    cpu_t = {p: [] for p in precisions}
    outs = {}
    for p in precisions:  # first call: builds the inference copy (cached afterwards)
        outs[p] = generate(loaded, SAMPLE_NUM, pyr.sizes_hw, st, seed=0, batch_size=SAMPLE_NUM, progress=False,
                           precision=p)
    for r in range(spec["sample_repeats"]):
        for p in (precisions if r % 2 == 0 else precisions[::-1]):
            t = clock()
            generate(loaded, SAMPLE_NUM, pyr.sizes_hw, st, seed=1 + r, batch_size=SAMPLE_NUM, progress=False,
                     precision=p)
            w, c = since(t)
            wall[p].append(w)
            cpu_t[p].append(c)
    for p in precisions:
        samp[p] = {"s": med(wall[p], 2), "cpu_s": med(cpu_t[p], 2), "all_s": [round(x, 2) for x in wall[p]]}
    if len(precisions) == 2:
        a, b = torch.stack(outs["fp32"]), torch.stack(outs["fast"])
        samp["fp32_vs_fast"] = {"mean_abs": float((a - b).abs().mean()), "max_abs": float((a - b).abs().max())}
    res["load_after_sample"] = load()
    print(f"[{spec['config']}] sampling {SAMPLE_NUM}: " + ", ".join(f"{p} {samp[p]['s']} s" for p in precisions)
          + f" (load {load()})", flush=True)
    save()
    if spec.get("agree") and "fp32" in trainers and "fast" in trainers:
        res["agree"] = agree(cfg, pyr, trainers["fp32"].model)
        save()


def agree(cfg, pyr, model) -> dict:
    """Network outputs of the trained-a-little fp32 weights: exact net vs the fast training net
    (fp32 weights under autocast) and the bf16 inference copy; losses of fresh fp32/fast runs."""
    import torch

    from sinddm.fast import FastNet, FastOptions, inference_net
    from sinddm.schedule import Schedule
    from sinddm.training import Trainer

    opts = FastOptions.for_device(torch.device("cpu"), compile=False)
    model = model.eval()
    train_net, infer_net = FastNet(model, opts.autocast, opts.channels_last), inference_net(model, opts)
    sch = Schedule.cosine()
    g = torch.Generator().manual_seed(7)
    rows = []
    for s in range(pyr.n_scales):
        clean = pyr.level_tensor(s)[None].expand(4, -1, -1, -1)
        t = torch.randint(0, 100, (4,), generator=g)
        x = (sch.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1) * clean
             + sch.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1) * torch.randn(clean.shape, generator=g))
        with torch.no_grad():
            ref = model(x, t, s).float()
            rel = [float((n(x, t, s) - ref).norm() / ref.norm()) for n in (train_net, infer_net)]
        rows.append({"scale": s, "rel_l2_train_net": rel[0], "rel_l2_infer_net": rel[1]})
    worst = max(max(r["rel_l2_train_net"], r["rel_l2_infer_net"]) for r in rows)
    steps = 20
    unused = Path(tempfile.gettempdir()) / "sinddm_bench_unused"
    a = Trainer(cfg, pyr, unused, torch.device("cpu"), seed=3, precision="fp32")
    b = Trainer(cfg, pyr, unused, torch.device("cpu"), seed=3, precision="fast")
    la = [float(a.train_step()) for _ in range(steps)]
    lb = [float(b.train_step()) for _ in range(steps)]
    rel = [abs(x - y) / abs(x) for x, y in zip(la, lb)]
    return {"net_by_scale": rows, "net_worst_rel_l2": worst, "net_tolerance": NET_REL_L2, "net_ok": worst <= NET_REL_L2,
            "loss_steps": steps, "loss_max_rel_diff": max(rel), "loss_mean_rel_diff": sum(rel) / steps,
            "bf16": opts.autocast}


# -- the main job, end to end -----------------------------------------------------------------------

def main_job(repeats: int, threads: int | None) -> dict:
    exe = [sys.executable, "-m", "sinddm"]
    model = REPO / "assets" / "models" / "hubble-small.safetensors"
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    times: dict[str, list[float]] = {"auto": [], "fp32": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for p in (("auto", "fp32") if r % 2 == 0 else ("fp32", "auto")):
                cmd = exe + ["sample", str(model), "--num", "4", "--scale-hw", "1", "2", "--out", f"{tmp}/{p}",
                             "--overwrite", "--quiet", "--precision", p]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, env=env, cwd=str(REPO), stdout=subprocess.DEVNULL)
                times[p].append(time.perf_counter() - t0)
                print(f"[main job] --precision {p}: {times[p][-1]:.1f} s (load {load()})", flush=True)
    return {p: {"s": med(v, 1), "all_s": [round(x, 1) for x in v]} for p, v in times.items()}


# -- report ------------------------------------------------------------------------------------------

def summarize(rep: dict) -> str:
    L = [f"== sinddm CPU speed: {rep['cpu']} | {rep['threads']} threads | native bf16: {rep['bf16_native']} "
         f"| torch {rep['torch']} | load (1/5/15 min) at start {rep['load_start']}, end {rep.get('load_end')} =="]
    L.append("TRAINING  ms per step by scale (coarsest -> finest; wall), mean over scales; [CPU-time mean]")
    for name, r in rep["configs"].items():
        t = r.get("train")
        if not t:
            L.append(f"  {name}: {r.get('error', 'no result')}")
            continue
        base = t.get("fp32", {}).get("mean_ms")
        for m, v in t.items():
            if "mean_ms" not in v:
                continue
            sp = f"  x{base / v['mean_ms']:.2f}" if base and m != "fp32" else ""
            first = f"  first step/scale {v['first_step_s']} s" if m == "compile" else ""
            L.append(f"  {name:<6} w{r['dim']:<3} b{r['batch']}  {m:<8} "
                     f"{' / '.join(f'{x:.1f}' for x in v['ms_per_step']):<28} mean {v['mean_ms']:7.1f}  "
                     f"[{v['cpu_mean_ms']:.1f}]{sp}{first}")
    L.append(f"SAMPLING  {SAMPLE_NUM} images (batch {SAMPLE_NUM}) through the pyramid at the training size, s (wall) [CPU s]")
    for name, r in rep["configs"].items():
        s = r.get("sample")
        if not s or "fp32" not in s:
            continue
        sp = f"  x{s['fp32']['s'] / s['fast']['s']:.2f}" if "fast" in s else ""
        fast = f"fast {s['fast']['s']:6.2f} [{s['fast']['cpu_s']:.2f}]" if "fast" in s else ""
        L.append(f"  {name:<6} fp32 {s['fp32']['s']:6.2f} [{s['fp32']['cpu_s']:.2f}]  {fast}{sp}")
    if rep.get("main_job"):
        mj = rep["main_job"]
        L.append(f"MAIN JOB  sinddm sample hubble-small --num 4 --scale-hw 1 2 (process start-up included): "
                 f"fp32 {mj['fp32']['s']} s, default {mj['auto']['s']} s (all: {mj['fp32']['all_s']} / "
                 f"{mj['auto']['all_s']})")
    for name, r in rep["configs"].items():
        a = r.get("agree")
        if a:
            L.append(f"AGREEMENT ({name}, bf16 {a['bf16']}): network outputs worst relative L2 {a['net_worst_rel_l2']:.2e} "
                     f"(tolerance {a['net_tolerance']:.0e}) {'OK' if a['net_ok'] else 'OVER'}; loss over "
                     f"{a['loss_steps']} steps max relative difference {a['loss_max_rel_diff']:.2e}")
        sa = (r.get("sample") or {}).get("fp32_vs_fast")
        if sa:
            L.append(f"  samples ({name}, same seed): mean |fp32 - fast| {sa['mean_abs']:.3g}, max {sa['max_abs']:.3g} "
                     "(values in [-1, 1])")
    if rep.get("targets_check"):
        L.append("TARGETS " + "; ".join(f"{k}: {v}" for k, v in rep["targets_check"].items()))
    return "\n".join(L)


def targets_check(rep: dict) -> dict:
    out = {}
    r = rep["configs"].get("cpu", {})
    t, s = r.get("train", {}), r.get("sample", {})
    if "mean_ms" in t.get("fp32", {}) and "mean_ms" in t.get("fast", {}):
        v = t["fp32"]["mean_ms"] / t["fast"]["mean_ms"]
        out["cpu.yaml training >= 2x"] = f"x{v:.2f} {'PASS' if v >= TARGETS['cpu_train_speedup'] else 'MISS'}"
    if "fp32" in s and "fast" in s:
        v = s["fp32"]["s"] / s["fast"]["s"]
        out["cpu.yaml sampling >= 2x"] = f"x{v:.2f} {'PASS' if v >= TARGETS['cpu_sample_speedup'] else 'MISS'}"
    mj = rep.get("main_job")
    if mj:
        v = mj["auto"]["s"]
        out["main job < 15 s"] = f"{v} s {'PASS' if v < TARGETS['main_job_s'] else 'MISS'}"
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma list of configs/NAME.yaml (default all)")
    p.add_argument("--modes", default="fp32,fast", help="fp32,fast[,compile]")
    p.add_argument("--image", default="assets/hubble.jpg")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, i.e. OMP_NUM_THREADS)")
    p.add_argument("--repeats", type=int, default=9,
                   help="alternating rounds per scale (default 9: on a shared machine 5 left the median swinging)")
    p.add_argument("--steps", type=int, default=3, help="training steps per round (default 3)")
    p.add_argument("--sample-repeats", type=int, default=3)
    p.add_argument("--main-job", action="store_true", help="also time the README's main job end to end")
    p.add_argument("--main-job-repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="2 rounds, 1 sampling repeat")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args, _ = p.parse_known_args(argv)  # speed.py's own options (e.g. --budget) are ignored here
    if args.worker:
        worker(json.loads(args.worker[0]), args.worker[1])
        return 0
    sys.path.insert(0, str(REPO))
    import torch

    from sinddm.fast.cpu import cpu_bf16_native

    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [m for m in args.modes.split(",") if m in ("fp32", "fast", "compile")]
    rep = {"cpu": f"{cpu_model()} ({os.cpu_count()} CPUs)", "threads": torch.get_num_threads(),
           "bf16_native": cpu_bf16_native(), "torch": torch.__version__, "load_start": load(), "image": args.image,
           "modes": modes, "configs": {}, "targets": TARGETS}
    out = Path(args.out)
    for name in [c for c in args.configs.split(",") if c]:
        spec = {"config": name, "image": args.image, "threads": args.threads, "modes": modes,
                "warmup": 1, "repeats": 2 if args.quick else args.repeats, "steps": args.steps,
                "sample_repeats": 1 if args.quick else args.sample_repeats, "agree": name == "cpu"}
        fd, path = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        try:
            subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec), path], check=True, timeout=3600)
            rep["configs"][name] = json.loads(Path(path).read_text())
        except (subprocess.SubprocessError, json.JSONDecodeError) as e:
            partial = Path(path).read_text() if Path(path).stat().st_size else "{}"
            rep["configs"][name] = dict(json.loads(partial), error=f"{type(e).__name__}: {e}")
        finally:
            os.unlink(path)
        write_json(out, rep)
    if args.main_job:
        rep["main_job"] = main_job(1 if args.quick else args.main_job_repeats, args.threads)
    rep["load_end"] = load()
    rep["targets_check"] = targets_check(rep)
    write_json(out, rep)
    print()
    print(summarize(rep))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
