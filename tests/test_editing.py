"""Image-guided editing (method §7): harmonize, style-transfer, roi-copy.

Units on tensors (masks, histogram matching, boxes, the ROI hook), then the modes end to
end through `sinddm edit` and `sinddm run` on one tiny model trained a few steps. Nothing
here judges picture quality: the model is barely trained, so the assertions are about
shapes, exact preservation, determinism and what the hook writes into x̂0.
"""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from sinddm.checkpoint import load_model
from sinddm.cli import main
from sinddm.edits.image import harmonize, match_histograms, prepare_content, resize_like_training
from sinddm.edits.masks import (MASK_BLUR_SIGMA, MASK_DILATE_RADIUS, dilate, gaussian_blur, harmonization_mask,
                          mask_channel)
from sinddm.edits.regions import Box, box_outside, parse_box, roi_copy_hook, roi_hooks, scale_box
from sinddm.image_io import load_rgb, to_tensor
from sinddm.pyramid import sample_sizes
from sinddm.samplers import sample_pyramid

from .conftest import CONFIGS, GOLDEN

SMALL = GOLDEN / "small_120x90.png"      # 115x86 at the finest scale under the smoke config's pixel cap
OTHER = GOLDEN / "land_248x186.png"
FAST_T = ["--start-t", "2", "1", "1"]    # T[0..2] of the 3-scale model: 4 network calls per batch
COMMON = ["--device", "cpu", "--quiet"]
REACH = 7 + 20                            # dilation radius + blur half-width (int(4σ + 0.5)): how far the soft mask reaches


def cli(*args) -> int:
    return main([str(a) for a in args])


def binarize_mask(picture: Image.Image | np.ndarray) -> np.ndarray:
    """Any mask picture → bool H×W: a pixel is in when its grey level is at least 50 % (128)."""
    if isinstance(picture, Image.Image):
        grey = np.asarray(picture.convert("L"), dtype=np.uint8)
    else:
        a = np.asarray(picture)
        grey = a if a.ndim == 2 else np.asarray(Image.fromarray(a.astype(np.uint8)).convert("L"))
    return grey >= 128


def read_png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def save_png(a: np.ndarray, path) -> None:
    Image.fromarray(a).save(path)


# ---------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The smoke config (3 scales, width 16), 4 steps, no end-of-training grid."""
    root = tmp_path_factory.mktemp("edit_run")
    cfg = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    cfg["train"]["grid_samples"] = 0
    (root / "smoke.yaml").write_text(yaml.safe_dump(cfg))
    out = root / "run"
    assert cli("train", SMALL, "--config", root / "smoke.yaml", "--out", out, "--steps", 4, "--seed", 0, *COMMON) == 0
    return out


@pytest.fixture(scope="module")
def loaded(run):
    return load_model(run)


@pytest.fixture(scope="module")
def pictures(loaded, tmp_path_factory):
    """A composite at the finest training size (a patch of another picture pasted in) and its mask."""
    root = tmp_path_factory.mktemp("edit_inputs")
    finest = loaded.pyramid.levels[-1]
    h, w = finest.shape[:2]
    other = np.asarray(load_rgb(OTHER).resize((w, h)))
    composite = finest.copy()
    composite[30:50, 40:70] = other[10:30, 10:40]
    mask = np.zeros((h, w), np.uint8)
    mask[30:50, 40:70] = 255
    paths = {"composite": root / "composite.png", "mask": root / "mask.png", "empty": root / "empty.png",
             "small_mask": root / "small_mask.png", "content": OTHER}
    save_png(composite, paths["composite"])
    save_png(mask, paths["mask"])
    save_png(np.zeros((h, w), np.uint8), paths["empty"])  # all black: empty (any non-zero pixel counts)
    save_png(mask[:-1], paths["small_mask"])
    return paths


# ---------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------

def test_binarize_mask_at_half_grey():
    grey = np.array([[0, 127, 128, 255]], np.uint8)
    np.testing.assert_array_equal(binarize_mask(Image.fromarray(grey)), [[False, False, True, True]])
    rgb = np.array([[[255, 255, 255], [255, 0, 0], [0, 0, 0]]], np.uint8)  # red's luma is 76: out
    np.testing.assert_array_equal(binarize_mask(rgb), [[True, False, False]])


