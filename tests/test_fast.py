"""The fast path's CPU-testable parts (sinddm.fast): fallbacks, RNG parity, EMA parity,
pre-drawn-noise sampling, the static-buffer training step and optimizer retargeting.

CUDA-only behaviour (graphs, bf16 on the GPU) is measured by benchmarks/speed.py.
"""

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from sinddm.checkpoint import LoadedModel
from sinddm.config import config_from_dict
import sinddm.fast as fast_module
from sinddm.fast import (FastNet, FastOptions, FastPyramidSampler, ema_update, inference_net, retarget_adam,
                         sampling_options)
from sinddm.model import Denoiser
from sinddm.pipeline import batch_seed, generate
from sinddm.pyramid import build_pyramid
from sinddm.samplers import PyramidNoise, draw_pyramid_noise, sample_pyramid, sample_pyramid_from_noise
from sinddm.schedule import Schedule, blend_gammas, start_timesteps
from sinddm.devices import resolve_precision
from sinddm.training import Trainer

from .conftest import ASSETS

CPU = torch.device("cpu")
EAGER_FP32 = FastOptions(autocast=False, channels_last=False, graphs=False, compile=False)


@pytest.fixture(scope="module")
def pyramid():
    img = Image.open(ASSETS / "rocket.jpg").convert("RGB")
    pyr = build_pyramid(img, 6000)
    assert pyr.n_scales == 2
    return pyr


def tiny_config(**train):
    t = dict(steps=10, batch_size=2, lr=1e-3, lr_milestones=[5], lr_gamma=0.5, ema_decay=0.9,
             ema_every=2, ema_start=4, checkpoint_every=1000, log_every=5, grid_samples=0)
    t.update(train)
    return config_from_dict({"image": {"max_pixels": 6000}, "model": {"dim": 8}, "train": t})


def assert_same_state(a: Trainer, b: Trainer, exact: bool = True):
    for name, sa, sb in (("model", a.model.state_dict(), b.model.state_dict()),
                         ("ema", a.ema.state_dict(), b.ema.state_dict())):
        for k in sa:
            if exact:
                assert torch.equal(sa[k], sb[k]), f"{name}.{k}"
            else:
                torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-6, msg=f"{name}.{k}")


# -- fallbacks ------------------------------------------------------------------------------------

def test_precision_resolves_per_device(monkeypatch):
    """'auto'/'fast' are the device's fast path where it has one, fp32 where it has none."""
    monkeypatch.setattr(fast_module, "cpu_channels_last_pays", lambda: True)
    assert resolve_precision("fast", CPU) == resolve_precision("auto", CPU) == "fast"
    assert resolve_precision("fp32", CPU) == "fp32"
    monkeypatch.setattr(fast_module, "cpu_channels_last_pays", lambda: False)  # e.g. an ARM build
    assert resolve_precision("fast", CPU) == resolve_precision("auto", CPU) == "fp32"
    opts = FastOptions.for_device(CPU, compile=True, graphs=True)
    assert not opts.active
    assert resolve_precision("auto", torch.device("cuda")) == "fast"  # describes CUDA; touches no GPU


def test_env_switches(monkeypatch):
    monkeypatch.setenv("SINDDM_COMPILE", "1")
    monkeypatch.setenv("SINDDM_CUDA_GRAPHS", "0")
    opts = FastOptions.for_device(torch.device("cuda"))  # describes CUDA; touches no GPU
    assert opts.compile and not opts.graphs and opts.autocast and opts.channels_last
    assert not FastOptions.for_device(torch.device("cuda"), compile=False).compile


