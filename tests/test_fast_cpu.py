"""The CPU fast path (sinddm.fast.cpu and its wiring): the depthwise convolution's fast
gradient, native-bf16 detection, the trainer and sampler on the CPU fast path, and how
close they stay to the exact fp32 path. Speed is measured by benchmarks/speed.py."""

import copy
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import sinddm.fast as fast_module
import sinddm.fast.cpu as fast_cpu_module
from sinddm.checkpoint import LoadedModel, load_model
from sinddm.config import config_from_dict
from sinddm.fast import FastOptions, inference_net
from sinddm.fast.cpu import (ENV_BF16, ENV_MALLOC, FastDepthwiseConv2d, FusedDenoiser, _block, cpu_bf16_native, fused_denoiser,
                             keep_freed_memory, use_fast_depthwise)
from sinddm.model import Denoiser
from sinddm.pipeline import generate
from sinddm.pyramid import build_pyramid
from sinddm.training import Trainer

from .conftest import ASSETS

CPU = torch.device("cpu")
# The stated fp32-vs-fast tolerance on network outputs (relative L2; bf16 keeps 8 significant bits).
NET_REL_L2 = 2e-2


@pytest.fixture(scope="module")
def pyramid():
    return build_pyramid(Image.open(ASSETS / "rocket.jpg").convert("RGB"), 6000)


def tiny_config(**train):
    t = dict(steps=10, batch_size=2, lr=1e-3, lr_milestones=[5], lr_gamma=0.5, ema_decay=0.9,
             ema_every=2, ema_start=4, checkpoint_every=1000, log_every=5, grid_samples=0)
    t.update(train)
    return config_from_dict({"image": {"max_pixels": 6000}, "model": {"dim": 8}, "train": t})


@pytest.fixture
def cpu_fast_path(monkeypatch):
    """The CPU fast path on, with bf16 as the parameter says (emulated where not native)."""
    def on(bf16: bool):
        monkeypatch.setattr(fast_module, "cpu_channels_last_pays", lambda: True)
        monkeypatch.setattr(fast_module, "cpu_bf16_native", lambda: bf16)
    return on


# -- the depthwise convolution ----------------------------------------------------------------------

@pytest.mark.parametrize("c", [3, 8, 12, 32, 40])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_fast_depthwise_matches_conv2d_in_fp32(c, channels_last, bias):
    """Same outputs and gradients as nn.Conv2d (blocks of 3, 8, 12, 16 and 8 channels)."""
    torch.manual_seed(c)
    ref = nn.Conv2d(c, c, 5, padding=2, groups=c, bias=bias)
    fast = FastDepthwiseConv2d(c, c, 5, padding=2, groups=c, bias=bias)
    fast.load_state_dict(ref.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, c, 11, 14).contiguous(memory_format=fmt)
    g = torch.randn(3, c, 11, 14)
    outs, grads = [], []
    for m in (ref, fast):
        xi = x.clone().requires_grad_()
        y = m(xi)
        y.backward(g)
        outs.append(y)
        grads.append([xi.grad] + [p.grad for p in m.parameters()])
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)  # the forward is the same kernel
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)  # sums of ~460 products, in another order


def test_block_sizes():
    assert [_block(c) for c in (1, 3, 8, 16, 24, 32, 40, 80, 160)] == [1, 3, 8, 16, 12, 16, 10, 16, 16]


def test_fast_depthwise_under_bf16_autocast_is_what_conv2d_does():
    """Under CPU autocast both compute in bf16: outputs equal; gradients (to fp32 weights) close."""
    torch.manual_seed(0)
    ref = nn.Conv2d(16, 16, 5, padding=2, groups=16)
    fast = FastDepthwiseConv2d(16, 16, 5, padding=2, groups=16)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 16, 12, 10).contiguous(memory_format=torch.channels_last)
    res = []
    for m in (ref, fast):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x)
        y.float().square().sum().backward()
        res.append((y, m.weight.grad, m.bias.grad))
    assert res[1][0].dtype == res[0][0].dtype == torch.bfloat16
    assert res[1][1].dtype == torch.float32  # the gradient reaches the fp32 master weight
    torch.testing.assert_close(res[1][0], res[0][0], rtol=0, atol=0)
    for a, b in zip(res[1][1:], res[0][1:]):
        assert ((a - b).norm() / b.norm()).item() < 1e-2


