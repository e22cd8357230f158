"""The studio in a real browser: Debian's chromium, headless, driven by Playwright through its
executable path (no browser download). The app runs on the shipped model on a free port of
127.0.0.1; the page may reach nothing else (every other request is aborted).

Skipped, with the reason, without gradio + playwright (pip install -e ".[browser-test]") or
without the chromium package. On failure a screenshot is saved in test-artifacts/ (or
$SINDDM_TEST_ARTIFACTS); the README's picture of the page is taken here too (studio.png there).
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "assets" / "models" / "hubble-small.safetensors"
PHOTO = ROOT / "assets" / "photos" / "summer-palace.jpg"
PHOTO_CAP = 3000          # uploaded photos: summer-palace.jpg → one scale of 67x44 px (fast samples)
ARTIFACTS = Path(os.environ.get("SINDDM_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM = os.environ.get("SINDDM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
START_TIMEOUT_S = 120     # the app's start: torch, gradio and the model on a busy 2-core machine
RUN_TIMEOUT_MS = 240_000  # one sampling run on a busy 2-core machine (a few seconds when idle)

pytest.importorskip("gradio", reason="the studio's extra is not installed: pip install -e '.[browser-test]'")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed: pip install -e '.[browser-test]'")
if CHROMIUM is None:
    pytest.skip("no chromium on PATH: apt-get install chromium (Debian's package; .ci/run installs it)",
                allow_module_level=True)
expect = sync_api.expect


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """`sinddm app` in a subprocess: cwd, TMPDIR and --out each a fresh folder; stopped at the end."""
    base = tmp_path_factory.mktemp("studio")
    cwd, tmp, out = base / "cwd", base / "tmp", base / "out"
    cwd.mkdir(), tmp.mkdir()
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    log = open(base / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "sinddm", "app", str(MODEL), "--port", str(port),
                             "--device", "cpu", "--out", str(out), "--max-pixels", str(PHOTO_CAP)],
                            cwd=cwd, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited ({proc.returncode}): {(base / 'app.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the app did not listen within {START_TIMEOUT_S} s")
                time.sleep(0.5)
        yield {"url": f"http://127.0.0.1:{port}/", "cwd": cwd, "tmp": tmp, "out": out, "log": base / "app.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(app, browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    blocked = []

    def only_local(route):
        if route.request.url.startswith(f"{app['url'].rstrip('/')}/") or route.request.url.startswith("data:"):
            return route.continue_()
        blocked.append(route.request.url)
        return route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(app["url"])
    page.wait_for_selector("#sample-run")
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def _set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def _click_pixel(page, x: int, y: int, zoom: int = 4) -> None:
    """Click finest-scale pixel (x, y) of the Regions picture (shown `zoom`x, fitted in its box)."""
    r = page.locator("#regions-image img").evaluate(
        """e => {const b = e.getBoundingClientRect();
                 const s = Math.min(b.width / e.naturalWidth, b.height / e.naturalHeight);
                 return {x: b.x + (b.width - e.naturalWidth * s) / 2,
                         y: b.y + (b.height - e.naturalHeight * s) / 2, s: s}}""")
    page.mouse.click(r["x"] + (x * zoom + zoom / 2) * r["s"], r["y"] + (y * zoom + zoom / 2) * r["s"])


def test_draw_a_box_pair_and_run_roi_copy(page, app):
    page.get_by_role("tab", name="Regions").click()
    hint = page.locator("#regions-hint")
    _click_pixel(page, 17, 74)
    expect(hint).to_contain_text("x=17, y=74")
    _click_pixel(page, 32, 89)
    expect(hint).to_contain_text("source box: 74,17,16,16")
    page.get_by_role("radio", name="target box").check()
    _click_pixel(page, 23, 23)           # corners in either order
    expect(hint).to_contain_text("x=23, y=23")
    _click_pixel(page, 8, 8)
    expect(hint).to_contain_text("target box: 8,8,16,16")
    assert page.locator("#regions-targets textarea").input_value() == "8,8,16,16"
    _set_number(page, "roi-count", 1)
    _set_number(page, "roi-seed", 5)
    page.locator("#roi-run").click()
    expect(page.locator("#roi-status")).to_contain_text("done", timeout=RUN_TIMEOUT_MS)
    command = page.locator("#roi-command textarea").input_value()
    assert f"roi-copy --source 74,17,16,16 --target 8,8,16,16 --num 1 --seed 5 --out {app['out']}" in command
    img = page.locator("#roi-gallery img").first
    assert img.evaluate("e => [e.naturalWidth, e.naturalHeight]") == [118, 101]
    assert (app["out"] / "roi-copy-001" / "roi_copy_000.png").is_file()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)     # the README's picture of the page
    page.screenshot(path=str(ARTIFACTS / "studio.png"), full_page=True)


def test_sample_at_1x2_returns_a_twice_as_wide_picture(page):
    _set_number(page, "sample-fw", 2)
    _set_number(page, "sample-count", 1)
    page.locator("#sample-run").click()
    # the sampler's tqdm bar, tracked by Gradio, over the gallery while it runs
    expect(page.locator("#sample-gallery")).to_contain_text(re.compile(r"\d+/\d+ step"), timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#sample-status")).to_contain_text("done", timeout=RUN_TIMEOUT_MS)
    img = page.locator("#sample-gallery img").first
    assert img.evaluate("e => [e.naturalWidth, e.naturalHeight]") == [236, 101]
    assert "--scale-hw 1 2 --num 1 --seed 0" in page.locator("#sample-command textarea").input_value()
    links = page.locator("#sample-files a").evaluate_all("es => es.map(e => e.href)")
    assert [link.rsplit("/", 1)[-1] for link in links] == ["sample_000.png", "grid.png"]


def test_a_non_image_upload_is_a_message_on_the_page(page, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is text, not a picture")
    page.get_by_role("tab", name="Style").click()
    page.locator("#style-content input[type=file]").set_input_files(str(bad))
    expect(page.locator("#style-status")).to_contain_text(
        "content: image 'notes.png': not a picture Pillow can read", timeout=60_000)
    page.locator("#style-run").click()               # running on it anyway: the same line, no traceback
    expect(page.locator("#style-status")).to_contain_text("not a picture Pillow can read")
    expect(page.locator("body")).not_to_contain_text("Traceback")


def test_a_bad_or_too_large_photo_is_one_line_and_keeps_the_model(page, app, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is text, not a photograph")
    page.locator("#studio-photo input[type=file]").set_input_files(str(bad))
    expect(page.locator("#studio-status")).to_have_text(
        "error: photo: image 'notes.jpg': not a picture Pillow can read; give a PNG or JPEG file", timeout=60_000)
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:                      # 21 MB: over the cap Gradio is given
        f.truncate(21 * 2 ** 20)
    page.locator("#studio-photo input[type=file]").set_input_files(str(huge))
    # Gradio's own line (a toast): the browser sends nothing
    expect(page.get_by_text('File(s) exceed the maximum allowed size of 20.0 Mb: "huge.jpg"')).to_be_visible()
    expect(page.locator("#studio-model")).to_contain_text("hubble-small.safetensors")
    assert not list(app["out"].glob("photo-*"))
    # and the server refuses such a file itself while it streams in, keeping none of it
    boundary = "sinddm-test-boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="huge.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + huge.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(app["url"] + "gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=60)
    assert refused.value.code == 413
    assert not [p for p in (app["out"] / ".gradio").rglob("*") if p.is_file() and p.stat().st_size > 2 ** 20]
    assert not [p for p in app["tmp"].rglob("*") if p.is_file() and p.stat().st_size > 2 ** 20]


def test_upload_a_photo_then_sample_and_edit_it(page, app):
    """Runs after the model's tests (file order): from here on the app's model is the photo's."""
    page.locator("#studio-photo input[type=file]").set_input_files(str(PHOTO))
    expect(page.locator("#studio-status")).to_contain_text("done: a training-free model of summer-palace.jpg",
                                                           timeout=RUN_TIMEOUT_MS)
    kept = app["out"] / "photo-001" / "summer-palace.jpg"
    expect(page.locator("#studio-model")).to_contain_text(f"{kept}: training-free")
    page.get_by_role("tab", name="Regions").click()    # the Regions picture is the photo's now (4x)
    regions = page.locator("#regions-image img")
    expect(regions).to_have_js_property("naturalWidth", 67 * 4)
    page.get_by_role("tab", name="Sample").click()
    _set_number(page, "sample-fh", 0.5)
    _set_number(page, "sample-fw", 0.5)
    _set_number(page, "sample-count", 1)
    page.locator("#sample-run").click()
    expect(page.locator("#sample-status")).to_contain_text("done", timeout=RUN_TIMEOUT_MS)
    img = page.locator("#sample-gallery img").first
    assert img.evaluate("e => [e.naturalWidth, e.naturalHeight]") == [33, 22]
    assert page.locator("#sample-command textarea").input_value().startswith(
        f"sinddm sample {kept} --max-pixels {PHOTO_CAP} --scale-hw 0.5 0.5 --num 1")
    page.get_by_role("tab", name="Style").click()       # one edit: style transfer onto the photo's model
    page.locator("#style-content input[type=file]").set_input_files(str(PHOTO.with_name("gravel.jpg")))
    expect(page.locator("#style-preview img")).to_be_visible()
    _set_number(page, "style-count", 1)
    page.locator("#style-run").click()
    expect(page.locator("#style-status")).to_contain_text("done", timeout=RUN_TIMEOUT_MS)
    assert f"sinddm edit {kept} --max-pixels {PHOTO_CAP} style-transfer" in page.locator(
        "#style-command textarea").input_value()
    assert (app["out"] / "style-transfer-001" / "style_transfer_000.png").is_file()
    page.reload()                                       # a fresh page shows the model in use
    expect(page.locator("#studio-model")).to_contain_text(f"{kept}: training-free")


def test_nothing_is_written_outside_the_output_folder(app):
    """Runs last in this module (file order): uploads and served copies went under --out too."""
    assert list(app["cwd"].iterdir()) == []
    assert [p.name for p in app["tmp"].iterdir() if not p.name.startswith("tmp")] == []
    assert (app["out"] / ".gradio").is_dir()