def test_trainer_precision_fast_without_a_cpu_fast_path_is_exactly_fp32(pyramid, tmp_path, monkeypatch):
    monkeypatch.setattr(fast_module, "cpu_channels_last_pays", lambda: False)
    cfg = tiny_config()
    a = Trainer(cfg, pyramid, tmp_path / "a", CPU, seed=3, precision="fp32")
    b = Trainer(cfg, pyramid, tmp_path / "b", CPU, seed=3, precision="fast")
    assert b.precision == "fp32" and b.fast is None and b.fast_status() == {"precision": "fp32"}
    for _ in range(8):
        assert torch.equal(a.train_step(), b.train_step())
    assert_same_state(a, b)


def test_sampling_options_per_device(monkeypatch):
    cuda = torch.device("cuda")  # describes CUDA; touches no GPU
    assert sampling_options("fp32", cuda) is None and sampling_options("fp32", CPU) is None
    assert sampling_options("auto", cuda) == FastOptions.for_device(cuda)
    assert sampling_options("fast", cuda, compile=True).compile
    monkeypatch.setattr(fast_module, "cpu_channels_last_pays", lambda: True)
    for native in (False, True):  # bf16 only where the CPU has it natively
        monkeypatch.setattr(fast_module, "cpu_bf16_native", lambda: native)
        cpu = sampling_options("auto", CPU, compile=False, graphs=True)
        assert cpu == FastOptions(autocast=native, channels_last=True, graphs=False, compile=False, cpu_kernels=True)
        assert cpu == FastOptions.for_device(CPU, compile=False) == sampling_options("fast", CPU, compile=False)
    assert sampling_options("auto", CPU, compile=True).compile  # opt-in on a CPU too
    monkeypatch.setattr(fast_module, "cpu_channels_last_pays", lambda: False)
    assert sampling_options("fast", CPU) is None


def test_generate_on_cpu_fp32_exact_fast_close(pyramid, monkeypatch):
    """'fp32' is the eager sampler bit for bit; 'fast' on a CPU without native bf16 (channels_last,
    fp32) is the same arithmetic in another order: close, deterministic, and the exact path
    where NHWC does not pay. (With bf16: tests/test_fast_cpu.py.)"""
    torch.manual_seed(0)
    monkeypatch.setattr(fast_module, "cpu_bf16_native", lambda: False)
    loaded = LoadedModel(model=Denoiser(8), pyramid=pyramid, config=tiny_config(), step=0, path=Path("x"))
    sizes, st = pyramid.sizes_hw, [6, 3]
    run = lambda precision: generate(loaded, 3, sizes, st, seed=4, batch_size=2, progress=False,  # noqa: E731
                                     precision=precision)
    a = run("fp32")
    gen = torch.Generator().manual_seed(batch_seed(4, 0))
    eager = sample_pyramid(loaded.model, Schedule.cosine(), loaded.gammas, sizes, st, 2, generator=gen)[-1]
    assert torch.equal(torch.stack(a[:2]), eager)
    monkeypatch.setattr(fast_module, "cpu_channels_last_pays", lambda: True)
    b, b2 = run("fast"), run("auto")
    assert all(torch.equal(x, y) for x, y in zip(b, b2))
    assert all(x.is_contiguous() for x in b)
    assert not all(torch.equal(x, y) for x, y in zip(a, b))  # the NHWC path did run
    torch.testing.assert_close(torch.stack(b), torch.stack(a), rtol=0, atol=1e-4)
    monkeypatch.setattr(fast_module, "cpu_channels_last_pays", lambda: False)
    assert all(torch.equal(x, y) for x, y in zip(a, run("fast")))


# -- training: the static-buffer step (what the CUDA graphs replay) -----------------------------------

def test_static_step_draws_like_fp32():
    """randint/randn and random_/normal_ on buffers give the same numbers from one generator."""
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    t1 = torch.randint(0, 100, (5,), generator=g1)
    n1 = torch.randn((5, 3, 7, 9), generator=g1)
    t2 = torch.zeros(5, dtype=torch.long).random_(0, 100, generator=g2)
    n2 = torch.zeros((5, 3, 7, 9)).normal_(generator=g2)
    assert torch.equal(t1, t2) and torch.equal(n1, n2)


