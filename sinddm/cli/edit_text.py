"""Text-guided modes of `sinddm edit MODEL MODE --text ...` (method §6): parse, then `SinDDM` checks and runs.

  text-content         new content from a prompt, guided from --guide-from on (default 1)
  text-roi             content in a region of the training image (--box y,x,h,w or --mask PNG)
  text-style           samples in a style: prompt + " Style", guided at the finest scale only
  text-style-transfer  the training image restyled: injected as the result of scale N-2

Every mode takes --clip-model / --clip-pretrained / --clip-checkpoint / --clip-views (see
`sinddm.edits.guidance`, `sinddm.edits.clip_views`).
"""

from __future__ import annotations

import argparse

from .common import box_arg


def _unit_float(flag: str):
    from .common import unit_float

    return unit_float(flag)


def _iterations(v: str) -> int:
    from .common import int_arg

    return int_arg("--iterations", 0)(v)


def _add_clip_arguments(p: argparse.ArgumentParser) -> None:
    from ..edits.clip import DEFAULT_CLIP_MODEL, DEFAULT_CLIP_PRETRAINED
    from ..edits.clip_views import DEFAULT_VIEW_MODE, VIEW_MODES

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


def _clip_arguments(args) -> dict:
    from ..edits.clip import ClipSpec

    return dict(clip=ClipSpec.from_args(args), clip_views=args.clip_views)


class _GuidedSampling:
    """Shared by text-content, text-style and text-style-transfer."""

    name = api_name = help = ""
    strength, fill, momentum = 0.3, 0.3, 0.2
    sizes = True          # takes --scale-hw / --size

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        _add_clip_arguments(p)
        _add_guidance_arguments(p, self.strength, self.fill, self.momentum)
        if self.sizes:
            from .common import add_size_arguments

            add_size_arguments(p)
        _add_start_t(p)

    def arguments(self, args) -> dict:
        sizes = dict(scale_hw=args.scale_hw, size=args.size) if self.sizes else {}
        return dict(text=args.text, start_t=args.start_t, strength=args.strength, fill_factor=args.fill_factor,
                    momentum=args.momentum, **sizes, **_clip_arguments(args))


class TextContent(_GuidedSampling):
    name, api_name = "text-content", "text_content"
    help = ("new content from a text prompt (CLIP guidance from --guide-from on, inside a mask "
            "covering --fill-factor of the image)")

    def add_arguments(self, p):
        super().add_arguments(p)
        p.add_argument("--guide-from", type=int, default=1, metavar="S",
                       help="first guided scale (default 1; 0 also changes the global layout, its first "
                            "half of the steps unguided)")

    def arguments(self, args) -> dict:
        return dict(super().arguments(args), guide_from=args.guide_from)


class TextStyle(_GuidedSampling):
    name, api_name = "text-style", "text_style"
    help = "samples in a style named by the prompt (prompt + ' Style'; guidance at the finest scale)"
    strength, fill, momentum = 0.3, 1.0, 0.05


class TextStyleTransfer(TextStyle):
    name, api_name = "text-style-transfer", "text_style_transfer"
    help = ("the training image restyled by a prompt: injected as the result of scale N-2, the finest "
            "scale sampled with style guidance")
    sizes = False


class TextROI:
    name, api_name = "text-roi", "text_roi"
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
        p.add_argument("--step-size", type=_unit_float("--step-size"), default=0.1, metavar="STEP",
                       help="each CLIP step's size relative to the region's norm, in [0, 1] (default 0.1)")

    def arguments(self, args) -> dict:
        return dict(text=args.text, box=args.box, mask=args.mask, iterations=args.iterations,
                    step_size=args.step_size, **_clip_arguments(args))


MODES = [TextContent(), TextROI(), TextStyle(), TextStyleTransfer()]
