"""The fast path ('--precision fast', the default): bf16 autocast and channels_last; on CUDA
also CUDA graphs, fused Adam and a sync-free EMA; on an x86 CPU bf16 only where it is
native, the training network as one Function (`sinddm.fast.cpu_train`), a faster depthwise
weight gradient and fused sampling convolutions (`sinddm.fast.cpu`); torch.compile opt-in.

Only the network runs in bf16: noise-schedule and sampler arithmetic stay float32 and
the network's output is cast back to float32 before it is used. The CUDA-only parts
(graph capture) switch on through `FastOptions`; tests run the rest on the CPU.

What is graphed, and why (see also method §4-5):
- Training: the forward + backward of one step, one CUDA graph per scale (each scale
  has static shapes). Random t and noise are drawn eagerly, from the trainer's own
  generator, straight into the graph's static input buffers, in the same order and
  with the same kernels as the fp32 path, so both precisions see the same draws.
  Gradients live in static tensors outside the graphs, which every graph zeroes and
  then accumulates into. The optimizer step (fused Adam: a couple of kernels), the LR
  schedule and the EMA stay eager: learning rates stay Python floats, so MultiStepLR
  and checkpoints are exactly those of fp32 runs, and the CPU-side cost is hidden
  behind the GPU work of the graph.
- Sampling: each scale's whole denoising loop is one CUDA graph per (batch, sizes).
  All noise of the pyramid is pre-drawn, from the per-batch generator and in the
  order `samplers.sample_pyramid` draws it, into static buffers before the replays:
  no RNG runs inside a graph, so seeds give the same noise as the fp32 path.
"""

from __future__ import annotations

import copy
import os
import warnings
import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from .cpu import cpu_bf16_native, cpu_channels_last_pays, fused_denoiser  # tests patch the first two here
from ..samplers import (PyramidNoise, draw_pyramid_noise, sample_pyramid, sample_scale_from_noise)
from ..schedule import Schedule

ENV_COMPILE = "SINDDM_COMPILE"        # 1: torch.compile the network (opt-in; slow first steps)
ENV_GRAPHS = "SINDDM_CUDA_GRAPHS"     # 0: no CUDA graphs (eager bf16), for debugging


def _env_flag(name: str, default: bool) -> bool:
    v = os.environ.get(name, "").strip().lower()
    if not v:
        return default
    return v not in ("0", "false", "no", "off")


@dataclass(frozen=True)
class FastOptions:
    """Which fast-path features are on (`for_device` picks them; tests build others by hand)."""

    autocast: bool = True        # bf16 autocast for the network
    channels_last: bool = True   # NHWC model and inputs (tensor-core / oneDNN friendly convs)
    graphs: bool = True          # CUDA graphs
    compile: bool = False        # torch.compile(dynamic=False): one graph per input shape
    cpu_kernels: bool = False    # CPU training: fast_cpu's depthwise weight gradient, fused Adam
    cpu_net: bool = True         # with cpu_kernels: the network as one Function (sinddm.fast.cpu_train)

    @property
    def active(self) -> bool:
        return self.autocast or self.channels_last or self.graphs or self.compile or self.cpu_kernels

    @classmethod
    def for_device(cls, device: torch.device, compile: bool | None = None,
                   graphs: bool | None = None) -> "FastOptions":
        """The fast path for `device`. CUDA: everything (compile opt-in). An x86 CPU with oneDNN:
        channels_last, bf16 only where the CPU has native bf16, the CPU training kernels and
        training network (compile opt-in: it costs more than it saves there, docs/cpu-fast-path.md).
        Anything else: nothing (`active` is False, i.e. the fp32 path)."""
        device = torch.device(device)
        compile = _env_flag(ENV_COMPILE, False) if compile is None else compile
        if device.type == "cuda":
            graphs = _env_flag(ENV_GRAPHS, True) if graphs is None else graphs
            return cls(autocast=True, channels_last=True, graphs=graphs, compile=compile)
        if device.type == "cpu" and cpu_channels_last_pays():
            return cls(autocast=cpu_bf16_native(), channels_last=True, graphs=False, compile=compile,
                       cpu_kernels=True)
        return cls(autocast=False, channels_last=False, graphs=False, compile=False)


def has_fast_path(device: torch.device) -> bool:
    """Whether 'fast' differs from 'fp32' on `device`."""
    return FastOptions.for_device(device, compile=False, graphs=False).active


def sampling_options(precision: str, device: torch.device, compile: bool | None = None,
                     graphs: bool | None = None) -> FastOptions | None:
    """The fast-path features sampling uses for `precision` ('auto'/'fast': those of
    `FastOptions.for_device`, as training does), or None for the exact fp32 path."""
    if precision == "fp32":
        return None
    opts = FastOptions.for_device(device, compile=compile, graphs=graphs)
    return opts if opts.active else None