def test_harmonization_mask_is_dilated_blurred_and_rescaled():
    h, w = 80, 100
    mask = np.zeros((h, w), bool)
    mask[30:40, 40:55] = True
    soft = harmonization_mask(mask, (h, w))
    assert soft.shape == (1, 1, h, w) and soft.dtype == torch.float32
    assert float(soft.min()) == 0.0 and float(soft.max()) == 1.0
    s = soft[0, 0].numpy()
    yy, xx = np.mgrid[:h, :w]
    dy = np.maximum(0, np.maximum(30 - yy, yy - 39))
    dx = np.maximum(0, np.maximum(40 - xx, xx - 54))
    dist = np.hypot(dy, dx)
    # exactly zero beyond the dilation + blur reach (the separable blur reaches 15 px along rows and columns)
    assert (s[np.maximum(dy, dx) > REACH] == 0).all()
    assert (s[np.maximum(dy, dx) <= 7 + 10] > 0).all()
    assert (s[mask] > 0.85).all()                      # the object itself is (nearly) fully inside
    assert (s[(dist > 0) & (dist <= 7)] > 0.3).all()  # the dilated ring counts too
    assert s[35, 47] == pytest.approx(1.0, abs=1e-6)


def test_harmonization_mask_rescales_from_its_minimum_when_it_reaches_everywhere():
    """A mask whose dilation and blur reach every pixel of the composite: the blurred mask is > 0
    even at the far border, and min–max rescaling (not a division by the maximum) brings it to
    exactly 0 there and exactly 1 at its top, so the far border keeps the composite."""
    h, w = 20, 24
    mask = np.zeros((h, w), bool)
    mask[8:12, 10:14] = True
    m = torch.from_numpy(mask_channel(mask, (h, w)) > 0).float()[None, None]
    blurred = gaussian_blur(dilate(m, MASK_DILATE_RADIUS), MASK_BLUR_SIGMA)
    lo, hi = float(blurred.min()), float(blurred.max())
    assert 0.05 < lo / hi < 0.5                         # it reaches everywhere, unevenly: ~0.1 at the border
    soft = harmonization_mask(mask, (h, w))
    assert float(soft.min()) == 0.0 and float(soft.max()) == 1.0
    assert float(soft[0, 0, [0, 0, -1, -1], [0, -1, 0, -1]].max()) < 1e-6   # the far corners: the composite
    torch.testing.assert_close(soft, ((blurred - lo) / (hi - lo)).float(), rtol=0, atol=1e-7)


def test_harmonization_mask_follows_the_composite_size():
    mask = np.zeros((90, 120), bool)
    mask[40:60, 50:80] = True
    soft = harmonization_mask(mask, (86, 115))
    assert soft.shape == (1, 1, 86, 115)
    assert float(soft[0, 0, 48, 62]) > 0.9 and float(soft[0, 0, 0, 0]) == 0.0
    with pytest.raises(ValueError):
        harmonization_mask(np.zeros((90, 120), bool), (86, 115))


def test_resize_like_training_gives_the_finest_size(loaded):
    picture = load_rgb(SMALL)  # the training image at its original 120x90
    a = resize_like_training(picture, loaded.config.image.max_pixels)
    np.testing.assert_array_equal(a, loaded.pyramid.levels[-1])  # the same LANCZOS resize as level N-1
    small = Image.fromarray(loaded.pyramid.levels[-1])
    np.testing.assert_array_equal(resize_like_training(small, 10_000), loaded.pyramid.levels[-1])


# ---------------------------------------------------------------------------------------
# histogram matching
# ---------------------------------------------------------------------------------------

def test_histogram_matching_to_itself_is_the_identity(loaded):
    img = loaded.pyramid.levels[-1]
    np.testing.assert_array_equal(match_histograms(img, img), img)
    other = np.asarray(load_rgb(OTHER))
    np.testing.assert_array_equal(match_histograms(other, other), other)


