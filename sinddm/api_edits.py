"""`SinDDM`'s edit methods and its one checked-call door, `prepare` (a base class of `SinDDM`, which
adds the constructors and sampling: `sinddm.api`). Each method is `prepare(name, ...).run()`."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from . import checks as C
from .errors import ParameterError
from .image_io import to_uint8
from .prepared import PREPARERS, Prepared
from .prepared_text import TEXT_PREPARERS
from .edits.regions import Box

Picture = str | os.PathLike | Image.Image | np.ndarray     # a path, a PIL image or a uint8 H×W×3 array
BoxLike = Box | str | Sequence[int]
_OPERATIONS = {**PREPARERS, **TEXT_PREPARERS}


class EditMethods:
    """Every operation of a model by name (`prepare`), and the edit modes as methods. Needs the
    public `loaded`, `device` and `precision` of `SinDDM`."""

    def prepare(self, name: str, **arguments) -> Prepared:
        """Check a call of the method `name` with `arguments` without running it.

        Args:
            name: the method, e.g. 'sample' or 'roi_copy'.
            **arguments: its keyword arguments (all but `output`).

        Returns:
            A `sinddm.prepared.Prepared`; its `run()` returns the pictures as 3×H×W tensors.

        Raises:
            ParameterError: as the method would, before any work.
        """
        if name not in _OPERATIONS:
            raise ParameterError("name", f"unknown operation {name!r}; one of {', '.join(sorted(_OPERATIONS))}")
        try:
            return _OPERATIONS[name](self, **arguments)
        except TypeError as e:  # an unknown keyword: say which, in the caller's terms
            if "unexpected keyword argument" not in str(e):
                raise
            raise ParameterError(str(e).split("'")[1], f"is not a parameter of {name}") from None

    def _call(self, name: str, output: str, arguments: dict):
        output = C.choice("output", output, C.OUTPUTS)
        arguments.pop("self")
        result = self.prepare(name, **arguments).run()
        if output == "tensor":
            return result
        if result and isinstance(result[0], list):   # sample(all_scales=True)
            return [[Image.fromarray(to_uint8(x)) for x in scale] for scale in result]
        return [Image.fromarray(to_uint8(x)) for x in result]

    def harmonize(self, composite: Picture, mask: Picture, num: int = 1, noise_level: int = C.HARMONIZE_NOISE_LEVEL,
                  seed: int = 0, generator: torch.Generator | None = None, batch_size: int | None = None,
                  tile: int | None = None, progress: bool = False, output: str = "pil"):
        """Blend an object pasted into a picture (a naive composite) into its surroundings (method §7.1).

        Args:
            composite: the pasted picture (resized like the training picture).
            mask: a picture of the composite's size, white where the pasted object is.
            num: as in `sample`.
            seed: as in `sample`.
            generator: as in `sample`.
            batch_size: as in `sample`.
            tile: as in `sample`.
            progress: as in `sample`.
            output: as in `sample`.
            noise_level: the timestep the composite is noised to, 1..99 (higher: stronger blending).

        Returns:
            `num` pictures equal to the composite wherever the soft mask is 0.

        Raises:
            ParameterError: an unreadable, empty or mis-sized mask, a bad value, or precision 'fast'.
        """
        return self._call("harmonize", output, _args(locals()))

    def style_transfer(self, content: Picture, num: int = 1, noise_level: int = C.STYLE_TRANSFER_NOISE_LEVEL,
                       seed: int = 0, generator: torch.Generator | None = None, batch_size: int | None = None,
                       tile: int | None = None, progress: bool = False, output: str = "pil"):
        """A content picture with the training picture's colours and fine textures (method §7.2).

        Args:
            content: the content picture (any size; resized like the training picture).
            noise_level: the timestep it is noised to, 1..99 (higher: more texture, less content).
            num: as in `sample`.
            seed: as in `sample`.
            generator: as in `sample`.
            batch_size: as in `sample`.
            tile: as in `sample`.
            progress: as in `sample`.
            output: as in `sample`.

        Returns:
            `num` pictures at the content's working size.

        Raises:
            ParameterError: an unreadable or too small picture, a bad value, or precision 'fast'.
        """
        return self._call("style_transfer", output, _args(locals()))

    def roi_copy(self, source: BoxLike, targets: Sequence[BoxLike], num: int = 1,
                 scale_hw: tuple[float, float] | None = None, size: tuple[int, int] | None = None,
                 start_t: Sequence[int] | None = None, seed: int = 0, generator: torch.Generator | None = None,
                 batch_size: int | None = None, tile: int | None = None, progress: bool = False,
                 output: str = "pil"):
        """Samples whose target boxes copy the training picture's source box (method §7.3).

        Args:
            source: a box (y, x, h, w) of the training picture's finest scale.
            targets: boxes of the output, in its finest pixels.
            num: as in `sample`.
            scale_hw: as in `sample`.
            size: as in `sample`.
            start_t: as in `sample`.
            seed: as in `sample`.
            generator: as in `sample`.
            batch_size: as in `sample`.
            tile: as in `sample`.
            progress: as in `sample`.
            output: as in `sample`.

        Returns:
            `num` pictures.

        Raises:
            ParameterError: a box outside its picture, a 1-scale model, a bad value, or precision 'fast'.
        """
        return self._call("roi_copy", output, _args(locals()))

    # -- text-guided edits (method §6) -------------------------------------------------------
    def text_content(self, text: str, num: int = 1, scale_hw=None, size=None, start_t=None, guide_from: int = 1,
                     strength: float = 0.3, fill_factor: float = 0.3, momentum: float = 0.2, seed: int = 0,
                     generator=None, clip=None, clip_views: str | None = None, batch_size: int | None = None,
                     tile: int | None = None, progress: bool = False, output: str = "pil"):
        """New content from a text prompt (CLIP guidance, method §6.5-6.7).

        Args:
            text: the prompt.
            guide_from: the first guided scale (0 also reshapes the layout).
            strength: the guidance step η in [0, 1].
            fill_factor: the fraction of the picture the text may change, in [0, 1].
            momentum: λ in [0, 1], keeping the previous guided estimate inside the mask.
            clip: a `sinddm.edits.clip.ClipSpec` or an open_clip model name (default ViT-B/32, OpenAI weights).
            clip_views: how CLIP sees x̂0: 'reference', 'aspect' or 'square'.
            num: as in `sample`.
            scale_hw: as in `sample`.
            size: as in `sample`.
            start_t: as in `sample`.
            seed: as in `sample`.
            generator: as in `sample`.
            batch_size: as in `sample`.
            tile: as in `sample`.
            progress: as in `sample`.
            output: as in `sample`.

        Returns:
            `num` pictures.

        Raises:
            ParameterError: an empty prompt, unreachable CLIP weights, a bad value.
        """
        return self._call("text_content", output, _args(locals()))

    def text_style(self, text: str, num: int = 1, scale_hw=None, size=None, start_t=None, strength: float = 0.3,
                   fill_factor: float = 1.0, momentum: float = 0.05, seed: int = 0, generator=None, clip=None,
                   clip_views: str | None = None, batch_size: int | None = None, tile: int | None = None,
                   progress: bool = False, output: str = "pil"):
        """Samples in the style a prompt names (prompt + " Style", guided at the finest scale).

        Args:
            text: the style, e.g. 'Van Gogh'.
            strength: as in `text_content`.
            fill_factor: as in `text_content`.
            momentum: as in `text_content`.
            clip: as in `text_content`.
            clip_views: as in `text_content`.
            num: as in `sample`.
            scale_hw: as in `sample`.
            size: as in `sample`.
            start_t: as in `sample`.
            seed: as in `sample`.
            generator: as in `sample`.
            batch_size: as in `sample`.
            tile: as in `sample`.
            progress: as in `sample`.
            output: as in `sample`.

        Returns:
            `num` pictures.

        Raises:
            ParameterError: an empty prompt, unreachable CLIP weights, a bad value.
        """
        return self._call("text_style", output, _args(locals()))

    def text_style_transfer(self, text: str, num: int = 1, start_t=None, strength: float = 0.3,
                            fill_factor: float = 1.0, momentum: float = 0.05, seed: int = 0, generator=None,
                            clip=None, clip_views: str | None = None, batch_size: int | None = None,
                            tile: int | None = None, progress: bool = False, output: str = "pil"):
        """The training picture restyled by a prompt (its level N-2 injected, the finest scale guided).

        Args:
            text: the style.
            strength: as in `text_content`.
            fill_factor: as in `text_content`.
            momentum: as in `text_content`.
            clip: as in `text_content`.
            clip_views: as in `text_content`.
            num: as in `sample`.
            start_t: as in `sample`.
            seed: as in `sample`.
            generator: as in `sample`.
            batch_size: as in `sample`.
            tile: as in `sample`.
            progress: as in `sample`.
            output: as in `sample`.

        Returns:
            `num` pictures at the training size.

        Raises:
            ParameterError: a 1-scale model, an empty prompt, unreachable CLIP weights, a bad value.
        """
        return self._call("text_style_transfer", output, _args(locals()))

    def text_roi(self, text: str, box: BoxLike | None = None, mask: Picture | None = None, num: int = 1,
                 iterations: int = 100, step_size: float = 0.1, seed: int = 0, generator=None, clip=None,
                 clip_views: str | None = None, batch_size: int | None = None, tile: int | None = None,
                 progress: bool = False, output: str = "pil"):
        """Content from a prompt inside a region of the training picture (method §6.7).

        Args:
            text: the prompt.
            box: the region (y, x, h, w) at the finest scale; or
            mask: the region as a picture, white inside (resized to the finest scale).
            iterations: CLIP steps on the region (>= 0).
            step_size: each step's size relative to the region's norm, in [0, 1].
            clip: as in `text_content`.
            clip_views: as in `text_content`.
            num: as in `sample`.
            seed: as in `sample`.
            generator: as in `sample`.
            batch_size: as in `sample`.
            tile: as in `sample`.
            progress: as in `sample`.
            output: as in `sample`.

        Returns:
            `num` pictures at the training size.

        Raises:
            ParameterError: neither or both of box and mask, a region outside the picture or empty,
                an empty prompt, unreachable CLIP weights, a bad value.
        """
        return self._call("text_roi", output, _args(locals()))


def _args(frame_locals: dict) -> dict:
    """A method's arguments as `prepare` takes them (its own `self`, `output` left out)."""
    return {k: v for k, v in frame_locals.items() if k not in ("output", "__class__")}
