"""Mask pictures are read by one rule, whichever mode reads them: text-roi's --mask as harmonize's
(editing.mask_channel on the picture load_rgb gives: LANCZOS to the working size, every pixel
whose first channel is not 0), not by a rule of its own (it kept grey > 127 after a NEAREST resize)."""

import numpy as np
import pytest
import torch
from PIL import Image

from sinddm.edits.masks import mask_channel
from sinddm.prepared_text import region_of_mask as _mask_region
from sinddm.errors import UserError
from sinddm.image_io import load_rgb


def blobs(h, w, seed=0) -> np.ndarray:
    """Smooth random grey levels with black areas, so that the resize's ringing and edges matter."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1)).astype(np.uint8)
    small[small < 150] = 0
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def save(a: np.ndarray, path, mode=None):
    Image.fromarray(a, mode).save(path) if mode else Image.fromarray(a).save(path)
    return path


@pytest.mark.parametrize("kind", ["grey", "rgb", "grey16"])
@pytest.mark.parametrize("size_hw", [(40, 60), (63, 97), (80, 120)])
def test_text_roi_reads_its_mask_as_harmonize_does(tmp_path, kind, size_hw):
    grey = blobs(80, 120)
    if kind == "rgb":   # red decides, not the grey level
        a = np.stack([grey, 255 - grey, np.zeros_like(grey)], -1)
    elif kind == "grey16":
        a = grey.astype(np.uint16) * 257
    else:
        a = grey
    path = save(a, tmp_path / "mask.png")
    box, region = _mask_region(path, size_hw)
    want = mask_channel(load_rgb(path), size_hw) > 0                       # harmonize's reading
    assert np.array_equal(region[0, 0].numpy() > 0, want)
    ys, xs = np.nonzero(want)
    assert box == (ys.min(), xs.min(), ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)


def test_every_non_zero_pixel_counts():
    """The old rule's cases: a dark-grey pixel (1..127) is inside now, and a resize keeps a lone
    white pixel's neighbourhood (LANCZOS spreads and rings) where NEAREST could drop it."""
    a = np.zeros((4, 6), np.uint8)
    a[1, 1], a[2, 4] = 1, 127
    inside = mask_channel(Image.fromarray(a), (4, 6)) > 0
    assert inside.sum() == 2 and inside[1, 1] and inside[2, 4]
    dot = np.zeros((100, 100), np.uint8)
    dot[51, 51] = 255
    assert np.asarray(Image.fromarray(dot).resize((20, 20), Image.NEAREST)).max() == 0
    assert (mask_channel(Image.fromarray(dot), (20, 20)) > 0).any()


def test_empty_and_missing_masks_are_one_line(tmp_path):
    path = save(np.zeros((10, 10), np.uint8), tmp_path / "black.png")
    with pytest.raises(UserError, match="no white pixels"):
        _mask_region(path, (20, 20))
    (tmp_path / "junk.png").write_bytes(b"not a picture")
    for bad, needle in [(tmp_path / "junk.png", "mask: "), (tmp_path / "missing.png", "no such file")]:
        with pytest.raises(UserError) as e:
            _mask_region(bad, (20, 20))
        assert needle in str(e.value) and "\n" not in str(e.value)
    region = _mask_region(save(np.full((10, 10), 255, np.uint8), tmp_path / "white.png"), (20, 20))[1]
    assert torch.equal(region, torch.ones(1, 1, 20, 20))
