"""Parity of the modes with the published implementation (tests/golden/modes_reference.*):
seeded whole-pyramid sampling, seeded ROI-guided generation, the harmonization soft mask and
histogram matching."""

import json

import numpy as np
import pytest
import torch

from sinddm.checkpoint import LoadedModel
from sinddm.config import Config
from sinddm.edits.image import match_histograms, roi_generate
from sinddm.edits.masks import harmonization_mask
from sinddm.image_io import load_rgb
from sinddm.pyramid import build_pyramid
from sinddm.edits.regions import Box, roi_hooks
from sinddm.samplers import default_noise_sampler, sample_blended, sample_ddpm, sample_pyramid, upsample
from sinddm.schedule import Schedule

from .conftest import GOLDEN


@pytest.fixture(scope="module")
def modes():
    return torch.load(GOLDEN / "modes_reference.pt", weights_only=True)


@pytest.fixture(scope="module")
def modes_json():
    return json.loads((GOLDEN / "modes_reference.json").read_text())


def _sizes(modes):
    return [tuple(modes[f"sample_seeded/s{i}"].shape[-2:]) for i in range(3)]


def test_seeded_sampling_matches_the_reference_stream(modes, modes_json, golden, reference_net):
    rec = modes_json["sample_seeded"]
    torch.manual_seed(rec["seed"])  # the reference draws from the global generator
    outs = sample_pyramid(reference_net, Schedule.cosine(), golden["small_120x90/gammas"], _sizes(modes),
                          rec["start_t"], rec["batch"])
    for i, out in enumerate(outs):
        torch.testing.assert_close(out, modes[f"sample_seeded/s{i}"], atol=1e-4, rtol=0, msg=f"scale {i}")


def test_seeded_sampling_with_a_generator_equals_the_global_stream(modes, modes_json, golden, reference_net):
    rec = modes_json["sample_seeded"]
    gen = torch.Generator().manual_seed(rec["seed"])
    outs = sample_pyramid(reference_net, Schedule.cosine(), golden["small_120x90/gammas"], _sizes(modes),
                          rec["start_t"], rec["batch"], generator=gen)
    torch.testing.assert_close(outs[-1], modes["sample_seeded/s2"], atol=1e-4, rtol=0)


def test_without_the_per_step_draws_finer_scales_differ(modes, modes_json, golden, reference_net):
    """The extra draws matter: skip them and scale 0 still matches, scale 2 does not."""
    rec = modes_json["sample_seeded"]
    gen = torch.Generator().manual_seed(rec["seed"])
    sizes, gammas, sch = _sizes(modes), golden["small_120x90/gammas"], Schedule.cosine()

    x = torch.randn((rec["batch"], 3, *sizes[0]), generator=gen)
    x = sample_ddpm(reference_net, sch, x, 0, default_noise_sampler(x, gen), t_start=rec["start_t"][0])
    torch.testing.assert_close(x, modes["sample_seeded/s0"], atol=1e-4, rtol=0)
    for s in (1, 2):
        xb = upsample(x, sizes[s])
        x = sample_blended(reference_net, sch, xb, s, rec["start_t"][s], gammas[s - 1],
                           torch.randn(xb.shape, generator=gen))
    assert (x - modes["sample_seeded/s2"]).abs().mean() > 0.05


def test_discarding_the_per_step_draws_equals_adding_them_at_1e_10(golden, reference_net):
    """The reference adds each step's draw times exp(0.5 * log(1e-20)) = 1e-10 to x_{t-1}; this
    library draws and discards it. The two differ by float32 rounding only."""
    sch, gammas = Schedule.cosine(), golden["small_120x90/gammas"]
    xb = upsample(golden["sample/s1/out"], (90, 120))
    q = torch.randn(xb.shape, generator=torch.Generator().manual_seed(0))
    scale = float(np.exp(0.5 * np.log(1e-20)))
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    drawn = []

    def adding_model(x, t, s):  # x_{t} += 1e-10 z_{t+1}, in place, before step t uses it
        if len(drawn) >= 2:
            x.add_(scale * drawn[-2])
        return reference_net(x, t, s)

    a = sample_blended(reference_net, sch, xb, 2, 48, gammas[1], q, step_noise=default_noise_sampler(xb, gen_a))
    b = sample_blended(adding_model, sch, xb, 2, 48, gammas[1], q,
                       step_noise=lambda t: drawn.append(torch.randn(xb.shape, generator=gen_b)))
    assert len(drawn) == 48
    diff = (a - b).abs().max().item()
    assert 0 < diff < 1e-5  # it did add something, and nothing beyond float32 rounding


# -- ROI-guided generation (method §7.3) ------------------------------------------------------

