"""The page in a real headless Chromium (Debian's), driven by Playwright: upload a test image, read the class."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from PIL import Image

from fmnist.cli import main

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
                                 reason="Debian's chromium is not installed (scripts/test.sh installs it)")]


def _phone_photo(path, image):
    """A 4000x3000 JPEG of 6-10 MB (sensor noise keeps JPEG from compressing it): the article dark on light grey."""
    import numpy as np

    rng = np.random.default_rng(0)
    ink = np.asarray(Image.fromarray(image).resize((2400, 2400), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    canvas = np.full((3000, 4000), 238, np.float32)
    canvas[300:2700, 900:3300] *= 1 - ink
    canvas += rng.normal(0, 12, canvas.shape).astype(np.float32)
    Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).convert("RGB").save(path, quality=96)
    return path


def _serve(run, port, *extra):
    server = subprocess.Popen([sys.executable, "-m", "fmnist", "serve", str(run), "--port", str(port), *extra],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    return server


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True,
                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])


def _upload(browser, url, img):
    """The page at url, once it has answered for the picture img."""
    page = browser.new_page()
    page.goto(url)
    page.wait_for_function("document.getElementById('model').textContent.includes('cnn_basic')")
    page.set_input_files("#file", str(img))
    page.wait_for_function("!['–', '…'].includes(document.getElementById('label').textContent)", timeout=15000)
    return page


def test_page_uploads_image_and_shows_class(tmp_path, small_ds, trained_run, capsys):
    from playwright.sync_api import sync_playwright

    run = trained_run.dir
    img = tmp_path / "trouser.png"
    i = int((small_ds.test.labels == 1).nonzero()[0][0])  # trousers: the easiest class
    Image.fromarray(small_ds.test.images[i]).resize((84, 84)).save(img)
    port = _free_port()
    server = _serve(run, port)
    try:
        with sync_playwright() as p:
            browser = _browser(p)
            page = _upload(browser, f"http://127.0.0.1:{port}/", img)
            assert page.text_content("#label") == "Trouser"
            assert page.locator("#bars .bar").count() == 10
            assert page.text_content("#set").startswith("90% prediction set: ")
            page.click("#why")  # the heatmap of what drove the prediction
            page.wait_for_selector("#heat", state="visible", timeout=15000)
            assert "Red: the pixels that drove “Trouser” (gradcam)" in page.text_content("#why-note")
            page.screenshot(path=str(tmp_path / "page.png"))
            # a phone-size photo (over the server's 5 MB limit as it is): scaled down in the browser, then the
            # same label as `fmnist predict` on the file
            phone = _phone_photo(tmp_path / "phone.jpg", small_ds.test.images[i])
            assert 6e6 < phone.stat().st_size < 10e6 and Image.open(phone).size == (4000, 3000)
            page.evaluate("document.getElementById('label').textContent = '–'")
            page.set_input_files("#file", str(phone))
            page.wait_for_function("!['–', '…'].includes(document.getElementById('label').textContent)",
                                   timeout=30000)
            assert page.text_content("#error") == ""
            assert main(["predict", str(run), str(phone), "--json"]) == 0
            assert page.text_content("#label") == json.loads(capsys.readouterr().out)[0]["label"]
            # an empty drawing is refused in the page, with a readable message
            page.click("#clear")
            page.click("#send")
            assert page.text_content("#error") == "Draw something first."
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_class_names_are_shown_as_text_never_run_as_script(tmp_path, small_ds, trained_run):
    """A model someone sent, whose class names are HTML: the page shows them as text, and no script runs; the
    service started with a token is used through the address it prints."""
    import shutil

    from playwright.sync_api import sync_playwright

    from fmnist.inference import load_checkpoint, save_checkpoint
    from fmnist.run import Run

    run = tmp_path / "hostile"
    shutil.copytree(trained_run.dir, run)
    model, meta = load_checkpoint(run)
    names = ['<img src=x onerror="window.pwned=1">', *meta["class_names"][1:-1], "<script>window.pwned=2</script>"]
    save_checkpoint(model, run / "model.safetensors", Run.load(run).config, tuple(names),
                    extra={k: meta[k] for k in ("ood", "calibration")})
    img = tmp_path / "x.png"
    Image.fromarray(small_ds.test.images[0]).resize((56, 56)).save(img)
    port, token = _free_port(), "page-token-0123456789abcdef"
    server = _serve(run, port, "--token", token)
    try:
        with sync_playwright() as p:
            browser = _browser(p)
            page = _upload(browser, f"http://127.0.0.1:{port}/#token={token}", img)
            assert page.text_content("#error") == ""
            bars = page.locator("#bars .bar span").all_text_contents()
            assert names[0] in bars and names[-1] in bars  # the names, character for character
            assert page.locator("#bars img, #bars script").count() == 0
            assert page.evaluate("window.pwned") is None
            page.goto(f"http://127.0.0.1:{port}/")  # without the token the page says what is needed
            page.set_input_files("#file", str(img))
            page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=15000)
            assert "Error 401" in page.text_content("#error")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