def test_histogram_matching_moves_channel_statistics_to_the_reference(loaded):
    ref = loaded.pyramid.levels[-1].astype(np.float64)
    content = np.asarray(load_rgb(OTHER))
    # make the content clearly off: darker and with the channels swapped
    content = (content[..., ::-1] * 0.5).astype(np.uint8)
    matched = match_histograms(content, loaded.pyramid.levels[-1]).astype(np.float64)
    assert matched.shape == content.shape
    for c in range(3):
        before = abs(content[..., c].mean() - ref[..., c].mean()), abs(content[..., c].std() - ref[..., c].std())
        after = abs(matched[..., c].mean() - ref[..., c].mean()), abs(matched[..., c].std() - ref[..., c].std())
        assert after[0] < 3 and after[1] < 3, (c, before, after)
        assert after[0] < before[0] / 4 or before[0] < 3, (c, before, after)
        # quantiles line up with the reference's
        qs = [0.1, 0.25, 0.5, 0.75, 0.9]
        np.testing.assert_allclose(np.quantile(matched[..., c], qs), np.quantile(ref[..., c], qs), atol=6)


def test_histogram_matching_maps_a_flat_channel_to_the_reference_maximum(loaded):
    """As the reference does: a flat channel's one value sits at cumulative quantile 1, so it maps
    to the reference channel's largest value (this library used to map it to the median)."""
    ref = loaded.pyramid.levels[-1]
    flat = np.full((20, 30, 3), 7, np.uint8)
    matched = match_histograms(flat, ref)
    for c in range(3):
        assert np.unique(matched[..., c]).size == 1
        assert int(matched[0, 0, c]) == int(ref[..., c].max())


def test_prepare_content_resizes_then_matches(loaded):
    picture = load_rgb(GOLDEN / "portrait_186x248.png")
    prepared = prepare_content(picture, loaded.pyramid, 10_000)
    assert prepared.shape == (115, 86, 3)  # the content keeps its own (portrait) aspect under the pixel cap
    ref = loaded.pyramid.levels[-1]
    for c in range(3):
        assert abs(prepared[..., c].mean() - ref[..., c].mean()) < 3
    # exactly: resized like the training image, then matched to the finest level (not the coarsest,
    # and not matched first and resized after)
    resized = resize_like_training(picture, 10_000)
    np.testing.assert_array_equal(prepared, match_histograms(resized, ref))
    assert not np.array_equal(prepared, match_histograms(resized, loaded.pyramid.levels[0]))
    matched_first = match_histograms(np.asarray(picture), ref)
    assert not np.array_equal(prepared, resize_like_training(Image.fromarray(matched_first), 10_000))


# ---------------------------------------------------------------------------------------
# boxes and the ROI hook
# ---------------------------------------------------------------------------------------

def test_parse_box():
    assert parse_box("10,20,30,40") == Box(10, 20, 30, 40)
    assert parse_box(" 0 , 1,2 ,3 ") == Box(0, 1, 2, 3)
    for bad in ["1,2,3", "a,b,c,d", "1,2,3,4,5", "-1,0,4,4", "0,0,0,4", "1.5,2,3,4", ""]:
        with pytest.raises(ValueError):
            parse_box(bad)


def test_scale_box_truncates_and_stays_inside():
    assert scale_box(Box(10, 21, 30, 17), 2.0, (50, 50)) == Box(5, 10, 15, 8)
    assert scale_box(Box(0, 0, 1, 1), 3.0, (50, 50)) == Box(0, 0, 1, 1)          # never empty
    assert scale_box(Box(85, 100, 1, 15), 1.41, (60, 81)) == Box(59, 70, 1, 10)  # shifted back inside
    assert box_outside(Box(80, 0, 7, 5), (86, 115)) and not box_outside(Box(79, 0, 7, 5), (86, 115))


