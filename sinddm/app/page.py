"""The studio's Gradio page: the active model (switched by uploading a photo or training a
hybrid on it) above five panels whose callbacks turn widget values into `Studio` calls
(sinddm/app/jobs.py, which calls the public API) and show the pictures, the PNGs to download,
the reproducing command, or one line when the input is bad. Gradio is imported only here.

`serve(studio, port)` keeps every file Gradio writes (uploads, served copies) under the output
folder, refuses uploads over the studio's cap, binds 127.0.0.1 only and never shares publicly;
one job runs at a time.
"""

import inspect
import os
import sys
import traceback
from pathlib import Path

from PIL import Image, ImageDraw

from ..checks import HARMONIZE_NOISE_LEVEL, STYLE_TRANSFER_NOISE_LEVEL
from ..errors import UserError
from . import commands as C
from .jobs import Result, Studio
from .uploads import MAX_UPLOAD_BYTES

ZOOM = 4                     # the Regions picture is shown 4x enlarged; clicks are divided back
COLOURS = {"source": (255, 220, 0), "target": (0, 200, 255), "text-roi": (255, 0, 200)}
CLICK_MODES = ["source box", "target box", "text-roi box"]
JOB = dict(concurrency_id="studio", concurrency_limit=1)     # one job at a time
CSS = "#regions-image img {image-rendering: pixelated;} .studio-status {min-height: 1.5em;}"


def message(e: BaseException) -> str:
    """One line for the page; a bug's traceback goes to the server's stderr, not to the page."""
    if isinstance(e, UserError):
        return f"error: {e}"
    traceback.print_exc(file=sys.stderr)
    if isinstance(e, MemoryError) or "out of memory" in str(e).lower():
        return "error: out of memory: use a smaller count or size"
    return f"error: failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def _shown(result: Result, status: str = "done") -> tuple:
    return [(img, None) for img in result.images], [str(p) for p in result.paths], result.command, f"**{status}**"


