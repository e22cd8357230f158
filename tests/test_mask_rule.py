"""Mask pictures are read by one rule (grey >= 128, then an area-weighted resize kept at >= 50 %),
whether harmonize or text-roi reads them."""

import numpy as np
import pytest
import torch
from PIL import Image

from sinddm.masks import binarize_mask, resize_mask
from sinddm.image_io import load_rgb
from sinddm.cli.edit_text import _mask_region
from sinddm.errors import UserError


def picture(h, w, seed=0) -> np.ndarray:
    """Blobs of random grey levels (0..255), so that many pixels sit near the threshold and the edges."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


@pytest.mark.parametrize("size_hw", [(40, 60), (63, 97), (80, 120)])
def test_text_roi_reads_its_mask_as_harmonize_does(tmp_path, size_hw):
    grey = picture(80, 120)
    path = tmp_path / "mask.png"
    Image.fromarray(grey).save(path)
    box, region = _mask_region(path, size_hw)
    want = resize_mask(binarize_mask(Image.fromarray(grey)), size_hw)     # harmonize's reading
    assert torch.equal(region[0, 0].bool(), want)
    assert np.array_equal(binarize_mask(grey, size_hw), want.numpy())
    ys, xs = np.nonzero(want.numpy())
    assert box == (ys.min(), xs.min(), ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)


def test_the_rule_at_half_grey_and_under_resizing():
    grey = np.array([[127, 128, 255, 0]], dtype=np.uint8)
    assert binarize_mask(grey).tolist() == [[False, True, True, False]]
    # area-weighted (antialiased): a white 2×2 block stays, one white pixel of it does not (NEAREST kept it)
    block = np.zeros((4, 4), np.uint8)
    block[:2, :2] = 255
    assert binarize_mask(block, (2, 2)).tolist() == [[True, False], [False, False]]
    block[:2, :2] = 0
    block[1, 1] = 255
    assert not binarize_mask(block, (2, 2)).any()
    assert np.asarray(Image.fromarray(block).resize((2, 2), Image.NEAREST))[0, 0] == 255


def test_a_region_that_vanishes_at_the_finest_scale_is_one_line(tmp_path):
    grey = np.zeros((100, 100), np.uint8)
    grey[50, 50] = 255
    path = tmp_path / "dot.png"
    Image.fromarray(grey).save(path)
    with pytest.raises(UserError) as e:
        _mask_region(path, (20, 20))
    assert "vanishes" in str(e.value) and "\n" not in str(e.value)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(path)
    with pytest.raises(UserError, match="no white pixels"):
        _mask_region(path, (20, 20))


def test_a_16_bit_mask_is_scaled_not_clipped(tmp_path):
    """46 % grey in a 16-bit PNG is out, 61 % in, whether text-roi opens it or harmonize's load_rgb
    (which scales 16-bit pictures to 8 bits) does."""
    grey = np.zeros((8, 8), np.uint16)
    grey[:, 2:4] = 30000
    grey[:, 4:6] = 40000
    path = tmp_path / "mask16.png"
    Image.fromarray(grey).save(path)
    _, region = _mask_region(path, (8, 8))
    assert region[0, 0].bool().any(0).tolist() == [False] * 4 + [True] * 2 + [False] * 2
    assert torch.equal(region[0, 0].bool(), torch.from_numpy(binarize_mask(load_rgb(path), (8, 8))))