def test_roi_hook_blends_the_source_into_each_target():
    torch.manual_seed(0)
    x0 = torch.rand(2, 3, 20, 30) * 2 - 1
    before = x0.clone()
    patch = torch.rand(3, 5, 6) * 2 - 1
    targets = [Box(2, 3, 5, 6), Box(10, 20, 5, 6)]
    out = roi_copy_hook(patch, targets)(x0, 7)
    assert torch.equal(x0, before)  # not in place
    expected = before.clone()
    for b in targets:
        ys, xs = b.slices()
        torch.testing.assert_close(out[:, :, ys, xs], 0.8 * patch + 0.2 * before[:, :, ys, xs])
        expected[:, :, ys, xs] = out[:, :, ys, xs]
    assert torch.equal(out, expected)  # nothing else moved


def test_roi_hook_resizes_the_source_to_a_target_of_another_size():
    x0 = torch.zeros(1, 3, 20, 20)
    patch = torch.full((3, 4, 4), 0.5)
    out = roi_copy_hook(patch, [Box(1, 1, 9, 7)])(x0, 0)
    torch.testing.assert_close(out[:, :, 1:10, 1:8], torch.full((1, 3, 9, 7), 0.4))
    assert out[:, :, 10:].abs().sum() == 0 and out[:, :, :, 8:].abs().sum() == 0


def test_roi_hooks_copy_each_level_source_patch(loaded):
    pyr = loaded.pyramid
    n, r = pyr.n_scales, pyr.scale_factor
    source, target = Box(10, 12, 30, 28), Box(50, 80, 30, 28)
    hooks = roi_hooks(pyr, pyr.sizes_hw, source, [target])
    assert len(hooks) == n and hooks[-1] is None and all(h is not None for h in hooks[:-1])
    for s in range(n - 1):
        f = r ** (n - 1 - s)
        src, tgt = scale_box(source, f, pyr.sizes_hw[s]), scale_box(target, f, pyr.sizes_hw[s])
        assert (src.h, src.w) == (tgt.h, tgt.w) == (int(30 / f), int(28 / f))
        out = hooks[s](torch.zeros(1, 3, *pyr.sizes_hw[s]), 0)
        patch = pyr.level_tensor(s)[:, src.slices()[0], src.slices()[1]]
        torch.testing.assert_close(out[0, :, tgt.slices()[0], tgt.slices()[1]], 0.8 * patch)
        assert out.abs().sum() == pytest.approx((0.8 * patch).abs().sum().item(), rel=1e-5)


def test_hooked_sampler_without_hooks_is_sample_pyramid(loaded):
    args = (loaded.model, loaded.schedule, loaded.gammas, loaded.pyramid.sizes_hw, [2, 1, 1])
    a = sample_pyramid(*args, 2, generator=torch.Generator().manual_seed(3))
    b = sample_pyramid(*args, 2, generator=torch.Generator().manual_seed(3), hooks=[None] * 3, hook_before_clamp=True)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def _mean_abs(a, b) -> float:
    return float((a - b).abs().mean())


def test_roi_guided_x0_carries_the_source_into_the_targets(loaded):
    """Through the whole pyramid: the last x̂0 of every hooked scale has the source in its targets."""
    pyr = loaded.pyramid
    n, r = pyr.n_scales, pyr.scale_factor
    source, targets = Box(10, 10, 30, 30), [Box(50, 70, 30, 30), Box(5, 75, 30, 30)]
    last = {}

    def recording(s, hook):
        def wrapped(x0, t):
            out = hook(x0, t)
            last[s] = out
            return out
        return wrapped

    hooks = [recording(s, h) if h else None for s, h in enumerate(roi_hooks(pyr, pyr.sizes_hw, source, targets))]
    outs = sample_pyramid(loaded.model, loaded.schedule, loaded.gammas, pyr.sizes_hw, [3, 2, 2], 2,
                          generator=torch.Generator().manual_seed(0), hooks=hooks, hook_before_clamp=True)
    assert sorted(last) == list(range(n - 1))
    for s in range(n - 1):
        f = r ** (n - 1 - s)
        src = scale_box(source, f, pyr.sizes_hw[s])
        patch = pyr.level_tensor(s)[:, src.slices()[0], src.slices()[1]]
        elsewhere = scale_box(Box(50, 5, 30, 30), f, pyr.sizes_hw[s])  # a box no target touches
        for x in (last[s], outs[s]):  # the hooked x̂0 at t = 0 and the scale's output
            for b in targets:
                tgt = scale_box(b, f, pyr.sizes_hw[s])
                d_target = _mean_abs(x[:, :, tgt.slices()[0], tgt.slices()[1]], patch)
                d_else = _mean_abs(x[:, :, elsewhere.slices()[0], elsewhere.slices()[1]], patch)
                assert d_target < 0.5 * d_else, (s, b, d_target, d_else)


