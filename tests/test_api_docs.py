"""Every public method of `SinDDM` documents every parameter it takes, what it returns and what
it raises (Google style: Args / Returns / Raises), so the API reference (`mkdocs build --strict`,
which fails on a documented parameter the signature lacks) is complete."""

import inspect
import re

import pytest

from sinddm import SinDDM

PUBLIC = [name for name, member in inspect.getmembers(SinDDM)
          if not name.startswith("_") and (inspect.isfunction(member) or inspect.ismethod(member))]


def _section(doc: str, title: str) -> str | None:
    m = re.search(rf"^{title}:\n((?: {{4,}}.*\n)+)", doc, re.M)
    return m.group(1) if m else None


def test_the_public_methods_are_the_ones_the_reference_shows():
    assert {"load", "from_image", "train", "to", "sizes", "tiled", "prepare", "sample", "harmonize",
            "style_transfer", "roi_copy", "text_content", "text_style", "text_style_transfer", "text_roi",
            "save_images"} <= set(PUBLIC)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_parameter_return_and_error_is_documented(name):
    fn = getattr(SinDDM, name)
    doc = inspect.getdoc(fn) or ""
    params = [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]
    args = _section(doc + "\n", "Args") or ""
    documented = [d.lstrip("*") for d in re.findall(r"^ {4}(\**\w+)(?: \([^)]*\))?:", args, re.M)]
    missing = [p for p in params if p.lstrip("*") not in documented]
    assert not missing, f"SinDDM.{name}: parameters without a line under Args: {missing}"
    assert not set(documented) - {p.lstrip("*") for p in params}, f"SinDDM.{name}: documents unknown parameters"
    assert _section(doc + "\n", "Returns") is not None, f"SinDDM.{name}: no Returns section"
    if name not in ("to", "save_images", "tiled"):
        assert _section(doc + "\n", "Raises") is not None, f"SinDDM.{name}: no Raises section"