def test_use_fast_depthwise_keeps_parameters_and_gradients():
    torch.manual_seed(1)
    ref = Denoiser(8)
    model = Denoiser(8)
    model.load_state_dict(ref.state_dict())
    params = list(model.parameters())
    opt = torch.optim.Adam(model.parameters())  # built before the swap: still updates the same tensors
    assert use_fast_depthwise(model) == 4
    assert all(type(b.depthwise) is FastDepthwiseConv2d for b in model.blocks)
    assert all(a is b for a, b in zip(params, model.parameters()))
    assert list(model.state_dict()) == list(ref.state_dict())
    x, t = torch.randn(2, 3, 9, 13), torch.tensor([3, 70])
    for m in (ref, model):
        (m(x, t, 1) ** 2).mean().backward()
    for (name, a), b in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)
    opt.step()
    assert not torch.equal(model.blocks[0].depthwise.weight, ref.blocks[0].depthwise.weight)
    assert use_fast_depthwise(model) == 0  # already swapped


# -- detection ----------------------------------------------------------------------------------------

def test_bf16_detection_and_override(monkeypatch):
    assert isinstance(cpu_bf16_native(), bool)
    monkeypatch.setenv(ENV_BF16, "0")
    assert cpu_bf16_native() is False
    monkeypatch.setenv(ENV_BF16, "1")
    assert cpu_bf16_native() is True


_FAULTS = """
import resource, torch
from sinddm.fast.cpu import keep_freed_memory
from sinddm.model import Denoiser
from sinddm.samplers import sample_pyramid
from sinddm.schedule import Schedule
applied = keep_freed_memory()
torch.manual_seed(0)
net, sch = Denoiser(16).eval(), Schedule.cosine()
sample_pyramid(net, sch, torch.zeros(1, 100), [(40, 50), (96, 120)], [2, 2], 4)
n0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
sample_pyramid(net, sch, torch.zeros(1, 100), [(40, 50), (96, 120)], [10, 10], 4)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - n0)
"""


def _page_faults(env_value: str) -> tuple[str, int]:
    env = dict(os.environ, OMP_NUM_THREADS="1", **{ENV_MALLOC: env_value})
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_stops_refaulting_activations(monkeypatch):
    """Sampling (20 network calls, warmed up): with glibc's defaults the activations are page-faulted
    in afresh at every call; kept for reuse, hardly any page is."""
    default, kept = _page_faults("0"), _page_faults("1")
    assert default[0] == "False" and kept[0] == "True"
    assert kept[1] < default[1] / 10, (default, kept)
    monkeypatch.setattr(fast_cpu_module, "_malloc_state", {})
    monkeypatch.setenv(ENV_MALLOC, "0")
    assert keep_freed_memory() is False  # opted out: nothing is called


# -- the trainer ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("bf16", [False, True])
def test_cpu_fast_trainer_tracks_fp32(pyramid, tmp_path, cpu_fast_path, bf16):
    """'auto' on a CPU with the fast path: channels_last, fused Adam, the fast depthwise gradient,
    bf16 as the CPU allows; fp32 master weights; the same draws, losses close to fp32's."""
    cpu_fast_path(bf16)
    cfg = tiny_config()
    a = Trainer(cfg, pyramid, tmp_path / "a", CPU, seed=2, precision="fp32")
    b = Trainer(cfg, pyramid, tmp_path / "b", CPU, seed=2, precision="auto")
    st = b.fast_status()
    assert (st["precision"], st["autocast_bf16"], st["channels_last"], st["fused_adam"], st["cpu_kernels"],
            st["cuda_graphs"]) == ("fast", bf16, True, True, True, False)
    assert all(p.dtype == torch.float32 for p in b.model.parameters())
    assert b.model.blocks[1].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    la = torch.stack([a.train_step() for _ in range(8)])
    lb = torch.stack([b.train_step() for _ in range(8)])
    rel = ((la - lb).abs() / la.abs()).max().item()
    assert rel < (2e-2 if bf16 else 1e-4)
    assert torch.equal(a.noise_gen.get_state(), b.noise_gen.get_state())  # as many draws from the same stream
    assert torch.equal(a.scale_gen.get_state(), b.scale_gen.get_state())
    for pa, pb in zip(a.ema.module.parameters(), b.ema.module.parameters()):
        assert pb.dtype == torch.float32 and ((pa - pb).norm() / pa.norm()).item() < (2e-2 if bf16 else 1e-4)


