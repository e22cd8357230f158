"""Image-guided edit modes of `sinddm edit`: `harmonize`, `style-transfer`, `roi-copy` (method §7).

    sinddm edit MODEL harmonize --composite IMG --mask MASK [--noise-level 5]
    sinddm edit MODEL style-transfer --content IMG [--noise-level 15]
    sinddm edit MODEL roi-copy --source y,x,h,w --target y,x,h,w [y,x,h,w ...] [--scale-hw FH FW | --size HxW]

Each mode only parses: `arguments(args)` gives `SinDDM`'s method its keyword arguments, and the
method checks them. Edits run the exact fp32 path: `--precision fast` is refused.
"""

from __future__ import annotations

import argparse

from ..checks import HARMONIZE_NOISE_LEVEL, STYLE_TRANSFER_NOISE_LEVEL
from .common import box_arg


def _add_noise_level(p: argparse.ArgumentParser, default: int, more: str) -> None:
    from .common import int_arg

    p.add_argument("--noise-level", type=int_arg("--noise-level", 1, 99), default=default, metavar="T",
                   help=f"the timestep the picture is noised to, 1..99 (default {default}; higher: {more})")


class Harmonize:
    name, api_name = "harmonize", "harmonize"
    help = ("blend an object pasted into the training image (a naive composite) into its surroundings: "
            "denoise the composite a little at the finest scale inside a soft mask")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--composite", required=True, metavar="IMG",
                       help="the naively pasted picture (resized like the training image)")
        p.add_argument("--mask", required=True, metavar="MASK",
                       help="a picture of the composite's size, white on black where the pasted object is "
                            "(as the reference reads it: every pixel whose first channel is not 0 is inside); "
                            "it is dilated (disk, radius 7 px) and blurred (sigma 5 px), and the output equals "
                            "the composite where the result is 0")
        _add_noise_level(p, HARMONIZE_NOISE_LEVEL, "stronger blending")

    def arguments(self, args) -> dict:
        return dict(composite=args.composite, mask=args.mask, noise_level=args.noise_level)


class StyleTransfer:
    name, api_name = "style-transfer", "style_transfer"
    help = ("give a content picture the training image's colours and fine textures: histogram-match it "
            "to the training image, then denoise it at the finest scale")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--content", required=True, metavar="IMG",
                       help="the content picture (any size; resized like the training image)")
        _add_noise_level(p, STYLE_TRANSFER_NOISE_LEVEL, "more of the training image's texture, less of the content")

    def arguments(self, args) -> dict:
        return dict(content=args.content, noise_level=args.noise_level)


class RoiCopy:
    name, api_name = "roi-copy", "roi_copy"
    help = ("generate random samples whose target boxes copy the training image's source box "
            "(ROI-guided generation, supplement Fig. S10)")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        from .common import add_size_arguments, add_start_t_argument

        p.add_argument("--source", required=True, type=box_arg, metavar="y,x,h,w",
                       help="box of the training image to copy, in finest-scale pixels (see 'sinddm inspect')")
        p.add_argument("--target", required=True, type=box_arg, nargs="+", action="extend", metavar="y,x,h,w",
                       help="box(es) of the output to fill, in finest output pixels; repeatable. A target "
                            "of another size than the source gets the source resized to it")
        add_size_arguments(p)
        add_start_t_argument(p)

    def arguments(self, args) -> dict:
        return dict(source=args.source, targets=args.target, scale_hw=args.scale_hw, size=args.size,
                    start_t=args.start_t)


MODES = [Harmonize(), StyleTransfer(), RoiCopy()]
