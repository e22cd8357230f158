#!/usr/bin/env python3
"""Speed and fp32-vs-fast agreement of training and sampling; prints a table, writes JSON.

    python benchmarks/speed.py                 # GPU if visible, else the CPU plan
    python benchmarks/speed.py --quick --out /tmp/speed.json
    python benchmarks/speed.py --modes fp32,fast,fast-eager,compile --budget 240

GPU plan: the paper recipe (width 160, batch 32) on assets/rocket.jpg resized to
249x200 px (LANCZOS), which gives the 5-scale pyramid the reference timings were
measured on (50x62 .. 200x249). Modes:
  fp32        the reference arithmetic (eager fp32; cuDNN convs may use TF32)
  fast        bf16 autocast + channels_last + fused Adam + CUDA graphs (the default on CUDA)
  fast-eager  as fast, without CUDA graphs (diagnostic: what the graphs buy)
  fast-nchw   as fast, without channels_last (diagnostic: what NHWC buys)
  compile     as fast, plus torch.compile (opt-in; measured last, under the time budget)
  --coarse-batches 128,64 adds a 'fast-coarse' training job: the fast mode with bigger
  batches at the coarsest scales (train.coarse_batch_sizes), i.e. what that recipe lever
  costs per step on this card.
CPU plan (no CUDA, or --device cpu): benchmarks/speed_cpu.py, which takes the options
listed there: configs/smoke.yaml, cpu.yaml and small.yaml, fp32 against the CPU fast path,
alternating in one process, training ms/step per scale and sampling 4 images; --main-job
times the shipped model's sampling command (the README's main job until 2026-12-06).

Every job runs in its own Python process with a timeout, so a failing variant
(a crash, a CUDA error, a hang) is recorded and the others still run. Results are
written to the JSON after every job, so an outer timeout still leaves them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: _report, speed_cpu
from _report import cpu_model, write_json  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "speed.json"
ANCHORS = {"reference_train_ms_per_step_h200": 72.7, "reference_sample_batch16_s_h200": 2.25,
           "probe_compile_bf16_cl_ms_h200": 17.7, "probe_graph_bf16_cl_ms_h200": 22.4,
           "probe_sample_graph_ms_per_step_h200": [1.0, 1.6, 3.0, 5.6, 10.8]}
TARGETS = {"fast_train_ms_per_step_mean": 10.0, "fast_sample_batch16_s": 0.3}
# Stated fp32-vs-fast tolerances (bf16 keeps 8 significant bits: ~0.4 % per rounding).
TOLERANCES = {"net_rel_l2": 2e-2, "loss_rel_diff": 2e-2, "graphs_fp32_loss_rel_diff": 1e-4,
              "graphs_fp32_sample_max_abs": 1e-3}
# Fast-path features per mode (sinddm.fast.FastOptions); None: the fp32 path. Off CUDA every
# fast mode runs as the library does there: precision 'fast' falls back to fp32.
_FAST = dict(autocast=True, channels_last=True, graphs=True, compile=False)
MODES = {"fp32": None,
         "fast": _FAST,
         "fast-eager": dict(_FAST, graphs=False),
         "fast-nchw": dict(_FAST, channels_last=False),
         "compile": dict(_FAST, compile=True)}
SAMPLE_BATCH = 16


# ============================================================================================
# worker side (one job per process)
# ============================================================================================

class Worker:
    def __init__(self, spec: dict, out_path: str):
        self.spec, self.out_path = spec, out_path
        self.deadline = spec["deadline"]
        self.res: dict = {"job": spec["name"], "errors": [], "partial": False}

    # -- plumbing --------------------------------------------------------------------------
    def save(self) -> None:
        write_json(self.out_path, self.res)

    def log(self, msg: str) -> None:
        print(f"[{self.spec['name']}] {msg}", flush=True)

    def time_left(self) -> float:
        return self.deadline - time.time()

    def section(self, name: str, fn) -> None:
        """Run one measured section; an exception is recorded, never fatal."""
        t0 = time.time()
        try:
            fn()
        except Exception as e:
            self.res["errors"].append({"section": name, "error": f"{type(e).__name__}: {e}",
                                       "traceback": traceback.format_exc(limit=8)})
            self.log(f"{name} FAILED: {type(e).__name__}: {e}")
            self._after_failure()
        finally:
            self.res.setdefault("section_wall_s", {})[name] = round(time.time() - t0, 2)
            self.save()

    def _after_failure(self) -> None:
        if self.device.type == "cuda":
            try:
                self.torch.cuda.synchronize()
            except Exception as e:  # a sticky CUDA error: the next sections will say so too
                self.res["errors"].append({"section": "cuda-state", "error": f"{type(e).__name__}: {e}"})

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def timed(self, fn) -> tuple[float, object]:
        self.sync()
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - t0, out

    def time_ms_per_call(self, fn, n: int) -> float:
        """Mean ms per call over n back-to-back calls (CUDA events on GPU)."""
        torch = self.torch
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            for _ in range(n):
                fn()
            e1.record()
            e1.synchronize()
            return e0.elapsed_time(e1) / n
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) * 1000 / n

    def peak_gb(self):
        if self.device.type != "cuda":
            return None
        return round(self.torch.cuda.max_memory_allocated() / 1024 ** 3, 3)

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.reset_peak_memory_stats()

    # -- setup -----------------------------------------------------------------------------
    def setup(self) -> None:
        sys.path.insert(0, str(REPO))
        self.res["stubbed_modules"] = []  # kept for the report's shape: the real packages are always there now
        import torch

        self.torch = torch
        if self.spec.get("threads"):
            torch.set_num_threads(int(self.spec["threads"]))
        self.device = torch.device(self.spec["device"])
        self.res["torch"] = torch.__version__
        self.res["threads"] = torch.get_num_threads()

    def load_problem(self):
        from PIL import Image

        from sinddm.config import Config, load_config
        from sinddm.pyramid import build_pyramid

        spec = self.spec
        img = Image.open(REPO / "assets" / "rocket.jpg").convert("RGB")
        if spec.get("resize_wh"):
            img = img.resize(tuple(spec["resize_wh"]), Image.LANCZOS)
        cfg = load_config(REPO / spec["config"]) if spec.get("config") else Config()
        if spec.get("coarse_batch_sizes"):
            cfg.train.coarse_batch_sizes = list(spec["coarse_batch_sizes"])
        pyr = build_pyramid(img, cfg.image.max_pixels)
        return cfg, pyr

    # -- jobs ------------------------------------------------------------------------------
    def run(self) -> None:
        self.setup()
        self.save()
        kind = self.spec["kind"]
        if kind == "info":
            self.job_info()
        elif kind == "mode":
            self.job_mode()
        elif kind == "agree":
            self.job_agree()
        self.save()

    def job_info(self) -> None:
        torch = self.torch
        info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
                "torch_cuda": torch.version.cuda, "python": sys.version.split()[0]}
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info.update(device_name=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
                        total_memory_gb=round(p.total_memory / 1024 ** 3, 1),
                        cudnn=torch.backends.cudnn.version(), bf16_supported=torch.cuda.is_bf16_supported())
            try:
                import triton
                info["triton"] = triton.__version__
            except Exception:
                info["triton"] = None
        else:
            info.update(device_name=f"CPU ({cpu_model()}, {os.cpu_count()} cores)")
        self.res["info"] = info

    def job_mode(self) -> None:
        cfg, pyr = self.load_problem()
        self.res["sizes_hw"] = [list(s) for s in pyr.sizes_hw]
        self.res["config"] = {"dim": cfg.model.dim, "batch_size": cfg.train.batch_size, "file": self.spec.get("config"),
                              "coarse_batch_sizes": cfg.train.coarse_batch_sizes}
        self.trainer = None
        if not self.spec.get("skip_train"):
            self.section("train", lambda: self.train_section(cfg, pyr))
        if not self.spec.get("skip_sample"):
            if self.time_left() < 10:
                self.res["sample"] = {"skipped": "time budget"}
                self.res["partial"] = True
            else:
                self.section("sample", lambda: self.sample_section(cfg, pyr))

    def mode_options(self, mode: str):
        """(precision, FastOptions or None) for a mode on this device."""
        from sinddm.fast import FastOptions

        feats = MODES[mode]
        if feats is None:
            return "fp32", None
        if self.device.type != "cuda":
            return "fast", None  # the library's own CPU fallback
        return "fast", FastOptions(**feats)

    def make_trainer(self, cfg, pyr, mode: str | None = None, **extra):
        from sinddm.training import Trainer

        if mode is not None:
            precision, opts = self.mode_options(mode)
            extra = dict(precision=precision, fast_options=opts, **extra)
        # The benchmark never calls train()/save(), so the run folder is never created.
        return Trainer(cfg, pyr, Path(tempfile.gettempdir()) / "sinddm_bench_unused", self.device, seed=0, **extra)

    def train_section(self, cfg, pyr) -> None:
        spec = self.spec
        self.reset_peak()
        tr = self.make_trainer(cfg, pyr, spec["mode"])
        self.trainer = tr
        from sinddm.config import scale_batch_sizes

        out = self.res["train"] = {"ms_per_step": [], "first_step_s_by_scale": [], "batch": cfg.train.batch_size,
                                   "batch_by_scale": scale_batch_sizes(cfg.train, pyr.n_scales),
                                   "dim": cfg.model.dim, "status": tr.fast_status()}
        warm, reps, n = spec["train_warmup"], spec["train_repeats"], spec["train_steps"]
        for s in range(pyr.n_scales):
            if self.time_left() < 5:
                out["skipped_scales_from"] = s
                self.res["partial"] = True
                self.log(f"time budget reached before scale {s}")
                break
            # The first step at a scale pays its one-off costs: cuDNN autotuning, graph
            # capture, compilation. Reported apart from the steady-state time.
            first, _ = self.timed(lambda: tr.train_step(scale=s))
            out["first_step_s_by_scale"].append(round(first, 3))
            out["setup_s"] = round(sum(out["first_step_s_by_scale"]), 3)
            self.save()
            if s == 0:
                out["status"] = tr.fast_status()
                self.log(f"first step {first:.2f} s, status {out['status']}")
            for _ in range(warm):
                tr.train_step(scale=s)
            times = [self.time_ms_per_call(lambda: tr.train_step(scale=s), n) for _ in range(reps)]
            out["ms_per_step"].append(round(statistics.median(times), 3))
            self.log(f"scale {s} {pyr.sizes_hw[s]}: {out['ms_per_step'][-1]} ms/step (median of {reps}x{n})")
            self.save()
        if len(out["ms_per_step"]) == pyr.n_scales:
            out["mean_ms_per_step"] = round(sum(out["ms_per_step"]) / pyr.n_scales, 3)
        loss = float(tr.train_step(scale=0))
        out["last_loss"] = loss
        out["loss_finite"] = math.isfinite(loss)
        out["status"] = tr.fast_status()  # after the run: did graphs stay on?
        out["peak_gb"] = self.peak_gb()
        self.log(f"mean {out.get('mean_ms_per_step')} ms/step, peak {out['peak_gb']} GB, loss {loss:.4f}")

    def sample_section(self, cfg, pyr) -> None:
        torch, spec = self.torch, self.spec
        from sinddm.fast import FastPyramidSampler, prepare_backends
        from sinddm.model import Denoiser
        from sinddm.samplers import draw_pyramid_noise, sample_pyramid, sample_scale_from_noise
        from sinddm.schedule import Schedule, blend_gammas, start_timesteps
        from sinddm.devices import resolve_precision

        if self.trainer is not None:
            model = self.trainer.model
        else:
            torch.manual_seed(0)
            model = Denoiser(cfg.model.dim).to(self.device)
        model.eval()
        self.trainer = None
        precision, opts = self.mode_options(spec["mode"])
        precision = resolve_precision(precision, self.device)
        sch = Schedule.cosine(device=self.device)
        gam = blend_gammas(sch, pyr.blur_distance).to(self.device)
        st = start_timesteps(sch, pyr.blur_distance)
        sizes = pyr.sizes_hw
        B = spec.get("sample_batch", SAMPLE_BATCH)
        out = self.res["sample"] = {"batch": B, "start_t": st, "precision": precision}
        gen = lambda i: torch.Generator(device=self.device).manual_seed(1000 + i)  # noqa: E731
        self.reset_peak()
        sampler = None
        if precision == "fast":
            prepare_backends(self.device)
            sampler = FastPyramidSampler(model, sch, gam, sizes, st, self.device, opts)
            run = lambda g: sampler.sample(B, g)  # noqa: E731
            net = sampler.net
        else:
            run = lambda g: sample_pyramid(model, sch, gam, sizes, st, B, generator=g, device=self.device)  # noqa: E731
            net = model
        self.log(f"sampling batch {B} through {len(sizes)} scales (T = {st}) ...")
        first, outs = self.timed(lambda: run(gen(0)))
        out["first_call_s"] = round(first, 3)
        out["finite"] = bool(all(torch.isfinite(o).all() for o in outs))
        if sampler is not None:
            out["cuda_graphs"] = bool(sampler.use_graphs)
            out["graph_fallback"] = sampler.fallback_reason
        times = []
        for i in range(spec["sample_repeats"]):
            if self.time_left() < 5:
                self.res["partial"] = True
                break
            times.append(self.timed(lambda: run(gen(1 + i)))[0])
        if times:
            out["steady_s"] = round(statistics.median(times), 4)
            out["steady_all_s"] = [round(t, 4) for t in times]
            out["capture_and_warmup_s"] = round(max(first - out["steady_s"], 0.0), 3)
        self.log(f"first call {out['first_call_s']} s, steady {out.get('steady_s')} s")
        self.save()
        # Per-scale cost per denoising step (compare with the probes' 1.0/1.6/3.0/5.6/10.8 ms).
        per = []
        sets = getattr(sampler, "_sets", {}) if sampler is not None else {}
        if sampler is not None and sampler.use_graphs and B in sets:
            for s, g in enumerate(sets[B].graphs):
                per.append(round(self.time_ms_per_call(g.replay, 3) / st[s], 3))
        elif self.time_left() > 10 and not spec.get("quick"):  # one more eager pass, scale by scale
            noise = draw_pyramid_noise(B, sizes, st, gen(99), self.device)
            x = None
            for s in range(len(sizes)):
                sec, x = self.timed(lambda: sample_scale_from_noise(net, sch, gam, sizes, st, s, x, noise))
                per.append(round(sec * 1000 / st[s], 3))
        out["ms_per_denoise_step_by_scale"] = per
        out["peak_gb"] = self.peak_gb()

    def job_agree(self) -> None:
        cfg, pyr = self.load_problem()
        self.res["sizes_hw"] = [list(s) for s in pyr.sizes_hw]
        self.res["tolerances"] = TOLERANCES
        self.agree = self.res["agree"] = {}
        self.section("net", lambda: self.agree_net(cfg, pyr))
        self.section("draws", self.agree_draws)
        self.section("loss", lambda: self.agree_loss(cfg, pyr))
        if self.device.type == "cuda":
            self.section("graphs_fp32_loss", lambda: self.agree_graphs_fp32_loss(cfg, pyr))
        self.section("samples", lambda: self.agree_samples(cfg, pyr))

    def _fast_opts(self, **kw):
        from sinddm.fast import FastOptions

        if self.device.type == "cuda":
            return FastOptions.for_device(self.device, **kw)
        # On the CPU 'fast' is fp32; emulate its bf16 arithmetic with CPU autocast.
        return FastOptions(autocast=True, channels_last=True, graphs=False, compile=False)

    def agree_net(self, cfg, pyr) -> None:
        torch = self.torch
        from sinddm.fast import FastNet, inference_net
        from sinddm.model import Denoiser
        from sinddm.schedule import Schedule

        torch.manual_seed(0)
        model = Denoiser(cfg.model.dim).to(self.device).eval()
        opts = self._fast_opts(compile=False, graphs=False)
        train_net = FastNet(model, opts.autocast, opts.channels_last)   # fp32 weights, autocast
        infer_net = inference_net(model, opts)                           # bf16 weight copy
        sch = Schedule.cosine(device=self.device)
        g = torch.Generator(device=self.device).manual_seed(7)
        rows = []
        for s in range(pyr.n_scales):
            clean = pyr.level_tensor(s)[None].to(self.device).expand(8, -1, -1, -1)
            t = torch.randint(0, 100, (8,), generator=g, device=self.device)
            noise = torch.randn(clean.shape, generator=g, device=self.device)
            x = (sch.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1) * clean
                 + sch.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1) * noise)
            with torch.no_grad():
                ref = model(x, t, s).float()
                a = train_net(x, t, s)
                b = infer_net(x, t, s)
            rel = lambda o: float((o - ref).norm() / ref.norm())  # noqa: E731
            rows.append({"scale": s, "rel_l2_train_net": rel(a), "rel_l2_infer_net": rel(b),
                         "max_abs": float((a - ref).abs().max()), "ref_rms": float(ref.pow(2).mean().sqrt()),
                         "train_vs_infer_max_abs": float((a - b).abs().max())})
        worst = max(max(r["rel_l2_train_net"], r["rel_l2_infer_net"]) for r in rows)
        self.agree["net"] = {"by_scale": rows, "worst_rel_l2": worst, "ok": worst <= TOLERANCES["net_rel_l2"],
                             "emulated_on_cpu": self.device.type != "cuda"}
        self.log(f"network outputs: worst relative L2 error fp32 vs bf16 {worst:.2e}")

    def agree_draws(self) -> None:
        """The fast training step draws t and noise into buffers: same values as fp32's draws?"""
        torch = self.torch
        from sinddm.samplers import draw_pyramid_noise, sample_pyramid

        g1 = torch.Generator(device=self.device).manual_seed(3)
        g2 = torch.Generator(device=self.device).manual_seed(3)
        t1 = torch.randint(0, 100, (32,), generator=g1, device=self.device)
        n1 = torch.randn((32, 3, 50, 62), generator=g1, device=self.device)
        t2 = torch.zeros(32, dtype=torch.long, device=self.device).random_(0, 100, generator=g2)
        n2 = torch.zeros((32, 3, 50, 62), device=self.device).normal_(generator=g2)
        ok_train = bool(torch.equal(t1, t2) and torch.equal(n1, n2))
        # Pre-drawn pyramid noise vs the draws sample_pyramid makes (checked via its first draw
        # and via a whole tiny pyramid with an identity-like "network": zeros).
        sizes, st = [(9, 11), (13, 15)], [5, 3]
        zero_net = lambda x, t, s: torch.zeros_like(x)  # noqa: E731
        gam = torch.zeros((1, 100), device=self.device)
        from sinddm.schedule import Schedule
        sch = Schedule.cosine(device=self.device)
        a = sample_pyramid(zero_net, sch, gam, sizes, st, 4, generator=torch.Generator(device=self.device).manual_seed(5),
                           device=self.device)
        from sinddm.samplers import sample_pyramid_from_noise
        nz = draw_pyramid_noise(4, sizes, st, torch.Generator(device=self.device).manual_seed(5), self.device)
        b = sample_pyramid_from_noise(zero_net, sch, gam, sizes, st, nz)
        ok_sample = all(bool(torch.equal(x, y)) for x, y in zip(a, b))
        self.agree["draws"] = {"train_draws_identical": ok_train, "pyramid_noise_identical": ok_sample,
                               "ok": ok_train and ok_sample}
        self.log(f"RNG streams identical: training {ok_train}, sampling {ok_sample}")

    def _loss_run(self, tr, steps: int) -> list[float]:
        losses = []
        for _ in range(steps):
            losses.append(tr.train_step())
        return [float(x) for x in losses]  # one sync at the end

    def agree_loss(self, cfg, pyr) -> None:
        steps = self.spec.get("agree_steps", 20)
        a = self._loss_run(self.make_trainer(cfg, pyr, "fp32"), steps)
        opts = self._fast_opts(compile=False, graphs=True)
        tr = self.make_trainer(cfg, pyr, precision="fast", fast_options=opts)
        b = self._loss_run(tr, steps)
        rel = [abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b)]
        self.agree["loss"] = {"steps": steps, "fp32": a, "fast": b, "max_rel_diff": max(rel),
                              "mean_rel_diff": sum(rel) / len(rel), "ok": max(rel) <= TOLERANCES["loss_rel_diff"],
                              "fast_status": tr.fast_status()}
        self.log(f"loss over {steps} steps: max relative difference fp32 vs fast {max(rel):.2e}")

    def agree_graphs_fp32_loss(self, cfg, pyr) -> None:
        """The graph machinery alone (fp32 arithmetic, graphs on): should match fp32 to rounding."""
        from sinddm.fast import FastOptions

        steps = self.spec.get("agree_steps", 20)
        a = self._loss_run(self.make_trainer(cfg, pyr, "fp32"), steps)
        opts = FastOptions(autocast=False, channels_last=False, graphs=True, compile=False)
        tr = self.make_trainer(cfg, pyr, precision="fast", fast_options=opts)
        b = self._loss_run(tr, steps)
        rel = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b))
        self.agree["graphs_fp32_loss"] = {"max_rel_diff": rel, "ok": rel <= TOLERANCES["graphs_fp32_loss_rel_diff"],
                                          "status": tr.fast_status(),
                                          "note": "fp32 arithmetic + CUDA graphs + fused Adam vs plain fp32"}
        self.log(f"graphs-only (fp32) loss max relative difference {rel:.2e}")

    def agree_samples(self, cfg, pyr) -> None:
        torch = self.torch
        from sinddm.fast import FastOptions, FastPyramidSampler
        from sinddm.model import Denoiser
        from sinddm.samplers import sample_pyramid
        from sinddm.schedule import Schedule, blend_gammas, start_timesteps

        torch.manual_seed(0)
        model = Denoiser(cfg.model.dim).to(self.device).eval()
        sch = Schedule.cosine(device=self.device)
        gam = blend_gammas(sch, pyr.blur_distance).to(self.device)
        st = start_timesteps(sch, pyr.blur_distance)
        B = 4
        gen = lambda: torch.Generator(device=self.device).manual_seed(11)  # noqa: E731
        ref = sample_pyramid(model, sch, gam, pyr.sizes_hw, st, B, generator=gen(), device=self.device)
        res = {}
        variants = {"fast": self._fast_opts(compile=False, graphs=True)}
        if self.device.type == "cuda":
            variants["graphs_fp32"] = FastOptions(autocast=False, channels_last=False, graphs=True, compile=False)
        for name, opts in variants.items():
            smp = FastPyramidSampler(model, sch, gam, pyr.sizes_hw, st, self.device, opts)
            outs = smp.sample(B, gen())
            res[name] = {"mean_abs_by_scale": [float((o - r).abs().mean()) for o, r in zip(outs, ref)],
                         "max_abs_by_scale": [float((o - r).abs().max()) for o, r in zip(outs, ref)],
                         "cuda_graphs": bool(smp.use_graphs), "fallback": smp.fallback_reason}
        if "graphs_fp32" in res:
            worst = max(res["graphs_fp32"]["max_abs_by_scale"])
            res["graphs_fp32"]["ok"] = worst <= TOLERANCES["graphs_fp32_sample_max_abs"]
        res["note"] = ("same seed, random-init network; 'fast' differences are bf16 rounding carried "
                       "through the sampling chain (informative), 'graphs_fp32' must be ~0")
        self.agree["samples"] = res
        self.log("samples: fast vs fp32 mean |diff| by scale "
                 + ", ".join(f"{v:.3g}" for v in res["fast"]["mean_abs_by_scale"]))