def test_cpu_fast_checkpoints_are_plain_and_cross_resume(pyramid, tmp_path, cpu_fast_path):
    """A fast run writes the same files as an fp32 run (keys, dtypes, a plain Denoiser loads the
    model), and an fp32 run resumes it (and the other way round) and keeps training."""
    cpu_fast_path(True)
    cfg = tiny_config()
    fast = Trainer(cfg, pyramid, tmp_path / "fast", CPU, seed=5, precision="fast")
    for _ in range(4):
        fast.train_step()
    (tmp_path / "fast").mkdir()
    fast.save()
    loaded = load_model(tmp_path / "fast")
    assert type(loaded.model.blocks[0].depthwise) is nn.Conv2d
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    plain = Trainer.resume(tmp_path / "fast", CPU, precision="fp32")
    assert plain.fast is None and plain.step == 4
    losses = [float(plain.train_step()) for _ in range(3)]
    assert all(0 < x < 2 for x in losses)
    (tmp_path / "plain").mkdir()
    plain.out_dir = tmp_path / "plain"
    plain.save()
    again = Trainer.resume(tmp_path / "plain", CPU, precision="fast")
    assert again.fast is not None and again._fused and again.step == 7
    st = again.optimizer.state[again.model.blocks[1].conv1.weight]
    assert st["exp_avg"].stride() == again.model.blocks[1].conv1.weight.stride()  # NHWC, like its parameter
    assert all(0 < float(again.train_step()) < 2 for _ in range(3))


# -- sampling ------------------------------------------------------------------------------------------

def test_cpu_fast_network_within_stated_tolerance(pyramid, cpu_fast_path):
    """The bf16 inference copy's outputs against fp32's at realistic inputs: within NET_REL_L2."""
    cpu_fast_path(True)
    torch.manual_seed(0)
    model = Denoiser(16).eval()
    net = inference_net(model, FastOptions.for_device(CPU))
    g = torch.Generator().manual_seed(1)
    for s in range(pyramid.n_scales):
        clean = pyramid.level_tensor(s)[None].expand(4, -1, -1, -1)
        x = 0.7 * clean + 0.7 * torch.randn(clean.shape, generator=g)
        t = torch.randint(0, 100, (4,), generator=g)
        with torch.no_grad():
            ref, out = model(x, t, s), net(x, t, s)
        rel = ((out - ref).norm() / ref.norm()).item()
        assert out.dtype == torch.float32 and 0 < rel < NET_REL_L2, (s, rel)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cond_from_model", [False, True])
def test_fused_denoiser_is_the_denoiser(dtype, cond_from_model):
    """oneDNN's fused conv+GELU and conv+residual, the conditioning in fp32 (from the fp32
    model's weights or the converted net's), folded into the depthwise bias when the batch
    shares t and s: the plain network's outputs (to rounding)."""
    torch.manual_seed(3)
    model = Denoiser(16).eval()
    net = copy.deepcopy(model).to(dtype=dtype, memory_format=torch.channels_last)
    fused = fused_denoiser(net, dtype, cond_from=model if cond_from_model else None)
    if fused is None:
        pytest.skip("this torch build has no oneDNN fused convolutions")
    x = torch.randn(3, 3, 13, 17).contiguous(memory_format=torch.channels_last)
    tol = 1e-5 if dtype == torch.float32 else NET_REL_L2
    for t, s in ((torch.tensor([40, 40, 40]), 2), (torch.tensor([5, 40, 99]), 1),
                 (torch.tensor([7, 7, 7]), torch.tensor([0, 1, 1]))):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            ref, out = model(x, t, s), fused(x, t, s)
        assert out.dtype == dtype and out.shape == ref.shape
        assert ((out.float() - ref).norm() / ref.norm()).item() < tol, (t, s)
    assert fused_denoiser(nn.Conv2d(3, 3, 1), dtype) is None  # anything else: no fused version