# ---------------------------------------------------------------------------------------
# the modes end to end
# ---------------------------------------------------------------------------------------

def test_harmonize_keeps_the_composite_outside_the_mask(run, pictures, tmp_path):
    out = tmp_path / "harm"
    assert cli("edit", run, "harmonize", "--composite", pictures["composite"], "--mask", pictures["mask"],
               "--out", out, "--num", 3, "--batch-size", 2, *COMMON) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png"] + [f"harmonize_{i:03d}.png" for i in range(3)]
    composite = read_png(pictures["composite"])
    mask = binarize_mask(read_png(pictures["mask"]))
    soft = harmonization_mask(mask, composite.shape[:2])[0, 0].numpy()
    outside = soft == 0
    assert outside.mean() > 0.3
    results = [read_png(out / f"harmonize_{i:03d}.png") for i in range(3)]
    for res in results:
        assert res.shape == composite.shape
        np.testing.assert_array_equal(res[outside], composite[outside])  # exactly, as saved uint8
        assert (res[mask] != composite[mask]).any()                      # and the pasted region moved
    assert not np.array_equal(results[0], results[1])                    # two noise draws, two results

    again = tmp_path / "harm_again"
    assert cli("edit", run, "harmonize", "--composite", pictures["composite"], "--mask", pictures["mask"],
               "--out", again, "--num", 2, "--batch-size", 2, *COMMON) == 0
    for i in range(2):  # same seed and batch size: the same files
        assert (out / f"harmonize_{i:03d}.png").read_bytes() == (again / f"harmonize_{i:03d}.png").read_bytes()


def test_harmonize_library_both_samplers(loaded, pictures):
    composite = to_tensor(read_png(pictures["composite"]))
    soft = harmonization_mask(binarize_mask(read_png(pictures["mask"])), composite.shape[-2:])
    outside = (soft[0, 0] == 0).expand(3, -1, -1)
    ddim = harmonize(loaded, composite, soft, num=3, seed=4, batch_size=2)
    ddpm = harmonize(loaded, composite, soft, num=2, seed=4, batch_size=2, ancestral=True)
    for x in ddim + ddpm:
        assert x.shape == composite.shape
        assert torch.equal(x[outside], composite[outside])
    assert not torch.equal(ddim[0], ddpm[0])  # same start noise, different steps
    first_two = harmonize(loaded, composite, soft, num=2, seed=4, batch_size=2)
    for a, b in zip(first_two, ddim):         # more images keep the first ones
        assert torch.equal(a, b)


def test_harmonize_resizes_a_full_size_composite_like_the_training_image(run, loaded, tmp_path):
    full = np.asarray(load_rgb(SMALL)).copy()  # 120x90: the training image's original size
    full[20:40, 30:60] = 255
    mask = np.zeros(full.shape[:2], np.uint8)
    mask[20:40, 30:60] = 255
    save_png(full, tmp_path / "c.png")
    save_png(mask, tmp_path / "m.png")
    assert cli("edit", run, "harmonize", "--composite", tmp_path / "c.png", "--mask", tmp_path / "m.png",
               "--out", tmp_path / "o", "--num", 1, "--noise-level", 2, *COMMON) == 0
    res = read_png(tmp_path / "o" / "harmonize_000.png")
    assert res.shape == (86, 115, 3) == loaded.pyramid.levels[-1].shape
    expected = resize_like_training(Image.fromarray(full), 10_000)
    outside = harmonization_mask(binarize_mask(mask), (86, 115))[0, 0].numpy() == 0
    np.testing.assert_array_equal(res[outside], expected[outside])