@pytest.fixture(scope="module")
def roi_case(modes_json, reference_net):
    """The record's pyramid, the golden weights as a loaded model, and its boxes."""
    rec = modes_json["roi_seeded"]
    pyramid = build_pyramid(load_rgb(GOLDEN / f"{rec['pyramid']}.png"))
    loaded = LoadedModel(model=reference_net, pyramid=pyramid, config=Config(), step=0, path=GOLDEN)
    return rec, loaded, Box(*rec["source_yxhw"]), [Box(*b) for b in rec["targets_yxhw"]]


def test_roi_guided_generation_matches_the_reference(modes, roi_case):
    """`roi_generate` with the record's seed gives the published code's pictures at every scale."""
    rec, loaded, source, targets = roi_case
    hooks = roi_hooks(loaded.pyramid, loaded.pyramid.sizes_hw, source, targets)
    torch.manual_seed(rec["seed"])  # the reference draws from the global generator
    outs = sample_pyramid(loaded.model, loaded.schedule, loaded.gammas, loaded.pyramid.sizes_hw,
                          loaded.start_t, rec["batch"], hooks=hooks, hook_before_clamp=True)
    for i, out in enumerate(outs):
        torch.testing.assert_close(out, modes[f"roi_seeded/s{i}"], atol=1e-4, rtol=0, msg=f"scale {i}")
    # the library's mode, seeded per batch (batch 0 is seeded with the seed itself)
    pictures = roi_generate(loaded, loaded.pyramid.sizes_hw, loaded.start_t, source, targets,
                            num=rec["batch"], seed=rec["seed"], batch_size=rec["batch"])
    torch.testing.assert_close(torch.stack(pictures), modes[f"roi_seeded/s{len(outs) - 1}"], atol=1e-4, rtol=0)


def _roi_without(loaded, rec, source, targets, step_draws: bool, hook_before_clamp: bool):
    """ROI-guided generation written out scale by scale, with either of its two reference
    behaviours switched off (the library has no switch for either)."""
    pyr, sch, gammas = loaded.pyramid, loaded.schedule, loaded.gammas
    hooks = roi_hooks(pyr, pyr.sizes_hw, source, targets)
    gen = torch.Generator().manual_seed(rec["seed"])
    x = torch.randn((rec["batch"], 3, *pyr.sizes_hw[0]), generator=gen)
    x = sample_ddpm(loaded.model, sch, x, 0, default_noise_sampler(x, gen), t_start=loaded.start_t[0],
                    x0_hook=hooks[0], hook_before_clamp=hook_before_clamp)
    outs = [x]
    for s in range(1, pyr.n_scales):
        xb = upsample(x, pyr.sizes_hw[s])
        x = sample_blended(loaded.model, sch, xb, s, loaded.start_t[s], gammas[s - 1],
                           torch.randn(xb.shape, generator=gen), x0_hook=hooks[s],
                           step_noise=default_noise_sampler(xb, gen) if step_draws else None)
        outs.append(x)
    return outs


def test_roi_written_out_matches_the_record(modes, roi_case):
    """The written-out loop with both behaviours on is the record (so the two tests below
    isolate one change each)."""
    rec, loaded, source, targets = roi_case
    outs = _roi_without(loaded, rec, source, targets, step_draws=True, hook_before_clamp=True)
    torch.testing.assert_close(outs[-1], modes["roi_seeded/s2"], atol=1e-4, rtol=0)


def test_roi_without_the_per_step_draws_misses_the_record(modes, roi_case):
    rec, loaded, source, targets = roi_case
    outs = _roi_without(loaded, rec, source, targets, step_draws=False, hook_before_clamp=True)
    torch.testing.assert_close(outs[0], modes["roi_seeded/s0"], atol=1e-4, rtol=0)  # scale 0 draws alike
    assert (outs[-1] - modes["roi_seeded/s2"]).abs().mean() > 0.05


def test_roi_clamping_before_the_blend_misses_the_record(modes, roi_case):
    rec, loaded, source, targets = roi_case
    outs = _roi_without(loaded, rec, source, targets, step_draws=True, hook_before_clamp=False)
    assert (outs[0] - modes["roi_seeded/s0"]).abs().max() > 1e-2  # scale 0 already differs


@pytest.mark.parametrize("case", ["hard_200x150_to_120x90", "soft_300x200_to_97x83"])
def test_harmonization_mask_matches_the_reference(case, modes):
    picture = modes[f"harmonize_mask/{case}/picture"].numpy()
    expected = modes[f"harmonize_mask/{case}/mask"]
    soft = harmonization_mask(picture, tuple(expected.shape[-2:]))
    assert soft.shape == expected.shape and soft.dtype == torch.float32
    torch.testing.assert_close(soft, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["content_120x90", "content_150x70"])
def test_histogram_matching_matches_the_reference_exactly(case, modes):
    reference = np.asarray(load_rgb(GOLDEN / "small_120x90.png"))
    matched = match_histograms(modes[f"histogram/{case}/content"].numpy(), reference)
    np.testing.assert_array_equal(matched, modes[f"histogram/{case}/matched"].numpy())