def prepare_backends(device: torch.device) -> None:
    # Autotune conv algorithms per input shape; the pyramid has a handful of shapes, each
    # seen thousands of times, so the one-off tuning pays for itself at once.
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


def compile_module(module: nn.Module) -> nn.Module:
    """torch.compile with static shapes (one compiled graph per scale size and batch)."""
    import torch._dynamo.config as dcfg

    # Training sees N shapes, sampling N more per batch size: stay above the default
    # limit of 8 recompiles, past which dynamo silently falls back to eager.
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dcfg, name):
            setattr(dcfg, name, max(getattr(dcfg, name), 64))
            break
    return torch.compile(module, dynamic=False)


class FastNet:
    """Calls a denoiser with channels_last input under bf16 autocast; returns float32.

    With autocast off and channels_last off it is the plain network (bit for bit).
    Autocast's weight-cast cache is off: inside a CUDA graph the cast must be
    recorded every step (training weights change between replays).
    """

    def __init__(self, net: Callable, autocast: bool, channels_last: bool):
        self.net, self.autocast, self.channels_last = net, autocast, channels_last

    def __call__(self, x: torch.Tensor, t: torch.Tensor, scale) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.autocast, cache_enabled=False):
            out = self.net(x, t, scale)
        return out.float()


# model -> (key, FastNet): one inference copy (and compiled code) per model and weights in a process
_INFERENCE_NETS: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def inference_net(model: nn.Module, opts: FastOptions) -> FastNet:
    """A sampling network: a bf16 copy of `model` when autocasting (so no weight casts run
    per step: the arithmetic is what autocast would do), channels_last, maybe compiled; on
    the CPU fast path with oneDNN's fused convolutions (`fast_cpu.FusedDenoiser`).

    Cached per model while its weights are unchanged (same storage, no in-place update), so
    repeated `generate` calls (`sinddm run`, evaluations) compile each shape once."""
    key = (opts, tuple((p.data_ptr(), p._version, p.device) for p in model.parameters()))
    hit = _INFERENCE_NETS.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    net = model
    if opts.autocast or opts.channels_last:
        net = copy.deepcopy(model).eval()
        if opts.autocast:
            net = net.to(dtype=torch.bfloat16)
        if opts.channels_last:
            net = net.to(memory_format=torch.channels_last)
    if opts.compile:
        net = compile_module(net)
    elif opts.cpu_kernels and opts.channels_last and next(model.parameters()).device.type == "cpu":
        net = fused_denoiser(net, torch.bfloat16 if opts.autocast else torch.float32, cond_from=model) or net
    _INFERENCE_NETS[model] = (key, FastNet(net, opts.autocast, opts.channels_last))
    return _INFERENCE_NETS[model][1]


# -- EMA --------------------------------------------------------------------------------------

@torch.no_grad()
def ema_update(ema_params: Sequence[torch.Tensor], params: Sequence[torch.Tensor], decay: float,
               copy_weights: bool) -> None:
    """The EMA update of `AveragedModel(multi_avg_fn=get_ema_multi_avg_fn(decay))`, without its
    host syncs (it reads its device-side counter `n_averaged` twice per update).

    copy_weights: the EMA becomes a copy (what AveragedModel does when n_averaged == 0).
    Same kernels (copy_, foreach lerp with weight 1 - decay), so the same bits.
    """
    ema_params = [p.detach() for p in ema_params]
    params = [p.detach() for p in params]
    if copy_weights:
        if hasattr(torch, "_foreach_copy_"):
            torch._foreach_copy_(ema_params, params)
        else:  # older torch: same values, one kernel per tensor
            for e, p in zip(ema_params, params):
                e.copy_(p)
    else:
        torch._foreach_lerp_(ema_params, params, 1 - decay)


# -- optimizer state across precisions ----------------------------------------------------------

def retarget_adam(optimizer: torch.optim.Optimizer, fused: bool | None) -> None:
    """After `load_state_dict`, make the optimizer run as this process asked.

    `load_state_dict` copies the saved groups' flags (fused, foreach, capturable), so a
    checkpoint written by a fast run would make an fp32 resume fused, and the other way
    round. Put the flags back and host `step` where that implementation expects it
    (fused/capturable: float32 on the parameter's device; otherwise a CPU tensor).
    Moment buffers get the parameter's memory layout: fused kernels walk raw memory, so
    an NCHW moment beside an NHWC (channels_last) parameter would be silently wrong.
    """
    for group in optimizer.param_groups:
        group["fused"] = fused
        group["capturable"] = False
        group["foreach"] = None
        for p in group["params"]:
            st = optimizer.state.get(p)
            if not st:
                continue
            if torch.is_tensor(st.get("step")):
                dev = p.device if fused else torch.device("cpu")
                st["step"] = st["step"].to(dtype=torch.float32, device=dev)
            for k, v in st.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    st[k] = torch.empty_like(p).copy_(v)