def test_static_step_engine_matches_fp32_exactly(pyramid, tmp_path):
    """The fast step machinery (static buffers, static grads zeroed then accumulated, loss
    buffer, sync-free EMA) with fp32 arithmetic reproduces the fp32 trainer bit for bit:
    across the EMA start, the LR milestone, and with forced scales."""
    cfg = tiny_config()
    a = Trainer(cfg, pyramid, tmp_path / "a", CPU, seed=1)
    b = Trainer(cfg, pyramid, tmp_path / "b", CPU, seed=1, fast_options=EAGER_FP32)
    assert b.precision == "fast" and b.fast_status()["cuda_graphs"] is False
    for i in range(9):
        assert torch.equal(a.train_step(), b.train_step()), i
    for s in (1, 0, 1):
        assert torch.equal(a.train_step(scale=s), b.train_step(scale=s))
    assert_same_state(a, b)
    assert a.optimizer.param_groups[0]["lr"] == b.optimizer.param_groups[0]["lr"] == 5e-4
    assert int(b.ema.n_averaged) == int(a.ema.n_averaged) == 5  # copies at 2, 4; averages at 6..12
    # Gradients stay in the step engine's static tensors, even after someone drops them.
    b.optimizer.zero_grad(set_to_none=True)
    assert torch.equal(a.train_step(), b.train_step())
    assert all(p.grad is g for p, g in zip(b.model.parameters(), b._static.grads))


def test_coarse_batch_sizes_per_scale_in_both_step_engines(pyramid, tmp_path):
    """train.coarse_batch_sizes: scale 0 trains on 5 copies, scale 1 on batch_size (2), in the
    fp32 trainer and in the static-buffer engine alike, with the same draws and weights."""
    cfg = tiny_config(coarse_batch_sizes=[5])
    a = Trainer(cfg, pyramid, tmp_path / "a", CPU, seed=3)
    b = Trainer(cfg, pyramid, tmp_path / "b", CPU, seed=3, fast_options=EAGER_FP32)
    assert [a.draw_batch(s)[2].shape[0] for s in (0, 1)] == [5, 2]
    a.noise_gen.manual_seed(4)  # undo those draws
    for s in (0, 1, None, None, None, 0):
        assert torch.equal(a.train_step(scale=s), b.train_step(scale=s))
    assert [n.shape[0] for n in b._static.noise] == [5, 2]
    assert [t.shape[0] for t in b._static.t] == [5, 2]
    assert_same_state(a, b)
    # A different batch changes the run: the option is not silently ignored.
    c = Trainer(tiny_config(), pyramid, tmp_path / "c", CPU, seed=3)
    assert not torch.equal(c.train_step(scale=0), Trainer(cfg, pyramid, tmp_path / "d", CPU, seed=3).train_step(scale=0))


def test_fast_trainer_bf16_emulated_on_cpu_tracks_fp32(pyramid, tmp_path):
    """bf16 autocast + channels_last (CPU emulation of the GPU arithmetic): same draws,
    losses within the stated tolerance of fp32 over a few steps."""
    cfg = tiny_config()
    a = Trainer(cfg, pyramid, tmp_path / "a", CPU, seed=2)
    b = Trainer(cfg, pyramid, tmp_path / "b", CPU, seed=2,
                fast_options=FastOptions(autocast=True, channels_last=True, graphs=False))
    assert b.model.blocks[1].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    la = torch.stack([a.train_step() for _ in range(6)])
    lb = torch.stack([b.train_step() for _ in range(6)])
    rel = ((la - lb).abs() / la.abs()).max().item()
    assert 0 < rel < 2e-2


# -- EMA -----------------------------------------------------------------------------------------------

