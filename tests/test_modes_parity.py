"""Parity of the modes with the published implementation (tests/golden/modes_reference.*):
seeded whole-pyramid sampling, the harmonization soft mask and histogram matching."""

import json

import numpy as np
import pytest
import torch

from sinddm.editing import harmonization_mask, match_histograms
from sinddm.image_io import load_rgb
from sinddm.samplers import default_noise_sampler, sample_blended, sample_pyramid, upsample
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
    from sinddm.samplers import sample_ddpm

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