# -- training: forward + backward on static buffers ------------------------------------------------

LossFn = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


class StaticTrainStep:
    """Forward + backward of one training step on static per-scale buffers.

    `batches` is the batch at each scale, coarsest first. `loss_fn(scale, t, noise)` returns
    the scalar loss. With `graphs`, each scale's forward + backward is captured in a CUDA
    graph the first time that scale comes up (so start-up cost is spread out and a slow
    first compile of one shape does not hold up the others); without, the same forward and
    backward run eagerly on the same input buffers, and autograd hands the gradients over
    (`.grad` set afresh each step: nothing to zero or accumulate).
    After `run`, the parameters' `.grad` hold this step's gradients and the returned
    tensor the loss; the caller steps the optimizer.
    """

    def __init__(self, loss_fn: LossFn, params: Sequence[nn.Parameter], sizes_hw: list[tuple[int, int]],
                 batches: Sequence[int], timesteps: int, device: torch.device, graphs: bool):
        self.loss_fn, self.timesteps, self.device = loss_fn, timesteps, torch.device(device)
        self.params = list(params)
        self.n_scales = len(sizes_hw)
        # Valid contents from the start: warm-up and capture read them before any draw.
        self.t = [torch.zeros(b, dtype=torch.long, device=device) for b in batches]
        self.noise = [torch.zeros((b, 3, h, w), device=device) for b, (h, w) in zip(batches, sizes_hw)]
        self.loss_out = torch.zeros((), device=device)
        # Graphs write gradients to fixed addresses: these (preserve_format: NHWC stays NHWC).
        self.grads = [torch.zeros_like(p) for p in self.params] if graphs else []
        self.use_graphs = graphs
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.fallback_reason: str | None = None
        self._stream = None  # side stream for warm-up and capture (one stream for both)
        self._pool = None    # one memory pool shared by every scale's graph

    def draw(self, s: int, generator: torch.Generator) -> None:
        """t ~ U{0..T-1} then ε ~ N(0, I): what `torch.randint` / `torch.randn` would draw."""
        self.t[s].random_(0, self.timesteps, generator=generator)
        self.noise[s].normal_(generator=generator)

    def _attach_grads(self) -> None:
        for p, g in zip(self.params, self.grads):
            p.grad = g

    def _forward_backward(self, s: int) -> None:
        # backward accumulates in place into existing .grad tensors (no new allocation),
        # which is what keeps the gradients at fixed addresses across graph replays.
        torch._foreach_zero_(self.grads)
        loss = self.loss_fn(s, self.t[s], self.noise[s])
        loss.backward()
        self.loss_out.copy_(loss.detach())

    def capture(self, s: int) -> None:
        """Warm scale `s` up (cuDNN autotuning, lazy inits, compilation) on a side stream, then
        capture its graph on that same stream, in the memory pool all scales share.

        Sharing is safe in any replay order: nothing a graph leaves behind in the pool is
        read later (the loss goes to `loss_out`, gradients to `grads`, both outside it).
        Warm-up only computes gradients, which every step overwrites: no weight changes.
        """
        self._attach_grads()
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=self.device)
        stream = self._stream
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._forward_backward(s)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        torch.cuda.synchronize(self.device)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self._pool, stream=stream):
            self._forward_backward(s)
        self._pool = g.pool()
        self.graphs[s] = g
        torch.cuda.synchronize(self.device)

    def run(self, s: int, generator: torch.Generator) -> torch.Tensor:
        if self.use_graphs and s not in self.graphs:
            try:
                self.capture(s)
            except Exception as e:  # keep training: eager bf16 is slower, not wrong
                self.graphs.clear()
                self.use_graphs = False
                self.fallback_reason = f"{type(e).__name__}: {e}"
                warnings.warn(f"CUDA graph capture of the training step failed ({self.fallback_reason}); "
                              f"continuing without graphs", RuntimeWarning, stacklevel=2)
                torch.cuda.synchronize(self.device)
        self.draw(s, generator)
        if not self.use_graphs:  # eager: autograd hands each gradient over, nothing to zero or add
            for p in self.params:
                p.grad = None
            loss = self.loss_fn(s, self.t[s], self.noise[s])
            loss.backward()
            return loss.detach()
        if self.params[0].grad is not self.grads[0]:
            self._attach_grads()  # someone set .grad to None (zero_grad): the graphs still write here
        self.graphs[s].replay()
        return self.loss_out.clone()  # the buffer is overwritten by the next step