def test_fused_denoiser_keeps_each_steps_conditioning(monkeypatch):
    """Sampling asks for each (t, s) once per batch: the folded biases are computed once and
    reused (same outputs), the cache is bounded, and later changes to the model's weights do not
    leak into a built network (its conditioning layers are copies)."""
    torch.manual_seed(4)
    model = Denoiser(8).eval()
    net = copy.deepcopy(model).to(dtype=torch.bfloat16, memory_format=torch.channels_last)
    fused = fused_denoiser(net, torch.bfloat16, cond_from=model)
    if fused is None:
        pytest.skip("this torch build has no oneDNN fused convolutions")
    x = torch.randn(2, 3, 9, 11).contiguous(memory_format=torch.channels_last)
    calls = []
    real = fused._biases
    monkeypatch.setattr(fused, "_biases", lambda t, s: calls.append(1) or real(t, s))
    with torch.no_grad():
        a = fused(x, torch.tensor([9, 9]), 1)
        b = fused(x, torch.tensor([9, 9]), 1)
        fused(x, torch.tensor([8, 8]), 1)
        assert torch.equal(a, b) and len(calls) == 2 and set(fused._folded) == {(9, 1), (8, 1)}
        model.embed[0].weight.add_(1.0)
        fused._folded.clear()
        assert torch.equal(fused(x, torch.tensor([9, 9]), 1), a)
    monkeypatch.setattr(type(fused), "CACHE_SIZE", 2)
    with torch.no_grad():
        fused(x, torch.tensor([6, 6]), 0)
        assert len(fused._folded) == 2
        fused(x, torch.tensor([7, 7]), 0)
    assert set(fused._folded) == {(7, 0)}  # full: emptied, then this step's entry


def test_cpu_fast_sampling_net_is_fused(cpu_fast_path):
    cpu_fast_path(True)
    model = Denoiser(8).eval()
    net = inference_net(model, FastOptions.for_device(CPU, compile=False)).net
    assert type(net) is (FusedDenoiser if fused_denoiser(model, torch.float32) is not None else Denoiser)
    assert next(net.parameters()).dtype == torch.bfloat16


def test_cpu_fast_generate_seeds_and_cache(pyramid, cpu_fast_path):
    """'auto' is 'fast' on such a CPU; the same seed gives the same samples; the noise is
    the fp32 path's (samples close to fp32's); the inference copy is built once per weights."""
    cpu_fast_path(True)
    torch.manual_seed(0)
    loaded = LoadedModel(model=Denoiser(8), pyramid=pyramid, config=tiny_config(), step=0, path=Path("x"))
    run = lambda precision: generate(loaded, 2, pyramid.sizes_hw, [6, 3], seed=4, batch_size=2,  # noqa: E731
                                     progress=False, precision=precision)
    a, b = run("fp32"), run("auto")
    net = inference_net(loaded.model, FastOptions.for_device(CPU))
    assert all(torch.equal(x, y) for x, y in zip(b, run("fast")))
    assert inference_net(loaded.model, FastOptions.for_device(CPU)) is net  # cached
    assert all(x.is_contiguous() and x.dtype == torch.float32 for x in b)
    diff = (torch.stack(a) - torch.stack(b)).abs()
    assert 0 < diff.mean().item() < 0.05  # bf16 rounding carried through the chain, not other noise
    with torch.no_grad():
        loaded.model.out.bias.add_(0.1)  # the weights changed: a new copy
    assert inference_net(loaded.model, FastOptions.for_device(CPU)) is not net


def test_threads_are_left_as_the_caller_set_them(pyramid, cpu_fast_path):
    """OMP_NUM_THREADS / torch.set_num_threads decide: the library never changes them."""
    cpu_fast_path(True)
    before = torch.get_num_threads()
    tr = Trainer(tiny_config(), pyramid, Path("unused"), CPU, seed=0, precision="auto")
    tr.train_step()
    loaded = LoadedModel(model=tr.model, pyramid=pyramid, config=tiny_config(), step=0, path=Path("x"))
    generate(loaded, 1, pyramid.sizes_hw, [3, 2], progress=False, precision="auto")
    assert torch.get_num_threads() == before


def test_resume_auto_continues_in_the_runs_precision(pyramid, tmp_path, cpu_fast_path):
    """'auto' never switches a run between precisions halfway; a checkpoint from before the CPU
    fast path (no record) was trained in fp32 on a CPU, so it continues in fp32 there."""
    from sinddm.checkpoint import state_checksum

    cpu_fast_path(True)
    for p in ("fp32", "fast"):
        tr = Trainer(tiny_config(), pyramid, tmp_path / p, CPU, seed=1, precision=p)
        tr.train_step()
        (tmp_path / p).mkdir()
        tr.save()
        assert Trainer.resume(tmp_path / p, CPU, precision="auto").precision == p
        other = {"fp32": "fast", "fast": "fp32"}[p]
        assert Trainer.resume(tmp_path / p, CPU, precision=other).precision == other  # asked for: given
    ckpt = tmp_path / "fast" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    del state["precision"], state["checksum"]
    state["checksum"] = state_checksum(state)
    torch.save(state, ckpt)
    assert Trainer.resume(tmp_path / "fast", CPU, precision="auto").precision == "fp32"
