"""Fewer scale-0 steps: the respaced cosine schedule and `--scale0-steps`."""
import numpy as np
import pytest
import torch

from sinddm.checkpoint import load_model
from sinddm.cli import main
from sinddm.pipeline import generate
from sinddm.samplers import sample_ddpm
from sinddm.schedule import Schedule, cosine_alphas_cumprod

from .conftest import CONFIGS, GOLDEN
from .test_inputs import assert_one_error_line

SMALL = GOLDEN / "small_120x90.png"
TABLES = ["betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
          "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_mean_coef1",
          "posterior_mean_coef2", "posterior_log_variance_clipped", "timesteps"]


def test_respacing_all_steps_is_the_schedule_itself():
    full, same = Schedule.cosine(), Schedule.cosine_respaced(100)
    for name in TABLES:
        assert torch.equal(getattr(full, name), getattr(same, name)), name
    assert torch.equal(full.timesteps, torch.arange(100))


@pytest.mark.parametrize("k", [2, 10, 25, 50, 99])
def test_respaced_schedule_keeps_alpha_bar_at_the_kept_steps(k):
    sched = Schedule.cosine_respaced(k)
    kept = sched.timesteps.numpy()
    assert len(kept) == k and kept[0] == 0 and kept[-1] == 99 and np.all(np.diff(kept) > 0)
    ac = cosine_alphas_cumprod(100)
    np.testing.assert_allclose(sched.alphas_cumprod.double().numpy(), ac[kept], rtol=1e-6)
    # the respaced betas chain back to the same ᾱ: prod(1 - β') = ᾱ at every kept step
    np.testing.assert_allclose(np.cumprod(1 - sched.betas.double().numpy()), ac[kept], rtol=1e-5, atol=1e-8)  # float32 β near 1 at t = 99
    assert torch.all((sched.betas > 0) & (sched.betas < 1))


def test_respaced_ddpm_tells_the_network_the_kept_timesteps():
    seen, inputs, x0s = [], [], []

    def spy(x, t, scale):
        seen.append(t.tolist())
        inputs.append(x.clone())
        return torch.zeros_like(x)

    def record(x0, t):
        x0s.append(x0.clone())
        return x0

    sched = Schedule.cosine_respaced(10)
    alpha_bar_T = cosine_alphas_cumprod(100)[99]            # the last kept step is t = 99
    # x_T at 1.5 standard deviations of x̂0: some pixels of x̂0 are clamped, some not
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.5 * float(np.sqrt(alpha_bar_T))
    out = sample_ddpm(spy, sched, x, 0, lambda t: torch.zeros_like(x), x0_hook=record)
    assert seen == [[t, t] for t in reversed(sched.timesteps.tolist())]
    # ε̂ = 0 and no noise: x̂0 = x_T / sqrt(ᾱ_T) clamped, and the chain ends at x̂0 of the last step
    first = torch.from_numpy(x.double().numpy() / np.sqrt(alpha_bar_T)).clamp(-1, 1).float()
    assert 0 < int((first.abs() < 1).sum()) < first.numel()  # the clamp matters, and not everywhere
    torch.testing.assert_close(x0s[0], first, rtol=1e-6, atol=0)
    for k, (x_t, x0) in zip(reversed(range(len(inputs))), zip(inputs, x0s)):   # every step: x̂0 = x_t / sqrt(ᾱ_t)
        assert torch.equal(x0, (x_t * sched.sqrt_recip_alphas_cumprod[k]).clamp(-1, 1)), k
    assert torch.equal(out, x0s[-1])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("scale0") / "run"
    assert main(["train", str(SMALL), "--config", str(CONFIGS / "smoke.yaml"), "--out", str(run), "--steps", "3",
                 "--device", "cpu", "--quiet"]) == 0
    return run


def test_respacing_on_the_real_model_path(run, tmp_path):
    loaded = load_model(run)
    sizes, start_t = loaded.pyramid.sizes_hw, [100, 2, 2]
    default = generate(loaded, 2, sizes, start_t, seed=5, progress=False)
    all_steps = generate(loaded, 2, sizes, start_t, seed=5, progress=False, scale0_steps=100)
    fewer = generate(loaded, 2, sizes, start_t, seed=5, progress=False, scale0_steps=10)
    again = generate(loaded, 2, sizes, start_t, seed=5, progress=False, scale0_steps=10)
    assert all(torch.equal(a, b) for a, b in zip(default, all_steps))
    assert all(torch.equal(a, b) for a, b in zip(fewer, again))
    assert fewer[0].shape == default[0].shape and not torch.equal(fewer[0], default[0])

    out = tmp_path / "samples"
    assert main(["sample", str(run), "--num", "1", "--scale0-steps", "5", "--start-t", "1", "1", "--out", str(out),
                 "--quiet"]) == 0
    assert (out / "sample_000.png").is_file()


@pytest.mark.parametrize("extra, words", [
    (["--scale0-steps", "1"], ["--scale0-steps", "2..100"]),
    (["--scale0-steps", "101"], ["--scale0-steps", "2..100"]),
    (["--scale0-steps", "20", "--start-t", "50", "5", "5"], ["--scale0-steps", "--start-t"]),
])
def test_bad_scale0_steps(run, tmp_path, capsys, extra, words):
    out = tmp_path / "samples"
    assert main(["sample", str(run), "--out", str(out), "--quiet", *extra]) == 2
    assert_one_error_line(capsys.readouterr().err, words)
    assert not out.exists()