def test_style_transfer_outputs_at_the_content_working_size(run, tmp_path):
    out = tmp_path / "style"
    portrait = GOLDEN / "portrait_186x248.png"
    assert cli("edit", run, "style-transfer", "--content", portrait, "--out", out, "--num", 2, *COMMON) == 0
    a = [read_png(out / f"style_transfer_{i:03d}.png") for i in range(2)]
    assert a[0].shape == a[1].shape == (115, 86, 3)
    assert not np.array_equal(a[0], a[1])
    assert cli("edit", run, "style-transfer", "--content", portrait, "--out", tmp_path / "s2", "--num", 1,
               "--seed", 0, "--noise-level", 3, *COMMON) == 0
    assert cli("edit", run, "style-transfer", "--content", portrait, "--out", tmp_path / "s3", "--num", 1,
               "--seed", 0, "--noise-level", 3, *COMMON) == 0
    assert (tmp_path / "s2" / "style_transfer_000.png").read_bytes() == \
        (tmp_path / "s3" / "style_transfer_000.png").read_bytes()


def test_roi_copy_end_to_end(run, loaded, tmp_path):
    out = tmp_path / "roi"
    source, target = Box(10, 10, 30, 30), Box(40, 150, 30, 30)
    assert cli("edit", run, "roi-copy", "--source", source, "--target", target, "--target", "5,75,30,30",
               "--scale-hw", 1, 2, "--out", out, "--num", 2, *FAST_T, *COMMON) == 0
    finest = to_tensor(loaded.pyramid.levels[-1])
    patch = finest[:, source.slices()[0], source.slices()[1]]
    for i in range(2):
        img = to_tensor(read_png(out / f"roi_copy_{i:03d}.png"))
        assert img.shape == (3, 86, 230)
        for b in (target, Box(5, 75, 30, 30)):
            d_target = _mean_abs(img[:, b.slices()[0], b.slices()[1]], patch)
            d_else = _mean_abs(img[:, 50:80, 0:30], patch)
            assert d_target < 0.75 * d_else, (i, b, d_target, d_else)


@pytest.mark.parametrize("k", [1, 2])
def test_start_level_sets_the_output_sizes(run, loaded, tmp_path, k):
    pyr = loaded.pyramid
    expected = sample_sizes(pyr.sizes_hw, pyr.scale_factor, start_level=k)
    assert expected[0] == pyr.sizes_hw[k]  # the coarsest noise at level k's size ...
    r = pyr.scale_factor                    # ... and beyond the finest by r
    h, w = pyr.sizes_hw[-1]
    assert expected[-1] == (round(h * r ** k), round(w * r ** k))
    assert cli("sample", run, "--start-level", k, "--num", 1, "--out", tmp_path / "o", *FAST_T, *COMMON) == 0
    assert read_png(tmp_path / "o" / "sample_000.png").shape == (*expected[-1], 3)


# ---------------------------------------------------------------------------------------
# bad input: exit code 2, one `error:` line, no output folder
# ---------------------------------------------------------------------------------------