# -- sampling -----------------------------------------------------------------------------------

@dataclass
class _GraphSet:
    noise: PyramidNoise
    graphs: list
    outputs: list[torch.Tensor]


class FastPyramidSampler:
    """Coarse-to-fine sampling through a `FastNet`; with graphs, one CUDA graph per scale
    holds that scale's whole denoising loop, captured once per batch size.

    `sample(batch, generator)` gives the same noise as `samplers.sample_pyramid` with the
    same generator; only the network's arithmetic differs (bf16).
    """

    # Pre-drawn noise (scale 0 needs one tensor per step) may take at most this share
    # of free GPU memory; beyond it the sampler runs eagerly instead of in graphs.
    NOISE_MEMORY_SHARE = 0.25

    def __init__(self, model: nn.Module, schedule: Schedule, gammas: torch.Tensor,
                 sizes_hw: list[tuple[int, int]], start_t: list[int], device: torch.device,
                 opts: FastOptions, schedule0: Schedule | None = None):
        self.device = torch.device(device)
        self.schedule, self.gammas = schedule.to(self.device), gammas.to(self.device)
        self.schedule0 = schedule0.to(self.device) if schedule0 is not None else None
        self.sizes_hw, self.start_t = [tuple(s) for s in sizes_hw], list(start_t)
        self.opts = opts
        self.net = inference_net(model, opts)
        self.use_graphs = opts.graphs and self.device.type == "cuda"
        self._sets: dict[int, _GraphSet] = {}
        self.fallback_reason: str | None = None
        self.captures = 0

    def _noise_bytes(self, batch: int) -> int:
        h, w = self.sizes_hw[0]
        n = (self.start_t[0] + 1) * h * w + sum(h * w for h, w in self.sizes_hw[1:])
        return n * batch * 3 * 4

    def _run_scale(self, s: int, prev: torch.Tensor | None, noise: PyramidNoise,
                   t_limit: int | None = None) -> torch.Tensor:
        return sample_scale_from_noise(self.net, self.schedule, self.gammas, self.sizes_hw, self.start_t, s,
                                       prev, noise, t_limit=t_limit, schedule0=self.schedule0)

    def _capture(self, batch: int) -> _GraphSet:
        noise = PyramidNoise.zeros(batch, self.sizes_hw, self.start_t, self.device)
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # warm-up: two steps per scale cover every branch
            x = None
            for s in range(len(self.sizes_hw)):
                x = self._run_scale(s, x, noise, t_limit=2)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        torch.cuda.synchronize(self.device)
        graphs, outputs, pool, x = [], [], None, None
        for s in range(len(self.sizes_hw)):  # replayed in this order, so one pool serves all
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=pool, stream=stream):
                x = self._run_scale(s, x, noise)
            pool = g.pool()
            graphs.append(g)
            outputs.append(x)
        torch.cuda.synchronize(self.device)
        self.captures += 1
        return _GraphSet(noise, graphs, outputs)

    def _graphs_fit(self, batch: int) -> bool:
        free, _ = torch.cuda.mem_get_info(self.device)
        return self._noise_bytes(batch) <= self.NOISE_MEMORY_SHARE * free

    @torch.no_grad()
    def sample(self, batch: int, generator: torch.Generator | None, progress=None) -> list[torch.Tensor]:
        """Every scale's output for `batch` samples (fresh tensors, safe to keep)."""
        if self.use_graphs and batch not in self._sets and self._graphs_fit(batch):
            try:
                self._sets[batch] = self._capture(batch)
            except Exception as e:
                self.use_graphs = False
                self._sets.clear()
                self.fallback_reason = f"{type(e).__name__}: {e}"
                warnings.warn(f"CUDA graph capture for sampling failed ({self.fallback_reason}); "
                              f"sampling without graphs", RuntimeWarning, stacklevel=2)
                torch.cuda.synchronize(self.device)
        gs = self._sets.get(batch) if self.use_graphs else None
        if gs is None:
            return sample_pyramid(self.net, self.schedule, self.gammas, self.sizes_hw, self.start_t, batch,
                                  generator=generator, device=self.device, progress=progress,
                                  schedule0=self.schedule0)
        draw_pyramid_noise(batch, self.sizes_hw, self.start_t, generator, self.device, out=gs.noise)
        for s, g in enumerate(gs.graphs):
            g.replay()
            if progress is not None:
                progress.update(self.start_t[s])
        return [o.clone() for o in gs.outputs]
