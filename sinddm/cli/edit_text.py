"""Text-guided modes of `sinddm edit RUN MODE --text ...` (method §6): parse, check, call `sinddm.text_edits`.

  text-content         new content from a prompt, guided from --guide-from on (default 1)
  text-roi             content in a region of the training image (--box y,x,h,w or --mask PNG)
  text-style           samples in a style: prompt + " Style", guided at the finest scale only
  text-style-transfer  the training image restyled: injected as the result of scale N-2

Every mode takes --clip-model / --clip-pretrained / --clip-checkpoint / --clip-views (see
`sinddm.guidance`, `sinddm.clip_views`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..errors import UserError
from .common import box_arg

def _unit_float(flag: str):
    from .common import unit_float

    return unit_float(flag)


def _iterations(v: str) -> int:
    from .common import int_arg

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
    from .common import parse_start_t

    return parse_start_t(getattr(args, "start_t", None), loaded.start_t)


class _GuidedSampling:
    """Shared by text-content, text-style and text-style-transfer."""

    name = help = ""
    strength, fill, momentum = 0.3, 0.3, 0.2
    sizes = True          # takes --scale-hw / --size

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        _add_clip_arguments(p)
        _add_guidance_arguments(p, self.strength, self.fill, self.momentum)
        if self.sizes:
            from .common import add_size_arguments

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
        from .common import output_sizes

        return output_sizes(loaded, args)

    def _check(self, args, loaded) -> None:
        pass

    def run(self, args, loaded, device) -> list[torch.Tensor]:
        raise NotImplementedError

    @staticmethod
    def common(args, loaded, device) -> dict:
        """The keyword arguments every text function takes, from the parsed options."""
        from ..clip import ClipSpec

        return dict(num=args.num, seed=args.seed, clip=ClipSpec.from_args(args), views=args.clip_views,
                    batch_size=args.batch_size, device=device, precision=getattr(args, "precision", "fp32"),
                    progress=not getattr(args, "quiet", False))

    def guidance(self, args) -> dict:
        return dict(strength=args.strength, fill_factor=args.fill_factor, momentum=args.momentum)


class TextContent(_GuidedSampling):
    name = "text-content"
    help = ("new content from a text prompt (CLIP guidance from --guide-from on, inside a mask "
            "covering --fill-factor of the image)")

    def add_arguments(self, p):
        super().add_arguments(p)
        p.add_argument("--guide-from", type=int, default=1, metavar="S",
                       help="first guided scale (default 1; 0 also changes the global layout, its first "
                            "half of the steps unguided)")

    def _check(self, args, loaded):
        n = loaded.pyramid.n_scales
        if not 0 <= args.guide_from < n:
            raise UserError(f"--guide-from must be in 0..{n - 1} for this model, got {args.guide_from}")

    def run(self, args, loaded, device):
        from ..text_edits import text_content

        return text_content(loaded, args.text, sizes_hw=self._sizes(args, loaded), start_t=_start_t(args, loaded),
                            guide_from=args.guide_from, **self.guidance(args), **self.common(args, loaded, device))


class TextStyle(_GuidedSampling):
    name = "text-style"
    help = "samples in a style named by the prompt (prompt + ' Style'; guidance at the finest scale)"
    strength, fill, momentum = 0.3, 1.0, 0.05

    def run(self, args, loaded, device):
        from ..text_edits import text_style

        return text_style(loaded, args.text, sizes_hw=self._sizes(args, loaded), start_t=_start_t(args, loaded),
                          **self.guidance(args), **self.common(args, loaded, device))


class TextStyleTransfer(TextStyle):
    name = "text-style-transfer"
    help = ("the training image restyled by a prompt: injected as the result of scale N-2, the finest "
            "scale sampled with style guidance")
    sizes = False

    def _check(self, args, loaded):
        if loaded.pyramid.n_scales < 2:
            raise UserError("text-style-transfer needs a model with at least 2 scales")

    def run(self, args, loaded, device):
        from ..text_edits import text_style_transfer

        return text_style_transfer(loaded, args.text, start_t=_start_t(args, loaded), **self.guidance(args),
                                   **self.common(args, loaded, device))


class TextROI:
    name = "text-roi"
    help = ("content from a text prompt inside a region of the training image (--box y,x,h,w or --mask "
            "PNG): the region is optimised with CLIP, pasted back, then the finest scale denoised from t = 3")

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
        from ..text_edits import text_roi

        box, region = self._region(args, loaded)
        return text_roi(loaded, args.text, box, region, iterations=args.iterations, strength=args.strength,
                        **_GuidedSampling.common(args, loaded, device))


def _mask_region(path: Path, size_hw: tuple[int, int]):
    """(bounding box, [1, 1, H, W] 0/1 region) of a mask picture at the finest scale, read by the
    rule harmonize's --mask is read by (`masks.mask_channel`): the picture as `load_rgb` gives
    it, resized with LANCZOS, every pixel whose first channel is not 0."""
    import numpy as np

    from ..image_io import load_rgb
    from ..masks import mask_channel

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