def worker_main(spec_json: str, out_path: str) -> int:
    spec = json.loads(spec_json)
    w = Worker(spec, out_path)
    try:
        w.run()
    except Exception as e:
        w.res["errors"].append({"section": "job", "error": f"{type(e).__name__}: {e}",
                                "traceback": traceback.format_exc(limit=10)})
        w.save()
        print(f"[{spec['name']}] FAILED: {type(e).__name__}: {e}", flush=True)
        return 1
    return 0


# ============================================================================================
# orchestrator
# ============================================================================================

def run_job(spec: dict, timeout: float) -> dict:
    fd, path = tempfile.mkstemp(prefix="sinddm_job_", suffix=".json")
    os.close(fd)
    spec = dict(spec, deadline=time.time() + timeout - 8)  # leave the worker time to write up
    t0 = time.time()
    status = "ok"
    try:
        rc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec), path],
                            timeout=timeout, cwd=str(REPO)).returncode
        if rc != 0:
            status = f"exit code {rc}"
    except subprocess.TimeoutExpired:
        status = f"timeout after {timeout:.0f} s (partial results kept)"
    try:
        with open(path) as f:
            res = json.load(f)
    except Exception:
        res = {"job": spec["name"], "errors": [{"section": "job", "error": "no result written"}]}
    os.unlink(path)
    res["wall_s"] = round(time.time() - t0, 1)
    res["process_status"] = status
    if status != "ok" and not res.get("errors"):
        res.setdefault("errors", []).append({"section": "job", "error": status})
    return res


