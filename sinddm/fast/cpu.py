"""The CPU side of the fast path: what the CPU can do natively, and a depthwise convolution
whose weight gradient oneDNN computes 10-25x faster.

- bf16 only where the CPU has it natively (AVX512-BF16 or AMX): elsewhere oneDNN emulates
  it with conversions or runs reference kernels, which is not expected to beat fp32 (not
  measured: no such CPU here), so the fast path stays fp32 there.
- The denoiser's depthwise 5x5 convolutions: oneDNN runs their weight gradient as a
  grouped convolution padded to 16x16-channel blocks per group (its weight format
  aBCde16c16b), so with one channel per group it does ~256x the needed work: that one
  op took 60-80 % of a training step (width 32, 89x134, batch 4: 73 ms of bf16 against
  2.9 ms below). `FastDepthwiseConv2d` computes the same gradient as a block-diagonal
  grouped convolution with up to 16 channels per group (the shape oneDNN's kernels are
  built for) and keeps each block's diagonal; the forward pass and the input gradient
  (a forward pass with the kernel flipped) are oneDNN's depthwise kernels, which are fast.
"""

from __future__ import annotations

import copy
import functools
import os
import platform

import torch
import torch.nn.functional as F
from torch import nn

ENV_BF16 = "SINDDM_CPU_BF16"      # 0/1: override the native-bf16 detection (benchmarks, odd CPUs)
ENV_MALLOC = "SINDDM_CPU_MALLOC"  # 0: leave glibc malloc's defaults alone (see keep_freed_memory)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_malloc_state: dict = {}


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=None)
def _detect_bf16() -> bool:
    if not cpu_channels_last_pays():  # oneDNN on x86: the only CPU bf16 path measured
        return False
    cpu = getattr(torch, "cpu", None)
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, name, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # a private helper that changed: fall back to the kernel's own flags
            pass
    return bool({"avx512_bf16", "amx_bf16"} & _cpuinfo_flags())


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16) through oneDNN."""
    v = os.environ.get(ENV_BF16, "").strip().lower()
    if v:
        return v not in ("0", "false", "no", "off")
    return _detect_bf16()


def cpu_channels_last_pays() -> bool:
    """Whether NHWC convolutions run faster here: oneDNN on an x86 CPU (measured, see
    docs/fast-sampling.md); elsewhere (ARM builds, no oneDNN) it is unmeasured, so no."""
    return torch.backends.mkldnn.is_available() and platform.machine().lower() in ("x86_64", "amd64")


def keep_freed_memory() -> bool:
    """Make glibc keep freed tensor memory for reuse instead of handing it back to the OS.

    With glibc's defaults every step's activations were mapped in afresh and page-faulted:
    sampling the README's main job on 1 thread took 1.56 million page faults, 3.9 s of system
    time on top of 13.8 s of computing (fp32: 3.9 million, 9.0 s on 32.4 s); with these
    settings 30-54 thousand faults and under 0.15 s. The price: the process keeps its peak
    memory until it exits. Process-wide, once, for every precision (it changes no number);
    SINDDM_CPU_MALLOC=0 opts out. Returns whether it was set.
    """
    if "set" in _malloc_state:
        return _malloc_state["set"]
    ok = False
    if os.environ.get(ENV_MALLOC, "1").strip().lower() not in ("0", "false", "no", "off") \
            and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        try:
            import ctypes

            libc = ctypes.CDLL(None)
            # Both: setting one freezes the other at its small default, and the faults stay (measured).
            ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20) or libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20))
            ok = ok and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
        except (OSError, AttributeError):
            ok = False
    _malloc_state["set"] = ok
    return ok


def _block(c: int) -> int:
    """Channels per group of the weight-gradient convolution: the largest divisor of c up to 16."""
    return max(d for d in range(1, min(16, c) + 1) if c % d == 0)


def depthwise_input_grad(g: torch.Tensor, w: torch.Tensor, pad: int) -> torch.Tensor:
    """The input gradient of conv2d(x, w, padding=pad, groups=C) (stride 1), as a depthwise forward
    pass with the kernel flipped: 2.1 ms against oneDNN's backward-data 5.0 ms (bf16, width 32,
    101x118, batch 4)."""
    k = w.shape[-1]
    return F.conv2d(g, w.flip(2, 3), None, 1, k - 1 - pad, 1, w.shape[0])


def depthwise_weight_grad(g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, pad: int) -> torch.Tensor:
    """The weight gradient of conv2d(x, w, padding=pad, groups=C) (stride 1), as the diagonal of
    a block-diagonal grouped convolution's (module docstring). g and x in the same memory format."""
    c = w.shape[0]
    k = _block(c)
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    # Only the shape of this weight is read: (C, k, kh, kw) makes C/k groups of k channels.
    shape = torch.zeros((c, k, *w.shape[2:]), dtype=w.dtype, device=w.device).contiguous(memory_format=fmt)
    gblocks = torch.ops.aten.convolution_backward(g, x, shape, None, [1, 1], [pad, pad], [1, 1], False, [0, 0],
                                                  c // k, [False, True, False])[1]
    idx = torch.arange(c, device=w.device)
    return gblocks[idx, idx % k].unsqueeze(1)  # channel i's own kernel: the block's diagonal


class _Depthwise(torch.autograd.Function):
    """conv2d(x, w, b, padding=pad, groups=C) with w of shape (C, 1, k, k), stride 1, pad < k."""

    @staticmethod
    def forward(ctx, x, w, b, pad: int):
        ctx.save_for_backward(x, w)
        ctx.pad = pad
        return F.conv2d(x, w, b, 1, pad, 1, w.shape[0])

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        g = g.contiguous(memory_format=fmt)
        gx = depthwise_input_grad(g, w, ctx.pad) if ctx.needs_input_grad[0] else None
        gw = depthwise_weight_grad(g, x, w, ctx.pad) if ctx.needs_input_grad[1] else None
        # The bias apart: asking convolution_backward for it made it 20x slower.
        gb = g.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


class FastDepthwiseConv2d(nn.Conv2d):
    """A depthwise nn.Conv2d (stride 1, square kernel, symmetric padding) whose backward
    uses the fast weight gradient. Same parameters, same state-dict keys; under CPU
    autocast it computes in the autocast dtype, as nn.Conv2d would."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        if torch.is_autocast_enabled(x.device.type):
            dt = torch.get_autocast_dtype(x.device.type)
            x, w = x.to(dt), w.to(dt)
            b = b.to(dt) if b is not None else None
        with torch.autocast(x.device.type, enabled=False):
            return _Depthwise.apply(x, w, b, self.padding[0])


def _is_plain_depthwise(m: nn.Module) -> bool:
    if type(m) is not nn.Conv2d:
        return False
    k, p = m.kernel_size, m.padding
    return (m.groups == m.in_channels == m.out_channels and m.stride == (1, 1)
            and m.dilation == (1, 1) and k[0] == k[1] and isinstance(p, tuple) and p[0] == p[1] <= k[0] - 1
            and m.padding_mode == "zeros")


def use_fast_depthwise(model: nn.Module) -> int:
    """Swap every depthwise nn.Conv2d in `model` for a `FastDepthwiseConv2d` holding the
    same Parameter objects (an optimizer built before still updates them). Returns how many."""
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if _is_plain_depthwise(child)]
    for parent, name, old in swaps:
        new = FastDepthwiseConv2d(old.in_channels, old.out_channels, old.kernel_size, padding=old.padding,
                                  groups=old.groups, bias=old.bias is not None, device="meta")
        new.weight, new.bias = old.weight, old.bias
        setattr(parent, name, new)
    return len(swaps)


# -- sampling: the denoiser with oneDNN's fused convolutions ------------------------------------

def fused_conv_ops():
    """oneDNN's convolution with fused post-ops (torch.ops.mkldnn._convolution_pointwise), or None."""
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return ops._convolution_pointwise if ops is not None and torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


def nhwc(t: torch.Tensor) -> torch.Tensor:
    """A channels_last (N, C, H, W) tensor as the NHWC-contiguous tensor it is in memory."""
    return t.permute(0, 2, 3, 1)


def add_channel_bias_(h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """h += bias[:, :, None, None] in place; for a channels_last h over rows of W*C values, as a
    broadcast over 3 or 16 channels falls back to a scalar loop in bf16 (docs/cpu-fast-path.md)."""
    if not h.is_contiguous(memory_format=torch.channels_last):
        return h.add_(bias[:, :, None, None])
    b, c, height, w = h.shape
    nhwc(h).view(b, height, w * c).add_(bias[:, None, :].expand(b, w, c).reshape(b, 1, w * c))
    return h


class FusedDenoiser(nn.Module):
    """`Denoiser.forward` for inference on a CPU, with oneDNN doing the elementwise work inside
    the convolutions: conv1 + GELU and conv2 + the residual are one oneDNN call each (the
    post-ops torch.compile's CPU backend uses, without compiling), and when the whole batch
    shares t and s (as in sampling) the conditioning bias joins the depthwise conv's bias. In
    bf16 these separate GELUs and additions took about a third of a sampling step (width 48).

    The conditioning (the embedding MLP and each block's bias: a few hundred values) runs in
    fp32 on an fp32 copy of `cond_from`'s layers (default `net`'s): in bf16 each of its tiny
    operations cost 40-110 us of oneDNN set-up, about 0.8 ms a call. With a shared t and s the
    folded depthwise biases are computed once per (t, s) and kept.

    The same arithmetic as the plain network but for where it rounds to bf16 (the fused ops
    round once, after the post-op). Holds (does not copy) `net`'s other modules."""

    CACHE_SIZE = 4096  # (t, s) pairs: every step of a 10-scale pyramid at T = 400

    def __init__(self, net: nn.Module, dtype: torch.dtype, cond_from: nn.Module | None = None):
        super().__init__()
        self.net, self.dtype, self.pw = net, dtype, fused_conv_ops()
        src = net if cond_from is None else cond_from
        layers = nn.ModuleDict({"embed": src.embed, "cond": nn.ModuleList(b.cond for b in src.blocks),
                                "to_channels": nn.ModuleList(b.cond_to_channels for b in src.blocks)})
        self.cond_layers = copy.deepcopy(layers).float()
        self._folded: dict[tuple[int, int], list[torch.Tensor]] = {}

    def _biases(self, t: torch.Tensor, scale: torch.Tensor) -> list[torch.Tensor]:
        """Each block's conditioning bias, (B, C_in), float32."""
        from ..model import sinusoidal_embedding

        layers = self.cond_layers
        with torch.autocast(t.device.type, enabled=False):
            cond = layers.embed(torch.cat((sinusoidal_embedding(t), sinusoidal_embedding(scale)), dim=-1))
            return [F.linear(c(cond), c2c.weight.flatten(1), c2c.bias)  # a 1x1 conv of a 1x1 map
                    for c, c2c in zip(layers.cond, layers.to_channels)]

    def _shared_depthwise_biases(self, t: torch.Tensor, scale: torch.Tensor) -> list[torch.Tensor]:
        key = (int(t[0]), int(scale[0]))
        hit = self._folded.get(key)
        if hit is None:
            if len(self._folded) >= self.CACHE_SIZE:
                self._folded.clear()
            biases = self._biases(t[:1], scale[:1])
            hit = [(blk.depthwise.bias.float() + b[0]).to(self.dtype) for blk, b in zip(self.net.blocks, biases)]
            self._folded[key] = hit
        return hit

    def forward(self, x: torch.Tensor, t: torch.Tensor, scale) -> torch.Tensor:
        net, pw, one = self.net, self.pw, [1, 1]
        if not torch.is_tensor(scale):
            scale = torch.full_like(t, int(scale))
        shared = bool((t == t[0]).all()) and bool((scale == scale[0]).all())  # a host read: free on a CPU
        if shared:
            dw_biases = self._shared_depthwise_biases(t, scale)
        else:
            biases = [b.to(self.dtype) for b in self._biases(t, scale)]
        h = x.to(self.dtype)
        for k, blk in enumerate(net.blocks):
            dw = blk.depthwise
            if shared:
                h1 = F.conv2d(h, dw.weight, dw_biases[k], 1, dw.padding, 1, dw.groups)
            else:
                h1 = add_channel_bias_(F.conv2d(h, dw.weight, dw.bias, 1, dw.padding, 1, dw.groups), biases[k])
            c1, c2 = blk.conv1, blk.conv2
            h2 = pw(h1, c1.weight, c1.bias, list(c1.padding), one, one, 1, "gelu", [], "none")
            skip = blk.skip(h)
            h = pw.binary(h2, skip.contiguous(memory_format=torch.channels_last), c2.weight, c2.bias,
                          list(c2.padding), one, one, 1, "add", None, None, [], None)
        return net.out(h)


def fused_denoiser(net: nn.Module, dtype: torch.dtype, cond_from: nn.Module | None = None) -> nn.Module | None:
    """A `FusedDenoiser` over `net` (a channels_last Denoiser whose weights are `dtype`; the
    conditioning from `cond_from`'s fp32 weights, default `net`'s), or None where this torch
    lacks the fused ops or `net` is not shaped as expected."""
    from ..model import ConvBlock, Denoiser

    if fused_conv_ops() is None or type(net) is not Denoiser or not all(type(b) is ConvBlock for b in net.blocks):
        return None
    return FusedDenoiser(net, dtype, cond_from)