def test_ema_update_matches_averaged_model_bitwise():
    """Trainer's sync-free EMA == AveragedModel.update_parameters with the 'copy until
    ema_start' trick, bit for bit, including the first-update copy."""
    torch.manual_seed(0)
    model = Denoiser(4)
    ref = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    ours = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    count = 0
    for step in range(1, 9):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        force = step <= 3
        if force:
            ref.n_averaged.zero_()
        ref.update_parameters(model)
        ema_update(list(ours.module.parameters()), list(model.parameters()), 0.9, force or count == 0)
        count = 1 if force else count + 1
        for x, y in zip(ref.module.parameters(), ours.module.parameters()):
            assert torch.equal(x, y), step
    assert int(ref.n_averaged) == count


# -- sampling with pre-drawn noise --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_sampling():
    torch.manual_seed(0)
    model = Denoiser(8).eval()
    schedule = Schedule.cosine()
    blur = [0.25, 0.18]
    return model, schedule, blend_gammas(schedule, blur), [(10, 12), (14, 17), (20, 24)], \
        start_timesteps(schedule, blur)


def test_predrawn_noise_reproduces_sample_pyramid(tiny_sampling):
    model, schedule, gammas, sizes, st = tiny_sampling
    assert st[0] == 100  # default timesteps: the full scale-0 chain
    ref = sample_pyramid(model, schedule, gammas, sizes, st, 3, generator=torch.Generator().manual_seed(5))
    noise = draw_pyramid_noise(3, sizes, st, torch.Generator().manual_seed(5))
    assert noise.steps.shape == (100, 3, 3, 10, 12) and len(noise.q) == 2
    out = sample_pyramid_from_noise(model, schedule, gammas, sizes, st, noise)
    assert all(torch.equal(x, y) for x, y in zip(ref, out))
    # Redrawing into the same (static) buffers gives the same values again.
    buf = PyramidNoise.zeros(3, sizes, st)
    draw_pyramid_noise(3, sizes, st, torch.Generator().manual_seed(5), out=buf)
    assert torch.equal(buf.steps, noise.steps) and torch.equal(buf.q[1], noise.q[1])


def test_fast_sampler_without_graphs_is_sample_pyramid(tiny_sampling):
    model, schedule, gammas, sizes, st = tiny_sampling
    smp = FastPyramidSampler(model, schedule, gammas, sizes, st[:1] + [5, 4], CPU, EAGER_FP32)
    assert not smp.use_graphs
    ref = sample_pyramid(model, schedule, gammas, sizes, st[:1] + [5, 4], 2,
                         generator=torch.Generator().manual_seed(1))
    out = smp.sample(2, torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(ref, out))


def test_fastnet_and_bf16_inference_copy(tiny_sampling):
    model = tiny_sampling[0]
    x = torch.randn(4, 3, 20, 24, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 17, 55, 99])
    with torch.no_grad():
        ref = model(x, t, 2)
        assert torch.equal(FastNet(model, False, False)(x, t, 2), ref)  # all off: the plain network
        cl = FastNet(model, False, True)(x, t, 2)
        train_bf16 = FastNet(model, True, True)(x, t, 2)
        infer_bf16 = inference_net(model, FastOptions(autocast=True, channels_last=True, graphs=False))(x, t, 2)
    torch.testing.assert_close(cl, ref, rtol=1e-5, atol=1e-5)
    assert train_bf16.dtype == torch.float32 and train_bf16.shape == ref.shape
    rel = ((train_bf16 - ref).norm() / ref.norm()).item()
    assert 0 < rel < 2e-2
    # The bf16 weight copy does what autocast does to fp32 weights (round once to bf16).
    torch.testing.assert_close(infer_bf16, train_bf16, rtol=0, atol=1e-3)
    assert next(model.parameters()).dtype == torch.float32  # the copy left the model alone


# -- optimizer state across precisions ------------------------------------------------------------------