def plan(args, cuda: bool) -> list[tuple[dict, float]]:
    """(job spec, max seconds) in running order: the most important first, compile last."""
    q = args.quick
    jobs: list[tuple[dict, float]] = []
    base = {"threads": args.threads, "quick": q}
    if cuda:
        base.update(device="cuda", resize_wh=[249, 200], config=None,
                    train_warmup=3, train_repeats=3 if q else 5, train_steps=5 if q else 10,
                    sample_repeats=2 if q else 4, sample_batch=SAMPLE_BATCH,
                    skip_train=args.skip_train, skip_sample=args.skip_sample)
        jobs.append((dict(base, name="info", kind="info"), 90))
        order = [m for m in ("fast", "fp32", "fast-eager", "fast-nchw") if m in args.modes]
        for m in order:
            jobs.append((dict(base, name=m, kind="mode", mode=m), 150))
        if not args.skip_agree:
            jobs.append((dict(base, name="agree", kind="agree", agree_steps=10 if q else 20), 150))
        if args.coarse_batches and not args.skip_train:
            jobs.append((dict(base, name="fast-coarse", kind="mode", mode="fast", skip_sample=True,
                              coarse_batch_sizes=args.coarse_batches), 150))
        if "compile" in args.modes:
            jobs.append((dict(base, name="compile", kind="mode", mode="compile"), 10_000))
        return jobs
    raise AssertionError("the CPU plan is benchmarks/speed_cpu.py")  # main() hands it over


