"""Picture conversion for the metrics: the library's two picture types to float batches.

Every measure takes pictures as uint8 arrays (H×W×3) or float tensors in [-1, 1]
(3×H×W, or N×3×H×W) and works on any device; these helpers turn either into float32
tensors in [-1, 1], and group pictures of one size into batches.
"""

from __future__ import annotations

import numpy as np
import torch

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as Pillow's convert("L")


def as_batch(images, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 H×W×3 arrays / float 3×H×W tensors in [-1, 1] (a list, or one N×3×H×W
    tensor) → float32 N×3×H×W in [-1, 1] on `device`. All must have the same size."""
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return images.to(device=device, dtype=torch.float32)
    if isinstance(images, (np.ndarray, torch.Tensor)):
        images = [images]
    return torch.stack([as_image(x, device) for x in images])


def as_image(x, device: torch.device | str = "cpu") -> torch.Tensor:
    """One picture → float32 3×H×W in [-1, 1] on `device`."""
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
            raise ValueError(f"expected a uint8 H×W×3 array, got {x.dtype} {x.shape}")
        t = torch.from_numpy(np.array(x, dtype=np.uint8, copy=True)).permute(2, 0, 1).float() / 127.5 - 1.0
        return t.to(device)
    if isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[0] == 3:
        return x.to(device=device, dtype=torch.float32)
    raise ValueError(f"expected a uint8 H×W×3 array or a 3×H×W tensor, got {type(x).__name__}")


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """N×3×H×W (any range) → N×H×W BT.601 luma in the same range."""
    w = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1)


def same_size_batches(samples, chunk: int) -> list[tuple[list[int], torch.Tensor]]:
    """Group pictures by size into batches of at most `chunk`: [(indices, N×3×H×W)]."""
    if isinstance(samples, torch.Tensor) and samples.dim() == 4:
        return [(list(range(i, min(i + chunk, len(samples)))), samples[i:i + chunk].float())
                for i in range(0, len(samples), chunk)]
    if isinstance(samples, (np.ndarray, torch.Tensor)):  # one picture
        samples = [samples]
    imgs = [as_image(x) for x in samples]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(imgs):
        groups.setdefault(tuple(x.shape[-2:]), []).append(i)
    out = []
    for idx in groups.values():
        for j in range(0, len(idx), chunk):
            part = idx[j:j + chunk]
            out.append((part, torch.stack([imgs[i] for i in part])))
    return out