def test_retarget_adam_restores_flags_step_and_layout():
    torch.manual_seed(0)
    src = Denoiser(4)
    opt = torch.optim.Adam(src.parameters(), lr=1e-3)
    src(torch.randn(1, 3, 8, 8), torch.tensor([3]), 0).sum().backward()
    opt.step()
    state = opt.state_dict()

    dst = Denoiser(4).to(memory_format=torch.channels_last)
    try:
        fused = torch.optim.Adam(dst.parameters(), lr=1e-3, fused=True)
    except (RuntimeError, ValueError):
        pytest.skip("no fused Adam on this CPU build")
    fused.load_state_dict(state)
    assert fused.param_groups[0]["fused"] is None  # load_state_dict copied the saved flags...
    retarget_adam(fused, True)
    g = fused.param_groups[0]
    assert g["fused"] is True and g["foreach"] is None and g["capturable"] is False  # ...put back
    for p in dst.parameters():
        st = fused.state[p]
        assert st["step"].dtype == torch.float32 and st["step"].device == p.device
        assert st["exp_avg"].stride() == p.stride() and st["exp_avg_sq"].stride() == p.stride()
    w = dst.blocks[1].conv1.weight
    assert not fused.state[w]["exp_avg"].is_contiguous()  # NHWC like its parameter
    torch.testing.assert_close(fused.state[w]["exp_avg"], opt.state[src.blocks[1].conv1.weight]["exp_avg"])

    plain = torch.optim.Adam(src.parameters(), lr=1e-3)
    plain.load_state_dict(fused.state_dict())
    retarget_adam(plain, None)
    assert plain.param_groups[0]["fused"] is None
    assert all(plain.state[p]["step"].device.type == "cpu" for p in src.parameters())


def test_resume_fp32_checkpoint_with_channels_last(pyramid, tmp_path):
    """A checkpoint written by an fp32 run resumes under the fast layout (channels_last model)
    and continues as the uninterrupted fp32 run does."""
    cfg = tiny_config()
    full = Trainer(cfg, pyramid, tmp_path / "full", CPU, seed=5)
    losses = [full.train_step() for _ in range(7)]
    part = Trainer(cfg, pyramid, tmp_path / "run", CPU, seed=5)
    for _ in range(4):
        part.train_step()
    (tmp_path / "run").mkdir()
    part.save()
    resumed = Trainer.resume(tmp_path / "run", CPU,
                             fast_options=FastOptions(autocast=False, channels_last=True, graphs=False))
    assert resumed.step == 4
    assert resumed.model.blocks[1].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    again = [resumed.train_step() for _ in range(3)]
    torch.testing.assert_close(torch.stack(again), torch.stack(losses[4:]), rtol=1e-4, atol=1e-6)
    assert_same_state(full, resumed, exact=False)


def test_training_draws_are_uniform_over_scales_and_timesteps(pyramid, tmp_path):
    """method §4: each step one scale uniformly at random, t uniform in 0..99 per copy, fresh
    Gaussian noise of the scale's size (2 scales here; 4000 draws, bounds ~6 standard errors)."""
    tr = Trainer(tiny_config(), pyramid, tmp_path / "a", CPU, seed=0)
    scales, ts = [], []
    for _ in range(4000):
        s, t, noise = tr.draw_batch()
        scales.append(s)
        ts.append(t)
        assert noise.shape == (2, *tr.clean[s].shape[1:])
    n0 = scales.count(0)
    assert abs(n0 - 2000) < 6 * 32  # binomial sd sqrt(4000/4) ≈ 32
    t = torch.cat(ts)
    assert int(t.min()) == 0 and int(t.max()) == 99
    counts = torch.bincount(t, minlength=100)
    assert counts.shape == (100,) and abs(float(t.float().mean()) - 49.5) < 6 * 28.9 / len(t) ** 0.5
    assert int(counts.min()) > 0.5 * len(t) / 100  # no timestep starved
    noise = torch.cat([tr.draw_batch(0)[2].flatten() for _ in range(50)])
    assert abs(float(noise.mean())) < 0.02 and abs(float(noise.std()) - 1) < 0.02
