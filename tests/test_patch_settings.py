"""The patch denoiser's settings in a model's config: respaced steps (`model.patch_steps`, method
§11.10), the layout start (`model.layout_t`, §11.11), candidates (`model.patch_candidates`, §11.12) and the blurry context
(`model.patch_context`, §11.13)."""

from __future__ import annotations

import pytest
import torch

from sinddm.config import config_from_dict
from sinddm.errors import UserError
from sinddm.image_io import load_rgb
from sinddm.pipeline import generate
from sinddm.samplers import blended_timesteps, sample_blended
from sinddm.schedule import Schedule
from sinddm.sources import picture_model

from .conftest import ASSETS

PHOTO = ASSETS / "rocket.jpg"


class Recorder(torch.nn.Module):
    """A stand-in denoiser: ε = 0.1·x, remembering each call's (scale, t)."""

    takes_blurry = True

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, scale, blurry=None, gamma=None):
        self.calls.append((int(scale), int(t.reshape(-1)[0])))
        return 0.1 * x


@pytest.mark.parametrize("t_start, steps, want", [
    (5, None, [4, 3, 2, 1, 0]),
    (5, 5, [4, 3, 2, 1, 0]),
    (5, 9, [4, 3, 2, 1, 0]),
    (10, 4, [9, 6, 3, 0]),
    (46, 2, [45, 0]),
])
def test_blended_timesteps_are_evenly_spaced_and_keep_both_ends(t_start, steps, want):
    assert blended_timesteps(t_start, steps) == want


def test_one_step_is_refused():
    with pytest.raises(ValueError, match="steps must be >= 2"):
        blended_timesteps(10, 1)


def _blended(steps, t_start=12):
    schedule = Schedule.cosine()
    gen = torch.Generator().manual_seed(0)
    x_blurry = torch.rand((1, 3, 8, 8), generator=gen) * 2 - 1
    noise = torch.randn(x_blurry.shape, generator=gen)
    gammas = torch.linspace(0.0, 0.6, schedule.num_timesteps)
    model = Recorder()
    out = sample_blended(model, schedule, x_blurry, 1, t_start, gammas, noise, steps=steps)
    return out, [t for _, t in model.calls]


def test_all_steps_is_the_paper_loop_bit_for_bit():
    full, ts = _blended(None)
    same, ts2 = _blended(12)
    assert ts == ts2 == list(range(11, -1, -1))
    assert torch.equal(full, same)


def test_respaced_steps_visit_only_the_kept_timesteps_and_end_clean():
    out, ts = _blended(4)
    assert ts == [11, 7, 4, 0]
    full, _ = _blended(None)
    assert not torch.equal(out, full)
    assert out.abs().max() <= 1          # t = 0 clamps, as every step count does


def _generate_calls(patch_steps, start_t=None, scale0_steps=None, layout_t=None, tileable=False, out=None):
    loaded = picture_model(load_rgb(PHOTO), max_pixels=5000)
    loaded.config.model.patch_steps = patch_steps
    loaded.config.model.layout_t = layout_t
    calls, patches = [], loaded.model.patches
    fwd = patches.forward
    patches.forward = lambda x, t, s, **kw: calls.append((int(s), int(t.reshape(-1)[0]))) or fwd(x, t, s, **kw)
    outs = generate(loaded, 1, loaded.pyramid.sizes_hw, start_t or loaded.start_t, seed=0, progress=False,
                    scale0_steps=scale0_steps, tileable=tileable, all_scales=True)
    if out is not None:
        out.extend([outs[0][0], loaded.pyramid.level_tensor(0)])
    return calls, loaded.start_t


def test_a_training_free_model_takes_patch_steps_at_every_scale():
    calls, start_t = _generate_calls(3)
    per_scale = [sum(1 for s, _ in calls if s == k) for k in range(len(start_t))]
    assert per_scale == [3] * len(start_t)
    assert [t for s, t in calls if s == 1] == blended_timesteps(start_t[1], 3)


def test_null_patch_steps_take_every_step():
    calls, _ = _generate_calls(None, start_t=[6, 12])
    assert [sum(1 for s, _ in calls if s == k) for k in range(2)] == [6, 12]
    calls, _ = _generate_calls(3, start_t=[6, 12])
    assert [sum(1 for s, _ in calls if s == k) for k in range(2)] == [6, 3]


def test_a_given_scale0_step_count_wins_over_patch_steps():
    calls, start_t = _generate_calls(3, start_t=None, scale0_steps=5)
    assert sum(1 for s, _ in calls if s == 0) == 5
    calls, _ = _generate_calls(3, start_t=[4, *start_t[1:]])
    assert sum(1 for s, _ in calls if s == 0) == 4
    assert sum(1 for s, _ in calls if s == 1) == 3


@pytest.mark.parametrize("value", [0, 1, -2])
def test_config_refuses_fewer_than_two_patch_steps(value):
    with pytest.raises(UserError, match="model.patch_steps must be >= 2"):
        config_from_dict({"model": {"patch_steps": value}})


def test_config_takes_null_patch_steps():
    assert config_from_dict({"model": {"patch_steps": None}}).model.patch_steps is None


