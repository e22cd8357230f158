"""The CPU fast path's training network (sinddm.fast.cpu_train): the same network, outputs and
gradients, as the plain Denoiser: to float32 precision in fp32, within the fast path's stated
tolerance in bf16. Speed is measured by benchmarks/cpu_levers.py and benchmarks/speed.py."""

import copy

import pytest
import torch
from torch import nn

from sinddm.fast.cpu import add_channel_bias_, fused_conv_ops, use_fast_depthwise
from sinddm.fast.cpu_train import CpuTrainingNet, channel_sums, cpu_training_net
from sinddm.model import Denoiser

NET_REL_L2 = 2e-2  # the fast path's stated tolerance on network outputs (tests/test_fast_cpu.py)

needs_fused = pytest.mark.skipif(fused_conv_ops() is None, reason="this torch build has no oneDNN fused convolutions")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("c", [1, 3, 16, 32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [True, False])
def test_channel_bias_over_rows_is_the_broadcast_add(c, dtype, channels_last):
    g = torch.Generator().manual_seed(c)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    h = torch.randn(3, c, 7, 9, generator=g).to(dtype).contiguous(memory_format=fmt)
    bias = torch.randn(3, c, generator=g).to(dtype)
    expected = h + bias[:, :, None, None]
    ptr = h.data_ptr()
    out = add_channel_bias_(h, bias)
    assert out.data_ptr() == ptr and torch.equal(h, expected)  # in place, and the same rounding
    assert h.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channel_sums(dtype):
    g = torch.randn(2, 16, 11, 5).to(dtype).contiguous(memory_format=torch.channels_last)
    s = channel_sums(g)
    assert s.dtype == torch.float32 and s.shape == (2, 16)
    torch.testing.assert_close(s, g.float().sum((2, 3)), rtol=1e-5, atol=1e-4)


def _outputs_and_grads(net: nn.Module, params: nn.Module, x, t, s, target):
    out = net(x, t, s)
    (out.float() - target).abs().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in params.named_parameters()}


def _pair(width: int, seed: int, channels_last: bool):
    torch.manual_seed(seed)
    ref = Denoiser(width)
    with torch.no_grad():  # away from the initialisation, where some gradients are exactly 0
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model = copy.deepcopy(ref)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        use_fast_depthwise(model)  # as the trainer leaves it
    return ref, model


def _batch(h: int, w: int):
    g = torch.Generator().manual_seed(h * w)
    x = torch.randn(3, 3, h, w, generator=g)
    return x, torch.tensor([3, 250, 499]), torch.randn(3, 3, h, w, generator=g)


@needs_fused
@pytest.mark.parametrize("width,hw,channels_last", [(8, (13, 17), True), (16, (9, 12), False), (32, (16, 11), True)])
def test_fp32_is_the_denoiser(width, hw, channels_last):
    """fp32: the plain network's outputs and every parameter's gradient (conditioning MLP
    included), per-sample t and a per-sample scale too, to float32 rounding."""
    ref, model = _pair(width, width, channels_last)
    net = cpu_training_net(model, torch.float32)
    assert isinstance(net, CpuTrainingNet) and net.layout == (True, True, False, True)
    x, t, target = _batch(*hw)
    for s in (2, torch.tensor([0, 1, 2])):
        ref.zero_grad()
        model.zero_grad()
        out_ref, g_ref = _outputs_and_grads(ref, ref, x, t, s, target)
        out, g = _outputs_and_grads(net, model, x, t, s, target)
        assert out.dtype == torch.float32 and out.shape == out_ref.shape
        torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
        assert g.keys() == g_ref.keys()
        for name in g_ref:
            assert g[name].shape == g_ref[name].shape and g[name].dtype == torch.float32
            assert rel(g[name], g_ref[name]) < 1e-4, name


@needs_fused
def test_bf16_within_the_fast_paths_tolerance():
    """bf16: outputs within the stated tolerance, gradients close; fp32 gradients on fp32 weights."""
    ref, model = _pair(32, 1, True)
    net = cpu_training_net(model, torch.bfloat16)
    x, t, target = _batch(24, 31)
    out_ref, g_ref = _outputs_and_grads(ref, ref, x, t, 1, target)
    out, g = _outputs_and_grads(net, model, x, t, 1, target)
    assert out.dtype == torch.float32 and 0 < rel(out, out_ref) < NET_REL_L2
    worst = max(rel(g[n], g_ref[n]) for n in g_ref)
    assert all(gr.dtype == torch.float32 for gr in g.values()) and 0 < worst < 5e-2


@needs_fused
def test_saved_activations_are_released_after_backward():
    _, model = _pair(8, 2, True)
    net = cpu_training_net(model, torch.bfloat16)
    x, t, target = _batch(10, 10)
    out = net(x, t, 0)
    node = out.grad_fn
    assert node.saved is not None and len(node.saved) == 4
    (out - target).abs().mean().backward()
    assert node.saved is None and node.ts is None


@needs_fused
def test_input_gradients_are_refused():
    _, model = _pair(8, 3, True)
    x, t, _ = _batch(8, 8)
    with pytest.raises(ValueError, match="input"):
        cpu_training_net(model, torch.float32)(x.requires_grad_(), t, 0)


@needs_fused
def test_anything_else_gets_no_training_net():
    assert cpu_training_net(nn.Conv2d(3, 3, 1), torch.float32) is None
    model = Denoiser(8)
    model.blocks[2].conv1.padding_mode = "reflect"
    assert cpu_training_net(model, torch.float32) is None
    model = Denoiser(8)
    model.blocks[0].conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
    assert cpu_training_net(model, torch.float32) is None
