"""The CPU fast path's training network: the denoiser's image path as one autograd Function.

At width 32 a training step is a few dozen short operations, and on a CPU some of them ran far
below what the hardware does (2 cores, configs/cpu.yaml's sizes; docs/cpu-fast-path.md):
- the conditioning bias (one value per sample and channel) added to a channels_last bf16
  tensor broadcasts over an innermost dimension of 3 or 16 values, shorter than a bf16 vector,
  and PyTorch's CPU kernel falls back to a scalar loop: 0.6-1.4 ms for one add at 16 channels.
  Added over rows of W*C values (the bias tiled W times) it takes 0.08-0.13 ms;
- GELU and its gradient took twice as long on a channels_last tensor as on the same memory
  seen as an NHWC-contiguous tensor;
- autograd recorded each operation, and each cast of an fp32 weight to bf16 and back, as a node.
Here the image path (depthwise convolution + conditioning bias, conv-GELU-conv, the residual,
the output convolution) runs as one Function whose backward is written out: the same oneDNN
convolutions, the bias added and summed over rows, GELU on NHWC views, the second convolution
and the residual as one oneDNN call (as in sampling, `sinddm.fast.cpu.FusedDenoiser`), and no
gradient for the network's input. The conditioning MLP (a few hundred values) stays in
ordinary autograd, in fp32.

The network's arithmetic (method §3) up to rounding: in fp32 its outputs and gradients match
the plain Denoiser to float32 precision; in bf16 the weights are rounded once per step, as
autocast rounds them, and the output is returned in fp32 (tests/test_fast_cpu_train.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cpu import add_channel_bias_, depthwise_input_grad, depthwise_weight_grad, fused_conv_ops, nhwc
from ..model import ConvBlock, Denoiser, sinusoidal_embedding

CL = torch.channels_last
# Per block, the tensors `_ImagePath` takes: the conditioning bias (B, C_in), then these
# parameters, then (blocks whose skip is a 1x1 conv) the skip's weight and bias.
BLOCK_PARAMS = ("depthwise.weight", "depthwise.bias", "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias")
SKIP_PARAMS = ("skip.weight", "skip.bias")


def channel_sums(g: torch.Tensor) -> torch.Tensor:
    """g.sum((2, 3)) in float32, for a channels_last g: over rows of W*C values, then W."""
    b, c, height, w = g.shape
    return nhwc(g).reshape(b, height, w * c).sum(1, dtype=torch.float32).view(b, w, c).sum(1)


def _conv_backward(g, x, w, pad: int, input_grad: bool = True):
    """(input, weight, bias) gradients of conv2d(x, w, b, padding=pad), stride 1."""
    return torch.ops.aten.convolution_backward(g, x, w, [w.shape[0]], [1, 1], [pad, pad], [1, 1], False, [0, 0], 1,
                                               [input_grad, True, True])


def _conv_add(x, w, b, pad: int, other):
    """conv2d(x, w, b, padding=pad) + other, one oneDNN call."""
    return fused_conv_ops().binary(x, other.contiguous(memory_format=CL), w, b, [pad, pad], [1, 1], [1, 1], 1,
                                   "add", None, None, [], None)


class _ImagePath(torch.autograd.Function):
    """The Denoiser's blocks and output convolution on x, given each block's conditioning bias.

    apply(layout, dtype, x, *tensors) -> output (float32). `layout`: per block, whether its skip
    is a 1x1 conv; `tensors`: per block the bias (B, C_in) and BLOCK_PARAMS (+ SKIP_PARAMS),
    then the output convolution's weight and bias. Computes in `dtype`, channels_last.
    """

    @staticmethod
    def forward(ctx, layout, dtype, x, *tensors):
        ts = [t.to(dtype) for t in tensors]
        h = x.to(dtype=dtype, memory_format=CL)  # one copy: cast and lay out
        saved, i = [], 0
        for has_skip in layout:
            bias, wd, bd, w1, b1, w2, b2 = ts[i:i + 7]
            h1 = add_channel_bias_(F.conv2d(h, wd, bd, 1, wd.shape[-1] // 2, 1, wd.shape[0]), bias)
            a = F.conv2d(h1, w1, b1, 1, w1.shape[-1] // 2)
            act = F.gelu(nhwc(a)).permute(0, 3, 1, 2)
            skip = F.conv2d(h, ts[i + 7], ts[i + 8]) if has_skip else h
            saved.append((h, h1, a, act))
            h = _conv_add(act, w2, b2, w2.shape[-1] // 2, skip)
            i += 9 if has_skip else 7
        out = F.conv2d(h, ts[i], ts[i + 1])
        ctx.layout, ctx.saved, ctx.last, ctx.ts = layout, saved, h, ts
        ctx.dtypes = [t.dtype for t in tensors]
        return out.float()

    @staticmethod
    def backward(ctx, grad):
        layout, ts = ctx.layout, ctx.ts
        starts, i = [], 0
        for has_skip in layout:
            starts.append(i)
            i += 9 if has_skip else 7
        grads: list = [None] * len(ts)
        g = grad.to(ts[i].dtype).contiguous(memory_format=CL)
        g, grads[i], grads[i + 1] = _conv_backward(g, ctx.last, ts[i], 0)
        for k in reversed(range(len(layout))):
            i = starts[k]
            h, h1, a, act = ctx.saved[k]
            wd, w1, w2 = ts[i + 1], ts[i + 3], ts[i + 5]
            g_act, grads[i + 5], grads[i + 6] = _conv_backward(g, act, w2, w2.shape[-1] // 2)
            g_skip = g
            if layout[k]:
                g_skip, grads[i + 7], grads[i + 8] = _conv_backward(g, h, ts[i + 7], 0, input_grad=k > 0)
            g_a = torch.ops.aten.gelu_backward(nhwc(g_act), nhwc(a)).permute(0, 3, 1, 2)
            g_h1, grads[i + 3], grads[i + 4] = _conv_backward(g_a, h1, w1, w1.shape[-1] // 2)
            g_bias = channel_sums(g_h1)
            grads[i], grads[i + 2] = g_bias, g_bias.sum(0)
            grads[i + 1] = depthwise_weight_grad(g_h1, h, wd, wd.shape[-1] // 2)
            if k > 0:  # the network's input needs no gradient
                g = depthwise_input_grad(g_h1, wd, wd.shape[-1] // 2).add_(g_skip)
        ctx.saved = ctx.last = ctx.ts = None
        return (None, None, None, *[gr.to(dt) for gr, dt in zip(grads, ctx.dtypes)])


class CpuTrainingNet(nn.Module):
    """`Denoiser.forward` for training on a CPU (module docstring): returns float32 and puts the
    gradients on `net`'s own parameters. Holds (does not copy) `net`."""

    def __init__(self, net: Denoiser, dtype: torch.dtype):
        super().__init__()
        self.net, self.dtype = net, dtype
        self.layout = tuple(not isinstance(b.skip, nn.Identity) for b in net.blocks)
        # Each block's parameters in `_ImagePath`'s order, gathered once (the same Parameter
        # objects every step: loading a state dict or an optimizer step updates them in place).
        self._block_params = [tuple(b.get_parameter(n) for n in BLOCK_PARAMS + (SKIP_PARAMS if skip else ()))
                              for b, skip in zip(net.blocks, self.layout)]

    def forward(self, x: torch.Tensor, t: torch.Tensor, scale) -> torch.Tensor:
        net = self.net
        if x.requires_grad:
            raise ValueError("CpuTrainingNet computes no gradient for its input x; use the Denoiser itself")
        if not torch.is_tensor(scale):
            scale = torch.full_like(t, int(scale))
        with torch.autocast(x.device.type, enabled=False):
            cond = net.embed(torch.cat((sinusoidal_embedding(t), sinusoidal_embedding(scale)), dim=-1))
            tensors = []
            for blk, params in zip(net.blocks, self._block_params):
                c2c = blk.cond_to_channels  # a 1x1 convolution of a 1x1 map: a linear layer
                tensors.append(F.linear(blk.cond(cond), c2c.weight.flatten(1), c2c.bias))
                tensors += params
            tensors += [net.out.weight, net.out.bias]
            return _ImagePath.apply(self.layout, self.dtype, x, *tensors)


def _plain_conv(m: nn.Module, k: int, groups: int = 1) -> bool:
    return (isinstance(m, nn.Conv2d) and m.kernel_size == (k, k) and m.stride == (1, 1) and m.dilation == (1, 1)
            and m.padding == (k // 2, k // 2) and m.groups == groups and m.bias is not None
            and m.padding_mode == "zeros")


def cpu_training_net(net: nn.Module, dtype: torch.dtype) -> CpuTrainingNet | None:
    """A `CpuTrainingNet` over `net` computing in `dtype`, or None where this torch lacks oneDNN's
    fused convolutions or `net` is not the Denoiser as this module assumes it."""
    if fused_conv_ops() is None or type(net) is not Denoiser or not _plain_conv(net.out, 1):
        return None
    for b in net.blocks:
        if type(b) is not ConvBlock or not (_plain_conv(b.depthwise, b.depthwise.kernel_size[0], b.depthwise.in_channels)
                                            and _plain_conv(b.conv1, 3) and _plain_conv(b.conv2, 3)
                                            and (isinstance(b.skip, nn.Identity) or _plain_conv(b.skip, 1))):
            return None
    return CpuTrainingNet(net, dtype)