# -- a training-free model's layout: scale 0 from its picture noised to layout_t ---------------

def test_scale_0_starts_from_the_picture_noised_to_layout_t():
    got = []
    calls, _ = _generate_calls(3, layout_t=6, out=got)
    assert [t for s, t in calls if s == 0] == [5, 4, 3, 2, 1, 0]       # every step below layout_t
    sample, level0 = got
    near = (sample - level0).abs().mean()
    got = []
    _generate_calls(3, layout_t=None, out=got)
    far = (got[0] - level0).abs().mean()
    assert near < 0.15 < far                # the picture's layout survives; pure noise has none


def test_a_given_t0_is_where_the_picture_is_noised_to():
    calls, _ = _generate_calls(3, layout_t=6, start_t=[9, 12])
    assert [t for s, t in calls if s == 0] == list(range(8, -1, -1))


@pytest.mark.parametrize("kw", [dict(tileable=True), dict(scale0_steps=4)])
def test_tileable_and_respaced_scale_0_start_from_pure_noise(kw):
    calls, _ = _generate_calls(3, layout_t=6, **kw)
    assert sum(1 for s, _ in calls if s == 0) == kw.get("scale0_steps", 3)


@pytest.mark.parametrize("value", [0, 100, -1])
def test_config_refuses_a_layout_t_outside_the_schedule(value):
    with pytest.raises(UserError, match=r"model.layout_t must be in 1..99"):
        config_from_dict({"model": {"layout_t": value}})


# -- candidates -----------------------------------------------------------------------------------

def test_patch_candidates_build_the_approximate_path_and_sample():
    from sinddm.config import Config
    from sinddm.hybrid import build_denoiser
    from sinddm.pyramid import build_pyramid

    pyramid = build_pyramid(load_rgb(PHOTO), 5000)
    config = Config()
    config.model.trained_scales = 0
    assert build_denoiser(None, pyramid, config).patches.candidates == 16         # the default
    config.model.patch_candidates = None
    assert build_denoiser(None, pyramid, config).patches.candidates is None       # exact
    config.model.patch_candidates = 8
    approx = build_denoiser(None, pyramid, config)
    assert approx.patches.candidates == 8
    loaded = picture_model(load_rgb(PHOTO), max_pixels=5000)
    loaded.model = build_denoiser(None, pyramid, config_from_dict({"model": {"trained_scales": 0,
                                                                             "patch_candidates": None}}))
    exact = generate(loaded, 1, loaded.pyramid.sizes_hw, [4, 3], seed=0, progress=False)[0]
    loaded.model = approx
    near = generate(loaded, 1, loaded.pyramid.sizes_hw, [4, 3], seed=0, progress=False)[0]
    assert not torch.equal(exact, near)
    assert (exact - near).abs().mean() < 0.1          # the same picture, give or take the candidates


@pytest.mark.parametrize("value", [0, -3])
def test_config_refuses_fewer_than_one_candidate(value):
    with pytest.raises(UserError, match="model.patch_candidates must be >= 1"):
        config_from_dict({"model": {"patch_candidates": value}})


# -- the blurry context -------------------------------------------------------------------------

def test_patch_context_sets_tau_and_benchmark_overrides_win(monkeypatch):
    from sinddm import hybrid
    from sinddm.config import PATCH_CONTEXT
    from sinddm.pyramid import build_pyramid

    pyramid = build_pyramid(load_rgb(PHOTO), 5000)

    def tau(model_section, overrides=None):
        if overrides is not None:
            monkeypatch.setattr(hybrid, "PATCH_SETTINGS", overrides)
        config = config_from_dict({"model": {"trained_scales": 0, **model_section}})
        return hybrid.build_denoiser(None, pyramid, config).patches.context_sigma

    assert tau({}) == PATCH_CONTEXT == 1.0                     # the default
    assert tau({"patch_context": 2.5}) == 2.5
    assert tau({"patch_context": None}) is None               # no context
    assert tau({"patch_context": 2.5}, {"context_sigma": None}) is None


def test_patch_context_changes_the_finer_scales_only():
    """τ weighs the blurry context, which exists at the finer scales only: scale 0 is the same
    picture with or without it, the finest is not."""
    from sinddm.hybrid import build_denoiser

    loaded = picture_model(load_rgb(PHOTO), max_pixels=5000)
    outs = []
    for tau in (1.0, None):
        loaded.model = build_denoiser(None, loaded.pyramid, config_from_dict(
            {"model": {"trained_scales": 0, "patch_context": tau}}))
        outs.append(generate(loaded, 1, loaded.pyramid.sizes_hw, [20, 40], seed=0, progress=False,
                             all_scales=True))
    (with0, *_, with_fine), (without0, *_, without_fine) = outs
    assert torch.equal(with0[0], without0[0])
    assert (with_fine[0] - without_fine[0]).abs().mean() > 0.01


@pytest.mark.parametrize("value", [0, -1.0, ".nan", "inf"])
def test_config_refuses_a_patch_context_that_is_not_positive(value):
    with pytest.raises(UserError, match=r"model.patch_context"):
        config_from_dict({"model": {"patch_context": value}})
