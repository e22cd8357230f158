"""InceptionV3 as pytorch-fid builds it for FID (and SIFID), with its weights from a local file.

`FIDInceptionV3(last)` builds the network up to the layer `last` (a key of `TAPS`) and
returns every tapped activation on the way; `find_inception_weights` looks for pytorch-fid's
weight file without downloading; `load_inception` checks the file against the built layers.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError

class BasicConv2d(nn.Module):
    """conv (no bias) → batch norm (eps 0.001) → ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg3(x):  # the FID network's average pools do not count the zero padding
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg3(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for m in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                  self.branch7x7dbl_5):
            d = m(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b = x
        for m in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b = m(b)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """`pool`: 'avg' (Mixed_7b: average pool without padding counts) or 'max' (Mixed_7c);
    the FID network's two deviations from the classification network."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        p = _avg3(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(p)], 1)


# Feature taps in network order: name → channels. "pre_pool1"/"pre_pool2" are the SIFID
# layers (the outputs of Conv2d_2b_3x3 and Conv2d_4a_3x3), the others pytorch-fid's.
TAPS = {"pre_pool1": 64, "pre_pool2": 192, "mixed_6e": 768, "pool3": 2048, "logits": 1008}


class FIDInceptionV3(nn.Module):
    """InceptionV3 as pytorch-fid builds it for FID (1008 classes, no auxiliary head).

    Module and parameter names follow the classification network's (`Conv2d_1a_3x3.conv
    .weight`, `Mixed_5b.branch1x1.bn.running_mean`, `fc.weight`, ...), which is the key
    layout of pytorch-fid's `pt_inception-2015-12-05-*.pth`. `last` builds only the
    layers up to that tap. Input: N×3×H×W in [-1, 1] (pytorch-fid's normalised range),
    any size ≥ 75 px (the SIFID taps need only ≥ 15 px).
    """

    def __init__(self, last: str = "logits"):
        super().__init__()
        if last not in TAPS:
            raise ValueError(f"last must be one of {list(TAPS)}")
        self.last = last
        k = list(TAPS).index(last)
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        if k >= 1:
            self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
            self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        if k >= 2:
            self.Mixed_5b = InceptionA(192, 32)
            self.Mixed_5c = InceptionA(256, 64)
            self.Mixed_5d = InceptionA(288, 64)
            self.Mixed_6a = InceptionB(288)
            self.Mixed_6b = InceptionC(768, 128)
            self.Mixed_6c = InceptionC(768, 160)
            self.Mixed_6d = InceptionC(768, 160)
            self.Mixed_6e = InceptionC(768, 192)
        if k >= 3:
            self.Mixed_7a = InceptionD(768)
            self.Mixed_7b = InceptionE(1280, "avg")
            self.Mixed_7c = InceptionE(2048, "max")
        if k >= 4:
            self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor, taps: Iterable[str] = ("pre_pool1", "pre_pool2")) -> dict:
        taps = set(taps)
        unknown = taps - set(TAPS)
        if unknown:
            raise ValueError(f"unknown taps {sorted(unknown)}")
        order = list(TAPS)
        stop = max(order.index(t) for t in taps)
        if stop > order.index(self.last):
            raise ValueError(f"this network ends at {self.last!r}")
        out = {}

        def tap(name, v):
            if name in taps:
                out[name] = v
            return order.index(name) >= stop

        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        if tap("pre_pool1", x):
            return out
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        if tap("pre_pool2", x):
            return out
        x = F.max_pool2d(x, 3, stride=2)
        for m in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                  self.Mixed_6d, self.Mixed_6e):
            x = m(x)
        if tap("mixed_6e", x):
            return out
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        if tap("pool3", x):
            return out
        tap("logits", self.fc(x))
        return out


def weight_keys(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The state-dict keys and shapes a weight file must provide (BN counters excluded)."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


WEIGHT_PATTERNS = ("pt_inception-2015-12-05-*.pth",)  # pytorch-fid's FID weights


def find_inception_weights(explicit: str | os.PathLike | None = None) -> tuple[Path | None, str | None]:
    """(path, None) or (None, why not). `explicit` (--inception-weights) must exist;
    otherwise torch.hub.get_dir()/checkpoints is searched. Never downloads."""
    if explicit is not None:
        p = Path(explicit)
        if not p.is_file():
            raise UserError(f"--inception-weights '{p}': no such file; give pytorch-fid's "
                            "pt_inception-2015-12-05-*.pth")
        return p, None
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    for pattern in WEIGHT_PATTERNS:
        found = sorted(glob.glob(str(cache / pattern)))
        if found:
            return Path(found[0]), None
    return None, (f"no InceptionV3 weights: put pytorch-fid's pt_inception-2015-12-05-*.pth in {cache} "
                  "or pass --inception-weights FILE (nothing is downloaded)")


def load_inception(path: str | os.PathLike, last: str = "pre_pool2",
                   device: torch.device | str = "cpu") -> FIDInceptionV3:
    """FIDInceptionV3 up to `last` with weights from a pytorch-fid-format state dict.

    Every key of the built layers must be in the file with the same shape (extra keys,
    e.g. the deeper layers, are ignored). Raises ValueError naming the first problem.
    """
    model = FIDInceptionV3(last)
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot be read as a torch state dict ({type(e).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError("not a state dict")
    want = weight_keys(model)
    missing = [k for k in want if k not in state]
    if missing:
        raise ValueError(f"{len(missing)} InceptionV3 keys missing (first: {missing[0]})")
    for k, shape in want.items():
        if tuple(state[k].shape) != shape:
            raise ValueError(f"key {k} has shape {tuple(state[k].shape)}, expected {shape}")
    model.load_state_dict({k: state[k].float() for k in want}, strict=False)
    return model.to(device).eval()
