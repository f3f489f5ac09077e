import contextlib
import io
import json
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fmnist.cli import main


@pytest.fixture(scope="module")
def run_dir(trained_run):
    return trained_run.dir


@pytest.fixture(scope="module")
def client(run_dir):
    from fmnist.serve import create_app

    with TestClient(create_app(run_dir, max_body_bytes=200_000), base_url="http://127.0.0.1") as c:
        yield c


def _png(arr, size=None, mode="L"):
    im = Image.fromarray(arr).convert(mode)
    if size:
        im = im.resize(size)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_predict_image_json_batch_and_info(client, small_ds):
    img = small_ds.test.images[0]
    r = client.post("/predict", params={"preprocess": "fit"},  # the plumbing; the preparation has its own tests
                    files={"file": ("shoe.png", _png(img, (100, 100), "RGB"), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] in body["probabilities"] and abs(sum(body["probabilities"].values()) - 1) < 1e-4
    assert "warning" in body  # null for an ordinary picture, a sentence for an unusual one
    blank = client.post("/predict", json={"pixels": [0] * 784}).json()
    assert "nothing stands out" in blank["warning"]
    assert np.array(body["image"]).shape == (28, 28)
    r2 = client.post("/predict", json={"pixels": img.tolist()})
    r3 = client.post("/predict", json={"pixels": img.reshape(-1).tolist()})
    assert r2.json()["probabilities"] == pytest.approx(r3.json()["probabilities"])
    assert r2.json()["label"] == body["label"]  # the upload, once resized back, is the same garment
    rb = client.post("/predict/batch", json={"pixels": small_ds.test.images[:5].tolist()})
    assert len(rb.json()["predictions"]) == 5
    rb = client.post("/predict/batch", files=[("files", ("a.png", _png(img), "image/png")),
                                               ("files", ("b.png", _png(img), "image/png"))])
    assert len(rb.json()["predictions"]) == 2
    assert client.get("/health").json() == {"status": "ok"}
    m = client.get("/model").json()
    assert m["name"] == "cnn_basic" and len(m["classes"]) == 10 and m["parameters"] == 225034
    assert client.get("/docs").status_code == 200 and "/predict" in client.get("/openapi.json").json()["paths"]
    assert "<canvas" in client.get("/").text
    assert isinstance(body["set"], list) and body["set_level"] == 0.9  # the run holds a calibration


def test_explain_endpoint_returns_a_heatmap(client, small_ds):
    img = small_ds.test.images[0]
    r = client.post("/explain", json={"pixels": img.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    heat = np.array(body["heatmap"])
    assert heat.shape == (28, 28) and 0 <= heat.min() and heat.max() <= 1 and body["method"] == "gradcam"
    assert body["target"] == body["label"]
    other = client.post("/explain", params={"target": "Bag", "method": "integrated_gradients"},
                        json={"pixels": img.tolist()}).json()
    assert other["target"] == "Bag" and other["method"] == "integrated_gradients"
    bad = client.post("/explain", params={"target": "Hat"}, json={"pixels": img.tolist()})
    assert bad.status_code == 400 and "target must be a class name" in bad.json()["detail"]
    assert client.post("/explain", params={"method": "x"}, json={"pixels": img.tolist()}).status_code == 400


def _bomb():
    # a valid PNG header declaring 20000 x 20000 pixels: over the pixel limit before any decoding
    def chunk(t, d):
        return len(d).to_bytes(4, "big") + t + d + zlib.crc32(t + d).to_bytes(4, "big")
    ihdr = (20000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 1000))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


@pytest.mark.parametrize("kwargs, status, needle", [
    ({"files": {"file": ("x.txt", b"hello, not an image", "text/plain")}}, 400, "not a readable image"),
    ({"files": {"file": ("x.png", b"", "image/png")}}, 400, "empty upload"),
    ({"files": {"file": ("x.png", _png(np.zeros((28, 28), np.uint8))[:40], "image/png")}}, 400, "not a readable"),
    ({"files": {"file": ("big.png", b"\0" * 300_000, "image/png")}}, 413, "over the limit"),
    ({"files": {"file": ("bomb.png", _bomb(), "image/png")}}, 400, "pixel"),
    ({"json": {"pixels": [1, 2, 3]}}, 400, "expected 784 values"),
    ({"json": {"pixels": [300] * 784}}, 400, "0..255"),
    ({"json": {"pixels": ["a"] * 784}}, 400, "must be numbers"),
    ({"json": {"image": []}}, 400, "'pixels' field"),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"content": b"", "headers": {"content-type": "application/json"}}, 400, "empty body"),
    ({"content": b"abc", "headers": {"content-type": "text/plain"}}, 400, "not supported"),
    ({"json": {"pixels": [True] * 784}}, 400, "booleans are not pixel values"),
    ({"json": {"pixels": [0, 1] * 392}}, 400, "every pixel is 0 or 1"),
    ({"json": {"pixels": [-0.5] * 784}}, 400, "look standardized"),
    ({"json": {"pixels": [None] * 784}}, 400, "pixel values must be numbers"),
    ({"json": {"pixels": [[1, 2], [3]]}}, 400, "rows of different lengths"),
    ({"json": {"pixels": []}}, 400, "holds no pixels"),
    ({"content": b'{"pixels": ' + b"[" * 20000 + b"]" * 20000 + b"}",
      "headers": {"content-type": "application/json"}}, 400, "nested too deeply"),
])
def test_bad_input_is_4xx_with_clear_message(client, kwargs, status, needle):
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_unknown_route_and_method(client):
    assert client.get("/nope").status_code == 404
    assert client.get("/predict").status_code == 405


def test_messages_hold_no_internal_reprs(client):
    r = client.post("/predict", files={"file": ("x.png", b"GIF89a not really", "image/png")})
    assert r.status_code == 400 and "object at 0x" not in r.text and "x.png: not a readable image" in r.text


def test_0_1_floats_are_scaled_and_said(client, small_ds):
    img = small_ds.test.images[0]
    a = client.post("/predict", json={"pixels": (img / 255.0).tolist()}).json()
    b = client.post("/predict", json={"pixels": img.tolist()}).json()
    assert a["notes"] == ["pixels: float pixels in 0..1, scaled to 0..255"] and "notes" not in b
    assert a["probabilities"] == pytest.approx(b["probabilities"])


def test_too_many_files_names_the_limit(client):
    png = _png(np.zeros((28, 28), np.uint8))
    r = client.post("/predict/batch", files=[("files", (f"{i}.png", png, "image/png")) for i in range(257)])
    assert r.status_code == 400 and "more than 256 files in one request" in r.json()["detail"]


@contextlib.contextmanager
def live_server(app):
    """The app served by uvicorn on a free loopback port, in a thread; yields the port."""
    import socket
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        t.start()
        try:
            for _ in range(200):
                if server.started:
                    break
                threading.Event().wait(0.05)
            yield sock.getsockname()[1]
        finally:
            server.should_exit = True
            t.join(timeout=10)


def test_a_body_that_never_arrives_is_answered_408(run_dir):
    import socket

    from fmnist.serve import create_app

    with live_server(create_app(run_dir, read_timeout=0.5)) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{")  # 1 byte of the 100 announced, then nothing
            chunks = []
            while chunk := c.recv(4096):  # the server closes the connection after its answer
                chunks.append(chunk)
    answer = b"".join(chunks).decode()
    assert answer.startswith("HTTP/1.1 408") and "not received within 0.5 s" in answer


def test_serve_refuses_bad_ports_hosts_and_missing_extras(run_dir, capsys, monkeypatch):
    import socket
    import sys

    assert main(["serve", str(run_dir), "--port", "99999"]) == 2
    assert "--port must be in 0..65535, got 99999" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", str(run_dir), "--port", str(busy.getsockname()[1])]) == 2
        assert "Address already in use" in capsys.readouterr().err
    assert main(["serve", str(run_dir), "--host", "no-such-host.invalid"]) == 2
    assert "cannot listen on no-such-host.invalid:8000" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as after `pip install fmnist` without the extra
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["serve", str(run_dir)]) == 2
    assert "pip install 'fmnist[serve]'" in capsys.readouterr().err
    assert main(["export", str(run_dir)]) == 2
    assert "pip install 'fmnist[export]'" in capsys.readouterr().err


def test_an_over_limit_body_from_urllib_gets_the_413_json(run_dir):
    import json
    import urllib.error
    import urllib.request

    from fmnist.serve import create_app

    with live_server(create_app(run_dir, max_body_bytes=1_000_000)) as port:
        body = b"\xff" * 8_000_000  # a phone photo's size, 8x the limit
        req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body, method="POST",
                                     headers={"Content-Type": "image/jpeg"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 413
    assert json.loads(e.value.read()) == {"detail": "request body over the limit of 1 MB"}


def test_only_requests_addressed_to_the_service_are_answered(run_dir):
    from fmnist.serve import create_app

    app = create_app(run_dir)
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/health").status_code == 200
    for host in ("localhost:8000", "[::1]:8000", "LOCALHOST"):
        with TestClient(app, base_url=f"http://{host}") as c:
            assert c.get("/model").status_code == 200, host
    # a page of another site reaching 127.0.0.1 through DNS rebinding sends its own name as the Host
    with TestClient(app, base_url="http://attacker.example:8000") as c:
        r = c.get("/model")
        assert r.status_code == 400 and "Host 'attacker.example' is not a name this service answers to" in \
            r.json()["detail"]
        assert c.post("/predict", json={"pixels": [0] * 784}).status_code == 400
    with TestClient(create_app(run_dir, allowed_hosts=("models.example",)), base_url="http://models.example") as c:
        assert c.get("/model").status_code == 200


def test_a_token_guards_predictions_but_not_the_page(run_dir):
    from fmnist.errors import FmnistError
    from fmnist.serve import create_app

    with pytest.raises(FmnistError, match="at least 16 printable ASCII characters"):
        create_app(run_dir, token="short")
    token = "s3cret-token-0123456789"
    with TestClient(create_app(run_dir, token=token), base_url="http://127.0.0.1") as c:
        assert c.get("/").status_code == 200 and c.get("/health").status_code == 200
        for path in ("/predict", "/predict/batch", "/explain"):
            r = c.post(path, json={"pixels": [0] * 784})
            assert r.status_code == 401 and "Authorization: Bearer TOKEN" in r.json()["detail"], path
        assert c.get("/model").status_code == 401
        assert c.get("/model", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        ok = {"Authorization": f"Bearer {token}"}
        assert c.get("/model", headers=ok).status_code == 200
        assert c.post("/predict", json={"pixels": [0] * 784}, headers=ok).status_code == 200


def test_docs_work_offline_and_the_schema_declares_bodies_and_errors(client):
    import re

    page = client.get("/docs").text
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', page) + re.findall(r'<link[^>]*href="([^"]+)"', page)
    assert scripts and not [s for s in scripts if s.startswith(("http:", "https:", "//"))], scripts
    for s in scripts:  # each asset is served from the package
        r = client.get(f"/{s}")
        assert r.status_code == 200 and len(r.content) > 500, s
    assert client.get("/docs-assets/../../etc/passwd").status_code in (400, 404)
    spec = client.get("/openapi.json").json()
    for path in ("/predict", "/predict/batch", "/explain"):
        op = spec["paths"][path]["post"]
        content = op["requestBody"]["content"]
        assert {"multipart/form-data", "application/json"} <= set(content), path
        assert content["application/json"]["schema"]["required"] == ["pixels"]
        assert {"400", "413", "422"} <= set(op["responses"]), path
        assert {p["name"] for p in op["parameters"]} >= {"invert", "preprocess"}
    assert "binary" in json.dumps(spec["paths"]["/predict/batch"]["post"]["requestBody"])


def test_a_large_picture_is_prepared_off_the_event_loop(run_dir, tmp_path):
    import threading
    import time
    import urllib.request

    from fmnist.serve import create_app

    big = np.full((5000, 8000), 255, np.uint8)  # 40 megapixels, a small article in the middle: a few KB as PNG
    big[2000:3000, 3500:4500] = 30
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="PNG")
    body = buf.getvalue()
    assert len(body) < 1_000_000
    with live_server(create_app(run_dir, max_body_bytes=2_000_000)) as port:
        done = {}

        def upload():
            boundary = "xyz"
            data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
                    f"Content-Type: image/png\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=data, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            t0 = time.perf_counter()
            with urllib.request.urlopen(req, timeout=120) as r:
                done["status"], done["seconds"] = r.status, time.perf_counter() - t0

        t = threading.Thread(target=upload)
        t.start()
        time.sleep(0.3)  # the picture is being decoded and prepared now
        waits = []
        while t.is_alive() and len(waits) < 20:
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                assert r.status == 200
            waits.append(time.perf_counter() - t0)
            time.sleep(0.1)
        t.join(timeout=120)
    assert done.get("status") == 200
    assert waits and max(waits) < 1.0, (waits, done)


