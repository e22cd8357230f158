"""Train -> sample -> edit from Python, on the shipped model and picture (CPU, a few minutes).

    python examples/walkthrough.py [--out out/walkthrough] [--quick]

--quick trains for 30 steps only (the pipeline, not good pictures; the CI test runs this).
Every call here is the public `sinddm.SinDDM` object: what the `sinddm` command does, from a script.
"""

import argparse
from pathlib import Path

from PIL import Image

from sinddm import SinDDM

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "assets" / "models" / "hubble-small.safetensors"
PICTURE = ROOT / "assets" / "hubble.jpg"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/walkthrough", help="where everything goes")
    ap.add_argument("--quick", action="store_true", help="a 30-step training run (tests use it)")
    args = ap.parse_args()
    out = Path(args.out)

    # 1. Train a tiny model of our own (configs/smoke.yaml: the whole pipeline in seconds).
    mine = SinDDM.train(PICTURE, out / "run", config=ROOT / "configs" / "smoke.yaml",
                        steps=30 if args.quick else None, device="cpu", overwrite=True, progress=False)
    print("trained:", mine)

    # 2. Sample from the shipped model: two 1x2 panoramas, as PIL images.
    model = SinDDM.load(MODEL, device="cpu")
    print("loaded:", model)
    n = 1 if args.quick else 4
    panoramas = model.sample(n, scale_hw=(1, 2), seed=0)
    SinDDM.save_images(panoramas, out / "panoramas")

    # 3. Edit: a source box of the training image copied into a target box of every sample.
    h, w = model.size
    boxes = model.roi_copy(source=(h // 2, w // 4, 16, 16), targets=[(8, 8, 16, 16)], num=n, seed=1)
    SinDDM.save_images(boxes, out / "roi_copy", prefix="roi_copy")

    # 4. Style transfer: our own small model's picture in the shipped model's colours and textures.
    content = Image.open(out / "run" / "samples_grid.png").convert("RGB")
    styled = model.style_transfer(content, num=1, seed=2)
    SinDDM.save_images(styled, out / "style_transfer", prefix="style_transfer")
    print(f"wrote {out}/panoramas, roi_copy, style_transfer")


if __name__ == "__main__":
    main()
