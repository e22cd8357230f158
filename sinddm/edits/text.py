"""Text-guided modes (DESIGN §6, supplement E): `sinddm edit RUN MODE --text ...`.

  text-content         new content from a prompt, guided from --start-scale on (default 1)
  text-roi             content in a region of the training image (--box y,x,h,w or --mask PNG)
  text-style           samples in a style: prompt + " Style", guided at the finest scale only
  text-style-transfer  the training image restyled: injected as the result of scale N-2

Every mode takes --clip-model / --clip-pretrained / --clip-checkpoint / --clip-views (see
`sinddm.guidance`, `sinddm.clip_views`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from ..errors import UserError
from . import box_arg

_DEFAULT_BATCH_CAP = 16   # 16 samples × 16 views = 256 CLIP images per guided step


def _unit_float(flag: str):
    from ..cli import unit_float

    return unit_float(flag)


def _iterations(v: str) -> int:
    from ..cli import int_arg

    return int_arg("--iterations", 0)(v)


def _add_clip_arguments(p: argparse.ArgumentParser) -> None:
    from ..clip import DEFAULT_CLIP_MODEL, DEFAULT_CLIP_PRETRAINED
    from ..clip_views import DEFAULT_VIEW_MODE, VIEW_MODES

    p.add_argument("--text", required=True, help="the text prompt")
    p.add_argument("--clip-model", default=DEFAULT_CLIP_MODEL, metavar="NAME",
                   help=f"open_clip model name, or a model config .json (default {DEFAULT_CLIP_MODEL})")
    p.add_argument("--clip-pretrained", default=DEFAULT_CLIP_PRETRAINED, metavar="TAG",
                   help=f"open_clip pretrained tag; 'none': random weights (tests, timing) "
                        f"(default {DEFAULT_CLIP_PRETRAINED})")
    p.add_argument("--clip-checkpoint", metavar="PATH",
                   help="local CLIP weights file instead of open_clip's download cache (OpenAI's ViT-B-32.pt "
                        "or an open_clip .safetensors/.bin)")
    p.add_argument("--clip-views", choices=VIEW_MODES, default=DEFAULT_VIEW_MODE,
                   help="how CLIP sees x̂0: 'reference' (the published code: aspect kept, its positional-embedding "
                        "layout), 'aspect' (that layout corrected), 'square' (squeezed to CLIP's square input) "
                        f"(default {DEFAULT_VIEW_MODE})")


def _add_guidance_arguments(p, strength: float, fill: float, momentum: float) -> None:
    p.add_argument("--strength", type=_unit_float("--strength"), default=strength, metavar="ETA",
                   help=f"guidance strength η in [0, 1] (default {strength})")
    p.add_argument("--fill-factor", type=_unit_float("--fill-factor"), default=fill, metavar="F",
                   help=f"fraction of the image the text may change, in [0, 1] (default {fill})")
    p.add_argument("--momentum", type=_unit_float("--momentum"), default=momentum, metavar="LAMBDA",
                   help=f"x̂0 momentum λ in [0, 1] inside the mask (default {momentum})")


def _add_start_t(p) -> None:
    p.add_argument("--start-t", nargs="+", type=int, metavar="T",
                   help="start timesteps T[1] .. T[N-1] (or T[0] .. T[N-1]); default from the pyramid")


def _check_prompt(args) -> None:
    if not str(args.text).strip():
        raise UserError("--text: the prompt is empty; give a few words, e.g. --text 'a medieval castle'")


def _start_t(args, loaded) -> list[int]:
    from ..cli import parse_start_t

    return parse_start_t(getattr(args, "start_t", None), loaded.start_t)


def _precision(args, device) -> torch.dtype | None:
    """precision 'fast' (CUDA only): bf16 autocast for the denoiser, bf16 CLIP weights and a
    CUDA-graphed CLIP encoder; None: fp32 everywhere."""
    from ..training import resolve_precision

    return torch.bfloat16 if resolve_precision(getattr(args, "precision", "fp32"), device) == "fast" else None


def _guide(args, device, prompt: str):
    from ..clip import ClipSpec, load_clip
    from ..clip_views import DEFAULT_VIEW_MODE
    from ..guidance import TextGuide

    dtype = _precision(args, device)
    clip = load_clip(ClipSpec.from_args(args), device, dtype=dtype or torch.float32)
    views = getattr(args, "clip_views", DEFAULT_VIEW_MODE)
    return TextGuide(clip, prompt, cuda_graphs=dtype is not None, views=views)


def _batches(args, sizes_hw, loaded, device):
    from ..pipeline import auto_batch_size

    bs = args.batch_size or min(_DEFAULT_BATCH_CAP, auto_batch_size(sizes_hw, loaded.model.dim, device))
    return bs, math.ceil(args.num / bs)


def _generators(seed: int, b: int, device):
    from ..pipeline import batch_seed

    s = batch_seed(seed, b)
    noise = torch.Generator(device=device).manual_seed(s % 2 ** 64)
    aug = torch.Generator(device=device).manual_seed((s + 0x5EED_C11B) % 2 ** 64)
    return noise, aug


def _progress(args, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=getattr(args, "quiet", False), dynamic_ncols=True)


class _GuidedSampling:
    """Shared by text-content, text-style and text-style-transfer."""

    name = help = ""
    strength, fill, momentum = 0.3, 0.3, 0.2
    sizes = True          # takes --scale-hw / --size
    suffix = ""           # appended to the prompt

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        _add_clip_arguments(p)
        _add_guidance_arguments(p, self.strength, self.fill, self.momentum)
        if self.sizes:
            from ..cli import add_size_arguments

            add_size_arguments(p)
        _add_start_t(p)

    def validate(self, args, loaded) -> None:
        from ..clip import ClipSpec, resolve_clip

        _check_prompt(args)
        _start_t(args, loaded)
        self._sizes(args, loaded)
        self._check(args, loaded)
        resolve_clip(ClipSpec.from_args(args))   # weights reachable? (fails before any work)

    def _sizes(self, args, loaded) -> list[tuple[int, int]]:
        if not self.sizes:
            return list(loaded.pyramid.sizes_hw)
        from ..cli import output_sizes

        return output_sizes(loaded, args)

    def _check(self, args, loaded) -> None:
        pass

    def params(self, args, loaded):
        raise NotImplementedError

    def first_scale(self, loaded) -> int:
        return 0

    def init(self, loaded, device):
        return None

    def run(self, args, loaded, device) -> list[torch.Tensor]:
        from ..guidance import autocast_model, sample_guided

        sizes = self._sizes(args, loaded)
        start_t = _start_t(args, loaded)
        dtype = _precision(args, device)
        guide = _guide(args, device, args.text.strip() + self.suffix)
        params = self.params(args, loaded)
        model = autocast_model(loaded.model.to(device).eval(), dtype)
        schedule = loaded.schedule.to(device)
        first = self.first_scale(loaded)
        init = self.init(loaded, device)
        bs, nb = _batches(args, sizes, loaded, device)
        out: list[torch.Tensor] = []
        with _progress(args, nb * sum(start_t[first:]), self.name) as bar:
            for b in range(nb):
                n = min(bs, args.num - b * bs)
                gen, aug = _generators(args.seed, b, device)
                guide.generator = aug
                x = sample_guided(model, schedule, sizes, start_t, n, guide, params, generator=gen, device=device,
                                  init=init, first_scale=first, progress=bar)
                out.extend(x.float().cpu())
        return out


class TextContent(_GuidedSampling):
    name = "text-content"
    help = ("new content from a text prompt (CLIP guidance from --start-scale on, inside a mask "
            "covering --fill-factor of the image)")

    def add_arguments(self, p):
        super().add_arguments(p)
        p.add_argument("--start-scale", type=int, default=1, metavar="S",
                       help="first guided scale (default 1; 0 also changes the global layout, its first "
                            "half of the steps unguided)")

    def _check(self, args, loaded):
        n = loaded.pyramid.n_scales
        if not 0 <= args.start_scale < n:
            raise UserError(f"--start-scale must be in 0..{n - 1} for this model, got {args.start_scale}")

    def params(self, args, loaded):
        from ..guidance import GuidanceParams

        return GuidanceParams(strength=args.strength, fill_factor=args.fill_factor, momentum=args.momentum,
                              guide_from=args.start_scale)


class TextStyle(_GuidedSampling):
    name = "text-style"
    help = "samples in a style named by the prompt (prompt + ' Style'; guidance at the finest scale)"
    strength, fill, momentum = 0.3, 1.0, 0.05
    suffix = " Style"

    def params(self, args, loaded):
        from ..guidance import GuidanceParams

        return GuidanceParams(strength=args.strength, fill_factor=args.fill_factor, momentum=args.momentum,
                              guide_from=loaded.pyramid.n_scales - 1)


class TextStyleTransfer(TextStyle):
    name = "text-style-transfer"
    help = ("the training image restyled by a prompt: injected as the result of scale N-2, the finest "
            "scale sampled with style guidance")
    sizes = False

    def _check(self, args, loaded):
        if loaded.pyramid.n_scales < 2:
            raise UserError("text-style-transfer needs a model with at least 2 scales")

    def first_scale(self, loaded) -> int:
        return loaded.pyramid.n_scales - 1

    def init(self, loaded, device):
        return loaded.pyramid.level_tensor(loaded.pyramid.n_scales - 2).unsqueeze(0).to(device)


class TextROI:
    name = "text-roi"
    help = ("content from a text prompt inside a region of the training image (--box y,x,h,w or --mask "
            "PNG): the region is optimised with CLIP, pasted back, then the finest scale denoised from t = 3")
    denoise_t = 3

    def add_arguments(self, p):
        _add_clip_arguments(p)
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--box", type=box_arg, metavar="Y,X,H,W", help="the region in finest-scale pixels")
        g.add_argument("--mask", metavar="PNG", help="the region as a picture, white on black (resized to the "
                                                     "finest scale if needed; as harmonize reads its mask: every "
                                                     "pixel whose first channel is not 0 is inside)")
        p.add_argument("--iterations", type=_iterations, default=100, help="CLIP steps on the region (default 100)")
        p.add_argument("--strength", type=_unit_float("--strength"), default=0.1, metavar="ETA",
                       help="step size relative to the region's norm (default 0.1)")

    def validate(self, args, loaded):
        from ..clip import ClipSpec, resolve_clip

        _check_prompt(args)
        h, w = loaded.pyramid.sizes_hw[-1]
        if args.box is not None:
            y, x, bh, bw = args.box
            if y + bh > h or x + bw > w:
                raise UserError(f"--box {y},{x},{bh},{bw}: outside the {h}x{w} finest scale (y + h <= {h}, "
                                f"x + w <= {w})")
        self._region(args, loaded)
        resolve_clip(ClipSpec.from_args(args))

    @staticmethod
    def _region(args, loaded):
        """(box, [1, 1, H, W] region or None) at the finest scale."""
        if args.box is not None:
            return tuple(args.box), None
        return _mask_region(Path(args.mask), loaded.pyramid.sizes_hw[-1])

    def run(self, args, loaded, device):
        from ..guidance import autocast_model, denoise, optimize_roi

        dtype = _precision(args, device)
        guide = _guide(args, device, args.text.strip())
        model = autocast_model(loaded.model.to(device).eval(), dtype)
        schedule = loaded.schedule.to(device)
        n_scales = loaded.pyramid.n_scales
        image = loaded.pyramid.level_tensor(n_scales - 1).unsqueeze(0).to(device)
        box, region = self._region(args, loaded)
        region = region.to(device) if region is not None else None
        bs, nb = _batches(args, [loaded.pyramid.sizes_hw[-1]], loaded, device)
        out: list[torch.Tensor] = []
        with _progress(args, nb * (args.iterations + self.denoise_t), self.name) as bar:
            for b in range(nb):
                n = min(bs, args.num - b * bs)
                gen, aug = _generators(args.seed, b, device)
                guide.generator = aug
                pasted = optimize_roi(guide, image, box, n, region=region, iterations=args.iterations,
                                      step=args.strength, progress=bar)
                x = denoise(model, schedule, pasted, n_scales - 1, self.denoise_t, generator=gen, progress=bar)
                out.extend(x.float().clamp(-1, 1).cpu())
        return out


def _mask_region(path: Path, size_hw: tuple[int, int]):
    """(bounding box, [1, 1, H, W] 0/1 region) of a mask picture at the finest scale, read by the
    rule harmonize's --mask is read by (`editing.mask_channel`): the picture as `load_rgb` gives
    it, resized with LANCZOS, every pixel whose first channel is not 0."""
    import numpy as np

    from ..editing import mask_channel
    from ..image_io import load_rgb

    if not path.is_file():
        raise UserError(f"--mask '{path}': no such file; give a PNG, white where the text goes")
    try:
        picture = load_rgb(path)
    except UserError as e:
        raise UserError(f"--mask: {e}") from None
    if not mask_channel(picture, (picture.height, picture.width)).any():
        raise UserError(f"--mask '{path}': no white pixels; mark the region in white")
    a = mask_channel(picture, size_hw) > 0
    if not a.any():
        raise UserError(f"--mask '{path}': the white region vanishes at the finest scale's {size_hw[1]}x{size_hw[0]} "
                        "px; paint a larger region")
    ys, xs = np.nonzero(a)
    box = (int(ys.min()), int(xs.min()), int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1))
    return box, torch.from_numpy(a.astype(np.float32)).view(1, 1, *a.shape)


MODES = [TextContent(), TextROI(), TextStyle(), TextStyleTransfer()]