def regions_picture(studio: Studio, source: str, targets: str, roi_box: str) -> Image.Image:
    """The finest-scale image, enlarged, with the boxes the fields hold (unreadable ones skipped)."""
    img = studio.finest_image()
    img = img.resize((img.width * ZOOM, img.height * ZOOM), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    fields = [("source", source), *[("target", t) for t in str(targets or "").splitlines()], ("text-roi", roi_box)]
    for kind, text in fields:
        try:
            b = C.parse_box_field(text, kind)
        except UserError:
            continue
        draw.rectangle([b.x * ZOOM, b.y * ZOOM, (b.x + b.w) * ZOOM - 1, (b.y + b.h) * ZOOM - 1],
                       outline=COLOURS[kind], width=2)
    return img


def build(studio: Studio):
    import gradio as gr

    n_scales = studio.model.pyramid.n_scales

    def outputs(prefix: str):
        with gr.Row():
            gallery = gr.Gallery(label="result", elem_id=f"{prefix}-gallery", columns=4, height=320,
                                 object_fit="contain", format="png", interactive=False)
        files = gr.File(label="PNGs", file_count="multiple", elem_id=f"{prefix}-files", interactive=False)
        command = gr.Textbox(label="the command that reproduces this result", elem_id=f"{prefix}-command",
                             interactive=False, buttons=["copy"])
        status = gr.Markdown("", elem_id=f"{prefix}-status", elem_classes="studio-status")
        return gallery, files, command, status

    def count_seed(prefix: str, count: int = 4):
        with gr.Row():
            n = gr.Slider(1, 16, value=count, step=1, label="count", elem_id=f"{prefix}-count")
            seed = gr.Number(0, precision=0, label="seed", minimum=0, elem_id=f"{prefix}-seed")
        return n, seed

    def guarded(fn, n_out: int):
        """Run `fn`; on failure leave the outputs alone and show one line. Its tqdm bars show on
        the page: Gradio looks for the Progress tracker among the positional parameters only, so
        `run` has `fn`'s and then `progress`, which Gradio passes last."""
        def run(*args):
            try:
                return fn(*args[:-1])
            except Exception as e:  # noqa: BLE001 - the page shows one line, never a traceback
                return (*[gr.skip()] * (n_out - 1), message(e))
        progress = inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                     default=gr.Progress(track_tqdm=True))
        run.__signature__ = inspect.Signature([*inspect.signature(fn).parameters.values(), progress])
        return run

    with gr.Blocks(title="sinddm studio", analytics_enabled=False) as demo:
        gr.Markdown(f"## sinddm studio\nResults go to `{studio.out}`. Each panel prints the `sinddm` command "
                    "that writes the same pictures.")
        active = gr.Markdown(studio.describe(), elem_id="studio-model")
        with gr.Row():
            photo = gr.File(label=f"start from a photo (PNG or JPEG, at most {MAX_UPLOAD_BYTES // 2 ** 20} MB): "
                                  f"a training-free model at once, shrunk to {studio.photo_max_pixels} pixels",
                            file_types=["image"], type="filepath", elem_id="studio-photo", scale=3, height=90)
            with gr.Column(scale=2):
                train = gr.Button("Train hybrid on the photo (configs/hybrid-cpu.yaml)", elem_id="studio-train")
                model_status = gr.Markdown("", elem_id="studio-status", elem_classes="studio-status")
        with gr.Tabs():
            # -- Sample ---------------------------------------------------------------------------
            with gr.Tab("Sample", id="sample"):
                with gr.Row():
                    fh = gr.Slider(0.25, 4, value=1, step=0.25, label="height factor", elem_id="sample-fh")
                    fw = gr.Slider(0.25, 4, value=1, step=0.25, label="width factor", elem_id="sample-fw")
                    size = gr.Textbox(label="or a fixed size HxW (overrides the factors)", placeholder="100x240",
                                      elem_id="sample-size")
                    level = gr.Slider(0, max(n_scales - 1, 1), value=0, step=1, elem_id="sample-level",
                                      interactive=n_scales > 1,
                                      label="object size: start level (larger: smaller objects)")
                n, seed = count_seed("sample")
                run = gr.Button("Sample", variant="primary", elem_id="sample-run")
                outs = outputs("sample")
                run.click(guarded(lambda a, b, c, d, k, sd: _shown(studio.sample(k, sd, a, b, c, d, progress=True)), 4),
                          [fh, fw, size, level, n, seed], list(outs), **JOB)

            # -- Regions --------------------------------------------------------------------------
            with gr.Tab("Regions", id="regions"):
                gr.Markdown("Click two opposite corners on the image to draw a box (boxes are y,x,h,w in "
                            "finest-scale pixels; the fields can be typed too). Yellow: source, blue: targets, "
                            "pink: the text-roi box (used by the Text panel). roi-copy samples at the training "
                            "size.")
                mode = gr.Radio(CLICK_MODES, value="source box", label="the next two clicks draw",
                                elem_id="regions-mode")
                with gr.Row():
                    picture = gr.Image(regions_picture(studio, "", "", ""), label="finest scale (4x)", type="pil",
                                       interactive=False, elem_id="regions-image", buttons=[])
                    with gr.Column():
                        source = gr.Textbox(label="source box y,x,h,w", elem_id="regions-source")
                        targets = gr.Textbox(label="target boxes, one per line", lines=3, elem_id="regions-targets")
                        roi_box = gr.Textbox(label="text-roi box y,x,h,w", elem_id="regions-roi-box")
                        clear = gr.Button("clear the boxes", size="sm")
                corner = gr.State(None)
                hint = gr.Markdown("", elem_id="regions-hint")
                n_r, seed_r = count_seed("roi", count=3)
                run_r = gr.Button("Run roi-copy", variant="primary", elem_id="roi-run")
                outs_r = outputs("roi")

                def click(kind, first, src, tgts, roi, evt: gr.SelectData):
                    x, y = int(evt.index[0]) // ZOOM, int(evt.index[1]) // ZOOM
                    if first is None:
                        return ((x, y), src, tgts, roi, gr.skip(),
                                f"corner at x={x}, y={y}: click the opposite corner")
                    box = str(C.box_from_corners(first, (x, y), studio.model.size))
                    if kind == "source box":
                        src = box
                    elif kind == "target box":
                        tgts = "\n".join([*[t for t in str(tgts or "").splitlines() if t.strip()], box])
                    else:
                        roi = box
                    return None, src, tgts, roi, regions_picture(studio, src, tgts, roi), f"{kind}: {box}"

                picture.select(click, [mode, corner, source, targets, roi_box],
                               [corner, source, targets, roi_box, picture, hint])
                for field in (source, targets, roi_box):
                    field.blur(lambda s, t, r: regions_picture(studio, s, t, r), [source, targets, roi_box], picture)
                clear.click(lambda: (None, "", "", "", regions_picture(studio, "", "", ""), ""), None,
                            [corner, source, targets, roi_box, picture, hint])
                run_r.click(guarded(lambda s, t, k, sd: _shown(studio.roi_copy(s, t, k, sd, progress=True)), 4),
                            [source, targets, n_r, seed_r], list(outs_r), **JOB)

            # -- Harmonize ------------------------------------------------------------------------
            with gr.Tab("Harmonize", id="harmonize"):
                gr.Markdown("Upload a composite (an object pasted into a picture like the training image), "
                            "then paint over the pasted object with the brush.")
                composite = gr.File(label="composite (PNG or JPEG)", file_types=["image"], type="filepath",
                                    elem_id="harmonize-composite")
                editor = gr.ImageEditor(label="paint the mask", type="pil", sources=(), transforms=(),
                                        brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
                                        layers=False, elem_id="harmonize-editor")
                t_h = gr.Slider(1, 99, value=HARMONIZE_NOISE_LEVEL, step=1, label="noise level (higher: stronger blending)")
                n_h, seed_h = count_seed("harmonize", count=3)
                run_h = gr.Button("Harmonize", variant="primary", elem_id="harmonize-run")
                outs_h = outputs("harmonize")

                def loaded(path):
                    try:
                        img = studio_read(path, "composite")
                    except UserError as e:
                        return gr.skip(), message(e)
                    return {"background": img, "layers": [], "composite": None}, f"composite: {img.width}×{img.height} px"

                composite.upload(loaded, composite, [editor, outs_h[3]])

                def harmonize(path, value, t, k, sd):
                    layers = (value or {}).get("layers") or []
                    return _shown(studio.harmonize(path, layers, t, k, sd, progress=True))

                run_h.click(guarded(harmonize, 4), [composite, editor, t_h, n_h, seed_h], list(outs_h), **JOB)

            # -- Style ----------------------------------------------------------------------------
            with gr.Tab("Style", id="style"):
                gr.Markdown("**From a picture**: its layout with the training image's colours and textures.")
                content = gr.File(label="content picture (PNG or JPEG)", type="filepath", elem_id="style-content")
                preview = gr.Image(label="content", type="pil", interactive=False, height=160, elem_id="style-preview")
                t_s = gr.Slider(1, 99, value=STYLE_TRANSFER_NOISE_LEVEL, step=1, label="noise level (higher: more of the model's texture)")
                n_s, seed_s = count_seed("style", count=3)
                run_s = gr.Button("Style transfer", variant="primary", elem_id="style-run")
                outs_s = outputs("style")

                def shown_content(path):
                    try:
                        return studio_read(path, "content"), ""
                    except UserError as e:
                        return None, message(e)

                content.upload(shown_content, content, [preview, outs_s[3]])
                run_s.click(guarded(lambda p, t, k, sd: _shown(studio.style_transfer(p, t, k, sd, progress=True)), 4),
                            [content, t_s, n_s, seed_s], list(outs_s), **JOB)

                gr.Markdown("**From a prompt** (needs CLIP weights): text-style draws samples in a style, "
                            "text-style-transfer restyles the training image.")
                tmode = gr.Radio(["text-style", "text-style-transfer"], value="text-style", label="mode")
                tprompt = gr.Textbox(label="style prompt", placeholder="Van Gogh", elem_id="tstyle-prompt")
                with gr.Row():
                    ts = gr.Slider(0, 1, value=0.3, step=0.05, label="strength")
                    tf = gr.Slider(0, 1, value=1.0, step=0.05, label="fill factor")
                    tm = gr.Slider(0, 1, value=0.05, step=0.01, label="momentum")
                n_t, seed_t = count_seed("tstyle", count=2)
                run_t = gr.Button("Text style", variant="primary", elem_id="tstyle-run")
                outs_t = outputs("tstyle")
                run_t.click(guarded(lambda m, p, s, f, mo, k, sd: _shown(studio.text(
                    m, p, k, sd, s, f, mo, progress=True)), 4), [tmode, tprompt, ts, tf, tm, n_t, seed_t],
                    list(outs_t), **JOB)

            # -- Text -----------------------------------------------------------------------------
            with gr.Tab("Text", id="text"):
                gr.Markdown("text-content: new content from the prompt. text-roi: the prompt inside a region "
                            "of the training image: the pink box of the Regions panel, or paint it below when "
                            "that box is empty. Needs CLIP weights (see README, Text guidance).")
                xmode = gr.Radio(["text-content", "text-roi"], value="text-content", label="mode", elem_id="text-mode")
                xprompt = gr.Textbox(label="prompt", placeholder="a red balloon", elem_id="text-prompt")
                with gr.Row():
                    xs = gr.Slider(0, 1, value=0.3, step=0.05, label="strength (text-roi: the step size, e.g. 0.1)")
                    xf = gr.Slider(0, 1, value=0.3, step=0.05, label="fill factor")
                    xm = gr.Slider(0, 1, value=0.2, step=0.05, label="momentum")
                painter = gr.ImageEditor({"background": studio.finest_image(), "layers": [], "composite": None},
                                         label="text-roi region (paint)", type="pil", sources=(), transforms=(),
                                         brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"), layers=False,
                                         elem_id="text-painter")
                n_x, seed_x = count_seed("text", count=2)
                run_x = gr.Button("Run", variant="primary", elem_id="text-run")
                with gr.Row():
                    gallery_x = gr.Gallery(label="result", columns=4, height=320, object_fit="contain", format="png",
                                           interactive=False, elem_id="text-gallery", scale=3)
                    mask_x = gr.Image(label="guidance region", type="pil", interactive=False, scale=1,
                                      elem_id="text-mask")
                files_x = gr.File(label="PNGs", file_count="multiple", interactive=False, elem_id="text-files")
                command_x = gr.Textbox(label="the command that reproduces this result", interactive=False,
                                       elem_id="text-command", buttons=["copy"])
                status_x = gr.Markdown("", elem_id="text-status", elem_classes="studio-status")

                def text(m, p, s, f, mo, box, value, k, sd):
                    layers = (value or {}).get("layers") or []
                    if m == "text-roi":
                        r = studio.text(m, p, k, sd, s, box_text=box, mask_layers=layers, progress=True)
                    else:
                        r = studio.text(m, p, k, sd, s, f, mo, progress=True)
                    g, fl, cmd, st = _shown(r)
                    return g, r.extra, fl, cmd, st

                run_x.click(guarded(text, 5), [xmode, xprompt, xs, xf, xm, roi_box, painter, n_x, seed_x],
                            [gallery_x, mask_x, files_x, command_x, status_x], **JOB)

        # -- the model: every panel follows it (also on a page load, after a switch in another tab)
        follow = [active, level, picture, source, targets, roi_box, corner, hint, painter]

        def following(status: str = "") -> tuple:
            n = studio.model.pyramid.n_scales
            empty = regions_picture(studio, "", "", "")
            return (studio.describe(), gr.update(maximum=max(n - 1, 1), value=0, interactive=n > 1), empty,
                    "", "", "", None, "", {"background": studio.finest_image(), "layers": [], "composite": None},
                    status)

        def use_photo(path):
            try:
                studio.use_photo(path)
            except Exception as e:  # noqa: BLE001 - one line; the refused file leaves the upload box
                return (*[gr.skip()] * len(follow), message(e), None)
            return (*following(f"**done**: a training-free model of {Path(path).name}"), gr.skip())

        def train_hybrid():
            studio.train_hybrid(progress=True)
            return following(f"**done**: trained into `{studio.model_arg}`")

        photo.upload(use_photo, photo, [*follow, model_status, photo], **JOB)
        train.click(guarded(train_hybrid, len(follow) + 1), None, [*follow, model_status], **JOB,
                    show_progress_on=[photo])   # the training's bar over the photo it trains on
        demo.load(lambda: following()[:-1], None, follow)

    def studio_read(path, what):
        from .jobs import read_upload

        return read_upload(path, what)

    return demo


def serve(studio: Studio, port: int | None = None, open_browser: bool = False) -> None:
    """Start the page on 127.0.0.1 (blocks until Ctrl-C). Gradio's own files go to OUT/.gradio."""
    os.environ["GRADIO_TEMP_DIR"] = str((studio.out / ".gradio").resolve())   # read when gradio is imported
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["NO_PROXY"] = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    demo = build(studio)
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name="127.0.0.1", server_port=port, share=False, inbrowser=open_browser, ssr_mode=False,
                allowed_paths=[str(studio.out.resolve())], footer_links=[], css=CSS, show_error=False,
                max_file_size=MAX_UPLOAD_BYTES,
                mcp_server=False, pwa=False, enable_monitoring=False, quiet=True)


__all__ = ["build", "regions_picture", "serve"]
