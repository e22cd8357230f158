"""CLIP views (sinddm.edits.clip_views): crop geometry, rotation in pixels, the modes' sizes, bf16."""

import pytest
import torch

from sinddm.edits import clip as C
from sinddm.edits import clip_views as V
from sinddm.edits import guidance as G

from .conftest import GOLDEN

TINY_CLIP = GOLDEN.parent / "data" / "tiny-clip.json"


def coordinates(h: int, w: int) -> torch.Tensor:
    """[1, 3, h, w]: channel 0 is the column's centre x / w, channel 1 the row's y / h (both in (0, 1))."""
    x = ((torch.arange(w) + 0.5) / w).view(1, w).expand(h, w)
    y = ((torch.arange(h) + 0.5) / h).view(h, 1).expand(h, w)
    return torch.stack([x, y, torch.zeros(h, w)]).unsqueeze(0)


def plain(**kw) -> V.ViewAugmenter:
    """Crops only: no flip, affine, perspective, jitter or grayscale."""
    return V.ViewAugmenter(**{"flip_p": 0, "affine_p": 0, "perspective_p": 0, "jitter_p": 0, "gray_p": 0, **kw})


@pytest.mark.parametrize("mode", V.VIEW_MODES)
def test_crops_take_one_scale_for_both_sides(mode):
    """Each crop spans the same fraction s ∈ [0.6, 1] of the width and of the height (the picture's
    aspect kept), at view 0's size; view 0 is the whole picture."""
    img = coordinates(90, 160)
    aug = plain(size=(32, 32), mode=mode)
    views = aug(img, torch.Generator().manual_seed(3))
    vh, vw = aug.view_size(90, 160)
    assert views.shape == (V.N_VIEWS, 3, vh, vw)
    # the first and last pixel centres of a crop of fraction s lie s·(1 − 1/n) apart (n: its pixels)
    span_x = (views[:, 0, :, -1] - views[:, 0, :, 0]).mean(1) / (1 - 1 / vw)
    span_y = (views[:, 1, -1, :] - views[:, 1, 0, :]).mean(1) / (1 - 1 / vh)
    torch.testing.assert_close(span_x, span_y, rtol=0, atol=0.02)
    assert span_x[0] == pytest.approx(1, abs=0.02) and span_x[1:].min() >= 0.58
    assert span_x[1:].std() > 0.05                               # the scales are drawn, not fixed


def test_rotation_is_a_rotation_in_pixels_on_non_square_views():
    """On a 2:1 view the affine map still turns pixels by an angle (a similarity in pixel units),
    not a rotation of normalised coordinates, which shears such a view."""
    h, w = 100, 200
    img = coordinates(h, w)
    aug = plain(size=(32, 32), affine_p=1.0, translate=0.0, degrees=15.0)
    views = aug(img, torch.Generator().manual_seed(0))
    vh, vw = views.shape[-2:]
    assert vw > 1.5 * vh
    for v in views[1:]:
        cy, cx = vh // 2, vw // 2
        # source pixels per view pixel along the view's x and y (finite differences at the centre)
        dx = torch.stack([(v[0, cy, cx + 1] - v[0, cy, cx]) * w, (v[1, cy, cx + 1] - v[1, cy, cx]) * h])
        dy = torch.stack([(v[0, cy + 1, cx] - v[0, cy, cx]) * w, (v[1, cy + 1, cx] - v[1, cy, cx]) * h])
        assert dx.norm() == pytest.approx(dy.norm().item(), rel=0.02)    # same scale both ways
        assert abs(torch.dot(dx, dy)) < 0.02 * dx.norm() * dy.norm()      # still at right angles


def test_view_size_keeps_a_token_row_on_extreme_panoramas():
    aug = V.ViewAugmenter(min_side=32)
    assert aug.view_size(50, 1000) == (32, 320)        # Resize(224, max_size=320) alone gives 16 rows
    assert V.ViewAugmenter().view_size(50, 1000) == (16, 320)


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_ckpt):
    return tiny_clip_ckpt


@pytest.mark.parametrize("views", V.VIEW_MODES)
def test_bf16_follows_fp32(tiny_clip, views):
    """bf16 CLIP weights (precision 'fast') and bf16 autocast give the fp32 score and gradient
    within bf16's precision, in every view mode."""
    spec = C.ClipSpec(str(TINY_CLIP), "none", str(tiny_clip))
    x = torch.rand(2, 3, 40, 70, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ref = G.TextGuide(C.load_clip(spec, "cpu"), "fire", views=views, deterministic=True).score_grad(x)
    for guide in (G.TextGuide(C.load_clip(spec, "cpu", dtype=torch.bfloat16), "fire", views=views,
                              deterministic=True),
                  G.TextGuide(C.load_clip(spec, "cpu"), "fire", views=views, deterministic=True,
                              autocast_dtype=torch.bfloat16)):
        score, grad = guide.score_grad(x)
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(score, ref[0], rtol=0, atol=0.03)
        assert ((grad - ref[1]).norm() / ref[1].norm()) < 0.15
