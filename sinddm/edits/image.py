"""Image-guided edit modes: `harmonize`, `style-transfer`, `roi-copy` (DESIGN §7).

    sinddm edit RUN harmonize --composite IMG --mask MASK [--start-t 5]
    sinddm edit RUN style-transfer --content IMG [--start-t 15]
    sinddm edit RUN roi-copy --source y,x,h,w --target y,x,h,w [y,x,h,w ...] [--scale-hw FH FW | --size HxW]

`validate` reads and checks every input (and keeps what it read on `args.edit_inputs`),
so that bad input fails before any work or output; `run` does the work (sinddm.editing).
Edits always run the fp32 eager samplers: --precision has no effect here.
"""

from __future__ import annotations

import argparse

from ..errors import UserError
from . import box_arg


def _start_t(v: str) -> int:
    from ..cli import int_arg

    return int_arg("--start-t", 1, 99)(v)


def _read_picture(path: str, flag: str, check_size: bool = True):
    """load_rgb with the option named in the message (and, unless `check_size` is off, big enough)."""
    from ..image_io import load_rgb
    from ..pyramid import MIN_SIDE

    try:
        picture = load_rgb(path)
    except UserError as e:
        raise UserError(f"{flag}: {e}") from None
    if check_size and min(picture.size) < MIN_SIDE:  # as `sinddm train`: below the smallest scale any model learns at
        raise UserError(f"{flag} '{path}': {picture.width}x{picture.height} px (w x h) is too small; give a "
                        f"picture at least {MIN_SIDE} px on its short side")
    return picture


def _max_pixels(loaded) -> int:
    return int(loaded.config.image.max_pixels)


class Harmonize:
    name = "harmonize"
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
        p.add_argument("--start-t", type=_start_t, default=5, metavar="T",
                       help="noise level to start from, 1..99 (default 5; higher: stronger blending)")

    def validate(self, args, loaded) -> None:
        import numpy as np

        from ..editing import harmonization_mask, mask_channel, resize_like_training
        from ..image_io import to_tensor

        composite = _read_picture(args.composite, "--composite")
        mask_picture = _read_picture(args.mask, "--mask", check_size=False)  # must match --composite
        if mask_picture.size != composite.size:
            raise UserError(f"--mask '{args.mask}': {mask_picture.width}x{mask_picture.height} px but --composite "
                            f"'{args.composite}' is {composite.width}x{composite.height} px; give a mask of the "
                            "composite's size")
        if not mask_channel(mask_picture, (mask_picture.height, mask_picture.width)).any():
            raise UserError(f"--mask '{args.mask}': empty (every pixel is black); paint the pasted region "
                            "white on black")
        picture = resize_like_training(composite, _max_pixels(loaded))
        try:
            soft = harmonization_mask(mask_picture, picture.shape[:2])
        except ValueError:
            raise UserError(f"--mask '{args.mask}': the white region vanishes when the mask is resized to the "
                            f"working size {picture.shape[1]}x{picture.shape[0]} px; paint a larger region") from None
        args.edit_inputs = {"composite": to_tensor(np.ascontiguousarray(picture)), "mask": soft}

    def run(self, args, loaded, device):
        from ..editing import harmonize

        inputs = args.edit_inputs
        return harmonize(loaded, inputs["composite"], inputs["mask"], num=args.num, seed=args.seed,
                         t_start=args.start_t, batch_size=args.batch_size, device=device,
                         progress=not args.quiet)


class StyleTransfer:
    name = "style-transfer"
    help = ("give a content picture the training image's colours and fine textures: histogram-match it "
            "to the training image, then denoise it at the finest scale")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--content", required=True, metavar="IMG",
                       help="the content picture (any size; resized like the training image)")
        p.add_argument("--start-t", type=_start_t, default=15, metavar="T",
                       help="noise level to start from, 1..99 (default 15; higher: more of the training "
                            "image's texture, less of the content)")

    def validate(self, args, loaded) -> None:
        from ..editing import prepare_content
        from ..image_io import to_tensor

        content = _read_picture(args.content, "--content")
        args.edit_inputs = {"content": to_tensor(prepare_content(content, loaded.pyramid, _max_pixels(loaded)))}

    def run(self, args, loaded, device):
        from ..editing import style_transfer

        return style_transfer(loaded, args.edit_inputs["content"], num=args.num, seed=args.seed,
                              t_start=args.start_t, batch_size=args.batch_size, device=device,
                              progress=not args.quiet)


class RoiCopy:
    name = "roi-copy"
    help = ("generate random samples whose target boxes copy the training image's source box "
            "(ROI-guided generation, supplement Fig. S10)")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        from ..cli import add_size_arguments

        p.add_argument("--source", required=True, type=box_arg, metavar="y,x,h,w",
                       help="box of the training image to copy, in finest-scale pixels (see 'sinddm inspect')")
        p.add_argument("--target", required=True, type=box_arg, nargs="+", action="extend", metavar="y,x,h,w",
                       help="box(es) of the output to fill, in finest output pixels; repeatable. A target "
                            "of another size than the source gets the source resized to it")
        add_size_arguments(p)
        p.add_argument("--start-t", nargs="+", type=int, metavar="T",
                       help="start timesteps T[1] .. T[N-1] (or T[0] .. T[N-1]); default from the pyramid")

    def validate(self, args, loaded) -> None:
        from ..cli import output_sizes, parse_start_t
        from ..editing import box_outside

        pyr = loaded.pyramid
        if pyr.n_scales < 2:
            raise UserError(f"model '{loaded.path}': roi-copy needs at least 2 scales (this model has 1); "
                            "train on a larger image")
        sizes = output_sizes(loaded, args)
        start_t = parse_start_t(args.start_t, loaded.start_t)
        h, w = pyr.sizes_hw[-1]
        if box_outside(args.source, (h, w)):
            raise UserError(f"--source '{args.source}': reaches beyond the training image's finest scale "
                            f"({h} rows x {w} columns); give a box inside it")
        oh, ow = sizes[-1]
        for box in args.target:
            if box_outside(box, (oh, ow)):
                raise UserError(f"--target '{box}': reaches beyond the output ({oh} rows x {ow} columns); "
                                "give a box inside it or enlarge the output with --size / --scale-hw")
        args.edit_inputs = {"sizes": sizes, "start_t": start_t}

    def run(self, args, loaded, device):
        from ..editing import roi_generate

        inputs = args.edit_inputs
        return roi_generate(loaded, inputs["sizes"], inputs["start_t"], args.source, args.target,
                            num=args.num, seed=args.seed, batch_size=args.batch_size, device=device,
                            progress=not args.quiet)


MODES = [Harmonize(), StyleTransfer(), RoiCopy()]