BAD = {
    "mask_size_mismatch": ("harmonize", ["--composite", "{composite}", "--mask", "{small_mask}"], "--mask"),
    "empty_mask": ("harmonize", ["--composite", "{composite}", "--mask", "{empty}"], "--mask"),
    "missing_composite": ("harmonize", ["--composite", "{missing}", "--mask", "{mask}"], "--composite"),
    "missing_mask": ("harmonize", ["--composite", "{composite}", "--mask", "{missing}"], "--mask"),
    "unreadable_mask": ("harmonize", ["--composite", "{composite}", "--mask", "{garbage}"], "--mask"),
    "missing_content": ("style-transfer", ["--content", "{missing}"], "--content"),
    "tiny_content": ("style-transfer", ["--content", "{tiny}"], "at least 42 px"),
    "tiny_composite": ("harmonize", ["--composite", "{tiny}", "--mask", "{tiny}"], "--composite"),
    "noise_level_out_of_range": ("style-transfer", ["--content", "{content}", "--noise-level", "100"],
                                 "--noise-level"),
    "source_out_of_bounds": ("roi-copy", ["--source", "70,10,30,30", "--target", "0,0,30,30"], "--source"),
    "target_out_of_bounds": ("roi-copy", ["--source", "0,0,30,30", "--target", "0,100,30,30"], "--target"),
    "malformed_box": ("roi-copy", ["--source", "0,0,30", "--target", "0,0,30,30"], "--source"),
    "negative_box": ("roi-copy", ["--source", "0,0,30,30", "--target", "-1,0,30,30"], "--target"),
    "negative_source": ("roi-copy", ["--source", "-1,10,30,30", "--target", "0,0,30,30"], "y and x must be >= 0"),
    "bad_start_t": ("roi-copy", ["--source", "0,0,30,30", "--target", "0,0,30,30", "--start-t", "5"], "--start-t"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_one_line(case, run, pictures, tmp_path, capsys):
    mode, opts, names = BAD[case]
    (tmp_path / "garbage.png").write_bytes(b"not a picture at all")
    Image.new("RGB", (5, 5), "white").save(tmp_path / "tiny.png")
    paths = {k: str(v) for k, v in pictures.items()} | {"missing": str(tmp_path / "nope.png"),
                                                          "garbage": str(tmp_path / "garbage.png"),
                                                          "tiny": str(tmp_path / "tiny.png")}
    out = tmp_path / "out"
    capsys.readouterr()
    rc = cli("edit", run, mode, *[o.format(**paths) for o in opts], "--out", out, *COMMON)
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert names in lines[0]
    assert not out.exists()


# ---------------------------------------------------------------------------------------
# sinddm run
# ---------------------------------------------------------------------------------------

def test_run_jobs_file_with_every_edit_mode(run, pictures, tmp_path):
    jobs = [
        {"edit": {"model": str(run), "mode": "harmonize", "composite": str(pictures["composite"]),
                  "mask": str(pictures["mask"]), "num": 1, "out": str(tmp_path / "h"), **_yaml_common()}},
        {"edit": {"model": str(run), "mode": "style-transfer", "content": str(pictures["content"]),
                  "noise_level": 3, "num": 2, "out": str(tmp_path / "s"), **_yaml_common()}},
        {"edit": {"model": str(run), "mode": "roi-copy", "source": "10,10,30,30",
                  "target": ["50,70,30,30", "5,75,30,30"], "start_t": [2, 1, 1], "num": 1,
                  "size": "90x120", "out": str(tmp_path / "r"), **_yaml_common()}},
    ]
    (tmp_path / "jobs.yaml").write_text(yaml.safe_dump(jobs))
    assert cli("run", tmp_path / "jobs.yaml") == 0
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == ["grid.png", "harmonize_000.png"]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["grid.png", "style_transfer_000.png",
                                                                   "style_transfer_001.png"]
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["grid.png", "roi_copy_000.png"]
    assert read_png(tmp_path / "r" / "roi_copy_000.png").shape == (90, 120, 3)


def _yaml_common() -> dict:
    return {"device": "cpu", "quiet": True}


def test_image_edit_modes_start_where_design_says():
    """method §7: harmonization denoises from t = 5, style transfer from t = 15, unless --noise-level
    says otherwise; the CLI's defaults, the API's and the library's are the same numbers."""
    import inspect

    from sinddm import SinDDM, checks

    from sinddm.edits import image as editing
    from sinddm.cli import build_parser

    parser = build_parser()
    h = parser.parse_args(["edit", "m.safetensors", "harmonize", "--composite", "c.png", "--mask", "m.png"])
    s = parser.parse_args(["edit", "m.safetensors", "style-transfer", "--content", "c.png"])
    assert h.noise_level == checks.HARMONIZE_NOISE_LEVEL == 5
    assert s.noise_level == checks.STYLE_TRANSFER_NOISE_LEVEL == 15
    for fn in (editing.harmonize, SinDDM.harmonize):
        assert inspect.signature(fn).parameters["noise_level"].default == 5
    for fn in (editing.style_transfer, SinDDM.style_transfer):
        assert inspect.signature(fn).parameters["noise_level"].default == 15