def test_a_client_that_leaves_mid_upload_leaves_no_traceback(run_dir):
    import logging
    import socket
    import time
    import urllib.request

    from fmnist.serve import create_app

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level=logging.WARNING)
    try:
        with live_server(create_app(run_dir)) as port:
            logging.getLogger("uvicorn.error").addHandler(handler)  # after uvicorn configured its logging
            for ctype in (b"multipart/form-data; boundary=xyz", b"application/json"):
                with socket.create_connection(("127.0.0.1", port)) as c:
                    c.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + ctype
                              + b"\r\nContent-Length: 100000\r\n\r\n--xyz\r\nContent-Disposition: form-data; "
                              b'name="file"; filename="a.png"\r\n\r\n' + b"\x89PNG" * 100)
                    time.sleep(0.3)
            time.sleep(0.5)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                assert r.status == 200  # still serving
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
    assert not [r for r in records if r.exc_info or "Exception" in r.getMessage()], \
        [r.getMessage() for r in records]


def test_the_app_answers_on_every_event_loop_that_serves_it(run_dir):
    from fmnist.serve import create_app

    app = create_app(run_dir)
    for _ in range(2):  # each `with` runs the app on a new event loop: the batcher and the bound follow it
        with TestClient(app, base_url="http://127.0.0.1") as c:
            assert c.post("/predict", files={"file": ("a.png", _png(np.zeros((40, 40), np.uint8)), "image/png")},
                          timeout=30).status_code == 200
