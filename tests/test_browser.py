"""The page in a real headless Chromium (Debian's), driven by Playwright: upload a test image, read the class."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
                    reason="Debian's chromium is not installed (scripts/test.sh installs it)")
def test_page_uploads_image_and_shows_class(tmp_path, small_ds, trained_run):
    from playwright.sync_api import sync_playwright

    run = trained_run.dir
    img = tmp_path / "trouser.png"
    i = int((small_ds.test.labels == 1).nonzero()[0][0])  # trousers: the easiest class
    Image.fromarray(small_ds.test.images[i]).resize((84, 84)).save(img)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "fmnist", "serve", str(run), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('model').textContent.includes('cnn_basic')")
            page.set_input_files("#file", str(img))
            page.wait_for_function("document.getElementById('label').textContent !== '–'", timeout=15000)
            assert page.text_content("#label") == "Trouser"
            assert page.locator("#bars .bar").count() == 10
            page.screenshot(path=str(tmp_path / "page.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