def _f(v, nd=2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def summarize(report: dict) -> str:
    jobs = report["jobs"]
    lines = []
    info = jobs.get("info", {}).get("info", {})
    lines.append(f"== sinddm speed: {info.get('device_name', '?')} | torch {info.get('torch', '?')} "
                 f"| cuda {info.get('torch_cuda')} | cudnn {info.get('cudnn', '-')} ==")
    lines.append(f"image: {report['image']}")
    mode_jobs = [(k, v) for k, v in jobs.items() if k not in ("info",) and ("train" in v or "sample" in v)]
    if any("train" in v for _, v in mode_jobs):
        lines.append("")
        lines.append("TRAINING  ms per step by scale (coarsest -> finest), mean over scales = expected step")
        lines.append(f"{'job':<22}{'batch':>14}{'dim':>5}  {'per scale':<40}{'mean':>9}{'setup_s':>9}{'peak_GB':>9}"
                     f"  status")
        for k, v in mode_jobs:
            t = v.get("train")
            if not t:
                continue
            st = t.get("status", {})
            flags = ",".join(n for n, on in (("bf16", st.get("autocast_bf16")), ("CL", st.get("channels_last")),
                                              ("graphs", st.get("cuda_graphs")), ("compile", st.get("compile")),
                                              ("fusedAdam", st.get("fused_adam"))) if on) or st.get("precision", "")
            per = " ".join(_f(x, 1) for x in t.get("ms_per_step", []))
            bs = t.get("batch_by_scale") or [t.get("batch", "")]
            batch = str(bs[0]) if len(set(bs)) == 1 else "/".join(map(str, bs))
            lines.append(f"{k:<22}{batch:>14}{t.get('dim', ''):>5}  {per:<40}"
                         f"{_f(t.get('mean_ms_per_step')):>9}{_f(t.get('setup_s')):>9}{_f(t.get('peak_gb')):>9}  {flags}")
    if any("sample" in v for _, v in mode_jobs):
        lines.append("")
        lines.append("SAMPLING  whole pyramid, one batch (seconds); per-step ms by scale")
        lines.append(f"{'job':<22}{'batch':>6}{'first_s':>9}{'warmup_s':>10}{'steady_s':>10}{'peak_GB':>9}  "
                     f"per denoising step (ms)")
        for k, v in mode_jobs:
            s = v.get("sample")
            if not s or "skipped" in s:
                continue
            per = " ".join(_f(x, 2) for x in s.get("ms_per_denoise_step_by_scale", []))
            g = " graphs" if s.get("cuda_graphs") else ""
            lines.append(f"{k:<22}{s.get('batch', ''):>6}{_f(s.get('first_call_s'), 3):>9}"
                         f"{_f(s.get('capture_and_warmup_s'), 3):>10}{_f(s.get('steady_s'), 3):>10}"
                         f"{_f(s.get('peak_gb')):>9}  {per}{g}")
    for k, v in jobs.items():
        a = v.get("agree")
        if not a:
            continue
        lines.append("")
        lines.append(f"AGREEMENT fp32 vs fast ({k})")
        if "net" in a:
            lines.append(f"  network outputs, worst relative L2 over scales: {a['net']['worst_rel_l2']:.2e} "
                         f"(tolerance {TOLERANCES['net_rel_l2']:.0e}) {'OK' if a['net']['ok'] else 'OVER'}"
                         f"{' [CPU bf16 emulation]' if a['net'].get('emulated_on_cpu') else ''}")
        if "draws" in a:
            lines.append(f"  same RNG draws: training {a['draws']['train_draws_identical']}, "
                         f"sampling noise {a['draws']['pyramid_noise_identical']}")
        if "loss" in a:
            lines.append(f"  loss over {a['loss']['steps']} steps, max relative difference: "
                         f"{a['loss']['max_rel_diff']:.2e} (tolerance {TOLERANCES['loss_rel_diff']:.0e}) "
                         f"{'OK' if a['loss']['ok'] else 'OVER'}")
        if "graphs_fp32_loss" in a:
            g = a["graphs_fp32_loss"]
            lines.append(f"  graphs only (fp32 arithmetic) loss max relative difference: {g['max_rel_diff']:.2e} "
                         f"{'OK' if g['ok'] else 'OVER'}")
        if "samples" in a:
            for name, r in a["samples"].items():
                if isinstance(r, dict):
                    lines.append(f"  samples {name}: mean |diff| by scale "
                                 + " ".join(f"{x:.3g}" for x in r["mean_abs_by_scale"])
                                 + f"; max {max(r['max_abs_by_scale']):.3g}"
                                 + (f" {'OK' if r['ok'] else 'OVER'}" if "ok" in r else ""))
    errs = [(k, e) for k, v in jobs.items() for e in v.get("errors", [])]
    notes = [(k, v["process_status"]) for k, v in jobs.items() if v.get("process_status", "ok") != "ok"]
    if errs or notes:
        lines.append("")
        lines.append("ERRORS / NOTES")
        for k, e in errs:
            lines.append(f"  {k} [{e.get('section')}]: {e.get('error')}")
        for k, n in notes:
            lines.append(f"  {k}: {n}")
    if report.get("targets_check"):
        lines.append("")
        lines.append("TARGETS " + "; ".join(f"{k}: {v}" for k, v in report["targets_check"].items()))
    lines.append(f"(anchors, reference code on H200: {ANCHORS['reference_train_ms_per_step_h200']} ms/step, "
                 f"{ANCHORS['reference_sample_batch16_s_h200']} s per batch of 16)")
    return "\n".join(lines)


def targets_check(jobs: dict) -> dict:
    out = {}
    t = jobs.get("fast", {}).get("train", {})
    if t.get("mean_ms_per_step") is not None:
        v = t["mean_ms_per_step"]
        out["fast train mean ms/step <= 10"] = f"{v} {'PASS' if v <= TARGETS['fast_train_ms_per_step_mean'] else 'MISS'}"
    c = jobs.get("compile", {}).get("train", {})
    if c.get("mean_ms_per_step") is not None:
        v = c["mean_ms_per_step"]
        out["compile train mean ms/step <= 10"] = f"{v} {'PASS' if v <= 10 else 'MISS'}"
    for name in ("fast", "compile"):
        s = jobs.get(name, {}).get("sample", {})
        if s.get("steady_s") is not None:
            v = s["steady_s"]
            out[f"{name} sample batch 16 <= 0.3 s"] = f"{v} {'PASS' if v <= TARGETS['fast_sample_batch16_s'] else 'MISS'}"
    return out


def _cpu_plan(argv) -> bool:
    """No CUDA to measure (or --device cpu): the CPU plan, in benchmarks/speed_cpu.py."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--device", default="auto")
    pre.add_argument("--worker", nargs=2)
    known, _ = pre.parse_known_args(argv)
    if known.worker:
        return False
    import torch

    return known.device == "cpu" or (known.device == "auto" and not torch.cuda.is_available())


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if _cpu_plan(argv):
        from speed_cpu import main as cpu_main

        return cpu_main(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"JSON output (default {DEFAULT_OUT.relative_to(REPO)})")
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-sample", action="store_true")
    p.add_argument("--skip-agree", action="store_true")
    p.add_argument("--modes", default=None,
                   help="comma list of fp32,fast,fast-eager,compile (default GPU: fp32,fast,fast-eager; "
                        "CPU: fp32,fast). compile is opt-in and runs last")
    p.add_argument("--coarse-batches", default=None, metavar="B0,B1,...",
                   help="GPU plan: also time the fast mode with these batch sizes at the coarsest scales "
                        "(train.coarse_batch_sizes; finer scales keep 32)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--budget", type=float, default=240.0, help="seconds for the whole run (default 240)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads in the workers")
    p.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(*args.worker)
    if args.coarse_batches:
        try:
            batches = [int(b) for b in args.coarse_batches.split(",")]
        except ValueError:
            batches = []
        if not batches or min(batches) < 1:
            print(f"error: --coarse-batches {args.coarse_batches!r}: give whole numbers >= 1, e.g. 128,64",
                  file=sys.stderr)
            return 2
        args.coarse_batches = batches

    t_start = time.time()
    import torch  # only to decide the plan; the workers do all CUDA work

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    default_modes = "fp32,fast,fast-eager" if cuda else "fp32,fast"
    args.modes = [m.strip() for m in (args.modes or default_modes).split(",") if m.strip()]
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        print(f"error: unknown mode(s) {bad}; choose from {list(MODES)}", file=sys.stderr)
        return 2
    out_path = Path(args.out)
    report = {"plan": "gpu" if cuda else "cpu", "modes": args.modes, "quick": args.quick,
              "image": ("assets/rocket.jpg resized to 249x200 px (LANCZOS): 5 scales, as the reference timings"
                        if cuda else "assets/rocket.jpg at each config's max_pixels"),
              "anchors": ANCHORS, "targets": TARGETS, "tolerances": TOLERANCES, "jobs": {}}
    print(f"sinddm benchmark: {report['plan']} plan, modes {args.modes}, budget {args.budget:.0f} s, "
          f"JSON -> {out_path}", flush=True)
    for spec, max_s in plan(args, cuda):
        left = args.budget - (time.time() - t_start)
        if left < 25:
            report["jobs"][spec["name"]] = {"skipped": f"time budget ({left:.0f} s left)",
                                            "process_status": "skipped"}
            print(f"-- {spec['name']}: skipped, {left:.0f} s of budget left", flush=True)
            continue
        timeout = min(max_s, left - 5)
        print(f"-- {spec['name']} (timeout {timeout:.0f} s)", flush=True)
        report["jobs"][spec["name"]] = run_job(spec, timeout)
        info = report["jobs"].get("info", {}).get("info", {})
        report.update(device=info.get("device_name"), torch=info.get("torch"))
        report["targets_check"] = targets_check(report["jobs"])
        report["elapsed_s"] = round(time.time() - t_start, 1)
        write_json(out_path, report)
    report["elapsed_s"] = round(time.time() - t_start, 1)
    write_json(out_path, report)
    print()
    print(summarize(report))
    print(f"\nwrote {out_path} ({report['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
